//! [`RedisAdapter`]: the cluster layer on Redis pub/sub, a sorted set of live nodes and
//! presence hashes kept atomic by Lua scripts.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    hash::{BuildHasher, Hash, Hasher},
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use dashmap::DashMap;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig, PubSub},
    Client, Cmd, FromRedisValue, Script,
};
use serde_json::Value;
use tokio::sync::{mpsc, watch, Notify};

use super::{
    history::{self, HistoryKeys, HistoryParams, HistoryScripts, Missed},
    scripts::Scripts,
    wire::{self, Decoded, Op, Query},
    AdapterStats, ClusterAnswer,
};

/// How often at most an outage is logged (the ops lost meanwhile are counted).
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Ops written to Redis in one pipeline at most.
const PUBLISH_BATCH: usize = 64;
/// Failed heartbeats in a row after which the command connection is replaced.
const REBUILD_AFTER: u32 = 3;
/// First pause before subscribing again; doubled on each failure up to the heartbeat interval.
const RESUBSCRIBE_MIN_DELAY: Duration = Duration::from_millis(100);
/// While Redis is unreachable, the heartbeat is retried at least this often.
const DOWN_PROBE: Duration = Duration::from_millis(500);
/// Presence is kept in this many independently locked parts (by user).
const PRESENCE_SHARDS: usize = 16;
/// Longest node id.
const MAX_NODE_ID_LEN: usize = 64;

/// Settings of a [`RedisAdapter`].
///
/// | setting | default |
/// |---|---|
/// | [`prefix`](Self::prefix) | `"tower-realtime"` |
/// | [`heartbeat`](Self::heartbeat) | 2 s |
/// | [`node_timeout`](Self::node_timeout) | 6 s |
/// | [`query_timeout`](Self::query_timeout) | 1 s |
/// | [`command_timeout`](Self::command_timeout) | 1 s |
/// | [`node_id`](Self::node_id) | random (16 hex digits) |
/// | [`publish_queue`](Self::publish_queue) | 4096 ops |
/// | [`inbound_queue`](Self::inbound_queue) | 4096 messages |
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Start of every channel and key name: nodes with the same prefix form one cluster.
    pub prefix: String,
    /// How often a node announces that it is alive.
    pub heartbeat: Duration,
    /// A node whose last heartbeat is older than this is dead. Must be longer than
    /// `heartbeat` (three heartbeats is a good value).
    pub node_timeout: Duration,
    /// How long [`RedisAdapter::request`] waits for answers when given no timeout.
    pub query_timeout: Duration,
    /// Longest wait for Redis: connecting, and every command.
    pub command_timeout: Duration,
    /// This node's id (letters, digits, `-` and `_`, at most 64); `None`: a random one.
    pub node_id: Option<String>,
    /// Ops waiting to be written to Redis; past it, [`RedisAdapter::publish`] counts them as
    /// lost.
    pub publish_queue: usize,
    /// Messages from other nodes waiting for the hub; past it they are dropped and counted.
    pub inbound_queue: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "tower-realtime".to_owned(),
            heartbeat: Duration::from_secs(2),
            node_timeout: Duration::from_secs(6),
            query_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            node_id: None,
            publish_queue: 4096,
            inbound_queue: 4096,
        }
    }
}

impl RedisOptions {
    fn check(&self) -> Result<(), RedisAdapterError> {
        let bad = |why: &str| Err(RedisAdapterError::Options(why.to_owned()));
        if self.prefix.is_empty() || self.prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("the prefix must be non-empty, without spaces");
        }
        if self.heartbeat.is_zero() || self.command_timeout.is_zero() || self.query_timeout.is_zero() {
            return bad("heartbeat, command_timeout and query_timeout must be above zero");
        }
        if self.node_timeout <= self.heartbeat {
            return bad("node_timeout must be longer than heartbeat");
        }
        if self.publish_queue == 0 || self.inbound_queue == 0 {
            return bad("publish_queue and inbound_queue must be above zero");
        }
        if let Some(id) = &self.node_id {
            let ok = !id.is_empty()
                && id.len() <= MAX_NODE_ID_LEN
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return bad("the node id must be 1 to 64 letters, digits, '-' or '_'");
            }
        }
        Ok(())
    }

    /// The longest a dead node stays in [`RedisAdapter::live_nodes`] (and its users in
    /// [`RedisAdapter::online_users`]), counted from its last heartbeat: `node_timeout`.
    pub fn liveness_bound(&self) -> Duration {
        self.node_timeout
    }

    /// The longest until a live node reports the users of a dead node as gone offline
    /// ([`Inbound::PresenceChanged`]), counted from the dead node's last heartbeat:
    /// `node_timeout + heartbeat` (plus one `command_timeout` when Redis is slow).
    pub fn presence_expiry_bound(&self) -> Duration {
        self.node_timeout + self.heartbeat
    }
}

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisAdapterError {
    /// The options are not usable.
    #[error("invalid Redis adapter options: {0}")]
    Options(String),
    /// Redis refused, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer within the command timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// This node is not in the cluster's view (its registration lapsed, or Redis lost its
    /// data). It registers again on its next heartbeat, publishing its presence anew.
    #[error("this node is not registered in the cluster; it registers again on its next heartbeat")]
    NotRegistered,
}

