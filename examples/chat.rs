//! The demo chat: an axum app with a NestJS-style chat gateway on `/ws`.
//!
//! ```text
//! cargo run --example chat            # then open http://127.0.0.1:3000
//! PORT=3001 JWT_SECRET=... cargo run --example chat
//! cargo run --example chat --features metrics   # adds GET /metrics (Prometheus text format)
//! ```
//!
//! The contract (routes, events, payloads) is in the README, section "The demo". Beyond it:
//!
//! - `GET /config`: the limits the page enforces (the server's own: text, room name, user
//!   name), the event rate limit, whether Socket.IO is served, and the endpoints.
//! - Every connection may send [`EVENTS_PER_SECOND`] events a second (bursts of
//!   [`EVENT_BURST`]); past that an event gets an `error` with status `rate_limited` and does
//!   not run. `MAX_CONNECTIONS_PER_USER` (load tests) lifts it with the per-user caps.
//! - Validation errors name the field and its limit:
//!   `{"status":"error","message":"text: at most 1000 characters","field":"text","min":1,"limit":1000,"errors":[…]}`.
//! - `privateMessage`'s ack says how many connections of the recipient it was sent to, on
//!   every node: `{"delivered": <this node's>, "devices": n, "online": n > 0}`.
//! - `setStatus`/`whoami` keep a status in the connection's own state; `shareFile` sends a
//!   binary file to a room's other members; `typing` is a volatile, coalesced emit.
//! - Connections, disconnections and refused connections (native or Socket.IO: a bad request,
//!   a bad token, a limit, a guard) are logged at `info`, without tokens.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use axum::{
    extract::{Path, State},
    http::{header, StatusCode},
    response::{Html, IntoResponse},
    routing::{get, post},
    Json, Router,
};
use bytes::Bytes;
use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tower_realtime::{
    Compression, DisconnectReason, Emitter, ErrorEvent, Event, FieldError, History, Hub, HubBuilder, JwtAuth, Presence,
    RateLimit, Refused, Socket,
};
use ts_rs::TS;

const DEV_SECRET: &str = "tower-realtime-demo-secret-change-me-please";

/// Longest chat message, in characters.
pub const MAX_TEXT_CHARS: usize = 1000;
/// Longest user name, in bytes.
pub const MAX_USER_BYTES: usize = 64;
/// Longest status, in characters.
pub const MAX_STATUS_CHARS: usize = 64;
/// Longest shared file name, in characters.
pub const MAX_FILE_NAME_CHARS: usize = 255;
/// Largest shared file, in bytes: under the library's message size limit (64 KiB), which
/// bounds the event and its binary frames together.
pub const MAX_FILE_BYTES: usize = 48 * 1024;
/// Events a connection may send per second, on average.
pub const EVENTS_PER_SECOND: u32 = 5;
/// Events a connection may send at once before the rate applies.
pub const EVENT_BURST: u32 = 20;

#[derive(Clone)]
struct AppState {
    hub: Hub,
    secret: String,
    /// Whether the event rate limit applies (not in load tests).
    rate_limited: bool,
}

/// How a length is counted.
#[derive(Clone, Copy)]
enum Unit {
    Characters,
    Bytes,
}

/// Checks that `value` (the payload's `field`) is 1 to `max` long. The error names the field
/// and the limit: `{"message": "text: at most 1000 characters", "field": "text", "min": 1,
/// "limit": 1000, "errors": [{"field", "code", "message"}]}`.
fn check_length(field: &str, value: &str, max: usize, unit: Unit) -> Result<(), ErrorEvent> {
    let (len, unit) = match unit {
        Unit::Characters => (value.chars().count(), "characters"),
        Unit::Bytes => (value.len(), "bytes"),
    };
    let rule = match len {
        0 => "must not be empty".to_owned(),
        n if n > max => format!("at most {max} {unit}"),
        _ => return Ok(()),
    };
    Err(limit_error(field, &rule, 1, max))
}

