//! Namespaces: several gateways on one hub, each with its own handlers, guards, hooks, rooms
//! and connections (like NestJS's `@WebSocketGateway({ namespace })`).
//!
//! With the native protocol, the namespace `/chat` of a hub served at `/ws` is reached at
//! `/ws/chat`; the default namespace `/` at `/ws` itself.

use std::{future::Future, sync::Arc};

use serde::Serialize;

use super::{registry::Registry, ConnectionId, Emit, Hub, Target};
use crate::{
    connection::Conn,
    gateway::{
        ConnectGuard, DisconnectReason, ErrorEvent, Gateway, Guard, Handler, IntoConnectResult, RateLimit, RawMessage,
        Socket,
    },
    hub::registry::Join,
};

/// One namespace: its gateway and its registry.
pub(crate) struct NsInner {
    pub(crate) name: Arc<str>,
    pub(crate) gateway: Gateway,
    pub(crate) registry: Registry,
}

impl NsInner {
    pub(crate) fn new(name: &str, gateway: Gateway) -> Self {
        Self {
            name: Arc::from(name),
            gateway,
            registry: Registry::default(),
        }
    }

    /// Joins `conn` to `room`, within the hub's limits.
    pub(crate) fn join(&self, hub: &Hub, conn: &Arc<Conn>, room: &str) -> Result<bool, ErrorEvent> {
        let cfg = hub.config();
        if room.is_empty() {
            return Err(ErrorEvent::new("room name must not be empty"));
        }
        if room.len() > cfg.max_room_name_len {
            let message = format!("room name longer than {} bytes", cfg.max_room_name_len);
            return Err(ErrorEvent::new(message));
        }
        match self.registry.join(conn, room, cfg.max_rooms_per_connection) {
            Join::Joined => {
                if let (Some(recovery), Some(history)) = (&conn.recovery, &hub.inner.history) {
                    recovery.joined(room, history.current());
                }
                Ok(true)
            }
            Join::AlreadyIn => Ok(false),
            Join::TooManyRooms => Err(ErrorEvent::new(format!(
                "too many rooms: at most {} per connection",
                cfg.max_rooms_per_connection
            ))),
        }
    }
}

/// A handle on one namespace, for emitting to its connections only. Cheap to clone.
///
/// ```
/// # use tower_realtime::Hub;
/// # use serde_json::json;
/// let hub = Hub::builder()
///     .namespace("/notifications", |ns| ns.on("ping", || async { "pong" }))
///     .build();
/// let notifications = hub.of("/notifications").expect("registered above");
/// assert_eq!(notifications.to_user("42").emit("notification", &json!({ "message": "hi" })), 0);
/// ```
#[derive(Clone)]
pub struct Namespace {
    hub: Hub,
    ns: Arc<NsInner>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.ns.name).finish()
    }
}

impl Namespace {
    pub(crate) fn new(hub: Hub, ns: Arc<NsInner>) -> Self {
        Self { hub, ns }
    }

    /// The namespace's name (`"/"` for the default one).
    pub fn name(&self) -> &str {
        &self.ns.name
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Emits to every connection of this namespace. Returns how many it reached.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> usize {
        self.broadcast().emit(event, data)
    }

    /// Starts an emit to every connection of this namespace.
    pub fn broadcast(&self) -> Emit<'_> {
        Emit::new(&self.hub, &self.ns, Target::All)
    }

    /// Starts an emit to a room's members.
    pub fn to_room<'a>(&'a self, room: &'a str) -> Emit<'a> {
        Emit::new(&self.hub, &self.ns, Target::Room(room))
    }

    /// Starts an emit to several rooms (a connection in several of them gets the event once).
    pub fn to_rooms<'a>(&'a self, rooms: impl IntoIterator<Item = &'a str>) -> Emit<'a> {
        Emit::many(&self.hub, &self.ns, rooms.into_iter().map(Target::Room))
    }

    /// Starts an emit to every connection of a user in this namespace (all their devices).
    pub fn to_user<'a>(&'a self, user: &'a str) -> Emit<'a> {
        Emit::new(&self.hub, &self.ns, Target::User(user))
    }

    /// Starts an emit to every connection of several users.
    pub fn to_users<'a>(&'a self, users: impl IntoIterator<Item = &'a str>) -> Emit<'a> {
        Emit::many(&self.hub, &self.ns, users.into_iter().map(Target::User))
    }

