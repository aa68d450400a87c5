//! The [`Hub`]: a cheap, cloneable handle on every connection, user and room, usable from
//! anywhere in the app to emit events.

mod counters;
mod emit;
pub(crate) mod registry;

pub use counters::CounterSnapshot;
pub(crate) use counters::Rejection;
pub use emit::Emit;
pub(crate) use emit::Target;

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::Serialize;

use crate::{
    auth::Authenticator,
    config::Config,
    gateway::{DisconnectReason, Gateway, Handler, IntoConnectResult, Presence, Socket},
    layer::{OriginPolicy, RealtimeLayer},
    protocol::close_code,
};

use counters::Counters;
use registry::Registry;

/// The id of one connection, unique within a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The handle on all realtime state. `Clone + Send + Sync`, and a clone is one `Arc` bump:
/// give one to every handler, job or consumer that emits.
///
/// Build it with [`Hub::builder`], serve it with [`Hub::layer`].
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

pub(crate) struct HubInner {
    pub(crate) config: Config,
    pub(crate) registry: Registry,
    pub(crate) gateway: Gateway,
    pub(crate) auth: Option<Arc<dyn Authenticator>>,
    pub(crate) origins: OriginPolicy,
    pub(crate) counters: Counters,
    state: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    next_id: AtomicU64,
    pub(crate) shutting_down: AtomicBool,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("connections", &self.connection_count())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Starts building a hub.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// A layer serving this hub's WebSocket endpoint at `path` (exact match, e.g. `"/ws"`).
    pub fn layer(&self, path: &str) -> RealtimeLayer {
        RealtimeLayer::new(self.clone()).path(path)
    }

