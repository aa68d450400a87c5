//! The demo chat in a real browser (Chromium driven by playwright-core), and the JavaScript
//! client in Node, both against servers on 127.0.0.1:0.
//!
//! They need Chromium (`/usr/bin/chromium`), Node, and the npm packages of `tests/browser`
//! (`npm ci` there), so they run only with `REALTIME_TEST_BROWSER=1`, which `.ci/run` sets after
//! installing them. Without it they say that they did not run; with it, anything missing is a
//! failure.

mod common;

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

use std::{io::Write, net::SocketAddr, path::Path, process::Stdio, time::Duration};

use axum::{
    extract::{Path as UrlPath, State},
    routing::{get, post},
    Json, Router,
};
use common::*;
use serde_json::{json, Value};
use tower_realtime::{
    AllowAnonymous, Compression, Data, Emitter, ErrorEvent, History, Hub, JwtAuth, RawMessage, Socket,
};

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one Node script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn enabled(what: &str, needs: &str) -> bool {
    if std::env::var("REALTIME_TEST_BROWSER").is_ok_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    // Straight to stderr: the test harness would swallow `eprintln!` from a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "{what} did not run: set REALTIME_TEST_BROWSER=1 (needs {needs})"
    );
    false
}

/// Runs `node tests/browser/<script> <url>` and fails the test unless it exits with 0;
/// returns its standard output.
async fn node(script: &str, addr: SocketAddr) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && dir.join("node_modules/ws").is_dir(),
        "the npm packages are missing: run `npm ci` in {}",
        dir.display()
    );
    let child = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .arg(format!("http://{addr}"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start node: {e}"));
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}"))
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_chat_in_chromium() {
    if !enabled("browser test", "/usr/bin/chromium and npm packages in tests/browser") {
        return;
    }
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: apt-get install chromium"
    );
    let (app, hub) = chat::app(SECRET.to_owned(), None);
    let addr = serve(app).await;
    node("chat.spec.mjs", addr).await;
    assert!(
        eventually(|| hub.connection_count() == 0).await,
        "the browser closed every connection"
    );
}

/// Chromium agrees permessage-deflate with a hub that has compression on, and what it sends
/// comes back intact, compressed both ways (see `tests/browser/deflate.spec.mjs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permessage_deflate_in_chromium() {
    if !enabled(
        "browser compression test",
        "/usr/bin/chromium and npm packages in tests/browser",
    ) {
        return;
    }
    let mut compression = Compression::default();
    compression.threshold = 256;
    let hub = Hub::builder()
        .auth(AllowAnonymous::new())
        .compression(compression)
        .on_raw(|socket: Socket, msg: RawMessage| async move {
            socket.send_raw(msg);
        })
        .build();
    let addr = serve_hub(&hub).await;
    let stdout = node("deflate.spec.mjs", addr).await;
    let seen: Value = serde_json::from_str(stdout.trim()).expect("the script's JSON line");
    assert!(
        (seen["extensions"].as_str().unwrap_or("")).starts_with("permessage-deflate"),
        "{seen}"
    );
    assert_eq!(seen["intact"], true, "{seen}");
    // The two long messages went back compressed; the short one did not.
    let counters = hub.counters();
    let long: u64 = [0, 2].iter().map(|&i| seen["sizes"][i].as_u64().unwrap()).sum();
    assert!(counters.deflate_bytes_in >= long, "{counters:?}");
    assert!(
        counters.deflate_bytes_out * 3 < counters.deflate_bytes_in,
        "{counters:?}"
    );
    assert!(
        eventually(|| hub.connection_count() == 0).await,
        "the browser closed its connection"
    );
}

/// The server the Node client test talks to (see `tests/browser/client.test.mjs`).
fn client_test_app() -> (Router, Hub) {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .history(History::new().rooms("*"))
        .on("joinRoom", |socket: Socket, Data(room): Data<String>| async move {
            socket.join(&room)?;
            Ok::<_, ErrorEvent>(json!({ "room": room }))
        })
        .on("leaveRoom", |socket: Socket, Data(room): Data<String>| async move {
            socket.leave(&room);
            json!({ "room": room })
        })
        .on("echo", |socket: Socket, Data(data): Data<Value>| async move {
            socket.emit("echoed", &data);
            data
        })
        .on("slow", |Data(ms): Data<u64>| async move {
            tokio::time::sleep(Duration::from_millis(ms.min(2000))).await;
            "late"
        })
        .build();
    let router = Router::new()
        .route(
            "/token/{user}",
            get(|UrlPath(user): UrlPath<String>| async move { token(&user) }),
        )
        .route(
            "/disconnect/{user}",
            post(|State(hub): State<Hub>, UrlPath(user): UrlPath<String>| async move {
                Json(json!({ "closed": hub.disconnect_user(&user) }))
            }),
        )
        .route(
            "/ask/{user}",
            post(
                |State(hub): State<Hub>, UrlPath(user): UrlPath<String>, Json(question): Json<Value>| async move {
                    // A server emit with an ack, to the user's one connection; its answer is the reply.
                    let socket = hub.connections_of(&user).first().and_then(|id| hub.socket(*id));
                    let Some(socket) = socket else {
                        return Json(json!({ "error": "not connected" }));
                    };
                    match socket.emit_with_ack::<_, Value>("question", &question, WAIT).await {
                        Ok(answer) => Json(answer),
                        Err(e) => Json(json!({ "error": e.to_string() })),
                    }
                },
            ),
        )
        .route(
            "/rooms/{room}",
            get(|State(hub): State<Hub>, UrlPath(room): UrlPath<String>| async move { Json(hub.room_users(&room)) }),
        )
        .route(
            "/emit/{room}",
            post(
                |State(hub): State<Hub>, UrlPath(room): UrlPath<String>, Json(data): Json<Value>| async move {
                    Json(json!({ "reached": hub.to_room(&room).emit("news", &data) }))
                },
            ),
        )
        .with_state(hub.clone())
        .layer(hub.layer("/ws"));
    (router, hub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_in_node() {
    if !enabled("node client test", "node and npm packages in tests/browser") {
        return;
    }
    let (app, hub) = client_test_app();
    let addr = serve(app).await;
    node("client.test.mjs", addr).await;
    assert!(eventually(|| hub.connection_count() == 0).await, "every client closed");
}
