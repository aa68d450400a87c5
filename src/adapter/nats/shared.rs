//! The state a [`NatsAdapter`](super::NatsAdapter) and its background tasks share
//! ([`Shared`]): queueing ops for the publisher, classifying what arrives, delivering messages
//! to the hub, and tracking whether NATS is reachable.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, Notify, OnceCell};

use super::options::{Names, NatsAdapterError, NatsOptions};
use crate::adapter::{
    common::{self, Warn},
    engine::{Inbound, Replies},
    history::HistoryParams,
    wire::{self, Op, Signer},
};

/// Receives the number of history events evicted by each append.
pub(super) type EvictionHook = Box<dyn Fn(u64) + Send + Sync>;

pub(super) use crate::adapter::common::ReplyTx;

/// Presence is kept in this many independently locked parts (by user).
pub(super) const PRESENCE_SHARDS: usize = 16;

/// What the connection's events tell (set up before the connection, so held apart).
pub(super) struct Link {
    pub(super) node: String,
    pub(super) reconnects: AtomicU64,
    /// Connections made, the first included.
    pub(super) connections: AtomicU64,
    pub(super) warn: Warn,
}

impl Link {
    pub(super) fn new(node: String) -> Self {
        Self {
            node,
            reconnects: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            warn: Warn::new("nats"),
        }
    }

    /// One event of the connection.
    pub(super) fn on_event(&self, event: &async_nats::Event) {
        match event {
            // The first connection is an event too, handled after `connect` returned.
            async_nats::Event::Connected => {
                if self.connections.fetch_add(1, Ordering::Relaxed) > 0 {
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(node = %self.node, "nats adapter: connected again");
                }
            }
            async_nats::Event::Disconnected => {
                self.warn.warn(&self.node, "nats unreachable", &"disconnected");
            }
            other => {
                self.warn.warn(&self.node, "nats connection", other);
            }
        }
    }
}

/// One op on its way to NATS.
pub(super) enum Outgoing {
    /// An op for other nodes, on a core subject.
    Publish { subject: String, payload: Bytes },
    /// A history emit (epoch and offset left empty: JetStream gives them), for `streams`.
    Append {
        streams: Vec<String>,
        payload: Bytes,
        params: HistoryParams,
    },
    /// A dropped connection's session, kept for `ttl`.
    Session { id: String, json: Bytes, ttl: Duration },
    /// `user` taken out of `room` as of the last offset, remembered for `ttl`.
    Revoke { user: String, room: String, ttl: Duration },
}

/// What the adapter and its tasks share.
pub(super) struct Shared {
    pub(super) node: String,
    pub(super) options: NatsOptions,
    pub(super) names: Names,
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    /// Live nodes (entries expire `node_timeout` after their last heartbeat).
    pub(super) live: kv::Store,
    /// Registered nodes (no expiry): a registered node missing from `live` is dead.
    pub(super) nodes: kv::Store,
    /// Users online anywhere: user → connections per node.
    pub(super) presence: kv::Store,
    /// Made by the first node that keeps a session (their life is the bucket's).
    pub(super) sessions: OnceCell<kv::Store>,
    pub(super) revoked: OnceCell<kv::Store>,
    /// The history stream's epoch, once found or made.
    pub(super) history: tokio::sync::Mutex<Option<String>>,
    /// The history stream was just made here: the history reader looks for it now.
    pub(super) history_made: Notify,
    pub(super) out: mpsc::Sender<Outgoing>,
    pub(super) inbound: mpsc::Sender<Inbound>,
    /// Queries waiting for replies: id → where the replies go.
    pub(super) pending: DashMap<u64, ReplyTx>,
    pub(super) next_query: AtomicU64,
    pub(super) stats: common::Counters,
    pub(super) link: Arc<Link>,
    /// [`NatsAdapter::shutdown`](super::NatsAdapter::shutdown) was called: nothing is sent
    /// any more.
    pub(super) closed: AtomicBool,
    /// The presence in NATS may differ from `local`: publish it all again.
    pub(super) needs_sync: AtomicBool,
    pub(super) wake_heartbeat: Notify,
    /// This node's users and their live connection counts: the truth NATS is synced from.
    pub(super) local: Vec<tokio::sync::Mutex<HashMap<String, u32>>>,
    /// Live nodes as of the last successful read.
    pub(super) live_cache: Mutex<Vec<String>>,
    /// Delete markers of the presence bucket to remove: key → the marker's sequence.
    pub(super) markers: Mutex<HashMap<String, u64>>,
    pub(super) on_evicted: std::sync::OnceLock<EvictionHook>,
    pub(super) warn_link: Warn,
    pub(super) warn_queue: Warn,
    pub(super) warn_inbound: Warn,
    pub(super) warn_malformed: Warn,
    pub(super) warn_unauthenticated: Warn,
    /// Signs what this node sends and checks what it receives, with a signing key.
    pub(super) signer: Option<Signer>,
}

/// Runs `f` within `limit`.
pub(super) async fn timed<T, E: Into<async_nats::Error>>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, NatsAdapterError> {
    match tokio::time::timeout(limit, f).await {
        Ok(result) => result.map_err(NatsAdapterError::nats),
        Err(_) => Err(NatsAdapterError::Timeout(limit)),
    }
}

