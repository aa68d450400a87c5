//! The bad-input battery: the abuse and faults the server has to survive, over real loopback
//! sockets.
//!
//! Every case asserts its exact outcome (an HTTP status, a close code, an `error` event) and
//! then that a healthy control connection on the same server still works: it is answered, it
//! receives what the app emits, and the server still accepts new handshakes.

mod common;

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{routing::get, Router};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::{
    client::IntoClientRequest,
    http,
    protocol::frame::{
        coding::{Data as OpData, OpCode},
        Frame,
    },
    Message,
};
use tower_realtime::{Config, Data, DisconnectReason, Emitter, ErrorEvent, Hub, JwtAuth, SlowConsumerPolicy, Socket};

/// The battery's tokens must name this audience.
const AUDIENCE: &str = "chat";

/// A valid token for `user`.
fn tok(user: &str) -> String {
    sign(&json!({ "sub": user, "exp": now() + 3600, "aud": AUDIENCE }))
}

fn ws_request(addr: SocketAddr, token: &str) -> http::Request<()> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// The `error` event answering the request `ack`.
fn error_event(message: &str, ack: u64) -> Value {
    json!({ "event": "error", "data": { "status": "error", "message": message }, "ack": ack })
}

fn close_code(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> (u16, String) {
    let frame = frame.expect("a close frame with a code");
    (u16::from(frame.code), frame.reason.to_string())
}

#[derive(Deserialize)]
struct PrivateMessage {
    to: String,
    message: String,
}

type Disconnects = Arc<Mutex<Vec<(String, DisconnectReason)>>>;

fn build_hub(disconnects: Disconnects, configure: impl FnOnce(&mut Config)) -> Hub {
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET).audience(AUDIENCE))
        .configure(configure)
        .on("echo", |Data(v): Data<Value>| async move { v })
        .on("join", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!({ "joined": room }))
        })
        .on(
            "privateMessage",
            |s: Socket, Data(m): Data<PrivateMessage>| async move {
                // `from` is the authenticated sender, whatever the payload claims.
                let delivered = s
                    .hub()
                    .to_user(&m.to)
                    .emit("privateMessage", &json!({ "from": s.user_id(), "message": m.message }));
                json!({ "delivered": delivered })
            },
        )
        .on("panic", || async {
            if true {
                panic!("a bug in a handler");
            }
        })
        .on("hang", |s: Socket| async move {
            s.emit("hanging", &Value::Null);
            std::future::pending::<()>().await
        })
        .on_disconnect(move |s: Socket, reason| {
            let disconnects = disconnects.clone();
            async move {
                let user = s.user_id().unwrap_or("-").to_owned();
                disconnects.lock().unwrap().push((user, reason));
            }
        })
        .build()
}

/// A hub served on 127.0.0.1 with a healthy control connection.
struct Server {
    hub: Hub,
    addr: SocketAddr,
    control: Client,
    disconnects: Disconnects,
}

