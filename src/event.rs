//! Typed events (feature `typed`): an event declared once as a type, with its name, its
//! payload (the type itself) and, for an event a client sends, its ack.
//!
//! The traits here name nothing above them: the hub's emits take a [`ServerEvent`], the
//! gateway's typed handlers a [`ClientEvent`], and the builder keeps the declarations for
//! [`Hub::typescript`](crate::Hub::typescript). The payload types' TypeScript comes from
//! ts-rs (`#[derive(ts_rs::TS)]` beside `#[derive(Event)]`).

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use ts_rs::TS;

/// Declares a type as an event: its name, and for an event a client sends, its ack.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tower_realtime::Event;
///
/// /// Client → server: the payload is a room name, the ack a `JoinedRoom`.
/// #[derive(Deserialize, Event, ts_rs::TS)]
/// #[event(name = "joinRoom", ack = JoinedRoom)]
/// struct JoinRoom(String);
///
/// #[derive(Serialize, ts_rs::TS)]
/// struct JoinedRoom { room: String }
///
/// /// Server → client.
/// #[derive(Serialize, Event, ts_rs::TS)]
/// #[event(name = "userJoined")]
/// #[serde(rename_all = "camelCase")]
/// #[ts(rename_all = "camelCase")]
/// struct UserJoined { room: String, user_id: String }
///
/// assert_eq!(<JoinRoom as tower_realtime::Event>::NAME, "joinRoom");
/// ```
///
/// `#[event(crate = "path")]` names this crate when it is not `::tower_realtime`. A unit
/// struct is an event without a payload (`whoami`).
pub use tower_realtime_macros::Event;

/// An event declared as a type (`#[derive(Event)]`): its payload is the type itself.
pub trait Event: TS + 'static {
    /// The event's name on the wire.
    const NAME: &'static str;
    /// Whether the event carries a payload (a unit struct does not: a client sends the event
    /// alone, and the handler gets the unit value whatever came with it).
    const PAYLOAD: bool;
}

/// An event a client sends, whose handler answers with [`Ack`](Self::Ack):
/// `#[event(name = "..", ack = Type)]`. Register its handler with
/// [`HubBuilder::on_event`](crate::HubBuilder::on_event).
pub trait ClientEvent: Event + DeserializeOwned + Send {
    /// What the handler returns, sent as the ack. `()` acks with `null`.
    type Ack: Serialize + TS + 'static;
}

/// An event the server sends: `#[event(name = "..")]` without an ack. Emit it with
/// [`Emit::send`](crate::Emit::send), [`Emitter::send`](crate::Emitter::send) or
/// [`Socket::send`](crate::Socket::send), and declare it on the builder with
/// [`HubBuilder::emits`](crate::HubBuilder::emits) so that its TypeScript is written.
pub trait ServerEvent: Event + Serialize {}

/// A binary value as JavaScript clients handle it: `ArrayBuffer | Uint8Array` in TypeScript.
///
/// socket.io-client hands a received binary value over as an `ArrayBuffer` in a browser and
/// as a `Buffer` (a `Uint8Array`) in Node; the native client (`realtime.js`) as an
/// `ArrayBuffer`; both send either. Put it on a [`Bytes`](bytes::Bytes) field with
/// `#[ts(as = "tower_realtime::Binary")]` (ts-rs would otherwise write `Array<number>`, the
/// shape of a `Vec<u8>`, which is not what goes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binary;

impl TS for Binary {
    type WithoutGenerics = Self;
    type OptionInnerType = Self;

    fn docs() -> Option<String> {
        Some("/**\n * A binary value: an ArrayBuffer in a browser, a Buffer (a Uint8Array) in Node.\n */\n".to_owned())
    }

    fn name(_: &ts_rs::Config) -> String {
        "Binary".to_owned()
    }

    fn inline(_: &ts_rs::Config) -> String {
        "ArrayBuffer | Uint8Array".to_owned()
    }

    fn decl(cfg: &ts_rs::Config) -> String {
        format!("type Binary = {};", Self::inline(cfg))
    }

    fn decl_concrete(cfg: &ts_rs::Config) -> String {
        Self::decl(cfg)
    }

    fn output_path() -> Option<std::path::PathBuf> {
        Some("Binary.ts".into())
    }
}

/// The `error` event's data as it goes on the wire: what every `ErrorEvent` of the server
/// becomes, and what a client reads. The optional fields
/// are those the crate and its demo set: `code` (`"rate_limited"`, or the close code `4003`
/// of an expired token), `errors` (a validation's failing fields), `field`, `min` and
/// `limit` (a length check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
#[ts(rename = "ErrorEvent", optional_fields)]
pub struct ErrorData {
    /// `"error"`, `"forbidden"`, `"rate_limited"`, `"token_expired"`, or the app's own.
    pub status: String,
    /// What went wrong, for a person.
    pub message: String,
    /// A machine-readable code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// The failing fields of a payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// The field a length check refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The least length it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// The greatest length it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl Event for ErrorData {
    const NAME: &'static str = "error";
    const PAYLOAD: bool = true;
}

impl ServerEvent for ErrorData {}

/// An error's `code`: text (`"rate_limited"`) or a number (a close code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(untagged)]
pub enum ErrorCode {
    /// A code as text.
    Text(String),
    /// A code as a number.
    Number(u32),
}

/// One failing field of a payload, as in an error event's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct FieldError {
    /// The field's path: `text`, `outer.inner`, `list[2].inner`.
    pub field: String,
    /// The rule it failed (`"length"`, `"range"`, `"email"`, ...).
    pub code: String,
    /// What is wrong, for a person.
    pub message: String,
}

/// The `token_expiring` event: the connection's token expires at `expires_at` (Unix
/// seconds), `expires_in_ms` from now; a `$refresh` with a new token moves the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct TokenExpiring {
    /// When the token expires, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// How long until then, in milliseconds.
    pub expires_in_ms: u64,
}

impl Event for TokenExpiring {
    const NAME: &'static str = crate::protocol::TOKEN_EXPIRING_EVENT;
    const PAYLOAD: bool = true;
}

impl ServerEvent for TokenExpiring {}
