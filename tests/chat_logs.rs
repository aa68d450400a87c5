//! The demo's log: connections, disconnections and refused connections (native, and Socket.IO
//! with the feature) at `info`, never a token.

mod common;

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

// One test in this binary: the subscriber is process-wide.
#[tokio::test]
async fn connections_and_refusals_are_logged_at_info_without_tokens() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let (app, hub) = chat::app(SECRET.to_owned(), None);
    let addr = serve(app).await;
    let token = post_json(addr, "/login", json!({ "user": "alice" })).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut alice = connect_token(addr, &token).await;
    alice.expect_event("onlineUsers").await;
    alice.close().await;
    assert!(eventually(|| hub.connection_count() == 0).await);
    let bad = format!("{token}x");
    let req = format!("ws://{addr}/ws?token={bad}").into_client_request().unwrap();
    assert_eq!(handshake_status(req).await.0, 401);
    let req = format!("ws://{addr}/ws").into_client_request().unwrap();
    assert_eq!(handshake_status(req).await.0, 401);
    // Not a WebSocket handshake: a bad request, logged as such.
    let res = reqwest::get(format!("http://{addr}/ws")).await.unwrap();
    assert_eq!(res.status(), 400);
    // A Socket.IO client with a bad token: a CONNECT_ERROR, inside the session.
    #[cfg(feature = "socketio")]
    {
        let (sio, _) = common::socketio::Polling::open(addr).await;
        sio.post(&format!("40{}", json!({ "token": bad }))).await;
        let refused = sio.until(|p| p.starts_with("44")).await;
        assert!(refused.contains("invalid token signature"), "{refused}");
    }

    let text = logs.text();
    let info = |what: &str| {
        text.lines()
            .filter(|l| l.contains(" INFO ") && l.contains(what))
            .count()
    };
    assert_eq!(info(": connected conn="), 1, "{text}");
    assert_eq!(info(": disconnected conn="), 1, "{text}");
    assert_eq!(info("user=\"alice\""), 2, "{text}");
    let native_auth = ": connection refused cause=auth transport=native ns=\"/\" status=401";
    assert_eq!(info(native_auth), 2, "{text}");
    assert_eq!(info("status=401 reason=\"missing token\""), 1, "{text}");
    assert_eq!(info("status=401 reason=\"invalid token signature\""), 1, "{text}");
    let bad_request = ": connection refused cause=bad_request transport=native ns=\"/\" status=400";
    assert_eq!(info(bad_request), 1, "{text}");
    let socketio = ": connection refused cause=auth transport=socketio ns=\"/\" reason=\"invalid token signature\"";
    assert_eq!(info(socketio), usize::from(cfg!(feature = "socketio")), "{text}");
    assert_eq!(
        info(": connection refused"),
        3 + usize::from(cfg!(feature = "socketio")),
        "{text}"
    );
    assert!(!text.contains(&token[20..]), "no token in the logs:\n{text}");
}
