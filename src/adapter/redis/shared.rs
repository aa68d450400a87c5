//! What the adapter handle and its background tasks share ([`Shared`]), and its operations:
//! queueing ops for the publisher, delivering messages to the hub, running scripts, and
//! tracking whether Redis is reachable.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use dashmap::DashMap;
use parking_lot::Mutex;
use redis::{
    cluster_routing::{Route, SlotAddr},
    Cmd, FromRedisValue, Script,
};
use serde_json::Value;
use tokio::{
    sync::{mpsc, Notify},
    time::Instant,
};

use super::{
    conn::{timed, Conn, Connector},
    history::{HistoryKeys, HistoryScripts},
    keys::Keys,
    options::{RedisAdapterError, RedisOptions},
    scripts::Scripts,
};
use crate::adapter::{
    common::{Counters, Warn},
    engine::{Inbound, Replies},
    wire::{self, Op, Signer},
};

/// Receives the number of history events evicted by each append.
pub(super) type EvictionHook = Box<dyn Fn(u64) + Send + Sync>;

/// Where the replies to one query go: (answering node, answer or error).
pub(super) type ReplyTx = mpsc::Sender<(String, Result<Value, String>)>;

/// What the adapter and its tasks share.
pub(super) struct Shared {
    pub(super) node: String,
    pub(super) options: RedisOptions,
    pub(super) keys: Keys,
    /// Makes new connections, for those that stay unusable.
    pub(super) connector: Connector,
    /// The command connection (replaced when it stays broken).
    pub(super) conn: Mutex<Conn>,
    pub(super) out: mpsc::Sender<Outgoing>,
    pub(super) inbound: mpsc::Sender<Inbound>,
    /// Queries waiting for replies: id → where the replies go.
    pub(super) pending: DashMap<u64, ReplyTx>,
    pub(super) next_query: AtomicU64,
    pub(super) stats: Counters,
    /// Times the subscription was made again.
    pub(super) reconnects: AtomicU64,
    /// The last command to Redis succeeded.
    pub(super) link_up: AtomicBool,
    /// When a command last succeeded, in ms since `born`.
    last_up: AtomicU64,
    born: Instant,
    /// The subscription is in place.
    pub(super) subscribed: AtomicBool,
    /// [`RedisAdapter::shutdown`](super::RedisAdapter::shutdown) was called: nothing is sent
    /// any more.
    pub(super) closed: AtomicBool,
    /// The presence in Redis may differ from `presence`: publish it all again.
    pub(super) needs_sync: AtomicBool,
    pub(super) wake_heartbeat: Notify,
    /// This node's users and their live connection counts: the truth Redis is synced from.
    pub(super) presence: Vec<tokio::sync::Mutex<HashMap<String, u32>>>,
    /// Live nodes as of the last successful read.
    pub(super) live_cache: Mutex<Vec<String>>,
    /// Nodes a script last found dead: their presence hashes go in the next scripts' keys.
    pub(super) dead_hint: Mutex<Vec<String>>,
    pub(super) scripts: Scripts,
    pub(super) history_scripts: HistoryScripts,
    pub(super) history_keys: HistoryKeys,
    pub(super) on_evicted: std::sync::OnceLock<EvictionHook>,
    pub(super) warn_link: Warn,
    pub(super) warn_queue: Warn,
    pub(super) warn_inbound: Warn,
    pub(super) warn_malformed: Warn,
    pub(super) warn_unauthenticated: Warn,
    /// Signs what this node sends and checks what it receives, with a signing key.
    pub(super) signer: Option<Signer>,
}

