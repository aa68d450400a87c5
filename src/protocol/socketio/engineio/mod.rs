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

mod open;
mod packet;
mod payload;
mod request;

pub use open::{generate_sid, OpenPacket, SidError, SID_LEN};
pub use packet::{EioDecodeError, EioPacket, WsFrame};
pub use payload::{decode_payload, decode_payload_bytes, encode_payload, PayloadBuilder};
pub use request::{error_body, parse_query, EioQuery, EngineError, RequestKind};

use std::fmt;
use std::time::Duration;

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
