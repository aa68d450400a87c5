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

mod binary;
mod decode;
mod encode;
#[cfg(test)]
mod testing;
mod types;

pub use binary::{attach, placeholder, placeholder_index, reconstruct_as_bytes};
pub use decode::{decode, decode_with_limit, Decoded, PartialBinaryPacket, SioDecodeError, SioDecoder};
pub use encode::{
    encode_ack, encode_binary_ack, encode_binary_event, encode_connect, encode_connect_error,
    encode_connect_error_with_data, encode_connect_with_pid, encode_disconnect, encode_event, encode_event_offset,
};
pub use types::{PacketKind, SioPacket};

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
