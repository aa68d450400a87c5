//! The gateway: namespaces, guards, validation, error mapping, rate limits, presence, the
//! separate port, acks from the server, and the notifications example.

mod common;

#[allow(dead_code)]
#[path = "../examples/notifications.rs"]
mod notifications;

use std::time::Duration;

use common::*;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower_realtime::{
    Emitter, ErrorEvent, GuardContext, Hub, IntoErrorEvent, JwtAuth, Presence, RateLimit, Socket, Valid,
};
use validator::Validate;

async fn connect_path(addr: std::net::SocketAddr, path: &str, token: &str) -> Client {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("connect");
    Client::new(ws)
}

#[tokio::test]
async fn namespaces_have_their_own_handlers_rooms_and_emits() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on("where", |s: Socket| async move { json!(s.namespace()) })
        .namespace("/chat", |ns| {
            ns.on(
                "where",
                |s: Socket| async move { json!(format!("chat:{}", s.namespace())) },
            )
            .on("join", |s: Socket, room: Value| async move {
                s.join(room.as_str().unwrap_or_default())?;
                Ok::<_, ErrorEvent>(())
            })
        })
        .namespace("notifications", |ns| ns)
        .build();
    assert_eq!(hub.namespaces(), vec!["/", "/chat", "/notifications"]);
    let addr = serve_hub(&hub).await;
    let t = token("alice");
    let mut root = connect_path(addr, "/ws", &t).await;
    let mut chat = connect_path(addr, "/ws/chat", &t).await;
    assert_eq!(root.call("where", Value::Null).await["data"], "/");
    assert_eq!(chat.call("where", Value::Null).await["data"], "chat:/chat");
    // The root namespace has no `join` handler: each namespace has its own.
    assert_eq!(root.call("join", json!("r")).await["event"], "error");
    chat.call("join", json!("r")).await;

    let chat_ns = hub.of("/chat").unwrap();
    assert_eq!(chat_ns.room_users("r"), vec!["alice"]);
    assert!(hub.room_users("r").is_empty(), "rooms are per namespace");
    assert_eq!(chat_ns.to_room("r").emit("hello", &1), 1);
    assert_eq!(chat.expect_event("hello").await, json!(1));
    assert_eq!(
        chat_ns.emit("all", &2),
        1,
        "a namespace emit reaches that namespace only"
    );
    assert_eq!(hub.emit("all", &3), 1, "the hub's own emit is the default namespace's");
    assert_eq!(root.expect_event("all").await, json!(3));
    assert_eq!(chat.expect_event("all").await, json!(2));
    root.expect_no_event("all").await;
    assert!(hub.of("/nope").is_none());
    // Presence is per hub: alice is online once, with two connections.
    assert_eq!(hub.online_users(), vec!["alice"]);
    assert_eq!(hub.connection_count(), 2);
    // An unknown namespace path is not ours.
    let req = format!("ws://{addr}/ws/nope?token={t}").into_client_request().unwrap();
    assert_eq!(handshake_status(req).await.0, 404);
}

fn admin_only(ctx: &GuardContext<'_>) -> Result<(), ErrorEvent> {
    if ctx.identity().has_claim_value("role", "admin") {
        Ok(())
    } else {
        Err(ErrorEvent::forbidden("admin role required"))
    }
}

#[tokio::test]
async fn guards_check_roles_per_handler_group_and_namespace() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on("open", || async { "open" })
        .on_guarded("ban", admin_only, || async { "banned" })
        .group(|g| {
            g.guard(admin_only)
                .on("kick", || async { "kicked" })
                .on("mute", || async { "muted" })
        })
        .guard(|ctx: &GuardContext<'_>| {
            // A namespace-wide guard that looks at the payload.
            if ctx.data().get("evil").is_some() {
                Err(ErrorEvent::forbidden("no evil payloads"))
            } else {
                Ok(())
            }
        })
        .build();
    let addr = serve_hub(&hub).await;
    let exp = now() + 3600;
    let admin = sign(&json!({ "sub": "root", "role": "admin", "exp": exp }));
    let user = sign(&json!({ "sub": "joe", "role": ["user"], "exp": exp }));
    let mut a = connect_token(addr, &admin).await;
    let mut u = connect_token(addr, &user).await;
    for event in ["ban", "kick", "mute"] {
        let ok = a.call(event, Value::Null).await;
        assert!(ok["data"].is_string(), "{event}: {ok}");
        let refused = u.call(event, Value::Null).await;
        assert_eq!(
            refused["data"],
            json!({ "status": "forbidden", "message": "admin role required" }),
            "{event}"
        );
    }
    assert_eq!(u.call("open", Value::Null).await["data"], "open");
    let refused = a.call("open", json!({ "evil": true })).await;
    assert_eq!(refused["data"]["message"], "no evil payloads");
}

