//! Faults on one node of a three-node cluster, many rounds each, with clients emitting to a
//! shared room throughout: the node's link to the bus cut (closed, new connections refused),
//! frozen (nothing forwarded, nothing closed), or the node killed (`SIGKILL`, a process of its
//! own). The clients of the faulty node come back on a healthy node with their session; every
//! session is checked for messages lost, duplicated or reordered, every refused recovery for
//! its reason, presence for the time until every node agrees again, and the faulty node (or the
//! one that replaces it) for being usable afterwards. A summary per fault goes to stderr;
//! docs/cluster.md ("Faults, tested") keeps one.
//!
//! The bus is a parameter ([`Bus`]): a name, the variable that enables it, how to reach it
//! (directly or through the harness's proxy), and how to join a hub to it. Another bus runs
//! the same harness with one more [`Bus`] value in [`BUSES`].
//!
//! Runs on Redis (`REALTIME_TEST_REDIS`), a Redis Cluster (`REALTIME_TEST_REDIS_CLUSTER`; its
//! cut and freeze run with `REALTIME_TEST_REDIS_CLUSTER_FAULTS=1`, as root with `iptables`, see
//! [`Wall`]) and NATS (`REALTIME_TEST_NATS` and
//! `REALTIME_TEST_NATS_FAULTS=1`, with the `nats` feature). A bus whose variables are unset, or
//! a row whose needs are missing, is said not to have run, and why; a Redis Cluster's cut or
//! freeze asked for without root or `iptables` fails. With `RUST_LOG` set, the
//! nodes of this process log to stderr, and node processes to the file named by
//! `REALTIME_FAULT_NODE_LOG`.
#![cfg(feature = "redis")]

mod common;

#[path = "common/proxy.rs"]
mod proxy;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fmt::Write as _,
    io::{Read, Write as _},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use common::*;
use futures_util::{future::BoxFuture, stream::SplitSink, FutureExt, SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::{sync::watch, task::AbortHandle, time::Instant};
use tokio_tungstenite::tungstenite::Message;
use tower_realtime::{
    adapter::{RedisAdapter, RedisOptions},
    Data, Emitter, History, Hub, HubBuilder, JwtAuth, Socket,
};

// ---------------------------------------------------------------------------------------
// The bus: the one place that names it.

/// The timings of every node: short, so that a fault is noticed and healed within a round.
#[derive(Clone, Copy)]
struct Timing {
    heartbeat: Duration,
    node_timeout: Duration,
    command_timeout: Duration,
}

const TIMING: Timing = Timing {
    heartbeat: Duration::from_millis(200),
    node_timeout: Duration::from_millis(800),
    command_timeout: Duration::from_secs(1),
};

/// What a scheduler on a busy two-core machine and a poll every [`POLL`] add to a bound.
const SLACK: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(20);

impl Timing {
    /// From a node's death: its heartbeat is at most `heartbeat` old, it is out of every view
    /// `node_timeout` after it, and a live node has reaped it by one more heartbeat.
    fn after_death(self) -> Duration {
        self.node_timeout + self.heartbeat + SLACK
    }

    /// From the end of a cut or a freeze: a command stuck on the frozen link fails within
    /// `command_timeout`; the link is made again by the next heartbeat; a node taken for dead
    /// meanwhile (faults longer than `node_timeout`) registers again on that heartbeat and
    /// publishes its presence, and the others see it at their next read.
    fn after_heal(self) -> Duration {
        self.command_timeout + self.node_timeout + self.heartbeat + SLACK
    }
}

/// A bus the nodes of a cluster share.
struct Bus {
    /// Its name, in the summary and in a node process's arguments.
    name: &'static str,
    /// The variable holding its URL; unset, the harness does not run on it.
    env: &'static str,
    /// A URL for that variable, for the message that says the harness did not run.
    example: &'static str,
    /// The bus's socket address (what the proxy forwards to) for its URL, and the URL through
    /// a proxy at the given address (`None`: the URL itself).
    route: fn(String, Option<SocketAddr>) -> BoxFuture<'static, (SocketAddr, String)>,
    /// Joins a hub being built to the cluster `prefix` on the bus at `url`, with the
    /// harness's timings. The bus must answer (the variable is set): a panic otherwise.
    join: fn(HubBuilder, String, String, Timing) -> BoxFuture<'static, HubBuilder>,
    /// The faults it is put through, and for the others why not.
    faults: fn(Fault) -> Result<(), &'static str>,
    /// The cargo feature it needs, when it is missing from this build.
    missing_feature: Option<&'static str>,
    /// A second variable it needs, and why: for a bus whose rows run only on request.
    also_needs: Option<(&'static str, &'static str)>,
    /// Whether the faulty node's link is cut and frozen by the kernel's packet filter (a node
    /// process of its own behind a [`Wall`]) rather than by the proxy.
    walled: bool,
}

/// Redis's options with the harness's timings.
fn redis_options(prefix: String, timing: Timing) -> RedisOptions {
    let mut options = RedisOptions::default();
    options.prefix = prefix;
    options.heartbeat = timing.heartbeat;
    options.node_timeout = timing.node_timeout;
    options.command_timeout = timing.command_timeout;
    options
}

/// Every fault.
fn all_faults(_: Fault) -> Result<(), &'static str> {
    Ok(())
}

const REDIS: Bus = Bus {
    name: "redis",
    env: "REALTIME_TEST_REDIS",
    example: "redis://127.0.0.1:6379",
    route: |url, via| async move { proxy::through(&url, via).await }.boxed(),
    join: |builder, url, prefix, timing| {
        async move {
            let options = redis_options(prefix, timing);
            let (adapter, inbound) = RedisAdapter::connect(&url, options)
                .await
                .unwrap_or_else(|e| panic!("Redis must answer at {url} when REALTIME_TEST_REDIS is set: {e}"));
            builder.cluster(adapter, inbound)
        }
        .boxed()
    },
    faults: all_faults,
    missing_feature: None,
    also_needs: None,
    walled: false,
};

/// A Redis Cluster of several primaries (`tests/redis-cluster.sh start`); the URL lists them.
/// A node's link cannot be cut or frozen through the harness's proxy: the client library
/// connects to the addresses the primaries announce (`CLUSTER SLOTS`, `MOVED`), not to the
/// seeds it was given. The faulty node is a process of its own instead, and its connections
/// to every primary are cut or frozen by the kernel's packet filter ([`Wall`]).
const REDIS_CLUSTER: Bus = Bus {
    name: "redis-cluster",
    env: "REALTIME_TEST_REDIS_CLUSTER",
    example: "redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103",
    route: |url, via| {
        assert!(via.is_none(), "a Redis Cluster is not reached through the proxy");
        async move { (([127, 0, 0, 1], 0).into(), url) }.boxed()
    },
    join: |builder, url, prefix, timing| {
        async move {
            let options = redis_options(prefix, timing);
            let seeds: Vec<&str> = url.split(',').collect();
            let (adapter, inbound) = RedisAdapter::connect_cluster(&seeds, options)
                .await
                .unwrap_or_else(|e| panic!("the Redis Cluster must answer at {url}: {e}"));
            builder.cluster(adapter, inbound)
        }
        .boxed()
    },
    // A cut or a freeze is made by the kernel's packet filter: it needs root and `iptables`,
    // and runs on request (`.ci/run` asks for it).
    faults: |fault| match fault {
        Fault::Cut | Fault::Freeze if std::env::var_os(REDIS_CLUSTER_FAULTS).is_none() => Err(
            "a cut or a freeze of a node's link to a Redis Cluster is made by the packet filter \
             (root and iptables, see `Wall`); set REALTIME_TEST_REDIS_CLUSTER_FAULTS=1 to run it",
        ),
        _ => Ok(()),
    },
    missing_feature: None,
    also_needs: None,
    walled: true,
};

