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
//! | the hub is shutting down | `503` |
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

mod session;
mod transport;
mod wire;

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;

pub(crate) use session::Session;
pub(crate) use transport::handle;

/// Settings of the Socket.IO endpoint.
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
}

impl SocketIoState {
    pub(crate) fn new(config: SocketIoConfig) -> Self {
        Self {
            config,
            sessions: DashMap::new(),
        }
    }
}