/// A message for the local hub, from the [`Receiver`](mpsc::Receiver) that
/// [`RedisAdapter::connect`] returns.
#[derive(Debug)]
#[non_exhaustive]
pub enum Inbound {
    /// An op published by another node (never one of this node's own, except a
    /// [`HistoryEmit`](Op::HistoryEmit): those are delivered by every node from what Redis
    /// publishes, the emitting node included).
    Op {
        /// The node that sent it.
        from: String,
        /// What to do.
        op: Op,
    },
    /// Another node asks about this node's connections: answer with
    /// [`QueryReply::send`]. A reply dropped unanswered tells the asker this node could not
    /// answer.
    Query {
        /// The asking node.
        from: String,
        /// The question.
        query: Query,
        /// Where the answer goes.
        reply: QueryReply,
    },
    /// Presence changes the adapter found by itself, not as the answer of
    /// [`user_connected`](RedisAdapter::user_connected) /
    /// [`user_disconnected`](RedisAdapter::user_disconnected): users of a dead node left with no
    /// connection anywhere (`offline`), and, after this node registered again, users it
    /// brought back online (`online`) or whose last connection ended while Redis was away
    /// (`offline`). Each change is reported by exactly one node of the cluster.
    PresenceChanged {
        /// Users who came online cluster-wide.
        online: Vec<String>,
        /// Users who went offline cluster-wide.
        offline: Vec<String>,
    },
}

/// The way back to a node that asked a [`Query`]: answer it once with [`send`](Self::send).
/// Dropped unanswered, it sends an error reply, so the asker stops waiting for this node.
pub struct QueryReply {
    shared: Arc<Shared>,
    id: u64,
    to: String,
    done: bool,
}

impl fmt::Debug for QueryReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryReply")
            .field("id", &self.id)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl QueryReply {
    /// The id of the query (unique per asking node).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The asking node.
    pub fn to(&self) -> &str {
        &self.to
    }

    /// Sends the answer. Returns whether it was handed to Redis (see
    /// [`RedisAdapter::publish`]).
    pub fn send(mut self, answer: Value) -> bool {
        self.done = true;
        self.shared.reply(&self.to, self.id, answer, None)
    }

    /// Tells the asker this node cannot answer.
    pub fn fail(mut self, reason: &str) -> bool {
        self.done = true;
        self.shared
            .reply(&self.to, self.id, Value::Null, Some(reason.to_owned()))
    }
}

impl Drop for QueryReply {
    fn drop(&mut self) {
        if !self.done {
            self.shared
                .reply(&self.to, self.id, Value::Null, Some("not answered".to_owned()));
        }
    }
}

/// A cluster layer on Redis: ops between nodes on pub/sub, node liveness by heartbeat, and
/// cluster-wide presence. `Clone` is one `Arc` bump; the background tasks stop when the last
/// clone is dropped (the node then leaves the cluster view after the node timeout), or at
/// [`shutdown`](Self::shutdown).
///
/// ```no_run
/// use tower_realtime::adapter::{Inbound, Op, RedisAdapter, RedisOptions, Target};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let (adapter, mut inbound) = RedisAdapter::connect("redis://127.0.0.1:6379", RedisOptions::default()).await?;
/// adapter.publish(&Op::emit("/", vec![Target::All], vec![], "notification", &"hello")?);
/// while let Some(message) = inbound.recv().await {
///     match message {
///         Inbound::Op { from, op } => println!("{from} says {}", op.kind()),
///         Inbound::Query { reply, .. } => drop(reply.send(serde_json::json!(0))),
///         Inbound::PresenceChanged { online, offline } => println!("{online:?} {offline:?}"),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisAdapter {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Dropped with the last clone: the background tasks see it and end.
    stop: watch::Sender<bool>,
}

impl fmt::Debug for RedisAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAdapter")
            .field("node", &self.inner.shared.node)
            .field("prefix", &self.inner.shared.options.prefix)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Key and channel names.
struct Keys {
    nodes: String,
    presence: String,
    presence_prefix: String,
    all: Arc<str>,
    own: String,
}

impl Keys {
    fn new(prefix: &str, node: &str) -> Self {
        Self {
            nodes: format!("{prefix}:nodes"),
            presence: format!("{prefix}:presence"),
            presence_prefix: format!("{prefix}:presence:"),
            all: Arc::from(format!("{prefix}#all")),
            own: format!("{prefix}#node#{node}"),
        }
    }

    fn node_channel(prefix: &str, node: &str) -> Arc<str> {
        Arc::from(format!("{prefix}#node#{node}"))
    }
}

/// One op on its way to Redis.
enum Outgoing {
    /// An op for the other nodes.
    Publish { channel: Arc<str>, payload: Vec<u8> },
    /// An emit kept in history: the append script, which publishes it.
    Append(Cmd),
    /// A command whose answer does not matter (a session kept for its client).
    Command(Cmd),
}

/// Receives the number of history events evicted by each append.
type EvictionHook = Box<dyn Fn(u64) + Send + Sync>;

#[derive(Default)]
struct Stats {
    published: AtomicU64,
    lost: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    malformed: AtomicU64,
    reconnects: AtomicU64,
}

