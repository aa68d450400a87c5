//! Several hubs acting as one through Redis: one shared suite, run against a single hub (the
//! local adapter: two "nodes" that are the same hub) and against two and three hubs joined by
//! the Redis adapter, each on its own port, with real clients on each.
//!
//! The Redis runs need `REALTIME_TEST_REDIS` (`.ci/run` sets it); without it they say so.
#![cfg(feature = "redis")]

mod common;

#[path = "common/proxy.rs"]
mod proxy;

use std::{net::SocketAddr, time::Duration};

use common::*;
use serde_json::json;
use tower_realtime::{
    adapter::{RedisAdapter, RedisOptions},
    Data, Emitter, ErrorEvent, Hub, JwtAuth, Presence, Socket,
};

fn builder() -> tower_realtime::HubBuilder {
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on("join", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!(room))
        })
        .on("toRoom", |s: Socket, Data(room): Data<String>| async move {
            s.to(&room).emit("roomMsg", &json!({ "from": s.user_id() }));
        })
        .on_presence(|hub: Hub, p: Presence| async move {
            hub.emit("presence", &p);
        })
}

async fn redis_hub(prefix: &str) -> Option<Hub> {
    let url = std::env::var("REALTIME_TEST_REDIS").ok()?;
    let mut options = RedisOptions::default();
    options.prefix = prefix.to_owned();
    options.heartbeat = Duration::from_millis(200);
    options.node_timeout = Duration::from_millis(800);
    let (adapter, inbound) = RedisAdapter::connect(&url, options)
        .await
        .expect("Redis must answer when REALTIME_TEST_REDIS is set");
    Some(builder().cluster(adapter, inbound).build())
}

