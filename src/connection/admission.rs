//! One admission for every transport: what a connection must pass to be let in, in one order,
//! and the one way out ([`retire`]).
//!
//! | step | refusal ([`Refusal`]) |
//! |---|---|
//! | 1. the hub is not shutting down | `ShuttingDown` |
//! | 2. the `Origin` is allowed ([`OriginPolicy`](crate::origin)) | `Origin` |
//! | 3. the authenticator accepts the token | `Auth` |
//! | 4. the user's connect rate ([`Config::connect_rate_per_user`](crate::Config::connect_rate_per_user)); the client address's ([`connect_rate_per_address`](crate::Config::connect_rate_per_address)), for an anonymous connection or with [`address_limits_for_users`](crate::Config::address_limits_for_users), when the address is known | `ConnectRate`, `AddressRate` |
//! | 5. a slot: [`max_connections`](crate::Config::max_connections), [`max_connections_per_user`](crate::Config::max_connections_per_user), [`max_connections_per_address`](crate::Config::max_connections_per_address) (as in 4) | `HubFull`, `UserFull`, `AddressFull` |
//! | 6. the namespace's connect guards | `Guard` |
//! | 7. recovery: the client's session resumed (or a new one), after closing a connection that still holds it (`4002`); back in the session's rooms that the rejoin guard allows | (never refuses: the client is told whether it recovered) |
//! | 8. the connect hook (the user is online while it runs; presence is announced once it accepts) | `Guard` |
//!
//! Steps 1–5 ([`admit`]) need no connection, so the native WebSocket runs them before it
//! answers `101`; steps 6–8 ([`enter`]) run once the connection can be written to. Socket.IO
//! runs both at a namespace's CONNECT. Each transport renders a [`Refusal`] in its own wire
//! form: an HTTP status and short body for the native handshake, a `CONNECT_ERROR` (before
//! the answer to the CONNECT) or a `DISCONNECT` (after it) for Socket.IO, a close frame
//! (`1008`) for a native connection refused at steps 6–8.
//!
//! Every refusal is reported once, where it is made: [`admit`] and [`enter`] report their own
//! ([`Refusal::report`]); a transport reports those it makes itself (a bad request, the
//! Socket.IO caps on sessions not connected yet) with [`Client::report`]. Both end in
//! [`Hub::refused`], which counts the refusal, logs it at `debug` and hands it to the app's
//! [`on_refused`](crate::HubBuilder::on_refused) hook.

use std::{borrow::Cow, net::IpAddr, sync::atomic::Ordering};

use http::{header, request::Parts, StatusCode};
use serde_json::Value;

use crate::{
    address::ClientAddr,
    auth::{AuthError, AuthRequest, Identity},
    gateway::Socket,
    hub::{
        history::{Ask, SessionNews},
        registry::ReserveError,
        DisconnectReason, Hub, Proto, RefusalCause, Refused as Report, Transport,
    },
    outbox::Frame,
    protocol::close_code,
};

/// Why a connection was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The hub is shutting down.
    ShuttingDown,
    /// The request's `Origin` is not allowed.
    Origin,
    /// The authenticator refused, with its message.
    Auth(String),
    /// The user opened connections too fast.
    ConnectRate,
    /// The hub has `max_connections` connections.
    HubFull,
    /// The user has `max_connections_per_user` connections.
    UserFull,
    /// The client address opened connections too fast.
    AddressRate,
    /// The client address has `max_connections_per_address` connections.
    AddressFull,
    /// The client address has `max_pending_sessions_per_address` Socket.IO sessions that
    /// have not connected a namespace yet.
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    AddressSessions,
    /// A connect guard or the connect hook refused, with its reason.
    Guard(String),
}

impl Refusal {
    /// The HTTP status of this refusal, where it is answered over HTTP.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::ShuttingDown | Self::HubFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::Origin | Self::Guard(_) => StatusCode::FORBIDDEN,
            Self::Auth(_) => StatusCode::UNAUTHORIZED,
            Self::ConnectRate | Self::UserFull | Self::AddressRate | Self::AddressFull | Self::AddressSessions => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    /// What the client is told.
    pub(crate) fn message(&self) -> Cow<'_, str> {
        match self {
            Self::ShuttingDown => "server is shutting down".into(),
            Self::Origin => "origin not allowed".into(),
            Self::Auth(message) | Self::Guard(message) => message.as_str().into(),
            Self::ConnectRate => "too many new connections for this user; retry later".into(),
            Self::HubFull => "too many connections".into(),
            Self::UserFull => "too many connections for this user".into(),
            Self::AddressRate => "too many new connections from this address; retry later".into(),
            Self::AddressFull => "too many connections from this address".into(),
            Self::AddressSessions => "too many sessions from this address".into(),
        }
    }

    /// Why, as the app's hook and the counters see it.
    pub(crate) fn cause(&self) -> RefusalCause {
        match self {
            Self::ShuttingDown => RefusalCause::ShuttingDown,
            Self::Origin => RefusalCause::Origin,
            Self::Auth(_) => RefusalCause::Auth,
            Self::Guard(_) => RefusalCause::Guard,
            Self::ConnectRate
            | Self::HubFull
            | Self::UserFull
            | Self::AddressRate
            | Self::AddressFull
            | Self::AddressSessions => RefusalCause::Limit,
        }
    }

    /// Counts the refusal, logs it and tells the app's hook ([`Client::report`]).
    pub(crate) fn report(&self, hub: &Hub, client: &Client<'_>, user: Option<&str>, status: Option<StatusCode>) {
        client.report(hub, self.cause(), &self.message(), user, status);
    }
}

