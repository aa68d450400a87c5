//! The Socket.IO v5 server (feature `socketio`): Engine.IO v4 sessions over HTTP long-polling
//! and WebSocket, serving the same hub, namespaces, handlers, rooms, guards and authentication
//! as the native protocol.
//!
//! Enable it with [`HubBuilder::socketio`](crate::HubBuilder::socketio); the hub's layer then
//! also answers at [`SocketIoConfig::path`] (default `/socket.io/`).
//!
//! | request | answer |
//! |---|---|
//! | `OPTIONS` (CORS preflight) | `204` with the CORS headers |
//! | no or unknown `transport` | `400` `{"code":0,"message":"Transport unknown"}` |
//! | an unknown `sid` | `400` `{"code":1,"message":"Session ID unknown"}` |
//! | a handshake that is not `GET` | `400` `{"code":2,"message":"Bad handshake method"}` |
//! | a malformed request, a second pending poll, a polling request for an upgraded session | `400` `{"code":3,"message":"Bad request"}` |
//! | a WebSocket for a session that is upgrading or already on WebSocket | `101`, then a close frame at once (as the reference server does); the session goes on |
//! | an `Origin` the hub does not allow ([`HubBuilder::allow_origin`](crate::HubBuilder::allow_origin)) | `403` `{"code":4,"message":"Forbidden"}`, no CORS headers |
//! | `EIO` other than `4` | `400` `{"code":5,"message":"Unsupported protocol version"}` |
//! | a `POST` body over `maxPayload` | `413`, and the session is closed |
//! | the hub is shutting down | `503` `{"code":4,"message":"server is shutting down"}` |
//! | a handshake while [`max_pending_sessions`](SocketIoConfig::max_pending_sessions) sessions have not connected a namespace, or while live connections and such sessions together reach [`max_connections`](crate::Config::max_connections) | `503` `{"code":4,"message":"too many connections"}` |
//! | a handshake from a client address with [`max_pending_sessions_per_address`](SocketIoConfig::max_pending_sessions_per_address) sessions that have not connected a namespace | `429` `{"code":4,"message":"too many sessions from this address"}` |
//! | no namespace CONNECT within [`connect_timeout`](SocketIoConfig::connect_timeout) of the handshake | the session is closed: Engine.IO close packet (on a WebSocket, then close `1008` `connect timeout`), its sid unknown from then on |
//!
//! A session counts as a connection from its handshake: until its first namespace CONNECT it
//! holds a place of its own under [`max_connections`](crate::Config::max_connections) (and
//! under the two caps above), which the connection of that CONNECT then takes over; its
//! sockets are not counted twice. The client address is the hub's one notion of it, as for
//! every per-address limit: the peer address of the TCP connection (a
//! [`SocketAddr`](std::net::SocketAddr) extension, which [`Hub::serve`](crate::Hub::serve)
//! sets), or what [`HubBuilder::client_address`](crate::HubBuilder::client_address) or
//! [`client_address_from_header`](crate::HubBuilder::client_address_from_header) say;
//! without one, only the total caps apply.
//!
//! Authentication runs at each namespace's CONNECT: the token is the CONNECT's `auth.token`,
//! else one of the handshake's [token sources](crate::auth). A refusal is a CONNECT_ERROR with
//! the reason as its `message`.
//!
//! On a hub with [`HubBuilder::history`](crate::HubBuilder::history), Socket.IO's connection
//! state recovery is on: the CONNECT answer carries a `pid`, kept events carry
//! `"<epoch>-<offset>"` as their last argument, and a client that presents its `pid` and last
//! offset after a drop gets the same `pid` back (`socket.recovered`), its rooms, and the events
//! it missed, before anything live. A drop is a transport that closed or failed, a ping
//! timeout, or the server closing for a reason the client may come back from (shutdown, a
//! slow consumer, [`Socket::close_transport`](crate::Socket::close_transport)); an Engine.IO
//! close packet counts as one for the sockets it did not DISCONNECT. A DISCONNECT, or a socket
//! the server put out (`disconnect`, a flood, a protocol error), keeps nothing.

mod pending;
mod request;
mod session;
mod transport;
mod wire;

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;

pub(crate) use session::Session;
pub(crate) use transport::handle;

