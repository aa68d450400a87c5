//! The encoders: an emit's JSON, serialized once, wrapped as an EVENT or ACK for any number of
//! recipients, and the CONNECT, CONNECT_ERROR and DISCONNECT answers.

use std::fmt::Write as _;

use serde_json::Value;

use super::PacketKind;

/// Writes `<type>[<n>-][<ns>,][<id>]`.
pub(super) fn write_header(out: &mut String, kind: PacketKind, attachments: usize, ns: &str, id: Option<u64>) {
    out.push(kind.as_char());
    // Writing to a String cannot fail.
    if kind.is_binary() {
        let _ = write!(out, "{attachments}-");
    }
    if !ns.is_empty() && ns != "/" {
        out.push_str(ns);
        out.push(',');
    }
    if let Some(id) = id {
        let _ = write!(out, "{id}");
    }
}

/// Appends `s` as a JSON string literal, escaped as serde_json does.
fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn event_packet(
    kind: PacketKind,
    ns: &str,
    event: &str,
    data_json: &str,
    attachments: usize,
    ack_id: Option<u64>,
) -> String {
    let mut out = String::with_capacity(8 + ns.len() + event.len() + data_json.len());
    write_header(&mut out, kind, attachments, ns, ack_id);
    out.push('[');
    push_json_str(&mut out, event);
    out.push(',');
    out.push_str(data_json);
    out.push(']');
    out
}

fn ack_packet(kind: PacketKind, ns: &str, id: u64, data_json: &str, attachments: usize) -> String {
    let mut out = String::with_capacity(24 + ns.len() + data_json.len());
    write_header(&mut out, kind, attachments, ns, Some(id));
    out.push('[');
    out.push_str(data_json);
    out.push(']');
    out
}

/// An EVENT with one argument, from its JSON already serialized (so an emit serializes its
/// data once, whatever the protocols of its recipients): `2/chat,["message",{"text":"hi"}]`,
/// or `2/chat,7["message",…]` asking for ack 7.
///
/// `data_json` must be one JSON value; `ns` must satisfy
/// [`is_valid_namespace`](super::is_valid_namespace).
pub fn encode_event(ns: &str, event: &str, data_json: &str, ack_id: Option<u64>) -> String {
    event_packet(PacketKind::Event, ns, event, data_json, 0, ack_id)
}

/// An EVENT with one argument followed by the event's position in a history, as Socket.IO's
/// connection state recovery sends it (the client keeps the last string argument):
/// `2["message",{"text":"hi"},"3f2a-17"]`.
pub fn encode_event_offset(ns: &str, event: &str, data_json: &str, offset: &str) -> String {
    let mut out = event_packet(PacketKind::Event, ns, event, data_json, 0, None);
    out.pop();
    out.push(',');
    push_json_str(&mut out, offset);
    out.push(']');
    out
}

/// A BINARY_EVENT with one argument holding `attachments` placeholders:
/// `51-/chat,["file",{"_placeholder":true,"num":0}]`. Send the attachments after it. With no
/// attachments this is [`encode_event`].
pub fn encode_binary_event(ns: &str, event: &str, data_json: &str, attachments: usize, ack_id: Option<u64>) -> String {
    let kind = PacketKind::Event.with_binary(attachments > 0);
    event_packet(kind, ns, event, data_json, attachments, ack_id)
}

/// An ACK answering event `id` with one argument, from its JSON already serialized:
/// `3/chat,12[{"ok":true}]`.
pub fn encode_ack(ns: &str, id: u64, data_json: &str) -> String {
    ack_packet(PacketKind::Ack, ns, id, data_json, 0)
}

/// A BINARY_ACK answering event `id` with one argument holding `attachments` placeholders:
/// `61-15[{"_placeholder":true,"num":0}]`. Send the attachments after it. With no
/// attachments this is [`encode_ack`].
pub fn encode_binary_ack(ns: &str, id: u64, data_json: &str, attachments: usize) -> String {
    ack_packet(
        PacketKind::Ack.with_binary(attachments > 0),
        ns,
        id,
        data_json,
        attachments,
    )
}

/// The server's acceptance of a connection to `ns`: `0/chat,{"sid":"…"}`.
pub fn encode_connect(ns: &str, sid: &str) -> String {
    let mut out = String::with_capacity(12 + ns.len() + sid.len());
    write_header(&mut out, PacketKind::Connect, 0, ns, None);
    out.push_str("{\"sid\":");
    push_json_str(&mut out, sid);
    out.push('}');
    out
}

