//! The conformance suite every [`Engine`] passes: what the hub relies on, checked through the
//! trait alone, so that engines are interchangeable. Each engine's tests call [`run`] with a
//! way to make nodes of a fresh cluster on its bus.
//!
//! The suite assumes short timings of the engine under test: heartbeats of at most 200 ms, a
//! node timeout of at most 1 s, a query timeout of 1 s.

use std::{sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use serde_json::{json, value::RawValue, Value};
use tokio::sync::mpsc::Receiver;

use super::{
    engine::{Engine, Inbound},
    history::{HistoryParams, Missed},
    Op, Query, Target,
};

/// A node of a cluster under test: the engine, and what it hands the hub.
pub(crate) struct Node {
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) inbound: Receiver<Inbound>,
}

/// Makes a node of the cluster named by its argument (nodes made with the same name share a
/// cluster; another name is another cluster on the same bus, sharing nothing with it).
pub(crate) type Maker = dyn Fn(String) -> BoxFuture<'static, Node> + Send + Sync;

/// Every check, each on a cluster of its own.
pub(crate) async fn run(make: &Maker) {
    let fresh = |check: &str| format!("conformance-{check}-{}", random());
    ops_reach_every_other_node_once(make, fresh("ops")).await;
    a_targeted_op_reaches_its_node_only(make, fresh("targeted")).await;
    queries_gather_answers_and_name_the_silent(make, fresh("queries")).await;
    presence_counts_first_and_last_connections(make, fresh("presence")).await;
    a_node_that_leaves_is_seen_gone(make, fresh("liveness")).await;
    a_gone_nodes_users_are_reported_offline_once(make, fresh("reaping")).await;
    history_is_kept_in_order_and_read_back(make, fresh("history")).await;
    a_session_is_taken_once_by_its_owner(make, fresh("sessions")).await;
}

const WAIT: Duration = Duration::from_secs(3);

/// 16 random hex digits.
fn random() -> String {
    format!("{:016x}", getrandom::u64().expect("OS randomness"))
}

/// The next op on `rx` within `within`, skipping the rest.
async fn next_op(rx: &mut Receiver<Inbound>, within: Duration) -> Option<(String, Op)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Inbound::Op { from, op })) => return Some((from, op)),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

fn disconnect(user: &str) -> Op {
    Op::DisconnectUser { user: user.to_owned() }
}

fn user_of(op: &Op) -> &str {
    match op {
        Op::DisconnectUser { user } => user,
        other => panic!("unexpected op {}", other.kind()),
    }
}

async fn ops_reach_every_other_node_once(make: &Maker, cluster: String) {
    let mut a = make(cluster.clone()).await;
    let mut b = make(cluster.clone()).await;
    let mut c = make(cluster).await;
    for i in 0..20 {
        assert!(a.engine.publish(&disconnect(&format!("u{i}"))), "published");
    }
    for rx in [&mut b.inbound, &mut c.inbound] {
        for i in 0..20 {
            let (from, op) = next_op(rx, WAIT).await.expect("every op arrives");
            assert_eq!(from, a.engine.node_id());
            assert_eq!(user_of(&op), format!("u{i}"), "in the order published");
        }
        assert!(next_op(rx, Duration::from_millis(200)).await.is_none(), "once");
    }
    assert!(
        next_op(&mut a.inbound, Duration::from_millis(200)).await.is_none(),
        "never echoed to the sender"
    );
}

async fn a_targeted_op_reaches_its_node_only(make: &Maker, cluster: String) {
    let a = make(cluster.clone()).await;
    let mut b = make(cluster.clone()).await;
    let mut c = make(cluster).await;
    assert!(a.engine.publish_to(b.engine.node_id(), &disconnect("only-b")));
    let (_, op) = next_op(&mut b.inbound, WAIT).await.expect("b gets it");
    assert_eq!(user_of(&op), "only-b");
    assert!(next_op(&mut c.inbound, Duration::from_millis(300)).await.is_none());
}

