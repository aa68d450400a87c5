//! Engine.IO v4: the transport framing under Socket.IO.
//!
//! An Engine.IO packet is one type digit followed by its data:
//!
//! | type | name | data |
//! |---|---|---|
//! | `0` | open | the handshake JSON ([`OpenPacket`]), server → client |
//! | `1` | close | none |
//! | `2` | ping | optional (`2probe` during an upgrade) |
//! | `3` | pong | optional, echoing the ping's (`3probe`) |
//! | `4` | message | the payload: one Socket.IO packet, as text |
//! | `5` | upgrade | none: the client switches to WebSocket |
//! | `6` | noop | none: ends a pending poll during an upgrade |
//!
//! On WebSocket every packet is one frame: text packets are text frames (`4hello`) and binary
//! messages are binary frames carrying the bytes as they are, with no type byte.
//!
//! On HTTP long-polling a body holds one or more packets separated by the record separator
//! `\x1e` (`4hello\x1e2\x1e4world`); a binary message is written `b<base64>`
//! (`bAQIDBA==` for the bytes `01 02 03 04`). [`decode_payload`] refuses bodies larger than
//! the `maxPayload` announced in the open packet; [`PayloadBuilder`] packs outgoing packets
//! into bodies of a bounded size.
//!
//! Before a session exists, [`parse_query`] and [`EioQuery::classify`] sort a request into a
//! handshake, a poll, a post or an upgrade, and refuse bad ones with an [`EngineError`]: the
//! same codes, messages and statuses as the reference server (`{"code":0,"message":"Transport
//! unknown"}` with `400`, for example).

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The Engine.IO protocol revision spoken here, as it appears in the `EIO` query parameter.
pub const PROTOCOL_VERSION: &str = "4";

/// The separator between packets in an HTTP long-polling body.
pub const RECORD_SEPARATOR: char = '\u{1e}';

/// The default `maxPayload`: the largest polling body, in bytes, the server accepts
/// (1 000 000, as the reference server).
pub const DEFAULT_MAX_PAYLOAD: usize = 1_000_000;

/// The default interval between two server pings (25 s, as the reference server).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(25);

/// The default time the client has to answer a ping (20 s, as the reference server).
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The data of the probe ping and pong exchanged while upgrading to WebSocket.
pub const PROBE: &str = "probe";

/// The `Content-Type` of a polling response body.
pub const POLLING_CONTENT_TYPE: &str = "text/plain; charset=UTF-8";

/// The body answering a successful polling `POST`.
pub const POST_OK_BODY: &str = "ok";

/// The length of a session id made by [`generate_sid`].
pub const SID_LEN: usize = 20;

/// Base64 as the browser writes it (`btoa`): the standard alphabet, padding tolerated or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A transport of Engine.IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP long-polling: `GET` receives, `POST` sends.
    Polling,
    /// WebSocket: one packet a frame.
    WebSocket,
}

