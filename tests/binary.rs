//! Binary payloads: `Bytes` fields go out as attachments (native binary frames, Socket.IO
//! binary packets), come back in through `Data<T>`, ride in acks, and cross nodes.
#![cfg(feature = "socketio")]

mod common;

use base64::{engine::general_purpose::STANDARD, Engine};
use bytes::Bytes;
use common::{socketio::Polling, *};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tower_realtime::{socketio::SocketIoConfig, Data, Emitter, ErrorEvent, Hub, HubBuilder, Json, JwtAuth, Socket};

#[derive(Debug, Serialize, Deserialize)]
struct File {
    name: String,
    file: Bytes,
}

fn builder() -> HubBuilder {
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .socketio(SocketIoConfig::default())
        .on("join", |s: Socket, Data(room): Data<String>| async move {
            s.join(&room)?;
            Ok::<_, ErrorEvent>(json!(room))
        })
        // To the room "files" but the sender, and back to the sender in the ack.
        .on("share", |s: Socket, Data(f): Data<File>| async move {
            s.to("files").emit("file", &f);
            Json(f)
        })
        .on("sendMe", |s: Socket, Data(f): Data<File>| async move {
            s.emit("file", &f);
        })
        // Asks the client for a file (its answer carries the bytes) and acks with it.
        .on("askFile", |s: Socket| async move {
            let file: File = s
                .emit_with_ack("give", &json!("a file, please"), std::time::Duration::from_secs(3))
                .await
                .map_err(ErrorEvent::internal)?;
            Ok::<_, ErrorEvent>(Json(file))
        })
        .on("untyped", |Data(v): Data<Value>| async move { v })
        .on("plain", |v: Value| async move { v })
        .on("echo", |Data(v): Data<Value>| async move { v })
}

const BYTES: &[u8] = &[0, 1, 2, 127, 128, 254, 255];