#[tokio::test]
async fn a_connect_guard_closes_with_1008_and_its_reason() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .guard_connect(|s: &Socket| {
            if s.identity().has_claim_value("banned", "yes") {
                Err("you are banned")
            } else {
                Ok(())
            }
        })
        .on_presence(|hub: Hub, p: Presence| async move {
            hub.emit("presence", &p);
        })
        .build();
    let addr = serve_hub(&hub).await;
    let mut watcher = connect(addr, "watcher").await;
    watcher.expect_event("presence").await;
    let banned = sign(&json!({ "sub": "bad", "banned": "yes", "exp": now() + 60 }));
    let mut c = connect_token(addr, &banned).await;
    let close = c.expect_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "you are banned");
    // A refused connection never counted as online.
    watcher.expect_no_event("presence").await;
    assert!(eventually(|| hub.connection_count() == 1).await);
}

#[derive(Deserialize, Validate)]
struct Signup {
    #[validate(length(min = 3, max = 10))]
    name: String,
    #[validate(range(min = 18))]
    age: u32,
    #[validate(email)]
    email: String,
}

enum AppError {
    NotFound(String),
    Database(String),
}

impl IntoErrorEvent for AppError {
    fn into_error_event(self) -> ErrorEvent {
        match self {
            AppError::NotFound(what) => ErrorEvent::new(format!("{what} not found"))
                .with_status("not_found")
                .with_field("resource", what),
            AppError::Database(detail) => ErrorEvent::internal(detail),
        }
    }
}

#[tokio::test]
async fn validation_lists_each_failing_field_and_app_errors_map_to_events() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on("signup", |Valid(s): Valid<Signup>| async move { json!(s.name) })
        .on("find", |Data(what): tower_realtime::Data<String>| async move {
            Err::<(), _>(AppError::NotFound(what))
        })
        .on("db", || async {
            Err::<(), _>(AppError::Database("connection refused: 10.0.0.7".into()))
        })
        .build();
    let addr = serve_hub(&hub).await;
    let mut c = connect(addr, "alice").await;
    let ok = c
        .call(
            "signup",
            json!({ "name": "alice", "age": 30, "email": "a@example.com" }),
        )
        .await;
    assert_eq!(ok["data"], "alice");
    let e = c
        .call("signup", json!({ "name": "al", "age": 12, "email": "nope" }))
        .await;
    assert_eq!(e["data"]["message"], "validation failed");
    let fields: Vec<&str> = (e["data"]["errors"].as_array().unwrap().iter())
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["age", "email", "name"], "{e}");
    assert_eq!(e["data"]["errors"][2]["message"], "length must be between 3 and 10");
    assert_eq!(e["data"]["errors"][0]["code"], "range");

    let e = c.call("find", json!("post 7")).await;
    assert_eq!(
        e["data"],
        json!({ "status": "not_found", "message": "post 7 not found", "resource": "post 7" })
    );
    let e = c.call("db", Value::Null).await;
    assert_eq!(
        e["data"],
        json!({ "status": "error", "message": "Internal server error" })
    );
}

use tower_realtime::Data;

#[tokio::test]
async fn rate_limits_refuse_then_close_a_flooder_with_1008() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on("cheap", || async { "ok" })
        .on("costly", || async { "ok" })
        .rate_limit(RateLimit::per_second(1).burst(20))
        .rate_limit_event("costly", RateLimit::per_second(1).burst(2))
        .configure(|c| c.rate_limit_flood_threshold = 5)
        .build();
    let addr = serve_hub(&hub).await;
    let mut c = connect(addr, "alice").await;
    assert_eq!(c.call("costly", Value::Null).await["data"], "ok");
    assert_eq!(c.call("costly", Value::Null).await["data"], "ok");
    let limited = c.call("costly", Value::Null).await;
    assert_eq!(limited["data"]["status"], "rate_limited", "{limited}");
    assert_eq!(limited["data"]["code"], "rate_limited");
    // The per-event limit is separate from the namespace's: other events still run.
    assert_eq!(c.call("cheap", Value::Null).await["data"], "ok");

    // A flooder: the namespace bucket (burst 20) runs dry, then 5 refusals in a row close it.
    let mut flooder = connect(addr, "bob").await;
    for _ in 0..40 {
        flooder.emit("cheap", Value::Null).await;
    }
    let close = flooder.expect_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1008);
    // Buckets are per connection: bob's flood did not touch alice's.
    assert_eq!(c.call("cheap", Value::Null).await["data"], "ok");
}

