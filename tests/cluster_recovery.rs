//! Missed-message recovery across the nodes of a cluster: the history, its offsets and epoch,
//! and the sessions of dropped connections live in Redis, so a client that drops on one node
//! recovers on another. Two hubs on one key prefix are two nodes, each on its own port, with
//! real clients.
//!
//! The tests need `REALTIME_TEST_REDIS` (`.ci/run` sets it); without it they say so. The main
//! cross-node recovery test also runs on NATS (feature `nats`) with `REALTIME_TEST_NATS`.
#![cfg(feature = "redis")]

mod common;

#[path = "common/proxy.rs"]
mod proxy;

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use common::{recovery::*, *};
use serde_json::{json, Value};
use tower_realtime::{
    adapter::{RedisAdapter, RedisOptions},
    Data, Emitter, ErrorEvent, History, Hub, JwtAuth, Socket,
};

fn skip() {
    common::did_not_run(
        "cluster recovery test",
        "set REALTIME_TEST_REDIS=redis://127.0.0.1:6379",
    );
}

fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-crec-{nanos}")
}

/// Who the app has taken out of which room (user, room): every node's rejoin guard asks it.
static REVOKED: parking_lot::Mutex<Vec<(String, String)>> = parking_lot::Mutex::new(Vec::new());

/// A node: a hub joined to the cluster of `prefix`, keeping `history`, served on its own port.
/// `None` without `REALTIME_TEST_REDIS`; with it, Redis must answer.
async fn node(prefix: &str, history: History) -> Option<(Hub, SocketAddr)> {
    let url = std::env::var("REALTIME_TEST_REDIS").ok()?;
    Some(node_at(&url, prefix, history).await)
}

/// A node reaching Redis at `url`.
async fn node_at(url: &str, prefix: &str, history: History) -> (Hub, SocketAddr) {
    let mut options = RedisOptions::default();
    options.prefix = prefix.to_owned();
    options.heartbeat = Duration::from_millis(200);
    options.node_timeout = Duration::from_millis(800);
    let (adapter, inbound) = RedisAdapter::connect(url, options)
        .await
        .expect("Redis must answer when REALTIME_TEST_REDIS is set");
    serve_node(adapter, inbound, history).await
}

/// A node on NATS at `url`.
#[cfg(feature = "nats")]
async fn nats_node_at(url: &str, prefix: &str, history: History) -> (Hub, SocketAddr) {
    let mut options = tower_realtime::adapter::NatsOptions::default();
    options.prefix = prefix.to_owned();
    options.heartbeat = Duration::from_millis(200);
    options.node_timeout = Duration::from_millis(800);
    let (adapter, inbound) = tower_realtime::adapter::NatsAdapter::connect(url, options)
        .await
        .unwrap_or_else(|e| panic!("NATS at {url} must answer when REALTIME_TEST_NATS is set: {e}"));
    serve_node(adapter, inbound, history).await
}

/// The test app's hub joined to the cluster through `adapter`, served on its own port.
async fn serve_node(
    adapter: impl tower_realtime::adapter::Adapter,
    inbound: tokio::sync::mpsc::Receiver<tower_realtime::adapter::Inbound>,
    history: History,
) -> (Hub, SocketAddr) {
    let builder = Hub::builder();
    // Socket.IO clients too; a session that stops polling ends (and is kept) within 300 ms.
    #[cfg(feature = "socketio")]
    let builder = builder.socketio(
        tower_realtime::socketio::SocketIoConfig::default()
            .ping(Duration::from_millis(100), Duration::from_millis(200)),
    );
    let hub = builder
        .auth(JwtAuth::hs256(SECRET))
        .history(history)
        .on("join", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!({ "joined": room }))
        })
        .on("whoami", |s: Socket| async move { json!({ "rooms": s.rooms() }) })
        .guard_rejoin(|s: Socket, room: String| {
            let user = s.user_id().unwrap_or_default().to_owned();
            let revoked = REVOKED.lock().contains(&(user, room));
            async move { !revoked }
        })
        .cluster(adapter, inbound)
        .build();
    let addr = serve_hub(&hub).await;
    (hub, addr)
}

