//! The packet types: [`PacketKind`], and [`SioPacket`], one packet with its attachments,
//! built and encoded.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::Value;

use super::encode::write_header;

/// The type of a Socket.IO packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// `0`: connect to a namespace (client), or accept the connection (server).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event.
    Event,
    /// `3`: the acknowledgement of an event.
    Ack,
    /// `4`: the server refuses the connection to a namespace.
    ConnectError,
    /// `5`: an event with binary attachments.
    BinaryEvent,
    /// `6`: an acknowledgement with binary attachments.
    BinaryAck,
}

impl PacketKind {
    /// The kind of the type digit `c`.
    pub fn from_char(c: char) -> Option<Self> {
        Some(match c {
            '0' => PacketKind::Connect,
            '1' => PacketKind::Disconnect,
            '2' => PacketKind::Event,
            '3' => PacketKind::Ack,
            '4' => PacketKind::ConnectError,
            '5' => PacketKind::BinaryEvent,
            '6' => PacketKind::BinaryAck,
            _ => return None,
        })
    }

    /// The type digit.
    pub fn as_char(self) -> char {
        match self {
            PacketKind::Connect => '0',
            PacketKind::Disconnect => '1',
            PacketKind::Event => '2',
            PacketKind::Ack => '3',
            PacketKind::ConnectError => '4',
            PacketKind::BinaryEvent => '5',
            PacketKind::BinaryAck => '6',
        }
    }

    /// BINARY_EVENT or BINARY_ACK.
    pub fn is_binary(self) -> bool {
        matches!(self, PacketKind::BinaryEvent | PacketKind::BinaryAck)
    }

    /// EVENT or BINARY_EVENT.
    pub fn is_event(self) -> bool {
        matches!(self, PacketKind::Event | PacketKind::BinaryEvent)
    }

    /// ACK or BINARY_ACK.
    pub fn is_ack(self) -> bool {
        matches!(self, PacketKind::Ack | PacketKind::BinaryAck)
    }

    /// The kind to write for a packet of this kind with or without attachments: binary
    /// events and acks become plain ones without, and the reverse.
    pub fn with_binary(self, binary: bool) -> Self {
        match (self, binary) {
            (PacketKind::Event | PacketKind::BinaryEvent, true) => PacketKind::BinaryEvent,
            (PacketKind::Event | PacketKind::BinaryEvent, false) => PacketKind::Event,
            (PacketKind::Ack | PacketKind::BinaryAck, true) => PacketKind::BinaryAck,
            (PacketKind::Ack | PacketKind::BinaryAck, false) => PacketKind::Ack,
            (other, _) => other,
        }
    }
}

/// One Socket.IO packet.
#[derive(Debug, Clone, PartialEq)]
pub struct SioPacket {
    /// The packet type.
    pub kind: PacketKind,
    /// The namespace, `/` for the main one.
    pub ns: String,
    /// The ack id: on an event, the sender wants an ACK with this id; on an ACK, the event it
    /// answers.
    pub id: Option<u64>,
    /// The JSON payload, placeholders included (each binary value is
    /// `{"_placeholder":true,"num":n}`; see [`reconstruct_as_bytes`](super::reconstruct_as_bytes)
    /// and [`attach`](super::attach)).
    pub data: Option<Value>,
    /// The binary attachments, in placeholder order: `attachments[n]` is the bytes of
    /// `{"_placeholder":true,"num":n}`. Empty for packets other than BINARY_EVENT and
    /// BINARY_ACK.
    pub attachments: Vec<Bytes>,
}

impl SioPacket {
    pub(super) fn new(kind: PacketKind, ns: &str, id: Option<u64>, data: Option<Value>) -> Self {
        SioPacket {
            kind,
            ns: ns.to_owned(),
            id,
            data,
            attachments: Vec::new(),
        }
    }

    /// A CONNECT packet: the client's request (with its `auth`), or the server's acceptance
    /// (`{"sid":…}`).
    pub fn connect(ns: &str, data: Option<Value>) -> Self {
        Self::new(PacketKind::Connect, ns, None, data)
    }

    /// A DISCONNECT packet.
    pub fn disconnect(ns: &str) -> Self {
        Self::new(PacketKind::Disconnect, ns, None, None)
    }

    /// A CONNECT_ERROR packet: `{"message":…}`.
    pub fn connect_error(ns: &str, message: &str) -> Self {
        Self::new(
            PacketKind::ConnectError,
            ns,
            None,
            Some(serde_json::json!({ "message": message })),
        )
    }

    /// An EVENT packet `[event, args…]`, asking for an ack when `id` is set. Give it
    /// [`SioPacket::attachments`] to make it a BINARY_EVENT.
    pub fn event(ns: &str, event: &str, args: impl IntoIterator<Item = Value>, id: Option<u64>) -> Self {
        let data = std::iter::once(Value::String(event.to_owned())).chain(args).collect();
        Self::new(PacketKind::Event, ns, id, Some(Value::Array(data)))
    }

    /// An ACK packet answering the event `id` with `args`. Give it
    /// [`SioPacket::attachments`] to make it a BINARY_ACK.
    pub fn ack(ns: &str, id: u64, args: impl IntoIterator<Item = Value>) -> Self {
        Self::new(
            PacketKind::Ack,
            ns,
            Some(id),
            Some(Value::Array(args.into_iter().collect())),
        )
    }