/// A payload field out of its limits: `{"message": "<field>: <rule>", "field", "min", "limit",
/// "errors": [{"field", "code", "message"}]}`.
fn limit_error(field: &str, rule: &str, min: usize, max: usize) -> ErrorEvent {
    let errors = [FieldError {
        field: field.to_owned(),
        code: "length".to_owned(),
        message: rule.to_owned(),
    }];
    let errors = serde_json::to_value(errors).unwrap_or_default();
    ErrorEvent::new(format!("{field}: {rule}"))
        .with_field("field", field)
        .with_field("min", min)
        .with_field("limit", max)
        .with_field("errors", errors)
}

// ---- The demo's events, declared once (`#[derive(Event)]`): the handlers and emits below are
// checked against them, and `Hub::typescript` writes them to `clients/js/types/chat.d.ts`
// (tests/chat_types.rs keeps that file current). Fields are in alphabetical order, as the JSON
// objects they replace had them: the wire format is the same, byte for byte.

/// Joins a room (its name); the others in the room get `userJoined`.
#[derive(Deserialize, Event, TS)]
#[event(name = "joinRoom", ack = JoinedRoom)]
pub struct JoinRoom(pub String);

/// The ack of `joinRoom`.
#[derive(Serialize, TS)]
pub struct JoinedRoom {
    #[ts(type = "\"joinedRoom\"")]
    event: &'static str,
    room: String,
}

/// Leaves a room (its name); the others in the room get `userLeft`.
#[derive(Deserialize, Event, TS)]
#[event(name = "leaveRoom", ack = LeftRoom)]
pub struct LeaveRoom(pub String);

/// The ack of `leaveRoom`.
#[derive(Serialize, TS)]
pub struct LeftRoom {
    #[ts(type = "\"leftRoom\"")]
    event: &'static str,
    room: String,
}

/// A chat message to a room the sender joined (text 1..=1000 characters); everyone in the
/// room, the sender too, gets `message`.
#[derive(Deserialize, Event, TS)]
#[event(name = "message", ack = MessageReceived)]
pub struct SendMessage {
    pub room: String,
    pub text: String,
}

/// The ack of `message`.
#[derive(Serialize, TS)]
pub struct MessageReceived {
    #[ts(type = "\"Message received\"")]
    data: &'static str,
    #[ts(type = "\"message\"")]
    event: &'static str,
}

/// Any JSON message to everyone else in a room the sender joined: they get `roomMessage`.
#[derive(Deserialize, Event, TS)]
#[event(name = "messageToRoom", ack = ())]
pub struct MessageToRoom {
    pub message: Value,
    pub room: String,
}

/// A message to every connection of user `to` (1..=64 bytes; a string message 1..=1000
/// characters): they get `privateMessage`.
#[derive(Deserialize, Event, TS)]
#[event(name = "privateMessage", ack = Delivery)]
pub struct SendPrivateMessage {
    pub message: Value,
    pub to: String,
}

/// The ack of `privateMessage`: `delivered` on this node, `devices` on every node.
#[derive(Serialize, TS)]
pub struct Delivery {
    delivered: usize,
    devices: usize,
    online: bool,
}

/// Sets the connection's status (at most 64 characters; empty clears it); everyone gets
/// `status`.
#[derive(Deserialize, Event, TS)]
#[event(name = "setStatus", ack = StatusSet)]
pub struct SetStatus(pub String);

/// The ack of `setStatus`.
#[derive(Serialize, TS)]
pub struct StatusSet {
    #[ts(type = "\"statusSet\"")]
    event: &'static str,
    status: Option<String>,
}

/// The connection's user and status.
#[derive(Deserialize, Event, TS)]
#[event(name = "whoami", ack = Me)]
pub struct WhoAmI;

/// The ack of `whoami` (`status` is null before any `setStatus`).
#[derive(Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase")]
pub struct Me {
    status: Option<String>,
    user_id: String,
}