async fn join(client: &mut Client, room: &str) {
    assert_eq!(
        client.call("join", json!(room)).await["data"],
        json!({ "joined": room })
    );
}

/// Emits `data` to `room` from `hub`, and waits until `watcher` (in that room, on any node)
/// has it: the event has then gone through Redis, and so has everything its node sent before.
async fn emit_seen(hub: &Hub, watcher: &mut Client, room: &str, data: Value) {
    hub.to_room(room).emit("said", &data);
    assert_eq!(watcher.expect_event("said").await, data);
}

/// `user` connects to `addr` with a session, joins `room`, gets one event there (emitted from
/// `hub`), and drops without a close frame (a network drop): what it remembers to come back.
async fn gone_from(hub: &Hub, addr: SocketAddr, watcher: &mut Client, user: &str, room: &str) -> Position {
    let mut client = connect_with(addr, user, "recover=1").await;
    let (news, mut pos) = session(&mut client).await;
    assert_eq!(news["recovered"], false);
    join(&mut client, room).await;
    emit_seen(hub, watcher, room, json!(format!("{user} is here"))).await;
    let frame = client.next_frame().await;
    assert_eq!(frame["data"], json!(format!("{user} is here")));
    pos.saw(&frame);
    let before = hub.connection_count();
    drop(client);
    assert!(eventually(|| hub.connection_count() == before - 1).await);
    pos
}

#[tokio::test]
async fn a_client_that_drops_on_one_node_recovers_on_another() {
    let prefix = unique_prefix();
    let Some(a) = node(&prefix, History::new().rooms("*")).await else {
        return skip();
    };
    let b = node(&prefix, History::new().rooms("*")).await.unwrap();
    drops_on_one_node_recovers_on_another(a, b).await;
}

#[tokio::test]
async fn a_client_that_drops_on_one_node_recovers_on_another_on_nats() {
    #[cfg(feature = "nats")]
    if let Some(url) = common::nats_url("cluster recovery test on NATS") {
        let prefix = unique_prefix();
        let a = nats_node_at(&url, &prefix, History::new().rooms("*")).await;
        let b = nats_node_at(&url, &prefix, History::new().rooms("*")).await;
        drops_on_one_node_recovers_on_another(a, b).await;
    }
    #[cfg(not(feature = "nats"))]
    common::did_not_run("cluster recovery test on NATS", "build with --features nats");
}

/// Alice drops on node A and comes back on node B: what she missed, from both nodes, in order,
/// then live events, each once.
async fn drops_on_one_node_recovers_on_another((a, addr_a): (Hub, SocketAddr), (b, addr_b): (Hub, SocketAddr)) {
    // A plain client on B sees every event live: when it has one, that event has gone through
    // the bus (and so has what its node queued before, the dropped client's session included).
    let mut watcher = connect(addr_b, "watcher").await;
    join(&mut watcher, "general").await;

    let mut pos = gone_from(&a, addr_a, &mut watcher, "alice", "general").await;
    // While alice is away: events from both nodes, and one to a room she is not in.
    for i in 1..=6 {
        let from = if i % 2 == 1 { &a } else { &b };
        emit_seen(from, &mut watcher, "general", json!(i)).await;
    }
    b.to_room("elsewhere").emit("said", &json!("not for alice"));

    let mut alice = connect_with(addr_b, "alice", &pos.query()).await;
    let (news, _) = session(&mut alice).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["missed"], 6);
    assert_eq!(
        news["session"].as_str(),
        Some(pos.session.as_str()),
        "the session is kept"
    );
    assert_eq!(
        news["epoch"].as_str(),
        Some(pos.epoch.as_str()),
        "one epoch for the cluster"
    );
    assert_eq!(news["rooms"], json!(["general"]));
    for i in 1..=6 {
        let frame = alice.next_frame().await;
        assert_eq!(frame["event"], "said");
        assert_eq!(frame["data"], json!(i), "missed events in order: {frame}");
        pos.saw(&frame);
    }
    // The room is back on node B: live events from both nodes follow, each once.
    for (from, data) in [(&a, "live from A"), (&b, "live from B")] {
        emit_seen(from, &mut watcher, "general", json!(data)).await;
        let frame = alice.next_frame().await;
        assert_eq!(frame["data"], json!(data));
        pos.saw(&frame);
    }
    assert_eq!(
        alice.call("whoami", json!(null)).await["data"]["rooms"],
        json!(["general"])
    );
    alice.expect_no_event("said").await;
    watcher.expect_no_event("said").await;
    assert_eq!(b.counters().recovered, 1);
}

