//! The native JSON protocol: text frames holding one JSON object each.
//!
//! - client → server: `{"event": "<name>", "data": <any>}`, plus `"id": <u64>` for an ack;
//! - server → client: `{"event": "<name>", "data": <any>}`; an ack is `{"ack": <id>, "data": <any>}`;
//! - an error answering a request with an id carries it: `{"event": "error", "data": {...}, "ack": <id>}`;
//! - binary, both ways: `"attachments": n` on the frame, placeholders
//!   `{"_placeholder":true,"num":i}` in its `data`, and the `n` binary frames right after it.

use std::{fmt, io::Write};

use serde::{
    de::{self, MapAccess, Visitor},
    Deserialize, Deserializer, Serialize,
};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::config::{Config, ErrorStyle};

/// One decoded client frame: an event, or the answer to an event the server sent with an id.
///
/// The frame is parsed once, into [`Value`]s; handlers deserialize their typed payload from
/// that tree without parsing text again.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// `{"event": …, "data": …, "id"?: …}`.
    Event {
        /// The event name.
        event: String,
        /// The payload (`null` when absent).
        data: Value,
        /// The ack id, when the client wants an answer.
        id: Option<u64>,
        /// How many binary frames follow, for the placeholders in `data`.
        attachments: usize,
    },
    /// `{"ack": …, "data": …}`: the client's answer to a server emit that carried an id.
    Ack {
        /// The id the server sent.
        ack: u64,
        /// The client's answer (`null` when absent).
        data: Value,
        /// How many binary frames follow, for the placeholders in `data`.
        attachments: usize,
    },
}

/// A client frame's fields. Only a JSON object is one: its `Deserialize` reads a map and
/// nothing else (a derived one would also take a JSON array of the fields in order, a form the
/// protocol does not have).
#[derive(Default)]
struct Frame {
    event: Option<String>,
    data: Value,
    id: Option<u64>,
    ack: Option<u64>,
    attachments: Option<usize>,
}

/// The fields of a frame, by key.
enum Field {
    Event,
    Data,
    Id,
    Ack,
    Attachments,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Field, E> {
                Ok(match key {
                    "event" => Field::Event,
                    "data" => Field::Data,
                    "id" => Field::Id,
                    "ack" => Field::Ack,
                    "attachments" => Field::Attachments,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(Key)
    }
}

/// Reads a frame from a JSON object: every field, or (`id_only`, to answer a frame that does
/// not decode) only its `id`, whatever the others hold.
struct FrameVisitor {
    id_only: bool,
}

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = Frame;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Frame, A::Error> {
        let mut frame = Frame::default();
        let mut seen = [false; 5];
        while let Some(field) = map.next_key::<Field>()? {
            let (slot, name) = match field {
                Field::Id => (2, "id"),
                Field::Event if !self.id_only => (0, "event"),
                Field::Data if !self.id_only => (1, "data"),
                Field::Ack if !self.id_only => (3, "ack"),
                Field::Attachments if !self.id_only => (4, "attachments"),
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                    continue;
                }
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(de::Error::duplicate_field(name));
            }
            match slot {
                0 => frame.event = map.next_value()?,
                1 => frame.data = map.next_value()?,
                2 => frame.id = map.next_value()?,
                3 => frame.ack = map.next_value()?,
                _ => frame.attachments = map.next_value()?,
            }
        }
        Ok(frame)
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FrameVisitor { id_only: false })
    }
}

/// Why a client frame could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("invalid message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

impl DecodeError {
    /// The ack id of the frame, when it could still be read (so the error can answer it).
    pub fn ack_hint(text: &str) -> Option<u64> {
        let mut d = serde_json::Deserializer::from_str(text);
        let frame = d.deserialize_map(FrameVisitor { id_only: true }).ok()?;
        d.end().ok()?;
        frame.id
    }
}

/// Decodes one client frame.
///
/// Nesting deeper than 128 levels is refused (serde_json's recursion limit), so a depth bomb
/// is an error, never a stack overflow.
pub fn decode(text: &str) -> Result<Inbound, DecodeError> {
    let frame: Frame = serde_json::from_str(text)?;
    let attachments = frame.attachments.unwrap_or(0);
    match (frame.event, frame.ack) {
        (Some(event), _) => Ok(Inbound::Event {
            event,
            data: frame.data,
            id: frame.id,
            attachments,
        }),
        (None, Some(ack)) => Ok(Inbound::Ack {
            ack,
            data: frame.data,
            attachments,
        }),
        (None, None) => Err(DecodeError(serde::de::Error::missing_field("event"))),
    }
}

/// Encodes an event frame: `{"event":…,"data":…}`.
pub fn encode_event<T: Serialize + ?Sized>(event: &str, data: &T) -> Result<Utf8Bytes, serde_json::Error> {
    Ok(encode_event_raw(event, &serde_json::to_string(data)?, None))
}

