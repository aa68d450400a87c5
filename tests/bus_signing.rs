//! The Redis bus as an authenticated channel: with a signing key, the nodes of a cluster sign
//! every message they publish, and drop (and count) what is unsigned or badly signed. Real
//! hubs on a real Redis, each on its own port, with real clients; the attacks are messages
//! published straight on the bus, as anyone with access to Redis could.
//!
//! The tests need `REALTIME_TEST_REDIS` (`.ci/run` sets it); without it they say so.
#![cfg(feature = "redis")]

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;
use serde_json::json;
use tower_realtime::{
    adapter::{RedisAdapter, RedisOptions},
    Data, Emitter, ErrorEvent, History, Hub, JwtAuth, Socket,
};

const KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";
const OTHER_KEY: [u8; 32] = *b"fedcba9876543210fedcba9876543210";

fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-sign-{nanos}")
}

/// A node of the cluster of `prefix`, signing with `key` (none: unsigned), keeping a history
/// of every room when `history`, served on its own port.
async fn node(url: &str, prefix: &str, key: Option<&[u8]>, history: bool) -> (Hub, SocketAddr) {
    let mut options = RedisOptions::default();
    options.prefix = prefix.to_owned();
    options.heartbeat = Duration::from_millis(200);
    options.node_timeout = Duration::from_millis(800);
    if let Some(key) = key {
        options = options.sign_with(key);
    }
    let (adapter, inbound) = RedisAdapter::connect(url, options)
        .await
        .expect("Redis must answer when REALTIME_TEST_REDIS is set");
    let mut builder = Hub::builder().auth(JwtAuth::hs256(SECRET));
    if history {
        builder = builder.history(History::new().rooms("*"));
    }
    let hub = builder
        .on("join", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!(room))
        })
        .cluster(adapter, inbound)
        .build();
    let addr = serve_hub(&hub).await;
    (hub, addr)
}

async fn join(c: &mut Client, room: &str) {
    assert_eq!(c.call("join", json!(room)).await["data"], json!(room));
}

/// Publishes `payload` on the cluster's bus, as anyone with access to Redis can.
async fn publish_raw(url: &str, prefix: &str, payload: &[u8]) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(format!("{prefix}#all"))
        .arg(payload)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(receivers >= 2, "the nodes must be listening on the bus");
}

fn unauthenticated(hub: &Hub) -> u64 {
    hub.adapter().unwrap().stats().unauthenticated
}

/// A room emit as the wire carries it, from a node that does not exist.
fn forged_emit(room: &str, data: &str) -> Vec<u8> {
    format!(
        r#"{{"v":1,"node":"intruder","op":{{"emit":{{"ns":"/","targets":[{{"room":"{room}"}}],"event":"news","data":"{data}"}}}}}}"#
    )
    .into_bytes()
}

/// Two signing nodes, alice on A and bob on B, both in room `r`; an emit from A reaches bob.
async fn signed_pair(url: &str, prefix: &str, history: bool) -> ((Hub, SocketAddr), (Hub, SocketAddr), Client, Client) {
    let a = node(url, prefix, Some(&KEY), history).await;
    let b = node(url, prefix, Some(&KEY), history).await;
    let mut alice = connect(a.1, "alice").await;
    let mut bob = connect(b.1, "bob").await;
    join(&mut alice, "r").await;
    join(&mut bob, "r").await;
    // The control: signed messages go through, both ways.
    a.0.to_room("r").emit("news", &json!("from a"));
    assert_eq!(bob.expect_event("news").await, json!("from a"));
    assert_eq!(alice.expect_event("news").await, json!("from a"));
    b.0.to_room("r").emit("news", &json!("from b"));
    assert_eq!(alice.expect_event("news").await, json!("from b"));
    assert_eq!(bob.expect_event("news").await, json!("from b"));
    (a, b, alice, bob)
}