#[tokio::test]
async fn events_from_both_nodes_during_the_recovery_arrive_once_in_offset_order() {
    let prefix = unique_prefix();
    let Some((a, addr_a)) = node(&prefix, History::new().rooms("*").max_events(10_000)).await else {
        return skip();
    };
    let (b, addr_b) = node(&prefix, History::new().rooms("*").max_events(10_000))
        .await
        .unwrap();
    let mut watcher = connect(addr_a, "watcher").await;
    join(&mut watcher, "general").await;
    let mut pos = gone_from(&a, addr_a, &mut watcher, "alice", "general").await;
    for i in 0..200 {
        let from = if i % 2 == 0 { &a } else { &b };
        from.to_room("general").emit("said", &json!(format!("away {i}")));
    }
    // Both nodes keep emitting while alice comes back to B.
    let producer = |hub: &Hub, name: &'static str| {
        let hub = hub.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                hub.to_room("general").emit("said", &json!(format!("{name} {i}")));
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let (pa, pb) = (producer(&a, "A"), producer(&b, "B"));
    let mut alice = connect_with(addr_b, "alice", &pos.query()).await;
    let (news, _) = session(&mut alice).await;
    assert_eq!(news["recovered"], true, "{news}");
    pa.await.unwrap();
    pb.await.unwrap();

    let expected = 200 + 2 * 300;
    let mut seen = HashSet::new();
    // Events of one node keep that node's order.
    let mut next = std::collections::HashMap::from([("A", 0), ("B", 0)]);
    for _ in 0..expected {
        let frame = alice.next_frame().await;
        assert_eq!(frame["event"], "said", "{frame}");
        pos.saw(&frame);
        let data = frame["data"].as_str().unwrap().to_owned();
        assert!(seen.insert(data.clone()), "{data} twice");
        if let Some((name, i)) = data.split_once(' ').filter(|(n, _)| *n != "away") {
            let i: u32 = i.parse().unwrap();
            let want = next.get_mut(name).unwrap();
            assert_eq!(i, *want, "the events of node {name} in their order");
            *want += 1;
        }
    }
    assert_eq!(seen.len(), expected);
    alice.expect_no_event("said").await;
}

#[tokio::test]
async fn a_restarted_node_keeps_the_epoch_and_its_clients_recover_there() {
    let prefix = unique_prefix();
    let Some((a, addr_a)) = node(&prefix, History::new().rooms("*")).await else {
        return skip();
    };
    let (b, addr_b) = node(&prefix, History::new().rooms("*")).await.unwrap();
    let mut watcher = connect(addr_b, "watcher").await;
    join(&mut watcher, "general").await;

    let mut alice = connect_with(addr_a, "alice", "recover=1").await;
    let (_, mut pos) = session(&mut alice).await;
    join(&mut alice, "general").await;
    emit_seen(&a, &mut watcher, "general", json!(0)).await;
    pos.saw(&alice.next_frame().await);

    // Node A goes down: it closes its connections (1001, so their sessions are kept), and
    // leaves the cluster.
    assert_eq!(a.shutdown().await, 0);
    assert_eq!(u16::from(alice.expect_close().await.unwrap().code), 1001);
    drop(alice);
    // A's last event went through Redis after the session it kept.
    emit_seen(&a, &mut watcher, "general", json!(1)).await;
    a.adapter().unwrap().shutdown().await.unwrap();
    drop(a);
    emit_seen(&b, &mut watcher, "general", json!(2)).await;

    // A new process takes A's place: the epoch lives in Redis, so it is the same.
    let (a2, addr_a2) = node(&prefix, History::new().rooms("*")).await.unwrap();
    let mut carol = connect_with(addr_a2, "carol", "recover=1").await;
    let (_, fresh) = session(&mut carol).await;
    assert_eq!(fresh.epoch, pos.epoch, "the epoch survives a node's restart");

    let mut alice = connect_with(addr_a2, "alice", &pos.query()).await;
    let (news, _) = session(&mut alice).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["missed"], 2);
    for i in 1..=2 {
        let frame = alice.next_frame().await;
        assert_eq!(frame["data"], json!(i));
        pos.saw(&frame);
    }
    // The new node emits too.
    emit_seen(&a2, &mut watcher, "general", json!("live")).await;
    let frame = alice.next_frame().await;
    assert_eq!(frame["data"], "live");
    pos.saw(&frame);
    alice.expect_no_event("said").await;
}