impl Server {
    async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let disconnects = Disconnects::default();
        let hub = build_hub(disconnects.clone(), configure);
        let addr = serve_hub(&hub).await;
        let mut control = connect_token(addr, &tok("control")).await;
        assert_eq!(
            control.call("echo", json!("ready")).await,
            json!({ "ack": 1, "data": "ready" })
        );
        Self {
            hub,
            addr,
            control,
            disconnects,
        }
    }

    /// Connects as `user` and waits until the hub knows the connection.
    async fn connect(&self, user: &str) -> Client {
        let before = self.hub.connections_of(user).len();
        let client = connect_token(self.addr, &tok(user)).await;
        assert!(eventually(|| self.hub.connections_of(user).len() > before).await);
        client
    }

    /// Tries a handshake with `token`: the status and the body of a refusal.
    async fn handshake(&self, token: &str) -> (u16, Option<String>) {
        handshake_status(ws_request(self.addr, token)).await
    }

    /// Why `user`'s (first) connection ended, once it has.
    async fn disconnect_reason(&self, user: &str) -> DisconnectReason {
        let find = || {
            self.disconnects
                .lock()
                .unwrap()
                .iter()
                .find(|(u, _)| u == user)
                .map(|(_, r)| r.clone())
        };
        assert!(eventually(|| find().is_some()).await, "{user} never disconnected");
        find().unwrap()
    }

    /// The control connection still works: a request is answered, an emit from the app
    /// reaches it, and the server accepts (and then forgets) a new connection.
    async fn assert_control_works(&mut self) {
        let answer = self.control.call("echo", json!({ "still": "here" })).await;
        assert_eq!(answer["data"], json!({ "still": "here" }), "{answer}");
        assert!(answer.get("event").is_none(), "{answer}");
        assert_eq!(self.hub.to_user("control").emit("notice", &json!({ "n": 1 })), 1);
        assert_eq!(self.control.expect_event("notice").await, json!({ "n": 1 }));

        let count = self.hub.connection_count();
        let fresh = self.connect("fresh").await;
        fresh.close().await;
        assert!(eventually(|| self.hub.connection_count() == count).await);
    }

    /// Runs `fut` while the control connection keeps talking, so that short ping timeouts
    /// do not close it.
    async fn keeping_control_alive<T>(&mut self, fut: impl Future<Output = T>) -> T {
        tokio::pin!(fut);
        let deadline = Instant::now() + WAIT * 2;
        loop {
            assert!(Instant::now() < deadline, "gave up waiting");
            tokio::select! {
                out = &mut fut => return out,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    let answer = self.control.call("echo", json!("keep-alive")).await;
                    assert_eq!(answer["data"], "keep-alive", "{answer}");
                }
            }
        }
    }
}

use common::raw::{self, Raw};

// ---------------------------------------------------------------------------------------------
// The handshake

#[tokio::test]
async fn bad_tokens_get_401_with_the_reason() {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};

    let mut s = Server::start(|_| {}).await;
    let now = now();
    let tampered = {
        // A real token whose payload is swapped for one naming another user.
        let genuine = tok("mallory");
        let parts: Vec<&str> = genuine.split('.').collect();
        let forged = tok("admin");
        format!("{}.{}.{}", parts[0], forged.split('.').nth(1).unwrap(), parts[2])
    };
    let alg_none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(json!({ "sub": "mallory", "exp": now + 3600, "aud": AUDIENCE }).to_string())
    );
    let cases = [
        (
            "expired",
            sign(&json!({ "sub": "mallory", "exp": now - 60, "aud": AUDIENCE })),
            "token expired",
        ),
        ("tampered", tampered, "invalid token signature"),
        ("alg none", alg_none, "invalid token"),
        (
            "wrong audience",
            sign(&json!({ "sub": "mallory", "exp": now + 3600, "aud": "billing" })),
            "token audience not accepted",
        ),
        (
            "string exp",
            sign(&json!({ "sub": "mallory", "exp": (now + 3600).to_string(), "aud": AUDIENCE })),
            "token misses a required claim",
        ),
    ];
    for (what, token, reason) in &cases {
        let (status, body) = s.handshake(token).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(body, Some(json!({ "error": reason }).to_string()), "{what}");
    }
    assert_eq!(s.hub.counters().rejected_auth, cases.len() as u64);
    assert_eq!(s.hub.connection_count(), 1, "only the control connection is open");
    s.assert_control_works().await;
}

#[tokio::test]
async fn a_disallowed_origin_gets_403() {
    let mut s = Server::start(|_| {}).await;
    let mut req = ws_request(s.addr, &tok("mallory"));
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    assert_eq!(
        handshake_status(req).await,
        (403, Some("origin not allowed".to_owned()))
    );
    assert_eq!(s.hub.counters().rejected_origin, 1);

    // The same request from the page's own origin is accepted: the Origin made the difference.
    let mut req = ws_request(s.addr, &tok("mallory"));
    req.headers_mut()
        .insert("origin", format!("http://{}", s.addr).parse().unwrap());
    assert_eq!(handshake_status(req).await.0, 101);
    assert!(eventually(|| s.hub.connection_count() == 1).await);
    s.assert_control_works().await;
}

