//! Declared events (feature `typed`) over real sockets: a typed handler gets its payload and
//! acks with its declared type, a declared server event goes out under its name, a payload of
//! the wrong shape gets an `error` event, an event without a payload takes whatever comes with
//! it, and the `error` event's data reads back as the declared `ErrorData`.
#![cfg(feature = "typed")]

mod common;

use bytes::Bytes;
use common::{typescript, *};
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tower_realtime::{Emitter, ErrorData, ErrorEvent, Event, FieldError, Hub, JwtAuth, Socket};

#[derive(Deserialize, Event, ts_rs::TS)]
#[event(name = "join", ack = Joined)]
struct Join(String);

#[derive(Serialize, ts_rs::TS)]
struct Joined {
    room: String,
    members: usize,
}

#[derive(Deserialize, Event, ts_rs::TS)]
#[event(name = "say", ack = ())]
struct Say {
    room: String,
    text: String,
}

#[derive(Serialize, Event, ts_rs::TS)]
#[event(name = "said")]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase")]
struct Said {
    text: String,
    user_id: String,
}

#[derive(Deserialize, Event, ts_rs::TS)]
#[event(name = "whoami", ack = String)]
struct WhoAmI;

#[derive(Serialize, Event, ts_rs::TS)]
#[event(name = "announcement")]
struct Announcement(String);

/// A file for a room: the bytes go as a binary attachment.
#[derive(Deserialize, Event, ts_rs::TS)]
#[event(name = "upload", ack = Stored)]
struct Upload {
    room: String,
    #[ts(as = "tower_realtime::Binary")]
    data: Bytes,
    /// Absent or null: no caption.
    caption: Option<String>,
}

/// Where an upload went, or why not.
#[derive(Serialize, ts_rs::TS)]
#[serde(tag = "outcome", rename_all = "camelCase")]
#[ts(tag = "outcome", rename_all = "camelCase")]
enum Stored {
    Kept { bytes: usize, members: Vec<String> },
    TooLarge { limit: usize },
}

/// A room's state, sent to a member on demand.
#[derive(Serialize, Event, ts_rs::TS)]
#[event(name = "roomState")]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase", optional_fields)]
struct RoomState {
    room: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    mode: Mode,
}

#[derive(Serialize, ts_rs::TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename_all = "lowercase")]
enum Mode {
    Open,
    Moderated,
}

/// The hub's declarations, as its clients type-check against them.
const TYPES: &str = "tests/fixtures/typed_events.d.ts";

fn hub() -> Hub {
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on_event(|socket: Socket, Join(room): Join| async move {
            socket.join(&room)?;
            let members = socket.hub().room_members(&room).len();
            Ok::<_, ErrorEvent>(Joined { room, members })
        })
        .on_event(|socket: Socket, say: Say| async move {
            if !socket.in_room(&say.room) {
                return Err(ErrorEvent::new(format!("not in {}", say.room)).with_field("field", "room"));
            }
            let user_id = socket.user_id().unwrap_or_default().to_owned();
            socket.hub().to_room(&say.room).send(Said {
                text: say.text,
                user_id,
            });
            Ok(())
        })
        .on_event(|socket: Socket, _: WhoAmI| async move { socket.user_id().unwrap_or_default().to_owned() })
        .on_event(|socket: Socket, up: Upload| async move {
            if up.data.len() > 16 {
                return Stored::TooLarge { limit: 16 };
            }
            let topic_set = up.caption.is_some();
            socket.send(RoomState {
                room: up.room.clone(),
                topic: up.caption,
                mode: if topic_set { Mode::Moderated } else { Mode::Open },
            });
            let members = socket.hub().room_members(&up.room).len();
            let members = (0..members).map(|i| i.to_string()).collect();
            Stored::Kept {
                bytes: up.data.len(),
                members,
            }
        })
        .emits::<Said>()
        .emits::<Announcement>()
        .emits::<RoomState>()
        .build()
}

#[tokio::test]
async fn a_typed_handler_acks_with_its_declared_type_and_sends_declared_events() {
    let hub = hub();
    let addr = serve_hub(&hub).await;
    let mut alice = connect(addr, "alice").await;
    let mut bob = connect(addr, "bob").await;

    let ack = alice.call("join", json!("general")).await;
    assert_eq!(ack["data"], json!({ "room": "general", "members": 1 }));
    let ack = bob.call("join", json!("general")).await;
    assert_eq!(ack["data"], json!({ "room": "general", "members": 2 }));

    let ack = alice.call("say", json!({ "room": "general", "text": "hi" })).await;
    assert_eq!(ack["data"], Value::Null, "an ack of type () is null: {ack}");
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.expect_event("said").await, json!({ "text": "hi", "userId": "alice" }));
    }

    // `Emitter::send` and `Socket`-less sends use the event's own name too.
    assert_eq!(hub.send(Announcement("maintenance at noon".into())), 2);
    assert_eq!(alice.expect_event("announcement").await, json!("maintenance at noon"));
    assert_eq!(<Announcement as Event>::NAME, "announcement");
}