#[tokio::test]
async fn past_the_window_or_with_a_bad_session_the_client_is_told_why() {
    let prefix = unique_prefix();
    let history = || History::new().rooms("*").max_events(2);
    let Some((a, addr_a)) = node(&prefix, history()).await else {
        return skip();
    };
    let (b, addr_b) = node(&prefix, history()).await.unwrap();
    let mut watcher = connect(addr_b, "watcher").await;
    join(&mut watcher, "general").await;

    // Evicted: more events than a stream keeps.
    let pos = gone_from(&a, addr_a, &mut watcher, "alice", "general").await;
    for i in 1..=5 {
        emit_seen(&b, &mut watcher, "general", json!(i)).await;
    }
    let mut alice = connect_with(addr_b, "alice", &pos.query()).await;
    let (news, fresh) = session(&mut alice).await;
    assert_eq!(news["recovered"], false);
    assert_eq!(news["reason"], "missed events were evicted");
    assert_ne!(fresh.session, pos.session, "a new session");
    assert_eq!(fresh.epoch, pos.epoch);
    // Nothing restored, nothing replayed: the app resynchronises.
    assert_eq!(alice.call("whoami", json!(null)).await["data"]["rooms"], json!([]));
    alice.expect_no_event("said").await;
    // Counted by the node whose appends evicted them.
    assert!(eventually(|| b.counters().history_evicted >= 3).await);
    assert_eq!(b.counters().not_recovered, 1);

    // A session is taken once, wherever.
    let mut again = connect_with(addr_a, "alice", &pos.query()).await;
    assert_eq!(session(&mut again).await.0["reason"], "unknown or expired session");

    // A session is taken by its user only: anyone else is told what a made-up id is told,
    // and the session stays with its owner.
    let bob = gone_from(&a, addr_a, &mut watcher, "bob", "general").await;
    let mut mallory = connect_with(addr_b, "mallory", &bob.query()).await;
    assert_eq!(session(&mut mallory).await.0["reason"], "unknown or expired session");
    let mut bob_back = connect_with(addr_a, "bob", &bob.query()).await;
    let (news, _) = session(&mut bob_back).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["rooms"], json!(["general"]));

    // A position in another history.
    let mut carol = gone_from(&a, addr_a, &mut watcher, "carol", "general").await;
    carol.epoch = "0123456789abcdef".to_owned();
    let mut carol = connect_with(addr_b, "carol", &carol.query()).await;
    assert_eq!(
        session(&mut carol).await.0["reason"],
        "history was lost (epoch changed)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_away_kept_events_reach_local_clients_without_an_offset() {
    let Ok(url) = std::env::var("REALTIME_TEST_REDIS") else {
        return skip();
    };
    let prefix = unique_prefix();
    let (upstream, _) = proxy::through(&url, None).await;
    let cut = proxy::Proxy::start(upstream).await;
    let (_, proxied) = proxy::through(&url, Some(cut.addr)).await;
    let (a, addr_a) = node_at(&proxied, &prefix, History::new().rooms("*")).await;
    let (b, addr_b) = node_at(&url, &prefix, History::new().rooms("*")).await;
    let mut local = connect(addr_a, "erin").await;
    let mut remote = connect(addr_b, "fred").await;
    join(&mut local, "r").await;
    join(&mut remote, "r").await;
    emit_seen(&a, &mut remote, "r", json!("before")).await;
    assert_eq!(local.expect_event("said").await, json!("before"));

    cut.cut();
    let stats = || a.adapter().unwrap().stats();
    // Until the node knows Redis is away, its kept emits are queued, and lost with the write.
    assert!(
        eventually(|| {
            a.to_room("r").emit("probe", &json!(null));
            !stats().link_up
        })
        .await
    );
    let lost = stats().lost;
    assert!(lost > 0, "losses are counted");
    // Known away: a kept emit goes to this node's clients at once, as an event not kept.
    assert_eq!(a.to_room("r").emit("said", &json!("during")), 1);
    let frame = loop {
        let frame = local.next_frame().await;
        if frame["event"] == "said" {
            break frame;
        }
    };
    assert_eq!(frame["data"], "during");
    assert!(frame.get("offset").is_none(), "no offset without Redis: {frame}");
    assert!(stats().lost > lost, "counted as lost for the cluster");
    // A client coming back meanwhile is told the history cannot be read.
    let mut back = connect_with(addr_a, "erin", "session=0123456789abcdef&epoch=x&offset=1").await;
    assert_eq!(session(&mut back).await.0["reason"], "history is unavailable");

    // Redis is back: kept emits of node A reach node B again, with their offsets.
    cut.restore();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut reached = None;
    while reached.is_none() && tokio::time::Instant::now() < deadline {
        a.to_room("r").emit("said", &json!("after"));
        if let Ok(frame) = tokio::time::timeout(Duration::from_millis(200), remote.next_frame()).await {
            reached = Some(frame).filter(|f| f["data"] == "after");
        }
    }
    let frame = reached.expect("no kept emit reached node B after Redis came back");
    assert!(frame["offset"].is_u64(), "{frame}");
    remote.expect_no_event("probe").await;
    drop(b);
}

