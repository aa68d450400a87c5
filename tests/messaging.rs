//! Events, acks, error events, rooms, users, broadcasts and the Hub's bookkeeping, over real
//! sockets.

mod common;

use std::time::Duration;

use axum::{extract::State, routing::post, Json, Router};
use common::*;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tower_realtime::{Data, Emitter, ErrorEvent, Hub, JwtAuth, Socket};

#[derive(Deserialize)]
struct Typed {
    n: u32,
}

#[derive(Deserialize)]
struct ToRoom {
    room: String,
    text: String,
}

fn test_hub() -> Hub {
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on("join", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!({ "joined": room }))
        })
        .on("leave", |s: Socket, Data(room): Data<String>| async move {
            json!(s.leave(&room))
        })
        .on("toRoom", |s: Socket, Data(m): Data<ToRoom>| async move {
            s.hub().to_room(&m.room).emit("roomMsg", &json!({ "text": m.text }));
        })
        .on("toOthers", |s: Socket, Data(m): Data<ToRoom>| async move {
            s.to(&m.room).emit("roomMsg", &json!({ "text": m.text }));
        })
        .on("echo", |Data(v): Data<Value>| async move { v })
        .on("typed", |Data(t): Data<Typed>| async move { json!(t.n * 2) })
        .on("noreply", || async {})
        .on("fail", || async {
            Err::<(), _>(ErrorEvent::new("nope").with_field("code", 42))
        })
        .on("internal", || async {
            Err::<(), _>(ErrorEvent::internal("db password is hunter2"))
        })
        .on("panic", || async {
            if true {
                panic!("boom");
            }
        })
        .on("whoami", |s: Socket| async move {
            json!({ "user": s.user_id(), "rooms": s.rooms() })
        })
        .build()
}

async fn setup() -> (Hub, std::net::SocketAddr) {
    let hub = test_hub();
    let app = Router::new()
        .route(
            "/broadcast",
            post(|State(hub): State<Hub>, Json(body): Json<Value>| async move {
                Json(json!({ "delivered": hub.emit("news", &body) }))
            }),
        )
        .with_state(hub.clone())
        .layer(hub.layer("/ws"));
    let addr = serve(app).await;
    (hub, addr)
}

#[tokio::test]
async fn acks_carry_the_handler_return_value() {
    let (_hub, addr) = setup().await;
    let mut c = connect(addr, "alice").await;
    assert_eq!(
        c.call("echo", json!({"a": [1, 2]})).await,
        json!({"ack": 1, "data": {"a": [1, 2]}})
    );
    assert_eq!(c.call("typed", json!({"n": 21})).await["data"], json!(42));
    assert_eq!(c.call("noreply", Value::Null).await, json!({"ack": 3, "data": null}));
    assert_eq!(
        c.call("whoami", Value::Null).await["data"],
        json!({"user": "alice", "rooms": []})
    );
}