/// A file for a room's other members: `data` binary, 1..=49152 bytes; `name` 1..=255
/// characters. They get `fileShared`.
#[derive(Deserialize, Event, TS)]
#[event(name = "shareFile", ack = FileSent)]
pub struct ShareFile {
    #[ts(as = "tower_realtime::Binary")]
    pub data: Bytes,
    pub name: String,
    pub room: String,
}

/// The ack of `shareFile`.
#[derive(Serialize, TS)]
pub struct FileSent {
    delivered: usize,
    #[ts(type = "\"fileShared\"")]
    event: &'static str,
}

/// The sender is typing in a room it joined: the room's other members get `typing` (volatile,
/// coalesced per user and room).
#[derive(Deserialize, Event, TS)]
#[event(name = "typing", ack = ())]
pub struct Typing {
    pub room: String,
}

/// The users online (sorted, unique): right after connecting, and when one comes or goes.
#[derive(Serialize, Event, TS)]
#[event(name = "onlineUsers")]
pub struct OnlineUsers(pub Vec<String>);

/// The statuses set, by user: right after `onlineUsers`, when any is set.
#[derive(Serialize, Event, TS)]
#[event(name = "statuses")]
pub struct Statuses(pub BTreeMap<String, String>);

/// A user came online (first connection) or went offline (last one closed).
#[derive(Serialize, Event, TS)]
#[event(name = "presence")]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase")]
pub struct PresenceChanged {
    pub user_id: String,
    pub online: bool,
}

/// A user joined a room the recipient is in.
#[derive(Serialize, Event, TS)]
#[event(name = "userJoined")]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase")]
pub struct UserJoined {
    pub room: String,
    pub user_id: String,
}

/// A user left a room the recipient is in.
#[derive(Serialize, Event, TS)]
#[event(name = "userLeft")]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase")]
pub struct UserLeft {
    pub room: String,
    pub user_id: String,
}

/// A chat message in a room (`timestamp` RFC 3339). Kept in the history: it may carry an
/// `offset` (native protocol).
#[derive(Serialize, Event, TS)]
#[event(name = "message")]
pub struct ChatMessage {
    pub room: String,
    pub sender: String,
    pub text: String,
    pub timestamp: String,
}

/// A `messageToRoom` from another member.
#[derive(Serialize, Event, TS)]
#[event(name = "roomMessage")]
pub struct RoomMessage {
    pub message: Value,
    pub sender: String,
}

/// A private message.
#[derive(Serialize, Event, TS)]
#[event(name = "privateMessage")]
pub struct PrivateMessage {
    pub from: String,
    pub message: Value,
}

/// A user's status changed (null: cleared).
#[derive(Serialize, Event, TS)]
#[event(name = "status")]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase")]
pub struct StatusChanged {
    pub status: Option<String>,
    pub user_id: String,
}

/// A file shared with a room the recipient is in: `data` binary.
#[derive(Serialize, Event, TS)]
#[event(name = "fileShared")]
pub struct FileShared {
    pub from: String,
    pub room: String,
    pub name: String,
    #[ts(as = "tower_realtime::Binary")]
    pub data: Bytes,
}

/// A member of a room the recipient is in is typing.
#[derive(Serialize, Event, TS)]
#[event(name = "typing")]
#[serde(rename_all = "camelCase")]
#[ts(rename_all = "camelCase")]
pub struct UserTyping {
    pub room: String,
    pub user_id: String,
}

/// A notification from the HTTP side: `POST /posts` (a string, "New post: <title>") or
/// `POST /notify/{user}` (the JSON value posted).
#[derive(Serialize, Event, TS)]
#[event(name = "notification")]
pub struct Notification {
    pub message: Value,
}

