//! What every cluster engine does the same way, whatever its bus: rate-limited warnings
//! ([`Warn`]), node ids ([`random_node_id`], [`is_name`]) and gathering the answers to a query
//! ([`request`]), and sorting what comes off the bus ([`on_message`]).

use std::{
    collections::{HashMap, HashSet},
    fmt,
    future::Future,
    hash::{BuildHasher, Hash, Hasher},
    sync::atomic::{AtomicU64, Ordering},
    sync::Arc,
    time::{Duration, Instant},
};

use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    engine::{Inbound, QueryReply, Replies},
    wire::{self, Decoded, Op, Query, Signer},
    ClusterAnswer,
};

/// Longest node id (and, for engines that build names from it, longest prefix).
pub(crate) const MAX_NAME_LEN: usize = 64;

/// How often at most a kind of trouble is logged (what happens meanwhile is counted).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Where the replies to one query go: (answering node, answer or error).
pub(crate) type ReplyTx = mpsc::Sender<(String, Result<Value, String>)>;

/// Logs a kind of trouble at most once per [`WARN_EVERY`], with how many were not logged.
pub(crate) struct Warn {
    /// The engine named in the log line (`redis`, `nats`).
    engine: &'static str,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Warn {
    pub(crate) fn new(engine: &'static str) -> Self {
        Self {
            engine,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Logs `what` unless the last one was under [`WARN_EVERY`] ago; whether it was logged.
    pub(crate) fn warn(&self, node: &str, what: &str, error: &dyn fmt::Display) -> bool {
        let now = Instant::now();
        {
            let mut last = self.last.lock();
            if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            *last = Some(now);
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(node, %error, suppressed, "{} adapter: {what}", self.engine);
        true
    }
}

/// A random node id: 16 hex digits.
pub(crate) fn random_node_id() -> String {
    let n = getrandom::u64().unwrap_or_else(|_| {
        // No OS randomness: std's randomly keyed hasher over the time and process id.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        Instant::now().hash(&mut h);
        std::process::id().hash(&mut h);
        h.finish()
    });
    format!("{n:016x}")
}

/// Whether `s` is a usable node id: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `-` or `_`.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The part (of `shards`) of a node's presence table that holds `user`.
pub(crate) fn shard_of(user: &str, shards: usize) -> usize {
    let mut h = std::hash::DefaultHasher::new();
    user.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

/// Applies +1 (`delta > 0`) or -1 to `user`'s count of connections on this node, forgetting
/// the user at zero; the new count, or `None` when a user not counted goes down (nothing
/// changes).
pub(crate) fn local_count(shard: &mut HashMap<String, u32>, user: &str, delta: i32) -> Option<u32> {
    match (shard.get_mut(user), delta > 0) {
        (Some(n), true) => {
            *n = n.saturating_add(1);
            Some(*n)
        }
        (None, true) => {
            shard.insert(user.to_owned(), 1);
            Some(1)
        }
        (Some(n), false) => {
            *n = n.saturating_sub(1);
            let n = *n;
            if n == 0 {
                shard.remove(user);
            }
            Some(n)
        }
        (None, false) => None,
    }
}

/// Forgets a finished query, however its future ended.
struct PendingGuard<'a> {
    pending: &'a DashMap<u64, ReplyTx>,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.remove(&self.id);
    }
}

/// An engine's side of [`request`]: its node, its table of queries waiting for replies, and
/// how it reaches the other nodes.
pub(crate) struct Asker<'a, L, C, S> {
    pub(crate) node: &'a str,
    pub(crate) pending: &'a DashMap<u64, ReplyTx>,
    pub(crate) next_query: &'a AtomicU64,
    /// The live nodes (this one included), as the bus reports them now.
    pub(crate) live_nodes: L,
    /// The other nodes last known, when the bus cannot say.
    pub(crate) cached_nodes: C,
    /// Queues the query op for every node; whether it was queued.
    pub(crate) send: S,
}

/// Asks every other live node `query` and gathers their answers until all answered or
/// `timeout` passed. Partial when a node did not answer in time, answered with an error, or
/// could not be asked; those are the missing nodes, sorted.
pub(crate) async fn request<L, E, C, S>(
    asker: Asker<'_, L, C, S>,
    query: Query,
    timeout: Duration,
) -> ClusterAnswer<Vec<Value>>
where
    L: Future<Output = Result<Vec<String>, E>>,
    C: FnOnce() -> Vec<String>,
    S: FnOnce(&Op) -> bool,
{
    let Asker {
        node,
        pending,
        next_query,
        live_nodes,
        cached_nodes,
        send,
    } = asker;
    let deadline = tokio::time::Instant::now() + timeout;
    let (others, known) = match tokio::time::timeout(timeout, live_nodes).await {
        Ok(Ok(nodes)) => (nodes.into_iter().filter(|n| n != node).collect::<Vec<_>>(), true),
        _ => (cached_nodes(), false),
    };
    if known && others.is_empty() {
        return ClusterAnswer::complete(Vec::new());
    }
    let id = next_query.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(others.len().clamp(1, 1024) + 8);
    pending.insert(id, tx);
    let _pending = PendingGuard { pending, id };
    let op = Op::Query {
        id,
        reply_to: node.to_owned(),
        query,
    };
    if !known || !send(&op) {
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

/// A kind of trouble with what came off the bus, each warned about on its own.
pub(crate) enum Trouble {
    /// Unsigned or badly signed, under a signing key.
    Unauthenticated,
    /// Not a message of the wire format, or one not understood.
    Malformed,
}

/// What [`on_message`] needs of an engine's shared state.
pub(crate) trait Node: Replies + 'static {
    /// This node's id.
    fn node(&self) -> &str;
    /// The signing key's signer, when the bus is signed.
    fn signer(&self) -> Option<&Signer>;
    /// The queries of this node waiting for replies, by id.
    fn pending(&self) -> &DashMap<u64, ReplyTx>;
    /// What the engine counts.
    fn counters(&self) -> &Counters;
    /// Logs `what` (rate-limited per kind of trouble).
    fn warn(&self, trouble: Trouble, what: &str, error: &dyn fmt::Display);
    /// Hands a message to the hub.
    fn deliver(&self, message: Inbound);
    /// Whether history emits come with the other ops (else only from a history stream of
    /// the engine's own, and one on the bus is dropped as malformed).
    fn history_emits_on_the_bus(&self) -> bool;
}

/// Counts a malformed message and warns about it.
pub(crate) fn malformed(node: &impl Node, what: &str, error: &dyn fmt::Display) {
    node.counters().malformed.fetch_add(1, Ordering::Relaxed);
    node.warn(Trouble::Malformed, what, error);
}

/// The JSON inside `payload`: checked and taken out of its envelope under a signing key (or
/// counted and dropped), as it is without one.
pub(crate) fn open<'a>(node: &impl Node, payload: &'a [u8]) -> Option<&'a [u8]> {
    match node.signer() {
        Some(signer) => match signer.open(payload) {
            Ok(json) => Some(json),
            Err(e) => {
                node.counters().unauthenticated.fetch_add(1, Ordering::Relaxed);
                node.warn(Trouble::Unauthenticated, "message dropped", &e);
                None
            }
        },
        None => Some(payload),
    }
}