#[tokio::test]
async fn connections_past_the_per_user_and_total_limits_get_429_and_503() {
    let mut s = Server::start(|c| {
        c.max_connections_per_user = 2;
        c.max_connections = 4;
    })
    .await;
    let alice1 = s.connect("alice").await;
    let _alice2 = s.connect("alice").await;
    assert_eq!(
        s.handshake(&tok("alice")).await,
        (429, Some("too many connections for this user".to_owned()))
    );
    let _bob = s.connect("bob").await;
    assert_eq!(s.hub.connection_count(), 4);
    assert_eq!(
        s.handshake(&tok("carol")).await,
        (503, Some("too many connections".to_owned()))
    );
    assert_eq!(s.hub.counters().rejected_limit, 2);

    // A closed connection gives its place back.
    alice1.close().await;
    assert!(eventually(|| s.hub.connection_count() == 3).await);
    s.assert_control_works().await;
    assert_eq!(s.hub.connection_count(), 3);
}

// ---------------------------------------------------------------------------------------------
// Frames

#[tokio::test]
async fn a_10_mb_frame_is_refused_on_its_header_with_1009() {
    let mut s = Server::start(|_| {}).await;
    let mut raw = Raw::connect(s.addr, &tok("mallory")).await;
    // Announce 10 MB, send 4 KiB of it, and stop: the server must answer without waiting for
    // (or buffering) the rest.
    raw.send(&raw::header(true, raw::TEXT, 10 << 20, true)).await;
    raw.send(&raw::mask(&[b'x'; 4096])).await;
    let (code, reason, _) = raw.expect_close().await;
    assert_eq!((code, reason.as_str()), (1009, "message too big"));
    assert_eq!(
        s.disconnect_reason("mallory").await,
        DisconnectReason::ServerClosed(1009, "message too big".into())
    );
    assert!(eventually(|| s.hub.connection_count() == 1).await);
    s.assert_control_works().await;
}

#[tokio::test]
async fn a_10_mb_message_gets_1009() {
    let mut s = Server::start(|_| {}).await;
    let client = s.connect("mallory").await;
    let (mut sink, mut stream) = client.ws.split();
    // Writing 10 MB blocks once the socket buffers are full, so it runs on its own task.
    let writer = tokio::spawn(async move {
        let _ = sink.send(Message::text("x".repeat(10 << 20))).await;
    });
    let close = loop {
        match timeout(WAIT, stream.next()).await.expect("no close in time") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close_code(close), (1009, "message too big".to_owned()));
    timeout(WAIT, writer).await.expect("the writer ended").unwrap();
    assert!(eventually(|| s.hub.connection_count() == 1).await);
    s.assert_control_works().await;
}

#[tokio::test]
async fn small_fragments_adding_up_past_the_limit_get_1009() {
    let mut s = Server::start(|_| {}).await;
    let mut c = s.connect("mallory").await;
    let start = Frame::message(b"[".to_vec(), OpCode::Data(OpData::Text), false);
    c.ws.send(Message::Frame(start)).await.unwrap();
    // 1 + 64 × 1 KiB = 64 KiB + 1 byte: the last fragment crosses the 64 KiB limit.
    for _ in 0..64 {
        let part = Frame::message(vec![b' '; 1024], OpCode::Data(OpData::Continue), false);
        c.ws.send(Message::Frame(part)).await.unwrap();
    }
    assert_eq!(close_code(c.expect_close().await), (1009, "message too big".to_owned()));
    assert!(eventually(|| s.hub.connection_count() == 1).await);
    s.assert_control_works().await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_gets_1007() {
    let mut s = Server::start(|_| {}).await;

    let mut c = s.connect("mallory").await;
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(OpData::Text), true);
    c.ws.send(Message::Frame(bad)).await.unwrap();
    assert_eq!(
        close_code(c.expect_close().await),
        (1007, "invalid UTF-8 in a text frame".to_owned())
    );

    // Split across fragments, too.
    let mut c = s.connect("mallory").await;
    let start = Frame::message(
        br#"{"event":"echo","data":""#.to_vec(),
        OpCode::Data(OpData::Text),
        false,
    );
    c.ws.send(Message::Frame(start)).await.unwrap();
    let bad = Frame::message(vec![0xc3, 0x28, b'"', b'}'], OpCode::Data(OpData::Continue), true);
    c.ws.send(Message::Frame(bad)).await.unwrap();
    assert_eq!(
        close_code(c.expect_close().await),
        (1007, "invalid UTF-8 in a text frame".to_owned())
    );

    assert!(eventually(|| s.hub.connection_count() == 1).await);
    s.assert_control_works().await;
}

