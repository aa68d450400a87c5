//! A load generator for a WebSocket server speaking the native protocol or Socket.IO: the
//! chat demo, your own app, or the baselines (`examples/baseline_broadcast.rs`,
//! `examples/baseline_socketioxide.rs`).
//!
//! It opens `--conns` real WebSocket connections (tokens in the `token` query parameter),
//! joins each to rooms with the demo's `joinRoom` event (waiting for the ack), then drives
//! broadcasts at a fixed rate or flat out, and reports:
//!
//! - handshakes/s, with at most `--inflight` handshakes under way;
//! - server RSS per connection, from `/proc/<--server-pid>/status` (`VmRSS`) before connecting
//!   and after the connections have joined their rooms and settled;
//! - delivered messages/s, and p50/p99/max latency from send to receipt;
//! - connections the server closed during the run, and why the first of them was closed.
//!
//! ```text
//! # the server (the demo; raise the per-user cap, and the fd limit for 10,000 connections)
//! ulimit -n 20000; MAX_CONNECTIONS_PER_USER=100000 cargo run --release --example chat &
//! # fan-out to a 1,000-connection room, flat out
//! cargo run --release --example loadgen -- --conns 1000 --server-pid $(pgrep -n chat)
//! # 10,000 connections, each in 2 rooms of 100, idle (memory)
//! cargo run --release --example loadgen -- --conns 10000 --rooms-per-conn 2 --room-size 100 --source none
//! # 10 broadcasts/s to all 10,000 connections, from HTTP (POST /posts)
//! cargo run --release --example loadgen -- --conns 10000 --source http --rate 10 --duration 30
//! # one room split over two demo instances in a cluster (built with `--features redis`, both
//! # with the same REDIS_URL and JWT_SECRET): connections alternate between the two
//! cargo run --release --example loadgen -- --url ws://127.0.0.1:3400/ws,ws://127.0.0.1:3401/ws
//! ```
//!
//! # How a broadcast is measured
//!
//! Every broadcast carries `lg:<seq>:<unix ns>` — the wall-clock time at which the load
//! generator sent it — in its text. Each receipt records `now − that time`, so the latency
//! covers the way in (a WebSocket frame, or an HTTP request), the handler, the fan-out and
//! the way out to every recipient: what a user of the server sees. Client and server share
//! one machine, hence one clock.
//!
//! - `--source ws` (default): one more connection, the broadcaster, joins the first room
//!   (`room0-0`) and sends `message` `{"text","room"}`; the server sends `message` to the whole
//!   room. The recipients are the other members of that room.
//! - `--source http`: `POST <http>/posts` `{"title"}`; the demo sends `notification` to
//!   every connection. The recipients are all the connections.
//! - `--source none`: no broadcasts (idle memory, handshakes).
//!
//! Flat out (`--rate 0`, the default), the broadcaster keeps at most `--window` broadcasts
//! in flight: broadcast `n + window` is sent only once every recipient has received
//! broadcast `n`. No queue can then grow past `window` messages, so a server with bounded
//! queues (1,024 here) never has to drop or close anyone, and the rate measured is the rate
//! at which everything was delivered. At a fixed rate the window is only a safety limit.
//!
//! Delivered messages/s = deliveries of the broadcasts sent during `--duration` (after
//! `--warmup`), divided by the time from the first of them being sent to the last delivery.
//!
//! # Users and rooms
//!
//! Connection `i` is user `load-<i % users>` (`--users 0`: `load-<i>`, one user each) and
//! joins `room<j>-<i / room-size>` for `j` in `0..rooms-per-conn`. The default is one user
//! for every connection: with one user per connection, the demo sends the whole online list
//! to everyone each time a user comes online, which is quadratic in the number of users and
//! would measure that instead. Raise the demo's per-user cap accordingly
//! (`MAX_CONNECTIONS_PER_USER`).
//!
//! # Socket.IO
//!
//! With `--protocol socketio` the connections speak Socket.IO v5 over a WebSocket (Engine.IO
//! v4): `--url` is the Engine.IO path (`ws://127.0.0.1:3000/socket.io/`; `EIO=4` and
//! `transport=websocket` are added), the token goes in the CONNECT packet's `auth`
//! (`{"token"}`) as well as in the query, the same events are sent as Socket.IO EVENT
//! packets (`joinRoom` with an ack id), and Engine.IO pings are answered.
//!
//! Loopback only: this tool refuses any host but 127.x.x.x, [::1] and localhost.