/// Logs a kind of trouble at most once per [`WARN_EVERY`], with how many were not logged.
struct Warn {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Warn {
    fn new() -> Self {
        Self {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    fn warn(&self, node: &str, what: &str, error: &dyn fmt::Display) {
        let now = Instant::now();
        {
            let mut last = self.last.lock();
            if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            *last = Some(now);
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(node, %error, suppressed, "redis adapter: {what}");
    }
}

/// Where the replies to one query go: (answering node, answer or error).
type ReplyTx = mpsc::Sender<(String, Result<Value, String>)>;

/// What the adapter and its tasks share.
struct Shared {
    node: String,
    options: RedisOptions,
    keys: Keys,
    client: Client,
    /// The command connection (replaced when it stays broken).
    conn: Mutex<ConnectionManager>,
    out: mpsc::Sender<Outgoing>,
    inbound: mpsc::Sender<Inbound>,
    /// Queries waiting for replies: id → where the replies go.
    pending: DashMap<u64, ReplyTx>,
    next_query: AtomicU64,
    stats: Stats,
    /// The last command to Redis succeeded.
    link_up: AtomicBool,
    /// The subscription is in place.
    subscribed: AtomicBool,
    /// [`RedisAdapter::shutdown`] was called: nothing is sent any more.
    closed: AtomicBool,
    failures: AtomicU32,
    /// The presence in Redis may differ from `presence`: publish it all again.
    needs_sync: AtomicBool,
    wake_heartbeat: Notify,
    /// This node's users and their live connection counts: the truth Redis is synced from.
    presence: Vec<tokio::sync::Mutex<HashMap<String, u32>>>,
    /// Live nodes as of the last successful read.
    live_cache: Mutex<Vec<String>>,
    scripts: Scripts,
    history_scripts: HistoryScripts,
    history_keys: HistoryKeys,
    on_evicted: std::sync::OnceLock<EvictionHook>,
    warn_link: Warn,
    warn_queue: Warn,
    warn_inbound: Warn,
    warn_malformed: Warn,
}

fn manager_config(options: &RedisOptions) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.command_timeout))
        .set_response_timeout(Some(options.command_timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(options.command_timeout)
}

fn random_node_id() -> String {
    let n = getrandom::u64().unwrap_or_else(|_| {
        // No OS randomness: std's randomly keyed hasher over the time and process id.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        Instant::now().hash(&mut h);
        std::process::id().hash(&mut h);
        h.finish()
    });
    format!("{n:016x}")
}

fn shard_of(user: &str) -> usize {
    let mut h = std::hash::DefaultHasher::new();
    user.hash(&mut h);
    (h.finish() % PRESENCE_SHARDS as u64) as usize
}

async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisAdapterError> {
    match tokio::time::timeout(limit, f).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RedisAdapterError::Timeout(limit)),
    }
}

async fn subscribe(client: &Client, keys: &Keys, limit: Duration) -> Result<PubSub, RedisAdapterError> {
    timed(limit, async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&[&*keys.all, keys.own.as_str()]).await?;
        Ok(pubsub)
    })
    .await
}

impl RedisAdapter {
    /// Connects to Redis at `url` (`redis://host:port/db`), subscribes, and registers this
    /// node. Fails when Redis cannot be reached within the command timeout: it does not retry
    /// (the app decides whether to start without a cluster, retry, or stop). Once connected,
    /// it never fails again for an outage: it reconnects and subscribes again by itself.
    ///
    /// The receiver carries what the local hub must act on; read it in a loop. Needs a Tokio
    /// runtime (the adapter spawns three tasks).
    pub async fn connect(
        url: &str,
        options: RedisOptions,
    ) -> Result<(RedisAdapter, mpsc::Receiver<Inbound>), RedisAdapterError> {
        options.check()?;
        let node = options.node_id.clone().unwrap_or_else(random_node_id);
        let client = Client::open(url)?;
        let keys = Keys::new(&options.prefix, &node);
        let limit = options.command_timeout;
        let conn = timed(
            limit,
            ConnectionManager::new_with_config(client.clone(), manager_config(&options)),
        )
        .await?;
        // Subscribed before registering: once other nodes see this one, it hears them.
        let pubsub = subscribe(&client, &keys, limit).await?;

        let (out_tx, out_rx) = mpsc::channel(options.publish_queue);
        let (in_tx, in_rx) = mpsc::channel(options.inbound_queue);
        let shared = Arc::new(Shared {
            node,
            keys,
            client,
            conn: Mutex::new(conn),
            out: out_tx,
            inbound: in_tx,
            pending: DashMap::new(),
            next_query: AtomicU64::new(1),
            stats: Stats::default(),
            link_up: AtomicBool::new(true),
            subscribed: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            needs_sync: AtomicBool::new(false),
            wake_heartbeat: Notify::new(),
            presence: (0..PRESENCE_SHARDS)
                .map(|_| tokio::sync::Mutex::new(HashMap::new()))
                .collect(),
            live_cache: Mutex::new(Vec::new()),
            scripts: Scripts::new(),
            history_scripts: HistoryScripts::new(),
            history_keys: HistoryKeys::new(&options.prefix),
            on_evicted: std::sync::OnceLock::new(),
            warn_link: Warn::new(),
            warn_queue: Warn::new(),
            warn_inbound: Warn::new(),
            warn_malformed: Warn::new(),
            options,
        });
        // Registers, and clears what an earlier run with the same node id left behind.
        shared.sync().await?;

        let (stop, _) = watch::channel(false);
        tokio::spawn(publisher(shared.clone(), out_rx, stop.subscribe()));
        tokio::spawn(subscriber(shared.clone(), pubsub, stop.subscribe()));
        tokio::spawn(heartbeat(shared.clone(), stop.subscribe()));
        Ok((
            RedisAdapter {
                inner: Arc::new(Inner { shared, stop }),
            },
            in_rx,
        ))
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared().node
    }

