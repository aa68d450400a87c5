//! Missed-message recovery over the native protocol, over real sockets: a client drops, events
//! are emitted while it is away, it comes back with its session and position.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{recovery::*, *};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
use tower_realtime::{Data, Emitter, ErrorEvent, History, Hub, JwtAuth, Socket};

fn test_hub(history: History) -> Hub {
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .history(history)
        .on("join", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!({ "joined": room }))
        })
        .on("say", |s: Socket, Data(m): Data<Value>| async move {
            let room = m["room"].as_str().unwrap_or_default().to_owned();
            s.to(&room).emit("said", &m["text"]);
        })
        .on("whoami", |s: Socket| async move { json!({ "rooms": s.rooms() }) })
        .build()
}

/// Drops the TCP connection without a close frame (what a network drop looks like).
fn drop_hard(client: Client) {
    drop(client);
}

/// Connects `user` with a session, joins `room`, receives one event there, and drops: what
/// the client remembers to come back.
async fn gone_from(hub: &Hub, addr: SocketAddr, user: &str, room: &str) -> Position {
    let mut client = connect_with(addr, user, "recover=1").await;
    let (_, mut pos) = session(&mut client).await;
    client.call("join", json!(room)).await;
    hub.to_room(room).emit("said", &json!(0));
    pos.saw(&client.next_frame().await);
    drop_hard(client);
    assert!(eventually(|| hub.connection_count() == 0).await);
    pos
}

