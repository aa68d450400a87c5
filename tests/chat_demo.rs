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
    assert_eq!(ack["data"], json!({ "delivered": 2, "devices": 2, "online": true }));
    for bob in [&mut bob1, &mut bob2] {
        assert_eq!(
            bob.expect_event("privateMessage").await,
            json!({ "from": "alice", "message": "hi" })
        );
    }
    alice.expect_no_event("privateMessage").await;

    // Nobody to deliver to: the ack says so, rather than looking delivered.
    let ack = alice
        .call("privateMessage", json!({ "to": "carol", "message": "hi" }))
        .await;
    assert_eq!(ack["data"], json!({ "delivered": 0, "devices": 0, "online": false }));
    // One device left: one.
    bob2.close().await;
    let ack = alice
        .call("privateMessage", json!({ "to": "bob", "message": "still there?" }))
        .await;
    assert_eq!(ack["data"], json!({ "delivered": 1, "devices": 1, "online": true }));
    assert_eq!(bob1.expect_event("privateMessage").await["message"], "still there?");
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

/// Reads the answers (ack or error, by id) to `n` requests sent back to back.
async fn read_answers(c: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let frame = c.next_frame().await;
        if frame.get("ack").is_some() {
            out.push(frame);
        }
    }
    out
}

#[tokio::test]
async fn validation_errors_name_the_field_and_the_limit() {
    let (addr, _hub) = demo().await;
    let (mut alice, _) = join_chat(addr, "alice").await;
    alice.call("joinRoom", json!("general")).await;

    let too_long = "x".repeat(chat::MAX_TEXT_CHARS + 1);
    for (event, data, message, field, limit) in [
        (
            "message",
            json!({ "text": too_long, "room": "general" }),
            "text: at most 1000 characters",
            "text",
            1000,
        ),
        (
            "message",
            json!({ "text": "", "room": "general" }),
            "text: must not be empty",
            "text",
            1000,
        ),
        (
            "message",
            json!({ "text": "hi", "room": "" }),
            "room: must not be empty",
            "room",
            128,
        ),
        (
            "privateMessage",
            json!({ "to": "", "message": "hi" }),
            "to: must not be empty",
            "to",
            64,
        ),
        (
            "privateMessage",
            json!({ "to": "bob", "message": too_long }),
            "message: at most 1000 characters",
            "message",
            1000,
        ),
    ] {
        let e = alice.call(event, data).await;
        assert_eq!(e["event"], "error", "{message}: {e}");
        let d = &e["data"];
        assert_eq!(
            (d["status"].as_str(), d["message"].as_str()),
            (Some("error"), Some(message))
        );
        assert_eq!(
            (d["field"].as_str(), d["limit"].as_u64()),
            (Some(field), Some(limit)),
            "{e}"
        );
        assert_eq!(d["min"], 1, "{e}");
        assert_eq!(d["errors"][0]["field"], field, "the list of errors is still there: {e}");
    }
}

#[tokio::test]
async fn the_event_rate_limit_answers_rate_limited_and_the_connection_stays() {
    let (addr, _hub) = demo().await;
    let (mut alice, _) = join_chat(addr, "alice").await;
    let sent = chat::EVENT_BURST as usize + 3;
    for _ in 0..sent {
        alice.emit_with_id("joinRoom", json!("general")).await;
    }
    let answers = read_answers(&mut alice, sent).await;
    let limited: Vec<_> = answers.iter().filter(|a| a["event"] == "error").collect();
    let acked = answers.iter().filter(|a| a["data"]["event"] == "joinedRoom").count();
    assert!(acked >= chat::EVENT_BURST as usize, "the burst passes: {answers:?}");
    assert!(!limited.is_empty(), "past the burst, refusals: {answers:?}");
    assert_eq!(acked + limited.len(), sent, "one answer each: {answers:?}");
    for e in limited {
        assert_eq!(e["data"]["status"], "rate_limited", "{e}");
    }
    // A moment later (the bucket refills at EVENTS_PER_SECOND), the connection carries on.
    tokio::time::sleep(std::time::Duration::from_millis(
        1000 / u64::from(chat::EVENTS_PER_SECOND) + 50,
    ))
    .await;
    assert_eq!(alice.call("joinRoom", json!("r2")).await["data"]["event"], "joinedRoom");

    // In load-test mode (MAX_CONNECTIONS_PER_USER) there is no event rate limit.
    let (app, _hub) = chat::app(SECRET.to_owned(), Some(100));
    let addr = serve(app).await;
    let (mut load, _) = join_chat(addr, "load").await;
    let sent = chat::EVENT_BURST as usize * 2;
    for _ in 0..sent {
        load.emit_with_id("joinRoom", json!("general")).await;
    }
    let answers = read_answers(&mut load, sent).await;
    assert!(
        answers.iter().all(|a| a["data"]["event"] == "joinedRoom"),
        "{answers:?}"
    );
}