    /// The options in use.
    pub fn options(&self) -> &RedisOptions {
        &self.shared().options
    }

    /// Sends an op to every other node. Never waits: the op is encoded and queued for a
    /// background task. Returns `false` when it is lost at once: Redis is known to be
    /// unreachable, or the queue is full. Ops that then fail to reach Redis are lost too. Every
    /// loss is counted ([`AdapterStats::lost`]): delivery is at most once.
    pub fn publish(&self, op: &Op) -> bool {
        let shared = self.shared();
        shared.enqueue(shared.keys.all.clone(), op)
    }

    /// Sends an op to one node only (same guarantees as [`publish`](Self::publish)).
    pub fn publish_to(&self, node: &str, op: &Op) -> bool {
        let shared = self.shared();
        shared.enqueue(Keys::node_channel(&shared.options.prefix, node), op)
    }

    /// Keeps an emit in the cluster's history and publishes it with its offset (one script:
    /// see `docs/cluster.md`). `op` is a [`HistoryEmit`](Op::HistoryEmit) whose epoch and
    /// offset the script fills in. Never waits: the script is queued for the publisher, after
    /// the ops published before it. Returns `false` when it is lost at once (Redis known to be
    /// unreachable, or the queue full), counted in [`AdapterStats::lost`].
    pub(crate) fn append_history(&self, op: &Op, streams: &[String], params: &HistoryParams) -> bool {
        let shared = self.shared();
        if !shared.can_send() {
            return false;
        }
        let encoded = wire::encode(&shared.node, op);
        let cmd = encoded.ok().and_then(|encoded| {
            let scripts = &shared.history_scripts;
            let channel = &*shared.keys.all;
            history::append_cmd(scripts, &shared.history_keys, params, channel, op, &encoded, streams)
        });
        match cmd {
            Some(cmd) => shared.queue(Outgoing::Append(cmd)),
            None => {
                shared.lose(
                    1,
                    &shared.warn_queue,
                    "history emit could not be encoded: lost",
                    &op.kind(),
                );
                false
            }
        }
    }

