//! Engine.IO v4 / Socket.IO v5 over HTTP long-polling, driven by hand with plain HTTP
//! requests: the handshake, packets both ways, the documented HTTP errors, CORS, `maxPayload`,
//! session expiry, and one room holding native and Socket.IO connections.
#![cfg(feature = "socketio")]

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{socketio::Polling, *};
use serde_json::{json, Value};
use tower_realtime::{socketio::SocketIoConfig, Data, Emitter, ErrorEvent, Hub, JwtAuth, Socket};

fn hub(config: SocketIoConfig) -> Hub {
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .socketio(config)
        .on("joinRoom", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!({ "event": "joinedRoom", "room": room }))
        })
        .on("echo", |v: Value| async move { v })
        .build()
}

async fn serve_sio(hub: &Hub) -> SocketAddr {
    serve_hub(hub).await
}

#[tokio::test]
async fn polling_handshake_connect_event_and_ack() {
    let hub = hub(SocketIoConfig::default());
    let addr = serve_sio(&hub).await;
    let (s, open) = Polling::open(addr).await;
    assert_eq!(open["upgrades"], json!(["websocket"]));
    assert_eq!(open["pingInterval"], 25000);
    assert_eq!(open["pingTimeout"], 20000);
    assert_eq!(open["maxPayload"], 1_000_000);

    // CONNECT with auth.token, then an event with an ack id in the same POST.
    let connect = format!("40{}", json!({ "token": token("alice") }));
    let res = s.post(&format!("{connect}\u{1e}421[\"joinRoom\",\"general\"]")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");
    let connected = s.until(|p| p.starts_with("40")).await;
    let sid: Value = serde_json::from_str(&connected[2..]).unwrap();
    assert!(sid["sid"].is_string(), "{connected}");
    let ack = s.until(|p| p.starts_with("431")).await;
    assert_eq!(ack, r#"431[{"event":"joinedRoom","room":"general"}]"#);
    assert_eq!(hub.room_users("general"), vec!["alice"]);

    // An emit through the hub arrives as an EVENT.
    hub.to_room("general").emit("news", &json!({ "n": 1 }));
    assert_eq!(s.until(|p| p.starts_with("42")).await, r#"42["news",{"n":1}]"#);
}

#[tokio::test]
async fn a_refused_token_is_a_connect_error() {
    let hub = hub(SocketIoConfig::default());
    let addr = serve_sio(&hub).await;
    let (s, _) = Polling::open(addr).await;
    s.post(r#"40{"token":"nope"}"#).await;
    let refused = s.until(|p| p.starts_with("44")).await;
    let err: Value = serde_json::from_str(&refused[2..]).unwrap();
    assert_eq!(err["message"], "invalid token");
    assert_eq!(hub.connection_count(), 0);
    // An unknown namespace too.
    s.post(&format!("40/nowhere,{}", json!({ "token": token("alice") })))
        .await;
    let refused = s.until(|p| p.starts_with("44/nowhere,")).await;
    assert!(refused.contains("Invalid namespace"), "{refused}");
}

#[tokio::test]
async fn bad_requests_get_the_documented_errors() {
    let hub = hub(SocketIoConfig::default());
    let addr = serve_sio(&hub).await;
    let http = reqwest::Client::new();
    let get = |q: &str| {
        let url = format!("http://{addr}/socket.io/?{q}");
        let http = http.clone();
        async move {
            let res = http.get(url).send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(
        get("EIO=4").await,
        (400, json!({ "code": 0, "message": "Transport unknown" }))
    );
    assert_eq!(get("EIO=4&transport=carrier-pigeon").await.1["code"], 0);
    assert_eq!(
        get("EIO=3&transport=polling").await,
        (400, json!({ "code": 5, "message": "Unsupported protocol version" }))
    );
    assert_eq!(
        get("EIO=4&transport=polling&sid=nope").await,
        (400, json!({ "code": 1, "message": "Session ID unknown" }))
    );
    let res = http
        .post(format!("http://{addr}/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        2,
        "a handshake must be a GET"
    );
    let res = http
        .put(format!("http://{addr}/socket.io/?EIO=4&transport=polling&sid=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn max_payload_is_enforced() {
    let hub = hub(SocketIoConfig::default().max_payload(1000));
    let addr = serve_sio(&hub).await;
    let (s, open) = Polling::open(addr).await;
    assert_eq!(open["maxPayload"], 1000);
    let res = s.post(&format!("42[\"echo\",\"{}\"]", "x".repeat(2000))).await;
    assert_eq!(res.status(), 413);
    // The session is gone: a poll may still fetch its close, then the sid is unknown.
    let mut status = 200;
    for _ in 0..50 {
        status = s.get().await.0;
        if status == 400 {
            break;
        }
    }
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_abandoned_polling_session_expires() {
    let hub = hub(SocketIoConfig::default().ping(Duration::from_millis(100), Duration::from_millis(100)));
    let addr = serve_sio(&hub).await;
    let (s, _) = Polling::open(addr).await;
    s.post(&format!("40{}", json!({ "token": token("alice") }))).await;
    assert!(eventually(|| hub.is_online("alice")).await);
    // Nobody polls, nobody answers pings: the session ends, and its socket with it.
    assert!(
        eventually(|| !hub.is_online("alice")).await,
        "the abandoned session did not expire"
    );
    assert_eq!(s.get().await.0, 400);
}

#[tokio::test]
async fn cors_for_the_polling_transport_follows_the_hubs_origin_policy() {
    let config = SocketIoConfig::default().cors_credentials(true);
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .allow_origin("https://app.example")
        .socketio(config)
        .build();
    let addr = serve_sio(&hub).await;
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
    let res = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
    assert_eq!(res.headers()["access-control-allow-headers"], "content-type");
    let res = http
        .get(&url)
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example");
    let res = http
        .get(&url)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(
        res.headers().get("access-control-allow-origin").is_none(),
        "a refused origin gets no CORS headers"
    );
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({ "code": 4, "message": "Forbidden" })
    );
}

#[tokio::test]
async fn one_room_holds_native_and_socketio_connections() {
    let hub = hub(SocketIoConfig::default());
    let addr = serve_sio(&hub).await;
    let mut native = connect(addr, "bob").await;
    native.call("joinRoom", json!("mixed")).await;
    let (s, _) = Polling::open(addr).await;
    s.post(&format!(
        "40{}\u{1e}421[\"joinRoom\",\"mixed\"]",
        json!({ "token": token("alice") })
    ))
    .await;
    s.until(|p| p.starts_with("431")).await;
    assert_eq!(hub.room_users("mixed"), vec!["alice", "bob"]);
    assert_eq!(hub.to_room("mixed").emit("hello", &json!({ "x": 1 })), 2);
    assert_eq!(native.expect_event("hello").await, json!({ "x": 1 }));
    assert_eq!(s.until(|p| p.starts_with("42")).await, r#"42["hello",{"x":1}]"#);
}

#[tokio::test]
async fn disconnect_in_both_directions() {
    let hub = hub(SocketIoConfig::default());
    let addr = serve_sio(&hub).await;
    let connect = format!("40{}", json!({ "token": token("alice") }));

    // The client leaves the namespace: the hub forgets the socket.
    let (s, _) = Polling::open(addr).await;
    s.post(&connect).await;
    s.until(|p| p.starts_with("40")).await;
    assert!(eventually(|| hub.is_online("alice")).await);
    s.post("41").await;
    assert!(
        eventually(|| !hub.is_online("alice")).await,
        "a client DISCONNECT ends the socket"
    );

    // The server disconnects the user: the client gets a DISCONNECT for the namespace.
    let (s, _) = Polling::open(addr).await;
    s.post(&connect).await;
    s.until(|p| p.starts_with("40")).await;
    assert!(eventually(|| hub.is_online("alice")).await);
    assert_eq!(hub.disconnect_user("alice"), 1);
    assert_eq!(s.until(|p| p.starts_with("41")).await, "41");
    assert!(eventually(|| !hub.is_online("alice")).await);
}