#[tokio::test]
async fn online_users_arrive_once_per_connect() {
    let (addr, _hub) = demo().await;
    let (mut alice, online) = join_chat(addr, "alice").await;
    assert_eq!(online, json!(["alice"]));
    alice.expect_no_event("onlineUsers").await;

    let (mut bob1, online) = join_chat(addr, "bob").await;
    assert_eq!(online, json!(["alice", "bob"]));
    assert_eq!(alice.expect_event("onlineUsers").await, json!(["alice", "bob"]));
    bob1.expect_no_event("onlineUsers").await;
    alice.expect_no_event("onlineUsers").await;

    // Another tab of bob: its own list, and nothing new for anyone else.
    let (mut bob2, online) = join_chat(addr, "bob").await;
    assert_eq!(online, json!(["alice", "bob"]));
    bob2.expect_no_event("onlineUsers").await;
    bob1.expect_no_event("onlineUsers").await;
    alice.expect_no_event("onlineUsers").await;
}

#[tokio::test]
async fn favicon_config_and_login_errors() {
    let (addr, _hub) = demo().await;
    let res = reqwest::get(format!("http://{addr}/favicon.ico")).await.unwrap();
    assert_eq!(res.status(), 200, "no 404 for the icon");
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    assert!(res.text().await.unwrap().starts_with("<svg"));

    let config: Value = reqwest::get(format!("http://{addr}/config"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        config["limits"],
        json!({ "text": 1000, "room": 128, "user": 64, "status": 64, "fileName": 255, "fileBytes": 49152 })
    );
    assert_eq!(
        config["rateLimit"],
        json!({ "perSecond": chat::EVENTS_PER_SECOND, "burst": chat::EVENT_BURST })
    );
    assert_eq!(config["socketio"], cfg!(feature = "socketio"));
    let endpoints = &config["endpoints"];
    for (name, route) in [
        ("page", "GET /"),
        ("login", "POST /login"),
        ("config", "GET /config"),
        ("native protocol", "GET /ws"),
    ] {
        assert_eq!(endpoints[name], route, "{endpoints}");
    }
    assert_eq!(endpoints.get("Socket.IO").is_some(), cfg!(feature = "socketio"));

    let client = reqwest::Client::new();
    for (user, message, limit) in [
        (String::new(), "user: must not be empty", 64),
        ("x".repeat(65), "user: at most 64 bytes", 64),
    ] {
        let res = client
            .post(format!("http://{addr}/login"))
            .json(&json!({ "user": user }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], message, "{body}");
        assert_eq!(
            (body["field"].as_str(), body["limit"].as_u64()),
            (Some("user"), Some(limit))
        );
    }
}

/// The next message of `c`'s WebSocket, whatever its kind.
async fn next_message(c: &mut Client) -> tokio_tungstenite::tungstenite::Message {
    use futures_util::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(5), c.ws.next())
        .await
        .expect("no frame in time")
        .expect("stream ended")
        .expect("read error")
}

/// Reads `c`'s frames until the text frame of `event`, skipping others, and returns it with
/// the binary frames it announces.
async fn expect_binary_event(c: &mut Client, event: &str) -> (Value, Vec<Vec<u8>>) {
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let Message::Text(text) = next_message(c).await else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["event"] != event {
            continue;
        }
        let n = frame["attachments"].as_u64().unwrap_or(0);
        let mut bins = Vec::new();
        for _ in 0..n {
            match next_message(c).await {
                Message::Binary(b) => bins.push(b.to_vec()),
                other => panic!("a binary frame was expected right after {event}, got {other:?}"),
            }
        }
        return (frame, bins);
    }
}