/// A message off the bus: its envelope checked, this node's own ops left out, replies handed
/// to their query, queries and ops to the hub; what is not understood counted and dropped
/// (an unknown query answered with an error).
pub(crate) fn on_message<N: Node>(node: &Arc<N>, payload: &[u8]) {
    let Some(payload) = open(&**node, payload) else {
        return;
    };
    match wire::decode(payload, node.node()) {
        Ok(Decoded::Own) => {}
        Ok(Decoded::Op { from, op }) => match op {
            Op::HistoryEmit { .. } if !node.history_emits_on_the_bus() => {
                malformed(&**node, "history emit outside the history stream: dropped", &from);
            }
            op => {
                node.counters().received.fetch_add(1, Ordering::Relaxed);
                match op {
                    Op::Reply { id, answer, error } => {
                        if let Some(tx) = node.pending().get(&id) {
                            let _ = tx.try_send((from, error.map_or(Ok(answer), Err)));
                        }
                    }
                    Op::Query { id, reply_to, query } => {
                        let reply = QueryReply::new(node.clone(), id, reply_to);
                        node.deliver(Inbound::Query { from, query, reply });
                    }
                    op => node.deliver(Inbound::Op { from, op }),
                }
            }
        },
        Ok(Decoded::UnknownQuery { from, id, reply_to }) => {
            malformed(&**node, "query not understood: answered with an error", &from);
            node.reply(&reply_to, id, Value::Null, Some("unknown query".to_owned()));
        }
        Err(e) => malformed(&**node, "message dropped", &e),
    }
}

