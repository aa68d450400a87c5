//! Notifications to users on all their devices, from HTTP routes and from a background job,
//! through a `/notifications` namespace served on a port of its own.
//!
//! ```text
//! cargo run --example notifications
//! # API on :3000, WebSocket on :3001 at /ws/notifications (anonymous ?user=<id> for the demo)
//! curl -XPOST localhost:3000/notify/alice -H 'content-type: application/json' -d '{"message":"hi"}'
//! curl -XPOST localhost:3000/notify -H 'content-type: application/json' -d '{"users":["alice","bob"],"message":"hi"}'
//! ```

use std::time::Duration;

use axum::{
    extract::{FromRef, Path, State},
    routing::post,
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tower_realtime::{AuthError, AuthRequest, Emitter, Hub, Identity, Namespace, Socket};

/// The app's state: the hub is one part of it, extracted with `State<Hub>` through `FromRef`.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub notifications: Namespace,
}

impl FromRef<AppState> for Hub {
    fn from_ref(state: &AppState) -> Hub {
        state.hub.clone()
    }
}

/// Sends `message` to every device of `user`. Returns how many connections it reached (zero,
/// without an error, when the user is offline).
pub fn send_to_user(notifications: &Namespace, user: &str, message: &Value) -> usize {
    notifications
        .to_user(user)
        .emit("notification", &json!({ "message": message }))
}

/// Sends `message` to every device of every user in `users` (each connection once).
pub fn send_to_users(notifications: &Namespace, users: &[String], message: &Value) -> usize {
    notifications
        .to_users(users.iter().map(String::as_str))
        .emit("notification", &json!({ "message": message }))
}

/// For the example only: the user id comes from the `user` query parameter. A real app uses
/// `JwtAuth` or its own `Authenticator`.
fn user_from_query(req: &AuthRequest<'_>) -> std::future::Ready<Result<Identity, AuthError>> {
    let user = (req.parts().uri.query().unwrap_or(""))
        .split('&')
        .find_map(|p| p.strip_prefix("user="))
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    std::future::ready(match user {
        Some(user) => Ok(Identity::user(user, Default::default())),
        None => Err(AuthError::new("add ?user=<id>")),
    })
}

/// The hub, with its `/notifications` namespace.
pub fn build_hub() -> Hub {
    Hub::builder()
        .auth(user_from_query)
        .namespace("/notifications", |ns| {
            ns.on_connect(|socket: Socket| async move {
                socket.emit("welcome", &json!({ "user": socket.user_id() }));
            })
            .on("unread", |_socket: Socket| async move { json!({ "unread": 0 }) })
        })
        .build()
}

#[derive(Deserialize)]
struct One {
    message: Value,
}

#[derive(Deserialize)]
struct Many {
    users: Vec<String>,
    message: Value,
}

/// The app's HTTP API.
pub fn api(hub: Hub) -> Router {
    let notifications = hub
        .of("/notifications")
        .expect("the namespace is registered in build_hub");
    Router::new()
        .route(
            "/notify/{user}",
            post(
                |State(app): State<AppState>, Path(user): Path<String>, Json(body): Json<One>| async move {
                    Json(json!({ "delivered": send_to_user(&app.notifications, &user, &body.message) }))
                },
            ),
        )
        .route(
            "/notify",
            post(|State(app): State<AppState>, Json(body): Json<Many>| async move {
                Json(json!({ "delivered": send_to_users(&app.notifications, &body.users, &body.message) }))
            }),
        )
        .route(
            "/online",
            // `State<Hub>` works too, through `FromRef`.
            axum::routing::get(|State(hub): State<Hub>| async move { Json(json!(hub.online_users())) }),
        )
        .with_state(AppState { hub, notifications })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let hub = build_hub();

    // A plain tokio task holding a hub clone: a job that notifies everyone now and then.
    let job_hub = hub.clone();
    tokio::spawn(async move {
        let notifications = job_hub.of("/notifications").expect("registered");
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            notifications.emit("notification", &json!({ "message": "still here" }));
        }
    });

    // The gateway on its own port, apart from the API.
    let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    tokio::spawn(hub.clone().serve(ws_listener, "/ws"));

    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("API on http://127.0.0.1:3000, notifications on ws://127.0.0.1:3001/ws/notifications?user=<id>");
    axum::serve(api_listener, api(hub)).await
}
