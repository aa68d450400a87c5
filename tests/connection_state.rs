//! Per-connection state (typed values and JSON data) set in hooks and guards and read in
//! handlers, over native and Socket.IO connections, by id from the hub and across a Redis
//! cluster; acks awaited in a handler with `?`; NestJS `@nestjs/platform-ws` clients on the
//! native protocol (replies as frames of their own, the `exception` error event).

mod common;

use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower_realtime::{
    AllowAnonymous, Data, DisconnectReason, Emitter, ErrorEvent, ErrorStyle, GuardContext, Hub, HubBuilder, JwtAuth,
    Socket, SocketExt,
};

#[derive(Clone, Debug, PartialEq)]
struct Nick(String);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    lang: String,
}

/// A hub whose connect hook stores a `Nick` and a `Profile`, with handlers reading them.
fn state_hub() -> (HubBuilder, mpsc::UnboundedReceiver<(String, Option<Profile>)>) {
    let (gone_tx, gone) = mpsc::unbounded_channel();
    let builder = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on_connect(|s: Socket| async move {
            let user = s.user_id().unwrap_or("guest").to_owned();
            assert_eq!(s.insert(Nick(user.clone())), None);
            s.set_data(&Profile {
                name: user,
                lang: "en".into(),
            })
            .unwrap();
        })
        .on_disconnect(move |s: Socket, _: DisconnectReason| {
            let gone_tx = gone_tx.clone();
            async move {
                let nick = s.get::<Nick>().map(|n| n.0).unwrap_or_default();
                let _ = gone_tx.send((nick, s.data::<Profile>()));
            }
        })
        .on(
            "whoami",
            |SocketExt(Nick(nick)): SocketExt<Nick>, s: Socket| async move {
                json!({ "nick": nick, "id": s.id().as_u64(), "profile": s.data_value() })
            },
        )
        .on("rename", |s: Socket, Data(nick): Data<String>| async move {
            let old = s.insert(Nick(nick)).map(|n| n.0);
            json!(old)
        })
        .on("setLang", |s: Socket, Data(lang): Data<String>| async move {
            let mut profile: Profile = s.data().ok_or("no profile")?;
            profile.lang = lang;
            s.set_data(&profile).map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        });
    (builder, gone)
}

#[tokio::test]
async fn state_set_in_on_connect_is_read_in_handlers_hooks_and_by_id() {
    let (builder, mut gone) = state_hub();
    let hub = builder.build();
    let addr = serve_hub(&hub).await;
    let mut alice = connect(addr, "alice").await;
    let mut bob = connect(addr, "bob").await;

    let me = alice.call("whoami", Value::Null).await["data"].clone();
    assert_eq!(me["nick"], "alice");
    assert_eq!(me["profile"], json!({ "name": "alice", "lang": "en" }));
    assert_eq!(bob.call("whoami", Value::Null).await["data"]["nick"], "bob");

    // A handler changes the state; the next call sees the change, the other connection not.
    assert_eq!(alice.call("rename", json!("ally")).await["data"], "alice");
    assert_eq!(alice.call("whoami", Value::Null).await["data"]["nick"], "ally");
    assert_eq!(bob.call("whoami", Value::Null).await["data"]["nick"], "bob");

    // The JSON data, by connection id, from the hub.
    alice.call("setLang", json!("fr")).await;
    let id = hub.connections_of("alice")[0];
    assert_eq!(me["id"], id.as_u64());
    assert_eq!(hub.connection_data(id), Some(json!({ "name": "alice", "lang": "fr" })));
    let socket = hub.socket(id).unwrap();
    assert_eq!(socket.get::<Nick>(), Some(Nick("ally".into())));
    assert_eq!(
        socket.with(|n: &mut Nick| std::mem::take(&mut n.0)),
        Some("ally".to_owned())
    );
    assert_eq!(socket.with(|_: &mut Profile| ()), None, "a type never inserted");

    // The disconnect hook still reads it; then it is gone with the connection.
    alice.close().await;
    let (nick, profile) = tokio::time::timeout(WAIT, gone.recv()).await.unwrap().unwrap();
    assert_eq!(nick, "");
    assert_eq!(profile.unwrap().lang, "fr");
    assert!(eventually(|| hub.socket(id).is_none()).await);
    assert_eq!(hub.connection_data(id), None);
}