/// Who asks to connect, as a refusal's report tells it: the client address (as
/// [`AddressSource::of`](crate::address::AddressSource::of) gives it, if known), the protocol
/// and the namespace (if known).
pub(crate) struct Client<'a> {
    pub(crate) addr: Option<IpAddr>,
    pub(crate) transport: Transport,
    pub(crate) namespace: Option<&'a str>,
}

impl Client<'_> {
    /// Reports a refusal of this client to [`Hub::refused`], which counts it, logs it and
    /// tells the app's hook: `user` when the client was authenticated, `status` when the
    /// refusal is answered over HTTP.
    pub(crate) fn report(
        &self,
        hub: &Hub,
        cause: RefusalCause,
        message: &str,
        user: Option<&str>,
        status: Option<StatusCode>,
    ) {
        let report = Report::new(cause, message, self.transport)
            .with_namespace(self.namespace)
            .with_address(self.addr)
            .with_user(user)
            .with_status(status);
        hub.refused(&report);
    }
}

/// Whether the request's `Origin` may connect, under the hub's one origin policy.
pub(crate) fn origin_allowed(hub: &Hub, parts: &Parts) -> bool {
    let headers = &parts.headers;
    // An `Origin` that is not text matches nothing.
    let origin = headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or("\u{0}"));
    let host = (headers.get(header::HOST))
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    hub.inner.origins.permits(origin, host)
}

/// A connection that passed steps 1–5: its identity and a reserved slot (and the client
/// address, which it may count under). Dropping it unused gives them back.
pub(crate) struct Pass {
    hub: Hub,
    identity: Option<Identity>,
    addr: ClientAddr,
}

impl Pass {
    /// The identity and the client address, for the connection that takes the slot (which
    /// `retire` gives back).
    pub(crate) fn into_parts(mut self) -> (Identity, ClientAddr) {
        (self.identity.take().expect("taken once"), self.addr)
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if let Some(identity) = &self.identity {
            self.hub.inner.slots.release(identity.user_key());
            self.hub.inner.addresses.release(self.addr.counted_ip());
        }
    }
}

/// Steps 1–5: shutdown, origin, authentication (the `token` the transport found, and the
/// Socket.IO CONNECT's `payload`), connect rate, slot. A refusal is reported here
/// ([`Refusal::report`]), with its HTTP status for the native handshake, which answers it so.
pub(crate) async fn admit(
    hub: &Hub,
    parts: &Parts,
    client: &Client<'_>,
    token: Option<&str>,
    payload: Option<&Value>,
) -> Result<Pass, Refusal> {
    let refuse = |refusal: Refusal, user: Option<&str>| {
        let status = (client.transport == Transport::Native).then(|| refusal.status());
        refusal.report(hub, client, user, status);
        refusal
    };
    let identity = authenticate(hub, parts, token, payload)
        .await
        .map_err(|refusal| refuse(refusal, None))?;
    match reserve(hub, client.addr, &identity) {
        Ok(addr) => Ok(Pass {
            hub: hub.clone(),
            identity: Some(identity),
            addr,
        }),
        Err(refusal) => Err(refuse(refusal, identity.user_id())),
    }
}

/// Steps 1–3: shutdown, origin, authentication.
async fn authenticate(
    hub: &Hub,
    parts: &Parts,
    token: Option<&str>,
    payload: Option<&Value>,
) -> Result<Identity, Refusal> {
    if hub.is_shutting_down() {
        return Err(Refusal::ShuttingDown);
    }
    if !origin_allowed(hub, parts) {
        return Err(Refusal::Origin);
    }
    let identity = match &hub.inner.auth {
        Some(auth) => {
            auth.authenticate(&AuthRequest::new(parts, token).with_payload(payload))
                .await
        }
        None => Err(AuthError::new("no authenticator configured")),
    };
    identity.map_err(|e| Refusal::Auth(e.message().to_owned()))
}