use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_tungstenite::tungstenite::{protocol::WebSocketConfig, Message, Utf8Bytes};

const DEV_SECRET: &str = "tower-realtime-demo-secret-change-me-please";
/// Deliveries are counted per broadcast in a ring of this many slots (a power of two).
const RING: usize = 1 << 16;
/// A run stops if no broadcast completes for this long (a recipient stopped reading, or was
/// closed by the server).
const STALL: Duration = Duration::from_secs(10);

const USAGE: &str = "\
loadgen: WebSocket load, native protocol or Socket.IO (loopback only)

  --url URL[,URL...]     WebSocket endpoint(s)         [ws://127.0.0.1:3000/ws]
                         several: connections spread over them round-robin, the
                         broadcaster (and --http) on the first
  --protocol native|socketio                           [native]
  --http URL             HTTP base for /posts, /login  [derived from the first --url]
  --conns N              connections                   [1000]
  --users N              distinct users (0: one per connection) [1]
  --rooms-per-conn N     rooms each connection joins   [1] (0: none)
  --room-size N          connections per room (0: all) [0]
  --inflight N           handshakes under way at most  [200]
  --source ws|http|none  where broadcasts come from    [ws]
  --rate R               broadcasts/s (0: flat out)    [0]
  --window N             broadcasts in flight at most  [128]
  --duration S           measured seconds              [10]
  --warmup S             unmeasured seconds first      [2]
  --settle S             pause before reading RSS      [2]
  --server-pid PID       read the server's VmRSS and CPU time
  --secret S             HS256 secret for tokens       [$JWT_SECRET or the demo's]
  --login                get tokens from POST <http>/login instead of signing them
  --json                 also print a one-line JSON summary
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Ws,
    Http,
    None,
}

/// What the connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Native,
    SocketIo,
}

impl Protocol {
    /// The address to open, with the token (and Engine.IO's parameters).
    fn url(self, url: &str, token: &str) -> String {
        let url = with_token(url, token);
        match self {
            Protocol::Native => url,
            Protocol::SocketIo => format!("{url}&EIO=4&transport=websocket"),
        }
    }

    /// Joins `room`, asking for an ack with `id`.
    fn join(self, room: &str, id: usize) -> String {
        match self {
            Protocol::Native => json!({ "event": "joinRoom", "data": room, "id": id }).to_string(),
            Protocol::SocketIo => format!("42{id}{}", json!(["joinRoom", room])),
        }
    }

    fn is_ack(self, text: &str) -> bool {
        match self {
            Protocol::Native => text.starts_with("{\"ack\":"),
            Protocol::SocketIo => text.starts_with("43"),
        }
    }

    fn is_refusal(self, text: &str) -> bool {
        match self {
            Protocol::Native => text.contains("\"event\":\"error\""),
            Protocol::SocketIo => text.starts_with("44") || text.starts_with("42[\"error\""),
        }
    }

    /// A broadcast to `room0-0`.
    fn message(self, stamp: &str) -> String {
        let data = json!({ "text": stamp, "room": "room0-0" });
        match self {
            Protocol::Native => json!({ "event": "message", "data": data }).to_string(),
            Protocol::SocketIo => format!("42{}", json!(["message", data])),
        }
    }

