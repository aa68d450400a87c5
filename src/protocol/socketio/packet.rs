//! Socket.IO v5 packets: the text inside an Engine.IO message.
//!
//! ```text
//! <type>[<#attachments>-][<namespace>,][<ack id>][<JSON payload>]
//! ```
//!
//! | type | name | payload |
//! |---|---|---|
//! | `0` | CONNECT | optional object: the client's `auth`; the server answers `{"sid":…}` |
//! | `1` | DISCONNECT | none |
//! | `2` | EVENT | non-empty array: the event name, then its arguments |
//! | `3` | ACK | array: the acknowledgement's arguments |
//! | `4` | CONNECT_ERROR | object `{"message":…,"data"?:…}` |
//! | `5` | BINARY_EVENT | as EVENT, with placeholders; the attachments follow |
//! | `6` | BINARY_ACK | as ACK, with placeholders; the attachments follow |
//!
//! The namespace is written only when it is not `/`; it ends at the first comma. Examples,
//! from the protocol document: `2["foo"]`, `2/admin,["bar"]`, `212["foo"]` (ack id 12),
//! `3/admin,13["bar"]`, `0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}`, `1/admin,`,
//! `51-["baz",{"_placeholder":true,"num":0}]` followed by one binary frame.
//!
//! # Binary
//!
//! The payload stays JSON. Each binary value sits in it as its placeholder,
//! `{"_placeholder":true,"num":n}`, and its bytes are [`SioPacket::attachments`]`[n]`:
//! exactly the wire form, so a received binary event re-emitted with the same data and the
//! same attachments reaches the other clients as the same `Buffer`s, with no conversion.
//! [`placeholder_index`] tells a placeholder from other JSON, [`attach`] adds bytes to an
//! outgoing payload, and [`reconstruct_as_bytes`] turns each placeholder into an array of
//! byte values, which serde reads as a `Vec<u8>`.
//!
//! Decoding is in two steps when attachments follow: [`decode`] returns
//! [`Decoded::Partial`], and [`PartialBinaryPacket::push`] takes the next binary frames until
//! the packet is complete. [`SioDecoder`] does this bookkeeping for a connection.
//!
//! Every malformed input is a [`SioDecodeError`]; nothing here panics on peer input. JSON
//! nesting deeper than 128 levels is refused by serde_json, so a depth bomb is an error too.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::{Map, Value};

/// The Socket.IO protocol revision spoken here.
pub const PROTOCOL_VERSION: u8 = 5;

/// The default limit on the attachments of one binary packet (10, as the reference parser).
pub const DEFAULT_MAX_ATTACHMENTS: usize = 10;

/// Event names a peer may not send or receive: they mean something to the client or server
/// libraries themselves.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Whether `name` is one of the [`RESERVED_EVENTS`].
pub fn is_reserved_event(name: &str) -> bool {
    RESERVED_EVENTS.contains(&name)
}

/// Whether `ns` can be written in a packet: it starts with `/` and holds no comma (the
/// namespace terminator) and no control character.
pub fn is_valid_namespace(ns: &str) -> bool {
    ns.starts_with('/') && !ns.contains(',') && !ns.chars().any(char::is_control)
}

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
    /// The JSON payload, placeholders included (each binary value is `{"_placeholder":true,"num":n}`; see [`reconstruct_as_bytes`] and [`attach`]).
    pub data: Option<Value>,
    /// The binary attachments, in placeholder order: `attachments[n]` is the bytes of
    /// `{"_placeholder":true,"num":n}`. Empty for packets other than BINARY_EVENT and
    /// BINARY_ACK.
    pub attachments: Vec<Bytes>,
}

