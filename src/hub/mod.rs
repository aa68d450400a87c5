//! The [`Hub`]: a cheap, cloneable handle on every connection, user and room, usable from
//! anywhere in the app to emit events.

mod ack;
#[cfg(feature = "cluster")]
pub(crate) mod cluster;
mod conn;
mod counters;
pub(crate) mod dynamic;
mod emit;
mod emitter;
pub(crate) mod expiry;
pub(crate) mod history;
mod namespace;
mod refused;
pub(crate) mod registry;

pub(crate) use ack::Asked;
pub use ack::{AckEmit, AckError, AckResponse, AckResponses};
pub use conn::DisconnectReason;
pub(crate) use conn::{Conn, Proto};
pub use namespace::Namespace;
pub(crate) use namespace::NsInner;

#[cfg(feature = "metrics")]
pub(crate) use counters::export as metrics;
pub use counters::CounterSnapshot;
pub use emit::Emit;
pub(crate) use emit::{Frames, Packet, Target};
pub use emitter::Emitter;
pub use history::History;
pub(crate) use history::HistoryState;
pub(crate) use refused::RefusedHook;
pub use refused::{RefusalCause, Refused, Transport};

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

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::{auth::Authenticator, config::Config, origin::OriginPolicy, protocol::close_code};

pub(crate) use counters::Counters;
pub(crate) use registry::Slots;

/// A user came online (first connection) or went offline (last connection closed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presence {
    /// The user.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// `true` when the user came online.
    pub online: bool,
}

/// The presence hook.
pub(crate) type PresenceHook = Arc<dyn Fn(Hub, Presence) -> BoxFuture<'static, ()> + Send + Sync>;

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
///
/// Emitting to, and looking up, the connections of one namespace is the [`Emitter`] trait's,
/// which the hub implements for its default namespace (`/`) and [`Namespace`] for any other:
/// with `use tower_realtime::Emitter;`, `hub.emit(..)`, `hub.to_room(..)` and
/// `hub.room_members(..)` work on the default namespace, and `hub.of("/chat")` gives the same
/// methods for `/chat`. What spans every namespace (a connection's rooms, joins, disconnects,
/// presence, shutdown, [`connection_count`](Self::connection_count)) is the hub's own.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

pub(crate) struct HubInner {
    pub(crate) config: Config,
    /// Every fixed namespace by name, the default one (`/`) included.
    pub(crate) namespaces: HashMap<Arc<str>, Arc<NsInner>>,
    /// The dynamic namespace patterns, and the namespaces made from them.
    pub(crate) dynamic: Arc<dynamic::Dynamic>,
    pub(crate) default_ns: Arc<NsInner>,
    pub(crate) slots: Slots,
    pub(crate) on_presence: Option<PresenceHook>,
    pub(crate) connect_rate: Option<governor::DefaultKeyedRateLimiter<Arc<str>>>,
    pub(crate) connect_checks: AtomicU64,
    /// Connections and connect rate per client address, and where the address is found.
    pub(crate) addresses: crate::address::Addresses,
    pub(crate) auth: Option<Arc<dyn Authenticator>>,
    pub(crate) origins: OriginPolicy,
    pub(crate) counters: Counters,
    /// App state registered with the builder, by type.
    pub(crate) state: Extensions,
    /// What the layers above the hub keep on it (a transport's sessions, say), by type. The
    /// hub holds them and never looks inside.
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    pub(crate) parts: Extensions,
    pub(crate) next_id: AtomicU64,
    /// The last ack id given out: one counter for every connection's server emits, so that a
    /// broadcast's one id never meets a connection's own.
    pub(crate) next_ack: AtomicU64,
    pub(crate) shutting_down: AtomicBool,
    #[cfg(feature = "cluster")]
    pub(crate) cluster: Option<cluster::Cluster>,
    pub(crate) history: Option<HistoryState>,
    pub(crate) shutdown_notify: tokio::sync::Notify,
    /// The connections whose identity expires, and the sweeper that ends them.
    pub(crate) expiry: expiry::Expiry,
    /// The app's hook on every refused connection.
    pub(crate) on_refused: Option<RefusedHook>,
}