async fn queries_gather_answers_and_name_the_silent(make: &Maker, cluster: String) {
    let asker = make(cluster.clone()).await;
    let mut answering = make(cluster.clone()).await;
    let mut failing = make(cluster.clone()).await;
    let failing_id = failing.engine.node_id().to_owned();
    let silent = make(cluster).await;
    let answered = tokio::spawn(async move {
        while let Some(message) = answering.inbound.recv().await {
            if let Inbound::Query { query, reply, .. } = message {
                let Query::ConnectionCount { ns } = query else {
                    panic!("another query")
                };
                reply.send(json!({ "ns": ns, "count": 3 }));
            }
        }
    });
    // A reply dropped unanswered tells the asker at once.
    let failed = tokio::spawn(async move {
        while let Some(message) = failing.inbound.recv().await {
            drop(message);
        }
    });
    let mut silent_inbound = silent.inbound;
    let query = Query::ConnectionCount { ns: Some("/".into()) };
    let answer = asker.engine.request(query, None).await;
    assert_eq!(answer.value, [json!({ "ns": "/", "count": 3 })]);
    assert!(answer.partial);
    let mut missing = vec![silent.engine.node_id().to_owned(), failing_id];
    missing.sort_unstable();
    assert_eq!(answer.missing_nodes, missing, "the silent and the failing node");
    // The silent node did get the question.
    assert!(matches!(silent_inbound.try_recv(), Ok(Inbound::Query { .. })));
    answered.abort();
    failed.abort();
}

async fn presence_counts_first_and_last_connections(make: &Maker, cluster: String) {
    let a = make(cluster.clone()).await;
    let b = make(cluster).await;
    let (ea, eb) = (&a.engine, &b.engine);
    assert!(ea.user_connected("ann").await.unwrap(), "first connection anywhere");
    assert!(!eb.user_connected("ann").await.unwrap(), "a second, on another node");
    assert!(!ea.user_connected("ann").await.unwrap(), "a third");
    assert!(eb.user_connected("bo").await.unwrap());
    let online = ea.online_users().await;
    assert_eq!(online.value, ["ann", "bo"]);
    assert!(!online.partial);
    assert!(!ea.user_disconnected("ann").await.unwrap());
    assert!(!eb.user_disconnected("ann").await.unwrap());
    assert!(ea.user_disconnected("ann").await.unwrap(), "the last one anywhere");
    assert!(!ea.user_disconnected("nobody").await.unwrap(), "an unknown user");
    assert_eq!(eb.online_users().await.value, ["bo"]);

    // Racing nodes: of all first connections, exactly one brings the user online.
    let firsts = futures_util::future::join_all([ea.user_connected("cy"), eb.user_connected("cy")]).await;
    assert_eq!(firsts.iter().filter(|f| matches!(f, Ok(true))).count(), 1, "{firsts:?}");
    let lasts = futures_util::future::join_all([ea.user_disconnected("cy"), eb.user_disconnected("cy")]).await;
    assert_eq!(lasts.iter().filter(|f| matches!(f, Ok(true))).count(), 1, "{lasts:?}");
}

async fn a_node_that_leaves_is_seen_gone(make: &Maker, cluster: String) {
    let mut a = make(cluster.clone()).await;
    let b = make(cluster).await;
    let mut both = vec![a.engine.node_id().to_owned(), b.engine.node_id().to_owned()];
    both.sort_unstable();
    assert_eq!(a.engine.live_nodes().await.unwrap(), both);
    assert!(b.engine.user_connected("dee").await.unwrap());
    b.engine.shutdown().await.expect("shutdown");
    assert_eq!(
        a.engine.live_nodes().await.unwrap(),
        [a.engine.node_id()],
        "gone at once"
    );
    // Its users are reported offline by a node that is still there, within a heartbeat or so.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, a.inbound.recv()).await {
            Ok(Some(Inbound::PresenceChanged { offline, .. })) if offline.contains(&"dee".to_owned()) => break,
            Ok(Some(_)) => continue,
            other => panic!("no offline report for the gone node's user: {other:?}"),
        }
    }
    assert!(a.engine.online_users().await.value.is_empty());
    assert!(
        !b.engine.publish(&disconnect("x")),
        "publishing after shutdown is lost at once"
    );
}