impl SioPacket {
    fn new(kind: PacketKind, ns: &str, id: Option<u64>, data: Option<Value>) -> Self {
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
    /// The namespace must satisfy [`is_valid_namespace`] (namespaces from [`decode`] do).
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

/// Why a Socket.IO packet could not be decoded. The protocol asks the receiver to close the
/// connection on any of these.
#[derive(Debug, thiserror::Error)]
pub enum SioDecodeError {
    /// An empty message.
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type (`0` to `6`).
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// The attachment count of a binary packet is missing, not a number, zero, or not
    /// followed by `-`.
    #[error("illegal attachment count")]
    IllegalAttachments,
    /// More attachments than allowed.
    #[error("too many attachments: {count} (at most {max})")]
    TooManyAttachments {
        /// The count the packet announced.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The namespace holds a control character.
    #[error("invalid namespace")]
    BadNamespace,
    /// The ack id does not fit in a `u64`, or an ACK has none.
    #[error("invalid ack id")]
    BadAckId,
    /// The payload is not JSON.
    #[error("invalid JSON payload: {0}")]
    Json(#[from] serde_json::Error),
    /// The payload is not what the packet type requires.
    #[error("invalid payload for {kind:?}: {reason}")]
    InvalidPayload {
        /// The packet type.
        kind: PacketKind,
        /// What was expected.
        reason: &'static str,
    },
    /// An event named with one of the [`RESERVED_EVENTS`].
    #[error("reserved event name {0:?}")]
    ReservedEvent(String),
    /// A placeholder whose `num` is not the index of an attachment.
    #[error("a placeholder does not refer to an attachment")]
    IllegalPlaceholder,
    /// A text message arrived while a binary packet still awaited attachments.
    #[error("a text message arrived while a binary packet awaited its attachments")]
    UnexpectedText,
    /// A binary message arrived while no binary packet awaited attachments.
    #[error("a binary message arrived with no binary packet awaiting attachments")]
    UnexpectedBinary,
}

/// The result of decoding a packet's text.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A complete packet.
    Packet(SioPacket),
    /// A binary packet awaiting its attachments.
    Partial(PartialBinaryPacket),
}

/// A BINARY_EVENT or BINARY_ACK whose text has arrived, awaiting its attachments.
#[derive(Debug, Clone, PartialEq)]
pub struct PartialBinaryPacket {
    packet: SioPacket,
    expected: usize,
}

impl PartialBinaryPacket {
    /// The packet so far: its type, namespace, id and payload, and the attachments received.
    pub fn header(&self) -> &SioPacket {
        &self.packet
    }

    /// How many attachments the packet announced.
    pub fn expected(&self) -> usize {
        self.expected
    }

    /// How many attachments have arrived.
    pub fn received(&self) -> usize {
        self.packet.attachments.len()
    }

    /// Adds the next attachment; the packet is complete with the last one.
    pub fn push(mut self, attachment: Bytes) -> Decoded {
        self.packet.attachments.push(attachment);
        if self.packet.attachments.len() >= self.expected {
            Decoded::Packet(self.packet)
        } else {
            Decoded::Partial(self)
        }
    }
}

/// Decodes a packet's text, with at most [`DEFAULT_MAX_ATTACHMENTS`] attachments.
pub fn decode(text: &str) -> Result<Decoded, SioDecodeError> {
    decode_with_limit(text, DEFAULT_MAX_ATTACHMENTS)
}

/// Decodes a packet's text, with at most `max_attachments` attachments.
///
/// The payload is checked against the type: CONNECT an object or nothing, DISCONNECT
/// nothing, EVENT a non-empty array whose first element is the event name (a string not in
/// [`RESERVED_EVENTS`], or a number), ACK an array, CONNECT_ERROR an object or a string. In
/// a binary packet every placeholder must refer to one of the announced attachments, so a
/// bad one is refused before any attachment is buffered. An ACK must carry the id of the
/// event it answers; on other packets than events an id is kept but means nothing, as in the
/// reference implementation.
pub fn decode_with_limit(text: &str, max_attachments: usize) -> Result<Decoded, SioDecodeError> {
    let first = text.chars().next().ok_or(SioDecodeError::Empty)?;
    let kind = PacketKind::from_char(first).ok_or(SioDecodeError::UnknownType(first))?;
    // The type digit is one byte; everything this parser splits on is ASCII, so every slice
    // below falls on a character boundary.
    let mut rest = &text[1..];

    let mut expected = 0;
    if kind.is_binary() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || rest.as_bytes().get(digits) != Some(&b'-') {
            return Err(SioDecodeError::IllegalAttachments);
        }
        expected = parse_decimal(&rest[..digits]).ok_or(SioDecodeError::TooManyAttachments {
            count: usize::MAX,
            max: max_attachments,
        })?;
        if expected == 0 {
            return Err(SioDecodeError::IllegalAttachments);
        }
        if expected > max_attachments {
            return Err(SioDecodeError::TooManyAttachments {
                count: expected,
                max: max_attachments,
            });
        }
        rest = &rest[digits + 1..];
    }

    let mut ns = "/";
    if rest.starts_with('/') {
        let (name, after) = match rest.find(',') {
            Some(comma) => (&rest[..comma], &rest[comma + 1..]),
            None => (rest, ""),
        };
        if name.chars().any(char::is_control) {
            return Err(SioDecodeError::BadNamespace);
        }
        ns = name;
        rest = after;
    }

    let mut id = None;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 {
        id = Some(parse_decimal::<u64>(&rest[..digits]).ok_or(SioDecodeError::BadAckId)?);
        rest = &rest[digits..];
    }

    let data = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str::<Value>(rest)?)
    };
    check_payload(kind, data.as_ref())?;
    if kind.is_ack() && id.is_none() {
        return Err(SioDecodeError::BadAckId);
    }
    if let Some(data) = &data {
        if kind.is_binary() {
            check_placeholders(data, expected)?;
        }
    }