/// Values kept by their type: one of each.
#[derive(Default)]
pub(crate) struct Extensions(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl Extensions {
    /// Keeps `value`, returning the one of its type it replaces.
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        let old = self.0.insert(TypeId::of::<T>(), Box::new(value))?;
        old.downcast().ok().map(|old| *old)
    }

    pub(crate) fn get<T: 'static>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref()
    }

    pub(crate) fn get_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.0.get_mut(&TypeId::of::<T>())?.downcast_mut()
    }

    pub(crate) fn remove<T: 'static>(&mut self) -> Option<T> {
        let old = self.0.remove(&TypeId::of::<T>())?;
        old.downcast().ok().map(|old| *old)
    }
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
    /// The hub's limits and timeouts.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn next_connection_id(&self) -> ConnectionId {
        ConnectionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// A new ack id for a server emit (to one connection or many).
    pub(crate) fn next_ack_id(&self) -> u64 {
        self.inner.next_ack.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// App state registered with [`HubBuilder::state`](crate::HubBuilder::state).
    pub fn state<S: Clone + Send + Sync + 'static>(&self) -> Option<S> {
        self.inner.state.get::<S>().cloned()
    }

    /// A handle on the namespace `name` (`"/"` is the default one), or `None` if the hub has no
    /// such namespace.
    ///
    /// A [dynamic namespace](crate::HubBuilder::dynamic_namespace) is there from its first
    /// connection until its last one has left; a handle taken meanwhile and kept past that
    /// reaches nobody (a namespace made again later under the same name is a new one).
    pub fn of(&self, name: &str) -> Option<Namespace> {
        Some(Namespace::new(self.clone(), self.namespace(name)?))
    }

    /// The names of the hub's namespaces, sorted: the fixed ones and the dynamic ones that
    /// exist now.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.each_namespace().map(|ns| ns.name.to_string()).collect();
        names.sort_unstable();
        names
    }

    /// The namespace `name`, fixed or dynamic, if it exists now.
    pub(crate) fn namespace(&self, name: &str) -> Option<Arc<NsInner>> {
        match self.inner.namespaces.get(name) {
            Some(ns) => Some(ns.clone()),
            None => self.inner.dynamic.get(name),
        }
    }

    /// The namespace `name` for an arriving connection, made from a pattern when it takes the
    /// name and the namespace does not exist yet. The connection keeps the lease until it ends.
    pub(crate) fn lease_namespace(&self, name: &str) -> Result<dynamic::Lease, dynamic::Unknown> {
        match self.inner.namespaces.get(name) {
            Some(ns) => Ok(dynamic::Lease::fixed(ns.clone())),
            None => self.inner.dynamic.lease(name),
        }
    }

    /// Every namespace that exists now, fixed then dynamic.
    pub(crate) fn each_namespace(&self) -> impl Iterator<Item = Arc<NsInner>> + '_ {
        (self.inner.namespaces.values().cloned()).chain(self.inner.dynamic.all())
    }

    /// Joins a connection of this node to a room: `None` when it is not on this node, else
    /// whether it joined (or was in it already).
    pub(crate) fn join_locally(&self, id: ConnectionId, room: &str) -> Option<bool> {
        let (ns, conn) = self.find(id)?;
        Some(ns.join(self, &conn, room).is_ok())
    }

    /// Makes a connection of this node leave a room: `None` when it is not on this node, else
    /// whether it was in it.
    pub(crate) fn leave_locally(&self, id: ConnectionId, room: &str) -> Option<bool> {
        let (ns, conn) = self.find(id)?;
        Some(ns.registry.leave(&conn, room))
    }

    /// Closes a connection of this node (close code `4000`); `false` when it is not on this
    /// node.
    pub(crate) fn disconnect_locally(&self, id: ConnectionId) -> bool {
        let Some((_, conn)) = self.find(id) else { return false };
        conn.request_close(close_code::DISCONNECTED_BY_SERVER, "disconnected by server");
        true
    }

    /// A connection of this node, in whichever namespace it is.
    pub(crate) fn find(&self, id: ConnectionId) -> Option<(Arc<NsInner>, Arc<Conn>)> {
        self.each_namespace().find_map(|ns| {
            let conn = ns.registry.conns.get(&id)?.clone();
            Some((ns, conn))
        })
    }

    /// Makes a connection join a room. Returns `false` when there is no such connection, the
    /// room name is not acceptable, or the connection is in too many rooms. In a cluster, a
    /// connection on another node is asked to join there (and `true` means the request left).
    pub fn join(&self, id: ConnectionId, room: &str) -> bool {
        self.join_locally(id, room)
            .unwrap_or_else(|| self.remote(|| RemoteOp::Join(id, room)))
    }

    /// Makes a connection leave a room. Returns whether it was in it (in a cluster, for a
    /// connection on another node: whether the request left).
    pub fn leave(&self, id: ConnectionId, room: &str) -> bool {
        self.leave_locally(id, room)
            .unwrap_or_else(|| self.remote(|| RemoteOp::Leave(id, room)))
    }

    /// Takes `user` out of `room`, in every namespace: their live connections leave it, and
    /// the sessions of their dropped connections forget it, so that recovering one brings
    /// back neither the room nor the events sent there meanwhile (a removal from a private
    /// room). Returns how many live connections on this node left it.
    ///
    /// In a cluster, the user's connections on the other nodes are asked to leave (in the
    /// background), and the sessions kept in Redis are edited as of the last offset given out:
    /// a session that joined the room at or before it does not get it back. For rules the app
    /// keeps itself, the rejoin guard
    /// ([`HubBuilder::guard_rejoin`](crate::HubBuilder::guard_rejoin)) is asked at every
    /// recovery.
    pub fn leave_user(&self, user: &str, room: &str) -> usize {
        match &self.inner.history {
            #[cfg(feature = "cluster")]
            Some(history) if history.shared => cluster::revoke(self, history, user, Some(room)),
            Some(history) => history.forget_room(user, room),
            None => {}
        }
        let mut left = 0;
        for ns in self.each_namespace() {
            let conns: Vec<_> = (ns.registry.users.get(user))
                .map(|c| c.values().cloned().collect())
                .unwrap_or_default();
            left += conns.iter().filter(|conn| ns.registry.leave(conn, room)).count();
        }
        left
    }

    /// Sends an action for a connection that is not on this node to the other nodes.
    #[cfg_attr(not(feature = "cluster"), allow(unused_variables))]
    fn remote<'a>(&self, op: impl FnOnce() -> RemoteOp<'a>) -> bool {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.inner.cluster {
            use crate::adapter::Op;
            let op = match op() {
                RemoteOp::Join(id, room) => Op::Join {
                    conn: id.0,
                    room: room.to_owned(),
                },
                RemoteOp::Leave(id, room) => Op::Leave {
                    conn: id.0,
                    room: room.to_owned(),
                },
                RemoteOp::Disconnect(id) => Op::Disconnect { conn: id.0 },
            };
            return cluster.engine.publish(&op);
        }
        false
    }

    /// The rooms a connection is in (empty for an unknown connection).
    pub fn rooms_of(&self, id: ConnectionId) -> Vec<String> {
        self.find(id).map(|(_, conn)| conn.rooms()).unwrap_or_default()
    }

    /// The data a connection of this node stored with
    /// [`Socket::set_data`](crate::Socket::set_data) (`None` when the connection is not here
    /// or stored none). In a cluster, `cluster_connection_data` asks every node.
    pub fn connection_data(&self, id: ConnectionId) -> Option<serde_json::Value> {
        self.find(id)?.1.data()
    }

    /// The users with at least one live connection (in any namespace), sorted and unique.
    pub fn online_users(&self) -> Vec<String> {
        self.inner.slots.online_users()
    }

    /// Whether a user has at least one live connection (in any namespace).
    pub fn is_online(&self, user: &str) -> bool {
        self.inner.slots.is_online(user)
    }

    /// Closes every connection of a user, in every namespace and, in a cluster, on every node
    /// (close code `4000`), and drops the sessions kept for their dropped connections, so that
    /// none is resumed (a ban). Returns how many were on this node.
    pub fn disconnect_user(&self, user: &str) -> usize {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.inner.cluster {
            let op = crate::adapter::Op::DisconnectUser { user: user.to_owned() };
            cluster.engine.publish(&op);
        }
        // Their dropped connections' sessions go too: none of them resumes.
        match &self.inner.history {
            #[cfg(feature = "cluster")]
            Some(history) if history.shared => cluster::revoke(self, history, user, None),
            Some(history) => history.forget_user(user),
            None => {}
        }
        self.disconnect_user_locally(user)
    }

    pub(crate) fn disconnect_user_locally(&self, user: &str) -> usize {
        let mut n = 0;
        for ns in self.each_namespace() {
            let conns: Vec<_> = (ns.registry.users.get(user))
                .map(|c| c.values().cloned().collect())
                .unwrap_or_default();
            for conn in &conns {
                conn.request_close(close_code::DISCONNECTED_BY_SERVER, "disconnected by server");
            }
            n += conns.len();
        }
        n
    }

    /// Closes one connection (close code `4000`). Returns whether it existed (in a cluster,
    /// for a connection on another node: whether the request left).
    pub fn disconnect(&self, id: ConnectionId) -> bool {
        self.disconnect_locally(id) || self.remote(|| RemoteOp::Disconnect(id))
    }

    /// Registers a connection with no socket behind it, in the default namespace, for the user
    /// `user`, and returns its id and the receiving end of its outbound queue (what its writer
    /// would drain). Nothing removes it but dropping the hub. For benchmarks
    /// ([`unstable::attach`](crate::unstable::attach)).
    #[cfg(feature = "unstable")]
    pub(crate) fn attach_detached(&self, user: &str) -> (ConnectionId, crate::outbox::Receiver) {
        let id = self.next_connection_id();
        let identity = crate::auth::Identity::user(user, Default::default());
        let (conn, rx) = Conn::new(id, identity, self.inner.config.outbound_queue, None, Default::default());
        self.inner.default_ns.registry.insert(&conn);
        (id, rx)
    }

    /// The number of open connections, in every namespace.
    pub fn connection_count(&self) -> usize {
        self.each_namespace().map(|ns| ns.registry.conns.len()).sum()
    }

    /// Takes a token from the user's bucket of new connections
    /// ([`Config::connect_rate_per_user`]). `false`: refuse with 429.
    pub(crate) fn check_connect_rate(&self, user: &Arc<str>) -> bool {
        let Some(limiter) = &self.inner.connect_rate else {
            return true;
        };
        // Forget idle users now and then, so the buckets stay bounded.
        if self.inner.connect_checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            limiter.retain_recent();
        }
        limiter.check_key(user).is_ok()
    }

    /// A user's first local connection went live (`online`) or their last one ended: tells
    /// the cluster, if any. Returns whether the user came online (or went offline) for the
    /// whole cluster, which is when the change is announced. Without a cluster, always `true`.
    #[cfg_attr(not(feature = "cluster"), allow(unused_variables))]
    pub(crate) async fn presence_changed(&self, user: Option<&Arc<str>>, online: bool) -> bool {
        let Some(_user) = user else { return false };
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.inner.cluster {
            let changed = match online {
                true => cluster.engine.user_connected(_user).await,
                false => cluster.engine.user_disconnected(_user).await,
            };
            // With Redis away the adapter counts the change when it is back (and reports it
            // then); announce nothing now rather than twice.
            return matches!(changed, Ok(true));
        }
        true
    }

    /// Brings a connection's user live, runs `accept` (the connect guards and hook), and
    /// announces the user online when this was their first connection (cluster-wide). When
    /// `accept` refuses, the connection no longer counts, and the refusal is returned.
    pub(crate) async fn go_live(
        &self,
        user: Option<&Arc<str>>,
        accept: impl Future<Output = Result<(), String>>,
    ) -> Result<(), String> {
        let came_online = self.inner.slots.go_live(user);
        let announce = came_online && self.presence_changed(user, true).await;
        let verdict = accept.await;
        // When refused and other connections of this user arrived meanwhile, the user is
        // online, and since this one was the first, nobody has announced it yet.
        if verdict.is_err() && self.inner.slots.end(user) {
            self.presence_changed(user, false).await;
            return verdict;
        }
        if announce {
            self.announce(user, true).await;
        }
        verdict
    }

    /// A connection of `user` ended: announces the user offline when it was their last one
    /// (cluster-wide).
    pub(crate) async fn go_offline(&self, user: Option<&Arc<str>>) {
        if self.inner.slots.end(user) && self.presence_changed(user, false).await {
            self.announce(user, false).await;
        }
    }

    /// Runs the presence hook for a user who came online or went offline.
    pub(crate) async fn announce(&self, user: Option<&Arc<str>>, online: bool) {
        if let Some(user) = user {
            let presence = Presence {
                user_id: user.to_string(),
                online,
            };
            self.fire_presence(presence).await;
        }
    }

    /// Runs the presence hook, if any.
    pub(crate) async fn fire_presence(&self, presence: Presence) {
        if let Some(hook) = &self.inner.on_presence {
            hook(self.clone(), presence).await;
        }
    }

    /// A reading of the hub's counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.inner.counters.snapshot()
    }

    /// Completes once [`shutdown`](Self::shutdown) has begun.
    pub(crate) async fn shut_down(&self) {
        loop {
            let notified = self.inner.shutdown_notify.notified();
            if self.is_shutting_down() {
                return;
            }
            notified.await;
        }
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
        self.inner.shutdown_notify.notify_waiters();
        let cfg = &self.inner.config;
        let deadline = tokio::time::Instant::now() + cfg.shutdown_timeout;
        let conns: Vec<_> = self
            .each_namespace()
            .flat_map(|ns| ns.registry.conns.iter().map(|e| e.value().clone()).collect::<Vec<_>>())
            .collect();
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

/// An action for a connection on another node.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
enum RemoteOp<'a> {
    Join(ConnectionId, &'a str),
    Leave(ConnectionId, &'a str),
    Disconnect(ConnectionId),
}

/// A random tag for this hub, in the top 24 bits of its connection ids, so that ids stay
/// unique across the nodes of a cluster.
pub(crate) fn node_tag() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    (h.finish() & 0xff_ffff).max(1)
}