/// Encodes an event frame kept in a history, with its position:
/// `{"event":…,"data":…,"offset":…}`.
pub fn encode_event_at(event: &str, data_json: &str, offset: u64) -> Utf8Bytes {
    let mut buf = Vec::with_capacity(48 + event.len() + data_json.len());
    buf.extend_from_slice(b"{\"event\":");
    let _ = serde_json::to_writer(&mut buf, event);
    buf.extend_from_slice(b",\"data\":");
    buf.extend_from_slice(data_json.as_bytes());
    let _ = write!(buf, ",\"offset\":{offset}}}");
    into_utf8(buf)
}

/// Encodes an event frame around an already serialized payload, with an ack id when the server
/// wants the client's answer: `{"event":…,"data":…,"id":…}`.
pub fn encode_event_raw(event: &str, data_json: &str, id: Option<u64>) -> Utf8Bytes {
    encode_event_with(event, data_json, id, 0)
}

/// Encodes an event frame whose payload holds `attachments` placeholders (none: the field is
/// left out): `{"event":…,"data":…,"id":…,"attachments":n}`. The `n` binary frames follow it.
pub fn encode_event_with(event: &str, data_json: &str, id: Option<u64>, attachments: usize) -> Utf8Bytes {
    let mut buf = Vec::with_capacity(32 + event.len() + data_json.len());
    buf.extend_from_slice(b"{\"event\":");
    // Serializing a `&str` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, event);
    buf.extend_from_slice(b",\"data\":");
    buf.extend_from_slice(data_json.as_bytes());
    if let Some(id) = id {
        let _ = write!(buf, ",\"id\":{id}");
    }
    end_with_attachments(buf, attachments)
}

/// Encodes an ack frame: `{"ack":id,"data":…}`.
pub fn encode_ack(id: u64, data: &Value) -> Utf8Bytes {
    encode_ack_raw(id, &data.to_string(), 0)
}

/// Encodes an ack frame around an already serialized payload holding `attachments`
/// placeholders: `{"ack":id,"data":…,"attachments":n}` (the field left out for none).
pub fn encode_ack_raw(id: u64, data_json: &str, attachments: usize) -> Utf8Bytes {
    let mut buf = Vec::with_capacity(32 + data_json.len());
    let _ = write!(buf, "{{\"ack\":{id},\"data\":");
    buf.extend_from_slice(data_json.as_bytes());
    end_with_attachments(buf, attachments)
}

/// Closes a frame, with its attachment count when it has any.
fn end_with_attachments(mut buf: Vec<u8>, attachments: usize) -> Utf8Bytes {
    if attachments > 0 {
        let _ = write!(buf, ",\"attachments\":{attachments}");
    }
    buf.push(b'}');
    into_utf8(buf)
}

/// Whether a handler's reply is a frame of its own: a JSON object with a string `event` (what
/// a NestJS handler returns, `{"event": "joinedRoom", "room": "general"}`).
pub fn is_frame(reply: &Value) -> bool {
    reply.get("event").is_some_and(Value::is_string)
}

/// Encodes an error event as the hub's config says: named
/// [`Config::error_event`](crate::Config::error_event), its body `data` (`{"status",
/// "message", …}`) in [`Config::error_style`](crate::Config::error_style).
pub(crate) fn encode_error_as(cfg: &Config, ack: Option<u64>, data: &Value) -> Utf8Bytes {
    match cfg.error_style {
        ErrorStyle::NestJs => {
            let body = serde_json::json!({ "status": "error", "message": data["message"] });
            encode_error(&cfg.error_event, ack, &body)
        }
        _ => encode_error(&cfg.error_event, ack, data),
    }
}

/// Encodes an error event named `event` (`error` by default), answering the request `ack`
/// when it had an id.
pub fn encode_error(event: &str, ack: Option<u64>, data: &Value) -> Utf8Bytes {
    let mut buf = Vec::with_capacity(64 + event.len());
    buf.extend_from_slice(b"{\"event\":");
    let _ = serde_json::to_writer(&mut buf, event);
    buf.extend_from_slice(b",\"data\":");
    let _ = serde_json::to_writer(&mut buf, data);
    if let Some(id) = ack {
        let _ = write!(buf, ",\"ack\":{id}");
    }
    buf.push(b'}');
    into_utf8(buf)
}