#[tokio::test]
async fn a_dropped_client_gets_every_missed_event_once_in_order_then_live_ones() {
    let hub = test_hub(History::new().rooms("*"));
    let addr = serve_hub(&hub).await;
    let mut alice = connect_with(addr, "alice", "recover=1").await;
    let (news, mut pos) = session(&mut alice).await;
    assert_eq!(news["recovered"], false);
    assert_eq!(
        alice.call("join", json!("general")).await["data"],
        json!({ "joined": "general" })
    );
    assert_eq!(
        alice.call("join", json!("random")).await["data"],
        json!({ "joined": "random" })
    );
    for i in 0..3 {
        hub.to_room("general").emit("said", &json!(i));
        let frame = alice.next_frame().await;
        assert_eq!(frame["data"], json!(i));
        pos.saw(&frame);
    }

    drop_hard(alice);
    assert!(eventually(|| hub.connection_count() == 0).await);
    // While away: events to both rooms, and one to a room alice is not in.
    for i in 3..8 {
        let room = if i % 2 == 0 { "general" } else { "random" };
        hub.to_room(room).emit("said", &json!(i));
    }
    hub.to_room("elsewhere").emit("said", &json!("not for alice"));

    let mut alice = connect_with(addr, "alice", &pos.query()).await;
    let (news, _) = session(&mut alice).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["missed"], 5);
    assert_eq!(
        news["session"].as_str(),
        Some(pos.session.as_str()),
        "the session is kept"
    );
    let mut rooms: Vec<String> = serde_json::from_value(news["rooms"].clone()).unwrap();
    rooms.sort();
    assert_eq!(rooms, ["general", "random"]);
    for i in 3..8 {
        let frame = alice.next_frame().await;
        assert_eq!(frame["event"], "said");
        assert_eq!(frame["data"], json!(i), "missed events in order");
        pos.saw(&frame);
    }
    // The rooms are back: live delivery goes on after the replay, with nothing repeated.
    hub.to_room("random").emit("said", &json!("live"));
    let frame = alice.next_frame().await;
    assert_eq!(frame["data"], "live");
    pos.saw(&frame);
    assert_eq!(
        alice.call("whoami", json!(null)).await["data"]["rooms"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    alice.expect_no_event("said").await;
    assert_eq!(hub.counters().recovered, 1);
}

#[tokio::test]
async fn events_emitted_during_the_replay_come_after_it_without_gap_or_duplicate() {
    let hub = test_hub(History::new().rooms("*").max_events(10_000));
    let addr = serve_hub(&hub).await;
    let mut pos = gone_from(&hub, addr, "alice", "general").await;
    for i in 1..=2000 {
        hub.to_room("general").emit("said", &json!(i));
    }
    // A producer keeps emitting while the client comes back.
    let producer = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for i in 2001..=3000 {
                hub.to_room("general").emit("said", &json!(i));
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let mut alice = connect_with(addr, "alice", &pos.query()).await;
    let (news, _) = session(&mut alice).await;
    assert_eq!(news["recovered"], true, "{news}");
    producer.await.unwrap();
    for i in 1..=3000 {
        let frame = alice.next_frame().await;
        assert_eq!(frame["data"], json!(i), "event {i}: {frame}");
        pos.saw(&frame);
    }
    alice.expect_no_event("said").await;
}

#[tokio::test]
async fn after_the_window_the_client_is_told_it_did_not_recover() {
    // Evicted: more events than the stream keeps.
    let hub = test_hub(History::new().rooms("*").max_events(3));
    let addr = serve_hub(&hub).await;
    let pos = gone_from(&hub, addr, "alice", "general").await;
    for i in 1..=5 {
        hub.to_room("general").emit("said", &json!(i));
    }
    let mut alice = connect_with(addr, "alice", &pos.query()).await;
    let (news, fresh) = session(&mut alice).await;
    assert_eq!(news["recovered"], false);
    assert_eq!(news["reason"], "missed events were evicted");
    assert_ne!(fresh.session, pos.session, "a new session");
    // Nothing restored, nothing replayed: the app resynchronises.
    assert_eq!(alice.call("whoami", json!(null)).await["data"]["rooms"], json!([]));
    alice.expect_no_event("said").await;
    assert!(hub.counters().history_evicted >= 3);

    // Expired: the session outlived its TTL.
    let hub2 = test_hub(History::new().rooms("*").session_ttl(Duration::from_millis(100)));
    let addr = serve_hub(&hub2).await;
    let pos = gone_from(&hub2, addr, "bob", "general").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bob = connect_with(addr, "bob", &pos.query()).await;
    let (news, _) = session(&mut bob).await;
    assert_eq!(news["recovered"], false);
    assert_eq!(news["reason"], "unknown or expired session");
    assert_eq!(hub2.counters().not_recovered, 1);
}

#[tokio::test]
async fn a_new_epoch_after_a_restart_is_reported() {
    let first = test_hub(History::new().rooms("*"));
    let addr = serve_hub(&first).await;
    let pos = gone_from(&first, addr, "alice", "general").await;
    // The server restarts: the client comes back to a new process (a new hub, behind the
    // same load balancer; here at another port).
    let second = test_hub(History::new().rooms("*"));
    let addr = serve_hub(&second).await;
    let mut alice = connect_with(addr, "alice", &pos.query()).await;
    let (news, fresh) = session(&mut alice).await;
    assert_eq!(news["recovered"], false);
    assert_eq!(news["reason"], "history was lost (epoch changed)");
    assert_ne!(fresh.epoch, pos.epoch);
}

#[tokio::test]
async fn a_session_id_presented_by_another_user_is_unknown_and_stays_with_its_owner() {
    let hub = test_hub(History::new().rooms("*"));
    let addr = serve_hub(&hub).await;
    let pos = gone_from(&hub, addr, "alice", "general").await;
    hub.to_room("general").emit("said", &json!("missed"));
    // Mallory got hold of alice's session id (from an access log, say).
    let mut mallory = connect_with(addr, "mallory", &pos.query()).await;
    let (news, _) = session(&mut mallory).await;
    assert_eq!(news["recovered"], false);
    assert_eq!(news["reason"], "unknown or expired session");
    assert_eq!(mallory.call("whoami", json!(null)).await["data"]["rooms"], json!([]));
    mallory.expect_no_event("said").await;
    // Told what a made-up id is told: ids cannot be probed.
    let mut made_up = pos.clone();
    made_up.session = "0123456789abcdef0123456789abcdef".to_owned();
    let mut probe = connect_with(addr, "mallory", &made_up.query()).await;
    let (told, _) = session(&mut probe).await;
    assert_eq!(
        (&told["recovered"], &told["reason"]),
        (&news["recovered"], &news["reason"])
    );
    // The owner still has it: she recovers, with what she missed.
    let mut alice = connect_with(addr, "alice", &pos.query()).await;
    let (news, _) = session(&mut alice).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["rooms"], json!(["general"]));
    assert_eq!(alice.next_frame().await["data"], "missed");
    alice.expect_no_event("said").await;
    assert_eq!((hub.counters().recovered, hub.counters().not_recovered), (1, 2));
}

#[tokio::test]
async fn a_client_that_says_goodbye_leaves_no_session_and_plain_clients_see_no_session_event() {
    let hub = test_hub(History::new().rooms("*"));
    let addr = serve_hub(&hub).await;
    let mut alice = connect_with(addr, "alice", "recover=1").await;
    let (_, pos) = session(&mut alice).await;
    alice.ws.send(Message::Close(None)).await.unwrap();
    alice.close().await;
    assert!(eventually(|| hub.connection_count() == 0).await);
    let mut alice = connect_with(addr, "alice", &pos.query()).await;
    assert_eq!(session(&mut alice).await.0["reason"], "unknown or expired session");

    // A client that does not ask gets no `$session` event, and history frames carry an offset
    // it may ignore.
    let mut plain = connect(addr, "plain").await;
    plain.call("join", json!("general")).await;
    hub.to_room("general").emit("said", &json!("hi"));
    let frame = plain.next_frame().await;
    assert_eq!(frame["event"], "said");
    assert!(frame["offset"].is_u64());
}

#[tokio::test]
async fn a_hub_without_history_says_so_and_a_bad_offset_is_refused() {
    let hub = Hub::builder().auth(JwtAuth::hs256(SECRET)).build();
    let addr = serve_hub(&hub).await;
    let mut alice = connect_with(addr, "alice", "session=abc&epoch=x&offset=3").await;
    let news = alice.expect_event("$session").await;
    assert_eq!(
        news,
        json!({ "session": null, "epoch": null, "recovered": false, "reason": "history is not enabled" })
    );

    let mut req = format!("ws://{addr}/ws?session=abc&offset=minus-one")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {}", token("alice")).parse().unwrap());
    let (status, body) = handshake_status(req).await;
    assert_eq!(status, 400);
    assert_eq!(body.as_deref(), Some("the `offset` query parameter must be a number"));
}

#[tokio::test]
async fn a_client_back_before_its_old_connection_is_seen_gone_takes_the_session_over() {
    let hub = test_hub(History::new().rooms("*"));
    let addr = serve_hub(&hub).await;
    // The old connection: it stops reading (its network went away), but the server has not
    // noticed — no close, no reset.
    let mut old = connect_with(addr, "alice", "recover=1").await;
    let (_, mut pos) = session(&mut old).await;
    old.call("join", json!("general")).await;
    hub.to_room("general").emit("said", &json!(0));
    pos.saw(&old.next_frame().await);
    for i in 1..=3 {
        hub.to_room("general").emit("said", &json!(i));
    }

    let mut new = connect_with(addr, "alice", &pos.query()).await;
    let (news, _) = session(&mut new).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["session"].as_str(), Some(pos.session.as_str()));
    for i in 1..=3 {
        assert_eq!(new.next_frame().await["data"], json!(i));
    }
    hub.to_room("general").emit("said", &json!("live"));
    assert_eq!(new.next_frame().await["data"], "live");
    // The old connection was put out with 4002 (after what was already queued for it).
    let close = loop {
        match old.ws.next().await {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 4002);
    assert!(eventually(|| hub.connection_count() == 1).await);

    // Someone else cannot take a session over: bob keeps his connection.
    let mut bob = connect_with(addr, "bob", "recover=1").await;
    let (_, bobs) = session(&mut bob).await;
    let mut mallory = connect_with(addr, "mallory", &bobs.query()).await;
    assert_eq!(session(&mut mallory).await.0["reason"], "unknown or expired session");
    assert_eq!(
        bob.call("join", json!("general")).await["data"],
        json!({ "joined": "general" })
    );
}

#[tokio::test]
async fn a_forged_offset_past_the_history_is_unknown_and_does_not_stall_live_events() {
    let hub = test_hub(History::new().rooms("*"));
    let addr = serve_hub(&hub).await;
    // The control: a client that drops and comes back with the position it was given.
    let control = gone_from(&hub, addr, "bob", "general").await;
    for (i, forged) in [u64::MAX, 1_000_000].into_iter().enumerate() {
        let mut pos = gone_from(&hub, addr, "alice", "general").await;
        pos.offset = Some(forged);
        let mut alice = connect_with(addr, "alice", &pos.query()).await;
        let (news, _) = session(&mut alice).await;
        assert_eq!(news["recovered"], false, "{news}");
        assert_eq!(news["reason"], "unknown offset");
        assert_eq!(alice.call("whoami", json!(null)).await["data"]["rooms"], json!([]));
        // Live events are not held behind a recovery that never ends.
        alice.call("join", json!("general")).await;
        hub.to_room("general").emit("said", &json!(format!("live {i}")));
        assert_eq!(alice.expect_event("said").await, json!(format!("live {i}")));
        drop_hard(alice);
        assert!(eventually(|| hub.connection_count() == 0).await);
    }
    let mut bob = connect_with(addr, "bob", &control.query()).await;
    let (news, _) = session(&mut bob).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["rooms"], json!(["general"]));
    // What bob missed: alice's arrival and live event, twice.
    assert_eq!(news["missed"], 4);
    assert_eq!(bob.next_frame().await["data"], 0);
}