    /// Starts an emit to one connection.
    pub fn to_connection(&self, id: ConnectionId) -> Emit<'_> {
        Emit::new(&self.hub, &self.ns, Target::Connection(id))
    }

    /// A handle on one connection of this namespace, as its handlers see it.
    pub fn socket(&self, id: ConnectionId) -> Option<Socket> {
        let conn = self.ns.registry.conns.get(&id)?.clone();
        Some(Socket::new(self.hub.clone(), self.ns.clone(), conn))
    }

    /// The connections in a room, sorted.
    pub fn room_members(&self, room: &str) -> Vec<ConnectionId> {
        let mut ids: Vec<_> = (self.ns.registry.rooms.get(room))
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// The users with a connection in a room, sorted and unique.
    pub fn room_users(&self, room: &str) -> Vec<String> {
        let mut users: Vec<String> = (self.ns.registry.rooms.get(room))
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

    /// The live connections of a user in this namespace, oldest first.
    pub fn connections_of(&self, user: &str) -> Vec<ConnectionId> {
        let mut ids: Vec<_> = (self.ns.registry.users.get(user))
            .map(|conns| conns.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// The number of connections in this namespace.
    pub fn connection_count(&self) -> usize {
        self.ns.registry.conns.len()
    }
}

/// Configures one namespace: its handlers, guards, rate limits and hooks. The same methods on
/// [`HubBuilder`](super::HubBuilder) configure the default namespace.
#[must_use]
#[derive(Default)]
pub struct NamespaceBuilder {
    pub(crate) gateway: Gateway,
}

impl std::fmt::Debug for NamespaceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceBuilder").finish_non_exhaustive()
    }
}

impl NamespaceBuilder {
    /// Handles the event `event` (like NestJS's `@SubscribeMessage`). The handler is an async
    /// function of [extractors](crate::FromEvent); its return value becomes the ack.
    pub fn on<H: Handler<Args>, Args: 'static>(mut self, event: &str, handler: H) -> Self {
        self.gateway.add_handler(event, handler, Vec::new());
        self
    }

    /// Takes every text and binary message of this namespace's connections as it is, instead
    /// of the JSON protocol: for apps that want frames rather than events. Messages of one
    /// connection are handled one at a time, in order; reply with [`Socket::send_raw`].
    ///
    /// ```
    /// use tower_realtime::{AllowAnonymous, Hub, RawMessage, Socket};
    ///
    /// // An echo server.
    /// let hub = Hub::builder()
    ///     .auth(AllowAnonymous::new())
    ///     .on_raw(|socket: Socket, msg: RawMessage| async move {
    ///         socket.send_raw(msg);
    ///     })
    ///     .build();
    /// # drop(hub);
    /// ```
    pub fn on_raw<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Socket, RawMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.gateway.raw = Some(Arc::new(move |s, m| Box::pin(handler(s, m))));
        self
    }

    /// Handles `event` behind a guard of its own.
    pub fn on_guarded<H: Handler<Args>, Args: 'static>(mut self, event: &str, guard: impl Guard, handler: H) -> Self {
        self.gateway.add_handler(event, handler, vec![Arc::new(guard)]);
        self
    }

    /// A group of handlers sharing guards: `.group(|g| g.guard(admin_only).on("ban", ban).on("kick", kick))`.
    /// The group's guards apply to its handlers only, whatever the order of the calls.
    pub fn group(mut self, f: impl FnOnce(NamespaceBuilder) -> NamespaceBuilder) -> Self {
        let group = f(NamespaceBuilder::default()).gateway;
        self.gateway.merge_group(group);
        self
    }

    /// A guard in front of every handler of this namespace (or of the group being built).
    pub fn guard(mut self, guard: impl Guard) -> Self {
        self.gateway.add_guard(Arc::new(guard));
        self
    }

    /// A guard on arriving connections: `Err(reason)` closes the connection with `1008` and
    /// the reason, before the connect hook runs.
    pub fn guard_connect(mut self, guard: impl ConnectGuard) -> Self {
        self.gateway.add_connect_guard(Arc::new(guard));
        self
    }

    /// Limits every connection of this namespace to `rate` events (all events together).
    /// Past it, the client gets an `error` event with status `rate_limited` and the event does
    /// not run; after [`Config::rate_limit_flood_threshold`](crate::Config::rate_limit_flood_threshold)
    /// refusals in a row the connection is closed with `1008`.
    pub fn rate_limit(mut self, rate: RateLimit) -> Self {
        self.gateway.rate = Some(rate);
        self
    }

    /// Limits one event (registered before this call) to `rate` per connection, on top of the
    /// namespace's limit.
    pub fn rate_limit_event(mut self, event: &str, rate: RateLimit) -> Self {
        if !self.gateway.set_event_rate(event, rate) {
            tracing::warn!(%event, "rate_limit_event on an event with no handler (register the handler first)");
        }
        self
    }

    /// Runs when a connection arrives, after the connect guards. `Err(reason)` closes it with
    /// code `1008` and the reason; the user is announced online only once it accepts.
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
}