    /// Keeps a dropped connection's session (JSON) for `ttl`, for whichever node its client
    /// comes back to. Never waits: the write is queued for the publisher. Returns `false` when
    /// it could not be queued (Redis known to be unreachable, or the queue full).
    pub(crate) fn keep_session(&self, id: &str, session: &str, ttl: Duration) -> bool {
        let shared = self.shared();
        if shared.closed.load(Ordering::Relaxed) || !shared.link_up.load(Ordering::Relaxed) {
            return false;
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(shared.history_keys.session(id))
            .arg(session)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        shared.out.try_send(Outgoing::Command(cmd)).is_ok()
    }

    /// Takes a kept session, once (`GETDEL`): `None` when there is none (it expired, was
    /// taken already, or never existed).
    pub(crate) async fn take_session(&self, id: &str) -> Result<Option<String>, RedisAdapterError> {
        if !history::plausible_session(id) {
            return Ok(None);
        }
        let shared = self.shared();
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(shared.history_keys.session(id));
        let mut conn = shared.conn();
        let result = timed(shared.options.command_timeout, cmd.query_async(&mut conn)).await;
        shared.track(result)
    }

    /// The history's epoch and last offset (a new epoch is made when Redis has none).
    pub(crate) async fn history_epoch(&self, params: &HistoryParams) -> Result<(String, u64), RedisAdapterError> {
        let shared = self.shared();
        let invocation = history::epoch_invocation(&shared.history_scripts, &shared.history_keys, params);
        let value: redis::Value = shared.invoke(&invocation).await?;
        history::parse_epoch(&value).map_err(|_| malformed_reply())
    }

    /// The events of `streams` after their offsets, for a session of `epoch`, and the last
    /// offset given out, read at one instant.
    pub(crate) async fn read_history(
        &self,
        params: &HistoryParams,
        epoch: &str,
        streams: &[(String, u64)],
    ) -> Result<Missed, RedisAdapterError> {
        let shared = self.shared();
        let invocation =
            history::read_invocation(&shared.history_scripts, &shared.history_keys, params, epoch, streams);
        let value: redis::Value = shared.invoke(&invocation).await?;
        history::parse_missed(&value).map_err(|_| malformed_reply())
    }

    /// Gives the number of history events each append evicted to `hook` (set once).
    pub(crate) fn on_history_evicted(&self, hook: impl Fn(u64) + Send + Sync + 'static) {
        let _ = self.shared().on_evicted.set(Box::new(hook));
    }

    /// Counts a new live connection of `user` on this node. `Ok(true)`: the user came online
    /// cluster-wide (their first live connection on any live node); of nodes racing on the same
    /// user, exactly one gets `true`.
    ///
    /// On `Err` (Redis unreachable, or this node not registered) the connection is still
    /// counted locally; it is published when the node syncs again, and a user that this
    /// brings online is then reported as [`Inbound::PresenceChanged`].
    pub async fn user_connected(&self, user: &str) -> Result<bool, RedisAdapterError> {
        self.shared().presence_change(user, 1).await.map(|change| change == 1)
    }

    /// Counts the end of a live connection of `user` on this node. `Ok(true)`: the user went
    /// offline cluster-wide (no live connection left on any live node). An unknown user
    /// gives `Ok(false)` without asking Redis. `Err` as for
    /// [`user_connected`](Self::user_connected).
    pub async fn user_disconnected(&self, user: &str) -> Result<bool, RedisAdapterError> {
        self.shared().presence_change(user, -1).await.map(|change| change == -1)
    }

    /// Whether `user` has a live connection on this node (no Redis involved).
    pub async fn is_local_user(&self, user: &str) -> bool {
        self.shared().presence[shard_of(user)].lock().await.contains_key(user)
    }

    /// The users with a live connection on any live node, sorted. When Redis cannot be read,
    /// the answer is this node's own users, marked partial, with the other nodes last known
    /// alive as missing.
    pub async fn online_users(&self) -> ClusterAnswer<Vec<String>> {
        let shared = self.shared();
        match shared
            .run::<(Vec<String>, Vec<String>)>(&shared.scripts.online, &[])
            .await
        {
            Ok((mut users, offline)) => {
                shared.report(Vec::new(), offline);
                users.sort_unstable();
                users.dedup();
                ClusterAnswer::complete(users)
            }
            Err(_) => {
                let mut users = Vec::new();
                for shard in &shared.presence {
                    users.extend(shard.lock().await.keys().cloned());
                }
                users.sort_unstable();
                ClusterAnswer {
                    value: users,
                    partial: true,
                    missing_nodes: shared.other_cached_nodes(),
                }
            }
        }
    }

    /// The ids of the live nodes (this one included while registered), sorted. A node is live
    /// while its last heartbeat is at most [`RedisOptions::node_timeout`] old.
    pub async fn live_nodes(&self) -> Result<Vec<String>, RedisAdapterError> {
        self.shared().live_nodes().await
    }

    /// Asks every other live node `query` and gathers their answers, until all answered or
    /// `timeout` (default [`RedisOptions::query_timeout`]) passed. The answer is
    /// [partial](ClusterAnswer::partial) when a node did not answer in time, answered with an
    /// error, or could not be asked (Redis unreachable); those are the
    /// [`missing_nodes`](ClusterAnswer::missing_nodes). Answers come in no particular order;
    /// this node's own answer is not included.
    pub async fn request(&self, query: Query, timeout: Option<Duration>) -> ClusterAnswer<Vec<Value>> {
        let shared = self.shared();
        let timeout = timeout.unwrap_or(shared.options.query_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let (others, known) = match tokio::time::timeout(timeout, shared.live_nodes()).await {
            Ok(Ok(nodes)) => (
                nodes.into_iter().filter(|n| *n != shared.node).collect::<Vec<_>>(),
                true,
            ),
            _ => (shared.other_cached_nodes(), false),
        };
        if known && others.is_empty() {
            return ClusterAnswer::complete(Vec::new());
        }
        let id = shared.next_query.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(others.len().clamp(1, 1024) + 8);
        shared.pending.insert(id, tx);
        let _pending = PendingGuard { shared, id };
        let op = Op::Query {
            id,
            reply_to: shared.node.clone(),
            query,
        };
        if !known || !shared.enqueue(shared.keys.all.clone(), &op) {
            let mut missing = others;
            missing.sort_unstable();
            return ClusterAnswer {
                value: Vec::new(),
                partial: true,
                missing_nodes: missing,
            };
        }
        let mut waiting: HashSet<String> = others.into_iter().collect();
        let mut answered: HashSet<String> = HashSet::new();
        let mut failed: Vec<String> = Vec::new();
        let mut values = Vec::new();
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((from, answer))) => {
                    waiting.remove(&from);
                    if !answered.insert(from.clone()) {
                        continue; // one answer per node
                    }
                    match answer {
                        Ok(value) => values.push(value),
                        Err(_) => failed.push(from),
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut missing: Vec<String> = waiting.into_iter().chain(failed).collect();
        missing.sort_unstable();
        ClusterAnswer {
            value: values,
            partial: !missing.is_empty(),
            missing_nodes: missing,
        }
    }

    /// Counters, and whether Redis is reachable now.
    pub fn stats(&self) -> AdapterStats {
        let s = self.shared();
        AdapterStats {
            published: s.stats.published.load(Ordering::Relaxed),
            lost: s.stats.lost.load(Ordering::Relaxed),
            received: s.stats.received.load(Ordering::Relaxed),
            dropped: s.stats.dropped.load(Ordering::Relaxed),
            malformed: s.stats.malformed.load(Ordering::Relaxed),
            reconnects: s.stats.reconnects.load(Ordering::Relaxed),
            link_up: s.link_up.load(Ordering::Relaxed),
            subscribed: s.subscribed.load(Ordering::Relaxed),
        }
    }

    /// Leaves the cluster now: stops the background tasks (of every clone) and marks this
    /// node dead, so that the next heartbeat of another node reports its remaining users as
    /// gone offline. Ops published afterwards are lost; presence calls answer
    /// [`NotRegistered`](RedisAdapterError::NotRegistered).
    pub async fn shutdown(&self) -> Result<(), RedisAdapterError> {
        let shared = self.shared();
        shared.closed.store(true, Ordering::Relaxed);
        self.inner.stop.send_replace(true);
        let mut conn = shared.conn();
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(&shared.keys.nodes).arg("XX").arg(0).arg(&shared.node);
        timed(shared.options.command_timeout, cmd.exec_async(&mut conn)).await
    }
}

/// A reply of a history script that is not what the script returns.
fn malformed_reply() -> RedisAdapterError {
    RedisAdapterError::Redis(redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply of a history script",
    )))
}

/// Forgets a finished query, however its future ended.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.pending.remove(&self.id);
    }
}