#[tokio::test]
async fn protocol_violations_get_1002() {
    let mut s = Server::start(|_| {}).await;

    // A continuation with nothing to continue.
    let mut c = s.connect("mallory").await;
    let orphan = Frame::message(b"x".to_vec(), OpCode::Data(OpData::Continue), true);
    c.ws.send(Message::Frame(orphan)).await.unwrap();
    let (code, reason) = close_code(c.expect_close().await);
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.starts_with("protocol error: "), "{reason}");

    // An unmasked frame from a client.
    let mut raw = Raw::connect(s.addr, &tok("mallory")).await;
    let mut unmasked = raw::header(true, raw::TEXT, 2, false);
    unmasked.extend_from_slice(b"{}");
    raw.send(&unmasked).await;
    let (code, reason, _) = raw.expect_close().await;
    assert_eq!(code, 1002, "{reason}");

    assert!(eventually(|| s.hub.connection_count() == 1).await);
    s.assert_control_works().await;
}

// ---------------------------------------------------------------------------------------------
// Messages

#[tokio::test]
async fn ten_thousand_deep_json_gets_an_error_event() {
    let mut s = Server::start(|_| {}).await;
    let mut c = s.connect("mallory").await;
    let arrays = format!(
        r#"{{"event":"echo","data":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let objects = format!(
        r#"{{"event":"echo","data":{}1{}}}"#,
        r#"{"a":"#.repeat(10_000),
        "}".repeat(10_000)
    );
    for bomb in [arrays, objects] {
        assert!(
            bomb.len() < 64 * 1024,
            "under the size limit: the depth is what is tested"
        );
        c.send_raw(&bomb).await;
        let e = c.next_frame().await;
        assert_eq!(e["event"], "error", "{e}");
        assert_eq!(e["data"]["status"], "error", "{e}");
        let message = e["data"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("invalid message: recursion limit exceeded"),
            "{message}"
        );
        assert!(e.get("ack").is_none(), "{e}");
    }
    assert_eq!(
        c.call("echo", json!("alive")).await,
        json!({ "ack": 1, "data": "alive" })
    );
    s.assert_control_works().await;
}