#[tokio::test]
async fn a_payload_of_the_wrong_shape_gets_an_error_and_the_handler_does_not_run() {
    let hub = hub();
    let addr = serve_hub(&hub).await;
    let mut alice = connect(addr, "alice").await;

    let answer = alice.call("join", json!(42)).await;
    assert_eq!(answer["event"], "error", "{answer}");
    let error: ErrorData = serde_json::from_value(answer["data"].clone()).expect("the declared error shape");
    assert_eq!(error.status, "error");
    assert!(error.message.starts_with("invalid payload"), "{}", error.message);
    assert!(hub.room_members("42").is_empty(), "the handler did not run");

    let answer = alice.call("say", json!({ "room": "general" })).await;
    let error: ErrorData = serde_json::from_value(answer["data"].clone()).unwrap();
    assert!(
        error.message.contains("text"),
        "names the missing field: {}",
        error.message
    );
}

#[tokio::test]
async fn a_handler_error_reaches_the_client_in_the_declared_error_shape() {
    let hub = hub();
    let addr = serve_hub(&hub).await;
    let mut alice = connect(addr, "alice").await;

    let answer = alice.call("say", json!({ "room": "nowhere", "text": "hi" })).await;
    assert_eq!(answer["event"], "error", "{answer}");
    let error: ErrorData = serde_json::from_value(answer["data"].clone()).unwrap();
    assert_eq!(error.message, "not in nowhere");
    assert_eq!(error.field.as_deref(), Some("room"));
    assert_eq!(error.errors, None::<Vec<FieldError>>);
    alice.expect_no_event("said").await;
}

#[tokio::test]
async fn an_event_without_a_payload_takes_whatever_comes_with_it() {
    let hub = hub();
    let addr = serve_hub(&hub).await;
    let mut alice = connect(addr, "alice").await;

    assert_eq!(alice.call("whoami", Value::Null).await["data"], "alice");
    assert_eq!(alice.call("whoami", json!({ "ignored": true })).await["data"], "alice");
    // Without `data` at all.
    alice.send_raw(r#"{"event":"whoami","id":99}"#).await;
    loop {
        let frame = alice.next_frame().await;
        if frame["ack"] == 99 {
            assert_eq!(frame["data"], "alice");
            break;
        }
    }
}

#[tokio::test]
async fn a_binary_field_arrives_as_bytes_and_an_enum_ack_is_tagged() {
    let hub = hub();
    let addr = serve_hub(&hub).await;
    let mut alice = connect(addr, "alice").await;

    // The native protocol's binary: a placeholder in the data, then the binary frame.
    let head = json!({ "event": "upload", "id": 7, "attachments": 1,
        "data": { "room": "r", "data": { "_placeholder": true, "num": 0 } } });
    alice.send_raw(&head.to_string()).await;
    alice
        .ws
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    let state = alice.expect_event("roomState").await;
    assert_eq!(
        state,
        json!({ "room": "r", "mode": "open" }),
        "no topic: the field is left out"
    );
    loop {
        let frame = alice.next_frame().await;
        if frame["ack"] == 7 {
            assert_eq!(frame["data"], json!({ "outcome": "kept", "bytes": 3, "members": [] }));
            break;
        }
    }
    let big = json!({ "room": "r", "data": { "_placeholder": true, "num": 0 }, "caption": "x" });
    let head = json!({ "event": "upload", "id": 8, "attachments": 1, "data": big });
    alice.send_raw(&head.to_string()).await;
    alice
        .ws
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![0u8; 17]))
        .await
        .unwrap();
    loop {
        let frame = alice.next_frame().await;
        if frame["ack"] == 8 {
            assert_eq!(frame["data"], json!({ "outcome": "tooLarge", "limit": 16 }));
            break;
        }
    }
}

/// The committed declarations are the hub's: regenerate them with
/// `UPDATE_TYPES=1 cargo test --test typed_events`. `.ci/run` type-checks
/// `tests/node/types/typed-events.ts` against them with `tsc --strict`.
#[test]
fn the_committed_typescript_is_what_the_hub_writes() {
    typescript::assert_committed(TYPES, &hub().typescript(), "typed_events");
}

#[test]
fn the_typescript_names_every_declared_event_with_its_types() {
    let ts = hub().typescript();
    for member in [
        "join: (data: Join, ack: (res: Joined) => void) => void;",
        "say: (data: Say, ack: (res: null) => void) => void;",
        "whoami: (ack: (res: string) => void) => void;",
        "upload: (data: Upload, ack: (res: Stored) => void) => void;",
        "said: (data: Said) => void;",
        "announcement: (data: Announcement) => void;",
        "roomState: (data: RoomState) => void;",
        "error: (data: ErrorEvent) => void;",
        "token_expiring: (data: TokenExpiring) => void;",
        "export interface Joined { room: string, members: number, }",
        "export type Join = string;",
        "export type Binary = ArrayBuffer | Uint8Array;",
        "data: Binary",
        "caption: string | null",
        "topic?: string",
        r#"export type Mode = "open" | "moderated";"#,
        r#"{ "outcome": "kept", bytes: number, members: Array<string>, }"#,
    ] {
        assert!(ts.contains(member), "no `{member}` in\n{ts}");
    }
    assert_eq!(typescript::loose_types(&ts), Vec::<String>::new(), "{ts}");
    assert_eq!(
        typescript::loose_types("/** any */ a: any; // unknown\n// any\nb: Array<unknown>"),
        ["any", "unknown"]
    );
    assert_eq!(ts, hub().typescript(), "the same hub writes the same text");
}
