//! The demo app's contract (README, "The demo"), driven over real sockets.

mod common;

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

use std::net::SocketAddr;

use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn demo() -> (SocketAddr, tower_realtime::Hub) {
    let (app, hub) = chat::app(SECRET.to_owned(), None);
    (serve(app).await, hub)
}

async fn login(addr: SocketAddr, user: &str) -> String {
    let res = post_json(addr, "/login", json!({ "user": user })).await;
    res["token"].as_str().expect("a token").to_owned()
}

/// Logs in, connects, and reads the `onlineUsers` every new connection gets.
async fn join_chat(addr: SocketAddr, user: &str) -> (Client, Value) {
    let token = login(addr, user).await;
    let mut c = connect_token(addr, &token).await;
    let online = c.expect_event("onlineUsers").await;
    (c, online)
}

#[tokio::test]
async fn page_login_and_token_sources() {
    let (addr, _hub) = demo().await;
    let page = reqwest::get(format!("http://{addr}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<html"), "GET / serves the chat page");
    let js = reqwest::get(format!("http://{addr}/realtime.js")).await.unwrap();
    assert_eq!(js.status(), 200);

    let token = login(addr, "alice").await;
    let claims: Value = {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
        serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
    };
    assert_eq!(claims["sub"], "alice");
    let exp = claims["exp"].as_u64().unwrap();
    assert!((now() + 3500..=now() + 3700).contains(&exp), "exp one hour ahead");

    let req = format!("ws://{addr}/ws?token={token}").into_client_request().unwrap();
    assert_eq!(handshake_status(req).await.0, 101);
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("realtime, bearer.{token}").parse().unwrap(),
    );
    let (_ws, res) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(res.headers()["sec-websocket-protocol"], "realtime");
    let req = format!("ws://{addr}/ws").into_client_request().unwrap();
    assert_eq!(handshake_status(req).await.0, 401);
    let req = format!("ws://{addr}/ws?token=bad").into_client_request().unwrap();
    assert_eq!(handshake_status(req).await.0, 401);
}

#[tokio::test]
async fn rooms_messages_and_acks() {
    let (addr, _hub) = demo().await;
    let (mut alice, _) = join_chat(addr, "alice").await;
    let (mut bob, _) = join_chat(addr, "bob").await;

    let ack = alice.call("joinRoom", json!("general")).await;
    assert_eq!(ack["data"], json!({ "event": "joinedRoom", "room": "general" }));
    let ack = bob.call("joinRoom", json!("general")).await;
    assert_eq!(ack["data"], json!({ "event": "joinedRoom", "room": "general" }));
    assert_eq!(
        alice.expect_event("userJoined").await,
        json!({ "userId": "bob", "room": "general" })
    );

    let ack = alice
        .call("message", json!({ "text": "hello", "room": "general" }))
        .await;
    assert_eq!(ack["data"], json!({ "event": "message", "data": "Message received" }));
    for c in [&mut alice, &mut bob] {
        let m = c.expect_event("message").await;
        assert_eq!(
            (m["text"].as_str(), m["sender"].as_str()),
            (Some("hello"), Some("alice"))
        );
        let ts = m["timestamp"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "{ts}"
        );
    }

    bob.call("messageToRoom", json!({ "room": "general", "message": "psst" }))
        .await;
    assert_eq!(
        alice.expect_event("roomMessage").await,
        json!({ "message": "psst", "sender": "bob" })
    );
    bob.expect_no_event("roomMessage").await;

    let ack = bob.call("leaveRoom", json!("general")).await;
    assert_eq!(ack["data"], json!({ "event": "leftRoom", "room": "general" }));
    assert_eq!(
        alice.expect_event("userLeft").await,
        json!({ "userId": "bob", "room": "general" })
    );
}

