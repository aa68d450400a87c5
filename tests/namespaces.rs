//! Dynamic namespaces (made on their first connection from a template or a predicate) and the
//! catch-all handler, over the native protocol and Socket.IO.

mod common;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower_realtime::{Args, Data, Emitter, ErrorEvent, EventName, GuardContext, Hub, JwtAuth, RateLimit, Socket};

async fn connect_path(addr: std::net::SocketAddr, path: &str, user: &str) -> Client {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {}", token(user)).parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("connect");
    Client::new(ws)
}

/// The HTTP status of a native handshake at `path`.
async fn status_at(addr: std::net::SocketAddr, path: &str) -> u16 {
    let req = format!("ws://{addr}{path}?token={}", token("eve"))
        .into_client_request()
        .unwrap();
    handshake_status(req).await.0
}

/// A hub with a fixed `/chat`, a `/tenant-{id}` pattern (counting its connects) and a
/// predicate pattern for `/room-<number>`, at most `limit` dynamic namespaces.
fn tenants(limit: usize, connects: Arc<AtomicUsize>) -> Hub {
    tenants_builder(limit, connects).build()
}

fn tenants_builder(limit: usize, connects: Arc<AtomicUsize>) -> tower_realtime::HubBuilder {
    let builder = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .configure(|c| c.max_dynamic_namespaces = limit)
        .namespace("/chat", |ns| {
            ns.on("where", |s: Socket| async move { json!(s.namespace()) })
        })
        .dynamic_namespace("/tenant-{id}", |ns| {
            ns.on_connect(move |_: Socket| {
                connects.fetch_add(1, Ordering::Relaxed);
                async {}
            })
            .on("where", |s: Socket| async move {
                json!({ "ns": s.namespace(), "id": s.namespace_param("id"), "nope": s.namespace_param("nope") })
            })
            .on("join", |s: Socket, Data(room): Data<String>| async move {
                s.join(&room)?;
                Ok::<_, ErrorEvent>(())
            })
            .on("shout", |s: Socket, Data(room): Data<String>| async move {
                s.to(&room).emit("shouted", &s.namespace());
            })
            .on_any(
                |EventName(event): EventName, Args(args): Args| async move { json!({ "caught": event, "args": args }) },
            )
        })
        .dynamic_namespace_with(
            |name: &str| name.strip_prefix("/room-").is_some_and(|n| n.parse::<u32>().is_ok()),
            |ns| {
                ns.on(
                    "where",
                    |s: Socket| async move { json!(format!("room:{}", s.namespace())) },
                )
            },
        );
    #[cfg(feature = "socketio")]
    let builder = builder.socketio(Default::default());
    builder
}

#[tokio::test]
async fn dynamic_namespaces_are_made_on_connect_isolated_share_handlers_and_go_when_empty() {
    let connects = Arc::new(AtomicUsize::new(0));
    let hub = tenants(100, connects.clone());
    assert_eq!(hub.namespaces(), vec!["/", "/chat"]);
    assert!(hub.of("/tenant-7").is_none(), "made by its first connection");
    let addr = serve_hub(&hub).await;

    let mut alice = connect_path(addr, "/ws/tenant-7", "alice").await;
    let mut carol = connect_path(addr, "/ws/tenant-7", "carol").await;
    let mut bob = connect_path(addr, "/ws/tenant-8", "bob").await;
    assert_eq!(
        alice.call("where", Value::Null).await["data"],
        json!({ "ns": "/tenant-7", "id": "7", "nope": null })
    );
    assert_eq!(bob.call("where", Value::Null).await["data"]["ns"], "/tenant-8");
    assert_eq!(hub.namespaces(), vec!["/", "/chat", "/tenant-7", "/tenant-8"]);
    assert_eq!(connects.load(Ordering::Relaxed), 3, "the pattern's hook runs for each");
    let tenant7 = hub.of("/tenant-7").expect("made by alice");
    assert_eq!(tenant7.connection_count(), 2, "carol joined alice's namespace");
    assert_eq!(hub.of("/tenant-8").unwrap().connection_count(), 1);

    // Rooms are per namespace: the same room name in two tenants is two rooms.
    for client in [&mut alice, &mut carol, &mut bob] {
        assert_eq!(client.call("join", json!("r")).await["data"], Value::Null);
    }
    assert_eq!(tenant7.room_users("r"), vec!["alice", "carol"]);
    assert_eq!(tenant7.to_room("r").emit("hello", &1), 2);
    assert_eq!(alice.expect_event("hello").await, json!(1));
    assert_eq!(carol.expect_event("hello").await, json!(1));
    alice.call("shout", json!("r")).await;
    assert_eq!(carol.expect_event("shouted").await, json!("/tenant-7"));
    bob.expect_no_event("hello").await;
    bob.expect_no_event("shouted").await;

    // The predicate pattern, and names no pattern takes.
    let mut room = connect_path(addr, "/ws/room-12", "dave").await;
    assert_eq!(room.call("where", Value::Null).await["data"], "room:/room-12");
    for path in ["/ws/room-x", "/ws/tenant-", "/ws/tenant-7/x", "/ws/other-7"] {
        assert_eq!(status_at(addr, path).await, 404, "{path}");
    }
    assert_eq!(status_at(addr, "/ws/tenant-7").await, 101);

    // Once its last connection has left, a dynamic namespace goes; the next one is new.
    alice.close().await;
    carol.close().await;
    assert!(
        eventually(|| hub.of("/tenant-7").is_none()).await,
        "{:?}",
        hub.namespaces()
    );
    assert_eq!(
        tenant7.connection_count(),
        0,
        "a handle kept past its end reaches nobody"
    );
    assert!(hub.of("/tenant-8").is_some(), "bob is still there");
    let mut again = connect_path(addr, "/ws/tenant-7", "alice").await;
    assert_eq!(again.call("where", Value::Null).await["data"]["ns"], "/tenant-7");
    let fresh = hub.of("/tenant-7").unwrap();
    assert!(
        fresh.room_users("r").is_empty(),
        "a new namespace, without the old rooms"
    );
}

