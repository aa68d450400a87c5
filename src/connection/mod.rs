//! What every transport shares, and the native WebSocket transport.
//!
//! - [`admission`]: the one way in (one order of checks, one refusal type) and out;
//! - [`lifecycle`]: the one connection loop, generic over a transport ([`lifecycle::Wire`])
//!   and a protocol ([`lifecycle::Protocol`]);
//! - [`websocket`]: the WebSocket wire (its stream, batched writes, pings, the close
//!   sequence), for the native protocol and Socket.IO's WebSocket transport; [`reader`]: the
//!   frame reader under it; [`deflate`]: permessage-deflate;
//! - [`native`]: the native protocol on that loop; [`handshake`]: its HTTP upgrade;
//! - [`coalesce`]: the write buffer under the WebSocket, and the frames written into it.

pub(crate) mod admission;
pub(crate) mod coalesce;
pub(crate) mod deflate;
pub(crate) mod handshake;
pub(crate) mod lifecycle;
pub(crate) mod native;
pub(crate) mod reader;
pub(crate) mod websocket;