#[tokio::test]
async fn a_session_given_in_headers_stays_out_of_the_url() {
    let hub = test_hub(History::new().rooms("*"));
    let addr = serve_hub(&hub).await;
    let pos = gone_from(&hub, addr, "alice", "general").await;
    hub.to_room("general").emit("said", &json!("missed"));
    let request = |url: String, offset: &str| {
        let mut req = url.into_client_request().unwrap();
        let h = req.headers_mut();
        h.insert("authorization", format!("Bearer {}", token("alice")).parse().unwrap());
        h.insert("x-realtime-session", pos.session.parse().unwrap());
        h.insert("x-realtime-epoch", pos.epoch.parse().unwrap());
        h.insert("x-realtime-offset", offset.parse().unwrap());
        req
    };
    let offset = pos.offset.unwrap().to_string();
    // Given twice, or malformed: refused before anything is looked up.
    let (status, body) = handshake_status(request(format!("ws://{addr}/ws?session=x"), &offset)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body.as_deref(),
        Some("the session is given both in the query and in the `x-realtime-session` header")
    );
    let (status, body) = handshake_status(request(format!("ws://{addr}/ws"), "minus-one")).await;
    assert_eq!(status, 400);
    assert_eq!(body.as_deref(), Some("the `x-realtime-offset` header must be a number"));

    let (ws, _) = tokio_tungstenite::connect_async(request(format!("ws://{addr}/ws"), &offset))
        .await
        .unwrap();
    let mut alice = Client::new(ws);
    let (news, _) = session(&mut alice).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(alice.next_frame().await["data"], "missed");
}