#[tokio::test]
async fn fixed_namespaces_win_and_patterns_are_tried_in_order() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .namespace("/t-fixed", |ns| ns.on("which", || async { "fixed" }))
        .dynamic_namespace("/t-{id}", |ns| ns.on("which", || async { "first" }))
        .dynamic_namespace("/{any}", |ns| ns.on("which", || async { "second" }))
        .build();
    let addr = serve_hub(&hub).await;
    for (path, which) in [("/ws/t-fixed", "fixed"), ("/ws/t-1", "first"), ("/ws/other", "second")] {
        let mut client = connect_path(addr, path, "alice").await;
        assert_eq!(client.call("which", Value::Null).await["data"], which, "{path}");
    }
}

#[tokio::test]
async fn the_limit_on_dynamic_namespaces_refuses_new_ones_only() {
    let hub = tenants(2, Arc::default());
    let addr = serve_hub(&hub).await;
    let one = connect_path(addr, "/ws/tenant-1", "alice").await;
    let _two = connect_path(addr, "/ws/room-2", "bob").await;
    // Past the limit: refused as an unknown namespace.
    assert_eq!(status_at(addr, "/ws/tenant-3").await, 404);
    // Existing ones and fixed ones still take connections.
    let _also_one = connect_path(addr, "/ws/tenant-1", "carol").await;
    let mut control = connect_path(addr, "/ws/chat", "dave").await;
    assert_eq!(control.call("where", Value::Null).await["data"], "/chat");
    assert_eq!(hub.namespaces().len(), 4, "{:?}", hub.namespaces());
    #[cfg(feature = "socketio")]
    {
        let (s, _) = common::socketio::Polling::open(addr).await;
        s.post(&format!("40/tenant-3,{}", json!({ "token": token("eve") })))
            .await;
        let refused = s.until(|p| p.starts_with("44/tenant-3,")).await;
        assert!(refused.contains("Invalid namespace"), "{refused}");
        s.post(&format!("40/chat,{}", json!({ "token": token("eve") }))).await;
        s.until(|p| p.starts_with("40/chat,")).await;
    }
    // A failed handshake held no namespace: once tenant-1 is empty, there is room again.
    drop(_also_one);
    one.close().await;
    assert!(eventually(|| hub.of("/tenant-1").is_none()).await);
    assert_eq!(status_at(addr, "/ws/tenant-3").await, 101);
}

/// The official socket.io-client (tests/node/namespaces.test.mjs), with `REALTIME_TEST_NODE=1`.
#[cfg(feature = "socketio")]
#[tokio::test]
async fn socketio_client_from_npm_reaches_dynamic_namespaces_and_the_catch_all() {
    if !node_enabled("node dynamic namespace test") {
        return;
    }
    let hub = tenants(100, Arc::default());
    let addr = serve_hub(&hub).await;
    let stdout = run_node("namespaces.test.mjs", vec![("BASE_URL", format!("http://{addr}"))]).await;
    assert!(stdout.contains("pass 3"), "all three tests ran and passed: {stdout}");
}