impl Shared {
    /// The state of a node that has just connected: the link up and the subscription in place,
    /// no users, no pending queries.
    pub(super) fn new(
        node: String,
        keys: Keys,
        connector: Connector,
        conn: Conn,
        out: mpsc::Sender<Outgoing>,
        inbound: mpsc::Sender<Inbound>,
        options: RedisOptions,
    ) -> Self {
        Self {
            node,
            keys,
            connector,
            conn: Mutex::new(conn),
            out,
            inbound,
            pending: DashMap::new(),
            next_query: AtomicU64::new(1),
            stats: Counters::default(),
            reconnects: AtomicU64::new(0),
            link_up: AtomicBool::new(true),
            last_up: AtomicU64::new(0),
            born: Instant::now(),
            subscribed: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            needs_sync: AtomicBool::new(false),
            wake_heartbeat: Notify::new(),
            presence: (0..PRESENCE_SHARDS)
                .map(|_| tokio::sync::Mutex::new(HashMap::new()))
                .collect(),
            live_cache: Mutex::new(Vec::new()),
            dead_hint: Mutex::new(Vec::new()),
            scripts: Scripts::new(),
            history_scripts: HistoryScripts::new(),
            history_keys: HistoryKeys::new(&options.prefix),
            on_evicted: std::sync::OnceLock::new(),
            warn_link: Warn::new("redis"),
            warn_queue: Warn::new("redis"),
            warn_inbound: Warn::new("redis"),
            warn_malformed: Warn::new("redis"),
            warn_unauthenticated: Warn::new("redis"),
            signer: options.signing_key.as_ref().and_then(|k| Signer::new(k.as_bytes())),
            options,
        }
    }

    pub(super) fn conn(&self) -> Conn {
        self.conn.lock().clone()
    }

    /// How ops are published: `SPUBLISH` on a Redis Cluster (sharded pub/sub), else `PUBLISH`.
    pub(super) fn publish_command(&self) -> &'static str {
        if self.keys.cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// The slot an outgoing op or command goes to, on a Redis Cluster (none on one Redis: one
    /// pipeline takes everything). Appends and commands are all the history's (sessions,
    /// revocations), in its slot.
    pub(super) fn route_of(&self, out: &Outgoing) -> Option<Route> {
        if !self.keys.cluster() {
            return None;
        }
        Some(match out {
            Outgoing::Publish { channel, .. } => Route::with_key(channel.as_bytes(), SlotAddr::Master),
            Outgoing::Append(_) | Outgoing::Command(_) => Route::with_key(self.history_keys.meta(), SlotAddr::Master),
        })
    }

    pub(super) fn other_cached_nodes(&self) -> Vec<String> {
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

    pub(super) fn lose(&self, n: u64, warn: &Warn, what: &str, error: &dyn fmt::Display) {
        self.stats.lose(n, warn, &self.node, what, error);
    }

    pub(super) fn enqueue(&self, channel: Arc<str>, op: &Op) -> bool {
        if !self.can_send() {
            return false;
        }
        let encoded = match &self.signer {
            Some(signer) => signer.encode(&self.node, op),
            None => wire::encode(&self.node, op),
        };
        let payload = match encoded {
            Ok(p) => p,
            Err(e) => {
                self.lose(1, &self.warn_queue, "op could not be encoded: lost", &e);
                return false;
            }
        };
        self.queue(Outgoing::Publish { channel, payload })
    }

    /// Whether anything can be queued for Redis now (when not, the op is counted as lost).
    pub(super) fn can_send(&self) -> bool {
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

    pub(super) fn queue(&self, out: Outgoing) -> bool {
        self.stats.queue(&self.out, out, &self.warn_queue, &self.node)
    }

    pub(super) fn reply(&self, to: &str, id: u64, answer: Value, error: Option<String>) -> bool {
        self.enqueue(self.keys.node_channel(to), &Op::Reply { id, answer, error })
    }

    /// A command to Redis succeeded.
    pub(super) fn up(&self) {
        self.last_up
            .fetch_max(self.since_born(Instant::now()), Ordering::Relaxed);
        if !self.link_up.swap(true, Ordering::Relaxed) {
            tracing::debug!(node = %self.node, "redis adapter: redis answers again");
        }
    }

    /// A command to Redis, sent at `sent`, failed. Unless another succeeded since: a command
    /// held while the link was away (a Redis Cluster client holds it, and retries it, for a
    /// while) may fail after the link is back, and then says nothing of the link.
    pub(super) fn down(&self, sent: Instant, error: &RedisAdapterError) {
        if self.last_up.load(Ordering::Relaxed) > self.since_born(sent) {
            tracing::debug!(node = %self.node, %error, "redis adapter: a command failed, but a later one succeeded");
            return;
        }
        if self.link_up.swap(false, Ordering::Relaxed) {
            tracing::debug!(node = %self.node, %error, "redis adapter: redis does not answer");
        }
        self.warn_link.warn(&self.node, "redis unreachable", error);
    }

    fn since_born(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.born).as_millis()).unwrap_or(u64::MAX)
    }