#[tokio::test]
async fn forged_messages_published_on_the_bus_are_dropped_and_counted() {
    let Some(url) = redis_url("bus signing test") else {
        return;
    };
    let prefix = unique_prefix();
    let (a, b, mut alice, mut bob) = signed_pair(&url, &prefix, false).await;
    assert_eq!((unauthenticated(&a.0), unauthenticated(&b.0)), (0, 0));

    // An unsigned emit, and one in a signed frame with a made-up tag.
    publish_raw(&url, &prefix, &forged_emit("r", "unsigned")).await;
    let mut frame = vec![0x01];
    frame.extend_from_slice(&[0x55; 32]);
    frame.extend_from_slice(&u32::MAX.to_be_bytes());
    frame.extend_from_slice(&forged_emit("r", "bad tag"));
    publish_raw(&url, &prefix, &frame).await;

    assert!(eventually(|| unauthenticated(&a.0) == 2 && unauthenticated(&b.0) == 2).await);
    alice.expect_no_event("news").await;
    bob.expect_no_event("news").await;
    // Nothing else was taken for a message.
    assert_eq!(b.0.adapter().unwrap().stats().malformed, 0);

    // Signed traffic goes on.
    a.0.to_room("r").emit("news", &json!("still here"));
    assert_eq!(bob.expect_event("news").await, json!("still here"));
    assert_eq!(alice.expect_event("news").await, json!("still here"));
}

#[tokio::test]
async fn a_node_with_another_key_or_none_cannot_inject() {
    let Some(url) = redis_url("bus signing test") else {
        return;
    };
    let prefix = unique_prefix();
    let (a, b, mut alice, mut bob) = signed_pair(&url, &prefix, false).await;
    let (wrong, _) = node(&url, &prefix, Some(&OTHER_KEY), false).await;
    let (unsigned, _) = node(&url, &prefix, None, false).await;

    wrong.to_room("r").emit("news", &json!("wrong key"));
    unsigned.to_room("r").emit("news", &json!("no key"));
    wrong.disconnect_user("bob");
    unsigned.disconnect_user("alice");

    assert!(eventually(|| unauthenticated(&a.0) >= 4 && unauthenticated(&b.0) >= 4).await);
    alice.expect_no_event("news").await;
    bob.expect_no_event("news").await;
    assert_eq!(b.0.connections_of("bob").len(), 1);
    assert_eq!(a.0.connections_of("alice").len(), 1);

    a.0.to_room("r").emit("news", &json!("still here"));
    assert_eq!(bob.expect_event("news").await, json!("still here"));
}

#[tokio::test]
async fn crafted_frames_with_extreme_positions_and_lengths_do_not_stop_a_node() {
    let Some(url) = redis_url("bus signing test") else {
        return;
    };
    let prefix = unique_prefix();
    // With a history, emits are signed before Redis fills in their epoch and offset.
    let (a, b, mut alice, mut bob) = signed_pair(&url, &prefix, true).await;

    let body = forged_emit("r", "crafted");
    let mut crafted: Vec<Vec<u8>> = vec![Vec::new(), vec![0x01], vec![0x01; 36], vec![0x01; 37]];
    for position in [0u32, 1, body.len() as u32, body.len() as u32 + 1, u32::MAX - 1, 1 << 31] {
        let mut frame = vec![0x01];
        frame.extend_from_slice(&[0u8; 32]);
        frame.extend_from_slice(&position.to_be_bytes());
        frame.extend_from_slice(&body);
        crafted.push(frame);
    }
    // A history emit with an epoch and an offset past every bound, where the frame says.
    let head = br#"{"v":1,"node":"intruder","op":{"history_emit":{"#;
    let mut frame = vec![0x01];
    frame.extend_from_slice(&[0u8; 32]);
    frame.extend_from_slice(&(head.len() as u32).to_be_bytes());
    frame.extend_from_slice(head);
    frame.extend_from_slice(
        br#""epoch":"e","offset":99999999999999999999999,"ns":"/","targets":["all"],"event":"news","data":1}}}"#,
    );
    crafted.push(frame);
    let n = crafted.len() as u64;
    for payload in &crafted {
        publish_raw(&url, &prefix, payload).await;
    }

    assert!(eventually(|| unauthenticated(&a.0) == n && unauthenticated(&b.0) == n).await);
    alice.expect_no_event("news").await;
    bob.expect_no_event("news").await;
    // Both nodes keep serving: signed history emits, and new connections.
    b.0.to_room("r").emit("news", &json!("after"));
    assert_eq!(alice.expect_event("news").await, json!("after"));
    assert_eq!(bob.expect_event("news").await, json!("after"));
    let mut carol = connect(a.1, "carol").await;
    join(&mut carol, "r").await;
    b.0.to_room("r").emit("news", &json!("carol too"));
    assert_eq!(carol.expect_event("news").await, json!("carol too"));
    assert!(a.0.adapter().unwrap().stats().link_up && b.0.adapter().unwrap().stats().subscribed);
}