    /// The event name of an EVENT or BINARY_EVENT (the reference implementation also allows
    /// a number, given here in decimal).
    pub fn event_name(&self) -> Option<Cow<'_, str>> {
        if !self.kind.is_event() {
            return None;
        }
        match self.data.as_ref()?.as_array()?.first()? {
            Value::String(s) => Some(Cow::Borrowed(s)),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        }
    }

    /// The arguments: after the event name for an event, all of the array for an ack, none
    /// for other packets.
    pub fn args(&self) -> &[Value] {
        let all = match self.data.as_ref().and_then(Value::as_array) {
            Some(a) => a.as_slice(),
            None => return &[],
        };
        if self.kind.is_event() {
            all.get(1..).unwrap_or(&[])
        } else if self.kind.is_ack() {
            all
        } else {
            &[]
        }
    }

    /// The type written on the wire: BINARY_EVENT or BINARY_ACK exactly when there are
    /// attachments (an EVENT with attachments is sent as a BINARY_EVENT, a BINARY_ACK with
    /// none as an ACK).
    pub fn wire_kind(&self) -> PacketKind {
        self.kind.with_binary(!self.attachments.is_empty())
    }

    /// The text of the packet. When it has attachments, send them after it, one binary
    /// frame (or binary Engine.IO message) each, in order.
    ///
    /// The namespace must satisfy [`is_valid_namespace`](super::is_valid_namespace) (namespaces
    /// from [`decode`](super::decode) do).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 + self.ns.len());
        write_header(&mut out, self.wire_kind(), self.attachments.len(), &self.ns, self.id);
        if let Some(data) = &self.data {
            // `Value`'s Display is compact JSON; writing to a String cannot fail.
            let _ = write!(out, "{data}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::packet;
    use super::super::{is_reserved_event, is_valid_namespace};
    use super::*;

    /// Every encoded example of the protocol document, decoded and encoded back.
    #[test]
    fn protocol_document_examples_round_trip() {
        let cases: Vec<(&str, SioPacket)> = vec![
            ("0", SioPacket::connect("/", None)),
            (
                r#"0{"sid":"wZX3oN0bSVIhsaknAAAI"}"#,
                SioPacket::connect("/", Some(json!({"sid":"wZX3oN0bSVIhsaknAAAI"}))),
            ),
            ("0/admin,", SioPacket::connect("/admin", None)),
            (
                r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#,
                SioPacket::connect("/admin", Some(json!({"sid":"oSO0OpakMV_3jnilAAAA"}))),
            ),
            (
                r#"4{"message":"Not authorized"}"#,
                SioPacket::connect_error("/", "Not authorized"),
            ),
            (r#"2["foo"]"#, SioPacket::event("/", "foo", [], None)),
            (r#"2/admin,["bar"]"#, SioPacket::event("/admin", "bar", [], None)),
            (r#"212["foo"]"#, SioPacket::event("/", "foo", [], Some(12))),
            (r#"312[]"#, SioPacket::ack("/", 12, [])),
            (r#"2/admin,13["foo"]"#, SioPacket::event("/admin", "foo", [], Some(13))),
            (r#"3/admin,13["bar"]"#, SioPacket::ack("/admin", 13, [json!("bar")])),
            (r#"314["bar"]"#, SioPacket::ack("/", 14, [json!("bar")])),
            ("1", SioPacket::disconnect("/")),
            ("1/admin,", SioPacket::disconnect("/admin")),
        ];
        for (text, want) in cases {
            assert_eq!(packet(text), want, "decoding {text:?}");
            assert_eq!(want.encode(), text, "encoding {want:?}");
        }
    }

    #[test]
    fn connect_with_auth_and_event_args() {
        let p = packet(r#"0{"token":"123"}"#);
        assert_eq!(p.data, Some(json!({"token":"123"})));
        let p = packet(r#"0/admin,{"token":"123"}"#);
        assert_eq!((p.ns.as_str(), p.data), ("/admin", Some(json!({"token":"123"}))));

        let p = packet(r#"2["message",{"text":"hi","room":"general"},2]"#);
        assert_eq!(p.event_name().as_deref(), Some("message"));
        assert_eq!(p.args(), &[json!({"text":"hi","room":"general"}), json!(2)]);
        assert_eq!(p.id, None);

        // The reference implementation accepts a number as the event name.
        let p = packet("2[42,1]");
        assert_eq!(p.event_name().as_deref(), Some("42"));

        let p = packet("3/chat,7[1,2]");
        assert_eq!(p.args(), &[json!(1), json!(2)]);
        assert_eq!(p.event_name(), None);
        assert!(packet("0").args().is_empty());

        // A namespace without its comma runs to the end, as in the reference parser.
        assert_eq!(packet("0/admin").ns, "/admin");
        assert_eq!(packet("1/admin").ns, "/admin");
        // A large ack id.
        assert_eq!(packet(&format!("2{}[\"a\"]", u64::MAX)).id, Some(u64::MAX));
        // An older server's CONNECT_ERROR carried a string.
        assert_eq!(packet(r#"4"nope""#).data, Some(json!("nope")));
        // Unicode survives.
        assert_eq!(packet(r#"2/ünï,["é",""]"#).ns, "/ünï");
    }

    #[test]
    fn kinds_and_namespaces() {
        for c in '0'..='6' {
            let k = PacketKind::from_char(c).unwrap();
            assert_eq!(k.as_char(), c);
        }
        assert_eq!(PacketKind::from_char('7'), None);
        assert_eq!(PacketKind::Event.with_binary(true), PacketKind::BinaryEvent);
        assert_eq!(PacketKind::BinaryAck.with_binary(false), PacketKind::Ack);
        assert_eq!(PacketKind::Connect.with_binary(true), PacketKind::Connect);

        assert!(is_valid_namespace("/"));
        assert!(is_valid_namespace("/chat room"));
        assert!(!is_valid_namespace("chat"));
        assert!(!is_valid_namespace("/a,b"));
        assert!(!is_valid_namespace("/a\u{1e}"));
        assert!(!is_valid_namespace(""));

        assert!(is_reserved_event("disconnect"));
        assert!(!is_reserved_event("message"));
    }
}