    /// The hub's limits and timeouts.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn next_connection_id(&self) -> ConnectionId {
        ConnectionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// App state registered with [`HubBuilder::state`].
    pub fn state<S: Clone + Send + Sync + 'static>(&self) -> Option<S> {
        self.inner.state.get(&TypeId::of::<S>())?.downcast_ref::<S>().cloned()
    }

    /// Emits to every connection. Returns how many it reached.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> usize {
        Emit::new(self, Target::All).emit(event, data)
    }

    /// Starts an emit to every connection (add `.except(id)` to leave one out).
    pub fn broadcast(&self) -> Emit<'_> {
        Emit::new(self, Target::All)
    }

    /// Starts an emit to a room's members.
    pub fn to_room<'a>(&'a self, room: &'a str) -> Emit<'a> {
        Emit::new(self, Target::Room(room))
    }

    /// Starts an emit to several rooms (a connection in several of them gets the event once).
    pub fn to_rooms<'a>(&'a self, rooms: impl IntoIterator<Item = &'a str>) -> Emit<'a> {
        self.to_many(rooms, Target::Room)
    }

    /// Starts an emit to every connection of a user (all their devices and tabs).
    pub fn to_user<'a>(&'a self, user: &'a str) -> Emit<'a> {
        Emit::new(self, Target::User(user))
    }

    /// Starts an emit to every connection of several users.
    pub fn to_users<'a>(&'a self, users: impl IntoIterator<Item = &'a str>) -> Emit<'a> {
        self.to_many(users, Target::User)
    }

    /// Starts an emit to one connection.
    pub fn to_connection(&self, id: ConnectionId) -> Emit<'_> {
        Emit::new(self, Target::Connection(id))
    }

    fn to_many<'a>(&'a self, names: impl IntoIterator<Item = &'a str>, target: fn(&'a str) -> Target<'a>) -> Emit<'a> {
        let mut names = names.into_iter();
        let Some(first) = names.next() else {
            // No target at all: an emit to an empty room reaches nobody.
            return Emit::new(self, Target::Room(""));
        };
        let mut emit = Emit::new(self, target(first));
        for name in names {
            emit = match target(name) {
                Target::Room(r) => emit.to_room(r),
                Target::User(u) => emit.to_user(u),
                _ => emit,
            };
        }
        emit
    }

    /// Makes a connection join a room. Returns `false` when there is no such connection, the
    /// room name is not acceptable, or the connection is in too many rooms.
    pub fn join(&self, id: ConnectionId, room: &str) -> bool {
        match self.socket(id) {
            Some(socket) => socket.join(room).is_ok(),
            None => false,
        }
    }

    /// Makes a connection leave a room. Returns whether it was in it.
    pub fn leave(&self, id: ConnectionId, room: &str) -> bool {
        match self.inner.registry.conns.get(&id).map(|c| c.clone()) {
            Some(conn) => self.inner.registry.leave(&conn, room),
            None => false,
        }
    }

    /// The rooms a connection is in (empty for an unknown connection).
    pub fn rooms_of(&self, id: ConnectionId) -> Vec<String> {
        self.inner
            .registry
            .conns
            .get(&id)
            .map(|c| c.rooms())
            .unwrap_or_default()
    }

    /// The connections in a room.
    pub fn room_members(&self, room: &str) -> Vec<ConnectionId> {
        let mut ids: Vec<_> = self
            .inner
            .registry
            .rooms
            .get(room)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// The users with a connection in a room, sorted and unique.
    pub fn room_users(&self, room: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .inner
            .registry
            .rooms
            .get(room)
            .map(|m| {
                m.values()
                    .filter_map(|c| c.identity.user_id().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// The live connections of a user.
    pub fn connections_of(&self, user: &str) -> Vec<ConnectionId> {
        self.inner
            .registry
            .users
            .get(user)
            .map(|e| e.conns.iter().map(|c| c.id).collect())
            .unwrap_or_default()
    }

    /// A handle on one connection, as its handlers see it.
    pub fn socket(&self, id: ConnectionId) -> Option<Socket> {
        let conn = self.inner.registry.conns.get(&id)?.clone();
        Some(Socket::new(self.clone(), conn))
    }

    /// The users with at least one live connection, sorted and unique.
    pub fn online_users(&self) -> Vec<String> {
        self.inner.registry.online_users()
    }

    /// Whether a user has at least one live connection.
    pub fn is_online(&self, user: &str) -> bool {
        self.inner.registry.users.get(user).is_some_and(|e| !e.conns.is_empty())
    }

    /// Closes every connection of a user (close code `4000`). Returns how many.
    pub fn disconnect_user(&self, user: &str) -> usize {
        let conns = self
            .inner
            .registry
            .users
            .get(user)
            .map(|e| e.conns.clone())
            .unwrap_or_default();
        for conn in &conns {
            conn.request_close(close_code::DISCONNECTED_BY_SERVER, "disconnected by server");
        }
        conns.len()
    }

    /// Closes one connection (close code `4000`). Returns whether it existed.
    pub fn disconnect(&self, id: ConnectionId) -> bool {
        match self.inner.registry.conns.get(&id) {
            Some(conn) => {
                conn.request_close(close_code::DISCONNECTED_BY_SERVER, "disconnected by server");
                true
            }
            None => false,
        }
    }

    /// The number of open connections.
    pub fn connection_count(&self) -> usize {
        self.inner.registry.conns.len()
    }

    /// A reading of the hub's counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.inner.counters.snapshot()
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Shuts the realtime side down gracefully:
    ///
    /// 1. new upgrades are refused with 503;
    /// 2. connections are closed in batches of [`Config::shutdown_batch`], with
    ///    [`Config::shutdown_batch_interval`] between batches, so that clients do not all
    ///    reconnect at the same instant; each first flushes what is already queued for it, then
    ///    gets close code `1001`;
    /// 3. returns once every connection has ended, or [`Config::shutdown_timeout`] has passed.
    ///
    /// Returns the number of connections still open when it returned.
    pub async fn shutdown(&self) -> usize {
        self.inner.shutting_down.store(true, Ordering::Release);
        let cfg = &self.inner.config;
        let deadline = tokio::time::Instant::now() + cfg.shutdown_timeout;
        let conns: Vec<_> = self.inner.registry.conns.iter().map(|e| e.value().clone()).collect();
        for (i, batch) in conns.chunks(cfg.shutdown_batch.max(1)).enumerate() {
            if i > 0 {
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + cfg.shutdown_batch_interval)).await;
            }
            for conn in batch {
                conn.request_close(close_code::GOING_AWAY, "server shutting down");
            }
        }
        while self.inner.counters.connections.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.counters.connections.load(Ordering::Acquire) as usize
    }

    /// A future for axum's `with_graceful_shutdown` (or any server's): it waits for `signal`,
    /// then runs [`shutdown`](Self::shutdown), so the HTTP server stops only after the
    /// realtime connections have been closed.
    ///
    /// ```no_run
    /// # async fn run(app: axum::Router, hub: tower_realtime::Hub) {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(hub.shutdown_on(async { let _ = tokio::signal::ctrl_c().await; }))
    ///     .await
    ///     .unwrap();
    /// # }
    /// ```
    pub fn shutdown_on<F: Future<Output = ()> + Send + 'static>(
        &self,
        signal: F,
    ) -> impl Future<Output = ()> + Send + 'static {
        let hub = self.clone();
        async move {
            signal.await;
            hub.shutdown().await;
        }
    }
}