#[tokio::test]
async fn state_set_in_a_guard_is_read_in_the_handler() {
    #[derive(Clone)]
    struct Member(String);
    fn member(ctx: &GuardContext<'_>) -> Result<(), ErrorEvent> {
        let room = ctx.data().as_str().ok_or_else(|| ErrorEvent::new("a room name"))?;
        ctx.socket().insert(Member(room.to_owned()));
        Ok(())
    }
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .guard_connect(|s: &Socket| {
            s.insert(0u32);
            Ok::<_, String>(())
        })
        .on_guarded(
            "post",
            member,
            |SocketExt(Member(room)): SocketExt<Member>, s: Socket| async move {
                let n = s.with(|n: &mut u32| {
                    *n += 1;
                    *n
                });
                json!({ "room": room, "posts": n })
            },
        )
        .on(
            "unguarded",
            |SocketExt(Member(room)): SocketExt<Member>| async move { room },
        )
        .build();
    let addr = serve_hub(&hub).await;
    let mut c = connect(addr, "alice").await;
    // No guard ran for this event: the handler does not run, the client hears why in general terms.
    let refused = c.call("unguarded", Value::Null).await;
    assert_eq!(refused["event"], "error");
    assert_eq!(refused["data"]["message"], "Internal server error");
    let a = c.call("post", json!("general")).await;
    assert_eq!(a["data"], json!({ "room": "general", "posts": 1 }));
    let b = c.call("post", json!("random")).await;
    assert_eq!(b["data"], json!({ "room": "random", "posts": 2 }));
    // A refusing guard leaves the state as it was.
    assert_eq!(c.call("post", json!(5)).await["data"]["message"], "a room name");
    assert_eq!(c.call("unguarded", Value::Null).await["data"], "random");
}

#[cfg(feature = "socketio")]
#[tokio::test]
async fn socketio_sockets_have_state_too() {
    use common::socketio::Polling;
    let (builder, _gone) = state_hub();
    let hub = builder.socketio(Default::default()).build();
    let addr = serve_hub(&hub).await;
    let (s, _) = Polling::open(addr).await;
    s.post(&format!(
        "40{}\u{1e}421[\"setLang\",\"de\"]\u{1e}422[\"whoami\"]",
        json!({ "token": token("carol") })
    ))
    .await;
    s.until(|p| p.starts_with("431")).await;
    let ack = s.until(|p| p.starts_with("432")).await;
    let args: Value = serde_json::from_str(&ack[3..]).unwrap();
    assert_eq!(args[0]["nick"], "carol");
    assert_eq!(args[0]["profile"], json!({ "name": "carol", "lang": "de" }));
    let id = hub.connections_of("carol")[0];
    assert_eq!(hub.connection_data(id).unwrap()["lang"], "de");
}

/// A handler that asks its client and answers with what the client said, `?` on the ack.
async fn confirm(s: Socket, Data(ms): Data<u64>) -> Result<String, ErrorEvent> {
    let yes: bool = s.emit_with_ack("confirm", "sure?", Duration::from_millis(ms)).await?;
    Ok(if yes { "deleted" } else { "kept" }.to_owned())
}

#[tokio::test]
async fn an_ack_awaited_with_question_mark_in_a_handler() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on("delete", confirm)
        .build();
    let addr = serve_hub(&hub).await;
    let mut c = connect(addr, "alice").await;

    let id = c.emit_with_id("delete", json!(5000)).await;
    let ask = c.next_frame().await;
    assert_eq!(ask["event"], "confirm");
    c.send_raw(&json!({ "ack": ask["id"], "data": true }).to_string()).await;
    let answer = c.next_frame().await;
    assert_eq!(answer, json!({ "ack": id, "data": "deleted" }));

    // No answer: the timeout becomes the error event answering the request.
    let id = c.emit_with_id("delete", json!(50)).await;
    assert_eq!(c.next_frame().await["event"], "confirm");
    let error = c.next_frame().await;
    assert_eq!(error["ack"], id);
    assert_eq!(error["data"]["status"], "ack_timeout");
    assert_eq!(error["data"]["message"], "no ack within the timeout");
}

/// A NestJS gateway's handlers, the way the NestJS guide writes them.
pub fn nestjs_hub() -> Hub {
    Hub::builder()
        .auth(AllowAnonymous::new())
        .error_event("exception", ErrorStyle::NestJs)
        .on("joinRoom", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            s.to(&room)
                .emit("userJoined", &json!({ "userId": s.id().as_u64(), "room": room }));
            Ok::<_, ErrorEvent>(json!({ "event": "joinedRoom", "room": room }))
        })
        .on("message", |Data(text): Data<String>| async move {
            json!({ "event": "message", "data": format!("Message received: {text}") })
        })
        .on("quiet", || async { json!({ "ok": true }) })
        .on("forbidden", || async {
            Err::<(), _>(ErrorEvent::forbidden("no").with_field("code", 7))
        })
        .build()
}

