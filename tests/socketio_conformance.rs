//! The Socket.IO conformance example (`examples/socketio_conformance.rs`), end to end over
//! polling and WebSocket.
#![cfg(feature = "socketio")]

mod common;

#[allow(dead_code)]
#[path = "../examples/socketio_conformance.rs"]
mod conformance;

use std::net::SocketAddr;

use common::{socketio::Polling, WAIT};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

async fn start() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(conformance::hub().serve(listener, "/"));
    addr
}

#[tokio::test]
async fn handshake_auth_echo_and_acks() {
    let addr = start().await;
    let (s, open) = Polling::open(addr).await;
    assert_eq!(
        (open["pingInterval"].as_u64(), open["pingTimeout"].as_u64()),
        (Some(300), Some(200))
    );
    assert_eq!(open["maxPayload"], 1_000_000);

    s.post(r#"40{"token":"123"}"#).await;
    assert!(s.until(|p| p.starts_with("40{")).await.contains("sid"));
    assert_eq!(s.until(|p| p.starts_with("42")).await, r#"42["auth",{"token":"123"}]"#);

    s.post(r#"42["message",1,"2",{"3":[true]}]"#).await;
    assert_eq!(
        s.until(|p| p.starts_with("42")).await,
        r#"42["message-back",1,"2",{"3":[true]}]"#
    );

    s.post(r#"4213["message-with-ack",1,"2",{"3":[false]}]"#).await;
    assert_eq!(s.until(|p| p.starts_with("43")).await, r#"4313[1,"2",{"3":[false]}]"#);

    // Binary: the attachment comes back as a base64 record of the polling body.
    s.post("451-[\"message\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQIDBA==")
        .await;
    assert_eq!(
        s.until(|p| p.starts_with("45")).await,
        r#"451-["message-back",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(s.until(|p| p.starts_with('b')).await, "bAQIDBA==");

    // Without auth the payload is `{}`; an unknown namespace is refused.
    s.post("40/custom,").await;
    assert_eq!(
        s.until(|p| p.starts_with("42/custom,")).await,
        r#"42/custom,["auth",{}]"#
    );
    s.post("40/random,").await;
    assert_eq!(
        s.until(|p| p.starts_with("44")).await,
        r#"44/random,{"message":"Invalid namespace"}"#
    );
}

#[tokio::test]
async fn malformed_packets_close_the_session() {
    let addr = start().await;
    for bad in ["99", r#"42{"not":"an array"}"#, r#"43abc["x"]"#] {
        let (s, _) = Polling::open(addr).await;
        s.post("40").await;
        s.until(|p| p.starts_with("40{")).await;
        s.post(bad).await;
        // The session closes (a poll may still fetch its close packet): its sid is then unknown.
        let mut status = 200;
        for _ in 0..50 {
            let (code, body) = s.get().await;
            status = code;
            if status == 400 {
                break;
            }
            assert!(body.split('\u{1e}').all(|p| p == "1" || p == "2"), "{bad}: {body}");
        }
        assert_eq!(status, 400, "{bad}");
    }
}

#[tokio::test]
async fn a_client_close_answers_the_pending_poll_with_noop() {
    let addr = start().await;
    let (s, _) = Polling::open(addr).await;
    let pending = tokio::spawn({
        let url = s.url();
        let http = s.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    s.post("1").await;
    let body = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert_eq!(body, "6");
    assert_eq!(s.get().await.0, 400);
}

/// A client that sends its close packet and a poll at the same time (the official suite's
/// "should forcefully close the session"): when the close overtakes the poll, the poll still
/// gets its noop; the next poll finds the sid unknown.
#[tokio::test]
async fn a_poll_overtaken_by_the_client_close_still_gets_its_noop() {
    let addr = start().await;
    let (s, _) = Polling::open(addr).await;
    assert_eq!(s.post("1").await.status(), 200);
    assert_eq!(s.get().await, (200, "6".to_owned()), "the poll the close overtook");
    assert_eq!(s.get().await.0, 400, "then the sid is unknown");

    // The control: a session that closes with its poll pending, as before.
    let (s, _) = Polling::open(addr).await;
    let pending = tokio::spawn({
        let url = s.url();
        let http = s.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    s.post("1").await;
    assert_eq!(tokio::time::timeout(WAIT, pending).await.unwrap().unwrap(), "6");
    assert_eq!(s.get().await.0, 400);
}

/// The next text message, answering pings on the way.
async fn next_text(ws: &mut common::Ws) -> String {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        match m.to_text().unwrap() {
            "2" => ws.send(Message::text("3")).await.unwrap(),
            text => return text.to_owned(),
        }
    }
}

/// After an upgrade, the sid is refused for polling (`400`); a second WebSocket for it is
/// accepted (`101`) and closed at once, as the reference server does (the official suite's
/// "should ignore WebSocket connection with same sid after upgrade"), while the session goes on
/// over its first WebSocket.
#[tokio::test]
async fn a_second_websocket_for_an_upgraded_sid_is_accepted_then_closed_and_the_session_goes_on() {
    let addr = start().await;
    let (s, _) = Polling::open(addr).await;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&sid={}", s.sid);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text("2probe")).await.unwrap();
    let pong = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong, Message::text("3probe"));
    ws.send(Message::text("5")).await.unwrap();
    ws.send(Message::text("40")).await.unwrap();
    while !next_text(&mut ws).await.starts_with("40{") {}
    assert_eq!(s.get().await.0, 400, "polling after the upgrade");
    assert_eq!(s.post("40").await.status(), 400);

    let (mut again, res) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("a second WebSocket for the sid is accepted");
    assert_eq!(res.status(), 101);
    match tokio::time::timeout(WAIT, again.next()).await.unwrap() {
        Some(Ok(Message::Close(None))) => {}
        other => panic!("a second WebSocket is closed at once, with nothing said: {other:?}"),
    }

    // The control: the session goes on over its first WebSocket.
    ws.send(Message::text(r#"42["message","still here"]"#)).await.unwrap();
    loop {
        match next_text(&mut ws).await.as_str() {
            r#"42["auth",{}]"# => {}
            other => break assert_eq!(other, r#"42["message-back","still here"]"#),
        }
    }
}

/// During an upgrade: a poll sent right after the upgrade packet is refused with `400`, as one
/// after the upgrade is, even when it reaches the server before that packet is read (the
/// official suite's "should ignore HTTP requests with same sid after upgrade" sends the probe
/// and the upgrade packet and polls at once); a poll that comes after the probe but before any
/// upgrade packet (a client's poll sent before it read the probe's answer) is answered with a
/// noop, so the client can pause. The session then goes on over its WebSocket.
#[tokio::test]
async fn a_poll_during_the_upgrade_is_answered_or_refused_as_the_upgrade_goes() {
    let addr = start().await;
    let (s, _) = Polling::open(addr).await;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&sid={}", s.sid);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text("2probe")).await.unwrap();
    let pong = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong, Message::text("3probe"));
    assert_eq!(s.get().await, (200, "6".to_owned()), "a poll after the probe alone");

    // The upgrade packet and a poll at once.
    let (sent, (status, _)) = tokio::join!(ws.send(Message::text("5")), s.get());
    sent.unwrap();
    assert_eq!(status, 400, "a poll sent with the upgrade packet");

    ws.send(Message::text("40")).await.unwrap();
    while !next_text(&mut ws).await.starts_with("40{") {}
    ws.send(Message::text(r#"42["message","upgraded"]"#)).await.unwrap();
    loop {
        match next_text(&mut ws).await.as_str() {
            r#"42["auth",{}]"# => {}
            other => break assert_eq!(other, r#"42["message-back","upgraded"]"#),
        }
    }
}

/// A client ping with a large payload gets a bare pong: the server never writes back what a
/// peer sends it (a peer that sends large pings and never reads would have the server queue
/// and write them all). A control session on the same server keeps working.
#[tokio::test]
async fn a_ping_with_a_large_payload_gets_a_bare_pong() {
    let addr = start().await;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut pinger, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert!(next_text(&mut pinger).await.starts_with('0'));
    let (control, _) = Polling::open(addr).await;
    control.post("40").await;
    control.until(|p| p.starts_with("40{")).await;

    pinger
        .send(Message::text(format!("2{}", "p".repeat(500_000))))
        .await
        .unwrap();
    assert_eq!(next_text(&mut pinger).await, "3", "a bare pong");

    control.post(r#"42["message","control"]"#).await;
    assert_eq!(
        control.until(|p| p.starts_with("42[\"message-back\"")).await,
        r#"42["message-back","control"]"#
    );
}
