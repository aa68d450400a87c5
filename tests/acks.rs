//! Emits to many that wait for every recipient's answer (`Emit::timeout(..).emit_with_ack`),
//! over real sockets: native and Socket.IO clients answering, one silent (a timeout), one
//! leaving (disconnected, at once), typed answers, and, with Redis, a room spanning two nodes.

mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{json, Value};
use tower_realtime::{AckError, AckResponses, ConnectionId, Data, Emitter, ErrorEvent, Hub, JwtAuth, Socket};

fn builder() -> tower_realtime::HubBuilder {
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on("join", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!(room))
        })
}

async fn joined(addr: std::net::SocketAddr, user: &str, room: &str) -> Client {
    let mut c = connect(addr, user).await;
    assert_eq!(c.call("join", json!(room)).await["data"], json!(room));
    c
}

/// The id of the one connection of `user`.
fn id_of(hub: &Hub, user: &str) -> ConnectionId {
    let ids = hub.connections_of(user);
    assert_eq!(ids.len(), 1, "{user}: {ids:?}");
    ids[0]
}

/// Reads the event `name` and answers its ack id with `data`; returns the frame.
async fn answer(c: &mut Client, name: &str, data: Value) -> Value {
    let frame = next_event(c, name).await;
    let id = frame["id"].as_u64().expect("an emit waiting for answers carries an id");
    c.send_raw(&json!({ "ack": id, "data": data }).to_string()).await;
    frame
}

async fn next_event(c: &mut Client, name: &str) -> Value {
    loop {
        let frame = c.next_frame().await;
        if frame["event"] == name {
            return frame;
        }
    }
}

/// Each recipient's outcome, by connection.
fn by_connection(answers: AckResponses<Value>) -> HashMap<ConnectionId, Result<Value, String>> {
    assert!(answers.is_complete(), "{:?}", answers.missing_nodes);
    let ids: Vec<_> = answers.responses.iter().map(|r| r.connection).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted and once each: {ids:?}");
    (answers.responses.into_iter())
        .map(|r| (r.connection, r.result.map_err(|e| format!("{e:?}"))))
        .collect()
}

#[tokio::test]
async fn a_room_emit_collects_each_answer_a_timeout_and_a_disconnect() {
    let hub = builder().build();
    let addr = serve_hub(&hub).await;
    let mut alice = joined(addr, "alice", "r").await;
    let mut bob = joined(addr, "bob", "r").await;
    let mut carol = joined(addr, "carol", "r").await;
    let mut dave = joined(addr, "dave", "r").await;
    let mut outsider = joined(addr, "erin", "elsewhere").await;

    let started = Instant::now();
    let asking = tokio::spawn({
        let hub = hub.clone();
        async move {
            hub.to_room("r")
                .timeout(Duration::from_millis(800))
                .emit_with_ack::<_, Value>("question", &json!({ "q": "ready?" }))
                .await
        }
    });
    let a = answer(&mut alice, "question", json!("yes")).await;
    let b = answer(&mut bob, "question", json!({ "ready": false })).await;
    // Encoded once: every recipient gets the same frame, with one ack id.
    assert_eq!(a, b);
    assert_eq!(a["data"], json!({ "q": "ready?" }));
    // Carol reads it and stays silent; dave reads it and leaves.
    assert_eq!(next_event(&mut carol, "question").await, a);
    assert_eq!(next_event(&mut dave, "question").await, a);
    dave.close().await;
    outsider.expect_no_event("question").await;

    let answers = by_connection(asking.await.unwrap().unwrap());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert_eq!(answers[&id_of(&hub, "alice")], Ok(json!("yes")));
    assert_eq!(answers[&id_of(&hub, "bob")], Ok(json!({ "ready": false })));
    assert_eq!(answers[&id_of(&hub, "carol")], Err("Timeout".to_owned()));
    let dave_id = answers.keys().copied().find(|id| hub.socket(*id).is_none()).unwrap();
    assert_eq!(answers[&dave_id], Err("Disconnected".to_owned()));

    // A late answer is ignored, and the connection goes on.
    carol
        .send_raw(&json!({ "ack": a["id"], "data": "late" }).to_string())
        .await;
    assert_eq!(carol.call("join", json!("r2")).await["data"], json!("r2"));
}

#[tokio::test]
async fn answers_are_typed_and_a_wrong_type_is_that_recipients_error() {
    let hub = builder().build();
    let addr = serve_hub(&hub).await;
    let mut alice = joined(addr, "alice", "r").await;
    let mut bob = joined(addr, "bob", "r").await;
    let asking = tokio::spawn({
        let hub = hub.clone();
        async move {
            hub.to_rooms(["r"])
                .timeout(Duration::from_secs(5))
                .emit_with_ack::<_, u32>("count", &1)
                .await
        }
    });
    answer(&mut alice, "count", json!(42)).await;
    answer(&mut bob, "count", json!("forty-two")).await;
    let answers = asking.await.unwrap().unwrap();
    assert_eq!(answers.responses.len(), 2);
    let answered: Vec<_> = answers.answers().collect();
    assert_eq!(answered, vec![(id_of(&hub, "alice"), &42)]);
    let bob_result = &answers
        .responses
        .iter()
        .find(|r| r.connection == id_of(&hub, "bob"))
        .unwrap()
        .result;
    assert!(matches!(bob_result, Err(AckError::Deserialize(_))), "{bob_result:?}");

    // A payload that does not serialize is the call's error, and nothing is sent.
    let bad: HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let r = hub.to_room("r").emit_with_ack::<_, Value>("count", &bad).await;
    assert!(matches!(r, Err(AckError::Serialize(_))), "{r:?}");
    alice.expect_no_event("count").await;
}

