//! HTTP long-polling bodies: packets separated by `\x1e`, read with [`decode_payload`] and
//! written, bounded, with [`PayloadBuilder`].

use super::{EioDecodeError, EioPacket, RECORD_SEPARATOR};

/// Decodes an HTTP long-polling body: packets separated by `\x1e`, binary ones as
/// `b<base64>`.
///
/// A body longer than `max_payload` bytes is refused before anything is decoded; an empty
/// body or an empty record (`4a\x1e`) is an error.
pub fn decode_payload(body: &str, max_payload: usize) -> Result<Vec<EioPacket>, EioDecodeError> {
    if body.len() > max_payload {
        return Err(EioDecodeError::PayloadTooLarge {
            size: body.len(),
            max: max_payload,
        });
    }
    body.split(RECORD_SEPARATOR).map(EioPacket::decode_polling).collect()
}

/// [`decode_payload`] on a raw body, which must be UTF-8. The size is checked first.
pub fn decode_payload_bytes(body: &[u8], max_payload: usize) -> Result<Vec<EioPacket>, EioDecodeError> {
    if body.len() > max_payload {
        return Err(EioDecodeError::PayloadTooLarge {
            size: body.len(),
            max: max_payload,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| EioDecodeError::InvalidUtf8)?;
    decode_payload(text, max_payload)
}

/// Encodes packets as one polling body, however large.
///
/// A text message must not contain `\x1e` (Socket.IO packets never do: JSON escapes control
/// characters); binary messages are written in base64.
pub fn encode_payload<'a>(packets: impl IntoIterator<Item = &'a EioPacket>) -> String {
    let mut body = PayloadBuilder::new(usize::MAX);
    for p in packets {
        body.push(p);
    }
    body.finish()
}

/// Packs outgoing packets into one polling body of bounded size.
///
/// The first packet always fits (so a large packet still goes out, alone); after it, a
/// packet that would take the body past the limit is refused, and waits for the next poll.
#[derive(Debug, Clone)]
pub struct PayloadBuilder {
    body: String,
    max: usize,
    count: usize,
}

impl PayloadBuilder {
    /// An empty body of at most `max_bytes` bytes (beyond the first packet).
    pub fn new(max_bytes: usize) -> Self {
        PayloadBuilder {
            body: String::new(),
            max: max_bytes,
            count: 0,
        }
    }

    /// Adds `packet`; returns `false`, adding nothing, when it does not fit.
    pub fn push(&mut self, packet: &EioPacket) -> bool {
        let mark = self.body.len();
        if self.count > 0 {
            self.body.push(RECORD_SEPARATOR);
        }
        packet.encode_into(&mut self.body);
        self.commit(mark)
    }

    /// Adds a packet already in its text form (as [`EioPacket::encode`] writes it, for
    /// example a message encoded once for many recipients); returns `false`, adding nothing,
    /// when it does not fit.
    pub fn push_encoded(&mut self, encoded: &str) -> bool {
        let mark = self.body.len();
        if self.count > 0 {
            self.body.push(RECORD_SEPARATOR);
        }
        self.body.push_str(encoded);
        self.commit(mark)
    }

    fn commit(&mut self, mark: usize) -> bool {
        if self.count > 0 && self.body.len() > self.max {
            self.body.truncate(mark);
            return false;
        }
        self.count += 1;
        true
    }

    /// How many packets the body holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the body holds no packet yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The body.
    pub fn finish(self) -> String {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::{EioDecodeError, EioPacket, DEFAULT_MAX_PAYLOAD};
    use super::*;

    #[test]
    fn polling_payloads_from_the_protocol_document() {
        // `4hello\x1e2\x1e4world`
        let packets = decode_payload("4hello\x1e2\x1e4world", DEFAULT_MAX_PAYLOAD).unwrap();
        assert_eq!(
            packets,
            vec![
                EioPacket::Message("hello".into()),
                EioPacket::Ping(None),
                EioPacket::Message("world".into())
            ]
        );
        assert_eq!(encode_payload(&packets), "4hello\x1e2\x1e4world");

        // `4hello\x1ebAQIDBA==`: binary as base64 with a `b` prefix.
        let packets = decode_payload("4hello\x1ebAQIDBA==", DEFAULT_MAX_PAYLOAD).unwrap();
        assert_eq!(
            packets,
            vec![
                EioPacket::Message("hello".into()),
                EioPacket::BinaryMessage(Bytes::from_static(&[1, 2, 3, 4]))
            ]
        );
        assert_eq!(encode_payload(&packets), "4hello\x1ebAQIDBA==");

        // The Socket.IO sample session: two events in one POST.
        assert_eq!(
            decode_payload("42[\"hello\"]\x1e42[\"world\"]", 100).unwrap(),
            vec![
                EioPacket::Message("2[\"hello\"]".into()),
                EioPacket::Message("2[\"world\"]".into())
            ]
        );
        assert_eq!(decode_payload("1", 100).unwrap(), vec![EioPacket::Close]);
    }

    #[test]
    fn base64_padding_is_optional_and_empty_binary_works() {
        assert_eq!(
            decode_payload("bAQIDBA", 100).unwrap(),
            vec![EioPacket::BinaryMessage(Bytes::from_static(&[1, 2, 3, 4]))]
        );
        assert_eq!(
            decode_payload("b", 100).unwrap(),
            vec![EioPacket::BinaryMessage(Bytes::new())]
        );
        assert_eq!(EioPacket::BinaryMessage(Bytes::new()).encode(), "b");
    }

    #[test]
    fn malformed_polling_payloads_are_errors() {
        assert!(matches!(decode_payload("", 100), Err(EioDecodeError::Empty)));
        assert!(matches!(decode_payload("4a\x1e", 100), Err(EioDecodeError::Empty)));
        assert!(matches!(
            decode_payload("4a\x1e\x1e4b", 100),
            Err(EioDecodeError::Empty)
        ));
        assert!(matches!(
            decode_payload("4a\x1e9", 100),
            Err(EioDecodeError::UnknownType('9'))
        ));
        assert!(matches!(
            decode_payload("b!!!", 100),
            Err(EioDecodeError::InvalidBase64)
        ));
        assert!(matches!(
            decode_payload("bAQIDBA=x", 100),
            Err(EioDecodeError::InvalidBase64)
        ));
        assert!(matches!(
            decode_payload_bytes(&[b'4', 0xff, 0xfe], 100),
            Err(EioDecodeError::InvalidUtf8)
        ));
        assert_eq!(
            decode_payload_bytes(b"4hi", 100).unwrap(),
            vec![EioPacket::Message("hi".into())]
        );
    }

    #[test]
    fn max_payload_is_enforced() {
        let body = "4".repeat(11);
        assert!(matches!(
            decode_payload(&body, 10),
            Err(EioDecodeError::PayloadTooLarge { size: 11, max: 10 })
        ));
        assert!(matches!(
            decode_payload_bytes(body.as_bytes(), 10),
            Err(EioDecodeError::PayloadTooLarge { size: 11, max: 10 })
        ));
        assert_eq!(decode_payload(&body[..10], 10).unwrap().len(), 1);
        // The limit counts bytes, not characters: `4€` is 4 bytes.
        assert!(decode_payload("4€", 3).is_err());
        assert!(decode_payload("4€", 4).is_ok());
    }

    #[test]
    fn payload_builder_bounds_the_body() {
        let mut b = PayloadBuilder::new(10);
        assert!(b.is_empty());
        assert!(b.push(&EioPacket::Message("abcd".into()))); // 5 bytes
        assert!(b.push_encoded("4abc")); // 5 + 1 + 4 = 10
        assert!(!b.push(&EioPacket::Noop)); // would be 12
        assert_eq!(b.len(), 2);
        assert_eq!(b.finish(), "4abcd\x1e4abc");

        // The first packet always goes, even past the limit.
        let mut b = PayloadBuilder::new(3);
        assert!(b.push(&EioPacket::Message("too long".into())));
        assert!(!b.push(&EioPacket::Noop));
        assert_eq!(b.finish(), "4too long");

        assert_eq!(encode_payload(&[]), "");
        assert_eq!(encode_payload(&[EioPacket::Noop]), "6");
    }
}
