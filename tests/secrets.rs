//! Secrets stay secret: an authenticator's debug output never shows the token, a short HS256
//! secret is reported, and Socket.IO socket ids are random rather than the hub's sequence.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower_realtime::{AuthError, AuthRequest, Data, Hub, Identity, JwtAuth};

/// An authenticator that logs its request with `{:?}`, as an app might while debugging: the
/// token, in whatever place the client put it, must not be in that text.
#[tokio::test]
async fn an_auth_request_logged_with_debug_does_not_leak_the_token() {
    const SECRET_TOKEN: &str = "s3cr3t-t0ken-value";
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let hub = Hub::builder()
        .auth(move |req: &AuthRequest<'_>| {
            log.lock().unwrap().push(format!("{req:?}"));
            let ok = req.token() == Some(SECRET_TOKEN);
            async move {
                match ok {
                    true => Ok(Identity::user("alice", Default::default())),
                    false => Err(AuthError::new("bad token")),
                }
            }
        })
        .on("echo", |Data(v): Data<String>| async move { v })
        .build();
    let addr = serve_hub(&hub).await;

    // The token in the header, in a subprotocol and in the query.
    let mut header = format!("ws://{addr}/ws").into_client_request().unwrap();
    (header.headers_mut()).insert("authorization", format!("Bearer {SECRET_TOKEN}").parse().unwrap());
    let mut subprotocol = format!("ws://{addr}/ws").into_client_request().unwrap();
    (subprotocol.headers_mut()).insert(
        "sec-websocket-protocol",
        format!("realtime, bearer.{SECRET_TOKEN}").parse().unwrap(),
    );
    let query = format!("ws://{addr}/ws?token={SECRET_TOKEN}")
        .into_client_request()
        .unwrap();
    for req in [header, subprotocol, query] {
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("the token is accepted");
        let mut client = Client::new(ws);
        assert_eq!(client.call("echo", json!("hi")).await["data"], json!("hi"));
    }

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for text in seen.iter() {
        assert!(text.contains("AuthRequest"), "{text}");
        assert!(text.contains("<redacted>"), "the token's presence is shown: {text}");
        assert!(!text.contains(SECRET_TOKEN), "the token leaked: {text}");
    }
}

/// A short HS256 secret can be brute-forced from one token: building an authenticator with
/// one is reported as an error, while a long one is not.
#[test]
fn a_short_hs256_secret_is_reported_as_an_error() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("tower_realtime=trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let _long = JwtAuth::hs256(SECRET);
        assert!(SECRET.len() >= 32);
        assert_eq!(logs.text(), "", "a 32-byte secret is fine");
        let _short = JwtAuth::hs256("password");
    });
    let text = logs.text();
    assert!(text.contains("ERROR"), "{text}");
    assert!(text.contains("shorter than 32 bytes"), "{text}");
    assert!(!text.contains("password"), "the secret itself is never logged: {text}");
}

/// Socket.IO clients see their socket's id (`socket.id`): it must not be the hub's sequential
/// connection id, from which a client would learn, or guess, the ids of others.
#[cfg(feature = "socketio")]
#[tokio::test]
async fn socketio_socket_ids_are_random_not_the_sequential_connection_ids() {
    use common::socketio::Polling;
    use tower_realtime::{socketio::SocketIoConfig, Socket};

    let ids = Arc::new(Mutex::new(Vec::new()));
    let record = ids.clone();
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .socketio(SocketIoConfig::default())
        .on_connect(move |s: Socket| {
            record.lock().unwrap().push(s.id().as_u64());
            async {}
        })
        .on("echo", |v: serde_json::Value| async move { v })
        .build();
    let addr = serve_hub(&hub).await;

    let mut sids = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let (s, _) = Polling::open(addr).await;
        s.post(&format!("40{}", json!({ "token": token(user) }))).await;
        let connected = s.until(|p| p.starts_with("40")).await;
        let answer: serde_json::Value = serde_json::from_str(&connected[2..]).unwrap();
        let sid = answer["sid"].as_str().expect("a socket id").to_owned();
        // The socket works.
        s.post("421[\"echo\",\"hi\"]").await;
        assert_eq!(s.until(|p| p.starts_with("431")).await, r#"431["hi"]"#);
        sids.push(sid);
    }
    let ids = ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 3);
    for sid in &sids {
        assert_eq!(sid.len(), 20, "{sid}");
        assert!(
            sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "url-safe: {sid}"
        );
        assert!(sid.parse::<u64>().is_err(), "not a number: {sid}");
        assert!(
            !ids.iter().any(|id| id.to_string() == *sid),
            "not a connection id: {sid}"
        );
    }
    sids.sort();
    sids.dedup();
    assert_eq!(sids.len(), 3, "each socket has its own id");
}
