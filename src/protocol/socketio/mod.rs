//! The Socket.IO v5 wire protocol over Engine.IO v4 (feature `socketio`), as pure codecs:
//! no I/O, no clocks, no sessions.
//!
//! Two layers, one module each:
//!
//! - [`engineio`]: the transport framing. Packets (`open`, `close`, `ping`, `pong`, `message`,
//!   `upgrade`, `noop`) as WebSocket frames or as HTTP long-polling bodies (records separated
//!   by `\x1e`, binary as `b<base64>`, bounded by `maxPayload`); the open packet's handshake
//!   JSON; the query string (`EIO=4`, `transport`, `sid`) and the reference server's HTTP
//!   errors (`{"code":N,"message":…}`); session ids.
//! - [`packet`]: the Socket.IO packets carried in Engine.IO messages: CONNECT (with the
//!   client's `auth`), DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT and BINARY_ACK,
//!   with namespaces and ack ids, and encoders that wrap an emit's JSON, serialized once, for
//!   any number of recipients.
//!
//! A Socket.IO packet travels as the text of an Engine.IO `message`: `42["hey","Jude"]` is
//! Engine.IO type `4` (message) around Socket.IO type `2` (EVENT). Its binary attachments
//! follow as binary messages, one each.
//!
//! # Binary in payloads
//!
//! JSON has no bytes, so a payload keeps the protocol's own representation: each binary
//! value is a placeholder object `{"_placeholder":true,"num":n}` in the JSON, and its bytes
//! are [`SioPacket::attachments`]`[n]`. A handler that re-emits what it received, with the
//! same attachments, sends the client's `Buffer`s back unchanged. To read the bytes through
//! serde instead, [`packet::reconstruct_as_bytes`] replaces each placeholder by an array of
//! byte values (a `Vec<u8>` to serde); to send bytes, [`packet::attach`] returns the
//! placeholder to put in the JSON.

pub mod engineio;
pub mod packet;

pub(crate) use engineio::{EioPacket, EngineError, OpenPacket, PayloadBuilder, RequestKind, Transport};
pub(crate) use packet::{PacketKind, SioDecoder, SioPacket};

#[cfg(test)]
mod tests {
    use super::{engineio, packet, EioPacket, SioDecoder};

    /// An exchange, end to end: a polling POST with two events, the second asking for ack 1.
    #[test]
    fn exchange_end_to_end() {
        let body = "42[\"joinRoom\",\"general\"]\x1e421[\"message\",{\"text\":\"hi\"}]";
        let mut decoder = SioDecoder::default();
        let mut acks = 0;
        for eio in engineio::decode_payload(body, engineio::DEFAULT_MAX_PAYLOAD).unwrap() {
            let EioPacket::Message(text) = eio else { continue };
            let Some(p) = decoder.decode_text(&text).unwrap() else {
                continue;
            };
            if let Some(id) = p.id {
                // Answer the ack, wrapped in an Engine.IO message.
                let ack = packet::encode_ack(&p.ns, id, r#"{"event":"message","data":"Message received"}"#);
                let reply = EioPacket::Message(ack).encode();
                assert_eq!(reply, r#"431[{"event":"message","data":"Message received"}]"#);
                acks += 1;
            }
        }
        assert_eq!(acks, 1);
    }
}