/// The variable that runs the cut and the freeze on a Redis Cluster.
const REDIS_CLUSTER_FAULTS: &str = "REALTIME_TEST_REDIS_CLUSTER_FAULTS";

/// NATS with JetStream; the link of a node goes through the proxy as Redis's does.
const NATS: Bus = Bus {
    name: "nats",
    env: "REALTIME_TEST_NATS",
    example: "nats://127.0.0.1:4222",
    route: |url, via| async move { proxy::through(&url, via).await }.boxed(),
    join: |builder, url, prefix, timing| {
        async move {
            #[cfg(feature = "nats")]
            {
                use tower_realtime::adapter::{NatsAdapter, NatsOptions};
                let mut options = NatsOptions::default();
                options.prefix = prefix;
                options.heartbeat = timing.heartbeat;
                options.node_timeout = timing.node_timeout;
                options.command_timeout = timing.command_timeout;
                let (adapter, inbound) = NatsAdapter::connect(&url, options)
                    .await
                    .unwrap_or_else(|e| panic!("NATS must answer at {url} when REALTIME_TEST_NATS is set: {e}"));
                builder.cluster(adapter, inbound)
            }
            #[cfg(not(feature = "nats"))]
            {
                let _ = (builder, url, prefix, timing);
                unreachable!("the harness does not run on NATS without the feature")
            }
        }
        .boxed()
    },
    faults: all_faults,
    missing_feature: if cfg!(feature = "nats") { None } else { Some("nats") },
    also_needs: Some((
        "REALTIME_TEST_NATS_FAULTS",
        "the NATS rows run on request, besides REALTIME_TEST_NATS (.ci/run sets both)",
    )),
    walled: false,
};

/// Every bus the harness runs on.
const BUSES: &[Bus] = &[REDIS, REDIS_CLUSTER, NATS];

fn bus_named(name: &str) -> &'static Bus {
    BUSES
        .iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no bus {name}"))
}

// ---------------------------------------------------------------------------------------
// The nodes.

const ROOM: &str = "faults";
/// Rounds per fault.
const ROUNDS: usize = 20;
/// How long each fault lasts, round after round: shorter and longer than `node_timeout`.
const DURATIONS: [Duration; 4] = [
    Duration::from_millis(300),
    Duration::from_millis(700),
    Duration::from_millis(1200),
    Duration::from_millis(1800),
];
/// Between two messages of one sender.
const PACE: Duration = Duration::from_millis(10);
/// How long a client waits before it comes back: the JavaScript client's first reconnection
/// delay (`minDelay`).
const RECONNECT: Duration = Duration::from_millis(250);
/// How long a sender waits for an ack, and a check for what should arrive.
const PATIENCE: Duration = Duration::from_secs(5);

/// A node's hub: a history of every room, a `join` and a `say` event (`say` emits its data
/// to the shared room and answers once it is emitted), joined to the cluster `prefix`.
async fn node_hub(bus: &Bus, url: &str, prefix: &str) -> Hub {
    let builder = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        // Room for every event of a round: no recovery here is refused for evictions.
        .history(History::new().rooms("*").max_events(100_000))
        .on("join", |s: Socket, Data(room): Data<String>| async move {
            let joined = s.join(&room).is_ok();
            json!({ "joined": joined })
        })
        .on("say", |s: Socket, Data(said): Data<Value>| async move {
            s.hub().to_room(ROOM).emit("said", &said);
            json!("ok")
        });
    (bus.join)(builder, url.to_owned(), prefix.to_owned(), TIMING)
        .await
        .build()
}

/// The variable that makes this test binary serve one node until killed:
/// `<bus>,<prefix>,<port>`.
const NODE_ENV: &str = "REALTIME_FAULT_NODE";

/// A node in a process of its own (this test binary, running [`fault_node`] only): to be
/// killed with `SIGKILL`, or to have its link cut or frozen by a [`Wall`] (it then runs as the
/// wall's user, which is how the packet filter tells its connections apart). It answers
/// `GET /presence` and `GET /stats` besides its WebSocket endpoint, for the harness to ask it
/// what it would ask a hub of its own.
struct NodeProcess {
    child: Child,
    addr: SocketAddr,
}

impl NodeProcess {
    async fn start(bus: &Bus, prefix: &str, uid: Option<u32>) -> NodeProcess {
        // A free port, handed to the child (it binds it at once).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "fault_node", "--nocapture", "--test-threads=1"])
            .env(NODE_ENV, format!("{},{prefix},{port}", bus.name))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // `REALTIME_FAULT_NODE_LOG=<file>` (with `RUST_LOG`): what the node processes say.
        if let Some(path) = std::env::var_os("REALTIME_FAULT_NODE_LOG") {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            command.stderr(file);
        }
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        let child = command.spawn().expect("the test binary runs itself as a node");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut node = NodeProcess { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return node;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("the node process ended before serving: {status}");
            }
            assert!(Instant::now() < deadline, "the node process did not serve on {addr}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// `SIGKILL`: no goodbye to the bus, no close frame to the clients.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The body of `GET path` on the node (HTTP/1.0, read to its end).
    async fn get(&self, path: &str) -> Result<String, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ask = async {
            let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
            stream
                .write_all(format!("GET {path} HTTP/1.0\r\nHost: node\r\n\r\n").as_bytes())
                .await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(PATIENCE, ask)
            .await
            .map_err(|_| format!("GET {path}: no answer"))?
            .map_err(|e| format!("GET {path}: {e}"))?;
        match answer.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") => {
                Ok(body.to_owned())
            }
            _ => Err(format!("GET {path}: {answer}")),
        }
    }

    /// What the node's `cluster_online_users()` says.
    async fn presence(&self) -> Result<(Vec<String>, bool), String> {
        let body: Value = serde_json::from_str(&self.get("/presence").await?).map_err(|e| e.to_string())?;
        let value = serde_json::from_value(body["value"].clone()).map_err(|e| e.to_string())?;
        Ok((value, body["partial"] == true))
    }
}