    /// The answer a frame needs at once, if any: Engine.IO's pong.
    fn answer(self, text: &str) -> Option<&'static str> {
        (self == Protocol::SocketIo && text == "2").then_some("3")
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a connection; for Socket.IO, also the Engine.IO session and the default namespace.
async fn open(protocol: Protocol, url: String, token: &str) -> Result<Ws, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    async fn next(ws: &mut Ws) -> Result<Utf8Bytes, String> {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => Ok(t),
            Ok(Some(Ok(_))) => Ok(Utf8Bytes::default()),
            _ => Err("socket.io: connection lost while opening".to_owned()),
        }
    }
    if protocol == Protocol::SocketIo {
        if !next(&mut ws).await?.starts_with('0') {
            return Err("socket.io: no Engine.IO open packet".into());
        }
        let connect = format!("40{}", json!({ "token": token }));
        ws.send(Message::Text(connect.into()))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let t = next(&mut ws).await?;
            if t.starts_with("40") {
                break;
            }
            if t.starts_with("44") {
                return Err(format!("socket.io: CONNECT refused: {}", t.as_str()));
            }
            // A server may ping before it answers the CONNECT (socketioxide pings at once):
            // unanswered, that ping closes the connection a ping timeout later.
            if let Some(answer) = protocol.answer(&t) {
                ws.send(Message::text(answer)).await.map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(ws)
}

#[derive(Debug, Clone)]
struct Args {
    url: String,
    protocol: Protocol,
    /// `url` split at commas: the servers, connections spread over them round-robin.
    urls: Vec<String>,
    http: String,
    conns: usize,
    users: usize,
    rooms_per_conn: usize,
    room_size: usize,
    inflight: usize,
    source: Source,
    rate: f64,
    window: u64,
    duration: f64,
    warmup: f64,
    settle: f64,
    server_pid: Option<u32>,
    secret: String,
    login: bool,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: "ws://127.0.0.1:3000/ws".into(),
        protocol: Protocol::Native,
        urls: Vec::new(),
        http: String::new(),
        conns: 1000,
        users: 1,
        rooms_per_conn: 1,
        room_size: 0,
        inflight: 200,
        source: Source::Ws,
        rate: 0.0,
        window: 128,
        duration: 10.0,
        warmup: 2.0,
        settle: 2.0,
        server_pid: None,
        secret: std::env::var("JWT_SECRET").unwrap_or_else(|_| DEV_SECRET.into()),
        login: false,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: not a number: {v}"))
        }
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--http" => a.http = value()?,
            "--protocol" => {
                a.protocol = match value()?.as_str() {
                    "native" => Protocol::Native,
                    "socketio" => Protocol::SocketIo,
                    other => return Err(format!("--protocol: native or socketio, not {other}")),
                }
            }
            "--conns" => a.conns = num(&flag, value()?)?,
            "--users" => a.users = num(&flag, value()?)?,
            "--rooms-per-conn" => a.rooms_per_conn = num(&flag, value()?)?,
            "--room-size" => a.room_size = num(&flag, value()?)?,
            "--inflight" => a.inflight = num(&flag, value()?)?,
            "--source" => {
                a.source = match value()?.as_str() {
                    "ws" => Source::Ws,
                    "http" => Source::Http,
                    "none" => Source::None,
                    other => return Err(format!("--source: ws, http or none, not {other}")),
                }
            }
            "--rate" => a.rate = num(&flag, value()?)?,
            "--window" => a.window = num(&flag, value()?)?,
            "--duration" => a.duration = num(&flag, value()?)?,
            "--warmup" => a.warmup = num(&flag, value()?)?,
            "--settle" => a.settle = num(&flag, value()?)?,
            "--server-pid" => a.server_pid = Some(num(&flag, value()?)?),
            "--secret" => a.secret = value()?,
            "--login" => a.login = true,
            "--json" => a.json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    a.urls = a.url.split(',').map(str::to_owned).collect();
    if let Some(bad) = a.urls.iter().find(|u| loopback_authority(u).is_none()) {
        return Err(format!(
            "--url must be on loopback (127.x.x.x, [::1], localhost), not {bad}"
        ));
    }
    a.url = a.urls[0].clone();
    let host = loopback_authority(&a.url).expect("checked above");
    if a.http.is_empty() {
        a.http = format!("http://{host}");
    }
    if loopback_authority(&a.http).is_none() {
        return Err(format!(
            "--http must be on loopback (127.x.x.x, [::1], localhost), not {}",
            a.http
        ));
    }
    if a.conns == 0 || a.inflight == 0 {
        return Err("--conns and --inflight must be at least 1".into());
    }
    if a.rooms_per_conn == 0 && a.source == Source::Ws {
        return Err("--source ws needs rooms (--rooms-per-conn 1 or more)".into());
    }
    if a.window == 0 || a.window as usize >= RING / 2 {
        return Err(format!("--window must be 1 to {}", RING / 2 - 1));
    }
    if a.room_size == 0 {
        a.room_size = a.conns;
    }
    Ok(a)
}

