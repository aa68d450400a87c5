//! The refusal hook (`HubBuilder::on_refused`): it runs once per refused connection, for every
//! transport, with the cause, the message the client was told, the namespace, the client
//! address, the user when known and the HTTP status where one was answered; never the token.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use common::*;
use http::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower_realtime::{HubBuilder, JwtAuth, RefusalCause, Refused, Socket, Transport};

/// What the hook saw of one refusal, owned, with its `Debug` text.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    cause: RefusalCause,
    message: String,
    transport: Transport,
    namespace: Option<String>,
    address: Option<IpAddr>,
    user: Option<String>,
    status: Option<StatusCode>,
    debug: String,
}

impl Seen {
    fn of(refused: &Refused) -> Self {
        Self {
            cause: refused.cause(),
            message: refused.message().to_owned(),
            transport: refused.transport(),
            namespace: refused.namespace().map(str::to_owned),
            address: refused.address(),
            user: refused.user_id().map(str::to_owned),
            status: refused.status(),
            debug: format!("{refused:?}"),
        }
    }

    /// The fields, but the `Debug` text.
    #[allow(clippy::type_complexity)]
    fn fields(
        &self,
    ) -> (
        RefusalCause,
        &str,
        Transport,
        Option<&str>,
        Option<IpAddr>,
        Option<&str>,
        Option<StatusCode>,
    ) {
        (
            self.cause,
            &self.message,
            self.transport,
            self.namespace.as_deref(),
            self.address,
            self.user.as_deref(),
            self.status,
        )
    }
}

const LOCAL: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

/// A hub (JWT auth, a connect guard refusing `mallory`) whose hook records every refusal,
/// served with [`Hub::serve`](tower_realtime::Hub::serve) so the client address is the peer's.
async fn start(f: impl FnOnce(HubBuilder) -> HubBuilder) -> (tower_realtime::Hub, SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let builder = tower_realtime::Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .guard_connect(|s: &Socket| match s.user_id() {
            Some("mallory") => Err("mallory is banned"),
            _ => Ok(()),
        })
        .on_refused(move |refused: &Refused| record.lock().unwrap().push(Seen::of(refused)));
    let hub = f(builder).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hub.clone().serve(listener, "/ws"));
    (hub, addr, seen)
}

/// The one refusal seen so far.
fn only(seen: &Mutex<Vec<Seen>>) -> Seen {
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "one refusal, one call: {seen:?}");
    seen[0].clone()
}

#[tokio::test]
async fn a_native_bad_token_is_reported_once_with_its_401_and_without_the_token() {
    let (hub, addr, seen) = start(|b| b).await;
    let bad = format!("{}x", token("alice"));
    let req = format!("ws://{addr}/ws?token={bad}").into_client_request().unwrap();
    assert_eq!(handshake_status(req).await.0, 401);

    let refused = only(&seen);
    assert_eq!(
        refused.fields(),
        (
            RefusalCause::Auth,
            "invalid token signature",
            Transport::Native,
            Some("/"),
            LOCAL,
            None,
            Some(StatusCode::UNAUTHORIZED)
        )
    );
    assert!(!refused.debug.contains(&bad[..40]), "no token in {}", refused.debug);
    assert_eq!(hub.counters().rejected_auth, 1);
}

#[tokio::test]
async fn a_native_connect_guard_refusal_is_reported_with_the_user_and_no_status() {
    let (hub, addr, seen) = start(|b| b).await;
    let mut mallory = connect(addr, "mallory").await;
    let close = mallory.expect_close().await.expect("a close frame");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1008, "mallory is banned")
    );

    let refused = only(&seen);
    assert_eq!(
        refused.fields(),
        (
            RefusalCause::Guard,
            "mallory is banned",
            Transport::Native,
            Some("/"),
            LOCAL,
            Some("mallory"),
            None
        )
    );
    assert_eq!(refused.cause.as_str(), "guard");
    // Counted under `auth`, as the metrics label it.
    assert_eq!(hub.counters().rejected_auth, 1);
    // An accepted connection is no refusal.
    let alice = connect(addr, "alice").await;
    alice.close().await;
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_native_limit_and_a_bad_request_are_reported() {
    let (hub, addr, seen) = start(|b| b.configure(|c| c.max_connections_per_user = 1)).await;
    let _alice = connect(addr, "alice").await;
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {}", token("alice")).parse().unwrap());
    assert_eq!(handshake_status(req).await.0, 429);
    assert_eq!(
        only(&seen).fields(),
        (
            RefusalCause::Limit,
            "too many connections for this user",
            Transport::Native,
            Some("/"),
            LOCAL,
            Some("alice"),
            Some(StatusCode::TOO_MANY_REQUESTS)
        )
    );

    // Not a WebSocket handshake at all: a protocol error, with a cause of its own.
    let res = reqwest::get(format!("http://{addr}/ws")).await.unwrap();
    assert_eq!(res.status(), 400);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[1].fields(),
        (
            RefusalCause::BadRequest,
            "missing `Connection: upgrade` header",
            Transport::Native,
            Some("/"),
            LOCAL,
            None,
            Some(StatusCode::BAD_REQUEST)
        )
    );
    let counters = hub.counters();
    assert_eq!((counters.rejected_limit, counters.rejected_bad_request), (1, 1));
}