/// Reads `c`'s frames until the answer to request `id` (an ack or an error), skipping others.
async fn answer_to(c: &mut Client, id: u64) -> Value {
    use tokio_tungstenite::tungstenite::Message;
    loop {
        if let Message::Text(text) = next_message(c).await {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["ack"] == json!(id) {
                return frame;
            }
        }
    }
}

#[tokio::test]
async fn a_status_lives_in_the_connection_and_everyone_sees_it() {
    let (addr, hub) = demo().await;
    let (mut alice, _) = join_chat(addr, "alice").await;
    let (mut bob, _) = join_chat(addr, "bob").await;

    let me = alice.call("whoami", Value::Null).await;
    assert_eq!(me["data"], json!({ "userId": "alice", "status": null }), "{me}");

    let ack = alice.call("setStatus", json!("in a meeting")).await;
    assert_eq!(ack["data"], json!({ "event": "statusSet", "status": "in a meeting" }));
    assert_eq!(
        bob.expect_event("status").await,
        json!({ "userId": "alice", "status": "in a meeting" })
    );
    let me = alice.call("whoami", Value::Null).await;
    assert_eq!(me["data"], json!({ "userId": "alice", "status": "in a meeting" }));

    // Kept in the connection's own state, readable from the hub by connection id.
    use tower_realtime::Emitter;
    let ids = hub.connections_of("alice");
    assert_eq!(ids.len(), 1);
    assert_eq!(hub.connection_data(ids[0]), Some(json!({ "status": "in a meeting" })));
    // Another tab of alice's has a state of its own.
    let (mut alice2, _) = join_chat(addr, "alice").await;
    let me = alice2.call("whoami", Value::Null).await;
    assert_eq!(me["data"]["status"], Value::Null);

    // A newcomer learns the statuses right after the online list.
    let token = login(addr, "carol").await;
    let mut carol = connect_token(addr, &token).await;
    assert_eq!(carol.next_frame().await["event"], "onlineUsers");
    let statuses = carol.next_frame().await;
    assert_eq!(statuses["event"], "statuses");
    assert_eq!(statuses["data"], json!({ "alice": "in a meeting" }));

    let e = alice.call("setStatus", json!("x".repeat(65))).await;
    assert_eq!(e["event"], "error", "{e}");
    assert_eq!(
        (
            e["data"]["message"].as_str(),
            e["data"]["field"].as_str(),
            e["data"]["limit"].as_u64()
        ),
        (Some("status: at most 64 characters"), Some("status"), Some(64))
    );
    // 64 characters (not bytes) is within the limit.
    let ack = alice.call("setStatus", json!("é".repeat(64))).await;
    assert_eq!(ack["data"]["event"], "statusSet", "{ack}");

    // An empty status clears it.
    let ack = alice.call("setStatus", json!("")).await;
    assert_eq!(ack["data"], json!({ "event": "statusSet", "status": null }));
    let me = alice.call("whoami", Value::Null).await;
    assert_eq!(me["data"], json!({ "userId": "alice", "status": null }));
}