/// What a connection keeps in its own state (`Socket::set_data`, so that the hub, and any node
/// of a cluster, can read it by connection id).
#[derive(Serialize, Deserialize, Default)]
struct ConnState {
    status: Option<String>,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn sender(socket: &Socket) -> &str {
    socket.user_id().unwrap_or_default()
}

/// The chat gateway: the handlers of the reference's `ChatGateway`.
fn build_hub(secret: &str, max_per_user: Option<usize>, builder: HubBuilder) -> Hub {
    // Load tests send flat out from one connection: they lift the event rate with the caps.
    let builder = match max_per_user {
        Some(_) => builder,
        None => builder.rate_limit(RateLimit::per_second(EVENTS_PER_SECOND).burst(EVENT_BURST)),
    };
    // With the `socketio` feature, the same gateway also answers Socket.IO clients at /socket.io/.
    #[cfg(feature = "socketio")]
    let builder = builder.socketio(tower_realtime::socketio::SocketIoConfig::default());
    // A client that drops (a phone asleep, a flaky network) gets the room messages and private
    // messages it missed when it comes back, for two minutes. `HISTORY=off` keeps none (to
    // measure what keeping it costs).
    let builder = match std::env::var("HISTORY").as_deref() {
        Ok("off") => builder,
        _ => builder.history(History::new().rooms("*").users()),
    };
    // Browsers, `ws` and socket.io-client offer permessage-deflate; chat JSON past a few
    // hundred bytes shrinks by 70–90%. `COMPRESSION=off` serves every message uncompressed.
    let builder = match std::env::var("COMPRESSION").as_deref() {
        Ok("off") => builder,
        _ => builder.compression(Compression::default()),
    };
    builder
        .auth(JwtAuth::hs256(secret))
        .configure(|c| {
            if let Some(max) = max_per_user {
                // Load tests open many connections as one user: lift the per-user caps.
                c.max_connections_per_user = max;
                c.connect_rate_per_user = None;
            }
        })
        .on_connect(|socket: Socket| async move {
            tracing::info!(conn = %socket.id(), user = sender(&socket), "connected");
            socket.send(OnlineUsers(online_users(socket.hub()).await));
            let statuses = statuses(socket.hub());
            if !statuses.is_empty() {
                socket.send(Statuses(statuses));
            }
        })
        .on_disconnect(|socket: Socket, reason: DisconnectReason| async move {
            tracing::info!(conn = %socket.id(), user = sender(&socket), ?reason, "disconnected");
        })
        .on_refused(log_refusal)
        .on_presence(|hub: Hub, presence: Presence| async move {
            hub.send(PresenceChanged {
                user_id: presence.user_id.clone(),
                online: presence.online,
            });
            // The user's own connections had the list as they connected: once per connect.
            let mut everyone = hub.broadcast();
            if presence.online {
                for id in hub.connections_of(&presence.user_id) {
                    everyone = everyone.except(id);
                }
            }
            everyone.send(OnlineUsers(online_users(&hub).await));
        })
        .on_event(|socket: Socket, JoinRoom(room): JoinRoom| async move {
            if socket.join(&room)? {
                let user_id = sender(&socket).to_owned();
                socket.to(&room).send(UserJoined {
                    room: room.clone(),
                    user_id,
                });
            }
            Ok::<_, ErrorEvent>(JoinedRoom {
                event: "joinedRoom",
                room,
            })
        })
        .on_event(|socket: Socket, LeaveRoom(room): LeaveRoom| async move {
            if socket.leave(&room) {
                let user_id = sender(&socket).to_owned();
                socket.hub().to_room(&room).send(UserLeft {
                    room: room.clone(),
                    user_id,
                });
            }
            LeftRoom {
                event: "leftRoom",
                room,
            }
        })
        .on_event(|socket: Socket, msg: SendMessage| async move {
            check_length("text", &msg.text, MAX_TEXT_CHARS, Unit::Characters)?;
            check_length("room", &msg.room, socket.hub().config().max_room_name_len, Unit::Bytes)?;
            if !socket.in_room(&msg.room) {
                return Err(ErrorEvent::new(format!("not a member of room {}", msg.room)));
            }
            let out = ChatMessage {
                room: msg.room.clone(),
                sender: sender(&socket).to_owned(),
                text: msg.text,
                timestamp: now_rfc3339(),
            };
            socket.hub().to_room(&msg.room).send(out);
            Ok(MessageReceived {
                data: "Message received",
                event: "message",
            })
        })
        .on_event(|socket: Socket, msg: MessageToRoom| async move {
            if !socket.in_room(&msg.room) {
                return Err(ErrorEvent::new(format!("not a member of room {}", msg.room)));
            }
            let sender = sender(&socket).to_owned();
            socket.to(&msg.room).send(RoomMessage {
                message: msg.message,
                sender,
            });
            Ok(())
        })
        .on_event(|socket: Socket, msg: SendPrivateMessage| async move {
            check_length("to", &msg.to, MAX_USER_BYTES, Unit::Bytes)?;
            if let Value::String(text) = &msg.message {
                check_length("message", text, MAX_TEXT_CHARS, Unit::Characters)?;
            }
            // `from` is the authenticated sender, whatever the payload claims.
            let from = sender(&socket).to_owned();
            let delivered = socket.hub().to_user(&msg.to).send(PrivateMessage {
                from,
                message: msg.message,
            });
            let devices = devices_of(socket.hub(), &msg.to, delivered).await;
            Ok::<_, ErrorEvent>(Delivery {
                delivered,
                devices,
                online: devices > 0,
            })
        })
        .on_event(|socket: Socket, SetStatus(status): SetStatus| async move {
            if status.chars().count() > MAX_STATUS_CHARS {
                let rule = format!("at most {MAX_STATUS_CHARS} characters");
                return Err(limit_error("status", &rule, 0, MAX_STATUS_CHARS));
            }
            // An empty status clears it.
            let status = (!status.is_empty()).then_some(status);
            socket
                .set_data(&ConnState { status: status.clone() })
                .map_err(ErrorEvent::internal)?;
            let user_id = sender(&socket).to_owned();
            socket.hub().send(StatusChanged {
                status: status.clone(),
                user_id,
            });
            Ok(StatusSet {
                event: "statusSet",
                status,
            })
        })
        .on_event(|socket: Socket, _: WhoAmI| async move {
            let status = socket.data::<ConnState>().unwrap_or_default().status;
            Me {
                status,
                user_id: sender(&socket).to_owned(),
            }
        })
        .on_event(|socket: Socket, file: ShareFile| async move {
            check_length("name", &file.name, MAX_FILE_NAME_CHARS, Unit::Characters)?;
            let rule = match file.data.len() {
                0 => Some("must not be empty".to_owned()),
                n if n > MAX_FILE_BYTES => Some(format!("at most {MAX_FILE_BYTES} bytes")),
                _ => None,
            };
            if let Some(rule) = rule {
                return Err(limit_error("data", &rule, 1, MAX_FILE_BYTES));
            }
            if !socket.in_room(&file.room) {
                return Err(ErrorEvent::new(format!("not a member of room {}", file.room)));
            }
            let shared = FileShared {
                from: sender(&socket).to_owned(),
                room: file.room.clone(),
                name: file.name,
                data: file.data,
            };
            let delivered = socket.to(&file.room).send(shared);
            Ok(FileSent {
                delivered,
                event: "fileShared",
            })
        })
        .on_event(|socket: Socket, typing: Typing| async move {
            if !socket.in_room(&typing.room) {
                return Err(ErrorEvent::new(format!("not a member of room {}", typing.room)));
            }
            // Only worth having now: dropped for a busy connection, and a newer one for the
            // same user and room replaces one still queued.
            let user_id = sender(&socket).to_owned();
            let key = format!("typing:{}:{user_id}", typing.room);
            socket.to(&typing.room).volatile().coalesce(&key).send(UserTyping {
                room: typing.room.clone(),
                user_id,
            });
            Ok::<_, ErrorEvent>(())
        })
        .emits::<OnlineUsers>()
        .emits::<Statuses>()
        .emits::<PresenceChanged>()
        .emits::<UserJoined>()
        .emits::<UserLeft>()
        .emits::<ChatMessage>()
        .emits::<RoomMessage>()
        .emits::<PrivateMessage>()
        .emits::<StatusChanged>()
        .emits::<FileShared>()
        .emits::<UserTyping>()
        .emits::<Notification>()
        .build()
}

/// The users online: on every node of the cluster when the demo is in one.
async fn online_users(hub: &Hub) -> Vec<String> {
    #[cfg(feature = "cluster")]
    return hub.cluster_online_users().await.value;
    #[cfg(not(feature = "cluster"))]
    hub.online_users()
}

/// The statuses set by the connections of this node, by user (the latest found for a user
/// with several): a connecting page's first view; `status` events keep it current.
fn statuses(hub: &Hub) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for user in hub.online_users() {
        let status = hub.connections_of(&user).into_iter().find_map(|id| {
            let data = hub.connection_data(id)?;
            serde_json::from_value::<ConnState>(data).ok()?.status
        });
        if let Some(status) = status {
            all.insert(user, status);
        }
    }
    all
}