/// The parts of a [`Shared`] made while connecting.
pub(super) struct Parts {
    pub(super) node: String,
    pub(super) options: NatsOptions,
    pub(super) names: Names,
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) live: kv::Store,
    pub(super) nodes: kv::Store,
    pub(super) presence: kv::Store,
    pub(super) link: Arc<Link>,
}

impl Shared {
    pub(super) fn new(parts: Parts, out: mpsc::Sender<Outgoing>, inbound: mpsc::Sender<Inbound>) -> Self {
        let Parts {
            node,
            options,
            names,
            client,
            js,
            live,
            nodes,
            presence,
            link,
        } = parts;
        Self {
            node,
            names,
            client,
            js,
            live,
            nodes,
            presence,
            sessions: OnceCell::new(),
            revoked: OnceCell::new(),
            history: tokio::sync::Mutex::new(None),
            history_made: Notify::new(),
            out,
            inbound,
            pending: DashMap::new(),
            next_query: AtomicU64::new(1),
            stats: common::Counters::default(),
            link,
            closed: AtomicBool::new(false),
            needs_sync: AtomicBool::new(false),
            wake_heartbeat: Notify::new(),
            local: (0..PRESENCE_SHARDS)
                .map(|_| tokio::sync::Mutex::new(HashMap::new()))
                .collect(),
            live_cache: Mutex::new(Vec::new()),
            markers: Mutex::new(HashMap::new()),
            on_evicted: std::sync::OnceLock::new(),
            warn_link: Warn::new("nats"),
            warn_queue: Warn::new("nats"),
            warn_inbound: Warn::new("nats"),
            warn_malformed: Warn::new("nats"),
            warn_unauthenticated: Warn::new("nats"),
            signer: options.signing_key.as_ref().and_then(|k| Signer::new(k.as_bytes())),
            options,
        }
    }

    /// Whether the connection to NATS is up now.
    pub(super) fn link_up(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    pub(super) fn other_cached_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = (self.live_cache.lock().iter())
            .filter(|n| **n != self.node)
            .cloned()
            .collect();
        nodes.sort_unstable();
        nodes
    }

    pub(super) fn lose(&self, n: u64, warn: &Warn, what: &str, error: &dyn fmt::Display) {
        self.stats.lose(n, warn, &self.node, what, error);
    }

    /// Whether anything can be queued for NATS now (when not, the op is counted as lost).
    pub(super) fn can_send(&self) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if !self.link_up() {
            self.lose(1, &self.warn_link, "nats unreachable: op lost", &"link down");
            return false;
        }
        true
    }

    /// The message of `op` from this node, signed with a key.
    pub(super) fn encode(&self, op: &Op) -> Result<Vec<u8>, serde_json::Error> {
        match &self.signer {
            Some(signer) => signer.encode(&self.node, op),
            None => wire::encode(&self.node, op),
        }
    }

    /// Queues `op` for `subject`.
    pub(super) fn enqueue(&self, subject: String, op: &Op) -> bool {
        if !self.can_send() {
            return false;
        }
        match self.encode(op) {
            Ok(payload) => self.queue(Outgoing::Publish {
                subject,
                payload: payload.into(),
            }),
            Err(e) => {
                self.lose(1, &self.warn_queue, "op could not be encoded: lost", &e);
                false
            }
        }
    }

    pub(super) fn queue(&self, out: Outgoing) -> bool {
        self.stats.queue(&self.out, out, &self.warn_queue, &self.node)
    }

    pub(super) fn reply(&self, to: &str, id: u64, answer: Value, error: Option<String>) -> bool {
        self.enqueue(
            Names::node_subject(&self.options.prefix, to),
            &Op::Reply { id, answer, error },
        )
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

    /// The JSON of a received message: checked against the key when there is one (`None`,
    /// counted, when it fails).
    pub(super) fn open<'a>(&self, payload: &'a [u8]) -> Option<&'a [u8]> {
        common::open(self, payload)
    }

    pub(super) fn malformed(&self, what: &str, error: &dyn fmt::Display) {
        common::malformed(self, what, error);
    }

    /// A message on one of this node's core subjects.
    pub(super) fn on_message(self: &Arc<Self>, payload: &[u8]) {
        common::on_message(self, payload);
    }
}

impl common::Node for Shared {
    fn node(&self) -> &str {
        &self.node
    }

    fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    fn pending(&self) -> &DashMap<u64, ReplyTx> {
        &self.pending
    }

    fn counters(&self) -> &common::Counters {
        &self.stats
    }

    fn warn(&self, trouble: common::Trouble, what: &str, error: &dyn fmt::Display) {
        let warn = match trouble {
            common::Trouble::Unauthenticated => &self.warn_unauthenticated,
            common::Trouble::Malformed => &self.warn_malformed,
        };
        warn.warn(&self.node, what, error);
    }

    fn deliver(&self, message: Inbound) {
        Shared::deliver(self, message);
    }

    fn history_emits_on_the_bus(&self) -> bool {
        false
    }
}

impl Replies for Shared {
    fn reply(&self, to: &str, id: u64, answer: Value, error: Option<String>) -> bool {
        Shared::reply(self, to, id, answer, error)
    }
}