#[tokio::test]
async fn a_frame_as_a_json_array_gets_an_error_event_not_a_call() {
    let mut s = Server::start(|_| {}).await;
    let mut c = s.connect("mallory").await;
    // `[event, data, id, ack]`: a form the protocol does not have. It must not run `echo`
    // (whose answer would be an ack 7), and the error carries no ack id it cannot read.
    c.send_raw(r#"["echo",{"a":1},7,null]"#).await;
    let e = c.next_frame().await;
    assert_eq!(e["event"], "error", "{e}");
    let message = e["data"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("invalid message: invalid type: sequence, expected a JSON object"),
        "{message}"
    );
    assert!(e.get("ack").is_none(), "{e}");
    assert_eq!(
        c.call("echo", json!("alive")).await,
        json!({ "ack": 1, "data": "alive" })
    );
    s.assert_control_works().await;
}

#[tokio::test]
async fn unknown_and_reserved_events_get_error_events() {
    let mut s = Server::start(|_| {}).await;
    let mut c = s.connect("mallory").await;
    assert_eq!(c.call("nope", json!(1)).await, error_event("unknown event: nope", 1));
    assert_eq!(
        c.call("error", json!({ "status": "error" })).await,
        error_event("`error` is a reserved event name", 2)
    );
    assert_eq!(
        c.call("connect", Value::Null).await,
        error_event("`connect` is a reserved event name", 3)
    );
    // Without an id, the error event has no `ack` field.
    c.emit("connect", Value::Null).await;
    assert_eq!(
        c.next_frame().await,
        json!({ "event": "error", "data": { "status": "error", "message": "`connect` is a reserved event name" } })
    );
    assert_eq!(
        c.call("echo", json!("alive")).await,
        json!({ "ack": 4, "data": "alive" })
    );
    s.assert_control_works().await;
}

#[tokio::test]
async fn too_long_room_and_event_names_get_error_events() {
    let mut s = Server::start(|_| {}).await;
    let mut c = s.connect("mallory").await;
    assert_eq!(
        c.call("join", json!("r".repeat(129))).await,
        error_event("room name longer than 128 bytes", 1)
    );
    assert_eq!(
        c.call("join", json!("")).await,
        error_event("room name must not be empty", 2)
    );
    let longest = "r".repeat(128);
    assert_eq!(
        c.call("join", json!(longest)).await,
        json!({ "ack": 3, "data": { "joined": longest } })
    );
    assert_eq!(
        c.call(&"e".repeat(129), Value::Null).await,
        error_event("event name longer than 128 bytes", 4)
    );
    // At the limit, the name is looked up (and there is no such handler).
    let name = "e".repeat(128);
    assert_eq!(
        c.call(&name, Value::Null).await,
        error_event(&format!("unknown event: {name}"), 5)
    );
    let id = s.hub.connections_of("mallory")[0];
    assert_eq!(s.hub.rooms_of(id), vec![longest]);
    s.assert_control_works().await;
}

#[tokio::test]
async fn a_spoofed_from_is_ignored() {
    let mut s = Server::start(|_| {}).await;
    let mut mallory = s.connect("mallory").await;
    let mut bob = s.connect("bob").await;
    let answer = mallory
        .call(
            "privateMessage",
            json!({ "to": "bob", "message": "hi", "from": "control" }),
        )
        .await;
    assert_eq!(answer, json!({ "ack": 1, "data": { "delivered": 1 } }));
    assert_eq!(
        bob.next_frame().await,
        json!({ "event": "privateMessage", "data": { "from": "mallory", "message": "hi" } })
    );
    s.control.expect_no_event("privateMessage").await;
    s.assert_control_works().await;
}

#[tokio::test]
async fn ten_thousand_joins_from_one_connection() {
    let mut s = Server::start(|_| {}).await;
    let mut c = s.connect("joiner").await;
    let mut answers = Vec::with_capacity(10_000);
    // In batches, reading the answers of each, so the client is never a slow consumer.
    for batch in 0..20u64 {
        for i in 0..500u64 {
            let n = batch * 500 + i;
            let frame = json!({ "event": "join", "data": format!("room-{n}"), "id": n + 1 });
            c.ws.feed(Message::text(frame.to_string())).await.unwrap();
        }
        c.ws.flush().await.unwrap();
        for _ in 0..500 {
            answers.push(c.next_frame().await);
        }
    }
    for (n, answer) in answers.iter().enumerate() {
        let n = n as u64;
        if n < 100 {
            assert_eq!(
                answer,
                &json!({ "ack": n + 1, "data": { "joined": format!("room-{n}") } })
            );
        } else {
            assert_eq!(
                answer,
                &error_event("too many rooms: at most 100 per connection", n + 1)
            );
        }
    }
    let id = s.hub.connections_of("joiner")[0];
    assert_eq!(s.hub.rooms_of(id).len(), 100);
    assert_eq!(s.hub.room_members("room-99"), vec![id]);
    assert!(s.hub.room_members("room-100").is_empty());
    // The connection stays.
    let answer = c.call("echo", json!("still in")).await;
    assert_eq!(answer["data"], "still in", "{answer}");
    s.assert_control_works().await;
}

#[tokio::test]
async fn a_panicking_handler_gets_an_error_event_and_everything_carries_on() {
    let mut s = Server::start(|_| {}).await;
    let mut c = s.connect("mallory").await;
    for id in 1..=3 {
        assert_eq!(
            c.call("panic", Value::Null).await,
            error_event("Internal server error", id)
        );
    }
    assert_eq!(
        c.call("echo", json!("after")).await,
        json!({ "ack": 4, "data": "after" })
    );
    assert_eq!(s.hub.connection_count(), 2);
    s.assert_control_works().await;
}

// ---------------------------------------------------------------------------------------------
// Slow consumers and dead peers

/// A 64 KiB payload: big enough to fill socket buffers in a few hundred messages.
fn padding() -> String {
    "p".repeat(64 * 1024)
}

/// Emits `tick` messages to everyone, one at a time, each read by the control connection,
/// until `done` holds. Returns how many were emitted.
async fn tick_until(s: &mut Server, first: u64, mut done: impl FnMut(&Hub) -> bool) -> u64 {
    let pad = padding();
    let mut seq = first;
    while !done(&s.hub) {
        assert!(seq - first < 2_000, "gave up after 2000 messages");
        s.hub.emit("tick", &json!({ "seq": seq, "pad": pad }));
        let frame = s.control.next_frame().await;
        assert_eq!((&frame["event"], &frame["data"]["seq"]), (&json!("tick"), &json!(seq)));
        seq += 1;
    }
    seq - first
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_with_1013_and_others_get_every_message() {
    let mut s = Server::start(|c| c.outbound_queue = 8).await;
    let _slow = s.connect("slow").await; // never reads
    let sent = tick_until(&mut s, 0, |hub| hub.counters().slow_consumer_closes > 0).await;

    assert_eq!(
        s.disconnect_reason("slow").await,
        DisconnectReason::ServerClosed(1013, "slow consumer".into())
    );
    assert!(eventually(|| s.hub.connection_count() == 1).await);
    assert!(!s.hub.is_online("slow"));
    // The control connection keeps getting every message.
    tick_until(&mut s, sent, {
        let mut n = 0;
        move |_| {
            n += 1;
            n > 20
        }
    })
    .await;
    let counters = s.hub.counters();
    assert_eq!(counters.slow_consumer_closes, 1);
    assert!(counters.dropped >= 1, "{counters:?}");
    s.assert_control_works().await;
}

#[tokio::test]
async fn with_drop_message_a_client_that_never_reads_stays_and_drops_are_counted() {
    let mut s = Server::start(|c| {
        c.outbound_queue = 8;
        c.slow_consumer = SlowConsumerPolicy::DropMessage;
    })
    .await;
    let mut slow = s.connect("slow").await;
    let mut sent = tick_until(&mut s, 0, |hub| hub.counters().dropped > 0).await;
    sent += tick_until(&mut s, sent, {
        let mut n = 0;
        move |_| {
            n += 1;
            n > 20
        }
    })
    .await;
    let counters = s.hub.counters();
    assert_eq!(counters.slow_consumer_closes, 0);
    assert!(counters.dropped >= 1, "{counters:?}");
    assert_eq!(s.hub.connection_count(), 2, "the slow client is still connected");

    // Once it reads, it gets exactly what was not dropped, in order, and it still answers.
    let expected = sent - counters.dropped;
    let mut last = None;
    for _ in 0..expected {
        let frame = slow.next_frame().await;
        assert_eq!(frame["event"], "tick");
        let seq = frame["data"]["seq"].as_u64().unwrap();
        assert!(last.is_none_or(|l| seq > l), "out of order: {seq} after {last:?}");
        last = Some(seq);
    }
    assert_eq!(
        slow.call("echo", json!("awake")).await,
        json!({ "ack": 1, "data": "awake" }),
        "nothing but the ack after the messages that were not dropped"
    );
    slow.expect_no_event("tick").await;
    s.assert_control_works().await;
}

/// Pings quick enough for a test, with a window (1.5 s) far longer than the silences of the
/// control connection, which talks every 50 ms meanwhile.
fn short_pings(c: &mut Config) {
    c.ping_interval = Duration::from_millis(500);
    c.ping_timeout = Duration::from_millis(1000);
}

#[tokio::test]
async fn a_peer_that_accepts_nothing_is_closed_with_4001_even_with_writes_pending() {
    let mut s = Server::start(|c| {
        c.outbound_queue = 8;
        c.slow_consumer = SlowConsumerPolicy::DropMessage;
        short_pings(c);
    })
    .await;
    // Never reads, never answers a ping.
    let _dead = s.connect("dead").await;
    let hub = s.hub.clone();
    s.keeping_control_alive(async move {
        // One message at a time, letting the writer run in between: the queue fills up only
        // once the socket buffers are full and the writer is stuck.
        let pad = padding();
        let mut seq = 0u64;
        while hub.counters().dropped == 0 {
            assert!(seq < 2_000, "gave up after 2000 messages");
            hub.to_user("dead").emit("tick", &json!({ "seq": seq, "pad": pad }));
            seq += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let reason = s
        .keeping_control_alive(wait_for_disconnect(&s.disconnects, "dead"))
        .await;
    assert_eq!(reason, DisconnectReason::ServerClosed(4001, "ping timeout".into()));
    let hub = s.hub.clone();
    assert!(
        s.keeping_control_alive(eventually(move || hub.connection_count() == 1))
            .await
    );
    assert!(!s.hub.is_online("dead"));
    s.assert_control_works().await;
}

/// Waits (without a deadline of its own) for `user`'s connection to end.
fn wait_for_disconnect(disconnects: &Disconnects, user: &str) -> impl Future<Output = DisconnectReason> {
    let disconnects = disconnects.clone();
    let user = user.to_owned();
    async move {
        loop {
            let found = disconnects
                .lock()
                .unwrap()
                .iter()
                .find(|(u, _)| *u == user)
                .map(|(_, r)| r.clone());
            if let Some(reason) = found {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_closed_with_4001() {
    let mut s = Server::start(short_pings).await;
    let mut raw = Raw::connect(s.addr, &tok("ghost")).await;
    let (code, reason, pings) = s.keeping_control_alive(raw.expect_close()).await;
    assert_eq!((code, reason.as_str()), (4001, "ping timeout"));
    assert!(pings >= 1, "the server pings before giving up");
    let hub = s.hub.clone();
    assert!(
        s.keeping_control_alive(eventually(move || hub.connection_count() == 1))
            .await
    );
    s.assert_control_works().await;
}

#[tokio::test]
async fn a_tcp_reset_mid_frame_is_forgotten() {
    let mut s = Server::start(|_| {}).await;
    let mut raw = Raw::connect(s.addr, &tok("resetter")).await;
    raw.send(&raw::frame(
        true,
        raw::TEXT,
        br#"{"event":"join","data":"lobby","id":1}"#,
    ))
    .await;
    let (op, ack) = raw.next_frame().await;
    assert_eq!(op, raw::TEXT);
    let ack: Value = serde_json::from_slice(&ack).unwrap();
    assert_eq!(ack, json!({ "ack": 1, "data": { "joined": "lobby" } }));
    assert_eq!(s.hub.room_users("lobby"), vec!["resetter"]);

    // Half a frame, then a reset (SO_LINGER 0: RST instead of FIN).
    let frame = raw::frame(true, raw::TEXT, &[b'x'; 100]);
    raw.send(&frame[..50]).await;
    raw.tcp.set_zero_linger().unwrap();
    drop(raw);

    assert!(matches!(
        s.disconnect_reason("resetter").await,
        DisconnectReason::TransportError(_)
    ));
    assert!(eventually(|| s.hub.connection_count() == 1).await);
    assert!(!s.hub.is_online("resetter"));
    assert!(s.hub.room_members("lobby").is_empty());
    s.assert_control_works().await;
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown

#[tokio::test]
async fn shutdown_delivers_what_is_queued_then_closes_with_1001() {
    let mut s = Server::start(|_| {}).await;
    let mut reader = s.connect("reader").await;

    // 512 × 32 KiB = 16 MB for a client that is not reading yet: more than the socket
    // buffers take, so most of it is still in the hub's queue.
    const N: u64 = 512;
    let pad = "q".repeat(32 * 1024);
    let mut bytes = 0;
    for seq in 0..N {
        let data = json!({ "seq": seq, "pad": pad });
        bytes += json!({ "event": "queued", "data": data }).to_string().len() as u64;
        assert_eq!(s.hub.to_user("reader").emit("queued", &data), 1);
    }
    assert_eq!(s.hub.to_user("control").emit("queued", &json!({ "seq": 0 })), 1);
    assert!(s.hub.counters().bytes_out < bytes, "some messages are still queued");

    let hub = s.hub.clone();
    let shutdown = tokio::spawn(async move { hub.shutdown().await });
    for seq in 0..N {
        let frame = reader.next_frame().await;
        assert_eq!(
            (&frame["event"], &frame["data"]["seq"]),
            (&json!("queued"), &json!(seq))
        );
    }
    assert_eq!(
        close_code(reader.expect_close().await),
        (1001, "server shutting down".to_owned())
    );
    // The control connection, too, gets what was queued for it and a clean goodbye.
    assert_eq!(
        s.control.next_frame().await,
        json!({ "event": "queued", "data": { "seq": 0 } })
    );
    assert_eq!(
        close_code(s.control.expect_close().await),
        (1001, "server shutting down".to_owned())
    );

    let open = timeout(WAIT, shutdown).await.expect("shutdown returned").unwrap();
    assert_eq!(open, 0);
    assert_eq!(s.hub.connection_count(), 0);
    assert_eq!(
        s.handshake(&tok("late")).await,
        (503, Some("server is shutting down".to_owned()))
    );
    assert_eq!(s.hub.counters().rejected_shutdown, 1);
    // The app's own routes carry on.
    let res = reqwest::get(format!("http://{}/hello", s.addr)).await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn shutdown_closes_in_batches() {
    const INTERVAL: Duration = Duration::from_millis(400);
    let s = Server::start(|c| {
        c.shutdown_batch = 2;
        c.shutdown_batch_interval = INTERVAL;
    })
    .await;
    let mut clients = vec![s.control];
    for user in ["a", "b", "c", "d"] {
        clients.push(connect_token(s.addr, &tok(user)).await);
    }
    assert!(eventually(|| s.hub.connection_count() == 5).await);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let close = close_code(c.expect_close().await);
                (Instant::now(), close)
            })
        })
        .collect();

    let start = Instant::now();
    assert_eq!(s.hub.shutdown().await, 0);
    assert!(start.elapsed() >= INTERVAL * 2, "three batches, two pauses");
    let mut arrivals = Vec::new();
    for reader in readers {
        let (at, close) = timeout(WAIT, reader).await.unwrap().unwrap();
        assert_eq!(close, (1001, "server shutting down".to_owned()));
        arrivals.push(at - start);
    }
    arrivals.sort();
    // Two connections at most are closed before the first pause, four before the second.
    assert!(arrivals[2] >= INTERVAL, "{arrivals:?}");
    assert!(arrivals[4] >= INTERVAL * 2, "{arrivals:?}");
}

#[tokio::test]
async fn shutdown_returns_at_its_deadline_when_a_connection_does_not_end() {
    // Longer than the close handshake with a peer that does not answer may take (1 s), so
    // the control connection surely ends in time.
    const DEADLINE: Duration = Duration::from_secs(2);
    let s = Server::start(|c| c.shutdown_timeout = DEADLINE).await;
    let mut stuck = s.connect("stuck").await;
    // A handler that never finishes keeps its connection task alive.
    stuck.emit_with_id("hang", Value::Null).await;
    assert_eq!(stuck.next_frame().await, json!({ "event": "hanging", "data": null }));
    let readers: Vec<_> = [stuck, s.control]
        .into_iter()
        .map(|mut c| tokio::spawn(async move { close_code(c.expect_close().await) }))
        .collect();

    let start = Instant::now();
    let open = timeout(WAIT, s.hub.shutdown())
        .await
        .expect("shutdown returned by its deadline");
    assert!(start.elapsed() >= DEADLINE);
    assert_eq!(open, 1, "the stuck connection");
    for reader in readers {
        let close = timeout(WAIT, reader).await.unwrap().unwrap();
        assert_eq!(close, (1001, "server shutting down".to_owned()));
    }
}

#[tokio::test]
async fn shutdown_on_lets_axum_stop_after_the_connections_are_closed() {
    let hub = build_hub(Disconnects::default(), |_| {});
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(hub.layer("/ws"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(hub.shutdown_on(async move {
                let _ = stopped.await;
            }))
            .into_future(),
    );

    let mut clients = Vec::new();
    for user in ["a", "b", "c"] {
        clients.push(connect_token(addr, &tok(user)).await);
    }
    assert!(eventually(|| hub.connection_count() == 3).await);
    assert_eq!(clients[0].call("echo", json!(1)).await, json!({ "ack": 1, "data": 1 }));

    stop.send(()).unwrap();
    timeout(WAIT, server)
        .await
        .expect("the server stopped")
        .unwrap()
        .unwrap();
    // By the time the server future resolved, every realtime connection had ended.
    assert_eq!(hub.connection_count(), 0);
    assert_eq!(hub.counters().connections, 0);
    for c in &mut clients {
        assert_eq!(
            close_code(c.expect_close().await),
            (1001, "server shutting down".to_owned())
        );
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