/// How many connections of `user` an emit to them was sent to: `delivered` alone, or, in a
/// cluster (where an emit kept in the history is delivered from Redis, and the other nodes'
/// recipients are not counted here), the user's connections on every node.
#[cfg_attr(not(feature = "cluster"), allow(unused_variables))]
async fn devices_of(hub: &Hub, user: &str, delivered: usize) -> usize {
    #[cfg(feature = "cluster")]
    if hub.adapter().is_some() {
        return hub.cluster_connections_of(user).await.value.len();
    }
    delivered
}

/// What the demo serves, by name (the start-up line and `GET /config` list them). The
/// realtime endpoints are the hub's layer; the rest are routes.
fn endpoints() -> Vec<(&'static str, &'static str)> {
    let mut all = vec![
        ("page", "GET /"),
        ("login", "POST /login"),
        ("config", "GET /config"),
        ("native protocol", "GET /ws"),
    ];
    if cfg!(feature = "socketio") {
        all.push(("Socket.IO", "/socket.io/"));
    }
    all.extend([
        ("post", "POST /posts"),
        ("notify", "POST /notify/{user}"),
        ("native client", "GET /realtime.js"),
        ("Socket.IO client", "GET /socketio-lite.js"),
    ]);
    if cfg!(feature = "metrics") {
        all.push(("metrics", "GET /metrics"));
    }
    all
}