/// Socket.IO's connection state recovery across nodes: the `pid` and the offset
/// (`"<epoch>-<offset>"`, the last argument of each event) presented in the CONNECT.
#[cfg(feature = "socketio")]
#[tokio::test]
async fn a_socketio_client_recovers_on_another_node() {
    use common::socketio::Polling;

    /// The data and the offset of an EVENT packet `42["said",<data>,"<offset>"]`.
    fn said(packet: &str) -> (Value, String) {
        let args: Vec<Value> = serde_json::from_str(&packet[2..]).unwrap();
        assert_eq!(args[0], "said", "{packet}");
        (args[1].clone(), args[2].as_str().expect("an offset").to_owned())
    }

    let prefix = unique_prefix();
    let Some((a, addr_a)) = node(&prefix, History::new().rooms("*")).await else {
        return skip();
    };
    let (b, addr_b) = node(&prefix, History::new().rooms("*")).await.unwrap();
    let mut watcher = connect(addr_b, "watcher").await;
    join(&mut watcher, "general").await;

    let (s, _) = Polling::open(addr_a).await;
    s.post(&format!("40{}", json!({ "token": token("alice") }))).await;
    let connected: Value = serde_json::from_str(&s.until(|p| p.starts_with("40")).await[2..]).unwrap();
    let pid = connected["pid"].as_str().expect("a pid").to_owned();
    s.post(r#"421["join","general"]"#).await;
    assert_eq!(s.until(|p| p.starts_with("431")).await, r#"431[{"joined":"general"}]"#);
    emit_seen(&a, &mut watcher, "general", json!(0)).await;
    let (data, mut offset) = said(&s.until(|p| p.starts_with("42")).await);
    assert_eq!(data, 0);
    // The client stops polling: its session times out, and is kept.
    drop(s);
    assert!(eventually(|| a.connection_count() == 0).await);
    emit_seen(&a, &mut watcher, "general", json!(1)).await;
    emit_seen(&b, &mut watcher, "general", json!(2)).await;

    let (s, _) = Polling::open(addr_b).await;
    let auth = json!({ "token": token("alice"), "pid": pid, "offset": offset });
    s.post(&format!("40{auth}")).await;
    let connected: Value = serde_json::from_str(&s.until(|p| p.starts_with("40")).await[2..]).unwrap();
    assert_eq!(connected["pid"], json!(pid), "recovered: the same pid");
    for i in 1..=2 {
        let (data, next) = said(&s.until(|p| p.starts_with("42")).await);
        assert_eq!(data, i, "missed events in order");
        assert_ne!(next, offset);
        offset = next;
    }
    emit_seen(&a, &mut watcher, "general", json!("live")).await;
    let (data, _) = said(&s.until(|p| p.starts_with("42")).await);
    assert_eq!(data, "live");
    assert_eq!(b.counters().recovered, 1);
}

#[tokio::test]
async fn a_forged_offset_past_the_cluster_history_is_unknown_and_does_not_stall_live_events() {
    let prefix = unique_prefix();
    let Some((a, addr_a)) = node(&prefix, History::new().rooms("*")).await else {
        return skip();
    };
    let (b, addr_b) = node(&prefix, History::new().rooms("*")).await.unwrap();
    let mut watcher = connect(addr_b, "watcher").await;
    join(&mut watcher, "general").await;
    // The control: bob drops on A and comes back to B with the position he was given.
    let control = gone_from(&a, addr_a, &mut watcher, "bob", "general").await;
    let mut alice = gone_from(&a, addr_a, &mut watcher, "alice", "general").await;
    alice.offset = Some(u64::MAX);
    let mut forged = connect_with(addr_b, "alice", &alice.query()).await;
    let (news, _) = session(&mut forged).await;
    assert_eq!(news["recovered"], false, "{news}");
    assert_eq!(news["reason"], "unknown offset");
    // Live events reach her: nothing is held behind a recovery that never ends.
    join(&mut forged, "general").await;
    emit_seen(&a, &mut watcher, "general", json!("live")).await;
    assert_eq!(forged.expect_event("said").await, json!("live"));

    let mut bob = connect_with(addr_b, "bob", &control.query()).await;
    let (news, _) = session(&mut bob).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(bob.next_frame().await["data"], "alice is here");
    assert_eq!((b.counters().recovered, b.counters().not_recovered), (1, 1));
}

#[tokio::test]
async fn a_user_taken_out_of_a_room_while_offline_does_not_get_it_back_on_another_node() {
    let prefix = unique_prefix();
    let Some((a, addr_a)) = node(&prefix, History::new().rooms("*")).await else {
        return skip();
    };
    let (_b, addr_b) = node(&prefix, History::new().rooms("*")).await.unwrap();
    let mut watcher = connect(addr_b, "watcher").await;
    join(&mut watcher, "team-x").await;
    let control = gone_from(&a, addr_a, &mut watcher, "bob", "team-x").await;
    let erin = gone_from(&a, addr_a, &mut watcher, "erin", "team-x").await;
    // The app takes erin out of the room while she is offline.
    REVOKED.lock().push(("erin".to_owned(), "team-x".to_owned()));
    emit_seen(&a, &mut watcher, "team-x", json!("secret")).await;

    let mut back = connect_with(addr_b, "erin", &erin.query()).await;
    let (news, _) = session(&mut back).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!((&news["rooms"], &news["missed"]), (&json!([]), &json!(0)));
    assert_eq!(back.call("whoami", json!(null)).await["data"]["rooms"], json!([]));
    emit_seen(&a, &mut watcher, "team-x", json!("later")).await;
    back.expect_no_event("said").await;

    let mut bob = connect_with(addr_b, "bob", &control.query()).await;
    let (news, _) = session(&mut bob).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["rooms"], json!(["team-x"]));
    for data in ["erin is here", "secret", "later"] {
        assert_eq!(bob.next_frame().await["data"], data);
    }
}

#[tokio::test]
async fn sessions_kept_in_redis_lose_what_the_app_takes_from_their_user_while_offline() {
    let prefix = unique_prefix();
    let Some((a, addr_a)) = node(&prefix, History::new().rooms("*")).await else {
        return skip();
    };
    let (b, addr_b) = node(&prefix, History::new().rooms("*")).await.unwrap();
    let mut watcher = connect(addr_b, "watcher").await;
    join(&mut watcher, "crew").await;
    let control = gone_from(&a, addr_a, &mut watcher, "bob", "crew").await;
    let carol = gone_from(&a, addr_a, &mut watcher, "carol", "crew").await;
    let dave = gone_from(&a, addr_a, &mut watcher, "dave", "crew").await;
    // Carol is taken out of the room, dave put out altogether (a ban), both while offline.
    assert_eq!(a.leave_user("carol", "crew"), 0);
    assert_eq!(a.disconnect_user("dave"), 0);
    emit_seen(&a, &mut watcher, "crew", json!("secret")).await;

    let mut back = connect_with(addr_b, "carol", &carol.query()).await;
    let (news, _) = session(&mut back).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!((&news["rooms"], &news["missed"]), (&json!([]), &json!(0)));
    back.expect_no_event("said").await;

    let mut back = connect_with(addr_b, "dave", &dave.query()).await;
    let (news, _) = session(&mut back).await;
    assert_eq!(news["recovered"], false, "{news}");
    assert_eq!(news["reason"], "unknown or expired session");

    // Back in the room after that, carol's next session keeps it.
    let mut carol = connect_with(addr_b, "carol", "recover=1").await;
    let (_, mut again) = session(&mut carol).await;
    join(&mut carol, "crew").await;
    emit_seen(&a, &mut watcher, "crew", json!("welcome back")).await;
    let frame = loop {
        let frame = carol.next_frame().await;
        if frame["event"] == "said" {
            break frame;
        }
    };
    again.saw(&frame);
    let before = b.connection_count();
    drop(carol);
    assert!(eventually(|| b.connection_count() == before - 1).await);
    emit_seen(&a, &mut watcher, "crew", json!("missed by carol")).await;
    let mut carol = connect_with(addr_b, "carol", &again.query()).await;
    let (news, _) = session(&mut carol).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["rooms"], json!(["crew"]));

    let mut bob = connect_with(addr_b, "bob", &control.query()).await;
    let (news, _) = session(&mut bob).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["rooms"], json!(["crew"]));
}