    /// Hands presence changes to the hub.
    pub(super) fn report(&self, online: Vec<String>, offline: Vec<String>) {
        if online.is_empty() && offline.is_empty() {
            return;
        }
        self.deliver(Inbound::PresenceChanged { online, offline });
    }

    pub(super) fn deliver(&self, message: Inbound) {
        self.stats
            .hand_over(&self.inbound, message, &self.warn_inbound, &self.node);
    }

    /// Runs a script with the common keys and arguments, then `extra` arguments. The presence
    /// hashes of the nodes last found dead go in `KEYS` too; when the script finds a dead node
    /// whose hash it was not given, it answers `{"reap", ids}` without changing anything, and
    /// runs again with their hashes.
    pub(super) async fn run<T: FromRedisValue>(&self, script: &Script, extra: &[&str]) -> Result<T, RedisAdapterError> {
        for _ in 0..REAP_ROUNDS {
            let dead = self.dead_hint.lock().clone();
            let mut invocation = script.prepare_invoke();
            invocation
                .key(&self.keys.nodes)
                .key(&self.keys.presence)
                .key(&self.keys.own_presence);
            for id in &dead {
                invocation.key(format!("{}{id}", self.keys.presence_prefix));
            }
            invocation
                .arg(&self.keys.presence_prefix)
                .arg(self.options.node_timeout.as_millis() as u64)
                .arg(&self.node)
                .arg(self.retention_ms());
            for arg in extra {
                invocation.arg(*arg);
            }
            let value: redis::Value = self.invoke(&invocation).await?;
            match to_reap(&value) {
                Some(ids) => *self.dead_hint.lock() = ids,
                None => {
                    if !dead.is_empty() {
                        self.dead_hint.lock().retain(|id| !dead.contains(id));
                    }
                    return T::from_redis_value(value).map_err(|e| RedisAdapterError::Redis(e.into()));
                }
            }
        }
        Err(RedisAdapterError::Redis(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "dead nodes could not be reaped",
        ))))
    }

    /// Runs a prepared script within the command timeout, noting what the result says about
    /// the link.
    pub(super) async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisAdapterError> {
        let mut conn = self.conn();
        let sent = Instant::now();
        let result = timed(self.options.command_timeout, invocation.invoke_async(&mut conn)).await;
        self.track(sent, result)
    }

    /// Notes what the result of a command sent at `sent` says about the link.
    pub(super) fn track<T>(&self, sent: Instant, result: Result<T, RedisAdapterError>) -> Result<T, RedisAdapterError> {
        match &result {
            Ok(_) => self.up(),
            Err(RedisAdapterError::Redis(e))
                if !(e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()) =>
            {
                // Redis answered, with an error: the link is fine. (A cluster connection that
                // has no connection to the shard concerned fails with an error of its own,
                // `ClusterConnectionNotFound`, that the link is not: Redis did not answer.)
                self.up();
                self.warn_malformed.warn(&self.node, "script failed", e);
            }
            Err(e) => self.down(sent, e),
        }
        result
    }

    /// How long the keys outlive the last heartbeat of every node.
    fn retention_ms(&self) -> u64 {
        (self.options.node_timeout.as_millis() as u64)
            .saturating_mul(10)
            .max(60_000)
    }

    pub(super) async fn live_nodes(&self) -> Result<Vec<String>, RedisAdapterError> {
        let (mut nodes, offline) = self.run::<(Vec<String>, Vec<String>)>(&self.scripts.live, &[]).await?;
        self.report(Vec::new(), offline);
        nodes.sort_unstable();
        *self.live_cache.lock() = nodes.clone();
        Ok(nodes)
    }
}

/// Times a script is run at most when it keeps finding dead nodes it was not given.
const REAP_ROUNDS: usize = 3;

/// The dead node ids of a script's `{"reap", ids}` answer.
fn to_reap(value: &redis::Value) -> Option<Vec<String>> {
    let redis::Value::Array(items) = value else { return None };
    let [redis::Value::BulkString(marker), redis::Value::Array(ids)] = &items[..] else {
        return None;
    };
    if marker != b"reap" {
        return None;
    }
    ids.iter()
        .map(|id| match id {
            redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        })
        .collect()
}