/// Of the live nodes, exactly one reports each user of a gone node offline; a user still
/// connected elsewhere is not reported.
async fn a_gone_nodes_users_are_reported_offline_once(make: &Maker, cluster: String) {
    let a = make(cluster.clone()).await;
    let b = make(cluster.clone()).await;
    let c = make(cluster).await;
    let users: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
    for user in &users {
        assert!(c.engine.user_connected(user).await.unwrap());
    }
    assert!(!a.engine.user_connected("u0").await.unwrap(), "u0 is on a too");
    c.engine.shutdown().await.expect("shutdown");
    let (mut ra, mut rb) = (a.inbound, b.inbound);
    let mut reported: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::select! {
            m = ra.recv() => m,
            m = rb.recv() => m,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        if let Some(Inbound::PresenceChanged { offline, .. }) = message {
            reported.extend(offline);
        }
    }
    reported.sort_unstable();
    assert_eq!(reported, users[1..], "each once, by one node; u0 is still online");
    assert_eq!(a.engine.online_users().await.value, ["u0"]);
}

fn params() -> HistoryParams {
    HistoryParams {
        new_epoch: random().into(),
        max_events: 100,
        max_age: Duration::from_secs(60),
        session_ttl: Duration::from_secs(60),
        max_replay: 100,
    }
}

fn kept(room: &str, n: u64) -> Op {
    Op::HistoryEmit {
        epoch: String::new(),
        offset: 0,
        ns: "/".into(),
        targets: vec![Target::Room(room.into())],
        except: vec![],
        except_rooms: vec![],
        except_users: vec![],
        event: "e".into(),
        data: RawValue::from_string(json!({ "n": n }).to_string()).unwrap(),
    }
}

async fn history_is_kept_in_order_and_read_back(make: &Maker, cluster: String) {
    let mut a = make(cluster.clone()).await;
    let mut b = make(cluster).await;
    let params = params();
    let (epoch, start) = a.engine.history_epoch(&params).await.expect("an epoch");
    assert_eq!(
        b.engine.history_epoch(&params).await.unwrap(),
        (epoch.clone(), start),
        "one epoch"
    );
    let stream = "r1:/:general".to_owned();
    for n in 0..5 {
        assert!(a
            .engine
            .append_history(&kept("general", n), std::slice::from_ref(&stream), &params));
    }
    // Every node, the emitting one included, gets each with its epoch and offset, in order.
    for rx in [&mut a.inbound, &mut b.inbound] {
        for n in 0..5 {
            let (_, op) = next_op(rx, WAIT).await.expect("each kept event is published");
            let Op::HistoryEmit {
                epoch: e, offset, data, ..
            } = op
            else {
                panic!("a history emit expected")
            };
            assert_eq!((e.as_str(), offset), (epoch.as_str(), start + 1 + n));
            assert_eq!(serde_json::from_str::<Value>(data.get()).unwrap(), json!({ "n": n }));
        }
    }
    // Read back after an offset, on another node.
    let missed = b
        .engine
        .read_history(&params, &epoch, &[(stream.clone(), start + 2)])
        .await;
    let Ok(Missed::Events { upto, events, .. }) = missed else {
        panic!("events expected: {missed:?}")
    };
    assert_eq!(upto, start + 5);
    let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, [start + 3, start + 4, start + 5]);
    // Another epoch is told so; an offset never given out is refused.
    let other = b
        .engine
        .read_history(&params, "another", &[(stream.clone(), start)])
        .await;
    assert!(matches!(other, Ok(Missed::EpochChanged { .. })), "{other:?}");
    let ahead = b.engine.read_history(&params, &epoch, &[(stream, start + 50)]).await;
    assert!(matches!(ahead, Ok(Missed::UnknownOffset)), "{ahead:?}");
}

async fn a_session_is_taken_once_by_its_owner(make: &Maker, cluster: String) {
    let a = make(cluster.clone()).await;
    let b = make(cluster).await;
    let id = random();
    let ttl = Duration::from_secs(30);
    assert!(a.engine.keep_session(&id, r#"{"user":"ann","ns":"/"}"#, ttl));
    // Kept without waiting: read it back on the other node once it is there.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut others = None;
    while tokio::time::Instant::now() < deadline {
        others = Some(b.engine.take_session(&id, Some("mallory"), "/").await.unwrap());
        let mine = b.engine.take_session(&id, Some("ann"), "/").await.unwrap();
        if let Some((json, _)) = mine {
            assert_eq!(json, r#"{"user":"ann","ns":"/"}"#);
            assert_eq!(others, Some(None), "not for someone else");
            assert_eq!(
                b.engine.take_session(&id, Some("ann"), "/").await.unwrap(),
                None,
                "once"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the kept session never came back: {others:?}");
}