/// `n` nodes: with Redis, `n` hubs on their own ports; without it, one hub served `n` times.
async fn nodes(n: usize, redis: bool) -> Option<Vec<(Hub, SocketAddr)>> {
    let prefix = format!("test-cluster-{}", now_nanos());
    let mut out = Vec::new();
    let local = builder().build();
    for _ in 0..n {
        let hub = if redis {
            redis_hub(&prefix).await?
        } else {
            local.clone()
        };
        let addr = serve_hub(&hub).await;
        out.push((hub, addr));
    }
    Some(out)
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn skip() {
    common::did_not_run("redis cluster test", "set REALTIME_TEST_REDIS=redis://127.0.0.1:6379");
}

/// Connects and waits until the user is known as online by every node (presence settles).
async fn join_room(c: &mut Client, room: &str) {
    assert_eq!(c.call("join", json!(room)).await["data"], json!(room));
}

/// The shared suite: emits of every kind reach each connection on every node exactly once.
async fn emits_reach_every_node_once(redis: bool) {
    let Some(nodes) = nodes(2, redis).await else {
        return skip();
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut alice = connect(a.1, "alice").await;
    let mut bob = connect(b.1, "bob").await;
    let mut bob2 = connect(a.1, "bob").await;
    join_room(&mut alice, "r").await;
    join_room(&mut bob, "r").await;
    // Give the joins time to be visible cluster-wide (queries below check it).
    assert!(eventually_async(|| async { a.0.cluster_room_users("r").await.value == vec!["alice", "bob"] }).await);

    // A room emit from node A reaches bob on node B, once.
    a.0.to_room("r").emit("news", &json!(1));
    assert_eq!(alice.expect_event("news").await, json!(1));
    assert_eq!(bob.expect_event("news").await, json!(1));
    bob.expect_no_event("news").await;
    bob2.expect_no_event("news").await;

    // A user emit from node B reaches bob's connections on both nodes.
    b.0.to_user("bob").emit("dm", &json!(2));
    assert_eq!(bob.expect_event("dm").await, json!(2));
    assert_eq!(bob2.expect_event("dm").await, json!(2));
    alice.expect_no_event("dm").await;

    // A broadcast with except, from a handler on node A (the sender's own node).
    alice.call("toRoom", json!("r")).await;
    assert_eq!(bob.expect_event("roomMsg").await, json!({ "from": "alice" }));
    alice.expect_no_event("roomMsg").await;

    // One connection on another node, by id.
    let bob_id = b.0.connections_of("bob")[0];
    a.0.to_connection(bob_id).emit("direct", &json!(3));
    assert_eq!(bob.expect_event("direct").await, json!(3));
    bob2.expect_no_event("direct").await;

    // Cluster-wide queries.
    assert_eq!(a.0.cluster_online_users().await.value, vec!["alice", "bob"]);
    let count = b.0.cluster_connection_count().await;
    assert!(!count.partial);
    assert_eq!(count.value, 3);
    assert_eq!(a.0.cluster_room_members("r").await.value.len(), 2);

    // Remote actions: bob's connection on B joins a room from A; disconnect_user from A.
    assert!(a.0.join(bob_id, "r2"));
    assert!(eventually(|| b.0.rooms_of(bob_id).contains(&"r2".to_owned())).await);
    a.0.disconnect_user("bob");
    assert_eq!(u16::from(bob.expect_close().await.unwrap().code), 4000);
    assert_eq!(u16::from(bob2.expect_close().await.unwrap().code), 4000);
}

/// Eventually, for an async check.
async fn eventually_async<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn suite_local_adapter() {
    emits_reach_every_node_once(false).await;
}

#[tokio::test]
async fn suite_redis_adapter() {
    emits_reach_every_node_once(true).await;
}

#[tokio::test]
async fn three_nodes_presence_fires_once_per_user() {
    let Some(nodes) = nodes(3, true).await else {
        return skip();
    };
    let mut watchers = Vec::new();
    for (i, (_, addr)) in nodes.iter().enumerate() {
        let mut w = connect(*addr, &format!("watcher{i}")).await;
        w.expect_event("presence").await;
        watchers.push(w);
    }
    // Let every watcher's own presence settle before watching carol.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for w in &mut watchers {
        while tokio::time::timeout(QUIET, w.next_frame()).await.is_ok() {}
    }
    // carol connects on two nodes: "online" once, everywhere.
    let c1 = connect(nodes[0].1, "carol").await;
    let c2 = connect(nodes[2].1, "carol").await;
    for w in &mut watchers {
        let p = w.expect_event("presence").await;
        assert_eq!(p, json!({ "userId": "carol", "online": true }));
        w.expect_no_event("presence").await;
    }
    assert!(nodes[1]
        .0
        .cluster_online_users()
        .await
        .value
        .contains(&"carol".to_owned()));
    // One tab closes: nothing. The other: "offline" once, everywhere.
    c1.close().await;
    for w in &mut watchers {
        w.expect_no_event("presence").await;
    }
    c2.close().await;
    for w in &mut watchers {
        assert_eq!(
            w.expect_event("presence").await,
            json!({ "userId": "carol", "online": false })
        );
    }
    assert!(!nodes[1]
        .0
        .cluster_online_users()
        .await
        .value
        .contains(&"carol".to_owned()));
}

#[tokio::test]
async fn a_dead_node_leaves_the_cluster_view() {
    let Some(nodes) = nodes(2, true).await else {
        return skip();
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let _dave = connect(b.1, "dave").await;
    assert!(eventually_async(|| async { a.0.cluster_online_users().await.value.contains(&"dave".to_owned()) }).await);
    // Node B stops heartbeating (as if it died): dave leaves the view within the bound.
    b.0.adapter().unwrap().shutdown().await.unwrap();
    let started = std::time::Instant::now();
    assert!(eventually_async(|| async { !a.0.cluster_online_users().await.value.contains(&"dave".to_owned()) }).await);
    let bound = redis_of(&a.0).options().presence_expiry_bound() + Duration::from_secs(1);
    assert!(
        started.elapsed() <= bound,
        "took {:?}, bound {:?}",
        started.elapsed(),
        bound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_local_emits_counts_losses_and_recovers() {
    let Ok(url) = std::env::var("REALTIME_TEST_REDIS") else {
        return skip();
    };
    let prefix = format!("test-outage-{}", now_nanos());
    let (upstream, _) = proxy::through(&url, None).await;
    let cut = proxy::Proxy::start(upstream).await;
    let (_, proxied) = proxy::through(&url, Some(cut.addr)).await;
    let mut options = RedisOptions::default();
    options.prefix = prefix.clone();
    options.heartbeat = Duration::from_millis(200);
    options.node_timeout = Duration::from_millis(2000);
    let (adapter, inbound) = RedisAdapter::connect(&proxied, options.clone()).await.unwrap();
    let a = builder().cluster(adapter, inbound).build();
    let b = redis_hub(&prefix).await.unwrap();
    let (addr_a, addr_b) = (serve_hub(&a).await, serve_hub(&b).await);
    let mut local = connect(addr_a, "erin").await;
    let mut remote = connect(addr_b, "fred").await;
    join_room(&mut local, "r").await;
    join_room(&mut remote, "r").await;
    assert!(eventually_async(|| async { a.cluster_room_users("r").await.value.len() == 2 }).await);

    cut.cut();
    let lost_before = a.adapter().unwrap().stats().lost;
    // While Redis is away: local delivery goes on, the cluster copy is counted as lost.
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.adapter().unwrap().stats().lost == lost_before && tokio::time::Instant::now() < deadline {
        assert_eq!(a.to_room("r").emit("during", &sent), 1, "the local member is reached");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.adapter().unwrap().stats().lost > lost_before, "losses are counted");
    for i in 0..sent {
        assert_eq!(local.expect_event("during").await, json!(i));
    }

    // Redis is back: the adapter subscribes again by itself and cluster emits flow again.
    cut.restore();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut delivered = false;
    while !delivered && tokio::time::Instant::now() < deadline {
        b.to_room("r").emit("after", &1);
        let frame = tokio::time::timeout(Duration::from_millis(200), local.next_frame()).await;
        delivered = frame.is_ok_and(|f| f["event"] == "after");
    }
    assert!(delivered, "no cluster emit reached node A after Redis came back");
    drop(remote);
}

/// The Redis adapter of a hub in a Redis cluster.
fn redis_of(hub: &Hub) -> &RedisAdapter {
    let adapter = hub.adapter().expect("in a cluster");
    adapter.as_any().downcast_ref().expect("a Redis adapter")
}
