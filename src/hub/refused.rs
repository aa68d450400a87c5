//! A refused connection as the app sees it ([`Refused`], given to the hook
//! [`HubBuilder::on_refused`](crate::HubBuilder::on_refused)), and the one place every refusal
//! goes through: counted, logged at `debug`, handed to the hook.

use std::{fmt, net::IpAddr, sync::Arc};

use http::StatusCode;

use super::Hub;

/// The refusal hook.
pub(crate) type RefusedHook = Arc<dyn Fn(&Refused<'_>) + Send + Sync>;

/// Why a connection was refused.
///
/// [`as_str`](Self::as_str) gives the label the metrics use
/// (`realtime_handshake_rejections_total`'s `cause`), but for [`Guard`](Self::Guard), which
/// the metrics count under `auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalCause {
    /// Not a valid handshake (a protocol error rather than a refusal of the client): a
    /// WebSocket upgrade that is not a `GET` (`405`), misses a header (`400`) or asks for
    /// another WebSocket version (`426`); a malformed recovery query (`400`); a Socket.IO
    /// request the Engine.IO protocol does not allow, or for a session that is gone (`400`).
    BadRequest,
    /// The request's `Origin` is not allowed (`403`).
    Origin,
    /// The authenticator refused the token (`401`; Socket.IO: `CONNECT_ERROR`).
    Auth,
    /// A connect guard or the connect hook refused an authenticated connection (native: close
    /// `1008`; Socket.IO: `CONNECT_ERROR`, or `DISCONNECT` when the hook refused after the
    /// client was told it was connected).
    Guard,
    /// A limit: the connect rate (per user or per address), the connections of the hub, of
    /// the user or of the address, or the Socket.IO sessions not connected yet (`429`, `503`).
    Limit,
    /// The hub is shutting down (`503`).
    ShuttingDown,
}

impl RefusalCause {
    /// `"bad_request"`, `"origin"`, `"auth"`, `"guard"`, `"limit"` or `"shutting_down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Origin => "origin",
            Self::Auth => "auth",
            Self::Guard => "guard",
            Self::Limit => "limit",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

impl fmt::Display for RefusalCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocol a client came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// The native protocol, over a WebSocket.
    Native,
    /// Socket.IO (feature `socketio`), over long-polling or a WebSocket.
    SocketIo,
}

impl Transport {
    /// `"native"` or `"socketio"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::SocketIo => "socketio",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused connection, as [`HubBuilder::on_refused`](crate::HubBuilder::on_refused) sees
/// it: why, what the client was told, and what is known of the client. It never holds the
/// client's token.
///
/// ```
/// use tower_realtime::{Hub, Refused};
///
/// let hub = Hub::builder()
///     .on_refused(|refused: &Refused| {
///         tracing::info!(
///             cause = %refused.cause(),
///             transport = %refused.transport(),
///             ns = refused.namespace(),
///             addr = ?refused.address(),
///             user = refused.user_id(),
///             message = refused.message(),
///             "connection refused"
///         );
///     })
///     .build();
/// # drop(hub);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Refused<'a> {
    cause: RefusalCause,
    message: &'a str,
    transport: Transport,
    namespace: Option<&'a str>,
    address: Option<IpAddr>,
    user_id: Option<&'a str>,
    status: Option<StatusCode>,
}

impl<'a> Refused<'a> {
    pub(crate) fn new(cause: RefusalCause, message: &'a str, transport: Transport) -> Self {
        Self {
            cause,
            message,
            transport,
            namespace: None,
            address: None,
            user_id: None,
            status: None,
        }
    }

    pub(crate) fn with_namespace(self, namespace: Option<&'a str>) -> Self {
        Self { namespace, ..self }
    }

    pub(crate) fn with_address(self, address: Option<IpAddr>) -> Self {
        Self { address, ..self }
    }

    pub(crate) fn with_user(self, user_id: Option<&'a str>) -> Self {
        Self { user_id, ..self }
    }

    pub(crate) fn with_status(self, status: Option<StatusCode>) -> Self {
        Self { status, ..self }
    }

    /// Why the connection was refused.
    pub fn cause(&self) -> RefusalCause {
        self.cause
    }

    /// What the client was told: the authenticator's or the guard's message, or the limit's
    /// (`"too many connections for this user"`, ...).
    pub fn message(&self) -> &str {
        self.message
    }

    /// The protocol the client came with.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The namespace the client asked for, when known: always for the native protocol (the
    /// layer's path names it), for Socket.IO from the namespace `CONNECT` on (a refused
    /// Engine.IO handshake has none yet).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace
    }

    /// The client address, when known, as the per-address limits count it (an IPv6 address
    /// by its `/64` prefix): see
    /// [`HubBuilder::client_address`](crate::HubBuilder::client_address).
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// The user, when the client was authenticated: a limit's or a guard's refusal.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id
    }

    /// The HTTP status answered, when the refusal was an HTTP answer (a native handshake, a
    /// Socket.IO HTTP request); `None` for a refusal within a connection (a native close
    /// `1008`, a Socket.IO `CONNECT_ERROR` or `DISCONNECT`).
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }
}

impl Hub {
    /// Where every refusal goes: counted (`realtime_handshake_rejections_total`), logged at
    /// `debug`, and handed to the app's hook.
    pub(crate) fn refused(&self, refused: &Refused<'_>) {
        self.inner.counters.rejected(refused.cause);
        tracing::debug!(
            cause = %refused.cause,
            transport = %refused.transport,
            ns = refused.namespace,
            addr = ?refused.address,
            user = refused.user_id,
            status = refused.status.map(|s| s.as_u16()),
            reason = refused.message,
            "connection refused"
        );
        if let Some(hook) = &self.inner.on_refused {
            // A panicking hook must not take the request or the connection task with it.
            let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(refused)));
            if called.is_err() {
                tracing::error!("the on_refused hook panicked");
            }
        }
    }
}
