//! The demo as a cluster: two instances on two ports, one bus, act as one chat. On Redis when
//! `REALTIME_TEST_REDIS` is set, on NATS (feature `nats`) when `REALTIME_TEST_NATS` is
//! (`.ci/run` sets both); otherwise each says it did not run.
#![cfg(feature = "redis")]

mod common;

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

use std::net::SocketAddr;

use common::*;
use serde_json::json;
use tower_realtime::{
    adapter::{RedisAdapter, RedisOptions},
    Hub,
};

/// The bus the instances share.
#[derive(Clone, Copy)]
enum Bus {
    Redis,
    #[cfg(feature = "nats")]
    Nats,
}

/// An instance of the demo on `bus`, in the cluster of `prefix`, on a port of its own.
async fn instance(bus: Bus, url: &str, prefix: &str) -> SocketAddr {
    let builder = match bus {
        Bus::Redis => {
            let mut options = RedisOptions::default();
            options.prefix = prefix.to_owned();
            let (adapter, inbound) = RedisAdapter::connect(url, options).await.expect("Redis must answer");
            Hub::builder().cluster(adapter, inbound)
        }
        #[cfg(feature = "nats")]
        Bus::Nats => {
            let mut options = tower_realtime::adapter::NatsOptions::default();
            options.prefix = prefix.to_owned();
            let (adapter, inbound) = tower_realtime::adapter::NatsAdapter::connect(url, options)
                .await
                .unwrap_or_else(|e| panic!("NATS at {url} (REALTIME_TEST_NATS) must answer: {e}"));
            Hub::builder().cluster(adapter, inbound)
        }
    };
    let (app, _hub) = chat::app_with(SECRET.to_owned(), None, builder);
    serve(app).await
}

#[tokio::test]
async fn two_instances_act_as_one_chat() {
    let Some(url) = common::redis_url("redis cluster test") else {
        return;
    };
    two_instances_on(Bus::Redis, &url).await;
}

#[tokio::test]
async fn two_instances_act_as_one_chat_on_nats() {
    #[cfg(feature = "nats")]
    if let Some(url) = common::nats_url("nats cluster test of the demo") {
        two_instances_on(Bus::Nats, &url).await;
    }
    #[cfg(not(feature = "nats"))]
    common::did_not_run("nats cluster test of the demo", "build with --features nats");
}

async fn two_instances_on(bus: Bus, url: &str) {
    // A prefix of its own: keys of an earlier run (presence counts live on for a while) must
    // not be seen.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("test-chat-{nanos}-{}", std::process::id());
    let (a, b) = (instance(bus, url, &prefix).await, instance(bus, url, &prefix).await);
    let mut alice = connect(a, "alice").await;
    alice.expect_event("onlineUsers").await;
    let mut bob = connect(b, "bob").await;
    // bob, on B, sees alice (on A) online; alice hears that bob came online.
    // The list A sent everyone when alice came online may reach bob just after he connected
    // (it crosses the bus); bob's own list, right after his connect, has both.
    loop {
        let online = bob.expect_event("onlineUsers").await;
        if online == json!(["alice"]) {
            continue;
        }
        assert_eq!(online, json!(["alice", "bob"]));
        break;
    }
    loop {
        let p = alice.expect_event("presence").await;
        if p["userId"] == "bob" {
            assert_eq!(p["online"], true);
            break;
        }
    }

    // Shared rooms.
    alice.call("joinRoom", json!("general")).await;
    bob.call("joinRoom", json!("general")).await;
    assert_eq!(
        alice.expect_event("userJoined").await,
        json!({ "userId": "bob", "room": "general" })
    );
    alice
        .call("message", json!({ "text": "hi from A", "room": "general" }))
        .await;
    let m = bob.expect_event("message").await;
    assert_eq!(
        (m["text"].as_str(), m["sender"].as_str()),
        (Some("hi from A"), Some("alice"))
    );

    // Private messages across nodes.
    let ack = bob
        .call("privateMessage", json!({ "to": "alice", "message": "psst" }))
        .await;
    assert_eq!(
        ack["data"]["delivered"], 0,
        "the count is this node's; alice is on the other"
    );
    assert_eq!(
        (&ack["data"]["devices"], &ack["data"]["online"]),
        (&json!(1), &json!(true)),
        "alice's connections, on every node"
    );
    assert_eq!(
        alice.expect_event("privateMessage").await,
        json!({ "from": "bob", "message": "psst" })
    );

    // POST /posts on either node notifies everyone on both.
    post_json(b, "/posts", json!({ "title": "Cluster" })).await;
    for c in [&mut alice, &mut bob] {
        assert_eq!(
            c.expect_event("notification").await,
            json!({ "message": "New post: Cluster" })
        );
    }
    post_json(a, "/notify/bob", json!({ "message": "for bob" })).await;
    assert_eq!(bob.expect_event("notification").await, json!({ "message": "for bob" }));

    // Nobody anywhere: offline, not delivered.
    let ack = bob
        .call("privateMessage", json!({ "to": "carol", "message": "hi" }))
        .await;
    assert_eq!(ack["data"], json!({ "delivered": 0, "devices": 0, "online": false }));
}