#[tokio::test]
async fn a_nestjs_ws_client_gets_replies_as_frames_and_exception_events() {
    let hub = nestjs_hub();
    let addr = serve_hub(&hub).await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let mut c = Client::new(ws);

    // No id: the returned object is the frame, as it is.
    c.send_raw(r#"{"event":"joinRoom","data":"general"}"#).await;
    assert_eq!(
        c.next_frame().await,
        json!({ "event": "joinedRoom", "room": "general" })
    );
    c.emit("message", json!("hi")).await;
    assert_eq!(
        c.next_frame().await,
        json!({ "event": "message", "data": "Message received: hi" })
    );
    // A reply without `event`, to a message without id, is not sent; the next reply is.
    c.emit("quiet", Value::Null).await;
    c.emit("message", json!("after")).await;
    assert_eq!(c.next_frame().await["data"], "Message received: after");
    // With an id, the ack form as before.
    let id = c.emit_with_id("joinRoom", json!("random")).await;
    assert_eq!(
        c.next_frame().await,
        json!({ "ack": id, "data": { "event": "joinedRoom", "room": "random" } })
    );

    // Errors: NestJS's event name and body; the extra fields and status are left out.
    c.emit("forbidden", Value::Null).await;
    assert_eq!(
        c.next_frame().await,
        json!({ "event": "exception", "data": { "status": "error", "message": "no" } })
    );
    c.send_raw(r#"{"event":"nope"}"#).await;
    assert_eq!(
        c.next_frame().await,
        json!({ "event": "exception", "data": { "status": "error", "message": "unknown event: nope" } })
    );
    c.send_raw("not json").await;
    assert_eq!(c.next_frame().await["event"], "exception");
    let id = c.emit_with_id("forbidden", Value::Null).await;
    assert_eq!(
        c.next_frame().await,
        json!({ "event": "exception", "data": { "status": "error", "message": "no" }, "ack": id })
    );
}

#[tokio::test]
async fn a_nestjs_ws_client_in_node() {
    if !node_enabled("the NestJS ws client test") {
        return;
    }
    let hub = nestjs_hub();
    let addr = serve_hub(&hub).await;
    let out = run_node("nestjs-ws.test.mjs", vec![("URL", format!("ws://{addr}/ws"))]).await;
    assert!(out.contains("pass 1") && out.contains("fail 0"), "{out}");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn connection_data_is_readable_from_another_node() {
    use tower_realtime::adapter::{RedisAdapter, RedisOptions};
    let Some(url) = redis_url("the cluster connection data test") else {
        return;
    };
    let prefix = format!("test-conn-data-{}", now());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut options = RedisOptions::default();
        options.prefix = prefix.clone();
        options.heartbeat = Duration::from_millis(200);
        options.node_timeout = Duration::from_millis(800);
        let (adapter, inbound) = RedisAdapter::connect(&url, options).await.unwrap();
        nodes.push(state_hub().0.cluster(adapter, inbound).build());
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut alice = connect(serve_hub(b).await, "alice").await;
    alice.call("setLang", json!("it")).await;
    let id = b.connections_of("alice")[0];
    let expected = json!({ "name": "alice", "lang": "it" });
    // Node A learns of node B by its heartbeat; then A's query reaches it.
    let mut found = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while found.is_none() && tokio::time::Instant::now() < deadline {
        found = a.cluster_connection_data(id).await.value;
        if found.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(found, Some(expected.clone()));
    assert_eq!(a.connection_data(id), None, "not a connection of node A");
    let local = b.cluster_connection_data(id).await;
    assert_eq!(local.value, Some(expected));
    assert!(!local.partial);
    // A connection that is gone: no node has it, and every node answered.
    let dave = connect(serve_hub(b).await, "dave").await;
    let gone = b.connections_of("dave")[0];
    dave.close().await;
    assert!(eventually(|| b.connections_of("dave").is_empty()).await);
    let none = a.cluster_connection_data(gone).await;
    assert_eq!(none.value, None);
    assert!(!none.partial);
}

#[tokio::test]
async fn the_token_expiry_error_follows_the_configured_error_event() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET).leeway(Duration::ZERO))
        .configure(|c| c.token_expiry_warning = None)
        .error_event("exception", ErrorStyle::NestJs)
        .build();
    let addr = serve_hub(&hub).await;
    let mut c = connect_token(addr, &sign(&json!({ "sub": "alice", "exp": now() + 2 }))).await;
    assert_eq!(
        c.next_frame().await,
        json!({ "event": "exception", "data": { "status": "error", "message": "token expired" } })
    );
    assert_eq!(u16::from(c.expect_close().await.unwrap().code), 4003);
}