/// The whole demo app: its routes, and the hub layered at `/ws`.
pub fn app(secret: String, max_per_user: Option<usize>) -> (Router, Hub) {
    app_with(secret, max_per_user, Hub::builder())
}

/// The demo app on a hub builder prepared by the caller (joined to a cluster, say).
pub fn app_with(secret: String, max_per_user: Option<usize>, builder: HubBuilder) -> (Router, Hub) {
    let hub = build_hub(&secret, max_per_user, builder);
    let router = Router::new()
        .route("/", get(page))
        .route("/favicon.ico", get(favicon))
        .route("/config", get(config))
        .route("/realtime.js", get(client_js))
        .route("/socketio-lite.js", get(socketio_client_js))
        .route("/login", post(login))
        .route("/posts", post(create_post))
        .route("/notify/{user}", post(notify_user))
        .with_state(AppState {
            hub: hub.clone(),
            secret,
            rate_limited: max_per_user.is_none(),
        })
        .layer(hub.layer("/ws"));
    (router, hub)
}

/// Logs a refused connection at `info`, whatever refused it (a bad request, the origin, a bad
/// token, a limit, a connect guard, a shutdown) and over whichever protocol: what the client
/// was told and what is known of it. A refusal never carries the token.
fn log_refusal(refused: &Refused) {
    tracing::info!(
        cause = %refused.cause(),
        transport = %refused.transport(),
        ns = refused.namespace(),
        addr = refused.address().map(tracing::field::display),
        user = refused.user_id(),
        status = refused.status().map(|s| s.as_u16()),
        reason = refused.message(),
        "connection refused"
    );
}

