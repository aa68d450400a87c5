//! Richer emits over real sockets: several targets with rooms and users left out (native and
//! Socket.IO clients, each recipient once), volatile emits dropped for a busy connection,
//! coalesced emits where only the latest value per key is sent; on one node, in a history
//! replay, and across nodes through Redis.
#![cfg(feature = "socketio")]

mod common;

use std::net::SocketAddr;

use common::{recovery::Position, socketio::Polling, *};
use serde_json::{json, Value};
use tower_realtime::{socketio::SocketIoConfig, Data, Emitter, ErrorEvent, Hub, HubBuilder, JwtAuth, Socket};

fn builder() -> HubBuilder {
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .socketio(SocketIoConfig::default())
        .on("join", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!(room))
        })
        .on("shout", |s: Socket| async move {
            s.broadcast().except_room("muted").emit("shout", &json!(s.user_id()));
        })
        .on("burst", |s: Socket| async move {
            // One handler run: the connection's writer cannot drain the queue in between.
            let first = s.emit("first", &0);
            let dropped = s.volatile().emit("volatile", &1);
            let coalesced = [("k1", "v1"), ("k1", "v2"), ("k2", "x"), ("k1", "v3")]
                .map(|(key, value)| s.coalesce(key).emit("value", &value));
            json!({ "first": first, "volatile": dropped, "coalesced": coalesced })
        })
}

/// A Socket.IO client on long-polling, connected as `user`, in `rooms`. No request is left
/// waiting: until its next poll, whatever is emitted to it stays queued.
async fn polling(addr: SocketAddr, user: &str, rooms: &[&str]) -> Polling {
    let (s, _) = Polling::open(addr).await;
    s.post(&format!("40{}", json!({ "token": token(user) }))).await;
    s.until(|p| p.starts_with("40")).await;
    for (i, room) in rooms.iter().enumerate() {
        s.post(&format!("42{i}[\"join\",\"{room}\"]")).await;
        s.until(|p| p.starts_with(&format!("43{i}"))).await;
    }
    s
}

/// A native client connected as `user`, in `rooms`.
async fn native(addr: SocketAddr, user: &str, rooms: &[&str]) -> Client {
    let mut c = connect(addr, user).await;
    for room in rooms {
        assert_eq!(c.call("join", json!(room)).await["data"], json!(room));
    }
    c
}

/// The events a native client gets until `end`, by name and data.
async fn native_until_end(c: &mut Client) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    loop {
        let frame = c.next_frame().await;
        let Some(event) = frame["event"].as_str() else { continue };
        if event == "end" {
            return got;
        }
        got.push((event.to_owned(), frame["data"].clone()));
    }
}

/// The Socket.IO events a polling client gets until `end`.
async fn polling_until_end(s: &Polling) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let packet = s.until(|p| p.starts_with("42")).await;
        if packet.starts_with(r#"42["end""#) {
            return got;
        }
        got.push(packet);
    }
}

