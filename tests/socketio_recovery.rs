//! Socket.IO connection state recovery (`pid` and `offset`), with the real socket.io-client
//! from npm (`node --test tests/node/recovery.test.mjs`) and with hand-driven Engine.IO
//! requests.
//!
//! The node tests run when `REALTIME_TEST_NODE=1` (`.ci/run` sets it after `npm ci` in
//! tests/node); without it they say so and do nothing. The hand-driven tests always run.
#![cfg(feature = "socketio")]

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{Path, Request},
    routing::{get, post},
    Json, Router,
};
use common::{socketio::Polling, *};
use futures_util::{SinkExt, StreamExt};
use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt;
use tower_realtime::{
    socketio::SocketIoConfig, Data, DisconnectReason, Emitter, ErrorEvent, History, Hub, JwtAuth, RateLimit, Socket,
};

fn hub(history: History) -> Hub {
    hub_with(history, SocketIoConfig::default())
}

fn hub_with(history: History, config: SocketIoConfig) -> Hub {
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .socketio(config)
        .history(history)
        .on("join", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!({ "joined": room }))
        })
        .on("rooms", |s: Socket| async move {
            let mut rooms = s.rooms();
            rooms.sort();
            json!(rooms)
        })
        .on("dropMe", |s: Socket| async move { s.close_transport() })
        .on("wait", |Data(ms): Data<u64>| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        })
        .build()
}

#[derive(Deserialize)]
struct EmitBody {
    room: String,
    event: String,
    data: Value,
}

/// The hub at `/ws` and `/socket.io/`, and what the node tests drive it with: `POST /emit`
/// (`{room, event, data}`: an emit to a room while a client is away) and
/// `GET /online/{user}` (how many connections the user has, to wait for a drop to be seen).
fn app(hub: &Hub) -> Router {
    let emitter = hub.clone();
    let counter = hub.clone();
    Router::new()
        .route(
            "/emit",
            post(move |Json(body): Json<EmitBody>| async move {
                let reached = emitter.to_room(&body.room).emit(&body.event, &body.data);
                Json(json!({ "reached": reached }))
            }),
        )
        .route(
            "/online/{user}",
            get(move |Path(user): Path<String>| async move {
                Json(json!({ "connections": counter.connections_of(&user).len() }))
            }),
        )
        .layer(hub.layer("/ws"))
}

/// A server restart behind one address: `POST /restart` shuts the first hub down (its clients
/// are disconnected and reconnect) and sends every later request to the second, a new process
/// as far as recovery knows (a new epoch, no sessions).
async fn serve_restartable(first: Hub, second: Hub) -> SocketAddr {
    let current = Arc::new(RwLock::new(app(&first)));
    let next = app(&second);
    let switch = current.clone();
    let forward = current.clone();
    let outer = Router::new()
        .route(
            "/restart",
            post(move || async move {
                *switch.write() = next.clone();
                let still_open = first.shutdown().await;
                Json(json!({ "stillOpen": still_open }))
            }),
        )
        .fallback_service(tower::service_fn(move |req: Request| {
            let app = forward.read().clone();
            app.oneshot(req)
        }));
    serve(outer).await
}

#[tokio::test]
async fn socketio_client_recovers_its_session() {
    if !node_enabled("node recovery test") {
        return;
    }
    // Recovery within the window; eviction (more missed than a room keeps) after it.
    let main = hub(History::new().rooms("*").max_events(20));
    let main_addr = serve(app(&main)).await;
    // Sessions that expire quickly.
    let short = hub(History::new().rooms("*").session_ttl(Duration::from_millis(300)));
    let short_addr = serve(app(&short)).await;
    let restart_addr = serve_restartable(hub(History::new().rooms("*")), hub(History::new().rooms("*"))).await;

    let env = vec![
        ("BASE_URL", format!("http://{main_addr}")),
        ("SHORT_TTL_URL", format!("http://{short_addr}")),
        ("RESTART_URL", format!("http://{restart_addr}")),
    ];
    let stdout = run_node("recovery.test.mjs", env).await;
    assert!(stdout.contains("pass 7"), "all seven recovery tests ran and passed");
    assert!(main.counters().recovered >= 3, "{:?}", main.counters());
}

