//! Realtime (WebSocket) messaging for an HTTP service you already have.
//!
//! `tower-realtime` is a tower [`Layer`](tower_layer::Layer): added to an axum, warp or plain
//! hyper app, it upgrades the requests meant for it, authenticates the handshake (JWT by
//! default), and registers each connection with a cloneable [`Hub`]. Any code in the app —
//! an HTTP handler, a job, a queue consumer — uses the `Hub` to emit to one connection, one
//! user (all their devices), a room, or everyone.
//!
//! # Quick start (axum)
//!
//! ```no_run
//! use axum::{extract::State, routing::post, Json, Router};
//! use serde_json::{json, Value};
//! use tower_realtime::{Data, Hub, JwtAuth, Socket};
//!
//! #[tokio::main]
//! async fn main() {
//!     let hub = Hub::builder()
//!         .auth(JwtAuth::hs256(b"change me: a secret of at least 32 bytes"))
//!         .on("joinRoom", |socket: Socket, Data(room): Data<String>| async move {
//!             socket.join(&room)?;
//!             socket.to(&room).emit("userJoined", &json!({ "userId": socket.user_id(), "room": room }));
//!             Ok::<_, tower_realtime::ErrorEvent>(json!({ "event": "joinedRoom", "room": room }))
//!         })
//!         .build();
//!
//!     let app = Router::new()
//!         .route("/posts", post(|State(hub): State<Hub>, Json(post): Json<Value>| async move {
//!             hub.emit("notification", &json!({ "message": format!("New post: {}", post["title"]) }));
//!         }))
//!         .with_state(hub.clone())
//!         .layer(hub.layer("/ws"));
//!
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//!     axum::serve(listener, app).await.unwrap();
//! }
//! ```
//!
//! # Feature flags
//!
//! | feature | what it does | default |
//! |---|---|---|
//! | `jwt` | [`JwtAuth`]: HS256/384/512, RS256 and ES256 tokens on the handshake | yes |
//! | `validate` | [`Valid<T>`](crate::Valid): payloads validated with the `validator` crate | yes |
//!
//! # Where to read on
//!
//! - [`Hub`] and [`Emit`]: emitting, rooms, users, presence, shutdown;
//! - [`HubBuilder`]: handlers, hooks, authentication, limits;
//! - [`config`]: every limit and timeout with its default;
//! - [`protocol`]: the wire format and every close code (also `docs/protocol.md`);
//! - [`auth`]: the [`Authenticator`] trait and where tokens are looked for.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
mod connection;
pub mod gateway;
pub mod hub;
pub mod layer;
pub mod protocol;

#[cfg(feature = "jwt")]
pub use auth::JwtAuth;
pub use auth::{AllowAnonymous, AuthError, AuthRequest, Authenticator, Identity};
pub use config::{Config, SlowConsumerPolicy};
#[cfg(feature = "validate")]
pub use gateway::Valid;
pub use gateway::{
    AckError, ConnectGuard, Data, DisconnectReason, ErrorEvent, EventContext, FromEvent, Guard, GuardContext, Handler,
    IntoErrorEvent, IntoReply, Json, Presence, RateLimit, RawMessage, Socket, State,
};
pub use hub::{ConnectionId, CounterSnapshot, Emit, Hub, HubBuilder, Namespace, NamespaceBuilder};
pub use layer::{RealtimeLayer, RealtimeService};

/// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
