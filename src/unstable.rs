//! Internals exposed for the crate's benchmarks and fuzz targets (feature `unstable`).
//!
//! **No stability promise**: anything here may change or go away in any release, patch
//! releases included. Apps have no use for it: the hub encodes and decodes every frame itself.
//!
//! - [`native`]: the native JSON protocol's codec (`docs/protocol.md`);
//! - `socketio` (with feature `socketio`): the Socket.IO v5 and Engine.IO v4 codecs;
//! - [`deflate`]: permessage-deflate of one message, as the hub compresses and inflates it;
//! - [`attach`] and [`Receiver`]: a connection with no socket behind it, to measure emits
//!   without I/O.

use crate::{ConnectionId, Hub};

/// The native JSON protocol's codec: text frames holding one JSON object each.
pub mod native {
    pub use crate::protocol::native::*;
}

/// The Socket.IO v5 wire protocol over Engine.IO v4, as pure codecs: no I/O, no clocks, no
/// sessions.
///
/// A Socket.IO packet travels as the text of an Engine.IO `message`: `42["hey","Jude"]` is
/// Engine.IO type `4` (message) around Socket.IO type `2` (EVENT). Its binary attachments
/// follow as binary messages, one each.
#[cfg(feature = "socketio")]
pub mod socketio {
    /// The transport framing: Engine.IO packets as WebSocket frames or HTTP long-polling
    /// bodies, the open packet, the query string and its errors, session ids.
    pub mod engineio {
        pub use crate::protocol::socketio::engineio::*;
    }

    /// The Socket.IO packets carried in Engine.IO messages, their encoders, and the decoder
    /// with binary attachments.
    pub mod packet {
        pub use crate::protocol::socketio::packet::*;
    }
}

/// permessage-deflate (RFC 7692) as the hub applies it to one message: each compressed on
/// its own (the server keeps no context), so that one compressed copy serves every recipient.
pub mod deflate {
    use crate::connection::deflate::{self as inner, Agreed, Inflater};

    /// One message's payload compressed at `level` (0 to 9) with a window of `window_bits`
    /// (9 to 15), as it goes in the frame (the trailing `00 00 ff ff` removed); `None` when
    /// compressing does not make it smaller.
    pub fn compress(payload: &[u8], level: u8, window_bits: u8) -> Option<Vec<u8>> {
        let agreed = Agreed {
            server_bits: window_bits.clamp(9, 15),
            client_bits: 15,
            client_takeover: false,
            threshold: 0,
            level: level.min(9),
        };
        inner::compress(payload, &agreed)
    }

    /// One message's compressed payload inflated, at most `limit` bytes; `None` when it is
    /// corrupt or inflates past the limit.
    pub fn inflate(compressed: &[u8], window_bits: u8, limit: usize) -> Option<Vec<u8>> {
        let mut inflater = Inflater::take(window_bits);
        let mut out = Vec::new();
        let whole = inflater.inflate(compressed, &mut out, limit).is_ok() && inflater.finish(&mut out, limit).is_ok();
        inflater.give_back();
        whole.then_some(out)
    }
}

/// The receiving end of a connection's outbound queue.
pub use crate::outbox::Receiver;

/// A queued message (it derefs to the message).
pub use crate::outbox::Frame;

/// Registers a connection with no socket behind it, in the hub's default namespace, for the
/// user `user`. Returns its id and the receiving end of its outbound queue (what its writer
/// would drain). Nothing removes it but dropping the hub.
pub fn attach(hub: &Hub, user: &str) -> (ConnectionId, Receiver) {
    hub.attach_detached(user)
}
