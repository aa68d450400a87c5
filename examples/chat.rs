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

use std::{net::SocketAddr, time::Duration};

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
    Data, DisconnectReason, Emitter, ErrorEvent, History, Hub, HubBuilder, JwtAuth, Presence, RateLimit, Refused,
    Socket,
};

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

#[derive(Deserialize)]
struct ChatMessage {
    text: String,
    room: String,
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
    let errors = json!([{ "field": field, "code": "length", "message": rule }]);
    ErrorEvent::new(format!("{field}: {rule}"))
        .with_field("field", field)
        .with_field("min", min)
        .with_field("limit", max)
        .with_field("errors", errors)
}

#[derive(Deserialize)]
struct RoomMessage {
    room: String,
    message: Value,
}

/// A file shared with a room: `data` is the client's binary attachment.
#[derive(Deserialize)]
struct SharedFile {
    room: String,
    name: String,
    data: Bytes,
}

/// The file as the room's other members get it: `data` goes out as binary again.
#[derive(Serialize)]
struct FileShared<'a> {
    from: &'a str,
    room: &'a str,
    name: &'a str,
    data: &'a Bytes,
}

#[derive(Deserialize)]
struct Typing {
    room: String,
}

/// What a connection keeps in its own state (`Socket::set_data`, so that the hub, and any node
/// of a cluster, can read it by connection id).
#[derive(Serialize, Deserialize, Default)]
struct ConnState {
    status: Option<String>,
}

#[derive(Deserialize)]
struct PrivateMessage {
    to: String,
    message: Value,
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
            socket.emit("onlineUsers", &online_users(socket.hub()).await);
            let statuses = statuses(socket.hub());
            if !statuses.is_empty() {
                socket.emit("statuses", &statuses);
            }
        })
        .on_disconnect(|socket: Socket, reason: DisconnectReason| async move {
            tracing::info!(conn = %socket.id(), user = sender(&socket), ?reason, "disconnected");
        })
        .on_refused(log_refusal)
        .on_presence(|hub: Hub, presence: Presence| async move {
            hub.emit("presence", &presence);
            // The user's own connections had the list as they connected: once per connect.
            let mut everyone = hub.broadcast();
            if presence.online {
                for id in hub.connections_of(&presence.user_id) {
                    everyone = everyone.except(id);
                }
            }
            everyone.emit("onlineUsers", &online_users(&hub).await);
        })
        .on("joinRoom", |socket: Socket, Data(room): Data<String>| async move {
            if socket.join(&room)? {
                socket
                    .to(&room)
                    .emit("userJoined", &json!({ "userId": sender(&socket), "room": room }));
            }
            Ok::<_, ErrorEvent>(json!({ "event": "joinedRoom", "room": room }))
        })
        .on("leaveRoom", |socket: Socket, Data(room): Data<String>| async move {
            if socket.leave(&room) {
                socket
                    .hub()
                    .to_room(&room)
                    .emit("userLeft", &json!({ "userId": sender(&socket), "room": room }));
            }
            json!({ "event": "leftRoom", "room": room })
        })
        .on("message", |socket: Socket, Data(msg): Data<ChatMessage>| async move {
            check_length("text", &msg.text, MAX_TEXT_CHARS, Unit::Characters)?;
            check_length("room", &msg.room, socket.hub().config().max_room_name_len, Unit::Bytes)?;
            if !socket.in_room(&msg.room) {
                return Err(ErrorEvent::new(format!("not a member of room {}", msg.room)));
            }
            let out =
                json!({ "text": msg.text, "sender": sender(&socket), "timestamp": now_rfc3339(), "room": msg.room });
            socket.hub().to_room(&msg.room).emit("message", &out);
            Ok(json!({ "event": "message", "data": "Message received" }))
        })
        .on(
            "messageToRoom",
            |socket: Socket, Data(msg): Data<RoomMessage>| async move {
                if !socket.in_room(&msg.room) {
                    return Err(ErrorEvent::new(format!("not a member of room {}", msg.room)));
                }
                socket.to(&msg.room).emit(
                    "roomMessage",
                    &json!({ "message": msg.message, "sender": sender(&socket) }),
                );
                Ok(())
            },
        )
        .on(
            "privateMessage",
            |socket: Socket, Data(msg): Data<PrivateMessage>| async move {
                check_length("to", &msg.to, MAX_USER_BYTES, Unit::Bytes)?;
                if let Value::String(text) = &msg.message {
                    check_length("message", text, MAX_TEXT_CHARS, Unit::Characters)?;
                }
                // `from` is the authenticated sender, whatever the payload claims.
                let delivered = socket.hub().to_user(&msg.to).emit(
                    "privateMessage",
                    &json!({ "from": sender(&socket), "message": msg.message }),
                );
                let devices = devices_of(socket.hub(), &msg.to, delivered).await;
                Ok::<_, ErrorEvent>(json!({ "delivered": delivered, "devices": devices, "online": devices > 0 }))
            },
        )
        .on("setStatus", |socket: Socket, Data(status): Data<String>| async move {
            if status.chars().count() > MAX_STATUS_CHARS {
                let rule = format!("at most {MAX_STATUS_CHARS} characters");
                return Err(limit_error("status", &rule, 0, MAX_STATUS_CHARS));
            }
            // An empty status clears it.
            let status = (!status.is_empty()).then_some(status);
            socket
                .set_data(&ConnState { status: status.clone() })
                .map_err(ErrorEvent::internal)?;
            socket
                .hub()
                .emit("status", &json!({ "userId": sender(&socket), "status": status }));
            Ok(json!({ "event": "statusSet", "status": status }))
        })
        .on("whoami", |socket: Socket| async move {
            let status = socket.data::<ConnState>().unwrap_or_default().status;
            json!({ "userId": sender(&socket), "status": status })
        })
        .on("shareFile", |socket: Socket, Data(file): Data<SharedFile>| async move {
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
                from: sender(&socket),
                room: &file.room,
                name: &file.name,
                data: &file.data,
            };
            let delivered = socket.to(&file.room).emit("fileShared", &shared);
            Ok(json!({ "event": "fileShared", "delivered": delivered }))
        })
        .on("typing", |socket: Socket, Data(typing): Data<Typing>| async move {
            if !socket.in_room(&typing.room) {
                return Err(ErrorEvent::new(format!("not a member of room {}", typing.room)));
            }
            // Only worth having now: dropped for a busy connection, and a newer one for the
            // same user and room replaces one still queued.
            let user = sender(&socket);
            let key = format!("typing:{}:{user}", typing.room);
            socket
                .to(&typing.room)
                .volatile()
                .coalesce(&key)
                .emit("typing", &json!({ "userId": user, "room": typing.room }));
            Ok::<_, ErrorEvent>(())
        })
        .build()
}