/// What an engine counted, in the summary.
fn engine_stats(stats: &tower_realtime::adapter::AdapterStats) -> String {
    format!(
        "published {}, lost {}, received {}, dropped {}, reconnects {}",
        stats.published, stats.lost, stats.received, stats.dropped, stats.reconnects
    )
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The entry of a node process started by [`NodeProcess::start`]: serves one node until it is
/// killed, or until its parent is gone (its stdin closes), or for two minutes at most. In the
/// test run itself ([`NODE_ENV`] unset) there is no node to serve and it returns.
#[test]
fn fault_node() {
    let Ok(spec) = std::env::var(NODE_ENV) else { return };
    let mut parts = spec.splitn(3, ',');
    let (bus, prefix, port) = (
        bus_named(parts.next().unwrap()),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().parse::<u16>().unwrap(),
    );
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let url = std::env::var(bus.env).expect("the parent has the bus's URL");
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let hub = node_hub(bus, &url, &prefix).await;
        let presence = hub.clone();
        let stats = hub.clone();
        let app = axum::Router::new()
            .route(
                "/presence",
                axum::routing::get(move || async move {
                    let answer = presence.cluster_online_users().await;
                    axum::Json(json!({ "value": answer.value, "partial": answer.partial }))
                }),
            )
            .route(
                "/stats",
                axum::routing::get(move || async move {
                    stats.adapter().map(|a| engine_stats(&a.stats())).unwrap_or_default()
                }),
            )
            .layer(hub.layer("/ws"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------
// The clients.

/// A `said` event: who sent it, its number, its offset (none for an event a node delivered
/// while it could not reach the bus).
#[derive(Clone, Debug)]
struct Got {
    from: String,
    n: u64,
    offset: Option<u64>,
}

/// What one client (one session, over its connections) received.
#[derive(Default)]
struct Log {
    got: Vec<Got>,
    acks: HashSet<u64>,
    /// The last `$session` frame's data.
    session: Option<Value>,
    /// The current connection ended (read error, close, end of stream).
    ended: bool,
    /// What happened to the connection, at a position in `got` (closes, comebacks): for the
    /// account of a loss.
    marks: Vec<(usize, String)>,
    /// The server closed the current connection (a close frame came).
    server_closed: bool,
}

/// A message a client sent: its number, when it was sent, when the client read the server's
/// ack (none: never acked).
#[derive(Clone, Copy)]
struct Sent {
    n: u64,
    at: Instant,
    acked: Option<Instant>,
}

impl Sent {
    fn acked_before(&self, end: Instant) -> bool {
        self.acked.is_some_and(|at| at < end)
    }
}

/// The sending half of a connection; `None` once dropped.
type Sink = Arc<tokio::sync::Mutex<Option<SplitSink<Ws, Message>>>>;

/// Sends `frame` on `sink`; whether it went.
async fn send(sink: &Sink, frame: Value) -> bool {
    match sink.lock().await.as_mut() {
        Some(sink) => sink.send(Message::text(frame.to_string())).await.is_ok(),
        None => false,
    }
}

/// A client of the harness: one user, one logical session, over one connection at a time.
struct Peer {
    user: String,
    log: Arc<Mutex<Log>>,
    bumped: watch::Sender<u64>,
    sink: Sink,
    reader: AbortHandle,
    /// When it was in the room (the join's ack read): the start of the session's life.
    joined: Instant,
    sent: Arc<Mutex<Vec<Sent>>>,
    sending: Option<(Arc<AtomicBool>, tokio::task::JoinHandle<()>)>,
    /// The `$session` answer of its last comeback (recovered, or why not).
    recovery: Option<Value>,
    /// The node of its current connection.
    at: SocketAddr,
}

impl Peer {
    /// Connects `user` to `addr` with a new session, joins the room, and waits until it got one
    /// event there.
    async fn join(addr: SocketAddr, user: &str) -> Peer {
        Peer::join_inner(addr, user, true).await
    }

    async fn join_inner(addr: SocketAddr, user: &str, traffic: bool) -> Peer {
        let log = Arc::new(Mutex::new(Log::default()));
        let bumped = watch::Sender::new(0);
        let (sink, reader) = open(addr, user, "recover=1", &log, &bumped).await;
        let mut peer = Peer {
            user: user.to_owned(),
            log,
            bumped,
            sink,
            reader,
            joined: Instant::now(),
            sent: Arc::default(),
            sending: None,
            recovery: None,
            at: addr,
        };
        assert!(peer.until(|l| l.session.is_some()).await, "{user}: no $session");
        let frame = json!({ "event": "join", "data": ROOM, "id": 0 });
        assert!(send(&peer.sink, frame).await, "{user}: the join was not sent");
        assert!(
            peer.until(|l| l.acks.contains(&0)).await,
            "{user}: the join was not answered"
        );
        peer.joined = Instant::now();
        if traffic {
            assert!(peer.until(|l| !l.got.is_empty()).await, "{user}: nothing in the room");
        }
        peer
    }

    /// Waits until `check` holds for the log, at most [`PATIENCE`].
    async fn until(&self, check: impl Fn(&Log) -> bool) -> bool {
        let deadline = Instant::now() + PATIENCE;
        let mut bumps = self.bumped.subscribe();
        loop {
            bumps.borrow_and_update();
            if check(&self.log.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, bumps.changed()).await.is_err() {
                return check(&self.log.lock());
            }
        }
    }

    /// Starts sending numbered messages to the room, each after the last one's ack.
    fn start_sending(&mut self) {
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, sent, log, mut bumps) = (
            self.sink.clone(),
            self.sent.clone(),
            self.log.clone(),
            self.bumped.subscribe(),
        );
        let (user, halt) = (self.user.clone(), stop.clone());
        let first = sent.lock().last().map_or(1, |s| s.n + 1);
        let task = tokio::spawn(async move {
            for n in first.. {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                let at = Instant::now();
                let frame = json!({ "event": "say", "data": { "from": user, "n": n }, "id": n });
                if !send(&sink, frame).await {
                    return;
                }
                let deadline = at + PATIENCE;
                let acked = loop {
                    bumps.borrow_and_update();
                    if log.lock().acks.contains(&n) {
                        break Some(Instant::now());
                    }
                    if log.lock().ended || tokio::time::timeout_at(deadline, bumps.changed()).await.is_err() {
                        break None;
                    }
                };
                sent.lock().push(Sent { n, at, acked });
                if acked.is_none() {
                    return;
                }
                tokio::time::sleep(PACE).await;
            }
        });
        self.sending = Some((stop, task));
    }

    async fn stop_sending(&mut self) {
        if let Some((stop, task)) = self.sending.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = task.await;
        }
    }

    /// Drops the connection without a close frame, as a network that went away does.
    async fn drop_connection(&mut self) {
        self.stop_sending().await;
        // The socket closes once both halves are gone.
        self.reader.abort();
        self.sink.lock().await.take();
    }

    /// Comes back on `addr`, after [`RECONNECT`], with the session, its epoch and the last
    /// offset received; returns the `$session` answer.
    async fn resume(&mut self, addr: SocketAddr) -> Value {
        tokio::time::sleep(RECONNECT).await;
        let (session, epoch) = {
            let log = self.log.lock();
            let data = log.session.as_ref().expect("a session");
            (
                data["session"].as_str().unwrap().to_owned(),
                data["epoch"].as_str().unwrap().to_owned(),
            )
        };
        let offset = self.log.lock().got.iter().filter_map(|g| g.offset).max();
        let mut query = format!("session={session}&epoch={epoch}");
        if let Some(offset) = offset {
            let _ = write!(query, "&offset={offset}");
        }
        {
            let mut log = self.log.lock();
            log.session = None;
            log.ended = false;
            log.server_closed = false;
            let at = log.got.len();
            log.marks.push((at, format!("resumed from {offset:?} on {addr}")));
        }
        let (sink, reader) = open(addr, &self.user, &query, &self.log, &self.bumped).await;
        self.at = addr;
        self.sink = sink;
        self.reader = reader;
        assert!(self.until(|l| l.session.is_some()).await, "{}: no $session", self.user);
        let answer = self.log.lock().session.clone().unwrap();
        self.recovery = Some(answer.clone());
        answer
    }

    async fn close(mut self) {
        self.stop_sending().await;
        if let Some(mut sink) = self.sink.lock().await.take() {
            let _ = sink.send(Message::Close(None)).await;
        }
        self.reader.abort();
    }

    /// The messages of `from` sent after this session began and acked before `end` (once
    /// [`settle`]d: a message sent before `end` may be acked after it, and its ack read later
    /// still).
    fn due(&self, from: &Peer, end: Instant) -> Vec<u64> {
        let sent = from.sent.lock();
        sent.iter()
            .filter(|s| s.acked_before(end) && s.at > self.joined)
            .map(|s| s.n)
            .collect()
    }
}

/// Opens a connection of `user` to `addr` with `query`, and a task that reads it into `log`.
async fn open(
    addr: SocketAddr,
    user: &str,
    query: &str,
    log: &Arc<Mutex<Log>>,
    bumped: &watch::Sender<u64>,
) -> (Sink, AbortHandle) {
    let client = connect_with(addr, user, query).await;
    let (sink, mut stream) = client.ws.split();
    let (log, bumped) = (log.clone(), bumped.clone());
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            if let Message::Close(frame) = &msg {
                let mut log = log.lock();
                let at = log.got.len();
                log.marks.push((at, format!("closed by the server: {frame:?}")));
                log.server_closed = true;
            }
            let Message::Text(text) = msg else { continue };
            let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            {
                let mut log = log.lock();
                if let Some(id) = frame["ack"].as_u64() {
                    log.acks.insert(id);
                } else if frame["event"] == "$session" {
                    log.session = Some(frame["data"].clone());
                } else if frame["event"] == "said" {
                    log.got.push(Got {
                        from: frame["data"]["from"].as_str().unwrap_or_default().to_owned(),
                        n: frame["data"]["n"].as_u64().unwrap_or_default(),
                        offset: frame["offset"].as_u64(),
                    });
                }
            }
            bumped.send_modify(|v| *v += 1);
        }
        log.lock().ended = true;
        bumped.send_modify(|v| *v += 1);
    });
    (Arc::new(tokio::sync::Mutex::new(Some(sink))), reader.abort_handle())
}