/// What the page needs to know: the limits it enforces, the event rate, the protocols.
async fn config(State(app): State<AppState>) -> Json<Value> {
    let rate = app
        .rate_limited
        .then(|| json!({ "perSecond": EVENTS_PER_SECOND, "burst": EVENT_BURST }));
    Json(json!({
        "limits": {
            "text": MAX_TEXT_CHARS,
            "room": app.hub.config().max_room_name_len,
            "user": MAX_USER_BYTES,
            "status": MAX_STATUS_CHARS,
            "fileName": MAX_FILE_NAME_CHARS,
            "fileBytes": MAX_FILE_BYTES,
        },
        "rateLimit": rate,
        "socketio": cfg!(feature = "socketio"),
        "endpoints": endpoints().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    }))
}

/// A small icon, so that browsers asking for one get it.
async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        FAVICON,
    )
}

/// The icon: a speech bubble.
const FAVICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><path fill="#2f6feb" d="M2 2h12a1 1 0 0 1 1 1v8a1 1 0 0 1-1 1H7l-4 3v-3H2a1 1 0 0 1-1-1V3a1 1 0 0 1 1-1z"/></svg>"##;

/// Adds `GET /metrics`: the hub's metrics in Prometheus text format (feature `metrics`). It
/// installs the process-wide `metrics` recorder, so it is called once, before the hub is
/// built (the hub registers its series at zero as it is built).
#[cfg(feature = "metrics")]
pub fn with_metrics(app: Router) -> Router {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("a metrics recorder is already installed");
    app.route(
        "/metrics",
        get(move || {
            handle.run_upkeep();
            let text = handle.render();
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
        }),
    )
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(State(app): State<AppState>, Json(body): Json<Login>) -> impl IntoResponse {
    let user = body.user.trim();
    if let Err(e) = check_length("user", user, MAX_USER_BYTES, Unit::Bytes) {
        return (StatusCode::BAD_REQUEST, Json(login_error(e)));
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + 3600;
    let claims = json!({ "sub": user, "exp": exp });
    match jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(app.secret.as_bytes()),
    ) {
        Ok(token) => (StatusCode::OK, Json(json!({ "token": token }))),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e.to_string() })),
        ),
    }
}

/// A refused login: `{"error": <message>, "field", "limit", ...}`.
fn login_error(e: ErrorEvent) -> Value {
    let mut body = e.to_value();
    if let Some(map) = body.as_object_mut() {
        map.remove("status");
        let message = map.remove("message").unwrap_or_default();
        map.insert("error".to_owned(), message);
    }
    body
}

#[derive(Deserialize)]
struct NewPost {
    title: String,
}

async fn create_post(State(app): State<AppState>, Json(post): Json<NewPost>) -> Json<Value> {
    let message = Value::String(format!("New post: {}", post.title));
    let delivered = app.hub.send(Notification { message });
    Json(json!({ "delivered": delivered }))
}

#[derive(Deserialize)]
struct Notify {
    message: Value,
}

async fn notify_user(State(app): State<AppState>, Path(user): Path<String>, Json(body): Json<Notify>) -> Json<Value> {
    let delivered = app.hub.to_user(&user).send(Notification { message: body.message });
    Json(json!({ "delivered": delivered }))
}

async fn page() -> Html<&'static str> {
    Html(include_str!("chat/index.html"))
}

async fn client_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../clients/js/realtime.js"),
    )
}

async fn socketio_client_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../clients/js/socketio-lite.js"),
    )
}