#[tokio::test]
async fn new_connections_per_user_are_rate_limited() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .configure(|c| c.connect_rate_per_user = Some(RateLimit::per_second(1).burst(3)))
        .build();
    let addr = serve_hub(&hub).await;
    let t = token("alice");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let req = format!("ws://{addr}/ws?token={t}").into_client_request().unwrap();
        statuses.push(handshake_status(req).await.0);
    }
    assert_eq!(&statuses[..3], [101, 101, 101]);
    assert_eq!(statuses[4], 429);
    // Another user has a bucket of their own.
    let req = format!("ws://{addr}/ws?token={}", token("bob"))
        .into_client_request()
        .unwrap();
    assert_eq!(handshake_status(req).await.0, 101);
}

#[tokio::test]
async fn the_server_awaits_acks_from_the_client() {
    let hub = Hub::builder().auth(JwtAuth::hs256(SECRET)).build();
    let addr = serve_hub(&hub).await;
    let mut c = connect(addr, "alice").await;
    assert!(eventually(|| hub.connection_count() == 1).await);
    let socket = hub.socket(hub.connections_of("alice")[0]).unwrap();

    let asking = tokio::spawn({
        let socket = socket.clone();
        async move {
            socket
                .emit_with_ack::<_, u32>("question", &json!("6 x 7?"), Duration::from_secs(5))
                .await
        }
    });
    let frame = c.next_frame().await;
    assert_eq!(frame["event"], "question");
    let id = frame["id"].as_u64().expect("the server's emit carries an id");
    c.send_raw(&json!({ "ack": id, "data": 42 }).to_string()).await;
    assert_eq!(asking.await.unwrap().unwrap(), 42);

    // No answer: a timeout, as an error value.
    let r = socket
        .emit_with_ack::<_, Value>("question", &1, Duration::from_millis(200))
        .await;
    assert!(matches!(r, Err(tower_realtime::AckError::Timeout)), "{r:?}");
    // A wrong type: a deserialization error.
    let asking = tokio::spawn({
        let socket = socket.clone();
        async move { socket.emit_with_ack::<_, u32>("q", &1, Duration::from_secs(5)).await }
    });
    let id = loop {
        let f = c.next_frame().await;
        if f["event"] == "q" {
            break f["id"].as_u64().unwrap();
        }
    };
    c.send_raw(&json!({ "ack": id, "data": "not a number" }).to_string())
        .await;
    assert!(matches!(
        asking.await.unwrap(),
        Err(tower_realtime::AckError::Deserialize(_))
    ));
}

#[tokio::test]
async fn a_hub_serves_on_a_port_of_its_own() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on("ping", || async { "pong" })
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(hub.clone().serve(listener, "/ws"));
    let res = reqwest::get(format!("http://{addr}/other")).await.unwrap();
    assert_eq!(res.status(), 404);
    let mut c = connect(addr, "alice").await;
    assert_eq!(c.call("ping", Value::Null).await["data"], "pong");
    assert_eq!(hub.shutdown().await, 0);
    assert_eq!(u16::from(c.expect_close().await.unwrap().code), 1001);
    tokio::time::timeout(WAIT, server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_notifications_example_reaches_every_device() {
    let hub = notifications::build_hub();
    let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = ws_listener.local_addr().unwrap();
    tokio::spawn(hub.clone().serve(ws_listener, "/ws"));
    let api = serve(notifications::api(hub.clone())).await;

    let open = |user: &str| {
        let url = format!("ws://{ws_addr}/ws/notifications?user={user}");
        async move {
            let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let mut c = Client::new(ws);
            c.expect_event("welcome").await;
            c
        }
    };
    let mut phone = open("alice").await;
    let mut laptop = open("alice").await;
    let mut bob = open("bob").await;
    let mut carol = open("carol").await;

    let res = post_json(api, "/notify/alice", json!({ "message": "hi alice" })).await;
    assert_eq!(res["delivered"], 2);
    for c in [&mut phone, &mut laptop] {
        assert_eq!(c.expect_event("notification").await, json!({ "message": "hi alice" }));
    }
    bob.expect_no_event("notification").await;

    let res = post_json(
        api,
        "/notify",
        json!({ "users": ["alice", "bob", "alice"], "message": "team" }),
    )
    .await;
    assert_eq!(res["delivered"], 3, "alice's two devices and bob's, each once");
    for c in [&mut phone, &mut laptop, &mut bob] {
        assert_eq!(c.expect_event("notification").await, json!({ "message": "team" }));
    }
    phone.expect_no_event("notification").await;
    carol.expect_no_event("notification").await;

    let res = post_json(api, "/notify/nobody", json!({ "message": "x" })).await;
    assert_eq!(res["delivered"], 0, "an offline user: zero deliveries, no error");
    let online: Value = reqwest::get(format!("http://{api}/online"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(online, json!(["alice", "bob", "carol"]));
}