/// A node's shared state that never talks to Redis (its command connection is lazy, and no test
/// uses it), with the publisher's end of its queue and the hub's receiver. Needs a Tokio runtime.
/// Presence is kept in this many independently locked parts (by user).
pub(super) const PRESENCE_SHARDS: usize = 16;

/// One op on its way to Redis.
pub(super) enum Outgoing {
    /// An op for the other nodes.
    Publish { channel: Arc<str>, payload: Vec<u8> },
    /// An emit kept in history: the append script, which publishes it.
    Append(Cmd),
    /// A command whose answer does not matter (a session kept for its client).
    Command(Cmd),
}

impl Replies for Shared {
    fn reply(&self, to: &str, id: u64, answer: Value, error: Option<String>) -> bool {
        Shared::reply(self, to, id, answer, error)
    }
}

#[cfg(test)]
pub(super) fn unconnected(
    node: &str,
    prefix: &str,
    inbound_queue: usize,
) -> (Arc<Shared>, mpsc::Receiver<Outgoing>, mpsc::Receiver<Inbound>) {
    unconnected_with(RedisOptions {
        prefix: prefix.to_owned(),
        node_id: Some(node.to_owned()),
        inbound_queue,
        ..RedisOptions::default()
    })
}

/// [`unconnected`], with these options (the node id and prefix set).
#[cfg(test)]
pub(super) fn unconnected_with(
    options: RedisOptions,
) -> (Arc<Shared>, mpsc::Receiver<Outgoing>, mpsc::Receiver<Inbound>) {
    let (prefix, node) = (options.prefix.clone(), options.node_id.clone().unwrap_or_default());
    let (prefix, node, inbound_queue) = (&*prefix, &*node, options.inbound_queue);
    let connector = Connector::single("redis://127.0.0.1:1/").unwrap();
    let conn = connector.reconnect(&options).unwrap();
    let (out_tx, out_rx) = mpsc::channel(options.publish_queue);
    let (in_tx, in_rx) = mpsc::channel(inbound_queue);
    let keys = Keys::new(prefix, node, false);
    let shared = Shared::new(node.to_owned(), keys, connector, conn, out_tx, in_tx, options);
    (Arc::new(shared), out_rx, in_rx)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::adapter::wire::Decoded;

    #[tokio::test]
    async fn ops_go_out_in_an_envelope_from_this_node_and_are_lost_when_they_cannot() {
        let (shared, mut out, _inbound) = unconnected("a", "p", 8);
        let op = Op::DisconnectUser { user: "u".into() };
        assert!(shared.enqueue(shared.keys.all.clone(), &op));
        let Ok(Outgoing::Publish { channel, payload }) = out.try_recv() else {
            panic!("a publish was expected");
        };
        assert_eq!(&*channel, "p#all");
        match wire::decode(&payload, "b").unwrap() {
            Decoded::Op {
                from,
                op: Op::DisconnectUser { user },
            } => assert_eq!((from.as_str(), user.as_str()), ("a", "u")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(wire::decode(&payload, "a").unwrap(), Decoded::Own));
        assert_eq!(shared.stats.lost.load(Ordering::Relaxed), 0);

        // Redis known to be away: lost at once, counted, nothing queued.
        shared.link_up.store(false, Ordering::Relaxed);
        assert!(!shared.enqueue(shared.keys.all.clone(), &op));
        assert_eq!(shared.stats.lost.load(Ordering::Relaxed), 1);
        // After shutdown, likewise.
        shared.link_up.store(true, Ordering::Relaxed);
        shared.closed.store(true, Ordering::Relaxed);
        assert!(!shared.enqueue(shared.keys.all.clone(), &op));
        assert_eq!(shared.stats.lost.load(Ordering::Relaxed), 2);
        assert!(out.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_command_that_fails_after_a_later_one_succeeded_leaves_the_link_up() {
        let (shared, _out, _inbound) = unconnected("a", "p", 8);
        let timeout = RedisAdapterError::Timeout(Duration::from_secs(1));
        // Sent while the link was away, failed once it was back.
        let sent = Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        shared.up();
        shared.down(sent, &timeout);
        assert!(shared.link_up.load(Ordering::Relaxed));
        // Sent after the last success: the link is down.
        shared.down(Instant::now(), &timeout);
        assert!(!shared.link_up.load(Ordering::Relaxed));
    }
}
