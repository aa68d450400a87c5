//! [`Valid<T>`]: a payload deserialized, then validated with the `validator` crate.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use super::{Data, ErrorEvent, EventContext, FromEvent};

/// The typed payload of an event, deserialized like [`Data`] and then validated with
/// [`validator::Validate`] (feature `validate`, on by default).
///
/// A payload that fails gets the client an `error` event listing each failing field:
///
/// ```json
/// {"status": "error", "message": "validation failed",
///  "errors": [{"field": "text", "code": "length", "message": "length must be between 1 and 1000"}]}
/// ```
///
/// ```
/// use serde::Deserialize;
/// use tower_realtime::{Hub, Valid};
/// use validator::Validate;
///
/// #[derive(Deserialize, Validate)]
/// struct ChatMessage {
///     #[validate(length(min = 1, max = 1000))]
///     text: String,
/// }
///
/// let hub = Hub::builder()
///     .on("message", |Valid(msg): Valid<ChatMessage>| async move { msg.text.len().to_string() })
///     .build();
/// # drop(hub);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Valid<T>(pub T);

impl<T: DeserializeOwned + Validate> FromEvent for Valid<T> {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        let Data(value) = Data::<T>::from_event(ctx)?;
        match value.validate() {
            Ok(()) => Ok(Valid(value)),
            Err(errors) => {
                let mut list = Vec::new();
                flatten(&errors, "", &mut list);
                Err(ErrorEvent::new("validation failed").with_field("errors", Value::Array(list)))
            }
        }
    }
}

/// Lists every failing field, nested ones as `outer.inner` and `list[2].inner`.
fn flatten(errors: &ValidationErrors, prefix: &str, out: &mut Vec<Value>) {
    let mut fields: Vec<_> = errors.errors().iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    for (field, kind) in fields {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(errs) => {
                for e in errs {
                    let message = match &e.message {
                        Some(m) => m.to_string(),
                        None => describe(&e.code, &e.params),
                    };
                    out.push(json!({ "field": path, "code": e.code, "message": message }));
                }
            }
            ValidationErrorsKind::Struct(inner) => flatten(inner, &path, out),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    flatten(inner, &format!("{path}[{i}]"), out);
                }
            }
        }
    }
}

/// A readable message for a rule without one of its own.
fn describe(code: &str, params: &std::collections::HashMap<std::borrow::Cow<'static, str>, Value>) -> String {
    let get = |k: &str| params.get(k).filter(|v| !v.is_null()).map(|v| v.to_string());
    match (code, get("min"), get("max"), get("equal")) {
        ("length", _, _, Some(eq)) => format!("length must be {eq}"),
        ("length" | "range", Some(min), Some(max), _) => format!("{code} must be between {min} and {max}"),
        ("length" | "range", Some(min), None, _) => format!("{code} must be at least {min}"),
        ("length" | "range", None, Some(max), _) => format!("{code} must be at most {max}"),
        _ => format!("failed the `{code}` check"),
    }
}
