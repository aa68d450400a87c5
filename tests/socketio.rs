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

/// Serves `hub` with [`Hub::serve`], which gives each request its peer's address.
async fn serve_with_addresses(hub: &Hub) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hub.clone().serve(listener, "/"));
    addr
}

fn loopback(last: u8) -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, last])
}

/// A WebSocket handshake for a new session from `local`: the status it got.
async fn ws_handshake_from(addr: SocketAddr, local: std::net::IpAddr) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    match tokio_tungstenite::client_async(url, stream).await {
        Ok((_, res)) => res.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

/// Connects the default namespace as `user`, and checks an echo goes through.
async fn connect_and_echo(s: &Polling, user: &str) {
    s.post(&format!("40{}", json!({ "token": token(user) }))).await;
    s.until(|p| p.starts_with("40{")).await;
    assert_echo(s, user).await;
}

async fn assert_echo(s: &Polling, text: &str) {
    s.post(&format!("421[\"echo\",\"{text}\"]")).await;
    assert_eq!(s.until(|p| p.starts_with("431")).await, format!("431[\"{text}\"]"));
}

/// Handshakes that never go on to a namespace CONNECT (each one a session, a task and a copy
/// of the request's headers) are capped per client address (`429`) and in all (`503`); a
/// session that connects gives its place back; a client from another address, and a connected
/// session, are served throughout.
#[tokio::test]
async fn sessions_that_never_connect_are_capped_per_client_address_and_in_all() {
    let hub = hub(SocketIoConfig::default().max_pending_sessions(3, 2));
    let addr = serve_with_addresses(&hub).await;
    let (a1, _) = Polling::open_from(addr, loopback(1)).await.unwrap();
    let (_a2, _) = Polling::open_from(addr, loopback(1)).await.unwrap();
    let refused = Polling::open_from(addr, loopback(1)).await.err();
    let per_address = json!({ "code": 4, "message": "too many sessions from this address" });
    assert_eq!(refused, Some((429, per_address)));
    assert_eq!(ws_handshake_from(addr, loopback(1)).await, 429, "over WebSocket too");

    // The control, from another address, connects and is served.
    let (control, _) = Polling::open_from(addr, loopback(2)).await.unwrap();
    connect_and_echo(&control, "control").await;

    // Two pending sessions from 127.0.0.1, one from 127.0.0.3: the total is reached.
    let (_c, _) = Polling::open_from(addr, loopback(3)).await.unwrap();
    let refused = Polling::open_from(addr, loopback(4)).await.err();
    let total = json!({ "code": 4, "message": "too many connections" });
    assert_eq!(refused, Some((503, total)));
    assert_eq!(ws_handshake_from(addr, loopback(4)).await, 503);

    // A pending session connects: its place is free again.
    connect_and_echo(&a1, "alice").await;
    assert!(Polling::open_from(addr, loopback(4)).await.is_ok());
    assert_echo(&control, "still served").await;
    assert_eq!(hub.connection_count(), 2);
}

/// A session counts under `max_connections` from its handshake, so handshakes cannot pile up
/// past it; once it connects a namespace, its connection takes its place (it does not count
/// twice).
#[tokio::test]
async fn max_connections_counts_sessions_from_their_handshake_and_once() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .socketio(SocketIoConfig::default())
        .configure(|c| c.max_connections = 2)
        .on("echo", |v: Value| async move { v })
        .build();
    let addr = serve_sio(&hub).await;
    let (control, _) = Polling::open(addr).await;
    connect_and_echo(&control, "control").await;
    let (pending, _) = Polling::open(addr).await;
    let refused = Polling::handshake(reqwest::Client::new(), addr).await.err();
    assert_eq!(refused.map(|(status, _)| status), Some(503));

    // The pending session's CONNECT takes its place: let in, not refused as a third.
    connect_and_echo(&pending, "bob").await;
    assert_eq!(hub.connection_count(), 2);
    let refused = Polling::handshake(reqwest::Client::new(), addr).await.err();
    assert_eq!(refused.map(|(status, _)| status), Some(503));
    assert_echo(&control, "still served").await;
}