impl Shared {
    fn conn(&self) -> ConnectionManager {
        self.conn.lock().clone()
    }

    fn other_cached_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .live_cache
            .lock()
            .iter()
            .filter(|n| **n != self.node)
            .cloned()
            .collect();
        nodes.sort_unstable();
        nodes
    }

    fn lose(&self, n: u64, warn: &Warn, what: &str, error: &dyn fmt::Display) {
        self.stats.lost.fetch_add(n, Ordering::Relaxed);
        warn.warn(&self.node, what, error);
    }

    fn enqueue(&self, channel: Arc<str>, op: &Op) -> bool {
        if !self.can_send() {
            return false;
        }
        let payload = match wire::encode(&self.node, op) {
            Ok(p) => p,
            Err(e) => {
                self.lose(1, &self.warn_queue, "op could not be encoded: lost", &e);
                return false;
            }
        };
        self.queue(Outgoing::Publish { channel, payload })
    }

    /// Whether anything can be queued for Redis now (when not, the op is counted as lost).
    fn can_send(&self) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if !self.link_up.load(Ordering::Relaxed) {
            self.lose(1, &self.warn_link, "redis unreachable: op lost", &"link down");
            return false;
        }
        true
    }

    fn queue(&self, out: Outgoing) -> bool {
        match self.out.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lose(1, &self.warn_queue, "publish queue full: op lost", &"queue full");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn reply(&self, to: &str, id: u64, answer: Value, error: Option<String>) -> bool {
        self.enqueue(
            Keys::node_channel(&self.options.prefix, to),
            &Op::Reply { id, answer, error },
        )
    }

    /// A command to Redis succeeded.
    fn up(&self) {
        self.link_up.store(true, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
    }

    /// A command to Redis failed.
    fn down(&self, error: &RedisAdapterError) {
        self.link_up.store(false, Ordering::Relaxed);
        self.warn_link.warn(&self.node, "redis unreachable", error);
    }

    /// Hands presence changes to the hub.
    fn report(&self, online: Vec<String>, offline: Vec<String>) {
        if online.is_empty() && offline.is_empty() {
            return;
        }
        self.deliver(Inbound::PresenceChanged { online, offline });
    }

    fn deliver(&self, message: Inbound) {
        if let Err(e) = self.inbound.try_send(message) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "inbound queue full: message dropped",
                mpsc::error::TrySendError::Closed(_) => "inbound receiver gone: message dropped",
            };
            self.warn_inbound.warn(&self.node, why, &"the hub does not keep up");
        }
    }

    /// Runs a script with the common keys and arguments, then `extra` arguments.
    async fn run<T: FromRedisValue>(&self, script: &Script, extra: &[&str]) -> Result<T, RedisAdapterError> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.keys.nodes)
            .key(&self.keys.presence)
            .arg(&self.keys.presence_prefix)
            .arg(self.options.node_timeout.as_millis() as u64)
            .arg(&self.node)
            .arg(self.retention_ms());
        for arg in extra {
            invocation.arg(*arg);
        }
        self.invoke(&invocation).await
    }

    /// Runs a prepared script within the command timeout, noting what the result says about
    /// the link.
    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisAdapterError> {
        let mut conn = self.conn();
        let result = timed(self.options.command_timeout, invocation.invoke_async(&mut conn)).await;
        self.track(result)
    }

    /// Notes what a command's result says about the link.
    fn track<T>(&self, result: Result<T, RedisAdapterError>) -> Result<T, RedisAdapterError> {
        match &result {
            Ok(_) => self.up(),
            Err(RedisAdapterError::Redis(e)) if !(e.is_io_error() || e.is_timeout() || e.is_connection_dropped()) => {
                // Redis answered, with an error: the link is fine.
                self.up();
                self.warn_malformed.warn(&self.node, "script failed", e);
            }
            Err(e) => self.down(e),
        }
        result
    }

    /// How long the keys outlive the last heartbeat of every node.
    fn retention_ms(&self) -> u64 {
        (self.options.node_timeout.as_millis() as u64)
            .saturating_mul(10)
            .max(60_000)
    }

    async fn live_nodes(&self) -> Result<Vec<String>, RedisAdapterError> {
        let (mut nodes, offline) = self.run::<(Vec<String>, Vec<String>)>(&self.scripts.live, &[]).await?;
        self.report(Vec::new(), offline);
        nodes.sort_unstable();
        *self.live_cache.lock() = nodes.clone();
        Ok(nodes)
    }

    /// Applies +1 / -1 to a user's local count and publishes the new count. Returns the
    /// cluster-wide change (1 online, -1 offline, 0 none).
    async fn presence_change(&self, user: &str, delta: i32) -> Result<i64, RedisAdapterError> {
        let mut shard = self.presence[shard_of(user)].lock().await;
        let count = match (shard.get_mut(user), delta > 0) {
            (Some(n), true) => {
                *n = n.saturating_add(1);
                *n
            }
            (None, true) => {
                shard.insert(user.to_owned(), 1);
                1
            }
            (Some(n), false) => {
                *n = n.saturating_sub(1);
                let n = *n;
                if n == 0 {
                    shard.remove(user);
                }
                n
            }
            (None, false) => return Ok(0),
        };
        // The shard stays locked until Redis has the new count: per user, counts reach Redis in
        // order, and a sync cannot interleave.
        let count = count.to_string();
        let result = self
            .run::<(i64, Vec<String>)>(&self.scripts.presence, &[user, &count])
            .await;
        drop(shard);
        match result {
            Ok((-2, offline)) => {
                self.report(Vec::new(), offline);
                self.needs_sync.store(true, Ordering::Relaxed);
                self.wake_heartbeat.notify_one();
                Err(RedisAdapterError::NotRegistered)
            }
            Ok((change, offline)) => {
                self.report(Vec::new(), offline);
                Ok(change)
            }
            Err(e) => {
                self.needs_sync.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Registers this node and replaces its presence in Redis with the local truth.
    async fn sync(&self) -> Result<(), RedisAdapterError> {
        let mut guards = Vec::with_capacity(self.presence.len());
        for shard in &self.presence {
            guards.push(shard.lock().await);
        }
        let pairs: Vec<String> = guards
            .iter()
            .flat_map(|g| g.iter().flat_map(|(user, n)| [user.clone(), n.to_string()]))
            .collect();
        let args: Vec<&str> = pairs.iter().map(String::as_str).collect();
        self.needs_sync.store(false, Ordering::Relaxed);
        let result = self.run::<(Vec<String>, Vec<String>)>(&self.scripts.sync, &args).await;
        drop(guards);
        match result {
            Ok((online, offline)) => {
                self.report(online, offline);
                Ok(())
            }
            Err(e) => {
                self.needs_sync.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// One heartbeat (and a sync when needed).
    async fn beat(&self) -> Result<(), RedisAdapterError> {
        let (added, offline, mut live) = self
            .run::<(i64, Vec<String>, Vec<String>)>(&self.scripts.heartbeat, &[])
            .await?;
        self.report(Vec::new(), offline);
        live.sort_unstable();
        *self.live_cache.lock() = live;
        if added == 1 || self.needs_sync.load(Ordering::Relaxed) {
            self.sync().await?;
        }
        Ok(())
    }

    /// A message from the subscription.
    fn on_message(self: &Arc<Self>, payload: &[u8]) {
        match wire::decode(payload, &self.node) {
            Ok(Decoded::Own) => {}
            Ok(Decoded::Op { from, op }) => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                match op {
                    Op::Reply { id, answer, error } => {
                        if let Some(tx) = self.pending.get(&id) {
                            let _ = tx.try_send((from, error.map_or(Ok(answer), Err)));
                        }
                    }
                    Op::Query { id, reply_to, query } => {
                        let reply = QueryReply {
                            shared: self.clone(),
                            id,
                            to: reply_to,
                            done: false,
                        };
                        self.deliver(Inbound::Query { from, query, reply });
                    }
                    op => self.deliver(Inbound::Op { from, op }),
                }
            }
            Ok(Decoded::UnknownQuery { from, id, reply_to }) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                self.warn_malformed
                    .warn(&self.node, "query not understood: answered with an error", &from);
                self.reply(&reply_to, id, Value::Null, Some("unknown query".to_owned()));
            }
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                self.warn_malformed.warn(&self.node, "message dropped", &e);
            }
        }
    }
}

/// Writes queued ops to Redis, in pipelines of up to [`PUBLISH_BATCH`].
async fn publisher(shared: Arc<Shared>, mut rx: mpsc::Receiver<Outgoing>, mut stop: watch::Receiver<bool>) {
    let mut batch: Vec<Outgoing> = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            first = rx.recv() => match first {
                Some(first) => batch.push(first),
                None => return,
            },
        }
        while batch.len() < PUBLISH_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if !shared.link_up.load(Ordering::Relaxed) {
            let n = batch.iter().filter(|o| !matches!(o, Outgoing::Command(_))).count() as u64;
            if n > 0 {
                shared.lose(n, &shared.warn_link, "redis unreachable: ops lost", &"link down");
            }
            batch.clear();
            continue;
        }
        let mut pipe = redis::pipe();
        // Every command's answer is looked at, an error in one not failing the others.
        pipe.ignore_errors();
        if batch.iter().any(|out| matches!(out, Outgoing::Append(_))) {
            // The append scripts run by their SHA1, in order with everything else: loaded in
            // the same pipeline, they never miss after a restart or a SCRIPT FLUSH.
            pipe.cmd("SCRIPT")
                .arg("LOAD")
                .arg(&shared.history_scripts.append_source)
                .ignore();
        }
        let mut kinds = Vec::with_capacity(batch.len());
        for out in batch.drain(..) {
            kinds.push(match out {
                Outgoing::Publish { channel, payload } => {
                    pipe.cmd("PUBLISH").arg(&*channel).arg(payload);
                    Kind::Op
                }
                Outgoing::Append(cmd) => {
                    pipe.add_command(cmd);
                    Kind::Append
                }
                Outgoing::Command(cmd) => {
                    pipe.add_command(cmd);
                    Kind::Command
                }
            });
        }
        let mut conn = shared.conn();
        match timed(
            shared.options.command_timeout,
            pipe.query_async::<Vec<redis::Value>>(&mut conn),
        )
        .await
        {
            Ok(answers) => {
                shared.up();
                shared.answered(&kinds, &answers);
            }
            Err(e) => {
                let ops = kinds.iter().filter(|k| !matches!(k, Kind::Command)).count();
                shared.stats.lost.fetch_add(ops as u64, Ordering::Relaxed);
                shared.down(&e);
            }
        }
    }
}

