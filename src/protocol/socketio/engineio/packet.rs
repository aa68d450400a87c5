//! One Engine.IO packet ([`EioPacket`]): its text form, its polling record and its WebSocket
//! frame.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;

use super::{OpenPacket, PROBE};

/// Base64 as the browser writes it (`btoa`): the standard alphabet, padding tolerated or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq)]
pub enum EioPacket {
    /// `0`: the handshake, sent by the server first.
    Open(OpenPacket),
    /// `1`: close the session.
    Close,
    /// `2`: a ping; the data is `Some("probe")` for the upgrade probe.
    Ping(Option<String>),
    /// `3`: a pong, echoing the ping's data.
    Pong(Option<String>),
    /// `4`: a text message (one Socket.IO packet).
    Message(String),
    /// A binary message: a binary WebSocket frame, or `b<base64>` in a polling body.
    BinaryMessage(Bytes),
    /// `5`: the client completes an upgrade.
    Upgrade,
    /// `6`: nothing; answers a pending poll during an upgrade.
    Noop,
}

/// A WebSocket frame carrying one Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsFrame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

/// Why Engine.IO text could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum EioDecodeError {
    /// An empty packet (also an empty record in a polling body, as in `4a\x1e\x1e4b`).
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type (`0` to `6`).
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// An open packet whose data is not the handshake JSON.
    #[error("invalid open packet: {0}")]
    InvalidOpen(#[source] serde_json::Error),
    /// A `b…` record of a polling body that is not valid base64.
    #[error("invalid base64 in a binary packet")]
    InvalidBase64,
    /// A polling body that is not UTF-8.
    #[error("the payload is not valid UTF-8")]
    InvalidUtf8,
    /// A polling body larger than the limit.
    #[error("payload of {size} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// The size of the body, in bytes.
        size: usize,
        /// The limit, in bytes.
        max: usize,
    },
}

impl EioPacket {
    /// The probe pong answering the probe ping of an upgrade (`3probe`).
    pub fn probe_pong() -> Self {
        EioPacket::Pong(Some(PROBE.to_owned()))
    }

    /// Whether this is the probe ping of an upgrade (`2probe`).
    pub fn is_probe_ping(&self) -> bool {
        matches!(self, EioPacket::Ping(Some(d)) if d == PROBE)
    }

    /// The type digit of the packet (`'4'` for both text and binary messages).
    pub fn type_char(&self) -> char {
        match self {
            EioPacket::Open(_) => '0',
            EioPacket::Close => '1',
            EioPacket::Ping(_) => '2',
            EioPacket::Pong(_) => '3',
            EioPacket::Message(_) | EioPacket::BinaryMessage(_) => '4',
            EioPacket::Upgrade => '5',
            EioPacket::Noop => '6',
        }
    }