/// A hub whose `private` room is for its members only (the app's records): joining asks them,
/// and so does the rejoin guard when a session comes back.
fn private_hub(members: &std::sync::Arc<parking_lot::Mutex<Vec<String>>>) -> Hub {
    let (join_members, rejoin_members) = (members.clone(), members.clone());
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .history(History::new().rooms("*"))
        .on("join", move |s: Socket, Data(room): Data<String>| {
            let member = join_members.lock().iter().any(|m| Some(m.as_str()) == s.user_id());
            async move {
                if room == "private" && !member {
                    return Err(ErrorEvent::forbidden("members only"));
                }
                s.join(&room)?;
                Ok::<_, ErrorEvent>(json!({ "joined": room }))
            }
        })
        .on("whoami", |s: Socket| async move { json!({ "rooms": s.rooms() }) })
        .guard_rejoin(move |s: Socket, room: String| {
            let member = rejoin_members.lock().iter().any(|m| Some(m.as_str()) == s.user_id());
            async move { room != "private" || member }
        })
        .build()
}

/// Alice (removed from `private` while offline) comes back with her session: neither the room
/// nor what was said there; bob, still a member, gets both back.
async fn removed_while_offline_gets_nothing_back(hub: &Hub, addr: SocketAddr, remove: impl FnOnce()) {
    let control = gone_from(hub, addr, "bob", "private").await;
    let alice = gone_from(hub, addr, "alice", "private").await;
    remove();
    hub.to_room("private").emit("said", &json!("secret"));

    let mut back = connect_with(addr, "alice", &alice.query()).await;
    let (news, _) = session(&mut back).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["rooms"], json!([]));
    assert_eq!(news["missed"], 0);
    assert_eq!(back.call("whoami", json!(null)).await["data"]["rooms"], json!([]));
    hub.to_room("private").emit("said", &json!("later"));
    back.expect_no_event("said").await;

    let mut bob = connect_with(addr, "bob", &control.query()).await;
    let (news, _) = session(&mut bob).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(news["rooms"], json!(["private"]));
    let mut said = Vec::new();
    for _ in 0..3 {
        said.push(bob.next_frame().await["data"].clone());
    }
    assert_eq!(said, [json!(0), json!("secret"), json!("later")], "all he missed");
    hub.to_room("private").emit("said", &json!("live"));
    assert_eq!(bob.expect_event("said").await, "live");
}