impl Transport {
    /// The name of the transport in the `transport` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::WebSocket => "websocket",
        }
    }

    /// The transport named `name` in a query string, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "polling" => Some(Transport::Polling),
            "websocket" => Some(Transport::WebSocket),
            _ => None,
        }
    }

    /// The transports a session opened on this one may upgrade to (the open packet's
    /// `upgrades`): WebSocket from polling, nothing from WebSocket.
    pub fn upgrades(self) -> &'static [&'static str] {
        match self {
            Transport::Polling => &["websocket"],
            Transport::WebSocket => &[],
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The handshake data of the open packet, serialized as the JavaScript client expects:
/// `{"sid":"…","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenPacket {
    /// The session id; the client sends it back in the `sid` query parameter.
    pub sid: String,
    /// The transports the client may upgrade to.
    pub upgrades: Vec<String>,
    /// The interval between two server pings, in milliseconds.
    pub ping_interval: u64,
    /// The time the client has to answer a ping, in milliseconds.
    pub ping_timeout: u64,
    /// The largest polling body the server accepts, in bytes.
    pub max_payload: u64,
}

impl OpenPacket {
    /// The open packet of a session `sid` opened on `transport`, its `upgrades` taken from
    /// [`Transport::upgrades`].
    pub fn new(
        sid: impl Into<String>,
        transport: Transport,
        ping_interval: Duration,
        ping_timeout: Duration,
        max_payload: usize,
    ) -> Self {
        OpenPacket {
            sid: sid.into(),
            upgrades: transport.upgrades().iter().map(|s| (*s).to_owned()).collect(),
            ping_interval: millis(ping_interval),
            ping_timeout: millis(ping_timeout),
            max_payload: u64::try_from(max_payload).unwrap_or(u64::MAX),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

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

/// A refused Engine.IO request, with the error codes, messages and HTTP statuses of the
/// reference server.
///
/// | code | message | status |
/// |---|---|---|
/// | 0 | `Transport unknown` | 400 |
/// | 1 | `Session ID unknown` | 400 |
/// | 2 | `Bad handshake method` | 400 |
/// | 3 | `Bad request` | 400 |
/// | 4 | `Forbidden` | 403 |
/// | 5 | `Unsupported protocol version` | 400 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EngineError {
    /// Code 0: the `transport` parameter is missing or names no transport.
    #[error("Transport unknown")]
    UnknownTransport,
    /// Code 1: the `sid` names no live session.
    #[error("Session ID unknown")]
    UnknownSid,
    /// Code 2: a handshake (no `sid`) with another method than `GET`.
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// Code 3: anything else malformed (a WebSocket handshake without an upgrade, a
    /// transport that does not match the session's, a second pending poll, …).
    #[error("Bad request")]
    BadRequest,
    /// Code 4: the request was refused (authentication, origin, limits).
    #[error("Forbidden")]
    Forbidden,
    /// Code 5: the `EIO` parameter is missing or is not `4`.
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
}

impl EngineError {
    /// The numeric code of the JSON error body.
    pub fn code(self) -> u8 {
        match self {
            EngineError::UnknownTransport => 0,
            EngineError::UnknownSid => 1,
            EngineError::BadHandshakeMethod => 2,
            EngineError::BadRequest => 3,
            EngineError::Forbidden => 4,
            EngineError::UnsupportedProtocolVersion => 5,
        }
    }

    /// The standard message of the code.
    pub fn message(self) -> &'static str {
        match self {
            EngineError::UnknownTransport => "Transport unknown",
            EngineError::UnknownSid => "Session ID unknown",
            EngineError::BadHandshakeMethod => "Bad handshake method",
            EngineError::BadRequest => "Bad request",
            EngineError::Forbidden => "Forbidden",
            EngineError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    /// The HTTP status of the refusal: `403` for [`EngineError::Forbidden`], `400` otherwise.
    pub fn status(self) -> http::StatusCode {
        match self {
            EngineError::Forbidden => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body of the refusal (`Content-Type: application/json`):
    /// `{"code":0,"message":"Transport unknown"}`.
    pub fn json_body(self) -> String {
        error_body(self, self.message())
    }
}

/// The JSON body of a refusal with a message of your own (the reference server uses the
/// message an `allowRequest` hook gives, for example): `{"code":4,"message":"…"}`.
pub fn error_body(error: EngineError, message: &str) -> String {
    serde_json::json!({ "code": error.code(), "message": message }).to_string()
}

/// The Engine.IO parameters of a request's query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EioQuery {
    /// The `transport` parameter.
    pub transport: Transport,
    /// The `sid` parameter, once the session exists.
    pub sid: Option<String>,
}

/// What an Engine.IO request asks for, once [`EioQuery::classify`] has accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// A new session (no `sid`): a polling `GET`, or a WebSocket upgrade for a WebSocket-only
    /// client.
    Handshake(Transport),
    /// A long poll (`GET`) of the session `sid`: answer with its pending packets.
    Poll {
        /// The session id.
        sid: String,
    },
    /// A `POST` of packets to the session `sid`.
    Post {
        /// The session id.
        sid: String,
    },
    /// A WebSocket upgrade of the polling session `sid`.
    Upgrade {
        /// The session id.
        sid: String,
    },
}

/// Reads `EIO`, `transport` and `sid` from a query string (without the `?`); other
/// parameters are ignored. When a parameter repeats, the last one counts, as in the
/// reference server.
///
/// The transport is checked first: missing or unknown is [`EngineError::UnknownTransport`];
/// then `EIO`: missing or other than `4` is [`EngineError::UnsupportedProtocolVersion`].
/// An empty `sid` counts as none; a `sid` that is not valid percent-encoded UTF-8 is
/// [`EngineError::BadRequest`].
pub fn parse_query(query: &str) -> Result<EioQuery, EngineError> {
    let mut eio = None;
    let mut transport = None;
    let mut sid = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "EIO" => eio = Some(value),
            "transport" => transport = Some(value),
            "sid" => sid = Some(value),
            _ => {}
        }
    }
    let transport = transport
        .and_then(Transport::from_name)
        .ok_or(EngineError::UnknownTransport)?;
    if eio != Some(PROTOCOL_VERSION) {
        return Err(EngineError::UnsupportedProtocolVersion);
    }
    let sid = match sid {
        None | Some("") => None,
        Some(raw) => Some(crate::util::percent_decode(raw).ok_or(EngineError::BadRequest)?),
    };
    Ok(EioQuery { transport, sid })
}

impl EioQuery {
    /// Sorts an accepted query into what the request asks for, given its method and whether
    /// it is a WebSocket upgrade request, with the reference server's checks:
    ///
    /// - no `sid`: a handshake, which must be a `GET` ([`EngineError::BadHandshakeMethod`]);
    ///   `transport=websocket` must come as an upgrade ([`EngineError::BadRequest`]);
    /// - `sid` and `transport=polling`: a `GET` poll or a `POST`; an upgrade request or another
    ///   method is [`EngineError::BadRequest`];
    /// - `sid` and `transport=websocket`: must be an upgrade ([`EngineError::BadRequest`]).
    ///
    /// Whether the `sid` is known ([`EngineError::UnknownSid`]), and whether the session may
    /// still upgrade, is for the caller to check against its sessions.
    pub fn classify(&self, method: &http::Method, is_websocket_upgrade: bool) -> Result<RequestKind, EngineError> {
        match (&self.sid, self.transport) {
            (None, transport) => {
                if method != http::Method::GET {
                    return Err(EngineError::BadHandshakeMethod);
                }
                if (transport == Transport::WebSocket) != is_websocket_upgrade {
                    return Err(EngineError::BadRequest);
                }
                Ok(RequestKind::Handshake(transport))
            }
            (Some(sid), Transport::Polling) if !is_websocket_upgrade => {
                let sid = sid.clone();
                if method == http::Method::GET {
                    Ok(RequestKind::Poll { sid })
                } else if method == http::Method::POST {
                    Ok(RequestKind::Post { sid })
                } else {
                    Err(EngineError::BadRequest)
                }
            }
            (Some(sid), Transport::WebSocket) if is_websocket_upgrade && method == http::Method::GET => {
                Ok(RequestKind::Upgrade { sid: sid.clone() })
            }
            (Some(_), _) => Err(EngineError::BadRequest),
        }
    }
}

/// The operating system's random source failed, so no session id could be made.
#[derive(Debug, thiserror::Error)]
#[error("no random bytes for a session id: {0}")]
pub struct SidError(getrandom::Error);

/// A new session id: 15 bytes from the operating system's secure random source, as 20
/// characters of URL-safe base64 (`A-Z a-z 0-9 - _`), like the reference server's ids.
///
/// The id is the only credential of a polling session, so it is never made from a
/// predictable generator; when the system source fails, this fails.
pub fn generate_sid() -> Result<String, SidError> {
    let mut raw = [0u8; 15];
    getrandom::fill(&mut raw).map_err(SidError)?;
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn dec(text: &str) -> EioPacket {
        match EioPacket::decode(text) {
            Ok(p) => p,
            Err(e) => panic!("{text:?} should decode: {e}"),
        }
    }

    #[test]
    fn open_packet_is_the_json_the_client_expects() {
        let open = OpenPacket::new(
            "lv_VI97HAXpY6yYWAAAC",
            Transport::Polling,
            Duration::from_millis(25000),
            Duration::from_millis(5000),
            1_000_000,
        );
        // Verbatim from the protocol's sample session.
        assert_eq!(
            EioPacket::Open(open.clone()).encode(),
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000,"maxPayload":1000000}"#
        );
        assert_eq!(dec(&EioPacket::Open(open.clone()).encode()), EioPacket::Open(open));

        let ws_only = OpenPacket::new(
            "x",
            Transport::WebSocket,
            DEFAULT_PING_INTERVAL,
            DEFAULT_PING_TIMEOUT,
            10,
        );
        assert_eq!(
            EioPacket::Open(ws_only).encode(),
            r#"0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":10}"#
        );
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

    #[test]
    fn query_parsing() {
        assert_eq!(
            parse_query("EIO=4&transport=polling&t=N8hyd6w"),
            Ok(EioQuery {
                transport: Transport::Polling,
                sid: None
            })
        );
        assert_eq!(
            parse_query("EIO=4&transport=websocket&sid=lv_VI97HAXpY6yYWAAAC"),
            Ok(EioQuery {
                transport: Transport::WebSocket,
                sid: Some("lv_VI97HAXpY6yYWAAAC".into())
            })
        );
        assert_eq!(
            parse_query("sid=a%2Bb+c&transport=polling&EIO=4").map(|q| q.sid),
            Ok(Some("a+b c".into()))
        );
        assert_eq!(parse_query("EIO=4&transport=polling&sid=").map(|q| q.sid), Ok(None));
        assert_eq!(
            parse_query("EIO=3&transport=polling&EIO=4").map(|q| q.transport),
            Ok(Transport::Polling)
        );
    }

    #[test]
    fn query_errors() {
        use EngineError::*;
        assert_eq!(parse_query("EIO=4"), Err(UnknownTransport));
        assert_eq!(parse_query("EIO=4&transport=flashsocket"), Err(UnknownTransport));
        assert_eq!(parse_query("EIO=4&transport="), Err(UnknownTransport));
        assert_eq!(parse_query(""), Err(UnknownTransport));
        assert_eq!(parse_query("transport=polling"), Err(UnsupportedProtocolVersion));
        assert_eq!(parse_query("EIO=3&transport=polling"), Err(UnsupportedProtocolVersion));
        assert_eq!(parse_query("EIO=&transport=polling"), Err(UnsupportedProtocolVersion));
        assert_eq!(parse_query("EIO=4&transport=polling&sid=%zz"), Err(BadRequest));
        assert_eq!(parse_query("EIO=4&transport=polling&sid=%"), Err(BadRequest));
        assert_eq!(parse_query("EIO=4&transport=polling&sid=%ff"), Err(BadRequest));
    }

    #[test]
    fn request_classification() {
        use EngineError::*;
        let q = |t, sid: Option<&str>| EioQuery {
            transport: t,
            sid: sid.map(str::to_owned),
        };
        let (p, w) = (Transport::Polling, Transport::WebSocket);
        let s = Some("abc");
        let sid = || "abc".to_owned();

        assert_eq!(q(p, None).classify(&Method::GET, false), Ok(RequestKind::Handshake(p)));
        assert_eq!(q(w, None).classify(&Method::GET, true), Ok(RequestKind::Handshake(w)));
        assert_eq!(q(p, None).classify(&Method::POST, false), Err(BadHandshakeMethod));
        assert_eq!(q(w, None).classify(&Method::PUT, true), Err(BadHandshakeMethod));
        assert_eq!(q(w, None).classify(&Method::GET, false), Err(BadRequest));
        assert_eq!(q(p, None).classify(&Method::GET, true), Err(BadRequest));

        assert_eq!(
            q(p, s).classify(&Method::GET, false),
            Ok(RequestKind::Poll { sid: sid() })
        );
        assert_eq!(
            q(p, s).classify(&Method::POST, false),
            Ok(RequestKind::Post { sid: sid() })
        );
        assert_eq!(q(p, s).classify(&Method::DELETE, false), Err(BadRequest));
        assert_eq!(q(p, s).classify(&Method::GET, true), Err(BadRequest));
        assert_eq!(
            q(w, s).classify(&Method::GET, true),
            Ok(RequestKind::Upgrade { sid: sid() })
        );
        assert_eq!(q(w, s).classify(&Method::GET, false), Err(BadRequest));
        assert_eq!(q(w, s).classify(&Method::POST, false), Err(BadRequest));
    }

    #[test]
    fn error_codes_messages_and_bodies() {
        use EngineError::*;
        let all = [
            (UnknownTransport, 0, "Transport unknown"),
            (UnknownSid, 1, "Session ID unknown"),
            (BadHandshakeMethod, 2, "Bad handshake method"),
            (BadRequest, 3, "Bad request"),
            (Forbidden, 4, "Forbidden"),
            (UnsupportedProtocolVersion, 5, "Unsupported protocol version"),
        ];
        for (e, code, message) in all {
            assert_eq!(e.code(), code);
            assert_eq!(e.message(), message);
            assert_eq!(e.to_string(), message);
            assert_eq!(e.json_body(), format!(r#"{{"code":{code},"message":"{message}"}}"#));
            let want = if e == Forbidden { 403 } else { 400 };
            assert_eq!(e.status().as_u16(), want);
        }
        assert_eq!(
            error_body(Forbidden, "no \"token\""),
            r#"{"code":4,"message":"no \"token\""}"#
        );
    }

    #[test]
    fn sids_are_random_and_url_safe() {
        let a = generate_sid().unwrap();
        let b = generate_sid().unwrap();
        assert_ne!(a, b);
        for sid in [a, b] {
            assert_eq!(sid.len(), SID_LEN);
            assert!(
                sid.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
                "{sid}"
            );
            assert_eq!(
                parse_query(&format!("EIO=4&transport=polling&sid={sid}")).map(|q| q.sid),
                Ok(Some(sid))
            );
        }
    }
}
