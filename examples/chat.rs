//! The demo chat: an axum app with a NestJS-style chat gateway on `/ws`.
//!
//! ```text
//! cargo run --example chat            # then open http://127.0.0.1:3000
//! PORT=3001 JWT_SECRET=... cargo run --example chat
//! cargo run --example chat --features metrics   # adds GET /metrics (Prometheus text format)
//! ```
//!
//! The contract (routes, events, payloads) is in the README, section "The demo".

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::{Path, State},
    http::{header, StatusCode},
    response::{Html, IntoResponse},
    routing::{get, post},
    Json, Router,
};
use jsonwebtoken::{EncodingKey, Header};
use serde::Deserialize;
use serde_json::{json, Value};
use tower_realtime::{Data, Emitter, ErrorEvent, History, Hub, HubBuilder, JwtAuth, Presence, Socket, Valid};
use validator::Validate;

const DEV_SECRET: &str = "tower-realtime-demo-secret-change-me-please";

#[derive(Clone)]
struct AppState {
    hub: Hub,
    secret: String,
}

#[derive(Deserialize, Validate)]
struct ChatMessage {
    #[validate(length(min = 1, max = 1000))]
    text: String,
    #[validate(length(min = 1))]
    room: String,
}

#[derive(Deserialize)]
struct RoomMessage {
    room: String,
    message: Value,
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
            socket.emit("onlineUsers", &online_users(socket.hub()).await);
        })
        .on_presence(|hub: Hub, presence: Presence| async move {
            hub.emit("presence", &presence);
            hub.emit("onlineUsers", &online_users(&hub).await);
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
        .on("message", |socket: Socket, Valid(msg): Valid<ChatMessage>| async move {
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
                // `from` is the authenticated sender, whatever the payload claims.
                let delivered = socket.hub().to_user(&msg.to).emit(
                    "privateMessage",
                    &json!({ "from": sender(&socket), "message": msg.message }),
                );
                json!({ "delivered": delivered })
            },
        )
        .build()
}

/// The users online: on every node of the cluster when the demo is in one.
async fn online_users(hub: &Hub) -> Vec<String> {
    #[cfg(feature = "redis")]
    return hub.cluster_online_users().await.value;
    #[cfg(not(feature = "redis"))]
    hub.online_users()
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
        .route("/realtime.js", get(client_js))
        .route("/socketio-lite.js", get(socketio_client_js))
        .route("/login", post(login))
        .route("/posts", post(create_post))
        .route("/notify/{user}", post(notify_user))
        .with_state(AppState {
            hub: hub.clone(),
            secret,
        })
        .layer(hub.layer("/ws"));
    (router, hub)
}

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
    if user.is_empty() || user.len() > 64 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "user must be 1 to 64 bytes" })),
        );
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
    tracing::info!("chat demo on http://{addr}  (WebSocket: ws://{addr}/ws)");
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