/// Duplicates and reorderings in what a session received. Offsets only go up (one order for
/// the cluster), and the events of one sender that carry an offset keep the sender's order.
/// An event a node delivered without an offset (it could not reach the bus) has no place in
/// that order: it is checked for duplicates only.
fn disorder(got: &[Got]) -> (usize, usize) {
    let (mut duplicated, mut reordered) = (0, 0);
    let mut seen = HashSet::new();
    let mut last_offset = 0;
    let mut last_n: HashMap<&str, u64> = HashMap::new();
    for g in got {
        if !seen.insert((g.from.as_str(), g.n)) {
            duplicated += 1;
            continue;
        }
        let Some(offset) = g.offset else { continue };
        let last = last_n.entry(&g.from).or_default();
        if offset <= last_offset || g.n <= *last {
            reordered += 1;
        }
        last_offset = last_offset.max(offset);
        *last = (*last).max(g.n);
    }
    (duplicated, reordered)
}

// ---------------------------------------------------------------------------------------
// The faults.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// The node's link to the bus is closed, and new connections refused; then restored.
    Cut,
    /// Nothing is forwarded either way on the node's link, and nothing closed; then thawed.
    Freeze,
    /// The node's process is killed with `SIGKILL`; another one takes its place.
    Kill,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Cut => "clean cut",
            Fault::Freeze => "silent freeze",
            Fault::Kill => "kill -9",
        }
    }

    /// How long presence may take to agree on every node, from the end of the fault (from
    /// the kill, for a node killed).
    fn presence_bound(self) -> Duration {
        match self {
            Fault::Kill => TIMING.after_death(),
            Fault::Cut | Fault::Freeze => TIMING.after_heal(),
        }
    }
}

/// The node faults are injected on.
enum Faulty {
    /// In this process, its link to the bus through a proxy.
    Linked {
        hub: Hub,
        addr: SocketAddr,
        proxy: proxy::Proxy,
    },
    /// A process of its own.
    Process(NodeProcess),
    /// A process of its own, its link to the bus behind a wall of the packet filter.
    Walled { node: NodeProcess, wall: Wall },
}

impl Faulty {
    async fn start(bus: &'static Bus, url: &str, prefix: &str, fault: Fault) -> Faulty {
        if fault == Fault::Kill {
            return Faulty::Process(NodeProcess::start(bus, prefix, None).await);
        }
        if bus.walled {
            // The wall first: every connection the node makes is then marked as its own.
            let wall = Wall::build(fault).unwrap_or_else(|e| panic!("the wall for {}: {e}", fault.name()));
            let node = NodeProcess::start(bus, prefix, Some(wall.uid)).await;
            return Faulty::Walled { node, wall };
        }
        let (upstream, _) = (bus.route)(url.to_owned(), None).await;
        let proxy = proxy::Proxy::start(upstream).await;
        let (_, via) = (bus.route)(url.to_owned(), Some(proxy.addr)).await;
        let hub = node_hub(bus, &via, prefix).await;
        let addr = serve_hub(&hub).await;
        Faulty::Linked { hub, addr, proxy }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Faulty::Linked { addr, .. } => *addr,
            Faulty::Process(p) | Faulty::Walled { node: p, .. } => p.addr,
        }
    }

    fn hub(&self) -> Option<&Hub> {
        match self {
            Faulty::Linked { hub, .. } => Some(hub),
            Faulty::Process(_) | Faulty::Walled { .. } => None,
        }
    }

    /// The node process that is asked over HTTP what a hub of this process would be asked.
    fn process(&self) -> Option<&NodeProcess> {
        match self {
            Faulty::Walled { node, .. } => Some(node),
            Faulty::Linked { .. } | Faulty::Process(_) => None,
        }
    }

    fn inject(&mut self, fault: Fault) {
        match (self, fault) {
            (Faulty::Linked { proxy, .. }, Fault::Cut) => proxy.cut(),
            (Faulty::Linked { proxy, .. }, Fault::Freeze) => proxy.freeze(),
            (Faulty::Walled { wall, node }, Fault::Cut | Fault::Freeze) => wall.raise(node.addr.port()),
            (Faulty::Process(p), Fault::Kill) => p.kill(),
            _ => unreachable!("each fault has its kind of node"),
        }
    }

    fn heal(&self) {
        match self {
            Faulty::Linked { proxy, .. } => {
                proxy.restore();
                proxy.thaw();
            }
            Faulty::Walled { wall, .. } => wall.lower(),
            Faulty::Process(_) => {}
        }
    }
}

