//! Interop with the real socket.io-client from npm (and the `ws` package for the native
//! protocol): runs `node --test tests/node/socketio.test.mjs` against a hub served here, and
//! `tests/node/socketio-lite.test.mjs` (the demo page's small Socket.IO client) against another.
//!
//! Runs when `REALTIME_TEST_NODE=1` (`.ci/run` sets it after `npm ci` in tests/node); without
//! it the test says so and does nothing. With it, a missing Node or package is a failure.
#![cfg(feature = "socketio")]

mod common;

use std::time::Duration;

use common::*;
use serde::Deserialize;
use serde_json::{json, Value};
use tower_realtime::{
    socketio::SocketIoConfig, Args, Attachments, Compression, Data, Emitter, ErrorEvent, Hub, JwtAuth, Reply, Socket,
};

#[derive(Deserialize)]
struct RoomText {
    room: String,
    text: String,
}

#[derive(Deserialize)]
struct Private {
    to: String,
    message: Value,
}

fn hub() -> Hub {
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .socketio(SocketIoConfig::default())
        .on("joinRoom", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!({ "event": "joinedRoom", "room": room }))
        })
        .on("message", |s: Socket, Data(m): Data<RoomText>| async move {
            if !s.in_room(&m.room) {
                return Err(ErrorEvent::new("not in room"));
            }
            let out = json!({ "room": m.room, "text": m.text, "sender": s.user_id() });
            s.hub().to_room(&m.room).emit("message", &out);
            Ok(json!({ "ok": true }))
        })
        .on("privateMessage", |s: Socket, Data(m): Data<Private>| async move {
            let n =
                (s.hub().to_user(&m.to)).emit("privateMessage", &json!({ "from": s.user_id(), "message": m.message }));
            json!({ "delivered": n })
        })
        .on("askMe", |s: Socket, Data(n): Data<u64>| async move {
            let answer: u64 = s
                .emit_with_ack("question", &n, Duration::from_secs(3))
                .await
                .map_err(ErrorEvent::internal)?;
            Ok::<_, ErrorEvent>(json!({ "answer": answer }))
        })
        .on("askRoom", |s: Socket, Data(room): Data<String>| async move {
            let answers = (s.to(&room).timeout(Duration::from_millis(500)))
                .emit_with_ack::<_, Value>("poll", &room)
                .await
                .map_err(ErrorEvent::internal)?;
            let answered: Vec<Value> = answers.answers().map(|(_, v)| v.clone()).collect();
            let silent = answers.responses.len() - answered.len();
            Ok::<_, ErrorEvent>(json!({ "answered": answered, "silent": silent }))
        })
        .on(
            "echoBinary",
            |Args(args): Args, Attachments(bin): Attachments| async move { Reply::args(args).with_attachments(bin) },
        )
        .on(
            "emitBinary",
            |s: Socket, Args(args): Args, Attachments(bin): Attachments| async move {
                s.emit_args("binaryBack", args, bin);
            },
        )
        .on("dropMe", |s: Socket| async move { s.close_transport() })
        .build()
}

/// Runs `node --test tests/node/<script>` against a fresh [`hub`]; returns its stdout once it passed.
async fn run_node_tests(script: &str) -> Option<String> {
    if !node_enabled("node interop test") {
        return None;
    }
    let hub = hub();
    let addr = serve_hub(&hub).await;
    let bad = sign(&json!({ "sub": "x", "exp": now() - 600 }));
    let env = vec![("BASE_URL", format!("http://{addr}")), ("BAD_TOKEN", bad)];
    Some(run_node(script, env).await)
}

#[tokio::test]
async fn socketio_client_interop() {
    let Some(stdout) = run_node_tests("socketio.test.mjs").await else {
        return;
    };
    assert!(stdout.contains("pass 9"), "all nine interop tests ran and passed");
}

/// The demo page's small Socket.IO client (`clients/js/socketio-lite.js`), beside socket.io-client.
#[tokio::test]
async fn socketio_lite_client() {
    let Some(stdout) = run_node_tests("socketio-lite.test.mjs").await else {
        return;
    };
    assert!(stdout.contains("pass 6"), "all six socketio-lite tests ran and passed");
}

/// socket.io-client over a WebSocket (from the start, and upgraded from polling) agrees
/// permessage-deflate with a hub that has compression on, and payloads arrive intact both
/// ways (`tests/node/deflate.test.mjs`).
#[tokio::test]
async fn socketio_client_compression() {
    if !node_enabled("node compression test") {
        return;
    }
    let mut compression = Compression::default();
    compression.threshold = 256;
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .socketio(SocketIoConfig::default())
        .compression(compression)
        .on("echo", |s: Socket, Data(v): Data<Value>| async move {
            s.emit("echoed", &v);
            v
        })
        .build();
    let addr = serve_hub(&hub).await;
    let stdout = run_node("deflate.test.mjs", vec![("BASE_URL", format!("http://{addr}"))]).await;
    assert!(stdout.contains("pass 2"), "both compression tests ran and passed");
    // The server compressed what went back (the large payloads, each once per message).
    let counters = hub.counters();
    assert!(counters.deflate_compressions >= 4, "{counters:?}");
    assert!(
        counters.deflate_bytes_out * 3 < counters.deflate_bytes_in,
        "{counters:?}"
    );
}