/// What a client read within `wait`: a text frame, the server's close code, or nothing.
enum Read {
    Frame(Value),
    Closed(Option<u16>),
    Nothing,
}

/// Reads `client`'s next text frame or close within `wait` (skipping pings). Its stash must be
/// empty: no ack was awaited since its last frames were read.
async fn read_within(client: &mut Client, wait: Duration) -> Read {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, client.ws.next()).await {
            Err(_) => return Read::Nothing,
            Ok(Some(Ok(Message::Text(t)))) => return Read::Frame(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => return Read::Closed(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("the connection ended without a close frame: {other:?}"),
        }
    }
}

/// Waits until node `a` has no connection left (gina's session is queued for Redis), then emits
/// from it: once `hank` has that event (after those before it), so has Redis the session.
async fn gone(a: &Hub, hank: &mut Client) {
    assert!(eventually(|| a.connection_count() == 0).await);
    a.to_room("r").emit("said", &json!("gina is gone"));
    while hank.expect_event("said").await != "gina is gone" {}
}

/// Two nodes after a cut of node A's link to Redis, restored.
struct AfterCut {
    /// Node A, and the proxy its link goes through (kept for as long as the test runs).
    a: (Hub, proxy::Proxy),
    b: Hub,
    addr_b: SocketAddr,
    /// A client on B in room `r`.
    hank: Client,
    /// A client on A in room `r` through the cut, and her position before it.
    gina: Client,
    pos: Position,
}

