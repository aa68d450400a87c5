//! The wire format: every [close code](close_code) the server sends, and the event names
//! reserved for the server.
//!
//! The native protocol is plain JSON over WebSocket text frames, one object per frame:
//!
//! - client → server: `{"event": "<name>", "data": <any>}`, plus `"id": <u64>` for an ack;
//! - server → client: `{"event": "<name>", "data": <any>}`; an ack is `{"ack": <id>, "data": <any>}`;
//! - an error answering a request with an id carries it: `{"event": "error", "data": {...}, "ack": <id>}`.
//!
//! `docs/protocol.md` describes it in full: the handshake, the token, acks, errors, recovery
//! and every close code. With feature `socketio` the hub also speaks Socket.IO v5 over
//! Engine.IO v4 (module `socketio`).
//!
//! The codecs themselves are not part of the API. Feature `unstable` exposes them, with no
//! stability promise, as `tower_realtime::unstable` (for benchmarks and fuzzing).

// Parts of the codecs (and of the re-exports that name them in one place) serve only the unit
// tests, the benchmarks and the fuzz targets (feature `unstable`).
pub(crate) mod attach;
#[cfg_attr(not(feature = "unstable"), allow(dead_code))]
pub(crate) mod native;
pub(crate) mod offset;
#[cfg(feature = "socketio")]
#[cfg_attr(not(feature = "unstable"), allow(dead_code, unused_imports))]
pub(crate) mod socketio;

/// Event names a client may not send: they are the server's own.
pub const RESERVED_EVENTS: &[&str] = &[
    "error",
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "$session",
    "token_expiring",
];

/// The event a client sends to refresh its token on an open connection: `{"token": "..."}`,
/// with an ack. The hub's authenticator verifies the token; it must be for the same user. The
/// ack answers `{"status": "ok", "expires_at": <unix seconds or null>}`, or the request is
/// refused with an `error` (status `unauthorized` or `forbidden`) and the old deadline stays.
pub const REFRESH_EVENT: &str = "$refresh";

/// The event that warns a client, [`Config::token_expiry_warning`](crate::Config::token_expiry_warning)
/// before its token expires: `{"expires_at": <unix seconds>, "expires_in_ms": <ms>}`.
pub const TOKEN_EXPIRING_EVENT: &str = "token_expiring";

/// The close codes the server sends, and what they mean.
pub mod close_code {
    /// Normal closure: the client closed, or the app disconnected it.
    pub const NORMAL: u16 = 1000;
    /// Going away: the server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A WebSocket protocol violation by the peer.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A policy violation: a connect hook or guard refused the connection, or the peer kept
    /// flooding past its rate limit.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// An inbound message larger than [`Config::max_message_size`](crate::Config::max_message_size).
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// An internal error of the server.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The connection's outbound queue was full (a slow consumer); reconnect later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The app disconnected this connection (for example with [`Hub::disconnect_user`](crate::Hub::disconnect_user)).
    pub const DISCONNECTED_BY_SERVER: u16 = 4000;
    /// Nothing was received from the peer for `ping_interval + ping_timeout`.
    pub const PING_TIMEOUT: u16 = 4001;
    /// A newer connection resumed this connection's recovery session (the client came back
    /// before this one was seen to be gone); the session went to the newer one.
    pub const SESSION_TAKEN_OVER: u16 = 4002;
    /// The connection's token expired and was not refreshed (`$refresh`) in time. The client
    /// gets an `error` event (status `token_expired`, `code: 4003`) first; a Socket.IO socket
    /// gets a `DISCONNECT` of its namespace instead of the close.
    pub const TOKEN_EXPIRED: u16 = 4003;
    /// In a cluster, this server missed history events meant for the connection (its link to
    /// Redis was down) and could not read them back: nothing past them was sent, and the
    /// session is kept as of the last event sent. The client reconnects and resumes its
    /// session, and gets the missed events in the replay.
    pub const HISTORY_GAP: u16 = 4004;
}