fn into_utf8(buf: Vec<u8>) -> Utf8Bytes {
    // serde_json writes valid UTF-8 only, and so do the literals above.
    match String::from_utf8(buf) {
        Ok(s) => Utf8Bytes::from(s),
        Err(_) => Utf8Bytes::from_static("{}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_event_with_id() {
        let f = decode(r#"{"event":"joinRoom","data":"general","id":7}"#).unwrap();
        assert_eq!(
            f,
            Inbound::Event {
                event: "joinRoom".into(),
                data: json!("general"),
                id: Some(7),
                attachments: 0,
            }
        );
    }

    #[test]
    fn data_and_id_are_optional() {
        let f = decode(r#"{"event":"ping"}"#).unwrap();
        assert_eq!(
            f,
            Inbound::Event {
                event: "ping".into(),
                data: Value::Null,
                id: None,
                attachments: 0,
            }
        );
        let f = decode(r#"{"ack":4,"data":[1]}"#).unwrap();
        assert_eq!(
            f,
            Inbound::Ack {
                ack: 4,
                data: json!([1]),
                attachments: 0,
            }
        );
    }

    #[test]
    fn refuses_bad_frames() {
        for bad in ["", "[]", "{}", r#"{"event":1}"#, r#"{"event":"a","id":-1}"#, "{"] {
            assert!(decode(bad).is_err(), "{bad:?} should not decode");
        }
    }

    #[test]
    fn a_json_array_of_the_fields_is_not_a_frame() {
        // A derived `Deserialize` takes `[event, data, id, ack]` as well; the protocol has
        // objects only, and the ack hint (which reads objects) would disagree with it.
        for array in [r#"["chat",{"a":1},7,null]"#, r#"["chat"]"#, r#"[null,null,null,4]"#] {
            assert!(decode(array).is_err(), "{array:?} should not decode");
            assert_eq!(DecodeError::ack_hint(array), None);
        }
    }

    #[test]
    fn a_field_given_twice_is_an_error() {
        assert!(decode(r#"{"event":"a","event":"b"}"#).is_err());
        assert!(decode(r#"{"event":"a","id":1,"id":2}"#).is_err());
        // Unknown fields are ignored, whatever they hold.
        let f = decode(r#"{"x":[1,{"y":2}],"event":"a","id":1}"#).unwrap();
        assert_eq!(
            f,
            Inbound::Event {
                event: "a".into(),
                data: Value::Null,
                id: Some(1),
                attachments: 0,
            }
        );
        assert_eq!(
            DecodeError::ack_hint(r#"{"x":[1,{"y":2}],"event":"a","id":1}"#),
            Some(1)
        );
    }

    #[test]
    fn attachments_are_counted_and_written() {
        let f = decode(r#"{"event":"up","data":{"f":{"_placeholder":true,"num":0}},"attachments":1}"#).unwrap();
        assert!(matches!(f, Inbound::Event { attachments: 1, .. }));
        assert!(decode(r#"{"event":"up","attachments":-1}"#).is_err());
        assert_eq!(
            encode_event_with("m", "{}", Some(2), 3).as_str(),
            r#"{"event":"m","data":{},"id":2,"attachments":3}"#
        );
        assert_eq!(
            encode_ack_raw(1, "[]", 1).as_str(),
            r#"{"ack":1,"data":[],"attachments":1}"#
        );
    }

    #[test]
    fn depth_bomb_is_an_error_not_a_crash() {
        let bomb = format!(r#"{{"event":"a","data":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert!(decode(&bomb).is_err());
    }

    #[test]
    fn ack_hint_reads_the_id_of_a_frame_that_does_not_decode() {
        assert_eq!(DecodeError::ack_hint(r#"{"event":5,"id":3}"#), Some(3));
        assert_eq!(DecodeError::ack_hint("nope"), None);
    }

    #[test]
    fn encodes_frames() {
        assert_eq!(
            encode_event("m", &json!({"a":1})).unwrap().as_str(),
            r#"{"event":"m","data":{"a":1}}"#
        );
        assert_eq!(encode_event("q\"", &1).unwrap().as_str(), r#"{"event":"q\"","data":1}"#);
        assert_eq!(
            encode_event_raw("m", "[1]", Some(9)).as_str(),
            r#"{"event":"m","data":[1],"id":9}"#
        );
        assert_eq!(encode_ack(3, &Value::Null).as_str(), r#"{"ack":3,"data":null}"#);
        assert_eq!(
            encode_error("error", Some(2), &json!({"status":"error"})).as_str(),
            r#"{"event":"error","data":{"status":"error"},"ack":2}"#
        );
        assert_eq!(
            encode_error("error", None, &json!(1)).as_str(),
            r#"{"event":"error","data":1}"#
        );
        assert_eq!(
            encode_error("exception", None, &json!({"status":"error","message":"no"})).as_str(),
            r#"{"event":"exception","data":{"message":"no","status":"error"}}"#
        );
        let error = json!({"status":"forbidden","message":"no","code":7});
        let mut cfg = Config::default();
        assert_eq!(
            encode_error_as(&cfg, Some(1), &error).as_str(),
            r#"{"event":"error","data":{"code":7,"message":"no","status":"forbidden"},"ack":1}"#
        );
        cfg.error_event = "exception".into();
        cfg.error_style = ErrorStyle::NestJs;
        assert_eq!(
            encode_error_as(&cfg, None, &error).as_str(),
            r#"{"event":"exception","data":{"message":"no","status":"error"}}"#
        );
        assert!(is_frame(&json!({"event":"joinedRoom","room":"general"})));
        for not in [json!({"event":1}), json!({"data":1}), json!("event"), Value::Null] {
            assert!(!is_frame(&not), "{not}");
        }
    }
}
