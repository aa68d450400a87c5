//! tracing: a span per connection with its id and user, events for connect, disconnect and
//! refused handshakes, and never a token, even at trace level.

mod common;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::{
    client::IntoClientRequest,
    protocol::{frame::coding::CloseCode, CloseFrame},
};
use tower_realtime::{Data, Hub, JwtAuth};

// One test in this binary: the subscriber is process-wide.
#[tokio::test]
async fn logs_carry_connection_and_user_but_never_the_token() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("tower_realtime=trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on("echo", |Data(v): Data<String>| async move { v })
        .build();
    let addr = serve_hub(&hub).await;

    let jwt = token("alice");
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={jwt}"))
        .await
        .unwrap();
    let mut c = Client::new(ws);
    assert_eq!(c.call("echo", json!("hi")).await["data"], json!("hi"));
    c.ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    assert!(eventually(|| hub.connection_count() == 0).await);

    let bad = "not-a-token-but-secret-all-the-same";
    let req = format!("ws://{addr}/ws?token={bad}").into_client_request().unwrap();
    assert_eq!(handshake_status(req).await.0, 401);

    let text = logs.text();
    let span = line_has_id_between(&text, "realtime_connection{conn=", r#" user="alice"}: "#);
    assert!(span, "a span with the connection id and the user:\n{text}");
    assert!(text.contains(": connected"), "{text}");
    assert!(
        text.contains(": disconnected") && text.contains("code=Some(1000)"),
        "{text}"
    );
    assert!(
        text.contains("connection refused cause=auth transport=native"),
        "{text}"
    );
    assert!(!text.contains(&jwt), "the token was logged:\n{text}");
    // Nor any of its three parts (a signature or payload alone is still a leak).
    for part in jwt.split('.') {
        assert!(!text.contains(part), "a part of the token was logged:\n{text}");
    }
    assert!(!text.contains(bad), "the refused token was logged:\n{text}");
}

/// Whether a line holds `start`, then digits, then `end`.
fn line_has_id_between(text: &str, start: &str, end: &str) -> bool {
    text.lines().any(|line| {
        line.split_once(start).is_some_and(|(_, rest)| {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            digits > 0 && rest[digits..].starts_with(end)
        })
    })
}