/// Builds a [`Hub`]: authentication, handlers, hooks, limits, state.
#[must_use]
#[derive(Default)]
pub struct HubBuilder {
    config: Config,
    gateway: Gateway,
    auth: Option<Arc<dyn Authenticator>>,
    origins: OriginPolicy,
    state: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HubBuilder {
    /// How handshakes are authenticated: [`JwtAuth`](crate::JwtAuth), your own
    /// [`Authenticator`], or [`AllowAnonymous`](crate::AllowAnonymous). Without one, every
    /// handshake is refused with 401: anonymous access is opt-in.
    pub fn auth(mut self, auth: impl Authenticator) -> Self {
        self.auth = Some(Arc::new(auth));
        self
    }

    /// Handles the event `event` (like NestJS's `@SubscribeMessage`). The handler is an async
    /// function of [extractors](crate::FromEvent); its return value becomes the ack.
    pub fn on<H: Handler<Args>, Args: 'static>(mut self, event: &str, handler: H) -> Self {
        self.gateway.add_handler(event, handler);
        self
    }

    /// Runs when a connection is upgraded, before it counts as online. Returning `Err(reason)`
    /// closes it with code `1008` and the reason.
    pub fn on_connect<F, Fut, R>(mut self, hook: F) -> Self
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoConnectResult,
    {
        self.gateway.set_on_connect(hook);
        self
    }

    /// Runs when a connection ends, however it ends; its rooms are still known there.
    pub fn on_disconnect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Socket, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.gateway.set_on_disconnect(hook);
        self
    }

    /// Runs when a user comes online (first connection) or goes offline (last connection
    /// closed): once per user, not once per tab.
    pub fn on_presence<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Hub, Presence) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.gateway.set_on_presence(hook);
        self
    }

    /// Replaces all limits and timeouts.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Changes some limits: `.configure(|c| c.max_connections_per_user = 50)`.
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Also accepts handshakes whose `Origin` is exactly `origin` (e.g. `"https://app.example.com"`).
    /// Requests without `Origin`, and those whose origin is the request's own host, are accepted
    /// unless [`allow_any_origin`](Self::allow_any_origin) or this list says otherwise.
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.origins.allow(origin.into());
        self
    }

    /// Accepts handshakes from any origin. Explicit, because browsers send cookies cross-site.
    pub fn allow_any_origin(mut self) -> Self {
        self.origins = OriginPolicy::Any;
        self
    }

    /// Registers app state, for the [`State`](crate::State) extractor and [`Hub::state`].
    pub fn state<S: Clone + Send + Sync + 'static>(mut self, state: S) -> Self {
        self.state.insert(TypeId::of::<S>(), Box::new(state));
        self
    }

    /// Builds the hub.
    pub fn build(self) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                config: self.config,
                registry: Registry::default(),
                gateway: self.gateway,
                auth: self.auth,
                origins: self.origins,
                counters: Counters::default(),
                state: self.state,
                next_id: AtomicU64::new(0),
                shutting_down: AtomicBool::new(false),
            }),
        }
    }
}
