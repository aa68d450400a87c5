//! [`NatsAdapter`]: the cluster layer on NATS: core subjects for ops, queries and replies,
//! JetStream key-value buckets for liveness, presence (compare-and-set), sessions and
//! revocations, and a JetStream stream for the history.
//!
//! This file holds the handle and its public methods; the rest is split by role: `options`
//! (settings, names, errors), `shared` (the state the handle and the tasks share, what arrives
//! on the core subjects), `presence` (users and their counts), `heartbeat` (liveness and dead
//! nodes), `history` (the history stream, sessions, revocations), and the tasks `publisher`
//! and `subscriber` (core subjects and the history stream).

use std::{
    collections::HashMap,
    fmt,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use async_nats::jetstream::{self, kv};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use self::{
    heartbeat::heartbeat,
    options::{random_node_id, Names},
    presence::shard_of,
    publisher::publisher,
    shared::{timed, Link, Outgoing, Parts, Shared},
    subscriber::{history_reader, subscriber},
};
use super::{
    common,
    engine::Inbound,
    history::{HistoryParams, Missed},
    wire::{Op, Query},
    AdapterStats, ClusterAnswer,
};

mod heartbeat;
mod history;
mod options;
mod presence;
mod publisher;
mod shared;
mod subscriber;

pub use options::{NatsAdapterError, NatsOptions};

/// A cluster layer on NATS with JetStream: ops between nodes on core subjects, node liveness
/// in a key-value bucket whose entries expire, cluster-wide presence by compare-and-set, and
/// the history in a stream. `Clone` is one `Arc` bump; the background tasks stop when the last
/// clone is dropped (the node then leaves the cluster view after the node timeout), or at
/// [`shutdown`](Self::shutdown).
///
/// The same contract as [`RedisAdapter`](super::RedisAdapter): the same wire format and
/// signing, at-most-once delivery, the same [`Inbound`] messages. `docs/cluster.md` ("NATS
/// engine") lists the subjects, buckets and stream.
///
/// ```no_run
/// use tower_realtime::adapter::{Inbound, NatsAdapter, NatsOptions, Op, Target};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let (adapter, mut inbound) = NatsAdapter::connect("nats://127.0.0.1:4222", NatsOptions::default()).await?;
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
pub struct NatsAdapter {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Dropped with the last clone: the background tasks see it and end.
    stop: watch::Sender<bool>,
}

impl fmt::Debug for NatsAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsAdapter")
            .field("node", &self.inner.shared.node)
            .field("prefix", &self.inner.shared.options.prefix)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The stream of a key-value bucket, as the key-value API lays it out: one message kept per
/// key, entries living `max_age` (zero: for ever). Made as a stream, which servers before 2.10
/// take too.
pub(super) fn bucket_config(bucket: &str, max_age: Duration, replicas: usize) -> jetstream::stream::Config {
    use jetstream::stream::{Config, DiscardPolicy, StorageType};
    Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_messages: -1,
        max_bytes: -1,
        max_message_size: -1,
        max_age,
        duplicate_window: if max_age.is_zero() {
            Duration::from_secs(120)
        } else {
            max_age.min(Duration::from_secs(120))
        },
        storage: StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        ..Default::default()
    }
}

/// A bucket of the cluster, found or made.
pub(super) async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    replicas: usize,
    limit: Duration,
) -> Result<kv::Store, NatsAdapterError> {
    if let Ok(store) = timed(limit, js.get_key_value(name)).await {
        return Ok(store);
    }
    // Made by another node meanwhile, or just now: either way, there.
    let made = timed(limit, js.create_stream(bucket_config(name, max_age, replicas))).await;
    match timed(limit, js.get_key_value(name)).await {
        Ok(store) => Ok(store),
        Err(e) => Err(made.err().unwrap_or(e)),
    }
}