/// The packet filter's rules that cut or freeze one node process's link to the bus, for a bus
/// the proxy cannot stand in for (a Redis Cluster: its client connects to the addresses the
/// primaries announce). The node runs as a user of its own; a chain of `mangle OUTPUT` marks
/// every TCP connection that user opens (its connections to the bus: the node's WebSocket
/// connections are opened by its clients, and are not marked). The fault is one rule in a chain
/// of `filter OUTPUT` (every packet on loopback, either way, goes through `OUTPUT`):
///
/// - cut: `REJECT --reject-with tcp-reset` for the marked connections' packets (the resets
///   themselves let through), so that a new connection is refused; then the node's open
///   connections to the bus are destroyed (`ss -K`: the node's side fails at once, the
///   primary's side gets a reset). Both sides know, as when the proxy closes a link: without
///   that, a connection either side does not write to would stay half open;
/// - freeze: `DROP`: nothing goes through either way, nothing is closed; TCP retransmits
///   until the rule is gone, as over a network that drops packets and then delivers again.
///
/// The chains are removed when the wall is dropped (a failed round too), and chains left by a
/// run that was killed are removed by the next one. Needs root and `iptables`
/// ([`Wall::available`]).
struct Wall {
    uid: u32,
    chain: String,
    rule: &'static [&'static str],
}

/// The prefix of the chains of every wall, and of this process's: `rtf-<pid>-<fault>`.
const WALL_CHAINS: &str = "rtf-";

fn iptables(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Wall {
    /// Why a wall cannot be built here, if it cannot.
    fn available() -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("cutting a node's link to a Redis Cluster needs root (the packet filter)".into());
        }
        let out = Command::new("iptables")
            .args(["-w", "-t", "mangle", "-S", "OUTPUT"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cutting a node's link to a Redis Cluster needs iptables: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "iptables does not work here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        match Command::new("ss").arg("-V").stdout(Stdio::null()).status() {
            Ok(s) if s.success() => Ok(()),
            _ => Err("cutting a node's link to a Redis Cluster needs ss (iproute2)".into()),
        }
    }

    fn build(fault: Fault) -> Result<Wall, String> {
        Wall::clear_stale();
        let pid = std::process::id();
        let (index, rule): (u32, &'static [&'static str]) = match fault {
            Fault::Cut => (
                0,
                &[
                    "-p",
                    "tcp",
                    "!",
                    "--tcp-flags",
                    "RST",
                    "RST",
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset",
                ],
            ),
            Fault::Freeze => (1, &["-j", "DROP"]),
            Fault::Kill => unreachable!("a node killed needs no wall"),
        };
        // A user (and a mark) no other run on this machine uses at the same time.
        let uid = 3_000_000 + pid * 4 + index;
        let wall = Wall {
            uid,
            chain: format!("{WALL_CHAINS}{pid}-{index}"),
            rule,
        };
        let (uid_s, chain) = (uid.to_string(), wall.chain.as_str());
        iptables(&["-t", "mangle", "-N", chain])?;
        iptables(&[
            "-t",
            "mangle",
            "-A",
            chain,
            "-p",
            "tcp",
            "-m",
            "owner",
            "--uid-owner",
            &uid_s,
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "CONNMARK",
            "--set-mark",
            &uid_s,
        ])?;
        iptables(&["-t", "mangle", "-A", "OUTPUT", "-j", chain])?;
        iptables(&["-N", chain])?;
        iptables(&["-A", "OUTPUT", "-j", chain])?;
        Ok(wall)
    }

    /// The fault: the rule in the chain; for a cut, the open connections of the node (on
    /// `node_port`, the one it serves on, are its clients') destroyed after it. They are listed
    /// before the rule is in: once it is, the first packet of each gets it reset, and the node
    /// may close the others on its own before they are destroyed.
    fn raise(&self, node_port: u16) {
        let cut = self.rule.contains(&"REJECT");
        let links = if cut { self.bus_links(node_port) } else { Vec::new() };
        let mark = self.uid.to_string();
        let mut args = vec!["-A", self.chain.as_str(), "-m", "connmark", "--mark", &mark];
        args.extend_from_slice(self.rule);
        iptables(&args).unwrap();
        if cut {
            // Each by both its ends: another process's connection may have the same local
            // port (to another address).
            let filter = links
                .iter()
                .map(|(local, peer)| format!("( src {local} and dst {peer} )"))
                .collect::<Vec<_>>()
                .join(" or ");
            let status = Command::new("ss")
                .args(["-K", "-tnH", "state", "connected", &format!("( {filter} )")])
                .stdout(Stdio::null())
                .status()
                .expect("ss destroys the node's connections");
            assert!(status.success(), "ss -K: {status}");
        }
    }

    /// The node's open connections to the bus, by their local and peer addresses (at least
    /// one: a node that has none has nothing to cut).
    fn bus_links(&self, node_port: u16) -> Vec<(String, String)> {
        let out = Command::new("ss")
            .args(["-tnHe", "state", "connected"])
            .output()
            .expect("ss lists the node's connections");
        let owner = format!(" uid:{} ", self.uid);
        let served = format!(":{node_port}");
        let links: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| line.contains(&owner))
            // State, Recv-Q, Send-Q, then the local and the peer address.
            .filter_map(|line| {
                let mut addresses = line.split_whitespace().filter(|f| f.contains(':'));
                Some((addresses.next()?.to_owned(), addresses.next()?.to_owned()))
            })
            .filter(|(local, _)| !local.ends_with(&served))
            .collect();
        assert!(
            !links.is_empty(),
            "the node has no connection to the bus to cut: {out:?}"
        );
        links
    }

    /// The end of the fault: the chain empty again.
    fn lower(&self) {
        iptables(&["-F", &self.chain]).unwrap();
    }

    /// Removes the chain `chain` of `table` and the jump to it, whatever of them is there.
    fn remove(table: &str, chain: &str) {
        while iptables(&["-t", table, "-D", "OUTPUT", "-j", chain]).is_ok() {}
        let _ = iptables(&["-t", table, "-F", chain]);
        let _ = iptables(&["-t", table, "-X", chain]);
    }

    /// Removes the chains of runs whose process is gone.
    fn clear_stale() {
        for table in ["mangle", "filter"] {
            let Ok(out) = Command::new("iptables").args(["-w", "-t", table, "-S"]).output() else {
                continue;
            };
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some(chain) = line.strip_prefix("-N ") else {
                    continue;
                };
                let Some(pid) = chain.strip_prefix(WALL_CHAINS).and_then(|r| r.split('-').next()) else {
                    continue;
                };
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    Wall::remove(table, chain);
                }
            }
        }
    }
}

impl Drop for Wall {
    fn drop(&mut self) {
        Wall::remove("filter", &self.chain);
        Wall::remove("mangle", &self.chain);
    }
}