/// A client that answers every ping and never sends a namespace CONNECT is closed at the
/// connect timeout (Engine.IO's close packet, then, on a WebSocket, close `1008`), over
/// WebSocket and over polling; a session that connected in time is served on past it.
#[tokio::test]
async fn a_session_that_answers_pings_but_never_connects_is_closed_at_the_connect_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    // A ping window far longer than the connect timeout: what closes is the connect timeout.
    let config = SocketIoConfig::default()
        .ping(Duration::from_millis(200), WAIT)
        .connect_timeout(Duration::from_millis(600));
    let hub = hub(config);
    let addr = serve_sio(&hub).await;
    let (control, _) = Polling::open(addr).await;
    connect_and_echo(&control, "control").await;

    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (idle, _) = Polling::open(addr).await;

    // Over WebSocket: pings answered until the close packet, then the close frame.
    let over_ws = tokio::time::timeout(WAIT, async {
        let mut packets = Vec::new();
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => ws.send(Message::text("3")).await.unwrap(),
                Some(Ok(Message::Text(t))) => packets.push(t.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    return (packets, frame.map(|f| (u16::from(f.code), f.reason.to_string())))
                }
                other => panic!("{other:?}"),
            }
        }
    });
    // Over polling: pings answered until the close packet.
    let over_polling = tokio::time::timeout(WAIT, idle.until(|p| p == "1"));
    let (close, closed) = tokio::join!(over_ws, over_polling);
    let close = close.expect("closed at the connect timeout over WebSocket");
    closed.expect("closed at the connect timeout over polling");
    assert!(close.0[0].starts_with('0'), "the open packet: {:?}", close.0);
    assert_eq!(close.0.last().map(String::as_str), Some("1"), "the close packet last");
    assert_eq!(close.1, Some((1008, "connect timeout".to_owned())));

    // The polling session's sid is unknown from then on.
    assert_eq!(idle.get().await.0, 400);

    assert_echo(&control, "served past the timeout").await;
    assert!(hub.is_online("control"));
}

/// A peer that starts an upgrade and then reads nothing — it sends probe after probe, each
/// answered, with a small receive buffer — cannot park the upgrade: the probe gives up within
/// `ping_timeout`, and the session, which the peer neither polls nor completes, is closed
/// within the stall limit. A control session on the same server is served throughout.
#[tokio::test]
async fn a_peer_that_never_reads_is_closed_within_the_stall_limit_even_mid_probe() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let hub = hub(SocketIoConfig::default().ping(Duration::from_millis(200), Duration::from_millis(300)));
    let addr = serve_sio(&hub).await;
    let (control, _) = Polling::open(addr).await;
    connect_and_echo(&control, "control").await;
    let (stalled, _) = Polling::open(addr).await;
    connect_and_echo(&stalled, "stalled").await;

    // The upgrade, by hand: the 101 is read, and nothing after it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut peer = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET /socket.io/?EIO=4&transport=websocket&sid={} HTTP/1.1\r\nHost: {addr}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        stalled.sid
    );
    peer.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(peer.read(&mut byte).await.unwrap(), 1, "the upgrade's answer");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // `2probe` after `2probe`, masked with a zero key, until the server stops reading.
    let probe = [0x81u8, 0x86, 0, 0, 0, 0, b'2', b'p', b'r', b'o', b'b', b'e'];
    let flood = tokio::spawn(async move {
        let burst = probe.repeat(1024);
        while let Ok(Ok(())) = tokio::time::timeout(WAIT, peer.write_all(&burst)).await {}
        peer
    });

    // Ended within the stall limit, the control answering its pings meanwhile.
    let ended = async {
        while hub.is_online("stalled") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        () = async { tokio::time::timeout(WAIT, ended).await.expect("the stalled session ended") } => {}
        _ = control.until(|_| false) => unreachable!(),
    }
    assert_eq!(stalled.get().await.0, 400, "the stalled session is gone");
    assert_echo(&control, "still served").await;
    flood.abort();
}