/// Sends a CONNECT with `auth` (the token added) and returns the answer's data.
async fn sio_connect(s: &Polling, user: &str, mut auth: Value) -> Value {
    auth["token"] = json!(token(user));
    s.post(&format!("40{auth}")).await;
    let answer = s.until(|p| p.starts_with("40") || p.starts_with("44")).await;
    assert!(answer.starts_with("40"), "connected: {answer}");
    serde_json::from_str(&answer[2..]).unwrap()
}

/// The arguments of the next EVENT.
async fn next_event(s: &Polling) -> Vec<Value> {
    let packet = s.until(|p| p.starts_with("42")).await;
    serde_json::from_str(&packet[2..]).unwrap()
}

/// Connects `user` over polling, joins `room`, receives one event there: the session's
/// `pid` and the offset the client would present.
async fn joined(hub: &Hub, addr: SocketAddr, user: &str, room: &str) -> (Polling, String, String) {
    let (s, _) = Polling::open(addr).await;
    let connected = sio_connect(&s, user, json!({})).await;
    let pid = connected["pid"]
        .as_str()
        .expect("a pid when the hub keeps history")
        .to_owned();
    s.post(&format!("421{}", json!(["join", room]))).await;
    s.until(|p| p.starts_with("431")).await;
    hub.to_room(room).emit("said", &json!("first"));
    let args = next_event(&s).await;
    assert_eq!(args[..2], [json!("said"), json!("first")]);
    let offset = args[2].as_str().expect("the offset as the last argument").to_owned();
    (s, pid, offset)
}

#[tokio::test]
async fn an_engineio_close_packet_is_a_dropped_transport_and_the_session_is_kept() {
    let hub = hub(History::new().rooms("*"));
    let addr = serve(app(&hub)).await;
    let (s, pid, offset) = joined(&hub, addr, "alice", "general").await;
    // socket.io-client's `socket.io.engine.close()` over polling: a close packet, and no
    // DISCONNECT for the namespace (Socket.IO's "transport close").
    s.post("1").await;
    assert!(eventually(|| hub.connection_count() == 0).await);
    hub.to_room("general").emit("said", &json!("missed"));

    let (s, _) = Polling::open(addr).await;
    let connected = sio_connect(&s, "alice", json!({ "pid": pid, "offset": offset })).await;
    assert_eq!(connected["pid"], json!(pid), "the same pid: recovered");
    assert_eq!(next_event(&s).await[..2], [json!("said"), json!("missed")]);
    assert_eq!(hub.counters().recovered, 1);
}

#[tokio::test]
async fn a_disconnect_read_before_the_session_ended_keeps_nothing() {
    let hub = hub(History::new().rooms("*"));
    let addr = serve(app(&hub)).await;

    // Over polling: a DISCONNECT waiting behind a running handler, then the close packet.
    let (s, pid, offset) = joined(&hub, addr, "alice", "general").await;
    s.post(&format!("42{}\u{1e}41\u{1e}1", json!(["wait", 200]))).await;
    assert!(eventually(|| hub.connection_count() == 0).await);
    let (s, _) = Polling::open(addr).await;
    let connected = sio_connect(&s, "alice", json!({ "pid": pid, "offset": offset })).await;
    assert_ne!(
        connected["pid"],
        json!(pid),
        "a client that said goodbye does not recover"
    );
    s.post("41").await;

    // Over WebSocket: the close frame right behind the DISCONNECT.
    let (s, pid, offset) = joined(&hub, addr, "bob", "general").await;
    s.post("1").await;
    assert!(eventually(|| hub.connection_count() == 0).await);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"))
        .await
        .unwrap();
    let open = ws.next().await.unwrap().unwrap();
    assert!(open.to_text().unwrap().starts_with('0'));
    let auth = json!({ "token": token("bob"), "pid": pid, "offset": offset });
    ws.send(Message::text(format!("40{auth}"))).await.unwrap();
    let connected = loop {
        let frame = ws.next().await.unwrap().unwrap();
        if let Some(data) = frame.to_text().unwrap().strip_prefix("40") {
            break serde_json::from_str::<Value>(data).unwrap();
        }
    };
    assert_eq!(
        connected["pid"],
        json!(pid),
        "recovered (the polling session was left without a goodbye)"
    );
    ws.send(Message::text("41")).await.unwrap();
    ws.close(None).await.unwrap();
    assert!(eventually(|| hub.connection_count() == 0).await);
    let (s, _) = Polling::open(addr).await;
    let connected = sio_connect(&s, "bob", json!({ "pid": pid, "offset": offset })).await;
    assert_ne!(
        connected["pid"],
        json!(pid),
        "the DISCONNECT counted, not the close behind it"
    );
}