/// The server's acceptance of a connection to `ns` with a recovery session:
/// `0/chat,{"sid":"…","pid":"…"}` (Socket.IO's connection state recovery).
pub fn encode_connect_with_pid(ns: &str, sid: &str, pid: &str) -> String {
    let mut out = encode_connect(ns, sid);
    out.pop();
    out.push_str(",\"pid\":");
    push_json_str(&mut out, pid);
    out.push('}');
    out
}

/// The server's refusal of a connection to `ns`: `4/chat,{"message":"Not authorized"}`.
pub fn encode_connect_error(ns: &str, message: &str) -> String {
    encode_connect_error_with_data(ns, message, None)
}

/// A refusal carrying details for the client's `err.data`:
/// `4{"message":"Not authorized","data":{"reason":"expired"}}`.
pub fn encode_connect_error_with_data(ns: &str, message: &str, data: Option<&Value>) -> String {
    let mut out = String::with_capacity(20 + ns.len() + message.len());
    write_header(&mut out, PacketKind::ConnectError, 0, ns, None);
    out.push_str("{\"message\":");
    push_json_str(&mut out, message);
    if let Some(data) = data {
        let _ = write!(out, ",\"data\":{data}");
    }
    out.push('}');
    out
}

/// A DISCONNECT from `ns`: `1/chat,` (`1` for the main namespace).
pub fn encode_disconnect(ns: &str) -> String {
    let mut out = String::with_capacity(2 + ns.len());
    write_header(&mut out, PacketKind::Disconnect, 0, ns, None);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::packet;
    use super::super::{decode, Decoded};
    use super::*;

    #[test]
    fn encoders() {
        assert_eq!(
            encode_event("/chat", "message", r#"{"text":"hi"}"#, None),
            r#"2/chat,["message",{"text":"hi"}]"#
        );
        assert_eq!(encode_event("/", "hey", r#""Jude""#, None), r#"2["hey","Jude"]"#);
        assert_eq!(encode_event("/", "e", "null", Some(12)), r#"212["e",null]"#);
        assert_eq!(encode_event("", "e", "1", None), r#"2["e",1]"#);
        assert_eq!(
            encode_binary_event("/", "baz", r#"{"_placeholder":true,"num":0}"#, 1, None),
            r#"51-["baz",{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(encode_binary_event("/a", "e", "1", 0, Some(2)), r#"2/a,2["e",1]"#);
        assert_eq!(encode_ack("/", 12, r#"{"ok":true}"#), r#"312[{"ok":true}]"#);
        assert_eq!(encode_ack("/admin", 13, r#""bar""#), r#"3/admin,13["bar"]"#);
        assert_eq!(
            encode_binary_ack("/", 15, r#"{"_placeholder":true,"num":0}"#, 1),
            r#"61-15[{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(encode_binary_ack("/", 15, "1", 0), "315[1]");
        assert_eq!(
            encode_connect("/", "wZX3oN0bSVIhsaknAAAI"),
            r#"0{"sid":"wZX3oN0bSVIhsaknAAAI"}"#
        );
        assert_eq!(
            encode_connect("/chat", "oSO0OpakMV_3jnilAAAA"),
            r#"0/chat,{"sid":"oSO0OpakMV_3jnilAAAA"}"#
        );
        assert_eq!(
            encode_connect_error("/", "Not authorized"),
            r#"4{"message":"Not authorized"}"#
        );
        assert_eq!(
            encode_connect_error_with_data("/chat", "Not authorized", Some(&json!({"reason":"expired"}))),
            r#"4/chat,{"message":"Not authorized","data":{"reason":"expired"}}"#
        );
        assert_eq!(encode_disconnect("/"), "1");
        assert_eq!(encode_disconnect("/admin"), "1/admin,");

        // Every encoder's output decodes back.
        for text in [
            encode_event("/chat", "m", r#"{"a":[1,2]}"#, Some(3)),
            encode_ack("/chat", 3, "[]"),
            encode_connect("/chat", "s"),
            encode_connect_error("/chat", "no"),
            encode_disconnect("/chat"),
        ] {
            assert!(matches!(decode(&text), Ok(Decoded::Packet(_))), "{text:?}");
        }
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        let tricky = "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{0}i\u{1f}j\u{7f}k€\u{2028}\u{1F600}";
        let mut mine = String::new();
        push_json_str(&mut mine, tricky);
        assert_eq!(mine, serde_json::to_string(tricky).unwrap());

        let text = encode_event("/", tricky, "1", None);
        let p = packet(&text);
        assert_eq!(p.event_name().as_deref(), Some(tricky));
        let text = encode_connect_error("/", tricky);
        assert_eq!(packet(&text).data, Some(json!({ "message": tricky })));
    }
}
