//! Helpers shared by the black-box tests: a server on 127.0.0.1:0, tokens, and a WebSocket
//! client that reads events with a timeout.
#![allow(dead_code)]

pub mod raw;
pub mod recovery;
#[cfg(feature = "socketio")]
pub mod socketio;
pub mod typescript;

use std::{net::SocketAddr, time::Duration};

use axum::{routing::get, Router};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, http, protocol::CloseFrame, Message},
    MaybeTlsStream, WebSocketStream,
};
use tower_realtime::Hub;

pub const SECRET: &str = "test-secret-test-secret-test-secret!";
/// How long a test waits for something that should arrive.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does not arrive.
pub const QUIET: Duration = Duration::from_millis(300);

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `user`, valid for an hour.
pub fn token(user: &str) -> String {
    sign(&json!({ "sub": user, "exp": now() + 3600 }))
}

/// An HS256 token with these claims.
pub fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(&Header::default(), claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// A token signed with `alg` and a PEM private key.
pub fn sign_pem(alg: Algorithm, pem: &[u8], claims: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem).unwrap(),
        _ => panic!("unsupported"),
    };
    jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap()
}

/// Serves `app` (with the hub layered at `/ws` by the caller) on 127.0.0.1:0.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// Serves `hub` at `/ws`, beside a `GET /hello` route of the app's own.
pub async fn serve_hub(hub: &Hub) -> SocketAddr {
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the app" }))
        .layer(hub.layer("/ws"));
    serve(app).await
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connected test client.
pub struct Client {
    pub ws: Ws,
    next_id: u64,
    /// Frames read while waiting for an ack, handed out by later reads.
    stash: std::collections::VecDeque<Value>,
}

/// Connects with a bearer token in the `Authorization` header.
pub async fn connect(addr: SocketAddr, user: &str) -> Client {
    connect_token(addr, &token(user)).await
}

pub async fn connect_token(addr: SocketAddr, token: &str) -> Client {
    connect_at(&format!("ws://{addr}/ws"), token).await
}

/// Connects as `user` to `/ws` with the query `query` (e.g. recovery's `recover=1`).
pub async fn connect_with(addr: SocketAddr, user: &str, query: &str) -> Client {
    connect_at(&format!("ws://{addr}/ws?{query}"), &token(user)).await
}

async fn connect_at(url: &str, token: &str) -> Client {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect timed out")
        .expect("connect failed");
    Client {
        ws,
        next_id: 0,
        stash: Default::default(),
    }
}

/// Tries a handshake and returns the HTTP status (101 when it succeeded).
pub async fn handshake_status(req: http::Request<()>) -> (u16, Option<String>) {
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, res)) => (res.status().as_u16(), None),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
            (res.status().as_u16(), body)
        }
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
    }
}

impl Client {
    pub fn new(ws: Ws) -> Self {
        Client {
            ws,
            next_id: 0,
            stash: Default::default(),
        }
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Sends an event without an ack id.
    pub async fn emit(&mut self, event: &str, data: Value) {
        let frame = json!({ "event": event, "data": data }).to_string();
        self.send_raw(&frame).await;
    }

    /// Sends an event with an ack id and returns the id.
    pub async fn emit_with_id(&mut self, event: &str, data: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let frame = json!({ "event": event, "data": data, "id": id }).to_string();
        self.send_raw(&frame).await;
        id
    }

    /// Sends an event and waits for its answer (the ack or an error frame carrying its id).
    pub async fn call(&mut self, event: &str, data: Value) -> Value {
        let id = self.emit_with_id(event, data).await;
        loop {
            let frame = self.read_frame().await;
            if frame["ack"] == json!(id) {
                return frame;
            }
            self.stash.push_back(frame);
        }
    }

    /// The next JSON text frame (skipping pings).
    pub async fn next_frame(&mut self) -> Value {
        match self.stash.pop_front() {
            Some(frame) => frame,
            None => self.read_frame().await,
        }
    }

    async fn read_frame(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no frame in time")
                .expect("stream ended")
                .expect("read error");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("frame is not JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame: {other:?}"),
            }
        }
    }

    /// Waits for the event `name` and returns its data, skipping other events.
    pub async fn expect_event(&mut self, name: &str) -> Value {
        loop {
            let frame = self.next_frame().await;
            if frame["event"] == name {
                return frame["data"].clone();
            }
        }
    }

    /// Asserts that no event named `name` arrives within [`QUIET`].
    pub async fn expect_no_event(&mut self, name: &str) {
        for frame in &self.stash {
            assert_ne!(frame["event"], name, "unexpected {name}: {frame}");
        }
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_ne!(v["event"], name, "unexpected {name}: {v}");
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// Waits for the server's close frame and returns it.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no close in time")
            {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Read until the server answers the close.
        let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = self.ws.next().await {} }).await;
    }
}

/// POSTs `body` as JSON to `http://{addr}{path}` and returns the JSON answer.
pub async fn post_json(addr: SocketAddr, path: &str, body: Value) -> Value {
    let res = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    res.json().await.unwrap()
}

/// Polls `check` until it holds or [`WAIT`] passes.
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

/// Says, where a person running `cargo test` sees it, that `what` did not run and what would
/// make it run. Straight to the process's stderr: the test harness keeps `println!` and
/// `eprintln!` of a passing test to itself, so the test would show `ok` having run nothing.
pub fn did_not_run(what: &str, how: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{what} did not run: {how}");
}

/// Whether the tests that run Node scripts against the hub are on (`REALTIME_TEST_NODE`);
/// when they are not, says that `what` did not run.
pub fn node_enabled(what: &str) -> bool {
    let on = std::env::var("REALTIME_TEST_NODE").is_ok();
    if !on {
        did_not_run(what, "set REALTIME_TEST_NODE=1 (needs node and `npm ci` in tests/node)");
    }
    on
}

/// The Redis the Redis tests use (`REALTIME_TEST_REDIS`); when it is not set, says that `what`
/// did not run.
#[allow(dead_code)]
pub fn redis_url(what: &str) -> Option<String> {
    match std::env::var("REALTIME_TEST_REDIS") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            did_not_run(what, "set REALTIME_TEST_REDIS=redis://127.0.0.1:6379");
            None
        }
    }
}

/// The NATS server of `REALTIME_TEST_NATS` (with JetStream); `None`, said on stderr, when it
/// is not set.
#[allow(dead_code)]
pub fn nats_url(what: &str) -> Option<String> {
    match std::env::var("REALTIME_TEST_NATS") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            did_not_run(
                what,
                "set REALTIME_TEST_NATS=nats://127.0.0.1:4222 (NATS with JetStream)",
            );
            None
        }
    }
}

/// Runs `node --test tests/node/<script>` with `env`, and `TOKENS` holding a token for each of
/// alice, bob, carol, dave, erin, frank and grace; asserts that it passed and returns its
/// output.
pub async fn run_node(script: &str, env: Vec<(&'static str, String)>) -> String {
    let tokens: serde_json::Map<String, Value> = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]
        .iter()
        .map(|u| (u.to_string(), Value::String(token(u))))
        .collect();
    let path = format!("{}/tests/node/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .args(["--test", "--test-reporter=spec", &path])
            .env("TOKENS", Value::Object(tokens).to_string())
            .envs(env)
            .output()
    })
    .await
    .unwrap()
    .expect("node must be installed when REALTIME_TEST_NODE is set");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the node tests in {script} failed");
    stdout
}

/// A log writer that keeps what is written, to read back as text (for a `tracing` subscriber
/// installed by the one test of a binary: the subscriber is process-wide).
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