/// What a command of a publisher's pipeline was.
enum Kind {
    Op,
    Append,
    Command,
}

impl Shared {
    /// Counts what Redis answered to a pipeline of the publisher.
    fn answered(&self, kinds: &[Kind], answers: &[redis::Value]) {
        let (mut published, mut lost, mut evicted) = (0u64, 0u64, 0u64);
        for (kind, answer) in kinds.iter().zip(answers) {
            let failed = match answer {
                redis::Value::ServerError(e) => Some(e),
                _ => None,
            };
            match (kind, failed) {
                (Kind::Op, None) => published += 1,
                (Kind::Append, None) => {
                    published += 1;
                    if let redis::Value::Int(n) = answer {
                        evicted += u64::try_from(*n).unwrap_or(0);
                    }
                }
                (Kind::Command, None) => {}
                (Kind::Op | Kind::Append, Some(e)) => {
                    lost += 1;
                    self.warn_malformed
                        .warn(&self.node, "redis refused an op: lost", &format!("{e:?}"));
                }
                (Kind::Command, Some(e)) => {
                    self.warn_malformed
                        .warn(&self.node, "redis refused a command", &format!("{e:?}"));
                }
            }
        }
        // Answers missing altogether (none expected): their ops count as lost.
        lost += kinds
            .iter()
            .skip(answers.len())
            .filter(|k| !matches!(k, Kind::Command))
            .count() as u64;
        self.stats.published.fetch_add(published, Ordering::Relaxed);
        self.stats.lost.fetch_add(lost, Ordering::Relaxed);
        if evicted > 0 {
            if let Some(hook) = self.on_evicted.get() {
                hook(evicted);
            }
        }
    }
}

