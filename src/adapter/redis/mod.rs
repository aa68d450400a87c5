//! [`RedisAdapter`]: the cluster layer on Redis pub/sub, a sorted set of live nodes and
//! presence hashes kept atomic by Lua scripts.
//!
//! This file holds the handle and its public methods; the rest is split by role:
//! `options` (settings, node id, errors), `shared` also holds the messages for the hub and query replies,
//! `keys` (key and channel names), `conn` (the connections, and how new ones are made for
//! those that stay unusable), `shared` (the state the handle and the tasks share),
//! `presence` (this node's users), the three background tasks `publisher`, `subscriber` and
//! `heartbeat`, and `warn` (outage warnings).

use std::{
    collections::HashMap,
    fmt,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use self::{
    conn::timed,
    conn::Connector,
    heartbeat::heartbeat,
    keys::Keys,
    options::random_node_id,
    presence::shard_of,
    publisher::publisher,
    shared::{Outgoing, Shared},
    subscriber::subscriber,
};
use super::{
    common,
    engine::Inbound,
    history::{self as neutral, HistoryParams, Missed},
    wire::{self, Op, Query},
    AdapterStats, ClusterAnswer,
};

mod conn;
mod heartbeat;
mod history;
mod keys;
mod options;
mod presence;
mod publisher;
mod scripts;
mod shared;
mod subscriber;

pub use options::{RedisAdapterError, RedisOptions};

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
        let keys = Keys::new(&options.prefix, &node, false);
        Self::start(Connector::single(url)?, node, keys, options).await
    }

    /// Connects to a Redis Cluster through any of `seeds` (`redis://host:port`, each a node of
    /// the cluster; the others are found from it), subscribes, and registers this node: the
    /// contract of [`connect`](Self::connect). Needs Redis 7 (sharded pub/sub).
    ///
    /// Ops travel on sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`), spread over the shards: each
    /// node publishes its ops for every node on one of 16 broadcast channels (chosen by its id;
    /// every node listens to all of them), and ops for one node on that node's channel. The
    /// keys of liveness and presence share one slot, and so do the history's (see
    /// `docs/cluster.md`, "Redis Cluster"). Redirections (`MOVED`, `ASK`) while slots move, and
    /// reconnecting to a shard that restarted, are the client library's; a connection that
    /// stays unusable anyway, or a subscription that no longer delivers, is replaced.
    ///
    /// ```no_run
    /// use tower_realtime::adapter::{RedisAdapter, RedisOptions};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let seeds = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"];
    /// let (adapter, inbound) = RedisAdapter::connect_cluster(seeds, RedisOptions::default()).await?;
    /// # drop((adapter, inbound));
    /// # Ok(()) }
    /// ```
    pub async fn connect_cluster<S: AsRef<str>>(
        seeds: impl IntoIterator<Item = S>,
        options: RedisOptions,
    ) -> Result<(RedisAdapter, mpsc::Receiver<Inbound>), RedisAdapterError> {
        options.check()?;
        let seeds: Vec<String> = seeds.into_iter().map(|s| s.as_ref().to_owned()).collect();
        if seeds.is_empty() {
            return Err(RedisAdapterError::Options(
                "no Redis Cluster node to start from".to_owned(),
            ));
        }
        let node = options.node_id.clone().unwrap_or_else(random_node_id);
        let keys = Keys::new(&options.prefix, &node, true);
        Self::start(Connector::cluster(&seeds)?, node, keys, options).await
    }

    /// Connects, subscribes, registers the node (clearing what an earlier run with the same
    /// node id left behind) and starts the publisher, the subscriber and the heartbeat.
    async fn start(
        connector: Connector,
        node: String,
        keys: Keys,
        options: RedisOptions,
    ) -> Result<(RedisAdapter, mpsc::Receiver<Inbound>), RedisAdapterError> {
        let conn = connector.connect(&options).await?;
        // Subscribed before registering: once other nodes see this one, it hears them.
        let subscription = connector.subscribe(&keys, options.command_timeout).await?;
        let (out_tx, out_rx) = mpsc::channel(options.publish_queue);
        let (in_tx, in_rx) = mpsc::channel(options.inbound_queue);
        let shared = Arc::new(Shared::new(node, keys, connector, conn, out_tx, in_tx, options));
        shared.sync().await?;
        let (stop, _) = watch::channel(false);
        tokio::spawn(publisher(shared.clone(), out_rx, stop.subscribe()));
        tokio::spawn(heartbeat(shared.clone(), stop.subscribe()));
        tokio::spawn(subscriber(shared.clone(), subscription, stop.subscribe()));
        let adapter = RedisAdapter {
            inner: Arc::new(Inner { shared, stop }),
        };
        Ok((adapter, in_rx))
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
        shared.enqueue(shared.keys.node_channel(node), op)
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
            let channel = &shared.keys.history;
            let signer = shared.signer.as_ref();
            // The append's own id: this node's, and a number no other append of it has.
            static APPENDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let id = format!("{}:{}", shared.node, APPENDS.fetch_add(1, Ordering::Relaxed));
            history::append_cmd(
                scripts,
                &shared.history_keys,
                params,
                channel,
                shared.keys.cluster(),
                op,
                &encoded,
                streams,
                signer,
                &id,
            )
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

    /// Takes a kept session, once, for its owner: `user` (none for an anonymous connection)
    /// in namespace `ns`, with the user's revocations (room, or empty for every session → the
    /// offset as of which). `None` when there is none (it expired, was taken already, or never
    /// existed) or it is someone else's, which is then left in place (one script compares and
    /// deletes: see `docs/cluster.md`).
    pub(crate) async fn take_session(
        &self,
        id: &str,
        user: Option<&str>,
        ns: &str,
    ) -> Result<Option<(String, HashMap<String, u64>)>, RedisAdapterError> {
        if !neutral::plausible_session(id) {
            return Ok(None);
        }
        let shared = self.shared();
        let invocation = history::take_invocation(&shared.history_scripts, &shared.history_keys, id, user, ns);
        shared.invoke(&invocation).await
    }

    /// Takes `user` out of `room` (empty: out of every session kept so far) in the sessions
    /// kept for them, as of the last offset given out, for `ttl`. Never waits: queued for the
    /// publisher. Returns `false` when it could not be queued.
    pub(crate) fn revoke(&self, user: &str, room: &str, ttl: Duration) -> bool {
        let shared = self.shared();
        if shared.closed.load(Ordering::Relaxed) || !shared.link_up.load(Ordering::Relaxed) {
            return false;
        }
        let cmd = history::revoke_cmd(&shared.history_keys, user, room, ttl);
        shared.out.try_send(Outgoing::Command(cmd)).is_ok()
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
            Err(_) => common::local_users(&shared.presence, shared.other_cached_nodes()).await,
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
        let asker = common::Asker {
            node: &shared.node,
            pending: &shared.pending,
            next_query: &shared.next_query,
            live_nodes: shared.live_nodes(),
            cached_nodes: || shared.other_cached_nodes(),
            send: |op: &Op| shared.enqueue(shared.keys.all.clone(), op),
        };
        common::request(asker, query, timeout.unwrap_or(shared.options.query_timeout)).await
    }

    /// Counters, and whether Redis is reachable now.
    pub fn stats(&self) -> AdapterStats {
        let s = self.shared();
        let reconnects = s.reconnects.load(Ordering::Relaxed);
        (s.stats).snapshot(
            reconnects,
            s.link_up.load(Ordering::Relaxed),
            s.subscribed.load(Ordering::Relaxed),
        )
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

super::engine::engine_from_inherent_methods!(RedisAdapter);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::conformance::{self, Node};
    use futures_util::future::BoxFuture;
    use redis::{cluster::ClusterClient, Client};

    fn test_options(cluster: String) -> RedisOptions {
        RedisOptions {
            prefix: cluster,
            heartbeat: Duration::from_millis(200),
            node_timeout: Duration::from_millis(800),
            query_timeout: Duration::from_millis(1000),
            command_timeout: Duration::from_millis(500),
            ..RedisOptions::default()
        }
    }

    /// The primaries of the test cluster (`REALTIME_TEST_REDIS_CLUSTER`: their URLs, comma
    /// separated; `tests/redis-cluster.sh start` makes one), or none: then says so.
    fn cluster_seeds(what: &str) -> Option<Vec<String>> {
        match std::env::var("REALTIME_TEST_REDIS_CLUSTER") {
            Ok(urls) if !urls.is_empty() => Some(urls.split(',').map(str::to_owned).collect()),
            _ => {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "{what} did not run: run tests/redis-cluster.sh start, and set \
                     REALTIME_TEST_REDIS_CLUSTER=redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103"
                );
                None
            }
        }
    }

    /// Makes nodes on the Redis Cluster reached through `seeds`.
    fn cluster_maker(seeds: Vec<String>) -> impl Fn(String) -> BoxFuture<'static, Node> + Send + Sync {
        move |cluster: String| -> BoxFuture<'static, Node> {
            let seeds = seeds.clone();
            Box::pin(async move {
                let (adapter, inbound) = RedisAdapter::connect_cluster(&seeds, test_options(cluster))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("the Redis Cluster at {seeds:?} (REALTIME_TEST_REDIS_CLUSTER) could not be reached: {e}")
                    });
                Node {
                    engine: Arc::new(adapter),
                    inbound,
                }
            })
        }
    }

    /// The suite of `adapter/conformance.rs` against a Redis Cluster, each check on a prefix
    /// of its own.
    #[tokio::test]
    async fn the_redis_cluster_engine_passes_the_conformance_suite() {
        let Some(seeds) = cluster_seeds("the Redis Cluster engine's conformance suite") else {
            return;
        };
        conformance::run(&cluster_maker(seeds)).await;
    }

    /// An `ACL` command to one node of the test cluster.
    async fn acl(url: &str, args: &[&str]) -> redis::RedisResult<()> {
        let client = Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("ACL").arg(args).exec_async(&mut conn).await
    }

    /// The suite again, as a Redis user whose ACL allows only the key and channel patterns of
    /// `docs/cluster.md` (`~{P}:*`, `~{P:h}:*`, `&{P:*`, here with `P` = `conformance-*`):
    /// every key and channel the engine touches, in its scripts too, is within them.
    #[tokio::test]
    async fn on_a_redis_cluster_the_engine_needs_only_its_key_and_channel_patterns() {
        let Some(seeds) = cluster_seeds("the Redis Cluster ACL test") else {
            return;
        };
        // One name for every run: a run that failed half way leaves it to the next, which
        // resets it.
        let (user, password) = ("trt-acl-test".to_owned(), "trt-acl-secret");
        let rules = [
            "reset",
            "on",
            ">trt-acl-secret",
            "~{conformance-*}:*",
            "~{conformance-*:h}:*",
            "&{conformance-*:*",
            "+@all",
        ];
        for url in &seeds {
            let args: Vec<&str> = ["SETUSER", user.as_str()].into_iter().chain(rules).collect();
            acl(url, &args)
                .await
                .unwrap_or_else(|e| panic!("ACL SETUSER on {url} (REALTIME_TEST_REDIS_CLUSTER): {e}"));
        }
        let limited: Vec<String> = (seeds.iter())
            .map(|url| url.replacen("redis://", &format!("redis://{user}:{password}@"), 1))
            .collect();
        // The patterns bite: a key outside them is refused to this user.
        let client = ClusterClient::new(limited.clone()).unwrap();
        let mut conn = client.get_async_connection().await.unwrap();
        let refused = redis::cmd("SET").arg("elsewhere").arg(1).exec_async(&mut conn).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().to_lowercase().contains("noperm")),
            "{refused:?}"
        );
        conformance::run(&cluster_maker(limited)).await;
        for url in &seeds {
            let _ = acl(url, &["DELUSER", &user]).await;
        }
    }

    /// The suite of `adapter/conformance.rs` against Redis (`REALTIME_TEST_REDIS`), each check
    /// on a prefix of its own.
    #[tokio::test]
    async fn the_redis_engine_passes_the_conformance_suite() {
        let url = match std::env::var("REALTIME_TEST_REDIS") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                // Straight to stderr, past the test harness's capture: visible in a plain run.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "the Redis engine's conformance suite did not run: set REALTIME_TEST_REDIS=redis://127.0.0.1:6379"
                );
                return;
            }
        };
        let make = move |cluster: String| -> BoxFuture<'static, Node> {
            let url = url.clone();
            Box::pin(async move {
                let (adapter, inbound) = RedisAdapter::connect(&url, test_options(cluster))
                    .await
                    .unwrap_or_else(|e| panic!("Redis at {url} (REALTIME_TEST_REDIS) could not be reached: {e}"));
                Node {
                    engine: Arc::new(adapter),
                    inbound,
                }
            })
        };
        conformance::run(&make).await;
    }
}