/// `frame` with the offset Redis inserted replaced by `offset`.
fn with_offset(frame: &[u8], offset: u64) -> Vec<u8> {
    let key = br#","offset":"#;
    let at = frame.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    let digits = frame[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut out = frame[..at].to_vec();
    out.extend_from_slice(offset.to_string().as_bytes());
    out.extend_from_slice(&frame[at + digits..]);
    out
}

#[tokio::test]
async fn a_replayed_history_emit_with_an_extreme_offset_does_not_stop_a_node() {
    use futures_util::StreamExt;

    let Some(url) = redis_url("bus signing test") else {
        return;
    };
    let prefix = unique_prefix();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut listener = client.get_async_pubsub().await.unwrap();
    listener.subscribe(format!("{prefix}#all")).await.unwrap();
    let (a, b, mut alice, mut bob) = signed_pair(&url, &prefix, true).await;

    // A signed history emit as it went over the bus (the epoch and offset are Redis's, outside
    // the tag: anyone on Redis can replay it with another offset).
    let captured = {
        let mut messages = listener.on_message();
        loop {
            let message = tokio::time::timeout(WAIT, messages.next()).await.unwrap().unwrap();
            let payload = message.get_payload_bytes().to_vec();
            if payload.windows(12).any(|w| w == b"history_emit") {
                break payload;
            }
        }
    };
    for offset in [u64::MAX, u64::MAX, 0] {
        publish_raw(&url, &prefix, &with_offset(&captured, offset)).await;
    }
    // The replays are the documented limit (they are delivered again); they stop nothing.
    for c in [&mut alice, &mut bob] {
        for _ in 0..3 {
            c.expect_event("news").await;
        }
    }
    a.0.to_room("r").emit("news", &json!("after"));
    b.0.to_room("r").emit("news", &json!("after"));
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.expect_event("news").await, json!("after"));
        assert_eq!(c.expect_event("news").await, json!("after"));
    }
    assert_eq!((unauthenticated(&a.0), unauthenticated(&b.0)), (0, 0));
}

#[tokio::test]
async fn a_node_answering_an_extreme_connection_count_cannot_panic_the_asker() {
    use tower_realtime::adapter::Inbound;

    let Some(url) = redis_url("bus signing test") else {
        return;
    };
    let prefix = unique_prefix();
    let (a, addr) = node(&url, &prefix, None, false).await;
    let _alice = connect(addr, "alice").await;
    // Another node, whose answer to every query is the largest count there is.
    let mut options = RedisOptions::default();
    options.prefix = prefix.clone();
    let (liar, mut inbound) = RedisAdapter::connect(&url, options).await.unwrap();
    let answers = tokio::spawn(async move {
        while let Some(message) = inbound.recv().await {
            if let Inbound::Query { reply, .. } = message {
                reply.send(json!(u64::MAX));
            }
        }
    });
    assert!(eventually_nodes(&a, 2).await);

    let count = a.cluster_connection_count().await;
    assert_eq!((count.value, count.partial), (usize::MAX, false));
    // The asker keeps serving.
    assert_eq!(a.connection_count(), 1);
    assert_eq!(a.cluster_room_users("nowhere").await.value, Vec::<String>::new());
    liar.shutdown().await.unwrap();
    answers.abort();
}

async fn eventually_nodes(hub: &Hub, n: usize) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if hub
            .adapter()
            .unwrap()
            .live_nodes()
            .await
            .is_ok_and(|nodes| nodes.len() == n)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