/// Settings of the Socket.IO endpoint.
///
/// | setting | default | what happens past it |
/// |---|---|---|
/// | [`ping_interval`](Self::ping_interval), [`ping_timeout`](Self::ping_timeout) | 25 s, 20 s | no answer to a ping within `ping_timeout`, or a write to the client blocked for `ping_interval + ping_timeout`: the session is closed (`4001`) |
/// | [`max_payload`](Self::max_payload) | 1,000,000 bytes | a polling body: `413` and the session is closed; a WebSocket message: close `1009` |
/// | [`max_attachments`](Self::max_attachments) | 10 | the session is closed (`1002`) |
/// | [`connect_timeout`](Self::connect_timeout) | 45 s | no namespace CONNECT since the handshake: the session is closed (Engine.IO close packet; on a WebSocket, close `1008` `connect timeout`) |
/// | [`max_pending_sessions`](Self::max_pending_sessions) | 10,000 sessions | sessions that have not connected a namespace: a new handshake gets `503` `{"code":4,"message":"too many connections"}` (as it does when live connections and such sessions together reach [`Config::max_connections`](crate::Config::max_connections)) |
/// | [`max_pending_sessions_per_address`](Self::max_pending_sessions_per_address) | 64 sessions | the same, from one client address (as for every per-address limit; without one only the total applies): `429` `{"code":4,"message":"too many sessions from this address"}` |
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SocketIoConfig {
    /// The path prefix (default `/socket.io/`).
    pub path: String,
    /// Interval between server pings (default 25 s).
    pub ping_interval: Duration,
    /// How long the client has to answer a ping (default 20 s).
    pub ping_timeout: Duration,
    /// Largest polling body, and largest message, in bytes (default 1,000,000).
    pub max_payload: usize,
    /// Most binary attachments in one packet (default 10).
    pub max_attachments: usize,
    /// Whether browsers may send credentials (cookies) cross-origin: CORS's
    /// `Access-Control-Allow-Credentials: true` (default `false`). Which origins may connect
    /// is the hub's one policy, [`HubBuilder::allow_origin`](crate::HubBuilder::allow_origin).
    pub cors_credentials: bool,
    /// How long a session has, from its handshake, to connect a namespace (default 45 s, as
    /// Socket.IO's `connectTimeout`); then it is closed.
    pub connect_timeout: Duration,
    /// Most sessions, in all, that have not connected a namespace yet (default 10,000); a
    /// handshake past it gets `503`.
    pub max_pending_sessions: usize,
    /// Most sessions from one client address that have not connected a namespace yet
    /// (default 64); a handshake past it gets `429`.
    pub max_pending_sessions_per_address: usize,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            path: "/socket.io/".to_owned(),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            max_attachments: 10,
            cors_credentials: false,
            connect_timeout: Duration::from_secs(45),
            max_pending_sessions: 10_000,
            max_pending_sessions_per_address: 64,
        }
    }
}

impl SocketIoConfig {
    /// Serves at `path` instead.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        let mut path = path.into();
        if !path.ends_with('/') {
            path.push('/');
        }
        self.path = path;
        self
    }

    /// Sets the ping interval and timeout.
    pub fn ping(mut self, interval: Duration, timeout: Duration) -> Self {
        self.ping_interval = interval;
        self.ping_timeout = timeout;
        self
    }

    /// Sets the largest payload, in bytes.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Lets browsers send credentials (cookies) cross-origin, to the origins the hub allows
    /// (NestJS's `cors: { credentials: true }`).
    pub fn cors_credentials(mut self, allow: bool) -> Self {
        self.cors_credentials = allow;
        self
    }

    /// Sets how long a session has to connect a namespace (Socket.IO's `connectTimeout`).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the most sessions that have not connected a namespace yet: in all, and from one
    /// client address.
    pub fn max_pending_sessions(mut self, total: usize, per_address: usize) -> Self {
        self.max_pending_sessions = total;
        self.max_pending_sessions_per_address = per_address;
        self
    }
}

impl crate::Hub {
    /// The hub's Socket.IO endpoint, when it serves one.
    pub(crate) fn socketio(&self) -> Option<&SocketIoState> {
        self.inner.parts.get()
    }
}

/// The Socket.IO side of a hub: its settings and live sessions.
pub(crate) struct SocketIoState {
    pub(crate) config: SocketIoConfig,
    pub(crate) sessions: DashMap<Arc<str>, Arc<Session>>,
    /// Sessions that have not connected a namespace yet.
    pub(crate) pending: pending::Pending,
}

impl SocketIoState {
    pub(crate) fn new(config: SocketIoConfig) -> Self {
        Self {
            config,
            sessions: DashMap::new(),
            pending: pending::Pending::default(),
        }
    }
}