/// The `host[:port]` of a URL whose host is a loopback address; `None` for any other.
fn loopback_authority(url: &str) -> Option<&str> {
    let authority = url.split_once("://")?.1.split(['/', '?']).next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback =
        host == "localhost" || host == "::1" || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback());
    loopback.then_some(authority)
}

// ---------------------------------------------------------------------------------------
// Latency histogram: microseconds, exact below 1,024 µs, then 512 buckets per power of two
// (0.2% resolution).

const SUB: u64 = 512;

struct Hist {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

impl Hist {
    fn new() -> Self {
        Self {
            counts: vec![0; 1024 + 40 * SUB as usize],
            n: 0,
            max: 0,
        }
    }

    fn index(us: u64) -> usize {
        if us < 1024 {
            us as usize
        } else {
            let e = 63 - us.leading_zeros() as u64 - 9;
            (1024 + (e - 1) * SUB + ((us >> e) - SUB)) as usize
        }
    }

    fn value(i: usize) -> u64 {
        if i < 1024 {
            i as u64
        } else {
            let i = i as u64 - 1024;
            let e = i / SUB + 1;
            (i % SUB + SUB) << e
        }
    }

    fn record(&mut self, us: u64) {
        let i = Self::index(us).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.n += 1;
        self.max = self.max.max(us);
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }
}

// ---------------------------------------------------------------------------------------
// State shared by the connections and the broadcaster.

struct Shared {
    /// Deliveries of broadcast `seq`, at `seq % RING`.
    ring: Box<[AtomicU32]>,
    /// Broadcasts delivered to every recipient: all of `0..completed`.
    completed: AtomicU64,
    /// Recipients of each broadcast.
    expected: AtomicU32,
    progress: Notify,
    /// The first measured broadcast (`u64::MAX` until the measurement starts).
    measure_from: AtomicU64,
    hist: Mutex<Hist>,
    connected: AtomicUsize,
    joined: AtomicUsize,
    failed: AtomicUsize,
    /// Connections that ended before the run did.
    dropped: AtomicUsize,
    /// Members of the broadcast room (`room0-0`), joined.
    in_bcast_room: AtomicUsize,
    first_error: Mutex<Option<String>>,
    /// Why the first connection that ended during the run ended.
    first_drop: Mutex<Option<String>>,
    changed: Notify,
}

impl Shared {
    fn new() -> Self {
        Self {
            ring: (0..RING).map(|_| AtomicU32::new(0)).collect(),
            completed: AtomicU64::new(0),
            expected: AtomicU32::new(u32::MAX),
            progress: Notify::new(),
            measure_from: AtomicU64::new(u64::MAX),
            hist: Mutex::new(Hist::new()),
            connected: AtomicUsize::new(0),
            joined: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            in_bcast_room: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            first_drop: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    fn drop_connection(&self, why: impl FnOnce() -> String) {
        self.first_drop.lock().get_or_insert_with(why);
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn fail(&self, what: String) {
        self.first_error.lock().get_or_insert(what);
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// Finds `lg:<seq>:<ns>` in a frame.
fn parse_stamp(text: &str) -> Option<(u64, u64)> {
    let at = text.find("lg:")?;
    let mut parts = text[at + 3..].splitn(3, |c: char| !c.is_ascii_digit());
    let seq = parts.next()?.parse().ok()?;
    let ns = parts.next()?.parse().ok()?;
    Some((seq, ns))
}

/// What a receiving connection keeps between flushes to the shared histogram.
struct Local {
    shared: Arc<Shared>,
    latencies: Vec<u64>,
}

impl Local {
    fn on_text(&mut self, text: &str) {
        let Some((seq, sent)) = parse_stamp(text) else { return };
        let us = unix_ns().saturating_sub(sent) / 1000;
        let s = &self.shared;
        let n = s.ring[seq as usize % RING].fetch_add(1, Ordering::AcqRel) + 1;
        if n == s.expected.load(Ordering::Relaxed) {
            s.completed.fetch_max(seq + 1, Ordering::AcqRel);
            s.progress.notify_one();
        }
        if seq >= s.measure_from.load(Ordering::Relaxed) {
            self.latencies.push(us);
            if self.latencies.len() >= 64 {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        if self.latencies.is_empty() {
            return;
        }
        let mut h = self.shared.hist.lock();
        for us in self.latencies.drain(..) {
            h.record(us);
        }
    }
}

fn client_config() -> WebSocketConfig {
    // A small read buffer: 10,000 clients with tungstenite's default 128 KiB would take 1.3 GB.
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

fn with_token(url: &str, token: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}token={token}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Connect,
    Join,
    Stop,
}

/// One receiving connection: connect, wait for the join phase, join, then read until stopped.
async fn client(
    protocol: Protocol,
    url: String,
    token: String,
    rooms: Vec<String>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    mut phase: watch::Receiver<Phase>,
) {
    let connected = {
        let _permit = permits.acquire().await;
        open(protocol, url, &token).await
    };
    let mut ws = match connected {
        Ok(ws) => ws,
        Err(e) => return shared.fail(e),
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    shared.changed.notify_one();
    let mut local = Local {
        shared: shared.clone(),
        latencies: Vec::with_capacity(64),
    };
    let in_bcast = rooms.iter().any(|r| r == "room0-0");

    // Until the join phase (and until every join is acked), read whatever comes.
    let mut pending: Option<usize> = None;
    while !rooms.is_empty() {
        if pending == Some(0) {
            break;
        }
        tokio::select! {
            changed = phase.changed(), if pending.is_none() => {
                let now = *phase.borrow_and_update();
                if changed.is_err() || now == Phase::Stop {
                    return;
                }
                if now == Phase::Join {
                    for (id, room) in rooms.iter().enumerate() {
                        let frame = protocol.join(room, id + 1);
                        if let Err(e) = ws.send(Message::Text(frame.into())).await {
                            return shared.fail(format!("joinRoom: {e}"));
                        }
                    }
                    pending = Some(rooms.len());
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Some(p) = pending.as_mut() {
                        if protocol.is_ack(&t) {
                            *p -= 1;
                        } else if protocol.is_refusal(&t) {
                            return shared.fail(format!("joinRoom refused: {}", t.as_str()));
                        }
                    }
                    if let Some(answer) = protocol.answer(&t) {
                        if let Err(e) = ws.send(Message::text(answer)).await {
                            return shared.fail(format!("before joining: {e}"));
                        }
                    }
                    local.on_text(&t);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return shared.fail(format!("before joining: {e}")),
                None => return shared.fail("closed before joining".into()),
            }
        }
    }
    if in_bcast {
        shared.in_bcast_room.fetch_add(1, Ordering::Relaxed);
    }
    shared.joined.fetch_add(1, Ordering::Relaxed);
    shared.changed.notify_one();

    // The hot loop.
    let stop = phase.wait_for(|p| *p == Phase::Stop);
    tokio::pin!(stop);
    loop {
        let answer = tokio::select! {
            biased;
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    local.on_text(&t);
                    protocol.answer(&t)
                }
                Some(Ok(Message::Close(frame))) => {
                    shared.drop_connection(|| match frame {
                        Some(f) => format!("closed by the server: {} {}", f.code, f.reason),
                        None => "closed by the server".to_owned(),
                    });
                    break;
                }
                Some(Ok(_)) => None,
                Some(Err(e)) => {
                    shared.drop_connection(|| e.to_string());
                    break;
                }
                None => {
                    shared.drop_connection(|| "connection ended without a close frame".to_owned());
                    break;
                }
            },
            _ = &mut stop => break,
        };
        if let Some(answer) = answer {
            if let Err(e) = ws.send(Message::text(answer)).await {
                shared.drop_connection(|| format!("answering a ping: {e}"));
                break;
            }
        }
    }
    local.flush();
}

/// Sends broadcasts, one way or the other.
enum Sender {
    /// The broadcaster's connection (shared with its reader, which answers pings).
    Ws(
        Protocol,
        Arc<tokio::sync::Mutex<futures_util::stream::SplitSink<Ws, Message>>>,
    ),
    Http(reqwest::Client, String),
}

impl Sender {
    async fn send(&mut self, seq: u64) -> Result<(), String> {
        let stamp = format!("lg:{seq}:{}", unix_ns());
        match self {
            Sender::Ws(protocol, sink) => {
                let frame = protocol.message(&stamp);
                sink.lock()
                    .await
                    .send(Message::Text(frame.into()))
                    .await
                    .map_err(|e| e.to_string())
            }
            Sender::Http(client, url) => {
                let res = client
                    .post(url.as_str())
                    .json(&json!({ "title": stamp }))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if res.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("POST /posts: {}", res.status()))
                }
            }
        }
    }
}

/// The broadcaster's connection for `--source ws`: joined to `room0-0`; its own copies of the
/// broadcasts are read and ignored.
async fn ws_broadcaster(protocol: Protocol, url: String, token: &str) -> Result<Sender, String> {
    let ws = open(protocol, url, token)
        .await
        .map_err(|e| format!("broadcaster: {e}"))?;
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::Text(protocol.join("room0-0", 1).into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if protocol.is_ack(&t) => break,
            Ok(Some(Ok(_))) => {}
            _ => return Err("broadcaster: no ack for joinRoom".into()),
        }
    }
    let sink = Arc::new(tokio::sync::Mutex::new(sink));
    let answers = sink.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            if let Some(answer) = msg.to_text().ok().and_then(|t| protocol.answer(t)) {
                let _ = answers.lock().await.send(Message::text(answer)).await;
            }
        }
    });
    Ok(Sender::Ws(protocol, sink))
}

fn read_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of a process, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields after it start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

/// Raises the soft open-files limit to the hard one; returns the soft limit in force.
#[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every platform
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur as u64;
            }
        }
    }
    lim.rlim_cur as u64
}