/// The next message that is not a ping or pong.
async fn next_message(c: &mut Client) -> Message {
    loop {
        let msg = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("no frame in time")
            .expect("stream ended")
            .expect("read error");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// The next text frame, with the binary frames it announces.
async fn next_with_attachments(c: &mut Client) -> (Value, Vec<Bytes>) {
    let frame: Value = match next_message(c).await {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    };
    let n = frame["attachments"].as_u64().unwrap_or(0);
    let mut attachments = Vec::new();
    for _ in 0..n {
        match next_message(c).await {
            Message::Binary(b) => attachments.push(b),
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
    (frame, attachments)
}

/// Sends a text frame and binary frames after it.
async fn send_with(c: &mut Client, frame: Value, parts: &[&[u8]]) {
    c.ws.send(Message::text(frame.to_string())).await.unwrap();
    for part in parts {
        c.ws.send(Message::binary(part.to_vec())).await.unwrap();
    }
}

fn placeholder(n: usize) -> Value {
    json!({ "_placeholder": true, "num": n })
}

#[tokio::test]
async fn native_binary_reaches_native_and_socketio_members_and_comes_back_in_the_ack() {
    let hub = builder().build();
    let addr = serve_hub(&hub).await;
    let mut alice = connect(addr, "alice").await;
    let mut bob = connect(addr, "bob").await;
    assert_eq!(bob.call("join", json!("files")).await["data"], "files");
    // A Socket.IO member of the room, over long-polling (binary as base64 there).
    let (carol, _) = Polling::open(addr).await;
    carol.post(&format!("40{}", json!({ "token": token("carol") }))).await;
    carol.until(|p| p.starts_with("40{")).await;
    carol.post(r#"421["join","files"]"#).await;
    assert_eq!(carol.until(|p| p.starts_with("431")).await, r#"431["files"]"#);

    let share =
        json!({ "event": "share", "data": { "name": "a.bin", "file": placeholder(0) }, "id": 7, "attachments": 1 });
    send_with(&mut alice, share, &[BYTES]).await;

    // The ack: the same payload, its bytes as an attachment.
    let (ack, bin) = next_with_attachments(&mut alice).await;
    assert_eq!(
        ack,
        json!({ "ack": 7, "data": { "name": "a.bin", "file": placeholder(0) }, "attachments": 1 })
    );
    assert_eq!(bin, [Bytes::from_static(BYTES)]);

    // The native member.
    let (event, bin) = next_with_attachments(&mut bob).await;
    assert_eq!(
        event,
        json!({ "event": "file", "data": { "name": "a.bin", "file": placeholder(0) }, "attachments": 1 })
    );
    assert_eq!(bin, [Bytes::from_static(BYTES)]);

    // The Socket.IO member: a BINARY_EVENT, then its attachment.
    let packet = carol.until(|p| p.starts_with("45")).await;
    assert_eq!(
        packet,
        r#"451-["file",{"name":"a.bin","file":{"_placeholder":true,"num":0}}]"#
    );
    let binary = carol.until(|p| p.starts_with('b')).await;
    assert_eq!(STANDARD.decode(&binary[1..]).unwrap(), BYTES);

    // `socket.emit` to oneself, asked with a JSON array of numbers would be a Vec<u8>: the
    // attachment form is what the placeholder asks.
    send_with(
        &mut bob,
        json!({ "event": "sendMe", "data": { "name": "b", "file": placeholder(0) }, "attachments": 1 }),
        &[b"xyz"],
    )
    .await;
    let (event, bin) = next_with_attachments(&mut bob).await;
    assert_eq!(event["event"], "file");
    assert_eq!(bin, [Bytes::from_static(b"xyz")]);

    // The client's answer to a server emit carries binary too.
    send_with(&mut bob, json!({ "event": "askFile", "id": 9 }), &[]).await;
    let (ask, _) = next_with_attachments(&mut bob).await;
    assert_eq!(ask["event"], "give");
    let answer = json!({ "ack": ask["id"], "data": { "name": "given", "file": placeholder(0) }, "attachments": 1 });
    send_with(&mut bob, answer, &[b"\x00given\xff"]).await;
    let (ack, bin) = next_with_attachments(&mut bob).await;
    assert_eq!(ack["ack"], 9, "{ack}");
    assert_eq!(ack["data"]["name"], "given");
    assert_eq!(bin, [Bytes::from_static(b"\x00given\xff")]);
}

/// Reads frames until the answer to `id`; returns it and the `error` events met on the way.
async fn answer(c: &mut Client, id: u64) -> (Value, Vec<Value>) {
    let mut errors = Vec::new();
    loop {
        let (frame, _) = next_with_attachments(c).await;
        if frame["ack"] == json!(id) {
            return (frame, errors);
        }
        assert_eq!(frame["event"], "error", "{frame}");
        errors.push(frame["data"].clone());
    }
}

fn message(frame: &Value) -> &str {
    frame["data"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn malformed_binary_input_gets_its_error_and_the_connection_goes_on() {
    let hub = builder().build();
    let addr = serve_hub(&hub).await;
    let mut control = connect(addr, "control").await;
    let mut c = connect(addr, "mallory").await;
    let echo = |id: u64| json!({ "event": "echo", "data": "still here", "id": id });

    // Too many attachments: refused on the text frame; its binary frames are skipped quietly.
    let eleven = vec![&b"x"[..]; 11];
    let too_many = json!({ "event": "share", "data": placeholder(0), "id": 1, "attachments": 11 });
    send_with(&mut c, too_many, &eleven).await;
    send_with(&mut c, echo(2), &[]).await;
    let (refused, errors) = answer(&mut c, 1).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(refused["event"], "error");
    assert!(
        message(&refused).contains("too many attachments: 11 (at most 10)"),
        "{refused}"
    );
    let (ok, errors) = answer(&mut c, 2).await;
    assert!(errors.is_empty(), "the skipped frames raise nothing: {errors:?}");
    assert_eq!(ok["data"], "still here");

    // A binary frame nobody announced.
    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    send_with(&mut c, echo(3), &[]).await;
    let (ok, errors) = answer(&mut c, 3).await;
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("no message awaiting attachments"),
        "{errors:?}"
    );
    assert_eq!(ok["data"], "still here");

    // A missing attachment: a text frame comes while one is still awaited.
    let two = json!({ "event": "share", "data": [placeholder(0), placeholder(1)], "id": 4, "attachments": 2 });
    send_with(&mut c, two, &[b"only one"]).await;
    send_with(&mut c, echo(5), &[]).await;
    let (dropped, _) = answer(&mut c, 4).await;
    assert!(
        message(&dropped).contains("1 more attachments were awaited"),
        "{dropped}"
    );
    assert_eq!(answer(&mut c, 5).await.0["data"], "still here");

    // A placeholder with no attachment behind it.
    let bad = json!({ "event": "share", "data": { "name": "x", "file": placeholder(3) }, "id": 6, "attachments": 1 });
    send_with(&mut c, bad, &[b"x"]).await;
    send_with(&mut c, echo(7), &[]).await;
    let (refused, _) = answer(&mut c, 6).await;
    assert!(message(&refused).contains("refers to no attachment"), "{refused}");
    assert_eq!(answer(&mut c, 7).await.0["data"], "still here");

    // Bytes taken as untyped JSON: a clear error, not the placeholder.
    let untyped = json!({ "event": "untyped", "data": { "file": placeholder(0) }, "id": 8, "attachments": 1 });
    send_with(&mut c, untyped, &[b"x"]).await;
    let (refused, _) = answer(&mut c, 8).await;
    assert_eq!(refused["event"], "error");
    assert!(message(&refused).contains("attachment 0 is binary"), "{refused}");
    assert!(message(&refused).contains("Bytes"), "{refused}");
    let plain = json!({ "event": "plain", "data": [placeholder(0)], "id": 11, "attachments": 1 });
    send_with(&mut c, plain, &[b"x"]).await;
    let (refused, _) = answer(&mut c, 11).await;
    assert!(message(&refused).contains("attachment 0 is binary"), "{refused}");
    // Without binary values, untyped JSON is taken as it is.
    assert_eq!(c.call("plain", json!({"a": [1]})).await["data"], json!({"a": [1]}));

    // Larger than the message size limit, all frames together.
    let big = vec![0u8; 40 * 1024];
    let two = json!({ "event": "share", "data": [placeholder(0), placeholder(1)], "id": 9, "attachments": 2 });
    send_with(&mut c, two, &[&big, &big]).await;
    send_with(&mut c, echo(10), &[]).await;
    let (refused, _) = answer(&mut c, 9).await;
    assert!(message(&refused).contains("larger than"), "{refused}");
    assert_eq!(answer(&mut c, 10).await.0["data"], "still here");

    assert_eq!(control.call("echo", json!("fine")).await["data"], "fine");
}

/// socket.io-client: `Buffer`s arrive for `socket.emit`, a room emit and an ack, and a
/// `Buffer` sent in fills a `Bytes` field; `clients/js/realtime.js` sends and gets binary too
/// (tests/node/binary.test.mjs).
#[tokio::test]
async fn socketio_client_gets_and_sends_buffers() {
    if !node_enabled("node binary test") {
        return;
    }
    let hub = builder().build();
    let addr = serve_hub(&hub).await;
    let stdout = run_node("binary.test.mjs", vec![("BASE_URL", format!("http://{addr}"))]).await;
    assert!(stdout.contains("pass 5"), "all five binary tests ran and passed");
}

/// Binary crosses nodes intact through the Redis bus.
#[tokio::test]
async fn binary_crosses_nodes() {
    let Some(url) = redis_url("redis binary test") else {
        return;
    };
    let prefix = format!("test-binary-{}", std::process::id());
    let mut hubs = Vec::new();
    for _ in 0..2 {
        let mut options = tower_realtime::adapter::RedisOptions::default();
        options.prefix = prefix.clone();
        let (adapter, inbound) = tower_realtime::adapter::RedisAdapter::connect(&url, options)
            .await
            .expect("Redis must answer when REALTIME_TEST_REDIS is set");
        hubs.push(builder().cluster(adapter, inbound).build());
    }
    let addr_b = serve_hub(&hubs[1]).await;
    let mut bob = connect(addr_b, "bob").await;
    assert_eq!(bob.call("join", json!("files")).await["data"], "files");
    let (carol, _) = Polling::open(addr_b).await;
    carol.post(&format!("40{}", json!({ "token": token("carol") }))).await;
    carol.until(|p| p.starts_with("40{")).await;
    carol.post(r#"421["join","files"]"#).await;
    carol.until(|p| p.starts_with("431")).await;
    // The joins are seen cluster-wide before the emit.
    let deadline = tokio::time::Instant::now() + WAIT;
    while hubs[0].cluster_room_users("files").await.value.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the joins are seen cluster-wide"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let file = File {
        name: "far.bin".into(),
        file: Bytes::from_static(BYTES),
    };
    hubs[0].to_room("files").emit("file", &file);
    let (event, bin) = next_with_attachments(&mut bob).await;
    assert_eq!(event["data"], json!({ "name": "far.bin", "file": placeholder(0) }));
    assert_eq!(bin, [Bytes::from_static(BYTES)]);
    assert!(carol.until(|p| p.starts_with("45")).await.starts_with("451-[\"file\""));
    let binary = carol.until(|p| p.starts_with('b')).await;
    assert_eq!(STANDARD.decode(&binary[1..]).unwrap(), BYTES);
}

/// In a hub that keeps a history, an event with binary values goes out live, without an
/// offset (it is not kept); an event without binary is kept as usual.
#[tokio::test]
async fn binary_events_are_delivered_but_not_kept_in_a_history() {
    let hub = builder().history(tower_realtime::History::new().rooms("*")).build();
    let addr = serve_hub(&hub).await;
    let mut bob = connect(addr, "bob").await;
    assert_eq!(bob.call("join", json!("files")).await["data"], "files");
    let file = File {
        name: "kept?".into(),
        file: Bytes::from_static(BYTES),
    };
    assert_eq!(hub.to_room("files").emit("file", &file), 1);
    let (event, bin) = next_with_attachments(&mut bob).await;
    assert_eq!(event["event"], "file");
    assert!(event.get("offset").is_none(), "{event}");
    assert_eq!(bin, [Bytes::from_static(BYTES)]);
    hub.to_room("files").emit("text", &json!("kept"));
    let (event, _) = next_with_attachments(&mut bob).await;
    assert_eq!(event["event"], "text");
    assert!(event["offset"].is_u64(), "{event}");
}
