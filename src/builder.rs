//! [`HubBuilder`] and [`NamespaceBuilder`]: everything a hub is built from — handlers, guards,
//! hooks, authentication, limits, the origin policy, transports, history and the cluster.
//!
//! The builder sits above every other part: it hands the hub its core (limits, history, the
//! cluster) and the layers above the hub their own parts (each namespace's handlers, the
//! Socket.IO sessions), which the hub keeps without looking inside.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64},
        Arc,
    },
};

use crate::address::AddressSource;
use crate::{
    auth::Authenticator,
    config::{Compression, Config, ErrorStyle, RateLimit},
    gateway::{ConnectGuard, Gateway, Guard, Handler, IntoConnectResult, RawMessage, Socket},
    hub::{
        dynamic::{Dynamic, Matcher, Pattern},
        node_tag, Counters, DisconnectReason, Extensions, History, HistoryState, Hub, HubInner, NsInner, Presence,
        Slots,
    },
    origin::OriginPolicy,
};
#[cfg(feature = "typed")]
use crate::{
    event::{ClientEvent, ServerEvent},
    gateway::EventHandler,
};

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

    /// Handles a declared event ([`ClientEvent`](crate::ClientEvent), feature `typed`): the
    /// handler's last argument is the event's payload type, annotated, after up to five
    /// [extractors](crate::FromEvent), and it returns the event's ack type (or a `Result` of
    /// it and an [`IntoErrorEvent`](crate::IntoErrorEvent)); both are checked at compile
    /// time. A payload that does not deserialize gets the client an `error` event, as with
    /// [`Data`](crate::Data).
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use tower_realtime::{ErrorEvent, Event, Hub, Socket};
    ///
    /// #[derive(Deserialize, Event, ts_rs::TS)]
    /// #[event(name = "joinRoom", ack = JoinedRoom)]
    /// struct JoinRoom(String);
    ///
    /// #[derive(Serialize, ts_rs::TS)]
    /// struct JoinedRoom { room: String }
    ///
    /// let hub = Hub::builder()
    ///     .on_event(|socket: Socket, JoinRoom(room): JoinRoom| async move {
    ///         socket.join(&room)?;
    ///         Ok::<_, ErrorEvent>(JoinedRoom { room })
    ///     })
    ///     .build();
    /// # drop(hub);
    /// ```
    ///
    /// A handler returning anything but the declared ack does not compile:
    ///
    /// ```compile_fail
    /// use serde::{Deserialize, Serialize};
    /// use tower_realtime::{ErrorEvent, Event, Hub, Socket};
    ///
    /// #[derive(Deserialize, Event, ts_rs::TS)]
    /// #[event(name = "joinRoom", ack = JoinedRoom)]
    /// struct JoinRoom(String);
    ///
    /// #[derive(Serialize, ts_rs::TS)]
    /// struct JoinedRoom { room: String }
    ///
    /// let hub = Hub::builder()
    ///     .on_event(|socket: Socket, JoinRoom(room): JoinRoom| async move {
    ///         socket.join(&room)?;
    ///         Ok::<_, ErrorEvent>(room) // a String, not a JoinedRoom
    ///     })
    ///     .build();
    /// ```
    ///
    /// Nor does one whose last argument is not a declared event:
    ///
    /// ```compile_fail
    /// use tower_realtime::{Hub, Socket};
    ///
    /// let hub = Hub::builder()
    ///     .on_event(|socket: Socket, room: String| async move { room })
    ///     .build();
    /// ```
    #[cfg(feature = "typed")]
    pub fn on_event<E: ClientEvent, H: EventHandler<E, Args>, Args: 'static>(mut self, handler: H) -> Self {
        self.gateway.add_event_handler(handler);
        self
    }

    /// Declares an event the server sends ([`ServerEvent`](crate::ServerEvent), feature
    /// `typed`), so that [`Hub::typescript`] writes it into `ServerToClientEvents` with its
    /// payload type. Sending it does not need this: [`Emit::send`](crate::Emit::send) takes
    /// any declared event.
    #[cfg(feature = "typed")]
    pub fn emits<E: ServerEvent>(mut self) -> Self {
        self.gateway.declare_server_event::<E>();
        self
    }

    /// Handles every event that has no handler of its own (a catch-all, like Socket.IO's
    /// `onAny` for what nothing else takes). The handler is an async function of
    /// [extractors](crate::FromEvent) like any other: [`EventName`](crate::EventName) gives
    /// the event's name, `Value` or [`Args`](crate::Args) its data; its return value becomes
    /// the ack.
    ///
    /// Events with a handler of their own do not reach it. The namespace's guards and rate
    /// limit apply to it as to any handler (a guard sees the client's event name), after the
    /// checks on reserved and too long names. Without it, an unknown event gets an `error`
    /// event (`unknown event: …`). In logs and metrics its calls are named `*`.
    ///
    /// ```
    /// use serde_json::{json, Value};
    /// use tower_realtime::{EventName, Hub};
    ///
    /// let hub = Hub::builder()
    ///     .on("ping", || async { "pong" })
    ///     .on_any(|EventName(event): EventName, data: Value| async move {
    ///         json!({ "unhandled": event, "data": data })
    ///     })
    ///     .build();
    /// # drop(hub);
    /// ```
    pub fn on_any<H: Handler<Args>, Args: 'static>(mut self, handler: H) -> Self {
        self.gateway.set_any(handler);
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

    /// Re-authorises a recovered session's rooms ([`History`]): when a client comes back with
    /// its session, `guard` is asked, for each room the session was in, whether the socket may
    /// be back in it. A room it refuses (`false`) is not restored, and its missed events are
    /// not replayed; the client is told the rooms it got back. Without a guard, every room is
    /// restored: a user removed from a room while offline (in the app's own records) would
    /// get it back, with the events sent there meanwhile.
    ///
    /// It runs on the node where the client comes back (in a cluster, any node), while the
    /// connection's live history events wait for its replay: keep it quick.
    ///
    /// ```
    /// use std::{collections::HashSet, sync::{Arc, Mutex}};
    /// use tower_realtime::{History, Hub, Socket};
    /// let members: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    /// let hub = Hub::builder()
    ///     .history(History::new().rooms("team:*"))
    ///     .guard_rejoin(move |socket: Socket, room: String| {
    ///         let user = socket.user_id().unwrap_or_default().to_owned();
    ///         let allowed = members.lock().unwrap().contains(&(user, room));
    ///         async move { allowed }
    ///     })
    ///     .build();
    /// # drop(hub);
    /// ```
    pub fn guard_rejoin<F, Fut>(mut self, guard: F) -> Self
    where
        F: Fn(Socket, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.gateway.set_rejoin_guard(guard);
        self
    }
}