#[cfg(feature = "socketio")]
mod socketio {
    use common::socketio::Polling;
    use serde_json::json;
    use tower_realtime::socketio::SocketIoConfig;

    use super::*;

    #[tokio::test]
    async fn a_socketio_bad_token_is_reported_once_as_a_connect_error_without_the_token() {
        let (hub, addr, seen) = start(|b| b.socketio(SocketIoConfig::default())).await;
        let (s, _) = Polling::open(addr).await;
        let bad = format!("{}x", token("alice"));
        s.post(&format!("40{}", json!({ "token": bad }))).await;
        let refused = s.until(|p| p.starts_with("44")).await;
        assert!(refused.contains("invalid token signature"), "{refused}");

        let refused = only(&seen);
        assert_eq!(
            refused.fields(),
            (
                RefusalCause::Auth,
                "invalid token signature",
                Transport::SocketIo,
                Some("/"),
                LOCAL,
                None,
                None
            )
        );
        assert!(!refused.debug.contains(&bad[..40]), "no token in {}", refused.debug);
        assert_eq!(hub.counters().rejected_auth, 1);
    }

    #[tokio::test]
    async fn a_socketio_connect_limit_and_guard_are_reported_with_the_user() {
        let (hub, addr, seen) = start(|b| {
            b.socketio(SocketIoConfig::default())
                .configure(|c| c.max_connections_per_user = 1)
        })
        .await;
        let connect = |user: &str| format!("40{}", json!({ "token": token(user) }));
        let (first, _) = Polling::open(addr).await;
        first.post(&connect("alice")).await;
        first.until(|p| p.starts_with("40")).await;
        let (second, _) = Polling::open(addr).await;
        second.post(&connect("alice")).await;
        let refused = second.until(|p| p.starts_with("44")).await;
        assert!(refused.contains("too many connections for this user"), "{refused}");
        assert_eq!(
            only(&seen).fields(),
            (
                RefusalCause::Limit,
                "too many connections for this user",
                Transport::SocketIo,
                Some("/"),
                LOCAL,
                Some("alice"),
                None
            )
        );

        second.post(&connect("mallory")).await;
        second.until(|p| p.starts_with("44")).await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(
            seen[1].fields(),
            (
                RefusalCause::Guard,
                "mallory is banned",
                Transport::SocketIo,
                Some("/"),
                LOCAL,
                Some("mallory"),
                None
            )
        );
        assert_eq!(hub.counters().rejected_limit, 1);
    }

    #[tokio::test]
    async fn a_socketio_handshake_past_the_pending_session_cap_is_reported_with_its_status() {
        let mut config = SocketIoConfig::default();
        config.max_pending_sessions_per_address = 1;
        let (_hub, addr, seen) = start(|b| b.socketio(config)).await;
        let _pending = Polling::open(addr).await;
        let (status, _) = Polling::handshake(reqwest::Client::new(), addr).await.err().unwrap();
        assert_eq!(status, 429);
        assert_eq!(
            only(&seen).fields(),
            (
                RefusalCause::Limit,
                "too many sessions from this address",
                Transport::SocketIo,
                None,
                LOCAL,
                None,
                Some(StatusCode::TOO_MANY_REQUESTS)
            )
        );
    }
}

#[tokio::test]
async fn a_panicking_hook_does_not_take_the_handshake_with_it() {
    let hub = tower_realtime::Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on_refused(|_: &Refused| panic!("a bug in the app's hook"))
        .build();
    let addr = serve_hub(&hub).await;
    let req = format!("ws://{addr}/ws").into_client_request().unwrap();
    assert_eq!(
        handshake_status(req).await,
        (401, Some(r#"{"error":"missing token"}"#.to_owned()))
    );
    let alice = connect(addr, "alice").await;
    alice.close().await;
}