    let mut packet = SioPacket::new(kind, ns, id, data);
    if expected == 0 {
        Ok(Decoded::Packet(packet))
    } else {
        packet.attachments.reserve_exact(expected);
        Ok(Decoded::Partial(PartialBinaryPacket { packet, expected }))
    }
}

fn parse_decimal<T: std::str::FromStr>(digits: &str) -> Option<T> {
    digits.parse().ok()
}

fn check_payload(kind: PacketKind, data: Option<&Value>) -> Result<(), SioDecodeError> {
    let bad = |reason| Err(SioDecodeError::InvalidPayload { kind, reason });
    match (kind, data) {
        (PacketKind::Connect, None | Some(Value::Object(_))) => Ok(()),
        (PacketKind::Connect, _) => bad("expected an object or nothing"),
        (PacketKind::Disconnect, None) => Ok(()),
        (PacketKind::Disconnect, _) => bad("expected no payload"),
        (PacketKind::ConnectError, Some(Value::Object(_) | Value::String(_))) => Ok(()),
        (PacketKind::ConnectError, _) => bad("expected an object"),
        (PacketKind::Event | PacketKind::BinaryEvent, Some(Value::Array(items))) => match items.first() {
            Some(Value::String(name)) if is_reserved_event(name) => Err(SioDecodeError::ReservedEvent(name.clone())),
            Some(Value::String(_) | Value::Number(_)) => Ok(()),
            Some(_) => bad("the event name must be a string"),
            None => bad("expected a non-empty array"),
        },
        (PacketKind::Event | PacketKind::BinaryEvent, _) => bad("expected a non-empty array"),
        (PacketKind::Ack | PacketKind::BinaryAck, Some(Value::Array(_))) => Ok(()),
        (PacketKind::Ack | PacketKind::BinaryAck, _) => bad("expected an array"),
    }
}

fn is_placeholder_object(map: &Map<String, Value>) -> bool {
    map.get("_placeholder") == Some(&Value::Bool(true))
}

fn check_placeholders(data: &Value, attachments: usize) -> Result<(), SioDecodeError> {
    match data {
        Value::Object(map) if is_placeholder_object(map) => match placeholder_num(map) {
            Some(n) if n < attachments => Ok(()),
            _ => Err(SioDecodeError::IllegalPlaceholder),
        },
        Value::Object(map) => map.values().try_for_each(|v| check_placeholders(v, attachments)),
        Value::Array(items) => items.iter().try_for_each(|v| check_placeholders(v, attachments)),
        _ => Ok(()),
    }
}