/// Two nodes, A reaching Redis through a proxy: `gina` on A in room `r` (her position after
/// one event), `hank` on B in `r`. The link is cut, `missed` events are emitted from B
/// meanwhile (each seen by hank: in Redis), and the link is restored.
async fn through_a_cut(url: &str, history: History, missed: usize) -> AfterCut {
    let prefix = unique_prefix();
    let (upstream, _) = proxy::through(url, None).await;
    let link = proxy::Proxy::start(upstream).await;
    let (_, proxied) = proxy::through(url, Some(link.addr)).await;
    let (a, addr_a) = node_at(&proxied, &prefix, history.clone()).await;
    let (b, addr_b) = node_at(url, &prefix, history).await;
    let mut gina = connect_with(addr_a, "gina", "recover=1").await;
    let (_, mut pos) = session(&mut gina).await;
    join(&mut gina, "r").await;
    let mut hank = connect(addr_b, "hank").await;
    join(&mut hank, "r").await;
    emit_seen(&b, &mut hank, "r", json!("before")).await;
    let frame = gina.next_frame().await;
    assert_eq!(frame["data"], "before");
    pos.saw(&frame);

    // The cut closes node A's connections to Redis, its subscription with them: what B emits
    // now never reaches A.
    link.cut();
    for i in 1..=missed {
        emit_seen(&b, &mut hank, "r", json!(format!("missed {i}"))).await;
    }
    link.restore();
    AfterCut {
        a: (a, link),
        b,
        addr_b,
        hank,
        gina,
        pos,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connected_through_a_cut_gets_what_its_node_missed_before_anything_after() {
    let Ok(url) = std::env::var("REALTIME_TEST_REDIS") else {
        return skip();
    };
    let AfterCut {
        b,
        addr_b,
        mut gina,
        mut pos,
        a: (a, _link),
        mut hank,
    } = through_a_cut(&url, History::new().rooms("*"), 5).await;
    let before = pos.offset.unwrap();

    // Once node A is subscribed again, the first event it gets shows the hole: the missed
    // events are read back from Redis and come first, then what follows, every offset once.
    let mut got: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut k = 0;
    while got.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing reached gina after the cut"
        );
        b.to_room("r").emit("said", &json!(format!("after {k}")));
        k += 1;
        if let Read::Frame(frame) = read_within(&mut gina, Duration::from_millis(200)).await {
            got.push(frame);
        }
    }
    // Everything emitted so far: the 5 missed events, then the k emitted after the cut.
    while got.len() < 5 + k {
        match read_within(&mut gina, WAIT).await {
            Read::Frame(frame) => got.push(frame),
            other => panic!(
                "gina has {} of {} events, then {}",
                got.len(),
                5 + k,
                match other {
                    Read::Closed(code) => format!("a close ({code:?})"),
                    _ => "nothing".to_owned(),
                }
            ),
        }
    }
    let data: Vec<&str> = got.iter().map(|f| f["data"].as_str().unwrap()).collect();
    let expected: Vec<String> = (1..=5)
        .map(|i| format!("missed {i}"))
        .chain((0..k).map(|i| format!("after {i}")))
        .collect();
    assert_eq!(data, expected);
    for (i, frame) in got.iter().enumerate() {
        assert_eq!(frame["event"], "said", "{frame}");
        assert_eq!(frame["offset"].as_u64(), Some(before + 1 + i as u64), "{frame}");
        pos.saw(frame);
    }
    assert!(matches!(read_within(&mut gina, QUIET).await, Read::Nothing));

    // Her last offset was the cluster's last one: on another node, she misses only what came
    // after she dropped.
    drop(gina);
    gone(&a, &mut hank).await;
    let mut back = connect_with(addr_b, "gina", &pos.query()).await;
    let (news, _) = session(&mut back).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["missed"], 1, "{news}");
    assert_eq!(back.expect_event("said").await, "gina is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_that_cannot_be_read_back_closes_with_4004_before_anything_past_it() {
    let Ok(url) = std::env::var("REALTIME_TEST_REDIS") else {
        return skip();
    };
    // More missed events than a replay may hold: they cannot be given back on node A.
    let history = History::new().rooms("*").max_replay(3);
    let AfterCut {
        b,
        addr_b,
        mut gina,
        pos,
        a: (a, _link),
        mut hank,
    } = through_a_cut(&url, history, 5).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let mut k = 0;
    let code = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gina was not closed after the cut"
        );
        b.to_room("r").emit("said", &json!(format!("after {k}")));
        k += 1;
        match read_within(&mut gina, Duration::from_millis(200)).await {
            Read::Nothing => continue,
            Read::Closed(code) => break code,
            Read::Frame(frame) => panic!("an event past the hole reached gina: {frame}"),
        }
    };
    assert_eq!(code, Some(4004));
    drop(gina);
    gone(&a, &mut hank).await;

    // Her session was kept as of her last event, before the hole: resuming it reads the whole
    // hole, which is told as too many (not as a recovery without it).
    let mut back = connect_with(addr_b, "gina", &pos.query()).await;
    let (news, _) = session(&mut back).await;
    assert_eq!(news["recovered"], false, "{news}");
    assert_eq!(news["reason"], "too many missed events", "{news}");
}
