//! The `error` event a client gets when its request fails, and how errors become one.

use std::fmt;

use serde_json::{Map, Value};

/// An `error` event: `{"status": "error", "message": …}` plus any extra fields.
///
/// Handlers return it (or any type that implements [`IntoErrorEvent`]) as the error of a
/// `Result`; the client gets it as an `error` event, carrying the ack id when the request had one.
/// An [internal](ErrorEvent::internal) error reaches the client as "Internal server error"
/// while its detail goes to the log.
#[derive(Clone, PartialEq)]
pub struct ErrorEvent {
    status: String,
    message: String,
    fields: Map<String, Value>,
    detail: Option<String>,
}

impl ErrorEvent {
    /// An error whose message the client sees, with status `"error"`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            status: "error".to_owned(),
            message: message.into(),
            fields: Map::new(),
            detail: None,
        }
    }

    /// An internal error: the client sees "Internal server error"; `detail` is logged.
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self {
            detail: Some(detail.to_string()),
            ..Self::new("Internal server error")
        }
    }

    /// A refusal by a guard: status `"forbidden"`, with the reason as the message.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(reason).with_status("forbidden")
    }

    /// Sets the `status` field (default `"error"`).
    pub fn with_status(mut self, status: impl Into<String>) -> Self {
        self.status = status.into();
        self
    }

    /// Adds an extra field to the event's data (for example `"code"` or `"errors"`).
    pub fn with_field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }

    /// The message the client sees.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The status the client sees.
    pub fn status(&self) -> &str {
        &self.status
    }

    /// The logged detail of an internal error.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The event's data, as sent: `{"status", "message", ...fields}`.
    pub fn to_value(&self) -> Value {
        let mut map = Map::with_capacity(2 + self.fields.len());
        map.insert("status".to_owned(), Value::String(self.status.clone()));
        map.insert("message".to_owned(), Value::String(self.message.clone()));
        for (k, v) in &self.fields {
            if k != "status" && k != "message" {
                map.insert(k.clone(), v.clone());
            }
        }
        Value::Object(map)
    }
}

impl fmt::Debug for ErrorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorEvent")
            .field("status", &self.status)
            .field("message", &self.message)
            .field("fields", &self.fields)
            .field("detail", &self.detail)
            .finish()
    }
}

impl fmt::Display for ErrorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ErrorEvent {}

/// Turns an error into the `error` event the client gets.
///
/// Implement it for your app's error type to choose status, message and extra fields:
///
/// ```
/// use tower_realtime::{ErrorEvent, IntoErrorEvent};
///
/// enum ChatError { NotAMember(String), Database(String) }
///
/// impl IntoErrorEvent for ChatError {
///     fn into_error_event(self) -> ErrorEvent {
///         match self {
///             ChatError::NotAMember(room) => ErrorEvent::new(format!("not a member of {room}"))
///                 .with_status("forbidden")
///                 .with_field("room", room),
///             // The client sees "Internal server error"; the detail goes to the log.
///             ChatError::Database(detail) => ErrorEvent::internal(detail),
///         }
///     }
/// }
/// ```
pub trait IntoErrorEvent {
    /// The event for this error.
    fn into_error_event(self) -> ErrorEvent;
}

impl IntoErrorEvent for ErrorEvent {
    fn into_error_event(self) -> ErrorEvent {
        self
    }
}

impl IntoErrorEvent for String {
    fn into_error_event(self) -> ErrorEvent {
        ErrorEvent::new(self)
    }
}

impl IntoErrorEvent for &str {
    fn into_error_event(self) -> ErrorEvent {
        ErrorEvent::new(self)
    }
}

/// Boxed errors are internal: the client sees "Internal server error".
impl IntoErrorEvent for Box<dyn std::error::Error + Send + Sync> {
    fn into_error_event(self) -> ErrorEvent {
        ErrorEvent::internal(self)
    }
}

/// A payload that does not deserialize tells the client why.
impl IntoErrorEvent for serde_json::Error {
    fn into_error_event(self) -> ErrorEvent {
        ErrorEvent::new(format!("invalid payload: {self}"))
    }
}