#[tokio::test]
async fn bad_input_gets_an_error_event_and_the_connection_stays_open() {
    let (_hub, addr) = setup().await;
    let mut c = connect(addr, "alice").await;

    c.send_raw("{not json").await;
    let e = c.next_frame().await;
    assert_eq!(e["event"], "error");
    assert_eq!(e["data"]["status"], "error");
    assert!(
        e["data"]["message"].as_str().unwrap().starts_with("invalid message"),
        "{e}"
    );
    assert!(e.get("ack").is_none(), "no id, no ack field: {e}");

    c.send_raw(r#"{"event": 12, "id": 9}"#).await;
    let e = c.next_frame().await;
    assert_eq!(
        (e["event"].as_str(), e["ack"].as_u64()),
        (Some("error"), Some(9)),
        "{e}"
    );

    let e = c.call("typed", json!({"n": "not a number"})).await;
    assert_eq!(e["event"], "error");
    assert!(
        e["data"]["message"].as_str().unwrap().contains("invalid payload"),
        "{e}"
    );

    let e = c.call("nosuchevent", Value::Null).await;
    assert_eq!(e["data"]["message"], "unknown event: nosuchevent");

    let e = c.call("fail", Value::Null).await;
    assert_eq!(e["data"], json!({"status": "error", "message": "nope", "code": 42}));

    let e = c.call("internal", Value::Null).await;
    assert_eq!(e["data"]["message"], "Internal server error");
    assert!(!e.to_string().contains("hunter2"));

    let e = c.call("panic", Value::Null).await;
    assert_eq!(e["data"]["message"], "Internal server error");

    for reserved in ["error", "connect", "disconnect"] {
        let e = c.call(reserved, Value::Null).await;
        assert!(e["data"]["message"].as_str().unwrap().contains("reserved"), "{e}");
    }

    let long = "x".repeat(200);
    let e = c.call(&long, Value::Null).await;
    assert!(
        e["data"]["message"].as_str().unwrap().contains("event name longer"),
        "{e}"
    );

    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let e = c.expect_event("error").await;
    assert!(e["message"].as_str().unwrap().contains("binary"), "{e}");

    // Still open and working.
    assert_eq!(c.call("echo", json!("still here")).await["data"], "still here");
}

#[tokio::test]
async fn rooms_join_leave_and_except() {
    let (hub, addr) = setup().await;
    let mut a = connect(addr, "alice").await;
    let mut b = connect(addr, "bob").await;
    let mut c = connect(addr, "carol").await;
    assert_eq!(a.call("join", json!("r1")).await["data"], json!({"joined": "r1"}));
    b.call("join", json!("r1")).await;
    c.call("join", json!("r2")).await;
    assert_eq!(hub.room_users("r1"), vec!["alice", "bob"]);

    a.call("toRoom", json!({"room": "r1", "text": "all"})).await;
    assert_eq!(a.expect_event("roomMsg").await["text"], "all");
    assert_eq!(b.expect_event("roomMsg").await["text"], "all");
    c.expect_no_event("roomMsg").await;

    a.call("toOthers", json!({"room": "r1", "text": "others"})).await;
    assert_eq!(b.expect_event("roomMsg").await["text"], "others");
    a.expect_no_event("roomMsg").await;

    assert_eq!(b.call("leave", json!("r1")).await["data"], json!(true));
    assert_eq!(b.call("leave", json!("r1")).await["data"], json!(false));
    a.call("toRoom", json!({"room": "r1", "text": "after leave"})).await;
    assert_eq!(a.expect_event("roomMsg").await["text"], "after leave");
    b.expect_no_event("roomMsg").await;

    let e = a.call("join", json!("")).await;
    assert_eq!(e["event"], "error");
}

#[tokio::test]
async fn a_user_emit_reaches_every_connection_of_that_user_once() {
    let (hub, addr) = setup().await;
    let mut tab1 = connect(addr, "alice").await;
    let mut tab2 = connect(addr, "alice").await;
    let mut other = connect(addr, "bob").await;
    assert!(eventually(|| hub.connections_of("alice").len() == 2).await);
    tab1.call("join", json!("r")).await;

    // Reached through the user and the room: still once.
    let n = hub.to_user("alice").to_room("r").emit("ping", &json!(1));
    assert_eq!(n, 2);
    assert_eq!(tab1.expect_event("ping").await, json!(1));
    assert_eq!(tab2.expect_event("ping").await, json!(1));
    tab1.expect_no_event("ping").await;
    other.expect_no_event("ping").await;

    assert_eq!(
        hub.to_users(["alice", "bob"])
            .except(tab1_id(&hub, "alice"))
            .emit("x", &0),
        2
    );
    assert_eq!(
        hub.to_user("nobody").emit("x", &0),
        0,
        "an offline user gets nothing, without an error"
    );
}

#[tokio::test]
async fn a_user_keeps_their_other_connections_when_one_closes() {
    let (hub, addr) = setup().await;
    let mut tabs = Vec::new();
    for _ in 0..4 {
        tabs.push(connect(addr, "alice").await);
    }
    assert!(eventually(|| hub.connections_of("alice").len() == 4).await);
    let ids = hub.connections_of("alice");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");

    // Close the second and the last; the first and third remain, in order.
    let last = tabs.pop().unwrap();
    let second = tabs.remove(1);
    second.close().await;
    last.close().await;
    assert!(eventually(|| hub.connections_of("alice").len() == 2).await);
    assert_eq!(hub.connections_of("alice"), [ids[0], ids[2]]);
    assert_eq!(hub.to_user("alice").emit("ping", &json!(7)), 2);
    for tab in &mut tabs {
        assert_eq!(tab.expect_event("ping").await, json!(7));
    }

    for tab in tabs {
        tab.close().await;
    }
    assert!(eventually(|| hub.connections_of("alice").is_empty()).await);
    assert!(!hub.is_online("alice"));
}

fn tab1_id(hub: &Hub, user: &str) -> tower_realtime::ConnectionId {
    hub.connections_of(user)[0]
}

#[tokio::test]
async fn http_handlers_broadcast_through_the_hub() {
    let (hub, addr) = setup().await;
    let mut a = connect(addr, "alice").await;
    let mut b = connect(addr, "bob").await;
    assert!(eventually(|| hub.connection_count() == 2).await);
    let res = post_json(addr, "/broadcast", json!({"title": "hi"})).await;
    assert_eq!(res["delivered"], 2);
    assert_eq!(a.expect_event("news").await, json!({"title": "hi"}));
    assert_eq!(b.expect_event("news").await, json!({"title": "hi"}));

    // `broadcast().except(..)` leaves one out.
    let a_id = hub.connections_of("alice")[0];
    assert_eq!(hub.broadcast().except(a_id).emit("news", &json!(2)), 1);
    assert_eq!(b.expect_event("news").await, json!(2));
    a.expect_no_event("news").await;
}

#[tokio::test]
async fn the_hub_forgets_a_connection_after_a_clean_close() {
    let (hub, addr) = setup().await;
    let mut a = connect(addr, "alice").await;
    a.call("join", json!("r")).await;
    assert!(hub.is_online("alice"));
    assert_eq!(hub.online_users(), vec!["alice"]);
    a.close().await;
    assert!(eventually(|| hub.connection_count() == 0).await);
    assert!(!hub.is_online("alice"));
    assert!(hub.room_members("r").is_empty());
    assert!(hub.online_users().is_empty());
}

#[tokio::test]
async fn the_hub_forgets_a_connection_after_an_abrupt_tcp_drop() {
    let (hub, addr) = setup().await;
    let mut a = connect(addr, "alice").await;
    a.call("join", json!("r")).await;
    // Drop the TCP stream without a close frame.
    drop(a);
    assert!(eventually(|| hub.connection_count() == 0).await);
    assert!(!hub.is_online("alice"));
    assert!(hub.room_members("r").is_empty());
}

#[tokio::test]
async fn disconnect_user_closes_all_their_connections_with_4000() {
    let (hub, addr) = setup().await;
    let mut a1 = connect(addr, "alice").await;
    let mut a2 = connect(addr, "alice").await;
    let mut b = connect(addr, "bob").await;
    assert!(eventually(|| hub.connection_count() == 3).await);
    assert_eq!(hub.disconnect_user("alice"), 2);
    assert_eq!(u16::from(a1.expect_close().await.unwrap().code), 4000);
    assert_eq!(u16::from(a2.expect_close().await.unwrap().code), 4000);
    assert!(eventually(|| hub.connection_count() == 1).await);
    assert_eq!(b.call("echo", json!(1)).await["data"], 1);
}

#[tokio::test]
async fn a_silent_peer_is_closed_after_the_ping_timeout() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .configure(|c| {
            c.ping_interval = Duration::from_millis(100);
            // Generous beside the interval, so that a loaded machine does not close the
            // peer that does answer.
            c.ping_timeout = Duration::from_millis(500);
        })
        .build();
    let addr = serve_hub(&hub).await;
    // A raw TCP peer that completes the handshake and then never reads nor answers pings.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {}\r\n\r\n",
        token("ghost")
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    assert!(eventually(|| hub.connection_count() == 1).await);
    assert!(
        eventually(|| hub.connection_count() == 0).await,
        "the silent peer was not removed"
    );

    // A peer that answers pings stays.
    let ok = connect(addr, "alive").await;
    let reader = tokio::spawn(async move {
        // Reading is what makes the client answer pings.
        let mut ws = ok.ws;
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hub.connection_count(), 1, "a peer that answers pings is kept");
    reader.abort();
}