    /// The text form of the packet: `<type><data>`, or `b<base64>` for a binary message (its
    /// form in a polling body; over WebSocket use [`EioPacket::into_ws_frame`], which sends
    /// binary as a binary frame).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out
    }

    fn encoded_len_hint(&self) -> usize {
        match self {
            EioPacket::Message(m) => 1 + m.len(),
            EioPacket::BinaryMessage(b) => 1 + b.len().div_ceil(3) * 4,
            EioPacket::Ping(Some(d)) | EioPacket::Pong(Some(d)) => 1 + d.len(),
            EioPacket::Open(_) => 128,
            _ => 1,
        }
    }

    /// Appends the text form of the packet (see [`EioPacket::encode`]) to `out`.
    pub fn encode_into(&self, out: &mut String) {
        match self {
            EioPacket::BinaryMessage(bytes) => {
                out.push('b');
                BASE64.encode_string(bytes, out);
            }
            EioPacket::Open(open) => {
                out.push('0');
                // Serializing this struct of strings and integers cannot fail.
                if let Ok(json) = serde_json::to_string(open) {
                    out.push_str(&json);
                }
            }
            EioPacket::Ping(data) | EioPacket::Pong(data) => {
                out.push(self.type_char());
                if let Some(d) = data {
                    out.push_str(d);
                }
            }
            EioPacket::Message(m) => {
                out.push('4');
                out.push_str(m);
            }
            EioPacket::Close | EioPacket::Upgrade | EioPacket::Noop => out.push(self.type_char()),
        }
    }

    /// Decodes a text packet: a WebSocket text frame, or one record of a polling body that
    /// does not start with `b`.
    ///
    /// Data after the type of a close, upgrade or noop packet is ignored, as the reference
    /// implementation does; an empty ping or pong carries `None`.
    pub fn decode(text: &str) -> Result<Self, EioDecodeError> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or(EioDecodeError::Empty)?;
        let data = chars.as_str();
        let opt = |d: &str| (!d.is_empty()).then(|| d.to_owned());
        Ok(match kind {
            '0' => EioPacket::Open(serde_json::from_str(data).map_err(EioDecodeError::InvalidOpen)?),
            '1' => EioPacket::Close,
            '2' => EioPacket::Ping(opt(data)),
            '3' => EioPacket::Pong(opt(data)),
            '4' => EioPacket::Message(data.to_owned()),
            '5' => EioPacket::Upgrade,
            '6' => EioPacket::Noop,
            other => return Err(EioDecodeError::UnknownType(other)),
        })
    }

    /// Decodes one record of a polling body: `b<base64>` is a binary message, anything else a
    /// text packet.
    pub fn decode_polling(record: &str) -> Result<Self, EioDecodeError> {
        match record.strip_prefix('b') {
            Some(b64) => BASE64
                .decode(b64)
                .map(|v| EioPacket::BinaryMessage(Bytes::from(v)))
                .map_err(|_| EioDecodeError::InvalidBase64),
            None => Self::decode(record),
        }
    }

    /// The packet a WebSocket frame carries: a text frame is decoded, a binary frame is a
    /// binary message as it is.
    pub fn from_ws_frame(frame: WsFrame) -> Result<Self, EioDecodeError> {
        match frame {
            WsFrame::Text(text) => Self::decode(&text),
            WsFrame::Binary(bytes) => Ok(EioPacket::BinaryMessage(bytes)),
        }
    }

    /// The WebSocket frame carrying the packet: a binary message as a binary frame (bytes
    /// as they are), anything else as a text frame.
    pub fn into_ws_frame(self) -> WsFrame {
        match self {
            EioPacket::BinaryMessage(bytes) => WsFrame::Binary(bytes),
            EioPacket::Message(mut m) => {
                m.insert(0, '4');
                WsFrame::Text(m)
            }
            other => WsFrame::Text(other.encode()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> EioPacket {
        match EioPacket::decode(text) {
            Ok(p) => p,
            Err(e) => panic!("{text:?} should decode: {e}"),
        }
    }

    #[test]
    fn every_packet_type_round_trips_as_text() {
        let cases = [
            ("1", EioPacket::Close),
            ("2", EioPacket::Ping(None)),
            ("2probe", EioPacket::Ping(Some("probe".into()))),
            ("3", EioPacket::Pong(None)),
            ("3probe", EioPacket::probe_pong()),
            ("4HelloWorld", EioPacket::Message("HelloWorld".into())),
            ("4", EioPacket::Message(String::new())),
            ("4€ é \u{1F600}", EioPacket::Message("€ é \u{1F600}".into())),
            ("5", EioPacket::Upgrade),
            ("6", EioPacket::Noop),
        ];
        for (text, packet) in cases {
            assert_eq!(dec(text), packet, "decoding {text:?}");
            assert_eq!(packet.encode(), text, "encoding {packet:?}");
        }
        assert!(dec("2probe").is_probe_ping());
        assert!(!dec("2").is_probe_ping());
        assert_eq!(EioPacket::Message("x".into()).type_char(), '4');
        assert_eq!(EioPacket::BinaryMessage(Bytes::new()).type_char(), '4');
    }

    #[test]
    fn trailing_data_of_close_upgrade_noop_is_ignored() {
        assert_eq!(dec("1x"), EioPacket::Close);
        assert_eq!(dec("5probe"), EioPacket::Upgrade);
        assert_eq!(dec("6abc"), EioPacket::Noop);
    }

    #[test]
    fn malformed_text_packets_are_errors() {
        assert!(matches!(EioPacket::decode(""), Err(EioDecodeError::Empty)));
        assert!(matches!(EioPacket::decode("7"), Err(EioDecodeError::UnknownType('7'))));
        assert!(matches!(EioPacket::decode("x4"), Err(EioDecodeError::UnknownType('x'))));
        assert!(matches!(EioPacket::decode("é"), Err(EioDecodeError::UnknownType('é'))));
        // Over WebSocket, binary travels in binary frames: `b` is not a packet type there.
        assert!(matches!(
            EioPacket::decode("bAQID"),
            Err(EioDecodeError::UnknownType('b'))
        ));
        assert!(matches!(EioPacket::decode("0"), Err(EioDecodeError::InvalidOpen(_))));
        assert!(matches!(
            EioPacket::decode("0{\"sid\":1}"),
            Err(EioDecodeError::InvalidOpen(_))
        ));
    }

    #[test]
    fn websocket_frames() {
        let bin = Bytes::from_static(&[1, 2, 3, 4]);
        assert_eq!(
            EioPacket::BinaryMessage(bin.clone()).into_ws_frame(),
            WsFrame::Binary(bin.clone())
        );
        assert_eq!(
            EioPacket::Message("hello".into()).into_ws_frame(),
            WsFrame::Text("4hello".into())
        );
        assert_eq!(EioPacket::Ping(None).into_ws_frame(), WsFrame::Text("2".into()));
        assert_eq!(
            EioPacket::from_ws_frame(WsFrame::Binary(bin.clone())).ok(),
            Some(EioPacket::BinaryMessage(bin))
        );
        assert_eq!(
            EioPacket::from_ws_frame(WsFrame::Text("4hello".into())).ok(),
            Some(EioPacket::Message("hello".into()))
        );
        assert!(EioPacket::from_ws_frame(WsFrame::Text(String::new())).is_err());
    }
}