#[tokio::test]
async fn a_user_removed_from_a_private_room_while_offline_does_not_get_it_back_by_recovering() {
    let members = std::sync::Arc::new(parking_lot::Mutex::new(vec!["alice".to_owned(), "bob".to_owned()]));
    let hub = private_hub(&members);
    let addr = serve_hub(&hub).await;
    // The app takes alice off its member list: the rejoin guard refuses her the room.
    removed_while_offline_gets_nothing_back(&hub, addr, || members.lock().retain(|m| m != "alice")).await;
}

#[tokio::test]
async fn a_user_the_hub_takes_out_of_a_room_while_offline_does_not_get_it_back_by_recovering() {
    // No rejoin guard in the way: `leave_user` edits the sessions kept for alice.
    let hub = test_hub(History::new().rooms("*"));
    let addr = serve_hub(&hub).await;
    removed_while_offline_gets_nothing_back(&hub, addr, || {
        assert_eq!(hub.leave_user("alice", "private"), 0, "alice has no live connection");
    })
    .await;
}

#[tokio::test]
async fn a_user_disconnected_by_the_app_while_offline_cannot_resume_a_session() {
    let hub = test_hub(History::new().rooms("*"));
    let addr = serve_hub(&hub).await;
    let control = gone_from(&hub, addr, "bob", "general").await;
    let alice = gone_from(&hub, addr, "alice", "general").await;
    // A ban: the app puts alice out while she is away.
    assert_eq!(hub.disconnect_user("alice"), 0);
    hub.to_room("general").emit("said", &json!("after the ban"));
    let mut back = connect_with(addr, "alice", &alice.query()).await;
    let (news, _) = session(&mut back).await;
    assert_eq!(news["recovered"], false, "{news}");
    assert_eq!(news["reason"], "unknown or expired session");
    assert_eq!(back.call("whoami", json!(null)).await["data"]["rooms"], json!([]));
    back.expect_no_event("said").await;

    let mut bob = connect_with(addr, "bob", &control.query()).await;
    let (news, _) = session(&mut bob).await;
    assert_eq!(news["recovered"], true, "{news}");
    assert_eq!(bob.next_frame().await["data"], 0);
    assert_eq!(bob.next_frame().await["data"], "after the ban");
}