/// What an engine counts (see [`AdapterStats`](super::AdapterStats)).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) unauthenticated: AtomicU64,
}

impl Counters {
    /// Counts `n` ops lost, and warns (at most once per interval).
    pub(crate) fn lose(&self, n: u64, warn: &Warn, node: &str, what: &str, error: &dyn fmt::Display) {
        self.lost.fetch_add(n, Ordering::Relaxed);
        warn.warn(node, what, error);
    }

    /// Queues `item` for the engine's publisher; when the queue is full it is lost (counted,
    /// warned of), when the publisher is gone too.
    pub(crate) fn queue<T>(&self, out: &mpsc::Sender<T>, item: T, warn: &Warn, node: &str) -> bool {
        match out.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lose(1, warn, node, "publish queue full: op lost", &"queue full");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Hands a message from the bus to the hub; when the hub's queue is full (or gone) it is
    /// dropped, counted and warned of.
    pub(crate) fn hand_over(&self, inbound: &mpsc::Sender<Inbound>, message: Inbound, warn: &Warn, node: &str) {
        if let Err(e) = inbound.try_send(message) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "inbound queue full: message dropped",
                mpsc::error::TrySendError::Closed(_) => "inbound receiver gone: message dropped",
            };
            warn.warn(node, why, &"the hub does not keep up");
        }
    }

    /// The counts now, with what the engine knows of its link.
    pub(crate) fn snapshot(&self, reconnects: u64, link_up: bool, subscribed: bool) -> super::AdapterStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        super::AdapterStats {
            published: load(&self.published),
            lost: load(&self.lost),
            received: load(&self.received),
            dropped: load(&self.dropped),
            malformed: load(&self.malformed),
            unauthenticated: load(&self.unauthenticated),
            reconnects,
            link_up,
            subscribed,
        }
    }
}