#[tokio::test]
async fn nobody_to_ask_and_a_leaving_recipient_end_the_wait_at_once() {
    let hub = builder().build();
    let addr = serve_hub(&hub).await;
    // Nobody in the room: an empty answer, at once, whatever the timeout.
    let started = Instant::now();
    let answers = (hub.to_room("empty").timeout(Duration::from_secs(30)))
        .emit_with_ack::<_, Value>("q", &1)
        .await
        .unwrap();
    assert!(answers.responses.is_empty() && answers.is_complete());
    assert!(started.elapsed() < Duration::from_secs(1));

    // A recipient leaving is Disconnected when it goes, not at the timeout.
    let mut dave = joined(addr, "dave", "r").await;
    let asking = tokio::spawn({
        let hub = hub.clone();
        async move {
            (hub.to_user("dave").timeout(Duration::from_secs(30)))
                .emit_with_ack::<_, Value>("q", &1)
                .await
        }
    });
    next_event(&mut dave, "q").await;
    let started = Instant::now();
    dave.close().await;
    let answers = tokio::time::timeout(WAIT, asking).await.unwrap().unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(answers.responses.len(), 1);
    assert!(matches!(answers.responses[0].result, Err(AckError::Disconnected)));
}

#[tokio::test]
async fn a_recipient_whose_queue_is_full_is_disconnected_at_once() {
    let hub = builder()
        .configure(|c| {
            c.outbound_queue = 8;
            c.slow_consumer = tower_realtime::SlowConsumerPolicy::DropMessage;
        })
        .build();
    let addr = serve_hub(&hub).await;
    let _slow = joined(addr, "slow", "r").await; // never reads from here on
    let pad = "p".repeat(64 * 1024);
    let mut sent = 0;
    while hub.to_user("slow").emit("tick", &pad) == 1 {
        sent += 1;
        assert!(sent < 2_000, "the queue never filled");
        tokio::task::yield_now().await;
    }
    let started = Instant::now();
    let answers = (hub.to_user("slow").timeout(Duration::from_secs(30)))
        .emit_with_ack::<_, Value>("q", &1)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(answers.responses.len(), 1);
    assert!(matches!(answers.responses[0].result, Err(AckError::Disconnected)));
    assert_eq!(hub.connection_count(), 1, "dropping the message, the connection stays");
}

#[tokio::test]
async fn a_broadcast_and_a_connections_own_ack_ids_never_meet() {
    let hub = builder().build();
    let addr = serve_hub(&hub).await;
    let mut alice = joined(addr, "alice", "r").await;
    let socket = hub.socket(id_of(&hub, "alice")).unwrap();
    let own = tokio::spawn(async move {
        socket
            .emit_with_ack::<_, Value>("own", &1, Duration::from_secs(5))
            .await
    });
    let own_frame = next_event(&mut alice, "own").await;
    let broadcast = tokio::spawn({
        let hub = hub.clone();
        async move { hub.timeout(WAIT).emit_with_ack::<_, Value>("all", &2).await }
    });
    let all_frame = next_event(&mut alice, "all").await;
    assert_ne!(own_frame["id"], all_frame["id"]);
    // Answered in the other order: each answer reaches its own emit.
    for (frame, data) in [(&all_frame, "to all"), (&own_frame, "to own")] {
        alice
            .send_raw(&json!({ "ack": frame["id"], "data": data }).to_string())
            .await;
    }
    assert_eq!(own.await.unwrap().unwrap(), json!("to own"));
    let answers = broadcast.await.unwrap().unwrap();
    assert_eq!(
        answers.answers().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        vec![json!("to all")]
    );
}