#[cfg(feature = "socketio")]
#[tokio::test]
async fn socketio_clients_reach_dynamic_namespaces() {
    use common::socketio::Polling;
    let hub = tenants(100, Arc::default());
    let addr = serve_hub(&hub).await;
    let mut native = connect_path(addr, "/ws/tenant-7", "bob").await;
    native.call("join", json!("r")).await;

    let (s, _) = Polling::open(addr).await;
    let auth = json!({ "token": token("alice") });
    s.post(&format!("40/tenant-7,{auth}\u{1e}40/tenant-8,{auth}")).await;
    s.until(|p| p.starts_with("40/tenant-7,")).await;
    s.until(|p| p.starts_with("40/tenant-8,")).await;
    s.post("42/tenant-7,1[\"where\"]\u{1e}42/tenant-8,2[\"join\",\"r\"]")
        .await;
    assert_eq!(
        s.until(|p| p.starts_with("43/tenant-7,1")).await,
        r#"43/tenant-7,1[{"id":"7","nope":null,"ns":"/tenant-7"}]"#
    );
    s.until(|p| p.starts_with("43/tenant-8,2")).await;
    assert_eq!(hub.of("/tenant-7").unwrap().connection_count(), 2);
    // A room emit in tenant 8 reaches alice's tenant-8 socket, not bob in tenant 7.
    assert_eq!(hub.of("/tenant-8").unwrap().to_room("r").emit("hello", &8), 1);
    assert_eq!(
        s.until(|p| p.starts_with("42/tenant-8,")).await,
        r#"42/tenant-8,["hello",8]"#
    );
    native.expect_no_event("hello").await;
    // Leaving the namespace lets it go.
    s.post("41/tenant-8,").await;
    assert!(eventually(|| hub.of("/tenant-8").is_none()).await);
    // A name no pattern takes is refused as before.
    s.post(&format!("40/other-7,{auth}")).await;
    let refused = s.until(|p| p.starts_with("44/other-7,")).await;
    assert!(refused.contains("Invalid namespace"), "{refused}");
}

fn no_secrets(ctx: &GuardContext<'_>) -> Result<(), ErrorEvent> {
    match ctx.event().starts_with("secret") {
        true => Err(ErrorEvent::forbidden("no secrets")),
        false => Ok(()),
    }
}

/// A hub whose default namespace has `ping` and a catch-all behind a guard, and whose `/plain`
/// namespace has no catch-all.
fn catch_all(caught: Arc<AtomicUsize>) -> Hub {
    let builder = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .guard(no_secrets)
        .on("ping", || async { "pong" })
        .on_any(move |EventName(event): EventName, Args(args): Args, s: Socket| {
            caught.fetch_add(1, Ordering::Relaxed);
            async move { json!({ "event": event, "args": args, "ns": s.namespace() }) }
        })
        .namespace("/plain", |ns| ns.on("ping", || async { "pong" }))
        .namespace("/limited", |ns| {
            ns.rate_limit(RateLimit::per_second(1).burst(2))
                .on_any(|EventName(event): EventName| async move { event })
        });
    #[cfg(feature = "socketio")]
    let builder = builder.socketio(Default::default());
    builder.build()
}