/// This node's own users (from its presence shards), sorted: what `online_users` answers,
/// partial, when the bus cannot be read.
pub(crate) async fn local_users(
    shards: &[tokio::sync::Mutex<HashMap<String, u32>>],
    missing_nodes: Vec<String>,
) -> ClusterAnswer<Vec<String>> {
    let mut users = Vec::new();
    for shard in shards {
        users.extend(shard.lock().await.keys().cloned());
    }
    users.sort_unstable();
    ClusterAnswer {
        value: users,
        partial: true,
        missing_nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_logged_at_most_once_per_period_and_the_rest_counted() {
        let warn = Warn::new("test");
        assert!(warn.warn("n", "bus unreachable", &"down"));
        assert_eq!(warn.suppressed.load(Ordering::Relaxed), 0);
        assert!(!warn.warn("n", "bus unreachable", &"down"));
        assert!(!warn.warn("n", "bus unreachable", &"down"));
        assert_eq!(warn.suppressed.load(Ordering::Relaxed), 2);
        // Once the period has passed, the next one is logged, and the count starts over.
        let Some(earlier) = Instant::now().checked_sub(WARN_EVERY) else {
            return; // the clock is too young to go back a period
        };
        *warn.last.lock() = Some(earlier);
        assert!(warn.warn("n", "bus unreachable", &"down"));
        assert_eq!(warn.suppressed.load(Ordering::Relaxed), 0);
        assert!(warn.last.lock().is_some_and(|t| t > earlier));
    }

    #[test]
    fn random_node_ids_are_16_hex_digits_and_names() {
        let (a, b) = (random_node_id(), random_node_id());
        for id in [&a, &b] {
            assert_eq!(id.len(), 16, "{id}");
            assert!(
                id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
                "{id}"
            );
            assert!(is_name(id), "{id}");
        }
        assert_ne!(a, b);
    }

    #[test]
    fn names_are_letters_digits_dashes_and_underscores_up_to_64() {
        for id in ["a", "node-1_B", &"x".repeat(MAX_NAME_LEN)] {
            assert!(is_name(id), "{id:?} refused");
        }
        for id in [
            "",
            &"x".repeat(MAX_NAME_LEN + 1),
            "a b",
            "a:b",
            "a.b",
            "a*",
            "a>",
            "é",
            "a\n",
        ] {
            assert!(!is_name(id), "{id:?} accepted");
        }
    }

    type TestAsker<'a> =
        Asker<'a, std::future::Ready<Result<Vec<String>, ()>>, fn() -> Vec<String>, Box<dyn FnOnce(&Op) -> bool + 'a>>;

    fn asker<'a>(
        pending: &'a DashMap<u64, ReplyTx>,
        next: &'a AtomicU64,
        live: Result<Vec<String>, ()>,
        sent: &'a Mutex<Option<Op>>,
    ) -> TestAsker<'a> {
        Asker {
            node: "me",
            pending,
            next_query: next,
            live_nodes: std::future::ready(live),
            cached_nodes: || vec!["z".to_owned(), "y".to_owned()],
            send: Box::new(move |op: &Op| {
                *sent.lock() = Some(op.clone());
                true
            }),
        }
    }

    #[test]
    fn local_counts_go_up_and_down_and_a_user_at_zero_is_forgotten() {
        let mut shard = HashMap::new();
        assert_eq!(local_count(&mut shard, "u", -1), None);
        assert_eq!(local_count(&mut shard, "u", 1), Some(1));
        assert_eq!(local_count(&mut shard, "u", 1), Some(2));
        assert_eq!(local_count(&mut shard, "u", -1), Some(1));
        assert_eq!(local_count(&mut shard, "u", -1), Some(0));
        assert!(shard.is_empty());
        let user = "someone".to_owned();
        assert_eq!(shard_of(&user, 16), shard_of("someone", 16));
        assert!((0..100).all(|i| shard_of(&format!("u{i}"), 16) < 16));
    }

    fn custom() -> Query {
        Query::Custom {
            name: "q".to_owned(),
            data: Value::Null,
        }
    }

    #[tokio::test]
    async fn answers_are_gathered_until_the_deadline_and_the_silent_or_failing_nodes_are_missing() {
        let (pending, next, sent) = (DashMap::new(), AtomicU64::new(7), Mutex::new(None));
        let live = Ok(vec!["me".to_owned(), "a".to_owned(), "b".to_owned(), "c".to_owned()]);
        let ask = request(
            asker(&pending, &next, live, &sent),
            custom(),
            Duration::from_millis(300),
        );
        let answer_ = async {
            while pending.is_empty() {
                tokio::task::yield_now().await;
            }
            let tx = pending.get(&7).expect("the query waits under its id").clone();
            tx.send(("a".to_owned(), Ok(Value::from(1)))).await.unwrap();
            tx.send(("a".to_owned(), Ok(Value::from(2)))).await.unwrap(); // a second answer is ignored
            tx.send(("b".to_owned(), Err("no".to_owned()))).await.unwrap();
        };
        let (answer, ()) = tokio::join!(ask, answer_);
        assert_eq!(answer.value, vec![Value::from(1)]);
        assert!(answer.partial);
        assert_eq!(answer.missing_nodes, vec!["b".to_owned(), "c".to_owned()]);
        assert!(pending.is_empty(), "a finished query is forgotten");
        assert!(matches!(sent.lock().as_ref(), Some(Op::Query { id: 7, reply_to, .. }) if reply_to == "me"));
    }

    #[tokio::test]
    async fn with_no_other_node_the_answer_is_complete_and_without_the_bus_every_cached_node_is_missing() {
        let (pending, next, sent) = (DashMap::new(), AtomicU64::new(1), Mutex::new(None));
        let alone = request(
            asker(&pending, &next, Ok(vec!["me".to_owned()]), &sent),
            custom(),
            Duration::from_millis(100),
        )
        .await;
        assert!(!alone.partial && alone.value.is_empty() && alone.missing_nodes.is_empty());
        assert!(sent.lock().is_none(), "nobody to ask");
        let down = request(
            asker(&pending, &next, Err(()), &sent),
            custom(),
            Duration::from_millis(100),
        )
        .await;
        assert!(down.partial);
        assert_eq!(down.missing_nodes, vec!["y".to_owned(), "z".to_owned()]);
        assert!(sent.lock().is_none(), "not sent without the list of nodes");
        assert!(pending.is_empty());
    }
}