/// When a client of the faulty node leaves it and comes back on a healthy node.
#[derive(Clone, Copy)]
enum Move {
    /// It drops during the fault and comes back at once (killed: its socket died).
    AtOnce,
    /// It drops during the fault and comes back once the fault healed and presence agrees.
    AfterHeal,
    /// It stays connected through the fault, and drops once the node is well again.
    Stayed,
}

const MOVES: [Move; 3] = [Move::AtOnce, Move::AfterHeal, Move::Stayed];

impl Move {
    fn name(self) -> &'static str {
        match self {
            Move::AtOnce => "at once",
            Move::AfterHeal => "after heal",
            Move::Stayed => "stayed",
        }
    }
}

/// The counts of one fault over its rounds.
#[derive(Default)]
struct Report {
    rounds: usize,
    /// Messages sent by healthy nodes' clients and acked.
    messages: usize,
    /// Messages sent by the faulty node's clients and acked.
    faulty_messages: usize,
    sessions: usize,
    recovered: usize,
    /// Messages due to recovered sessions and never delivered to them.
    lost: usize,
    duplicated: usize,
    reordered: usize,
    /// Events delivered without an offset (by a node that could not reach the bus).
    unkept: usize,
    /// `reason (when it came back)` → sessions told they cannot be recovered.
    not_recovered: std::collections::BTreeMap<String, usize>,
    convergence: Vec<Duration>,
    /// Rounds after which presence did not agree within twice its bound.
    unconverged: usize,
    /// Rounds after which a fresh client on the faulty node (or its replacement) could send
    /// and receive across nodes.
    usable: usize,
    /// Messages the healthy nodes' own clients (never moved) did not get.
    healthy_lost: usize,
    /// Recovered sessions closed by the server after they came back, that came back again.
    resumed_again: usize,
    /// What each node's engine counted, healthy nodes first.
    engines: Vec<String>,
    /// What went wrong, one line each.
    failures: Vec<String>,
    /// The recovered sessions that lost messages, one line each.
    losses: Vec<String>,
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

impl Report {
    fn row(&self, bus: &str, fault: Fault) -> String {
        let mut times = self.convergence.clone();
        times.sort();
        let ms = |d: Duration| d.as_millis();
        let reasons = if self.not_recovered.is_empty() {
            "none".to_owned()
        } else {
            self.not_recovered
                .iter()
                .map(|(r, n)| format!("{n} × {r}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        format!(
            "| {bus} | {} | {} | {} + {} | {} | {} | {} | {} | {} | {} | {} | {}/{}/{} ms (≤ {} ms){} | {}/{} | {} |",
            fault.name(),
            self.rounds,
            self.messages,
            self.faulty_messages,
            self.sessions,
            self.recovered,
            self.lost,
            self.duplicated,
            self.reordered,
            self.unkept,
            reasons,
            ms(times.first().copied().unwrap_or_default()),
            ms(percentile(&times, 50)),
            ms(times.last().copied().unwrap_or_default()),
            ms(fault.presence_bound()),
            match self.unconverged {
                0 => String::new(),
                n => format!("; {n} never (within {} ms)", ms(2 * fault.presence_bound())),
            },
            self.usable,
            self.rounds,
            self.healthy_lost,
        )
    }
}

const HEADER: &str = "| bus | fault | rounds | messages (healthy + faulty node) | sessions | recovered | lost | duplicated | reordered | without offset | not recovered (reason, when it came back) | presence agrees min/median/max | usable after | healthy clients' live misses |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// Three nodes on `bus`: two healthy, one for the faults.
struct Cluster {
    bus: &'static Bus,
    url: String,
    prefix: String,
    healthy: Vec<(Hub, SocketAddr)>,
    faulty: Faulty,
}

impl Cluster {
    /// The hubs that can be asked (the faulty node too when it is in this process).
    fn hubs(&self) -> Vec<&Hub> {
        let mut hubs: Vec<&Hub> = self.healthy.iter().map(|(h, _)| h).collect();
        hubs.extend(self.faulty.hub());
        hubs
    }

    /// The time from `since` until every node's `cluster_online_users()` is `expected`, whole;
    /// `None` if that did not happen within `limit`.
    /// `Err` holds what each node said last.
    async fn presence_agrees(
        &self,
        expected: &BTreeSet<String>,
        since: Instant,
        limit: Duration,
    ) -> Result<Duration, String> {
        let expected: Vec<String> = expected.iter().cloned().collect();
        loop {
            let mut agree = true;
            let mut said = Vec::new();
            let mut answers = Vec::new();
            for hub in self.hubs() {
                let answer = hub.cluster_online_users().await;
                answers.push(Ok((answer.value, answer.partial)));
            }
            if let Some(node) = self.faulty.process() {
                answers.push(node.presence().await);
            }
            for answer in answers {
                match answer {
                    Ok((value, partial)) => {
                        agree &= !partial && value == expected;
                        said.push(format!("{value:?}{}", if partial { " (partial)" } else { "" }));
                    }
                    Err(e) => {
                        agree = false;
                        said.push(e);
                    }
                }
            }
            if agree {
                return Ok(since.elapsed());
            }
            if since.elapsed() > limit {
                return Err(format!("expected {expected:?}; the nodes said {}", said.join(", ")));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Runs [`ROUNDS`] rounds of `fault` on a cluster on `bus`.
async fn run(bus: &'static Bus, url: String, fault: Fault) -> Report {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("test-faults-{}-{nanos}", fault.name().replace([' ', '-'], ""));
    let mut healthy = Vec::new();
    for _ in 0..2 {
        let hub = node_hub(bus, &url, &prefix).await;
        let addr = serve_hub(&hub).await;
        healthy.push((hub, addr));
    }
    let faulty = Faulty::start(bus, &url, &prefix, fault).await;
    let mut cluster = Cluster {
        bus,
        url,
        prefix,
        healthy,
        faulty,
    };
    // A client on each healthy node, in the room, sending throughout.
    let mut senders = Vec::new();
    for (i, (_, addr)) in cluster.healthy.iter().enumerate() {
        let mut sender = Peer::join_quiet(*addr, &format!("healthy-{i}")).await;
        sender.start_sending();
        senders.push(sender);
    }
    let mut report = Report::default();
    for round in 0..ROUNDS {
        self::round(&mut cluster, &senders, fault, round, &mut report).await;
        report.rounds += 1;
    }
    let end = Instant::now();
    for sender in &mut senders {
        sender.stop_sending().await;
    }
    // The healthy nodes' own clients, never moved, missed nothing of each other.
    for (i, observer) in senders.iter().enumerate() {
        wait_for(observer, &senders, end).await;
        let log = observer.log.lock();
        let got: HashSet<(&str, u64)> = log.got.iter().map(|g| (g.from.as_str(), g.n)).collect();
        for from in &senders {
            let missed = observer
                .due(from, end)
                .into_iter()
                .filter(|n| !got.contains(&(from.user.as_str(), *n)));
            report.healthy_lost += missed.count();
        }
        let (duplicated, reordered) = disorder(&log.got);
        if duplicated + reordered > 0 {
            report.failures.push(format!(
                "healthy client {i}: {duplicated} duplicated, {reordered} reordered"
            ));
        }
        report.duplicated += duplicated;
        report.reordered += reordered;
    }
    for sender in &senders {
        report.messages += sender.sent.lock().iter().filter(|s| s.acked.is_some()).count();
    }
    for sender in senders {
        sender.close().await;
    }
    // What each node's engine counted (healthy ones first): ops it could not hand to the bus
    // show as lost.
    for hub in cluster.hubs() {
        if let Some(stats) = hub.adapter().map(|a| a.stats()) {
            report.engines.push(engine_stats(&stats));
        }
    }
    if let Some(node) = cluster.faulty.process() {
        report.engines.push(node.get("/stats").await.unwrap_or_else(|e| e));
    }
    report
}

/// Waits until every sender knows whether each message it sent before `end` was acked before
/// it: it has gone on to a message sent after `end`, or stopped. Until then, a message sent
/// just before `end` may still be waiting for its ack, and whether it is due is not known
/// yet: deciding before would wait for less than is then checked.
async fn settle(senders: &[Peer], end: Instant) {
    let deadline = Instant::now() + PATIENCE + Duration::from_secs(1);
    for from in senders {
        while Instant::now() < deadline {
            let past = from.sent.lock().last().is_some_and(|s| s.at >= end);
            let stopped = from.sending.as_ref().is_none_or(|(_, task)| task.is_finished());
            if past || stopped {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Waits until `peer` has, from every sender, its last message acked before `end` (each
/// sender's messages come in its order: then it has all it will get).
async fn wait_for(peer: &Peer, senders: &[Peer], end: Instant) -> bool {
    let mut all = true;
    for from in senders {
        let Some(last) = from
            .sent
            .lock()
            .iter()
            .filter(|s| s.acked_before(end))
            .map(|s| s.n)
            .max()
        else {
            continue;
        };
        all &= peer
            .until(|l| l.got.iter().any(|g| g.from == from.user && g.n >= last))
            .await;
    }
    all
}

impl Peer {
    /// Like [`join`](Self::join), without waiting for an event in the room.
    async fn join_quiet(addr: SocketAddr, user: &str) -> Peer {
        Peer::join_inner(addr, user, false).await
    }
}

/// One round: clients on the faulty node (sending), the fault, their moves to healthy
/// nodes, presence, the faulty node (or its replacement) checked for use, and the count.
async fn round(cluster: &mut Cluster, senders: &[Peer], fault: Fault, round: usize, report: &mut Report) {
    let duration = DURATIONS[round % DURATIONS.len()];
    let at = cluster.faulty.addr();
    let mut victims = Vec::new();
    for m in MOVES {
        let mut victim = Peer::join(at, &format!("r{round}-{}", m.name().replace(' ', "-"))).await;
        victim.start_sending();
        victims.push(victim);
    }
    let mut resident = Peer::join(at, &format!("r{round}-resident")).await;
    resident.start_sending();
    let healthy_at = |i: usize| cluster.healthy[i % cluster.healthy.len()].1;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let start = Instant::now();
    tracing::info!(round, ?duration, "fault injected");
    cluster.faulty.inject(fault);
    let healed;
    if fault == Fault::Kill {
        healed = start;
        for victim in victims.iter_mut().chain([&mut resident]) {
            victim.drop_connection().await;
        }
        victims[0].resume(healthy_at(round)).await;
    } else {
        tokio::time::sleep(duration / 2).await;
        for victim in &mut victims[..2] {
            victim.drop_connection().await;
        }
        victims[0].resume(healthy_at(round)).await;
        tokio::time::sleep_until(start + duration).await;
        cluster.faulty.heal();
        tracing::info!(round, "healed");
        healed = Instant::now();
    }

    // Presence: the healthy senders, the client back at once, and while the node lives, the
    // ones still on it.
    let mut expected: BTreeSet<String> = senders.iter().map(|s| s.user.clone()).collect();
    expected.insert(victims[0].user.clone());
    if fault != Fault::Kill {
        expected.insert(victims[2].user.clone());
        expected.insert(resident.user.clone());
    }
    let bound = fault.presence_bound();
    match cluster.presence_agrees(&expected, healed, 2 * bound).await {
        Ok(took) => {
            if took > bound {
                report
                    .failures
                    .push(format!("round {round}: presence agreed after {took:?}, over {bound:?}"));
            }
            report.convergence.push(took);
        }
        Err(said) => {
            report.unconverged += 1;
            report.failures.push(format!(
                "round {round}: presence did not agree within {:?} of the fault's end: {said}",
                2 * bound
            ));
        }
    }

    victims[1].resume(healthy_at(round + 1)).await;
    if fault == Fault::Kill {
        cluster.faulty = Faulty::start(cluster.bus, &cluster.url, &cluster.prefix, fault).await;
    }
    tracing::info!(round, "usable?");
    match usable(cluster.faulty.addr(), &format!("r{round}-fresh"), senders).await {
        Ok(()) => report.usable += 1,
        Err(why) => report
            .failures
            .push(format!("round {round}: the faulty node is wedged: {why}")),
    }
    if fault != Fault::Kill {
        resident.stop_sending().await;
        victims[2].drop_connection().await;
    }
    victims[2].resume(healthy_at(round)).await;

    // Everything the healthy senders had acked by now is due to every recovered session.
    let end = Instant::now();
    settle(senders, end).await;
    for (victim, m) in victims.iter_mut().zip(MOVES) {
        report.sessions += 1;
        let mut answer = victim.recovery.clone().unwrap_or_default();
        if answer["recovered"] == true {
            report.recovered += 1;
            // A connection the server closed after the comeback (`4004`: its node missed history
            // events it could not read back) comes back again with its session, as a client
            // does; what it missed is then in that replay.
            let mut again = 0;
            while !wait_for(victim, senders, end).await && again < 3 {
                let closed = {
                    let log = victim.log.lock();
                    log.ended && log.server_closed
                };
                if !closed {
                    break;
                }
                again += 1;
                answer = victim.resume(victim.at).await;
                report.resumed_again += 1;
                if answer["recovered"] != true {
                    report.failures.push(format!(
                        "round {round}, {}: closed by the server after coming back, and not recovered then: {answer}",
                        m.name()
                    ));
                    break;
                }
            }
            let log = victim.log.lock();
            let got: HashSet<(&str, u64)> = log.got.iter().map(|g| (g.from.as_str(), g.n)).collect();
            let mut lost = Vec::new();
            let mut first_lost = None;
            for from in senders {
                for n in victim.due(from, end) {
                    if !got.contains(&(from.user.as_str(), n)) {
                        first_lost.get_or_insert((from, n));
                        lost.push(format!("{}#{n}", from.user));
                    }
                }
            }
            if let Some((from, n)) = first_lost {
                report.losses.push(format!(
                    "round {round} ({:?} fault), came back {}: {} lost ({} … {}); replay said {}\n{}",
                    duration,
                    m.name(),
                    lost.len(),
                    lost[0],
                    lost[lost.len() - 1],
                    answer,
                    account(&log, from, n, senders)
                ));
            }
            report.lost += lost.len();
        } else {
            let reason = answer["reason"].as_str().unwrap_or("no answer").to_owned();
            *report
                .not_recovered
                .entry(format!("{reason} ({})", m.name()))
                .or_default() += 1;
        }
        let log = victim.log.lock();
        let (duplicated, reordered) = disorder(&log.got);
        if duplicated + reordered > 0 {
            report.failures.push(format!(
                "round {round}, {}: {duplicated} duplicated, {reordered} reordered",
                m.name()
            ));
        }
        report.duplicated += duplicated;
        report.reordered += reordered;
        report.unkept += log.got.iter().filter(|g| g.offset.is_none()).count();
    }
    for peer in victims.into_iter().chain([resident]) {
        report.faulty_messages += peer.sent.lock().iter().filter(|s| s.acked.is_some()).count();
        peer.close().await;
    }
}

/// Where the message `n` of `from`, which a session never got, falls in what it got: its
/// offset (as its sender got it), the events of the session near that offset, and what
/// happened to its connections meanwhile.
fn account(log: &Log, from: &Peer, n: u64, senders: &[Peer]) -> String {
    let offset = (from.log.lock().got.iter())
        .find(|g| g.from == from.user && g.n == n)
        .and_then(|g| g.offset);
    let mut out = format!("    {}#{n} has offset {offset:?}", from.user);
    // How each healthy node's client got it: not at all, once, twice; with an offset or not.
    for peer in senders {
        let copies: Vec<Option<u64>> = (peer.log.lock().got.iter())
            .filter(|g| g.from == from.user && g.n == n)
            .map(|g| g.offset)
            .collect();
        let _ = write!(out, "; {} got it at offsets {copies:?}", peer.user);
    }
    let near = |o: Option<u64>| match (o, offset) {
        (Some(o), Some(at)) => o + 5 >= at && o <= at + 5,
        _ => false,
    };
    for (i, g) in log.got.iter().enumerate() {
        for (_, mark) in log.marks.iter().filter(|(at, _)| *at == i) {
            let _ = write!(out, "\n    [{i}] {mark}");
        }
        if near(g.offset) {
            let _ = write!(out, "\n    [{i}] {}#{} offset {:?}", g.from, g.n, g.offset);
        }
    }
    for (at, mark) in log.marks.iter().filter(|(at, _)| *at >= log.got.len()) {
        let _ = write!(out, "\n    [{at}] {mark}");
    }
    out
}

/// A fresh client on `addr` gets messages from the healthy nodes, and its own message reaches
/// them.
async fn usable(addr: SocketAddr, user: &str, senders: &[Peer]) -> Result<(), String> {
    let fresh = Peer::join_quiet(addr, user).await;
    let since = fresh.joined;
    let got_healthy = fresh
        .until(|l| {
            senders.iter().all(|s| {
                let sent = s.sent.lock();
                l.got
                    .iter()
                    .any(|g| g.from == s.user && sent.iter().any(|x| x.n == g.n && x.at > since))
            })
        })
        .await;
    let said = json!({ "event": "say", "data": { "from": user, "n": 1 }, "id": 1 });
    let sent = send(&fresh.sink, said).await && fresh.until(|l| l.acks.contains(&1)).await;
    let mut reached = true;
    for sender in senders {
        reached &= sender.until(|l| l.got.iter().any(|g| g.from == user)).await;
    }
    fresh.close().await;
    match (got_healthy, sent, reached) {
        (true, true, true) => Ok(()),
        _ => Err(format!(
            "received from healthy nodes: {got_healthy}, acked: {sent}, reached them: {reached}"
        )),
    }
}

/// Runs `fault` on every bus whose variable is set; prints the summary; asserts.
async fn harness(fault: Fault) {
    // `RUST_LOG=tower_realtime=debug` shows what the nodes of this process say.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    for bus in BUSES {
        let what = format!("cluster fault test ({}, {})", fault.name(), bus.name);
        if let Err(why) = (bus.faults)(fault) {
            let _ = writeln!(std::io::stderr(), "{what}: not run on this bus: {why}");
            continue;
        }
        let Ok(url) = std::env::var(bus.env) else {
            common::did_not_run(&what, &format!("set {}={}", bus.env, bus.example));
            continue;
        };
        if let Some(feature) = bus.missing_feature {
            common::did_not_run(&what, &format!("build with --features {feature}"));
            continue;
        }
        if let Some((var, why)) = bus.also_needs {
            if std::env::var_os(var).is_none() {
                common::did_not_run(&what, &format!("{why}; set {var}=1 to run it"));
                continue;
            }
        }
        // Asked for, a wall that cannot be built is a failure, not a row that did not run.
        if bus.walled && fault != Fault::Kill {
            if let Err(why) = Wall::available() {
                panic!("{what}: {REDIS_CLUSTER_FAULTS} is set, but {why}");
            }
        }
        let began = Instant::now();
        let report = run(bus, url, fault).await;
        let mut summary = format!("\n{HEADER}\n{}\n", report.row(bus.name, fault));
        let _ = writeln!(summary, "({} rounds in {:?})", report.rounds, began.elapsed());
        if !report.losses.is_empty() {
            for (i, engine) in report.engines.iter().enumerate() {
                let _ = writeln!(summary, "  engine of node {i}: {engine}");
            }
        }
        if report.resumed_again > 0 {
            let _ = writeln!(
                summary,
                "({} recovered sessions were closed by the server after they came back, and came back again)",
                report.resumed_again
            );
        }
        for line in report.losses.iter().chain(&report.failures) {
            let _ = writeln!(summary, "  {line}");
        }
        let _ = writeln!(std::io::stderr(), "{summary}");
        // The subtle cases these catch (see docs/cluster.md, "Faults, tested"):
        // - `lost`: a client that stays connected to a node through a cut, or a freeze longer
        //   than `command_timeout`, must get the history events the node missed meanwhile
        //   (read back from Redis) before later ones, or be closed before any later one, so
        //   the offset it resumes from is never past a hole.
        // - presence, after a freeze longer than `node_timeout`: the node's heartbeat that
        //   timed out during the freeze may run in Redis when the link thaws and register the
        //   node again; the node must still publish its presence again.
        assert_eq!(report.rounds, ROUNDS);
        assert_eq!(report.duplicated, 0, "messages duplicated: {summary}");
        assert_eq!(report.reordered, 0, "messages reordered: {summary}");
        // A message acked by the server, due to a session that was told it was recovered,
        // and never delivered to it: a loss nobody was told of.
        assert_eq!(report.lost, 0, "recovered sessions lost messages: {summary}");
        assert!(report.failures.is_empty(), "{summary}");
        assert!(
            report.recovered > 0 || fault == Fault::Kill,
            "no session recovered: {summary}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_cut_of_a_nodes_link_to_the_bus() {
    harness(Fault::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_freeze_of_a_nodes_link_to_the_bus() {
    harness(Fault::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node() {
    harness(Fault::Kill).await;
}