/// The users online: on every node of the cluster when the demo is in one.
async fn online_users(hub: &Hub) -> Vec<String> {
    #[cfg(feature = "redis")]
    return hub.cluster_online_users().await.value;
    #[cfg(not(feature = "redis"))]
    hub.online_users()
}

/// The statuses set by the connections of this node, by user (the latest found for a user
/// with several): a connecting page's first view; `status` events keep it current.
fn statuses(hub: &Hub) -> serde_json::Map<String, Value> {
    let mut all = serde_json::Map::new();
    for user in hub.online_users() {
        let status = hub.connections_of(&user).into_iter().find_map(|id| {
            let data = hub.connection_data(id)?;
            serde_json::from_value::<ConnState>(data).ok()?.status
        });
        if let Some(status) = status {
            all.insert(user, Value::String(status));
        }
    }
    all
}

/// How many connections of `user` an emit to them was sent to: `delivered` alone, or, in a
/// cluster (where an emit kept in the history is delivered from Redis, and the other nodes'
/// recipients are not counted here), the user's connections on every node.
#[cfg_attr(not(feature = "redis"), allow(unused_variables))]
async fn devices_of(hub: &Hub, user: &str, delivered: usize) -> usize {
    #[cfg(feature = "redis")]
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
    let delivered = app.hub.emit(
        "notification",
        &json!({ "message": format!("New post: {}", post.title) }),
    );
    Json(json!({ "delivered": delivered }))
}

#[derive(Deserialize)]
struct Notify {
    message: Value,
}

async fn notify_user(State(app): State<AppState>, Path(user): Path<String>, Json(body): Json<Notify>) -> Json<Value> {
    let delivered = app
        .hub
        .to_user(&user)
        .emit("notification", &json!({ "message": body.message }));
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

    let builder = Hub::builder();
    // With REDIS_URL (and the `redis` feature), instances on several ports act as one chat.
    #[cfg(feature = "redis")]
    let builder = match std::env::var("REDIS_URL") {
        Ok(url) => {
            let options = tower_realtime::adapter::RedisOptions::default();
            let (adapter, inbound) = (tower_realtime::adapter::RedisAdapter::connect(&url, options).await)
                .expect("could not reach Redis at REDIS_URL");
            tracing::info!(node = adapter.node_id(), "joined the cluster at {url}");
            builder.redis(adapter, inbound)
        }
        Err(_) => builder,
    };
    #[cfg(not(feature = "redis"))]
    if std::env::var("REDIS_URL").is_ok() {
        tracing::warn!("REDIS_URL is set, but this build has no `redis` feature: running alone");
    }
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