fn placeholder_num(map: &Map<String, Value>) -> Option<usize> {
    map.get("num")?.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// The placeholder of attachment `num`: `{"_placeholder":true,"num":num}`.
pub fn placeholder(num: usize) -> Value {
    serde_json::json!({ "_placeholder": true, "num": num })
}

/// The attachment index of `value` when it is a placeholder.
pub fn placeholder_index(value: &Value) -> Option<usize> {
    match value {
        Value::Object(map) if is_placeholder_object(map) => placeholder_num(map),
        _ => None,
    }
}

/// Adds `bytes` to the attachments of an outgoing payload and returns the placeholder to put
/// in the JSON where the bytes belong.
pub fn attach(attachments: &mut Vec<Bytes>, bytes: Bytes) -> Value {
    attachments.push(bytes);
    placeholder(attachments.len() - 1)
}

/// A copy of `data` with each placeholder replaced by its attachment as an array of byte
/// values (`[1,2,3,4]`), the form serde reads into a `Vec<u8>`.
///
/// A placeholder that refers to no attachment is [`SioDecodeError::IllegalPlaceholder`].
pub fn reconstruct_as_bytes(data: &Value, attachments: &[Bytes]) -> Result<Value, SioDecodeError> {
    Ok(match data {
        Value::Object(map) if is_placeholder_object(map) => {
            let bytes = placeholder_num(map)
                .and_then(|n| attachments.get(n))
                .ok_or(SioDecodeError::IllegalPlaceholder)?;
            Value::Array(bytes.iter().map(|b| Value::from(*b)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), reconstruct_as_bytes(v, attachments)?)))
                .collect::<Result<_, SioDecodeError>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| reconstruct_as_bytes(v, attachments))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// Decodes the Socket.IO packets of one connection, collecting the attachments of binary
/// packets from the binary messages that follow them.
#[derive(Debug, Clone)]
pub struct SioDecoder {
    max_attachments: usize,
    pending: Option<PartialBinaryPacket>,
}

impl Default for SioDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ATTACHMENTS)
    }
}

impl SioDecoder {
    /// A decoder allowing at most `max_attachments` attachments a packet.
    pub fn new(max_attachments: usize) -> Self {
        SioDecoder {
            max_attachments,
            pending: None,
        }
    }

    /// Decodes a text message: `Some` packet when complete, `None` when it is a binary
    /// packet awaiting attachments. Text while attachments are awaited is
    /// [`SioDecodeError::UnexpectedText`].
    pub fn decode_text(&mut self, text: &str) -> Result<Option<SioPacket>, SioDecodeError> {
        if self.pending.is_some() {
            return Err(SioDecodeError::UnexpectedText);
        }
        match decode_with_limit(text, self.max_attachments)? {
            Decoded::Packet(p) => Ok(Some(p)),
            Decoded::Partial(partial) => {
                self.pending = Some(partial);
                Ok(None)
            }
        }
    }

    /// Takes a binary message as the next attachment: `Some` packet when it was the last
    /// one. Binary with no packet awaiting it is [`SioDecodeError::UnexpectedBinary`].
    pub fn decode_binary(&mut self, bytes: Bytes) -> Result<Option<SioPacket>, SioDecodeError> {
        let partial = self.pending.take().ok_or(SioDecodeError::UnexpectedBinary)?;
        match partial.push(bytes) {
            Decoded::Packet(p) => Ok(Some(p)),
            Decoded::Partial(partial) => {
                self.pending = Some(partial);
                Ok(None)
            }
        }
    }

    /// Whether a binary packet awaits attachments.
    pub fn is_awaiting_attachments(&self) -> bool {
        self.pending.is_some()
    }

    /// Drops a packet awaiting attachments, if any.
    pub fn reset(&mut self) {
        self.pending = None;
    }
}