/// Steps 4–5: the connect rate and a slot, for `identity` from the client address `ip`;
/// gives the address, and whether the connection counts under it.
fn reserve(hub: &Hub, ip: Option<IpAddr>, identity: &Identity) -> Result<ClientAddr, Refusal> {
    let user = identity.user_key();
    if user.is_some_and(|user| !hub.check_connect_rate(user)) {
        return Err(Refusal::ConnectRate);
    }
    let cfg = &hub.inner.config;
    // The per-address limits: for anonymous connections, or for all of them when asked.
    let addr = ClientAddr {
        ip,
        counted: user.is_none() || cfg.address_limits_for_users,
    };
    let addresses = &hub.inner.addresses;
    if addr.counted_ip().is_some_and(|ip| !addresses.check_rate(ip)) {
        return Err(Refusal::AddressRate);
    }
    match hub
        .inner
        .slots
        .reserve(user, cfg.max_connections, cfg.max_connections_per_user)
    {
        Ok(()) => {}
        Err(ReserveError::HubFull) => return Err(Refusal::HubFull),
        Err(ReserveError::UserFull) => return Err(Refusal::UserFull),
    }
    if (addr.counted_ip()).is_some_and(|ip| !addresses.reserve(ip, cfg.max_connections_per_address)) {
        hub.inner.slots.release(user);
        return Err(Refusal::AddressFull);
    }
    Ok(addr)
}

/// A connection refused at steps 6–8.
pub(crate) struct Refused {
    pub(crate) refusal: Refusal,
    /// Whether the client had been told it was connected (the refusal came from the hook).
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    pub(crate) after_hello: bool,
}

/// Steps 6–8, for a connection whose slot `admit` reserved: registers it, runs the connect
/// guards, recovers its session (when the client takes part in recovery: `ask`) and runs the
/// connect hook. `hello` makes the frames that tell the client it is connected (with news of
/// its recovery session, when it asked for one); they go before anything else.
///
/// Refused, the connection is unregistered again and its slot given back; nothing is kept.
pub(crate) async fn enter(
    socket: &Socket,
    ask: Option<&Ask>,
    hello: impl FnOnce(Option<&SessionNews<'_>>) -> Vec<Frame>,
) -> Result<(), Refused> {
    let (hub, ns, conn) = (socket.hub(), socket.ns(), socket.conn());
    ns.registry.insert(conn);
    hub.inner.counters.connections.fetch_add(1, Ordering::Relaxed);
    hub.inner.counters.connections_total.fetch_add(1, Ordering::Relaxed);
    let mut said_hello = false;
    // The connection is live (reachable by user, counted online) while the hook runs, so the
    // hook sees a consistent hub; presence is announced only once it accepts.
    let accept = async {
        ns.gateway().check_connect(socket)?;
        match ask {
            Some(ask) => {
                let resume = match ask {
                    Ask::New => None,
                    Ask::Resume(resume) => Some(resume),
                };
                let rejoin = |rooms| ns.gateway().rejoinable(socket, rooms);
                hub.recover(ns, conn, resume, rejoin, |news| hello(Some(news))).await;
            }
            None => conn.send_all(hello(None)),
        }
        said_hello = true;
        ns.gateway().connect_hook(socket.clone()).await
    };
    let verdict = Box::pin(hub.go_live(conn.identity.user_key(), accept)).await;
    let Err(reason) = verdict else {
        // Only a connection whose identity expires is known to the sweeper.
        if let Some(at) = conn.identity.expires_at() {
            hub.inner.expiry.set(hub, ns, conn, Some(at));
        }
        return Ok(());
    };
    // Refused: no session to keep (this lets go of the one recovery gave it).
    let refused = DisconnectReason::ServerClosed(close_code::POLICY_VIOLATION, reason.clone());
    hub.keep_session(ns, conn, &refused);
    ns.registry.remove(conn);
    hub.inner.addresses.release(conn.addr.counted_ip());
    hub.inner.counters.connections.fetch_sub(1, Ordering::Relaxed);
    let refusal = Refusal::Guard(reason);
    let transport = match conn.proto {
        Proto::Native => Transport::Native,
        #[cfg(feature = "socketio")]
        Proto::SocketIo => Transport::SocketIo,
    };
    let client = Client {
        addr: conn.addr.ip,
        transport,
        namespace: Some(&ns.name),
    };
    refusal.report(hub, &client, conn.identity.user_id(), None);
    Err(Refused {
        refusal,
        after_hello: said_hello,
    })
}

/// Undoes [`enter`], whatever ended the connection: keeps its recovery session when the client
/// may come back for it, runs the disconnect hook (the rooms still known), fails the server's
/// emits waiting for an answer, unregisters it, announces the user offline when it was their
/// last connection, and gives the slot back.
pub(crate) async fn retire(socket: Socket, reason: DisconnectReason) {
    let (hub, ns, conn) = (socket.hub().clone(), socket.ns().clone(), socket.conn().clone());
    hub.keep_session(&ns, &conn, &reason);
    let code = match &reason {
        DisconnectReason::ServerClosed(code, _) => Some(*code),
        DisconnectReason::ClientClosed(code) => *code,
        _ => None,
    };
    tracing::debug!(conn = %conn.id, reason = ?reason, code = ?code, "disconnected");
    Box::pin(ns.gateway().on_disconnect(socket, reason)).await;
    conn.fail_acks();
    hub.inner.expiry.remove(conn.id);
    ns.registry.remove(&conn);
    Box::pin(hub.go_offline(conn.identity.user_key())).await;
    hub.inner.addresses.release(conn.addr.counted_ip());
    hub.inner.counters.connections.fetch_sub(1, Ordering::Relaxed);
}