#[tokio::test]
async fn several_targets_less_rooms_and_users_reach_each_recipient_once() {
    let hub = builder().build();
    let addr = serve_hub(&hub).await;
    // In a and b: once. In c, or user 42: never. Only in d: not a target.
    let mut both = native(addr, "u1", &["a", "b"]).await;
    let mut in_c = native(addr, "u2", &["a", "c"]).await;
    let mut of_42 = native(addr, "42", &["b"]).await;
    let mut elsewhere = native(addr, "u4", &["d"]).await;
    let sio_both = polling(addr, "s1", &["a", "b"]).await;
    let sio_in_c = polling(addr, "s2", &["b", "c"]).await;
    let sio_of_42 = polling(addr, "42", &["a"]).await;

    let reached = hub
        .to_room("a")
        .to_room("b")
        .except_room("c")
        .except_user("42")
        .emit("news", &json!({ "n": 1 }));
    assert_eq!(reached, 2, "u1 and s1");
    // The same with a user target added, and the lists of rooms: u4 is added, still once each.
    let reached = hub
        .to_rooms(["a", "b"])
        .to_user("u4")
        .to_user("u1")
        .except_room("c")
        .except_room("nowhere")
        .except_user("42")
        .emit("news", &json!({ "n": 2 }));
    assert_eq!(reached, 3, "u1, s1 and u4");
    assert_eq!(hub.emit("end", &()), 7);

    let news = |n: u32| ("news".to_owned(), json!({ "n": n }));
    assert_eq!(native_until_end(&mut both).await, [news(1), news(2)]);
    assert_eq!(native_until_end(&mut elsewhere).await, [news(2)]);
    assert_eq!(native_until_end(&mut in_c).await, []);
    assert_eq!(native_until_end(&mut of_42).await, []);
    assert_eq!(
        polling_until_end(&sio_both).await,
        [r#"42["news",{"n":1}]"#, r#"42["news",{"n":2}]"#]
    );
    assert!(polling_until_end(&sio_in_c).await.is_empty());
    assert!(polling_until_end(&sio_of_42).await.is_empty());

    // A broadcast from a handler leaves out the sender and the members of `muted`.
    let mut muted = native(addr, "u5", &["muted"]).await;
    both.call("shout", json!(null)).await;
    assert_eq!(hub.emit("end", &()), 8);
    assert_eq!(native_until_end(&mut both).await, []);
    assert_eq!(native_until_end(&mut muted).await, []);
    assert_eq!(
        native_until_end(&mut elsewhere).await,
        [("shout".to_owned(), json!("u1"))]
    );
    assert_eq!(polling_until_end(&sio_in_c).await, [r#"42["shout","u1"]"#]);
}

#[tokio::test]
async fn a_volatile_emit_skips_a_busy_connection_and_counts_it() {
    let hub = builder().build();
    let addr = serve_hub(&hub).await;
    let mut control = native(addr, "control", &["r"]).await;
    // Long-polling with no request waiting: the connection cannot be written to now.
    let sio = polling(addr, "sio", &["r"]).await;

    assert_eq!(hub.to_room("r").volatile().emit("tick", &1), 1, "the control only");
    assert_eq!(hub.counters().volatile_dropped, 1);
    assert_eq!(control.expect_event("tick").await, json!(1));

    // Something queued for it (no request waiting either): dropped again, not queued. The
    // control has written what it had: idle, it gets it.
    assert_eq!(hub.to_room("r").emit("plain", &2), 2);
    assert_eq!(control.expect_event("plain").await, json!(2));
    assert_eq!(hub.to_room("r").volatile().emit("tick", &3), 1);
    assert_eq!(hub.counters().volatile_dropped, 2);
    assert_eq!(control.expect_event("tick").await, json!(3));

    // What the Socket.IO client gets: the plain emit only, nothing for the dropped ones.
    let (status, body) = sio.get().await;
    assert_eq!((status, body.as_str()), (200, r#"42["plain",2]"#));
    assert_eq!(hub.counters().messages_out, 4, "queued: tick, plain, plain, tick");

    // Once it has a request waiting (and nothing queued), it gets one.
    let waiting = tokio::spawn(async move { sio.get().await });
    let mut n = 10;
    assert!(
        eventually(|| {
            n += 1;
            hub.to_user("sio").volatile().emit("tick", &n) == 1
        })
        .await
    );
    let (status, body) = waiting.await.unwrap();
    assert_eq!((status, body), (200, format!(r#"42["tick",{n}]"#)));
}

#[tokio::test]
async fn coalesced_emits_keep_the_latest_value_per_key_in_the_place_of_the_first() {
    let hub = builder().build();
    let addr = serve_hub(&hub).await;
    let sio = polling(addr, "sio", &[]).await;
    let to_sio = || hub.to_user("sio");
    // Nothing is written until the client polls: the queue holds them all.
    to_sio().emit("plain", &0);
    for (key, value) in [("k1", "v1"), ("k1", "v2"), ("k2", "x"), ("k1", "v3")] {
        assert_eq!(to_sio().coalesce(key).emit("value", &value), 1);
    }
    to_sio().emit("plain", &1);
    assert_eq!(hub.counters().coalesced_replaced, 2);
    let (status, body) = sio.get().await;
    assert_eq!(status, 200);
    assert_eq!(
        body.split('\u{1e}').collect::<Vec<_>>(),
        [
            r#"42["plain",0]"#,
            r#"42["value","v3"]"#,
            r#"42["value","x"]"#,
            r#"42["plain",1]"#
        ]
    );
    // Written already: the next value with the key is queued as usual.
    to_sio().coalesce("k1").emit("value", &"v4");
    assert_eq!(sio.until(|p| p.starts_with("42")).await, r#"42["value","v4"]"#);
    assert_eq!(hub.counters().coalesced_replaced, 2);
}

#[tokio::test]
async fn coalesce_keys_are_per_namespace_on_a_shared_socketio_session() {
    let hub = builder().namespace("/admin", |ns| ns).build();
    let addr = serve_hub(&hub).await;
    let sio = polling(addr, "sio", &[]).await;
    sio.post(&format!("40/admin,{}", json!({ "token": token("sio") })))
        .await;
    sio.until(|p| p.starts_with("40/admin,")).await;
    let admin = hub.of("/admin").unwrap();
    for n in 0..2 {
        hub.to_user("sio").coalesce("k").emit("v", &n);
        admin.to_user("sio").coalesce("k").emit("v", &n);
    }
    assert_eq!(hub.counters().coalesced_replaced, 2);
    let (_, body) = sio.get().await;
    assert_eq!(body, "42[\"v\",1]\u{1e}42/admin,[\"v\",1]");
}

#[tokio::test]
async fn a_socket_emits_to_itself_volatile_and_coalesced() {
    let hub = builder().build();
    let addr = serve_hub(&hub).await;
    let mut c = native(addr, "u1", &[]).await;
    let answer = c.call("burst", json!(null)).await;
    assert_eq!(
        answer["data"],
        json!({ "first": true, "volatile": 0, "coalesced": [1, 1, 1, 1] }),
        "reached: the volatile one nobody, each coalesced one the connection"
    );
    assert_eq!(c.expect_event("first").await, json!(0));
    assert_eq!(c.next_frame().await["data"], json!("v3"));
    assert_eq!(c.next_frame().await["data"], json!("x"));
    c.expect_no_event("value").await;
    c.expect_no_event("volatile").await;
    let counters = hub.counters();
    assert_eq!((counters.volatile_dropped, counters.coalesced_replaced), (1, 2));

    // The same handler for a Socket.IO client.
    let sio = polling(addr, "s1", &[]).await;
    sio.post(r#"420["burst"]"#).await;
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(sio.until(|p| p.starts_with("42") || p.starts_with("430")).await);
    }
    assert_eq!(
        got,
        [
            r#"42["first",0]"#,
            r#"42["value","v3"]"#,
            r#"42["value","x"]"#,
            r#"430[{"coalesced":[1,1,1,1],"first":true,"volatile":0}]"#
        ]
    );
}

/// Users, each with their rooms, that connect to `addr` with a recovery session, then drop:
/// each user with where they were.
async fn dropped(addr: SocketAddr, users: &[(&'static str, &[&str])]) -> Vec<(&'static str, Position)> {
    let mut positions = Vec::new();
    for (user, rooms) in users {
        let mut c = connect_with(addr, user, "recover=1").await;
        let (_, position) = common::recovery::session(&mut c).await;
        for room in *rooms {
            assert_eq!(c.call("join", json!(room)).await["data"], json!(room));
        }
        drop(c);
        positions.push((*user, position));
    }
    positions
}

/// To room `r`: `missed` 1, leaving out room `c` and user 42, then `missed` 2 to all of it.
fn emit_missed(hub: &Hub) {
    hub.to_room("r")
        .except_room("c")
        .except_user("42")
        .emit("missed", &json!(1));
    hub.to_room("r").emit("missed", &json!(2));
}

/// Each user comes back to `addr` from where they were, and gets the `missed` events replayed
/// up to the one whose data is 2.
async fn replayed(addr: SocketAddr, positions: Vec<(&'static str, Position)>) -> Vec<(&'static str, Vec<Value>)> {
    let mut replayed = Vec::new();
    for (user, position) in positions {
        let mut c = connect_with(addr, user, &position.query()).await;
        let (news, _) = common::recovery::session(&mut c).await;
        assert_eq!(news["recovered"], true, "{news}");
        let mut got = Vec::new();
        while got.last() != Some(&json!(2)) {
            got.push(c.expect_event("missed").await);
        }
        replayed.push((user, got));
    }
    replayed
}

#[tokio::test]
async fn a_history_replay_leaves_out_the_rooms_and_users_the_emit_left_out() {
    let hub = builder().history(tower_realtime::History::new().rooms("*")).build();
    let addr = serve_hub(&hub).await;
    let mut watcher = native(addr, "watcher", &["r"]).await;
    let positions = dropped(addr, &[("u1", &["r"]), ("42", &["r"]), ("u3", &["r", "c"])]).await;
    assert!(eventually(|| hub.connection_count() == 1).await);
    emit_missed(&hub);
    assert_eq!(watcher.expect_event("missed").await, json!(1));

    assert_eq!(
        replayed(addr, positions).await,
        [
            ("u1", vec![json!(1), json!(2)]),
            ("42", vec![json!(2)]),
            ("u3", vec![json!(2)])
        ]
    );
}

#[cfg(feature = "redis")]
mod cluster {
    use tower_realtime::adapter::{RedisAdapter, RedisOptions};

    use super::*;

    async fn node(prefix: &str) -> Option<(Hub, SocketAddr)> {
        node_with(prefix, builder()).await
    }

    async fn node_with(prefix: &str, builder: HubBuilder) -> Option<(Hub, SocketAddr)> {
        let url = redis_url("emit options across nodes")?;
        let mut options = RedisOptions::default();
        options.prefix = prefix.to_owned();
        let (adapter, inbound) = RedisAdapter::connect(&url, options).await.expect("Redis answers");
        let hub = builder.cluster(adapter, inbound).build();
        let addr = serve_hub(&hub).await;
        Some((hub, addr))
    }

    #[tokio::test]
    async fn a_remote_node_leaves_out_rooms_and_users_and_applies_volatile_and_coalesce() {
        let prefix = format!("test-emit-options-{}", now_nanos());
        let (Some((a, a_addr)), Some((b, b_addr))) = (node(&prefix).await, node(&prefix).await) else {
            return;
        };
        let mut on_a = native(a_addr, "u1", &["r"]).await;
        let mut in_c_on_a = native(a_addr, "u2", &["r", "c"]).await;
        let mut on_b = native(b_addr, "u3", &["r"]).await;
        let mut in_c_on_b = native(b_addr, "u4", &["r", "c"]).await;
        let mut of_42_on_b = native(b_addr, "42", &["r"]).await;
        let sio_on_b = polling(b_addr, "s1", &["r"]).await;

        let reached = a
            .to_room("r")
            .except_room("c")
            .except_user("42")
            .emit("news", &json!(1));
        assert_eq!(reached, 1, "u1 on this node");
        a.emit("end", &());
        let news = ("news".to_owned(), json!(1));
        assert_eq!(native_until_end(&mut on_a).await, std::slice::from_ref(&news));
        assert_eq!(native_until_end(&mut on_b).await, [news]);
        assert_eq!(native_until_end(&mut in_c_on_a).await, []);
        assert_eq!(native_until_end(&mut in_c_on_b).await, []);
        assert_eq!(native_until_end(&mut of_42_on_b).await, []);

        // Volatile: the Socket.IO client on B has no request waiting (and two events queued),
        // so B drops it there; the idle native clients get it.
        a.to_room("r").volatile().emit("tick", &json!(2));
        a.emit("end", &());
        let tick = ("tick".to_owned(), json!(2));
        for c in [&mut on_a, &mut in_c_on_a, &mut on_b, &mut in_c_on_b, &mut of_42_on_b] {
            assert_eq!(native_until_end(c).await, std::slice::from_ref(&tick));
        }
        assert_eq!(b.counters().volatile_dropped, 1);
        assert_eq!(a.counters().volatile_dropped, 0);

        // Coalesced, for the Socket.IO client on B, which has not polled yet.
        for (key, value) in [("k1", "v1"), ("k1", "v2"), ("k2", "x"), ("k1", "v3")] {
            a.to_user("s1").coalesce(key).emit("value", &value);
        }
        a.to_user("s1").emit("end", &());
        assert!(eventually(|| b.counters().coalesced_replaced == 2).await);
        assert_eq!(polling_until_end(&sio_on_b).await, [r#"42["news",1]"#]);
        assert!(polling_until_end(&sio_on_b).await.is_empty());
        assert_eq!(
            polling_until_end(&sio_on_b).await,
            [r#"42["value","v3"]"#, r#"42["value","x"]"#]
        );
    }

    #[tokio::test]
    async fn a_kept_emit_leaves_out_rooms_and_users_live_and_in_a_replay_on_any_node() {
        let prefix = format!("test-emit-options-history-{}", now_nanos());
        let kept = || builder().history(tower_realtime::History::new().rooms("*"));
        let (Some((a, a_addr)), Some((b, b_addr))) =
            (node_with(&prefix, kept()).await, node_with(&prefix, kept()).await)
        else {
            return;
        };
        let mut live = native(b_addr, "u1", &["r", "sync"]).await;
        let mut live_in_c = native(b_addr, "u2", &["r", "c"]).await;
        // Clients that drop from B, each with a session kept in Redis.
        let positions = dropped(b_addr, &[("u3", &["r"]), ("42", &["r"]), ("u4", &["r", "c"])]).await;
        assert!(eventually(|| b.connection_count() == 2).await);
        // B keeps the sessions in Redis without waiting, through its one queue to Redis: once
        // an emit of B's made after them is back, they are there.
        b.to_room("sync").emit("sync", &());
        live.expect_event("sync").await;

        emit_missed(&a);
        assert_eq!(live.expect_event("missed").await, json!(1));
        assert_eq!(live.expect_event("missed").await, json!(2));
        assert_eq!(live_in_c.expect_event("missed").await, json!(2), "not 1");

        // Each recovers on A, from Redis's history.
        assert_eq!(
            replayed(a_addr, positions).await,
            [
                ("u3", vec![json!(1), json!(2)]),
                ("42", vec![json!(2)]),
                ("u4", vec![json!(2)])
            ]
        );
    }

    fn now_nanos() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }
}