#[tokio::test]
async fn a_shared_file_reaches_the_rooms_other_members_as_binary() {
    use tokio_tungstenite::tungstenite::Message;
    let (addr, _hub) = demo().await;
    let (mut alice, _) = join_chat(addr, "alice").await;
    let (mut bob, _) = join_chat(addr, "bob").await;
    let (mut carol, _) = join_chat(addr, "carol").await;
    alice.call("joinRoom", json!("general")).await;
    bob.call("joinRoom", json!("general")).await;

    let png: Vec<u8> = [&b"\x89PNG\r\n\x1a\n"[..], &[0, 255, 128, 7]].concat();
    let share = json!({
        "event": "shareFile",
        "data": { "room": "general", "name": "dot.png", "data": { "_placeholder": true, "num": 0 } },
        "id": 100,
        "attachments": 1,
    });
    use futures_util::SinkExt;
    alice.send_raw(&share.to_string()).await;
    alice.ws.send(Message::binary(png.clone())).await.unwrap();
    let ack = answer_to(&mut alice, 100).await;
    assert_eq!(ack["data"], json!({ "event": "fileShared", "delivered": 1 }), "{ack}");

    let (frame, bins) = expect_binary_event(&mut bob, "fileShared").await;
    assert_eq!(
        frame["data"],
        json!({ "from": "alice", "room": "general", "name": "dot.png", "data": { "_placeholder": true, "num": 0 } })
    );
    assert_eq!(bins.len(), 1);
    assert_eq!(bins[0], png, "the same bytes, as a binary frame");
    carol.expect_no_event("fileShared").await;
    alice.expect_no_event("fileShared").await;

    // Over the limit, empty, not a member: an error naming why; the file goes nowhere.
    let big = vec![7u8; chat::MAX_FILE_BYTES + 1];
    for (who, room, bytes, message) in [
        ("alice", "general", big, "data: at most 49152 bytes"),
        ("alice", "general", vec![], "data: must not be empty"),
        ("carol", "general", png.clone(), "not a member of room general"),
    ] {
        let c = if who == "alice" { &mut alice } else { &mut carol };
        let mut share = share.clone();
        share["data"]["room"] = json!(room);
        share["id"] = json!(101);
        c.send_raw(&share.to_string()).await;
        c.ws.send(Message::binary(bytes)).await.unwrap();
        let e = answer_to(c, 101).await;
        assert_eq!(e["event"], "error", "{e}");
        assert_eq!(e["data"]["message"], message, "{e}");
    }
    bob.expect_no_event("fileShared").await;
}

#[tokio::test]
async fn typing_reaches_the_rooms_others_and_a_busy_one_gets_the_latest_only() {
    let (addr, hub) = demo().await;
    let (mut alice, _) = join_chat(addr, "alice").await;
    let (mut bob, _) = join_chat(addr, "bob").await;
    let (mut carol, _) = join_chat(addr, "carol").await;
    alice.call("joinRoom", json!("general")).await;
    bob.call("joinRoom", json!("general")).await;

    alice.emit("typing", json!({ "room": "general" })).await;
    assert_eq!(
        bob.expect_event("typing").await,
        json!({ "userId": "alice", "room": "general" })
    );
    alice.expect_no_event("typing").await;
    carol.expect_no_event("typing").await;

    let e = carol.call("typing", json!({ "room": "general" })).await;
    assert_eq!(e["data"]["message"], "not a member of room general", "{e}");

    // A burst: every one either reaches bob, is dropped for him while he is busy, or is
    // replaced by a newer one still queued for him; never more than one queued at a time.
    let before = hub.counters();
    const BURST: u64 = 15;
    for _ in 0..BURST {
        alice.emit("typing", json!({ "room": "general" })).await;
    }
    // A final acked request: its answer comes after every typing was handled.
    alice.call("whoami", Value::Null).await;
    let mut received = 0;
    while tokio::time::timeout(std::time::Duration::from_millis(500), bob.expect_event("typing"))
        .await
        .is_ok()
    {
        received += 1;
    }
    let after = hub.counters();
    let dropped = after.volatile_dropped - before.volatile_dropped;
    let replaced = after.coalesced_replaced - before.coalesced_replaced;
    assert!(received >= 1, "the latest one arrives");
    assert_eq!(
        received + dropped + replaced,
        BURST,
        "{received} + {dropped} + {replaced}"
    );
}

/// The demo's state, file and typing events, and its compression, with the official
/// socket.io-client and `ws` (`tests/node/chat-demo.test.mjs`).
#[cfg(feature = "socketio")]
#[tokio::test]
async fn status_files_and_typing_with_socket_io_client() {
    if !node_enabled("the chat demo with socket.io-client") {
        return;
    }
    let (addr, hub) = demo().await;
    run_node("chat-demo.test.mjs", vec![("BASE_URL", format!("http://{addr}"))]).await;
    // The long messages went out compressed (one compression per message and setting).
    let counters = hub.counters();
    assert!(counters.deflate_compressions >= 2, "{counters:?}");
    assert!(
        counters.deflate_bytes_out * 3 < counters.deflate_bytes_in,
        "{counters:?}"
    );
}