/// Waits until `done()` holds, `changed` being notified on progress; gives up after `limit`.
async fn wait_until(shared: &Shared, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        let _ = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(50)),
            shared.changed.notified(),
        )
        .await;
        if tokio::time::Instant::now() >= deadline {
            return done();
        }
    }
    true
}

struct Report {
    lines: String,
    json: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    fn put(&mut self, key: &str, value: impl Into<serde_json::Value>, line: String) {
        self.json.insert(key.into(), value.into());
        let _ = writeln!(self.lines, "{line}");
        println!("{line}");
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{USAGE}");
            std::process::exit(2);
        }
    };
    let nofile = raise_nofile();
    if (nofile as usize) < args.conns + 64 {
        eprintln!(
            "warning: the open-files limit is {nofile}, below {} connections: raise it (`ulimit -n`)",
            args.conns
        );
    }
    let mut report = Report {
        lines: String::new(),
        json: serde_json::Map::new(),
    };
    report.put("conns", args.conns, format!("connections: {}", args.conns));

    // Tokens, one per user.
    let users = if args.users == 0 { args.conns } else { args.users };
    let http = reqwest::Client::new();
    let mut tokens = Vec::with_capacity(users);
    let exp = unix_ns() / 1_000_000_000 + 3600;
    for u in 0..users {
        let user = format!("load-{u}");
        let token = if args.login {
            let res = http
                .post(format!("{}/login", args.http))
                .json(&json!({ "user": user }))
                .send()
                .await;
            let body: serde_json::Value = match res {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(e) => {
                    eprintln!("error: POST /login: {e}");
                    std::process::exit(1);
                }
            };
            body["token"].as_str().unwrap_or_default().to_owned()
        } else {
            jsonwebtoken::encode(
                &Header::default(),
                &json!({ "sub": user, "exp": exp }),
                &EncodingKey::from_secret(args.secret.as_bytes()),
            )
            .expect("HS256 signing cannot fail")
        };
        tokens.push(token);
    }

    let pid = args.server_pid;
    let rss_before = pid.and_then(|p| read_status_kib(p, "VmRSS:"));
    let shared = Arc::new(Shared::new());
    let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
    let permits = Arc::new(Semaphore::new(args.inflight));

    // 1. Handshakes.
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let rooms = (0..args.rooms_per_conn)
            .map(|j| format!("room{j}-{}", i / args.room_size))
            .collect();
        let token = tokens[i % users].clone();
        let url = args.protocol.url(&args.urls[i % args.urls.len()], &token);
        tasks.push(tokio::spawn(client(
            args.protocol,
            url,
            token,
            rooms,
            shared.clone(),
            permits.clone(),
            phase_rx.clone(),
        )));
    }
    let n = args.conns;
    let all_in = wait_until(&shared, Duration::from_secs(600), || {
        shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) >= n
    })
    .await;
    let connect_time = started.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Relaxed);
    report.put(
        "handshakes_per_s",
        connected as f64 / connect_time,
        format!(
            "handshakes: {connected} in {connect_time:.2} s = {:.0}/s ({} in flight at most){}",
            connected as f64 / connect_time,
            args.inflight,
            if all_in { "" } else { " (timed out)" }
        ),
    );
    if connected < n {
        eprintln!(
            "warning: {} handshakes failed; first error: {}",
            n - connected,
            shared.first_error.lock().clone().unwrap_or_default()
        );
    }

    // 2. Joins.
    let started = Instant::now();
    let _ = phase_tx.send(Phase::Join);
    wait_until(&shared, Duration::from_secs(600), || {
        shared.joined.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) >= n
    })
    .await;
    let joined = shared.joined.load(Ordering::Relaxed);
    let join_time = started.elapsed().as_secs_f64();
    report.put(
        "joined",
        joined,
        format!(
            "joined: {joined} connections x {} rooms in {join_time:.2} s",
            args.rooms_per_conn
        ),
    );

    // 3. Memory, once the joins' notifications have been delivered.
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    if let (Some(pid), Some(before)) = (pid, rss_before) {
        if let Some(after) = read_status_kib(pid, "VmRSS:") {
            let per = (after as f64 - before as f64) / joined.max(1) as f64;
            report.put(
                "rss_per_conn_kib",
                per,
                format!("server RSS: {before} KiB before, {after} KiB after = {per:.2} KiB per connection"),
            );
        }
    }

    // 4. Broadcasts.
    let mut measured = false;
    if args.source != Source::None && args.duration > 0.0 {
        let sender = match args.source {
            Source::Ws => ws_broadcaster(args.protocol, args.protocol.url(&args.url, &tokens[0]), &tokens[0]).await,
            _ => Ok(Sender::Http(http.clone(), format!("{}/posts", args.http))),
        };
        match sender {
            Ok(sender) => measured = broadcast(&args, &shared, sender, &mut report).await,
            Err(e) => eprintln!("error: {e}"),
        }
    }

    let dropped = shared.dropped.load(Ordering::Relaxed);
    let first_drop = shared.first_drop.lock().clone();
    report.put(
        "dropped_connections",
        dropped,
        match &first_drop {
            Some(why) => format!("connections closed during the run: {dropped}; the first: {why}"),
            None => format!("connections closed during the run: {dropped}"),
        },
    );
    if let Some(why) = first_drop {
        report.json.insert("first_drop".into(), why.into());
    }
    let _ = phase_tx.send(Phase::Stop);
    // The receivers flush their last latency samples as they stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for t in tasks {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    if measured {
        report_latency(&shared, &mut report);
    }
    if args.json {
        println!("{}", serde_json::Value::Object(report.json));
    }
}

