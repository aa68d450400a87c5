//! The open packet's handshake data ([`OpenPacket`]) and session ids ([`generate_sid`]).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::Transport;

/// The length of a session id made by [`generate_sid`].
pub const SID_LEN: usize = 20;

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
    use super::super::{parse_query, EioPacket, Transport, DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT};
    use super::*;

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
        let decoded = EioPacket::decode(&EioPacket::Open(open.clone()).encode()).expect("the open packet decodes");
        assert_eq!(decoded, EioPacket::Open(open));

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