/// Socket.IO clients in the same room: they answer with an ACK packet (several arguments
/// arrive as an array), and see the same ack id as the native clients.
#[cfg(feature = "socketio")]
#[tokio::test]
async fn socketio_clients_answer_with_ack_packets() {
    use common::socketio::Polling;
    use tower_realtime::socketio::SocketIoConfig;

    let hub = builder().socketio(SocketIoConfig::default()).build();
    let addr = serve_hub(&hub).await;
    let mut alice = joined(addr, "alice", "r").await;
    let mut sios = Vec::new();
    for user in ["bob", "carol"] {
        let (s, _) = Polling::open(addr).await;
        s.post(&format!("40{}", json!({ "token": token(user) }))).await;
        s.until(|p| p.starts_with("40")).await;
        s.post(r#"421["join","r"]"#).await;
        assert_eq!(s.until(|p| p.starts_with("431")).await, r#"431["r"]"#);
        sios.push(s);
    }
    let asking = tokio::spawn({
        let hub = hub.clone();
        async move {
            hub.to_room("r")
                .timeout(Duration::from_millis(800))
                .emit_with_ack::<_, Value>("question", &json!("ready?"))
                .await
        }
    });
    let frame = answer(&mut alice, "question", json!("native yes")).await;
    let id = frame["id"].as_u64().unwrap();
    for s in &sios {
        let packet = s.until(|p| p.starts_with("42")).await;
        assert_eq!(packet, format!(r#"42{id}["question","ready?"]"#));
    }
    // Bob answers with two arguments; carol stays silent.
    sios[0].post(&format!(r#"43{id}["sio yes",2]"#)).await;
    let answers = by_connection(asking.await.unwrap().unwrap());
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[&id_of(&hub, "alice")], Ok(json!("native yes")));
    assert_eq!(answers[&id_of(&hub, "bob")], Ok(json!(["sio yes", 2])));
    assert_eq!(answers[&id_of(&hub, "carol")], Err("Timeout".to_owned()));
}

/// A room spanning two nodes (Redis): every answer comes back to the emitting node, a silent
/// remote recipient is a timeout, and the wait stays within the timeout and the query timeout.
#[cfg(feature = "redis")]
#[tokio::test]
async fn answers_come_back_from_every_node() {
    use tower_realtime::adapter::{RedisAdapter, RedisOptions};

    let Some(url) = redis_url("emit_with_ack across two nodes") else {
        return;
    };
    let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos();
    let prefix = format!("test-acks-{nanos}");
    let mut hubs = Vec::new();
    for _ in 0..2 {
        let mut options = RedisOptions::default();
        options.prefix = prefix.clone();
        let (adapter, inbound) = RedisAdapter::connect(&url, options).await.unwrap();
        let hub = builder().cluster(adapter, inbound).build();
        let addr = serve_hub(&hub).await;
        hubs.push((hub, addr));
    }
    let (a, b) = (&hubs[0], &hubs[1]);
    let mut alice = joined(a.1, "alice", "r").await;
    let mut bob = joined(b.1, "bob", "r").await;
    let mut carol = joined(b.1, "carol", "r").await;
    let mut erin = joined(b.1, "erin", "elsewhere").await;

    let started = Instant::now();
    let asking = tokio::spawn({
        let hub = a.0.clone();
        async move {
            hub.to_room("r")
                .timeout(Duration::from_millis(700))
                .emit_with_ack::<_, Value>("question", &json!("ready?"))
                .await
        }
    });
    answer(&mut alice, "question", json!("from a")).await;
    answer(&mut bob, "question", json!("from b")).await;
    next_event(&mut carol, "question").await;
    erin.expect_no_event("question").await;
    let answers = by_connection(asking.await.unwrap().unwrap());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(700), "carol is waited for: {waited:?}");
    assert!(
        waited < Duration::from_millis(700) + Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(answers[&id_of(&a.0, "alice")], Ok(json!("from a")));
    assert_eq!(answers[&id_of(&b.0, "bob")], Ok(json!("from b")));
    assert_eq!(answers[&id_of(&b.0, "carol")], Err("Timeout".to_owned()));

    // From node B, to a user on node A only: B's answer comes back complete.
    let asking = tokio::spawn({
        let hub = b.0.clone();
        async move {
            hub.to_user("alice")
                .timeout(Duration::from_secs(5))
                .emit_with_ack::<_, u32>("count", &1)
                .await
        }
    });
    answer(&mut alice, "count", json!(7)).await;
    let answers = asking.await.unwrap().unwrap();
    assert!(answers.is_complete());
    assert_eq!(answers.answers().collect::<Vec<_>>(), vec![(id_of(&a.0, "alice"), &7)]);

    // A node that never replies (its hub does not read what it is sent) is named as missing,
    // once the timeout and the query timeout have passed; the answers of the others are there.
    let mut options = RedisOptions::default();
    options.prefix = prefix.clone();
    let (silent, _unread) = RedisAdapter::connect(&url, options).await.unwrap();
    let started = Instant::now();
    let asking = tokio::spawn({
        let hub = b.0.clone();
        async move {
            hub.to_user("alice")
                .timeout(Duration::from_millis(300))
                .emit_with_ack::<_, u32>("count", &2)
                .await
        }
    });
    answer(&mut alice, "count", json!(8)).await;
    let answers = asking.await.unwrap().unwrap();
    let waited = started.elapsed();
    assert_eq!(answers.missing_nodes, vec![silent.node_id().to_owned()]);
    assert!(!answers.is_complete());
    assert_eq!(answers.answers().collect::<Vec<_>>(), vec![(id_of(&a.0, "alice"), &8)]);
    assert!(
        waited >= Duration::from_millis(1300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}