/// A listener with a backlog of 1024 (tokio's default of 128 drops SYNs under load).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Joins the cluster the environment names, first found of: `NATS_URL` (feature `nats`),
/// `REDIS_CLUSTER_URLS` (a Redis Cluster's seed nodes, comma-separated; feature `redis`),
/// `REDIS_URL` (feature `redis`), so that instances on several ports act as one chat; alone
/// without any. A URL set in a build without its feature stops the demo with a message saying so.
async fn join_cluster(builder: HubBuilder) -> HubBuilder {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (nats, redis_cluster, redis) = (var("NATS_URL"), var("REDIS_CLUSTER_URLS"), var("REDIS_URL"));
    let lacking = match (&nats, &redis_cluster, &redis) {
        (Some(_), _, _) if !cfg!(feature = "nats") => Some(("NATS_URL", "nats")),
        (None, Some(_), _) if !cfg!(feature = "redis") => Some(("REDIS_CLUSTER_URLS", "redis")),
        (None, None, Some(_)) if !cfg!(feature = "redis") => Some(("REDIS_URL", "redis")),
        _ => None,
    };
    if let Some((var, feature)) = lacking {
        tracing::error!("{var} is set, but this build has no `{feature}` feature: run with `--features {feature}`");
        std::process::exit(2);
    }
    #[cfg(feature = "nats")]
    if let Some(url) = nats {
        let options = tower_realtime::adapter::NatsOptions::default();
        let (adapter, inbound) = (tower_realtime::adapter::NatsAdapter::connect(&url, options).await)
            .expect("could not reach NATS (with JetStream) at NATS_URL");
        tracing::info!(node = adapter.node_id(), "joined the cluster on NATS at {url}");
        return builder.cluster(adapter, inbound);
    }
    #[cfg(feature = "redis")]
    if let Some(seeds) = redis_cluster {
        let options = tower_realtime::adapter::RedisOptions::default();
        let seeds: Vec<&str> = seeds.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        let (adapter, inbound) = (tower_realtime::adapter::RedisAdapter::connect_cluster(&seeds, options).await)
            .expect("could not reach the Redis Cluster at REDIS_CLUSTER_URLS");
        tracing::info!(
            node = adapter.node_id(),
            "joined the cluster on the Redis Cluster at {seeds:?}"
        );
        return builder.cluster(adapter, inbound);
    }
    #[cfg(feature = "redis")]
    if let Some(url) = redis {
        let options = tower_realtime::adapter::RedisOptions::default();
        let (adapter, inbound) = (tower_realtime::adapter::RedisAdapter::connect(&url, options).await)
            .expect("could not reach Redis at REDIS_URL");
        tracing::info!(node = adapter.node_id(), "joined the cluster on Redis at {url}");
        return builder.cluster(adapter, inbound);
    }
    tracing::info!("running alone (set NATS_URL, REDIS_CLUSTER_URLS or REDIS_URL to join a cluster)");
    builder
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let secret = std::env::var("JWT_SECRET").unwrap_or_else(|_| {
        tracing::warn!("JWT_SECRET is not set: using the demo's development secret; never do this in production");
        DEV_SECRET.to_owned()
    });
    let max_per_user = std::env::var("MAX_CONNECTIONS_PER_USER")
        .ok()
        .and_then(|v| v.parse().ok());
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000);

    let builder = join_cluster(Hub::builder()).await;
    // The recorder before the hub: the hub registers every series at zero as it is built.
    #[cfg(feature = "metrics")]
    let metrics = with_metrics(Router::new());
    let (app, hub) = app_with(secret, max_per_user, builder);
    #[cfg(feature = "metrics")]
    let app = metrics.merge(app);

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = listen(addr).expect("could not listen");
    let served: Vec<String> = endpoints()
        .iter()
        .map(|(name, route)| format!("{name} {route}"))
        .collect();
    let socketio = if cfg!(feature = "socketio") {
        format!(", Socket.IO at http://{addr}/socket.io/")
    } else {
        String::new()
    };
    tracing::info!(
        "chat demo on http://{addr} (native WebSocket at ws://{addr}/ws{socketio}): {}",
        served.join(", ")
    );
    let shutdown = hub.shutdown_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .expect("server error");
    // Give the last close frames a moment to leave.
    tokio::time::sleep(Duration::from_millis(50)).await;
}