/// Writes `<type>[<n>-][<ns>,][<id>]`.
fn write_header(out: &mut String, kind: PacketKind, attachments: usize, ns: &str, id: Option<u64>) {
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
/// `data_json` must be one JSON value; `ns` must satisfy [`is_valid_namespace`].
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
    use super::*;
    use serde_json::json;

    fn packet(text: &str) -> SioPacket {
        match decode(text) {
            Ok(Decoded::Packet(p)) => p,
            other => panic!("{text:?} should decode to a complete packet, got {other:?}"),
        }
    }

    fn partial(text: &str) -> PartialBinaryPacket {
        match decode(text) {
            Ok(Decoded::Partial(p)) => p,
            other => panic!("{text:?} should decode to a partial packet, got {other:?}"),
        }
    }

    fn err(text: &str) -> SioDecodeError {
        match decode(text) {
            Err(e) => e,
            Ok(d) => panic!("{text:?} should not decode, got {d:?}"),
        }
    }

    fn complete(p: PartialBinaryPacket, frames: &[&'static [u8]]) -> SioPacket {
        let mut d = Decoded::Partial(p);
        for f in frames {
            d = match d {
                Decoded::Partial(p) => p.push(Bytes::from_static(f)),
                Decoded::Packet(_) => panic!("complete too early"),
            };
        }
        match d {
            Decoded::Packet(p) => p,
            Decoded::Partial(p) => panic!("still awaiting: {p:?}"),
        }
    }

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
    fn binary_examples_from_the_protocol_document() {
        let text = r#"51-["baz",{"_placeholder":true,"num":0}]"#;
        let p = partial(text);
        assert_eq!((p.expected(), p.received()), (1, 0));
        assert_eq!(p.header().kind, PacketKind::BinaryEvent);
        let p = complete(p, &[&[1, 2, 3, 4]]);
        assert_eq!(p.event_name().as_deref(), Some("baz"));
        assert_eq!(p.args(), &[placeholder(0)]);
        assert_eq!(p.attachments, vec![Bytes::from_static(&[1, 2, 3, 4])]);
        assert_eq!(p.encode(), text);

        let text = r#"52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        let p = complete(partial(text), &[&[1, 2], &[3, 4]]);
        assert_eq!(p.ns, "/admin");
        assert_eq!(
            p.attachments,
            vec![Bytes::from_static(&[1, 2]), Bytes::from_static(&[3, 4])]
        );
        assert_eq!(p.encode(), text);

        let text = r#"51-14["foo",{"_placeholder":true,"num":0}]"#;
        let p = complete(partial(text), &[&[1, 2, 3, 4]]);
        assert_eq!((p.kind, p.id), (PacketKind::BinaryEvent, Some(14)));
        assert_eq!(p.encode(), text);

        let text = r#"61-15["bar",{"_placeholder":true,"num":0}]"#;
        let p = complete(partial(text), &[&[1, 2, 3, 4]]);
        assert_eq!((p.kind, p.id), (PacketKind::BinaryAck, Some(15)));
        assert_eq!(p.args(), &[json!("bar"), placeholder(0)]);
        assert_eq!(p.encode(), text);

        // From the sample session: a binary ack in a namespace.
        let text = r#"61-/admin,1[{"_placeholder":true,"num":0}]"#;
        let p = complete(partial(text), &[b"x"]);
        assert_eq!((p.ns.as_str(), p.id, p.args().len()), ("/admin", Some(1), 1));
        assert_eq!(p.encode(), text);
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
    fn malformed_packets_are_each_an_error() {
        use SioDecodeError as E;
        assert!(matches!(err(""), E::Empty));
        assert!(matches!(err("7"), E::UnknownType('7')));
        assert!(matches!(err("a"), E::UnknownType('a')));
        assert!(matches!(err("€"), E::UnknownType('€')));

        // Attachment counts.
        for bad in [
            "5",
            "5[\"a\"]",
            "5-[\"a\"]",
            "51[\"a\"]",
            "5x-[\"a\"]",
            "50-[\"a\"]",
            "61",
        ] {
            assert!(matches!(err(bad), E::IllegalAttachments), "{bad:?}");
        }
        assert!(matches!(
            err("511-[\"a\"]"),
            E::TooManyAttachments { count: 11, max: 10 }
        ));
        assert!(matches!(
            err("599999999999999999999999-[\"a\"]"),
            E::TooManyAttachments { .. }
        ));
        assert!(matches!(
            decode_with_limit(r#"52-["a",{"_placeholder":true,"num":1}]"#, 1),
            Err(E::TooManyAttachments { count: 2, max: 1 })
        ));

        // Namespaces, ack ids.
        assert!(matches!(err("2/ad\u{1}min,[\"a\"]"), E::BadNamespace));
        assert!(matches!(err("2/ad\nmin,[\"a\"]"), E::BadNamespace));
        assert!(matches!(err("218446744073709551616[\"a\"]"), E::BadAckId));
        assert!(matches!(err("3[]"), E::BadAckId));
        assert!(matches!(err("3/admin,[\"a\"]"), E::BadAckId));
        assert!(matches!(err(r#"61-[{"_placeholder":true,"num":0}]"#), E::BadAckId));
        // An id where none is expected is kept, as the reference parser does.
        assert_eq!(packet("0/admin,1").id, Some(1));

        // JSON.
        assert!(matches!(err("2[\"a\""), E::Json(_)));
        assert!(matches!(err("2admin,[\"a\"]"), E::Json(_)));
        assert!(matches!(err("2[\"a\"]x"), E::Json(_)));
        let bomb = format!("2[\"a\",{}{}]", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(err(&bomb), E::Json(_)));

        // Payloads that do not suit the type.
        for bad in [
            "0[]",
            "0\"x\"",
            "1{}",
            "1/admin,[]",
            "2",
            "2/chat,",
            "2{}",
            "2[]",
            "2[{}]",
            "2[null]",
            "2\"foo\"",
            "3",
            "312",
            "3{}",
            "4",
            "4[]",
            "51-{}",
            "51-[]",
            "61-1",
            "61-{}",
        ] {
            assert!(matches!(err(bad), E::InvalidPayload { .. }), "{bad:?}: {:?}", err(bad));
        }

        // Reserved event names.
        for name in RESERVED_EVENTS {
            assert!(matches!(err(&format!("2[\"{name}\"]")), E::ReservedEvent(n) if n == name));
        }
        assert!(matches!(
            err("51-[\"disconnect\",{\"_placeholder\":true,\"num\":0}]"),
            E::ReservedEvent(_)
        ));

        // Placeholders that refer to no announced attachment.
        for bad in [
            r#"51-["a",{"_placeholder":true,"num":1}]"#,
            r#"51-["a",{"_placeholder":true,"num":-1}]"#,
            r#"51-["a",{"_placeholder":true,"num":"0"}]"#,
            r#"51-["a",{"_placeholder":true}]"#,
            r#"51-["a",{"deep":[{"_placeholder":true,"num":1.5}]}]"#,
            r#"61-1[{"_placeholder":true,"num":7}]"#,
        ] {
            assert!(matches!(err(bad), E::IllegalPlaceholder), "{bad:?}");
        }
        // `_placeholder` other than `true` is plain JSON.
        assert_eq!(partial(r#"51-["a",{"_placeholder":1,"num":9}]"#).expected(), 1);
    }

    #[test]
    fn nested_placeholders_and_reconstruction() {
        let text =
            r#"52-["upload",{"name":"a.bin","parts":[{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]}]"#;
        let p = complete(partial(text), &[&[0xAA], &[1, 2]]);
        let arg = &p.args()[0];
        let parts = arg["parts"].as_array().unwrap();
        assert_eq!(
            parts.iter().map(placeholder_index).collect::<Vec<_>>(),
            [Some(1), Some(0)]
        );
        assert_eq!(placeholder_index(&arg["name"]), None);

        let plain = reconstruct_as_bytes(arg, &p.attachments).unwrap();
        assert_eq!(plain, json!({"name":"a.bin","parts":[[1,2],[170]]}));
        let parts: Vec<Vec<u8>> = serde_json::from_value(plain["parts"].clone()).unwrap();
        assert_eq!(parts, vec![vec![1, 2], vec![0xAA]]);

        assert!(matches!(
            reconstruct_as_bytes(&placeholder(2), &p.attachments),
            Err(SioDecodeError::IllegalPlaceholder)
        ));
        assert_eq!(reconstruct_as_bytes(&json!([1, "x"]), &[]).unwrap(), json!([1, "x"]));
    }

    /// `socket.emit('message', buffer)` → handler → `message-back` with the same data: the
    /// placeholders and attachments go back out unchanged.
    #[test]
    fn binary_event_echo_is_lossless() {
        let inbound = r#"51-3["message",{"_placeholder":true,"num":0}]"#;
        let p = complete(partial(inbound), &[&[9, 8, 7]]);

        let data_json = p.args()[0].to_string();
        let out = encode_binary_event("/", "message-back", &data_json, p.attachments.len(), None);
        assert_eq!(out, r#"51-["message-back",{"_placeholder":true,"num":0}]"#);

        let back = complete(partial(&out), &[&[9, 8, 7]]);
        assert_eq!(back.event_name().as_deref(), Some("message-back"));
        assert_eq!(back.args(), p.args());

        // The same through SioPacket: an ack carrying the attachments becomes a BINARY_ACK.
        let mut ack = SioPacket::ack("/", 3, p.args().iter().cloned());
        ack.attachments = p.attachments.clone();
        assert_eq!(ack.wire_kind(), PacketKind::BinaryAck);
        assert_eq!(ack.encode(), r#"61-3[{"_placeholder":true,"num":0}]"#);
    }

    #[test]
    fn building_an_outgoing_binary_payload() {
        let mut attachments = Vec::new();
        let data = json!({"a": attach(&mut attachments, Bytes::from_static(b"x")), "b": attach(&mut attachments, Bytes::from_static(b"yz"))});
        let mut p = SioPacket::event("/files", "chunk", [data], Some(4));
        p.attachments = attachments;
        let text = p.encode();
        assert_eq!(
            text,
            r#"52-/files,4["chunk",{"a":{"_placeholder":true,"num":0},"b":{"_placeholder":true,"num":1}}]"#
        );
        assert_eq!(complete(partial(&text), &[b"x", b"yz"]), {
            let mut p2 = p.clone();
            p2.kind = PacketKind::BinaryEvent;
            p2
        });

        // A "binary" packet without attachments goes out as a plain one.
        let mut p = SioPacket::event("/", "e", [json!(1)], None);
        p.kind = PacketKind::BinaryEvent;
        assert_eq!(p.encode(), r#"2["e",1]"#);
    }

    #[test]
    fn decoder_collects_attachments_and_refuses_misplaced_frames() {
        let mut d = SioDecoder::default();
        assert!(matches!(
            d.decode_binary(Bytes::from_static(b"x")),
            Err(SioDecodeError::UnexpectedBinary)
        ));
        assert_eq!(
            d.decode_text(r#"2["a"]"#).unwrap(),
            Some(SioPacket::event("/", "a", [], None))
        );

        let header = r#"52-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert_eq!(d.decode_text(header).unwrap(), None);
        assert!(d.is_awaiting_attachments());
        assert!(matches!(
            d.decode_text(r#"2["b"]"#),
            Err(SioDecodeError::UnexpectedText)
        ));
        assert_eq!(d.decode_binary(Bytes::from_static(b"1")).unwrap(), None);
        let p = d.decode_binary(Bytes::from_static(b"2")).unwrap().unwrap();
        assert_eq!(p.attachments, vec![Bytes::from_static(b"1"), Bytes::from_static(b"2")]);
        assert!(!d.is_awaiting_attachments());

        assert_eq!(
            d.decode_text(r#"51-["a",{"_placeholder":true,"num":0}]"#).unwrap(),
            None
        );
        d.reset();
        assert!(!d.is_awaiting_attachments());

        let mut strict = SioDecoder::new(1);
        assert!(matches!(
            strict.decode_text(r#"52-["a"]"#),
            Err(SioDecodeError::TooManyAttachments { count: 2, max: 1 })
        ));
        // A failed decode leaves nothing pending.
        assert!(!strict.is_awaiting_attachments());
    }

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