/// Reads the subscription; when it breaks (or stops answering pings), subscribes again, with
/// a growing pause between attempts.
async fn subscriber(shared: Arc<Shared>, first: PubSub, mut stop: watch::Receiver<bool>) {
    let mut next = Some(first);
    let mut delay = RESUBSCRIBE_MIN_DELAY;
    let limit = shared.options.command_timeout;
    loop {
        let pubsub = match next.take() {
            Some(p) => p,
            None => {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                match subscribe(&shared.client, &shared.keys, limit).await {
                    Ok(p) => {
                        shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(node = %shared.node, "redis adapter: subscribed again");
                        delay = RESUBSCRIBE_MIN_DELAY;
                        p
                    }
                    Err(e) => {
                        shared.warn_link.warn(&shared.node, "could not subscribe", &e);
                        delay = (delay * 2).min(shared.options.heartbeat);
                        continue;
                    }
                }
            }
        };
        shared.subscribed.store(true, Ordering::Relaxed);
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(shared.options.heartbeat);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let why = loop {
            tokio::select! {
                _ = stop.changed() => return,
                message = stream.next() => match message {
                    Some(message) => shared.on_message(message.get_payload_bytes()),
                    None => break "connection closed",
                },
                _ = ping.tick() => {
                    if timed(limit, sink.ping::<()>()).await.is_err() {
                        break "no answer to ping";
                    }
                }
            }
        };
        shared.subscribed.store(false, Ordering::Relaxed);
        shared.warn_link.warn(&shared.node, "subscription lost", &why);
    }
}

/// Heartbeats every interval (faster while Redis is away); replaces the command connection
/// when it keeps failing.
async fn heartbeat(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = if shared.link_up.load(Ordering::Relaxed) {
            shared.options.heartbeat
        } else {
            shared.options.heartbeat.min(DOWN_PROBE)
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = shared.wake_heartbeat.notified() => {}
        }
        if shared.beat().await.is_err() {
            let failures = shared.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if failures >= REBUILD_AFTER {
                shared.failures.store(0, Ordering::Relaxed);
                match ConnectionManager::new_lazy_with_config(shared.client.clone(), manager_config(&shared.options)) {
                    Ok(conn) => *shared.conn.lock() = conn,
                    Err(e) => shared
                        .warn_link
                        .warn(&shared.node, "could not make a new connection", &e),
                }
            }
        }
    }
}