#[tokio::test]
async fn bad_requests_get_error_events_with_their_id() {
    let (addr, _hub) = demo().await;
    let (mut alice, _) = join_chat(addr, "alice").await;
    alice.call("joinRoom", json!("general")).await;

    for (data, what) in [
        (json!({ "text": "", "room": "general" }), "empty text"),
        (json!({ "text": "x".repeat(1001), "room": "general" }), "text too long"),
        (json!({ "text": "hi", "room": "" }), "empty room"),
        (json!({ "text": "hi", "room": "elsewhere" }), "room not joined"),
        (json!({ "text": 5 }), "wrong shape"),
    ] {
        let e = alice.call("message", data).await;
        assert_eq!(e["event"], "error", "{what}: {e}");
        if what != "wrong shape" && what != "room not joined" {
            let field = if what == "empty room" { "room" } else { "text" };
            assert_eq!(e["data"]["errors"][0]["field"], field, "{what}: {e}");
        }
        assert_eq!(e["data"]["status"], "error", "{what}");
        assert!(e["data"]["message"].is_string(), "{what}");
    }
    // 1000 characters (not bytes) is fine.
    let ok = alice
        .call("message", json!({ "text": "é".repeat(1000), "room": "general" }))
        .await;
    assert_eq!(ok["data"]["data"], "Message received");

    let e = alice
        .call("messageToRoom", json!({ "room": "elsewhere", "message": "x" }))
        .await;
    assert_eq!(e["event"], "error");
    let e = alice.call("nope", Value::Null).await;
    assert_eq!(e["event"], "error");

    // Without an id, the error carries no ack field, and the connection stays open.
    alice.emit("nope", Value::Null).await;
    let e = loop {
        let frame = alice.next_frame().await;
        if frame["event"] == "error" {
            break frame;
        }
    };
    assert!(e.get("ack").is_none(), "{e}");
    assert_eq!(alice.call("joinRoom", json!("r2")).await["data"]["event"], "joinedRoom");
}

#[tokio::test]
async fn private_messages_reach_every_tab_with_the_real_sender() {
    let (addr, _hub) = demo().await;
    let (mut bob1, _) = join_chat(addr, "bob").await;
    let (mut bob2, _) = join_chat(addr, "bob").await;
    let (mut alice, _) = join_chat(addr, "alice").await;
    let ack = alice
        .call(
            "privateMessage",
            json!({ "to": "bob", "message": "hi", "from": "mallory" }),
        )
        .await;
    assert_eq!(ack["data"], json!({ "delivered": 2 }));
    for bob in [&mut bob1, &mut bob2] {
        assert_eq!(
            bob.expect_event("privateMessage").await,
            json!({ "from": "alice", "message": "hi" })
        );
    }
    alice.expect_no_event("privateMessage").await;
}

#[tokio::test]
async fn online_users_and_presence_once_per_user() {
    let (addr, _hub) = demo().await;
    let (mut alice, online) = join_chat(addr, "alice").await;
    assert_eq!(online, json!(["alice"]));
    // Everyone, alice too, hears that alice came online.
    assert_eq!(
        alice.expect_event("presence").await,
        json!({ "userId": "alice", "online": true })
    );

    let (bob1, online) = join_chat(addr, "bob").await;
    assert_eq!(online, json!(["alice", "bob"]));
    assert_eq!(
        alice.expect_event("presence").await,
        json!({ "userId": "bob", "online": true })
    );
    assert_eq!(alice.expect_event("onlineUsers").await, json!(["alice", "bob"]));

    // A second tab of bob: no presence, no onlineUsers for the others.
    let (bob2, online) = join_chat(addr, "bob").await;
    assert_eq!(online, json!(["alice", "bob"]));
    alice.expect_no_event("presence").await;

    bob1.close().await;
    alice.expect_no_event("presence").await;
    bob2.close().await;
    assert_eq!(
        alice.expect_event("presence").await,
        json!({ "userId": "bob", "online": false })
    );
    assert_eq!(alice.expect_event("onlineUsers").await, json!(["alice"]));
}

#[tokio::test]
async fn http_routes_notify_through_the_hub() {
    let (addr, _hub) = demo().await;
    let (mut alice, _) = join_chat(addr, "alice").await;
    let (mut bob1, _) = join_chat(addr, "bob").await;
    let (mut bob2, _) = join_chat(addr, "bob").await;

    let res = post_json(addr, "/posts", json!({ "title": "Hello" })).await;
    assert_eq!(res["delivered"], 3);
    for c in [&mut alice, &mut bob1, &mut bob2] {
        assert_eq!(
            c.expect_event("notification").await,
            json!({ "message": "New post: Hello" })
        );
    }

    let res = post_json(addr, "/notify/bob", json!({ "message": "for bob" })).await;
    assert_eq!(res["delivered"], 2);
    for c in [&mut bob1, &mut bob2] {
        assert_eq!(c.expect_event("notification").await, json!({ "message": "for bob" }));
    }
    alice.expect_no_event("notification").await;
    let res = post_json(addr, "/notify/nobody", json!({ "message": "x" })).await;
    assert_eq!(res["delivered"], 0);
}