/// Runs the warm-up and the measured broadcasts; returns whether anything was measured.
async fn broadcast(args: &Args, shared: &Arc<Shared>, mut sender: Sender, report: &mut Report) -> bool {
    let expected = match args.source {
        Source::Ws => shared.in_bcast_room.load(Ordering::Relaxed),
        _ => shared.joined.load(Ordering::Relaxed),
    } as u64;
    if expected == 0 {
        eprintln!("error: no recipients");
        return false;
    }
    shared.expected.store(expected as u32, Ordering::Relaxed);
    let window = if args.rate > 0.0 {
        (RING / 2 - 1) as u64
    } else {
        args.window
    };
    let pid = args.server_pid.map(|p| p.to_string());
    let start = Instant::now();
    let warm_end = start + Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.duration);
    let period = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let mut next_tick = tokio::time::Instant::now();
    let mut seq = 0u64;
    let mut measured: Option<(u64, Instant, Option<f64>, Option<f64>)> = None;
    let mut stalled = false;
    let mut late = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if measured.is_none() && now >= warm_end {
            shared.measure_from.store(seq, Ordering::Relaxed);
            measured = Some((seq, now, pid.as_deref().and_then(cpu_seconds), cpu_seconds("self")));
        }
        // The window: wait for broadcast `seq - window` to reach everyone.
        while seq - shared.completed.load(Ordering::Acquire) >= window {
            if tokio::time::timeout(STALL, shared.progress.notified()).await.is_err() {
                stalled = true;
                break;
            }
        }
        if stalled {
            break;
        }
        if let Some(period) = period {
            next_tick += period;
            let now = tokio::time::Instant::now();
            if next_tick > now {
                tokio::time::sleep_until(next_tick).await;
            } else if now - next_tick > period {
                late += 1;
            }
        }
        shared.ring[seq as usize % RING].store(0, Ordering::Release);
        if let Err(e) = sender.send(seq).await {
            eprintln!("error: broadcast: {e}");
            break;
        }
        seq += 1;
    }
    let Some((s0, t0, server_cpu0, self_cpu0)) = measured else {
        eprintln!("error: the warm-up took the whole run");
        return false;
    };
    let s1 = seq;
    // Let the last broadcasts arrive.
    let deadline = Instant::now() + STALL;
    while shared.completed.load(Ordering::Acquire) < s1 && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), shared.progress.notified()).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let server_cpu = pid
        .as_deref()
        .and_then(cpu_seconds)
        .zip(server_cpu0)
        .map(|(b, a)| (b - a) / elapsed);
    let self_cpu = cpu_seconds("self").zip(self_cpu0).map(|(b, a)| (b - a) / elapsed);
    // Stop counting before reading: the receivers flush their last latencies on stop.
    let completed = shared.completed.load(Ordering::Acquire).min(s1);
    let mut delivered = completed.saturating_sub(s0) * expected;
    for s in completed.max(s0)..s1 {
        delivered += shared.ring[s as usize % RING].load(Ordering::Acquire) as u64;
    }
    let sent = s1 - s0;
    report.put(
        "broadcasts",
        sent,
        format!(
            "broadcasts: {sent} measured ({}; {expected} recipients each){}",
            match period {
                Some(_) => format!("{} /s asked, {:.1} /s sent", args.rate, sent as f64 / args.duration),
                None => format!("flat out, window {window}"),
            },
            if late > 0 {
                format!(", {late} sent more than a period late")
            } else {
                String::new()
            }
        ),
    );
    report.put(
        "delivered_per_s",
        delivered as f64 / elapsed,
        format!(
            "delivered: {delivered} of {} in {elapsed:.2} s = {:.0} msgs/s",
            sent * expected,
            delivered as f64 / elapsed
        ),
    );
    report.json.insert("delivered".into(), delivered.into());
    if let Some(c) = server_cpu {
        report.put("server_cpu", c, format!("server CPU: {:.0}% of one core", c * 100.0));
    }
    if let Some(c) = self_cpu {
        report.put("loadgen_cpu", c, format!("loadgen CPU: {:.0}% of one core", c * 100.0));
    }
    if stalled {
        eprintln!("warning: no broadcast completed for {STALL:?}: a recipient stopped receiving");
    }
    report.json.insert("stalled".into(), stalled.into());
    true
}

/// Prints the latencies, once every receiver has flushed its last samples.
fn report_latency(shared: &Shared, report: &mut Report) {
    let h = shared.hist.lock();
    let ms = |us: u64| us as f64 / 1000.0;
    report.put(
        "latency_ms",
        json!({ "p50": ms(h.quantile(0.5)), "p99": ms(h.quantile(0.99)), "max": ms(h.max), "samples": h.n }),
        format!(
            "latency send→receipt: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
            ms(h.quantile(0.5)),
            ms(h.quantile(0.99)),
            ms(h.max),
            h.n
        ),
    );
}
