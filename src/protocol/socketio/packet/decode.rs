//! The decoder: [`decode`] reads one text packet, [`PartialBinaryPacket`] takes its binary
//! attachments, and [`SioDecoder`] keeps that bookkeeping for a connection.

use bytes::Bytes;
use serde_json::Value;

use super::binary::check_placeholders;
use super::{is_reserved_event, PacketKind, SioPacket, DEFAULT_MAX_ATTACHMENTS};

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
    /// An event named with one of the [`RESERVED_EVENTS`](super::RESERVED_EVENTS).
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
/// [`RESERVED_EVENTS`](super::RESERVED_EVENTS), or a number), ACK an array, CONNECT_ERROR an
/// object or a string. In a binary packet every placeholder must refer to one of the announced
/// attachments, so a bad one is refused before any attachment is buffered. An ACK must carry
/// the id of the event it answers; on other packets than events an id is kept but means
/// nothing, as in the reference implementation.
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::testing::{err, packet, partial};
    use super::super::{SioPacket, RESERVED_EVENTS};
    use super::*;

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
}