#[tokio::test]
async fn a_ping_timeout_keeps_the_session() {
    let hub = hub_with(
        History::new().rooms("*"),
        SocketIoConfig::default().ping(Duration::from_millis(100), Duration::from_millis(100)),
    );
    let addr = serve(app(&hub)).await;
    let (_s, pid, offset) = joined(&hub, addr, "alice", "general").await;
    // The client stops answering pings.
    assert!(eventually(|| hub.connection_count() == 0).await);
    hub.to_room("general").emit("said", &json!("missed"));
    let (s, _) = Polling::open(addr).await;
    let connected = sio_connect(&s, "alice", json!({ "pid": pid, "offset": offset })).await;
    assert_eq!(connected["pid"], json!(pid));
    assert_eq!(next_event(&s).await[..2], [json!("said"), json!("missed")]);
}

#[tokio::test]
async fn an_offset_from_an_earlier_epoch_counts_from_the_start_of_the_session() {
    let hub = hub(History::new().rooms("*"));
    let addr = serve(app(&hub)).await;
    // A session of this hub, with no event received yet: the client still holds the offset
    // it had before the server restarted.
    let (s, _) = Polling::open(addr).await;
    let pid = sio_connect(&s, "alice", json!({})).await["pid"]
        .as_str()
        .unwrap()
        .to_owned();
    s.post(&format!("421{}", json!(["join", "general"]))).await;
    s.until(|p| p.starts_with("431")).await;
    s.post("1").await;
    assert!(eventually(|| hub.connection_count() == 0).await);
    hub.to_room("general").emit("said", &json!("missed"));
    let (s, _) = Polling::open(addr).await;
    let connected = sio_connect(&s, "alice", json!({ "pid": pid, "offset": "0123abcd-41" })).await;
    assert_eq!(connected["pid"], json!(pid), "recovered");
    let args = next_event(&s).await;
    assert_eq!(args[..2], [json!("said"), json!("missed")]);
    assert_eq!(hub.counters().recovered, 1);

    // A session the hub does not know, with such an offset: not recovered.
    let (s, _) = Polling::open(addr).await;
    let connected = sio_connect(&s, "alice", json!({ "pid": "feedface", "offset": "0123abcd-41" })).await;
    assert_ne!(connected["pid"], json!("feedface"));
}