#[tokio::test]
async fn the_catch_all_takes_events_without_a_handler() {
    let caught = Arc::new(AtomicUsize::new(0));
    let hub = catch_all(caught.clone());
    let addr = serve_hub(&hub).await;
    let mut client = connect(addr, "alice").await;
    let answer = client.call("whatever", json!({ "x": 1 })).await;
    assert_eq!(
        answer["data"],
        json!({ "event": "whatever", "args": [{ "x": 1 }], "ns": "/" })
    );
    assert_eq!(caught.load(Ordering::Relaxed), 1);
    // A registered event runs its own handler; the catch-all does not see it.
    assert_eq!(client.call("ping", Value::Null).await["data"], "pong");
    assert_eq!(caught.load(Ordering::Relaxed), 1);
    // The namespace's guard applies to it, and the reserved names are still refused.
    let refused = client.call("secret-plan", json!(1)).await;
    assert_eq!(
        (refused["event"].as_str(), refused["data"]["status"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    let reserved = client.call("disconnect", json!(1)).await;
    assert!(
        reserved["data"]["message"].as_str().unwrap().contains("reserved"),
        "{reserved}"
    );
    assert_eq!(caught.load(Ordering::Relaxed), 1);
    // Without a catch-all, an unknown event is an error as before.
    let mut plain = connect_path(addr, "/ws/plain", "alice").await;
    let unknown = plain.call("whatever", Value::Null).await;
    assert_eq!(unknown["data"]["message"], "unknown event: whatever");
    // The namespace's rate limit counts the catch-all's events.
    let mut limited = connect_path(addr, "/ws/limited", "alice").await;
    for name in ["a", "b"] {
        assert_eq!(limited.call(name, Value::Null).await["data"], name);
    }
    assert_eq!(limited.call("c", Value::Null).await["data"]["status"], "rate_limited");
}

#[cfg(feature = "socketio")]
#[tokio::test]
async fn socketio_events_without_a_handler_reach_the_catch_all() {
    use common::socketio::Polling;
    let caught = Arc::new(AtomicUsize::new(0));
    let hub = catch_all(caught.clone());
    let addr = serve_hub(&hub).await;
    let (s, _) = Polling::open(addr).await;
    s.post(&format!("40{}", json!({ "token": token("alice") }))).await;
    s.until(|p| p.starts_with("40")).await;
    s.post("421[\"whatever\",1,\"two\"]\u{1e}422[\"ping\"]\u{1e}423[\"secret\"]")
        .await;
    assert_eq!(
        s.until(|p| p.starts_with("431")).await,
        r#"431[{"args":[1,"two"],"event":"whatever","ns":"/"}]"#
    );
    assert_eq!(s.until(|p| p.starts_with("432")).await, r#"432["pong"]"#);
    let refused = s.until(|p| p.starts_with("433")).await;
    assert!(refused.contains("forbidden"), "{refused}");
    assert_eq!(caught.load(Ordering::Relaxed), 1);
}

/// Two hubs joined by Redis, both with the `/tenant-{id}` pattern.
#[cfg(feature = "redis")]
#[tokio::test]
async fn dynamic_namespaces_across_a_cluster() {
    use tower_realtime::adapter::{RedisAdapter, RedisOptions};
    let Some(url) = redis_url("dynamic namespaces across a cluster") else {
        return;
    };
    let prefix = format!("test-dynamic-{}", std::process::id());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut options = RedisOptions::default();
        options.prefix = prefix.clone();
        let (adapter, inbound) = RedisAdapter::connect(&url, options).await.expect("Redis answers");
        let hub = tenants_builder(100, Arc::default()).cluster(adapter, inbound).build();
        let addr = serve_hub(&hub).await;
        nodes.push((hub, addr));
    }
    let ((a, a_addr), (b, b_addr)) = (&nodes[0], &nodes[1]);
    let mut alice = connect_path(*a_addr, "/ws/tenant-7", "alice").await;
    let mut bob = connect_path(*b_addr, "/ws/tenant-7", "bob").await;
    let mut carol = connect_path(*b_addr, "/ws/tenant-8", "carol").await;
    for client in [&mut alice, &mut bob, &mut carol] {
        client.call("join", json!("r")).await;
    }
    assert!(a.of("/tenant-8").is_none(), "nobody is in tenant 8 on node A");
    // An emit in tenant 7 on node A reaches bob in tenant 7 on node B, not carol in tenant 8.
    let reached = a.of("/tenant-7").unwrap().to_room("r").emit("hello", &7);
    assert_eq!(reached, 1, "alice, on this node");
    assert_eq!(alice.expect_event("hello").await, json!(7));
    assert_eq!(bob.expect_event("hello").await, json!(7));
    // A handler's room emit in tenant 8 on node B: node A has no tenant 8, nobody there.
    carol.call("shout", json!("r")).await;
    alice.expect_no_event("shouted").await;
    bob.expect_no_event("shouted").await;
    // Cluster queries count the dynamic namespaces' connections.
    let count = a.cluster_connection_count().await;
    assert_eq!((count.value, count.partial), (3, false));
    // Node A answers a query about a namespace it does not have with nothing, not an error.
    let query = tower_realtime::adapter::Query::RoomUsers {
        ns: "/tenant-8".into(),
        room: "r".into(),
    };
    let answer = b.adapter().unwrap().request(query, None).await;
    assert_eq!((answer.value, answer.partial), (vec![json!([])], false));
}