/// Builds a [`Hub`]: authentication, handlers, hooks, limits, state.
///
/// The handler, guard and hook methods configure the default namespace (`/`); use
/// [`namespace`](Self::namespace) for others.
#[must_use]
#[derive(Default)]
pub struct HubBuilder {
    config: Config,
    default: NamespaceBuilder,
    namespaces: Vec<(String, NamespaceBuilder)>,
    dynamic: Vec<(Matcher, NamespaceBuilder)>,
    on_presence: Option<crate::hub::PresenceHook>,
    auth: Option<Arc<dyn Authenticator>>,
    origins: OriginPolicy,
    client_address: AddressSource,
    state: Extensions,
    #[cfg(feature = "socketio")]
    socketio: Option<crate::socketio::SocketIoConfig>,
    history: Option<History>,
    #[cfg(feature = "cluster")]
    cluster: Option<(
        crate::hub::cluster::Cluster,
        tokio::sync::mpsc::Receiver<crate::adapter::Inbound>,
    )>,
    on_refused: Option<crate::hub::RefusedHook>,
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Starts building a hub.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
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

    /// Handles the event `event` in the default namespace (like NestJS's `@SubscribeMessage`).
    /// The handler is an async function of [extractors](crate::FromEvent); its return value
    /// becomes the ack.
    pub fn on<H: Handler<Args>, Args: 'static>(mut self, event: &str, handler: H) -> Self {
        self.default = self.default.on(event, handler);
        self
    }

    /// Handles a declared event in the default namespace. See [`NamespaceBuilder::on_event`].
    #[cfg(feature = "typed")]
    pub fn on_event<E: ClientEvent, H: EventHandler<E, Args>, Args: 'static>(mut self, handler: H) -> Self {
        self.default = self.default.on_event(handler);
        self
    }

    /// Declares an event the server sends in the default namespace. See
    /// [`NamespaceBuilder::emits`].
    #[cfg(feature = "typed")]
    pub fn emits<E: ServerEvent>(mut self) -> Self {
        self.default = self.default.emits::<E>();
        self
    }

    /// Handles every event of the default namespace without a handler of its own. See
    /// [`NamespaceBuilder::on_any`].
    pub fn on_any<H: Handler<Args>, Args: 'static>(mut self, handler: H) -> Self {
        self.default = self.default.on_any(handler);
        self
    }

    /// Handles `event` behind a guard of its own. See [`NamespaceBuilder::on_guarded`].
    pub fn on_guarded<H: Handler<Args>, Args: 'static>(mut self, event: &str, guard: impl Guard, handler: H) -> Self {
        self.default = self.default.on_guarded(event, guard, handler);
        self
    }

    /// A group of handlers sharing guards. See [`NamespaceBuilder::group`].
    pub fn group(mut self, f: impl FnOnce(NamespaceBuilder) -> NamespaceBuilder) -> Self {
        self.default = self.default.group(f);
        self
    }

    /// Takes every message of the default namespace raw. See [`NamespaceBuilder::on_raw`].
    pub fn on_raw<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Socket, RawMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.default = self.default.on_raw(handler);
        self
    }

    /// A guard in front of every handler of the default namespace.
    pub fn guard(mut self, guard: impl Guard) -> Self {
        self.default = self.default.guard(guard);
        self
    }

    /// A guard on arriving connections of the default namespace. See
    /// [`NamespaceBuilder::guard_connect`].
    pub fn guard_connect(mut self, guard: impl ConnectGuard) -> Self {
        self.default = self.default.guard_connect(guard);
        self
    }

    /// A rate limit on every connection of the default namespace. See
    /// [`NamespaceBuilder::rate_limit`].
    pub fn rate_limit(mut self, rate: RateLimit) -> Self {
        self.default = self.default.rate_limit(rate);
        self
    }

    /// A rate limit on one event of the default namespace. See
    /// [`NamespaceBuilder::rate_limit_event`].
    pub fn rate_limit_event(mut self, event: &str, rate: RateLimit) -> Self {
        self.default = self.default.rate_limit_event(event, rate);
        self
    }

    /// Runs when a connection to the default namespace arrives. See
    /// [`NamespaceBuilder::on_connect`].
    pub fn on_connect<F, Fut, R>(mut self, hook: F) -> Self
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoConnectResult,
    {
        self.default = self.default.on_connect(hook);
        self
    }

    /// Runs when a connection to the default namespace ends. See
    /// [`NamespaceBuilder::on_disconnect`].
    pub fn on_disconnect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Socket, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.default = self.default.on_disconnect(hook);
        self
    }

    /// Re-authorises the rooms of sessions recovered in the default namespace. See
    /// [`NamespaceBuilder::guard_rejoin`].
    pub fn guard_rejoin<F, Fut>(mut self, guard: F) -> Self
    where
        F: Fn(Socket, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.default = self.default.guard_rejoin(guard);
        self
    }

    /// Adds the namespace `name` (e.g. `"/chat"`), configured by `f`. With the native
    /// protocol it is served at the layer's path followed by the name (`/ws/chat`). The name
    /// `"/"` configures the default namespace.
    pub fn namespace(mut self, name: &str, f: impl FnOnce(NamespaceBuilder) -> NamespaceBuilder) -> Self {
        let name = if name.starts_with('/') {
            name.to_owned()
        } else {
            format!("/{name}")
        };
        if name == "/" {
            // The default namespace, configured like any other.
            self.default = f(self.default);
        } else {
            self.namespaces.push((name, f(NamespaceBuilder::default())));
        }
        self
    }

    /// Adds the namespaces whose names match `template`, each configured by `f`: a
    /// template is text with `{name}` parameters, each matching a non-empty run of characters
    /// without `/` (`"/tenant-{id}"` takes `/tenant-7`, not `/tenant-` nor `/tenant-7/x`).
    ///
    /// The first connection to a matching name makes that namespace, with its own
    /// connections, rooms and users; later connections to the name join it; it is removed
    /// when its last connection has left. Every namespace of one pattern shares the
    /// pattern's handlers, guards, hooks and rate limits (one table, not a copy per
    /// namespace). A handler sees the concrete name in [`Socket::namespace`] and the
    /// parameters in [`Socket::namespace_param`].
    ///
    /// Fixed namespaces ([`namespace`](Self::namespace)) win over patterns, and patterns are
    /// tried in the order they were added. At most
    /// [`Config::max_dynamic_namespaces`] exist at a time (names up to 256 bytes, without
    /// `,` nor control characters); past it, a connection to a new one is refused as one to
    /// an unknown namespace. [`Hub::of`] finds one while it exists.
    ///
    /// ```
    /// use tower_realtime::{AllowAnonymous, Hub, Socket};
    ///
    /// let hub = Hub::builder()
    ///     .auth(AllowAnonymous::new())
    ///     .dynamic_namespace("/tenant-{id}", |ns| {
    ///         ns.on("whoami", |socket: Socket| async move {
    ///             // `/tenant-7` answers "7".
    ///             socket.namespace_param("id").unwrap_or_default().to_owned()
    ///         })
    ///     })
    ///     .build();
    /// assert!(hub.of("/tenant-7").is_none(), "made by its first connection");
    /// ```
    ///
    /// # Panics
    ///
    /// When `template` does not start with `/`, has no parameter, an empty or unclosed one,
    /// or two parameters with nothing between them.
    pub fn dynamic_namespace(self, template: &str, f: impl FnOnce(NamespaceBuilder) -> NamespaceBuilder) -> Self {
        let matcher = Matcher::template(template).unwrap_or_else(|e| panic!("dynamic_namespace: {e}"));
        self.pattern(matcher, f)
    }

    /// Adds the namespaces whose names `accepts` takes (it gets the name with its leading
    /// `/`), each configured by `f`, as [`dynamic_namespace`](Self::dynamic_namespace) does for
    /// a template (such namespaces have no parameters).
    ///
    /// ```
    /// use tower_realtime::Hub;
    ///
    /// let hub = Hub::builder()
    ///     .dynamic_namespace_with(
    ///         |name: &str| name.strip_prefix("/room-").is_some_and(|n| n.parse::<u32>().is_ok()),
    ///         |ns| ns.on("ping", || async { "pong" }),
    ///     )
    ///     .build();
    /// # drop(hub);
    /// ```
    pub fn dynamic_namespace_with<P>(self, accepts: P, f: impl FnOnce(NamespaceBuilder) -> NamespaceBuilder) -> Self
    where
        P: Fn(&str) -> bool + Send + Sync + 'static,
    {
        self.pattern(Matcher::Predicate(Arc::new(accepts)), f)
    }

    fn pattern(mut self, matcher: Matcher, f: impl FnOnce(NamespaceBuilder) -> NamespaceBuilder) -> Self {
        self.dynamic.push((matcher, f(NamespaceBuilder::default())));
        self
    }

    /// Runs when a user comes online (first connection, in any namespace) or goes offline
    /// (last connection closed): once per user, not once per tab.
    pub fn on_presence<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Hub, Presence) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_presence = Some(Arc::new(move |h, p| Box::pin(hook(h, p))));
        self
    }

    /// Also serves Socket.IO v5 clients (feature `socketio`), at
    /// [`SocketIoConfig::path`](crate::socketio::SocketIoConfig::path) (default `/socket.io/`)
    /// of the hub's layer: the same namespaces, handlers, rooms, guards and authentication.
    #[cfg(feature = "socketio")]
    pub fn socketio(mut self, config: crate::socketio::SocketIoConfig) -> Self {
        self.socketio = Some(config);
        self
    }

    /// Joins a cluster (feature `redis`): emits, presence, `disconnect_user` and remote room
    /// changes become cluster-wide, and the `cluster_*` queries ask every node. Give it what
    /// the engine's `connect` returned
    /// ([`RedisAdapter::connect`](crate::adapter::RedisAdapter::connect)); `build` must then
    /// run inside a tokio runtime.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), tower_realtime::adapter::RedisAdapterError> {
    /// use tower_realtime::{adapter::{RedisAdapter, RedisOptions}, Hub};
    /// let (adapter, inbound) = RedisAdapter::connect("redis://127.0.0.1:6379", RedisOptions::default()).await?;
    /// let hub = Hub::builder().cluster(adapter, inbound).build();
    /// # drop(hub); Ok(()) }
    /// ```
    #[cfg(feature = "cluster")]
    pub fn cluster(
        mut self,
        adapter: impl crate::adapter::Adapter,
        inbound: tokio::sync::mpsc::Receiver<crate::adapter::Inbound>,
    ) -> Self {
        self.cluster = Some((crate::hub::cluster::Cluster::new(adapter), inbound));
        self
    }

    /// Joins a cluster through Redis: the same as [`cluster`](Self::cluster), which takes any
    /// engine.
    #[cfg(feature = "redis")]
    #[deprecated(note = "use `.cluster(adapter, inbound)`, which takes any engine")]
    pub fn redis(
        self,
        adapter: crate::adapter::RedisAdapter,
        inbound: tokio::sync::mpsc::Receiver<crate::adapter::Inbound>,
    ) -> Self {
        self.cluster(adapter, inbound)
    }

    /// Keeps a bounded history of the events emitted to rooms, users or everyone, so that a
    /// client that drops and comes back gets what it missed, in order, once (see [`History`]
    /// for what is kept and for how long, and the protocol page for the exchange). Off by
    /// default. In a cluster (feature `redis`, with `.cluster(..)`), the history is the
    /// cluster's, kept in Redis, and a client recovers on any node.
    pub fn history(mut self, history: History) -> Self {
        self.history = Some(history);
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

    /// Turns on permessage-deflate (RFC 7692) for the clients that offer it, native and
    /// Socket.IO over WebSocket alike ([`Config::compression`]; off by default):
    ///
    /// ```
    /// use tower_realtime::{Compression, Hub};
    ///
    /// let mut compression = Compression::default();
    /// compression.threshold = 1024;
    /// compression.level = 3;
    /// let hub = Hub::builder().compression(compression).build();
    /// ```
    pub fn compression(mut self, compression: Compression) -> Self {
        self.config.compression = Some(compression);
        self
    }

    /// Names the error event native clients get ([`Config::error_event`], default `"error"`)
    /// and chooses its body ([`Config::error_style`]). For NestJS `@nestjs/platform-ws`
    /// clients, which listen for `exception` with `{"status":"error","message":…}`:
    ///
    /// ```
    /// use tower_realtime::{ErrorStyle, Hub};
    ///
    /// let hub = Hub::builder().error_event("exception", ErrorStyle::NestJs).build();
    /// # drop(hub);
    /// ```
    pub fn error_event(mut self, name: impl Into<String>, style: ErrorStyle) -> Self {
        self.config.error_event = name.into();
        self.config.error_style = style;
        self
    }

    /// Also accepts handshakes whose `Origin` is exactly `origin` (e.g. `"https://app.example.com"`).
    /// Requests without `Origin`, and those whose origin is the request's own host, are
    /// accepted too.
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.origins.allow(origin.into());
        self
    }

    /// Accepts handshakes from any origin. Explicit, because browsers send cookies cross-site.
    pub fn allow_any_origin(mut self) -> Self {
        self.origins = OriginPolicy::Any;
        self
    }

    /// Takes the client address, for the per-address limits
    /// ([`Config::max_connections_per_address`], [`Config::connect_rate_per_address`]), from
    /// the header `name` (e.g. `"x-forwarded-for"`, `"x-real-ip"`): the last address in its
    /// last occurrence, which is the one the proxy in front of the server added.
    ///
    /// **Only a trusted proxy may set it.** Use this only when every request comes through
    /// a proxy you run that sets (or appends to) this header; otherwise a client writes the
    /// header itself, takes any address it likes, and escapes the limits (or exhausts
    /// another client's). Behind several proxies, or with `Forwarded`, use
    /// [`client_address`](Self::client_address).
    ///
    /// By default the address is the TCP peer address, where the server puts it in the
    /// request's extensions as a [`SocketAddr`](std::net::SocketAddr) ([`Hub::serve`] does);
    /// without a known address the per-address limits do not apply.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid header name.
    pub fn client_address_from_header(mut self, name: &str) -> Self {
        let name = http::HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        self.client_address = AddressSource::header(name);
        self
    }

    /// Takes the client address, for the per-address limits, from `f` (`None`: unknown, the
    /// per-address limits do not apply). With axum's `into_make_service_with_connect_info`:
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::extract::ConnectInfo;
    /// use tower_realtime::{AllowAnonymous, Hub};
    ///
    /// let hub = Hub::builder()
    ///     .auth(AllowAnonymous::new())
    ///     .client_address(|parts: &http::request::Parts| {
    ///         parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())
    ///     })
    ///     .build();
    /// # drop(hub);
    /// ```
    ///
    /// An address read from a header is only as good as the proxy that sets it: see
    /// [`client_address_from_header`](Self::client_address_from_header).
    pub fn client_address<F>(mut self, f: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<std::net::IpAddr> + Send + Sync + 'static,
    {
        self.client_address = AddressSource::Custom(Arc::new(f));
        self
    }

    /// Registers app state, for the [`State`](crate::State) extractor and [`Hub::state`].
    pub fn state<S: Clone + Send + Sync + 'static>(mut self, state: S) -> Self {
        self.state.insert(state);
        self
    }

    /// Runs `hook` for every refused connection, with why, what the client was told, and what
    /// is known of the client (never its token): a bad request, a refused origin, a failed
    /// authentication, a limit, a connect guard or the connect hook, a hub shutting down; for
    /// every transport. See [`Refused`](crate::Refused) for an example that logs them.
    ///
    /// The hook runs inline, where the refusal is made (in the handshake, or in the
    /// connection's task): it must be cheap and must not block. Hand anything slow to a task
    /// or a channel.
    pub fn on_refused<F>(mut self, hook: F) -> Self
    where
        F: Fn(&crate::Refused<'_>) + Send + Sync + 'static,
    {
        self.on_refused = Some(Arc::new(hook));
        self
    }

    /// Builds the hub.
    pub fn build(self) -> Hub {
        let default_ns = Arc::new(NsInner::new("/", Arc::new(self.default.gateway)));
        let mut namespaces = HashMap::new();
        namespaces.insert(default_ns.name.clone(), default_ns.clone());
        for (name, builder) in self.namespaces {
            let ns = Arc::new(NsInner::new(&name, Arc::new(builder.gateway)));
            namespaces.insert(ns.name.clone(), ns);
        }
        let patterns = (self.dynamic.into_iter())
            .map(|(matcher, builder)| Pattern {
                matcher,
                routes: Arc::new(builder.gateway),
            })
            .collect();
        let dynamic = Dynamic::new(patterns, self.config.max_dynamic_namespaces);
        let addresses = crate::address::Addresses::new(self.client_address, self.config.connect_rate_per_address);
        let connect_rate = (self.config.connect_rate_per_user).map(|r| governor::RateLimiter::hashmap(r.quota()));
        #[cfg(feature = "cluster")]
        let (cluster, inbound) = match self.cluster {
            Some((cluster, inbound)) => (Some(cluster), Some(inbound)),
            None => (None, None),
        };
        // In a cluster, the history is the cluster's, in Redis.
        #[cfg(feature = "cluster")]
        let shared_history = cluster.is_some();
        #[cfg(not(feature = "cluster"))]
        let shared_history = false;
        #[cfg_attr(not(feature = "socketio"), allow(unused_mut))]
        let mut parts = Extensions::default();
        #[cfg(feature = "socketio")]
        if let Some(config) = self.socketio {
            parts.insert(crate::socketio::SocketIoState::new(config));
        }
        let hub = Hub {
            inner: Arc::new(HubInner {
                config: self.config,
                namespaces,
                dynamic,
                default_ns,
                slots: Slots::default(),
                on_presence: self.on_presence,
                connect_rate,
                connect_checks: AtomicU64::new(0),
                addresses,
                auth: self.auth,
                origins: self.origins,
                counters: Counters::default(),
                state: self.state,
                parts,
                next_id: AtomicU64::new(node_tag() << 40),
                next_ack: AtomicU64::new(0),
                shutting_down: AtomicBool::new(false),
                #[cfg(feature = "cluster")]
                cluster,
                history: self.history.map(|h| HistoryState::new(h, shared_history)),
                shutdown_notify: tokio::sync::Notify::new(),
                expiry: Default::default(),
                on_refused: self.on_refused,
            }),
        };
        #[cfg(feature = "cluster")]
        if let Some(inbound) = inbound {
            crate::hub::cluster::Cluster::start(&hub, inbound);
        }
        hub
    }
}