#[tokio::test]
async fn a_client_put_out_for_flooding_keeps_no_session_and_the_app_is_told_why() {
    let reasons: Arc<parking_lot::Mutex<Vec<DisconnectReason>>> = Arc::default();
    let seen = reasons.clone();
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .socketio(SocketIoConfig::default())
        .history(History::new().rooms("*"))
        .on("join", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!({ "joined": room }))
        })
        .rate_limit_event("join", RateLimit::per_second(1).burst(1))
        .on_disconnect(move |_: Socket, reason| {
            seen.lock().push(reason);
            async {}
        })
        .build();
    let addr = serve(app(&hub)).await;
    let (s, pid, offset) = joined(&hub, addr, "alice", "general").await;
    let flood: Vec<String> = (0..25).map(|_| format!("42{}", json!(["join", "general"]))).collect();
    s.post(&flood.join("\u{1e}")).await;
    assert!(eventually(|| hub.connection_count() == 0).await);
    assert_eq!(
        *reasons.lock(),
        [DisconnectReason::ServerClosed(1008, "rate limit exceeded".into())]
    );
    let (s, _) = Polling::open(addr).await;
    let connected = sio_connect(&s, "alice", json!({ "pid": pid, "offset": offset })).await;
    assert_ne!(connected["pid"], json!(pid), "put out by the server: not recovered");
}

#[tokio::test]
async fn a_forged_offset_past_the_history_does_not_recover_nor_stall_live_events() {
    let hub = hub(History::new().rooms("*"));
    let addr = serve(app(&hub)).await;
    // The control: bob drops, and comes back with what he was given.
    let (control, control_pid, control_offset) = joined(&hub, addr, "bob", "general").await;
    control.post("1").await;
    assert!(eventually(|| hub.connection_count() == 0).await);
    let (s, pid, offset) = joined(&hub, addr, "alice", "general").await;
    s.post("1").await;
    assert!(eventually(|| hub.connection_count() == 0).await);
    hub.to_room("general").emit("said", &json!("missed"));

    // Alice's own pid, with a position past the last offset given out.
    let (epoch, _) = offset.rsplit_once('-').unwrap();
    let (s, _) = Polling::open(addr).await;
    let forged = format!("{epoch}-{}", u64::MAX);
    let connected = sio_connect(&s, "alice", json!({ "pid": pid, "offset": forged })).await;
    assert_ne!(connected["pid"], json!(pid), "not recovered");
    // Live events reach her: nothing is held behind a recovery that never ends.
    s.post(&format!("421{}", json!(["join", "general"]))).await;
    s.until(|p| p.starts_with("431")).await;
    hub.to_room("general").emit("said", &json!("live"));
    assert_eq!(next_event(&s).await[..2], [json!("said"), json!("live")]);

    let (s, _) = Polling::open(addr).await;
    let connected = sio_connect(&s, "bob", json!({ "pid": control_pid, "offset": control_offset })).await;
    assert_eq!(connected["pid"], json!(control_pid), "the control recovers");
    assert_eq!(next_event(&s).await[..2], [json!("said"), json!("first")]);
    assert_eq!(next_event(&s).await[..2], [json!("said"), json!("missed")]);
}

#[tokio::test]
async fn a_pid_presented_by_another_user_does_not_recover_and_stays_with_its_owner() {
    let hub = hub(History::new().rooms("*"));
    let addr = serve(app(&hub)).await;
    let (s, pid, offset) = joined(&hub, addr, "alice", "general").await;
    s.post("1").await;
    assert!(eventually(|| hub.connection_count() == 0).await);
    hub.to_room("general").emit("said", &json!("missed"));

    // Mallory presents alice's pid and offset: a new session, no rooms, nothing replayed.
    let (m, _) = Polling::open(addr).await;
    let connected = sio_connect(&m, "mallory", json!({ "pid": pid, "offset": offset })).await;
    assert_ne!(connected["pid"], json!(pid), "not recovered");
    m.post("421[\"rooms\"]").await;
    assert_eq!(m.until(|p| p.starts_with("431")).await, "431[[]]");

    // Alice still has her session.
    let (s, _) = Polling::open(addr).await;
    let connected = sio_connect(&s, "alice", json!({ "pid": pid, "offset": offset })).await;
    assert_eq!(connected["pid"], json!(pid), "the owner recovers");
    assert_eq!(next_event(&s).await[..2], [json!("said"), json!("missed")]);
    assert_eq!((hub.counters().recovered, hub.counters().not_recovered), (1, 1));
}