impl NatsAdapter {
    /// Connects to NATS at `servers` (one URL, `nats://host:port`, or several separated by
    /// commas; credentials may be in the URL: `nats://user:password@host:4222`), finds or makes
    /// the cluster's buckets, subscribes, and registers this node. Fails when NATS cannot be
    /// reached (or has no JetStream) within the command timeout: it does not retry (the app
    /// decides whether to start without a cluster, retry, or stop). Once connected, it never
    /// fails again for an outage: the client reconnects and subscribes again by itself.
    ///
    /// The receiver carries what the local hub must act on; read it in a loop. Needs a Tokio
    /// runtime (the adapter spawns four tasks).
    pub async fn connect(
        servers: &str,
        options: NatsOptions,
    ) -> Result<(NatsAdapter, mpsc::Receiver<Inbound>), NatsAdapterError> {
        options.check()?;
        let node = options.node_id.clone().unwrap_or_else(random_node_id);
        let names = Names::new(&options.prefix, &node);
        let limit = options.command_timeout;
        let servers: Vec<&str> = servers.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        let link = Arc::new(Link::new(node.clone()));
        let events = link.clone();
        let connect = async_nats::ConnectOptions::new()
            .name(format!("tower-realtime {node}"))
            .no_echo()
            .connection_timeout(limit)
            .request_timeout(Some(limit))
            .event_callback(move |event| {
                let events = events.clone();
                async move { events.on_event(&event) }
            })
            .connect(servers.as_slice());
        let client = timed(limit, connect).await?;
        let js = jetstream::ContextBuilder::new().timeout(limit).build(client.clone());
        let replicas = options.replicas;
        let live = bucket(&js, &names.live, options.node_timeout, replicas, limit).await?;
        let nodes = bucket(&js, &names.nodes, Duration::ZERO, replicas, limit).await?;
        let presence = bucket(&js, &names.presence, Duration::ZERO, replicas, limit).await?;
        // Subscribed before registering: once other nodes see this one, it hears them.
        let all = timed(limit, client.subscribe(names.all.clone())).await?;
        let own = timed(limit, client.subscribe(names.own.clone())).await?;

        let (out_tx, out_rx) = mpsc::channel(options.publish_queue);
        let (in_tx, in_rx) = mpsc::channel(options.inbound_queue);
        let parts = Parts {
            node,
            options,
            names,
            client,
            js,
            live,
            nodes,
            presence,
            link,
        };
        let shared = Arc::new(Shared::new(parts, out_tx, in_tx));
        // The history stream's end, if there is one: this node delivers what comes after.
        let start = shared
            .history_stream(None)
            .await?
            .map(|(_, info)| (info.config.description.unwrap_or_default(), info.state.last_sequence));
        shared.register(true).await?;
        shared.live_nodes().await?;

        let (stop, _) = watch::channel(false);
        tokio::spawn(publisher(shared.clone(), out_rx, stop.subscribe()));
        tokio::spawn(subscriber(shared.clone(), all, own, stop.subscribe()));
        tokio::spawn(history_reader(shared.clone(), start, stop.subscribe()));
        tokio::spawn(heartbeat(shared.clone(), stop.subscribe()));
        Ok((
            NatsAdapter {
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
    pub fn options(&self) -> &NatsOptions {
        &self.shared().options
    }

    /// Sends an op to every other node. Never waits: the op is encoded and queued for a
    /// background task. Returns `false` when it is lost at once: NATS is known to be
    /// unreachable, or the queue is full. Ops that then fail to reach NATS are lost too. Every
    /// loss is counted ([`AdapterStats::lost`]): delivery is at most once.
    pub fn publish(&self, op: &Op) -> bool {
        let shared = self.shared();
        shared.enqueue(shared.names.all.clone(), op)
    }

    /// Sends an op to one node only (same guarantees as [`publish`](Self::publish)).
    pub fn publish_to(&self, node: &str, op: &Op) -> bool {
        let shared = self.shared();
        shared.enqueue(Names::node_subject(&shared.options.prefix, node), op)
    }

    /// Keeps a history emit in the history stream; every node, this one included, delivers it
    /// with its epoch and offset. Never waits.
    pub(crate) fn append_history(&self, op: &Op, streams: &[String], params: &HistoryParams) -> bool {
        let shared = self.shared();
        if !matches!(op, Op::HistoryEmit { .. }) || !shared.can_send() {
            return false;
        }
        match shared.encode(op) {
            Ok(payload) => shared.queue(Outgoing::Append {
                streams: streams.to_vec(),
                payload: payload.into(),
                params: params.clone(),
            }),
            Err(e) => {
                shared.lose(1, &shared.warn_queue, "history emit could not be encoded: lost", &e);
                false
            }
        }
    }

    fn writable(&self) -> bool {
        let shared = self.shared();
        !shared.closed.load(Ordering::Relaxed) && shared.link_up()
    }

    /// Keeps a dropped connection's session (JSON) for `ttl`. Never waits.
    pub(crate) fn keep_session(&self, id: &str, session: &str, ttl: Duration) -> bool {
        if !self.writable() || !super::history::plausible_session(id) {
            return false;
        }
        let out = Outgoing::Session {
            id: id.to_owned(),
            json: session.to_owned().into(),
            ttl,
        };
        self.shared().out.try_send(out).is_ok()
    }

    /// Takes `user` out of `room` (empty: every session) in the sessions kept for them. Never
    /// waits.
    pub(crate) fn revoke(&self, user: &str, room: &str, ttl: Duration) -> bool {
        if !self.writable() {
            return false;
        }
        let out = Outgoing::Revoke {
            user: user.to_owned(),
            room: room.to_owned(),
            ttl,
        };
        self.shared().out.try_send(out).is_ok()
    }

    /// Takes the session `id` for `user` in `ns` (see
    /// [`RedisAdapter::take_session`](super::RedisAdapter)'s contract).
    pub(crate) async fn take_session(
        &self,
        id: &str,
        user: Option<&str>,
        ns: &str,
    ) -> Result<Option<(String, HashMap<String, u64>)>, NatsAdapterError> {
        self.shared().take_session(id, user, ns).await
    }

    /// The history's epoch and last offset (the stream is made when there is none).
    pub(crate) async fn history_epoch(&self, params: &HistoryParams) -> Result<(String, u64), NatsAdapterError> {
        self.shared().history_epoch(params).await
    }

    /// The events of `streams` after their offsets, for a session of `epoch`, and the last
    /// offset given out when the read began.
    pub(crate) async fn read_history(
        &self,
        params: &HistoryParams,
        epoch: &str,
        streams: &[(String, u64)],
    ) -> Result<Missed, NatsAdapterError> {
        self.shared().read_history(params, epoch, streams).await
    }

    /// Counts a new live connection of `user` on this node. `Ok(true)`: the user came online
    /// cluster-wide (their first live connection on any live node); of nodes racing on the same
    /// user, exactly one gets `true`.
    ///
    /// On `Err` (NATS unreachable) the connection is still counted locally; it is written when
    /// the node syncs again, and a user that this brings online is then reported as
    /// [`Inbound::PresenceChanged`].
    pub async fn user_connected(&self, user: &str) -> Result<bool, NatsAdapterError> {
        self.shared().presence_change(user, 1).await.map(|change| change == 1)
    }

    /// Counts the end of a live connection of `user` on this node. `Ok(true)`: the user went
    /// offline cluster-wide. An unknown user gives `Ok(false)` without asking NATS.
    pub async fn user_disconnected(&self, user: &str) -> Result<bool, NatsAdapterError> {
        self.shared().presence_change(user, -1).await.map(|change| change == -1)
    }

    /// Whether `user` has a live connection on this node (no NATS involved).
    pub async fn is_local_user(&self, user: &str) -> bool {
        self.shared().local[shard_of(user)].lock().await.contains_key(user)
    }

    /// The users with a live connection on any live node, sorted. When NATS cannot be read,
    /// the answer is this node's own users, marked partial, with the other nodes last known
    /// alive as missing.
    pub async fn online_users(&self) -> ClusterAnswer<Vec<String>> {
        let shared = self.shared();
        let read = async {
            let live = shared.live_nodes().await?;
            shared.reap(&live).await?;
            shared.presence_keys().await
        };
        match read.await {
            Ok(keys) => {
                let mut users: Vec<String> = keys.iter().filter_map(|k| options::untoken(k)).collect();
                users.sort_unstable();
                users.dedup();
                ClusterAnswer::complete(users)
            }
            Err(e) => {
                tracing::debug!(node = %shared.node, error = %e, "nats adapter: online users not read, this node's only");
                common::local_users(&shared.local, shared.other_cached_nodes()).await
            }
        }
    }

    /// The ids of the live nodes (this one included while registered), sorted. A node is live
    /// while its last heartbeat is at most [`NatsOptions::node_timeout`] old.
    pub async fn live_nodes(&self) -> Result<Vec<String>, NatsAdapterError> {
        self.shared().live_nodes().await
    }

    /// Asks every other live node `query` and gathers their answers, until all answered or
    /// `timeout` (default [`NatsOptions::query_timeout`]) passed; as
    /// [`RedisAdapter::request`](super::RedisAdapter::request).
    pub async fn request(&self, query: Query, timeout: Option<Duration>) -> ClusterAnswer<Vec<Value>> {
        let shared = self.shared();
        let asker = common::Asker {
            node: &shared.node,
            pending: &shared.pending,
            next_query: &shared.next_query,
            live_nodes: shared.live_nodes(),
            cached_nodes: || shared.other_cached_nodes(),
            send: |op: &Op| shared.enqueue(shared.names.all.clone(), op),
        };
        common::request(asker, query, timeout.unwrap_or(shared.options.query_timeout)).await
    }

    /// Counters, and whether NATS is reachable now.
    pub fn stats(&self) -> AdapterStats {
        let s = self.shared();
        let link_up = s.link_up();
        let reconnects = s.link.reconnects.load(Ordering::Relaxed);
        (s.stats).snapshot(reconnects, link_up, link_up && !s.closed.load(Ordering::Relaxed))
    }

    /// Leaves the cluster now: stops the background tasks (of every clone) and deletes this
    /// node's liveness entry, so that the other nodes see it gone at once and the next
    /// heartbeat of one of them reports its remaining users as gone offline. Ops published
    /// afterwards are lost.
    pub async fn shutdown(&self) -> Result<(), NatsAdapterError> {
        let shared = self.shared();
        shared.closed.store(true, Ordering::Relaxed);
        self.inner.stop.send_replace(true);
        let limit = shared.options.command_timeout;
        presence::forget(&shared.live, &shared.node, limit).await?;
        timed(limit, shared.client.flush()).await
    }
}

super::engine::engine_from_inherent_methods!(NatsAdapter);

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::StreamExt;

    use super::*;
    use futures_util::future::BoxFuture;

    use crate::adapter::conformance::{self, Node};
    use crate::adapter::engine::Engine;

    /// The streams (buckets are streams too) a cluster of `prefix` may have made.
    fn streams_of(prefix: &str) -> Vec<String> {
        let names = Names::new(prefix, "x");
        let buckets = [names.live, names.nodes, names.presence, names.sessions, names.revoked];
        let mut streams: Vec<String> = buckets.iter().map(|b| format!("KV_{b}")).collect();
        streams.push(names.history);
        streams
    }

    /// Deletes what the clusters of `prefixes` made, and what earlier runs of the suite left
    /// (a run that failed midway) once it is ten minutes old. Runs on a thread of its own, so
    /// it also runs while a failed check unwinds.
    struct Cleanup {
        url: String,
        prefixes: Arc<Mutex<Vec<String>>>,
    }

    impl Cleanup {
        /// A prefix of its own for one test (`conformance-<kind>-<random>`), removed at the end.
        fn one(url: &str, kind: &str) -> (String, Self) {
            let prefix = format!("conformance-{kind}-{:016x}", getrandom::u64().unwrap());
            let cleanup = Self {
                url: url.to_owned(),
                prefixes: Arc::new(Mutex::new(vec![prefix.clone()])),
            };
            (prefix, cleanup)
        }
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let url = self.url.clone();
            let prefixes = std::mem::take(&mut *self.prefixes.lock().unwrap_or_else(|e| e.into_inner()));
            let cleaned = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let Ok(client) = async_nats::connect(url.as_str()).await else {
                        return;
                    };
                    let js = jetstream::new(client);
                    let mut doomed: Vec<String> = prefixes.iter().flat_map(|p| streams_of(p)).collect();
                    let mut names = js.streams();
                    let old = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
                    while let Some(Ok(info)) = names.next().await {
                        if info.config.name.contains("conformance-") && info.created < old {
                            doomed.push(info.config.name.clone());
                        }
                    }
                    for name in doomed {
                        let _ = js.delete_stream(&name).await;
                    }
                });
            });
            let _ = cleaned.join();
        }
    }

    /// The suite of `adapter/conformance.rs` against NATS with JetStream (`REALTIME_TEST_NATS`),
    /// each check on a prefix of its own, deleted afterwards.
    #[tokio::test]
    async fn the_nats_engine_passes_the_conformance_suite() {
        let url = match std::env::var("REALTIME_TEST_NATS") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                // Straight to stderr, past the test harness's capture: visible in a plain run.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "the NATS engine's conformance suite did not run: set REALTIME_TEST_NATS=nats://127.0.0.1:4222"
                );
                return;
            }
        };
        let prefixes = Arc::new(Mutex::new(Vec::new()));
        let _cleanup = Cleanup {
            url: url.clone(),
            prefixes: prefixes.clone(),
        };
        let make = move |cluster: String| -> BoxFuture<'static, Node> {
            let url = url.clone();
            prefixes.lock().unwrap().push(cluster.clone());
            Box::pin(async move {
                let options = NatsOptions {
                    prefix: cluster,
                    heartbeat: Duration::from_millis(200),
                    node_timeout: Duration::from_millis(800),
                    query_timeout: Duration::from_millis(1000),
                    command_timeout: Duration::from_millis(1000),
                    ..NatsOptions::default()
                };
                let (adapter, inbound) = NatsAdapter::connect(&url, options)
                    .await
                    .unwrap_or_else(|e| panic!("NATS at {url} (REALTIME_TEST_NATS) could not be reached: {e}"));
                Node {
                    engine: Arc::new(adapter),
                    inbound,
                }
            })
        };
        conformance::run(&make).await;
    }

    #[tokio::test]
    async fn connect_fails_without_nats_within_the_command_timeout_and_on_bad_options() {
        // Nothing listens on a port just freed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let options = NatsOptions {
            command_timeout: Duration::from_millis(300),
            ..NatsOptions::default()
        };
        let started = std::time::Instant::now();
        let refused = NatsAdapter::connect(&format!("nats://127.0.0.1:{port}"), options).await;
        assert!(refused.is_err(), "connected to nothing");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let bad = NatsOptions {
            prefix: "a.b".into(),
            ..NatsOptions::default()
        };
        assert!(matches!(
            NatsAdapter::connect("nats://127.0.0.1:4222", bad).await,
            Err(NatsAdapterError::Options(_))
        ));
    }

    /// The NATS URL of `REALTIME_TEST_NATS`; `None` (said on stderr) when it is not set.
    fn nats_url(test: &str) -> Option<String> {
        match std::env::var("REALTIME_TEST_NATS") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "{test} did not run: set REALTIME_TEST_NATS=nats://127.0.0.1:4222"
                );
                None
            }
        }
    }

    /// The next op on `rx` within two seconds, skipping the rest.
    async fn next_op(rx: &mut mpsc::Receiver<Inbound>) -> Option<(String, Op)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Inbound::Op { from, op })) => return Some((from, op)),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// With a signing key: signed nodes hear each other, a node without the key hears nothing
    /// (and counts it); a kept event in two history streams comes back, signed, once per node
    /// with one offset, and a read of the second stream finds its copy at that offset.
    #[tokio::test]
    async fn signed_nodes_keep_history_in_several_streams_with_one_offset() {
        let Some(url) = nats_url("the NATS engine's signing and copies test") else {
            return;
        };
        let (prefix, _cleanup) = Cleanup::one(&url, "signed");
        let options = NatsOptions {
            prefix,
            heartbeat: Duration::from_millis(200),
            node_timeout: Duration::from_millis(800),
            ..NatsOptions::default()
        };
        let connect = |options: NatsOptions| {
            let url = url.clone();
            async move {
                NatsAdapter::connect(&url, options)
                    .await
                    .unwrap_or_else(|e| panic!("NATS at {url} (REALTIME_TEST_NATS) could not be reached: {e}"))
            }
        };
        let (a, _a_in) = connect(options.clone().sign_with([3u8; 32])).await;
        let (b, mut b_in) = connect(options.clone().sign_with([3u8; 32])).await;
        let (c, mut c_in) = connect(options).await;

        assert!(a.publish(&Op::DisconnectUser { user: "x".into() }));
        let (from, op) = next_op(&mut b_in).await.expect("the signed op reaches the signed node");
        assert_eq!(from, a.node_id());
        assert!(matches!(op, Op::DisconnectUser { user } if user == "x"));
        assert!(
            next_op(&mut c_in).await.is_none(),
            "nothing reaches the node without the key"
        );
        assert_eq!(c.stats().malformed, 1, "a signed frame is not a message to it");

        let params = HistoryParams {
            new_epoch: "e-signed".into(),
            max_events: 10,
            max_age: Duration::from_secs(60),
            session_ttl: Duration::from_secs(60),
            max_replay: 10,
        };
        let (epoch, start) = Engine::history_epoch(&b, &params).await.expect("an epoch");
        assert_eq!((epoch.as_str(), start), ("e-signed", 0), "made by b, empty");
        let op = Op::HistoryEmit {
            epoch: String::new(),
            offset: 0,
            ns: "/".into(),
            targets: vec![crate::adapter::Target::Room("r".into())],
            except: vec![],
            except_rooms: vec![],
            except_users: vec!["ann".into()],
            event: "e".into(),
            data: serde_json::value::RawValue::from_string("[1]".into()).unwrap(),
        };
        let streams = ["r1:/:r".to_owned(), "u1:/:bo".to_owned()];
        assert!(Engine::append_history(&a, &op, &streams, &params));
        let (from, kept) = next_op(&mut b_in).await.expect("the kept event reaches b");
        assert_eq!(from, a.node_id());
        let Op::HistoryEmit { epoch: e, offset, .. } = kept else {
            panic!("a history emit expected")
        };
        assert_eq!((e.as_str(), offset), ("e-signed", 1));
        assert!(next_op(&mut b_in).await.is_none(), "its copy is not delivered");
        assert!(
            next_op(&mut c_in).await.is_none(),
            "nor anything to the node without the key"
        );

        for stream in &streams {
            let missed = Engine::read_history(&b, &params, "e-signed", &[(stream.clone(), 0)]).await;
            let Ok(Missed::Events { upto, events, .. }) = missed else {
                panic!("events expected: {missed:?}")
            };
            assert_eq!(upto, 2, "the event and its copy");
            assert_eq!(events.len(), 1, "{stream}");
            assert_eq!(events[0].offset, 1, "{stream}: the event's offset");
            assert_eq!(events[0].left_out.users, ["ann"]);
            assert_eq!(events[0].data, "[1]");
        }
        // The node without the key cannot read the signed events back.
        let unread = Engine::read_history(&c, &params, "e-signed", &[(streams[0].clone(), 0)]).await;
        assert!(
            matches!(unread, Ok(Missed::Events { ref events, .. }) if events.is_empty()),
            "{unread:?}"
        );
        assert!(c.stats().unauthenticated == 0 && c.stats().malformed >= 1);

        // A user gone offline leaves nothing in the presence bucket, and can come back.
        let held = |adapter: &NatsAdapter| {
            let shared = adapter.shared().clone();
            async move {
                presence::list_held(&shared.presence, Duration::from_secs(2))
                    .await
                    .unwrap()
            }
        };
        assert!(a.user_connected("zed").await.unwrap());
        assert_eq!(held(&a).await, [options::token("zed")]);
        assert!(a.user_disconnected("zed").await.unwrap());
        assert!(held(&a).await.is_empty(), "no delete marker left");
        assert!(b.user_connected("zed").await.unwrap(), "online again");
        assert!(b.user_disconnected("zed").await.unwrap());
    }

    /// The online users are read whole and at once while another node's users come and go
    /// (their keys deleted and purged): a consumer of the bucket's last entries, made just
    /// before a purge, waited for an entry that was gone until the command timeout, and a
    /// heartbeat held that long let this node's liveness entry expire.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn online_users_are_read_at_once_while_users_come_and_go() {
        let Some(url) = nats_url("the NATS engine's presence listing test") else {
            return;
        };
        let (prefix, _cleanup) = Cleanup::one(&url, "listing");
        let options = NatsOptions {
            prefix,
            heartbeat: Duration::from_millis(200),
            node_timeout: Duration::from_millis(800),
            command_timeout: Duration::from_millis(1000),
            ..NatsOptions::default()
        };
        let (a, _a_in) = NatsAdapter::connect(&url, options.clone()).await.expect("a node");
        let (b, _b_in) = NatsAdapter::connect(&url, options).await.expect("a second node");
        assert!(a.user_connected("stays").await.unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let user = format!("comes-and-goes-{}", i % 4);
                    b.user_connected(&user).await.unwrap();
                    b.user_disconnected(&user).await.unwrap();
                    i += 1;
                }
                i
            }
        });
        let mut slowest = Duration::ZERO;
        for _ in 0..300 {
            let started = std::time::Instant::now();
            let online = a.online_users().await;
            slowest = slowest.max(started.elapsed());
            assert!(!online.partial, "read whole: {online:?}");
            assert!(online.value.iter().any(|u| u == "stays"), "{online:?}");
        }
        stop.store(true, Ordering::Relaxed);
        let churned = churn.await.unwrap();
        assert!(churned > 50, "users came and went {churned} times only");
        assert!(slowest < Duration::from_millis(500), "a read took {slowest:?}");
    }

    /// A NATS server of this test's own (`REALTIME_TEST_NATS_SERVER`, the `nats-server`
    /// binary) on a free loopback port, with JetStream in a directory of its own; stopped when
    /// dropped.
    struct Server {
        bin: String,
        port: u16,
        dir: std::path::PathBuf,
        child: Option<std::process::Child>,
    }

    impl Server {
        fn start(&mut self) {
            let child = std::process::Command::new(&self.bin)
                .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
                .arg(&self.dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{} (REALTIME_TEST_NATS_SERVER) did not start: {e}", self.bin));
            self.child = Some(child);
        }

        fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        fn url(&self) -> String {
            format!("nats://127.0.0.1:{}", self.port)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Waits up to `within` for `ready`, checking every 50 ms.
    async fn eventually(within: Duration, mut ready: impl FnMut() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if ready() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ready()
    }

    /// NATS goes away and comes back: meanwhile ops are lost at once and counted and presence
    /// calls fail; afterwards the node is connected again (counted), ops flow both ways, and
    /// the connection counted locally during the outage is in the cluster's presence.
    #[tokio::test]
    async fn after_an_outage_a_node_reconnects_and_ops_flow_again() {
        let bin = match std::env::var("REALTIME_TEST_NATS_SERVER") {
            Ok(bin) if !bin.is_empty() => bin,
            _ => {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "the NATS engine's outage test did not run: set REALTIME_TEST_NATS_SERVER=/usr/sbin/nats-server"
                );
                return;
            }
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = std::env::temp_dir().join(format!("tower-realtime-nats-{:016x}", getrandom::u64().unwrap()));
        let mut server = Server {
            bin,
            port,
            dir,
            child: None,
        };
        server.start();
        let options = NatsOptions {
            prefix: "outage".into(),
            heartbeat: Duration::from_millis(200),
            node_timeout: Duration::from_millis(2000),
            command_timeout: Duration::from_millis(500),
            ..NatsOptions::default()
        };
        let url = server.url();
        let mut connected = None;
        for _ in 0..100 {
            if let Ok(pair) = NatsAdapter::connect(&url, options.clone()).await {
                connected = Some(pair);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (a, _a_in) = connected.expect("the test's own NATS server started");
        let (b, mut b_in) = NatsAdapter::connect(&url, options).await.expect("a second node");
        let op = Op::DisconnectUser { user: "x".into() };
        assert!(a.publish(&op));
        assert!(next_op(&mut b_in).await.is_some(), "ops flow before the outage");
        // The first connection is not a reconnection.
        assert_eq!((a.stats().reconnects, b.stats().reconnects), (0, 0));

        server.stop();
        assert!(
            eventually(Duration::from_secs(5), || !a.stats().link_up).await,
            "the outage is seen"
        );
        let lost = a.stats().lost;
        assert!(!a.publish(&op), "lost at once while NATS is away");
        assert_eq!(a.stats().lost, lost + 1, "and counted");
        assert!(a.user_connected("ann").await.is_err(), "presence cannot be written");
        assert!(a.is_local_user("ann").await, "but the connection is counted here");

        server.start();
        let back = eventually(Duration::from_secs(15), || {
            let (sa, sb) = (a.stats(), b.stats());
            sa.link_up && sb.link_up && sa.reconnects >= 1 && sb.reconnects >= 1
        })
        .await;
        assert!(back, "both nodes connected again: {:?} {:?}", a.stats(), b.stats());
        // Subscribed again: an op gets through (the first ones may go before the resubscription).
        let mut heard = false;
        for _ in 0..50 {
            assert!(b.publish(&op) || !b.stats().link_up);
            assert!(a.publish(&op) || !a.stats().link_up);
            if next_op(&mut b_in).await.is_some() {
                heard = true;
                break;
            }
        }
        assert!(heard, "ops flow again after the outage");
        // The connection counted during the outage reaches the cluster's presence.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let online = b.online_users().await;
            if !online.partial && online.value == ["ann"] {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "ann never synced: {online:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
