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
//! use tower_realtime::{Data, Emitter, Hub, JwtAuth, Socket};
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
//! | `metrics` | the hub's counters and handler latency through the `metrics` crate facade (below) | no |
//! | `typed` | typed events: [`Event`] (derive) declares an event once, [`HubBuilder::on_event`] and [`Emit::send`] check payloads and acks at compile time, `Hub::typescript` writes their TypeScript (ts-rs) | yes |
//! | `validate` | [`Valid<T>`](crate::Valid): payloads validated with the `validator` crate | yes |
//! | `socketio` | Socket.IO v5 / Engine.IO v4 for the official clients (module `socketio`) | no |
//! | `redis` | a Redis adapter: several app instances act as one hub (module `adapter`) | no |
//! | `unstable` | internals for the crate's benchmarks and fuzz targets (module `unstable`): the wire codecs, a connection with no socket. **No stability promise**; not for apps | no |
//!
//! # Metrics (feature `metrics`)
//!
//! Recorded through the [`metrics`](https://docs.rs/metrics) facade, to whatever recorder the
//! app installs (a Prometheus exporter, say); without one they cost next to nothing. The
//! counters (not the histogram) are also readable from [`Hub::counters`], feature or not.
//! Every series but the histogram is registered at zero when the hub is built, so install the
//! recorder before building the hub: a recorder installed later sees a series from its first
//! change only.
//!
//! | name | kind | what it counts |
//! |---|---|---|
//! | `realtime_connections` | gauge | connections open now |
//! | `realtime_connections_total` | counter | connections upgraded |
//! | `realtime_messages_in_total` | counter | frames received from clients |
//! | `realtime_messages_out_total` | counter | messages queued for clients, one per recipient |
//! | `realtime_bytes_out_total` | counter | bytes of message payload written to sockets (before compression) |
//! | `realtime_dropped_total` | counter | messages dropped on a full connection queue |
//! | `realtime_slow_consumer_closes_total` | counter | connections closed for a full queue |
//! | `realtime_recovered_total` | counter | clients that came back and got what they missed |
//! | `realtime_not_recovered_total` | counter | clients that asked to recover and could not |
//! | `realtime_history_evicted_total` | counter | events evicted from histories |
//! | `realtime_volatile_dropped_total` | counter | volatile emits not queued for a busy connection, one per recipient |
//! | `realtime_coalesced_replaced_total` | counter | coalesced emits that replaced a queued message with the same key |
//! | `realtime_deflate_compressions_total` | counter | messages compressed (permessage-deflate), once per message and setting however many recipients |
//! | `realtime_deflate_bytes_in_total` | counter | payload bytes of messages sent compressed, before compression, per recipient |
//! | `realtime_deflate_bytes_out_total` | counter | the same messages' bytes after compression, per recipient |
//! | `realtime_handshake_rejections_total` | counter | refused connections, every one the [`HubBuilder::on_refused`] hook sees; label `cause`: `bad_request`, `origin`, `auth` (a connect guard's or the connect hook's refusal too), `limit`, `shutting_down` |
//! | `realtime_handler_duration_seconds` | histogram | event handler run time; label `event` |
//!
//! # Where to read on
//!
//! - [`Hub`], [`Emitter`] and [`Emit`]: emitting, rooms, users, presence, shutdown;
//! - [`HubBuilder`]: handlers, hooks, authentication, limits;
//! - [`Config`]: every limit and timeout with its default;
//! - [`protocol`]: the wire format and every close code (also `docs/protocol.md`);
//! - [`auth`]: where tokens are looked for; [`Authenticator`] decides who they belong to;
//! - Socket.IO (feature `socketio`): `HubBuilder::socketio` turns it on, with a
//!   `socketio::SocketIoConfig` (its path, Engine.IO timings, the caps on sessions not yet
//!   connected); the same handlers, rooms and guards then serve socket.io-client, and
//!   `docs/protocol.md` says what a Socket.IO client sees;
//! - a cluster (feature `redis`): `HubBuilder::redis` with an `adapter::RedisAdapter`, and
//!   `docs/cluster.md` for what crosses Redis and how sessions recover across nodes.
//!
//! Each public item has one path. The everyday types, traits and extractors are at the crate
//! root; a module holds only what is not there: [`auth`] (token sources), [`protocol`] (close
//! codes), `socketio` (its config), `adapter` (the Redis adapter) and, with feature
//! `unstable`, `unstable`.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

#[cfg(feature = "cluster")]
pub mod adapter;
mod address;
pub mod auth;
mod builder;
mod clock;
mod config;
mod connection;
#[cfg(feature = "typed")]
mod event;
mod gateway;
mod hub;
mod layer;
mod origin;
mod outbox;
pub mod protocol;
#[cfg(feature = "socketio")]
pub mod socketio;
#[cfg(feature = "unstable")]
pub mod unstable;
mod util;

#[cfg(feature = "jwt")]
pub use auth::jwt::{JwtAuth, JwtError};
pub use auth::{
    authenticator::{AllowAnonymous, Authenticator},
    identity::{AuthError, AuthRequest, Identity},
};
pub use builder::{HubBuilder, NamespaceBuilder};
pub use config::{Compression, Config, ErrorStyle, RateLimit, SlowConsumerPolicy};
#[cfg(feature = "typed")]
pub use event::{Binary, ClientEvent, ErrorCode, ErrorData, Event, FieldError, ServerEvent, TokenExpiring};
#[cfg(feature = "validate")]
pub use gateway::Valid;
pub use gateway::{
    Args, Attachments, ConnectGuard, Data, ErrorEvent, EventContext, EventName, FromEvent, Guard, GuardContext,
    Handler, IntoConnectResult, IntoErrorEvent, IntoReply, Json, RawMessage, Reply, Socket, SocketExt, State,
};
#[cfg(feature = "typed")]
pub use gateway::{EventHandler, IntoAck};
pub use hub::{
    AckEmit, AckError, AckResponse, AckResponses, ConnectionId, CounterSnapshot, DisconnectReason, Emit, Emitter,
    History, Hub, Namespace, Presence, RefusalCause, Refused, Transport,
};
pub use layer::{RealtimeLayer, RealtimeService, ResponseBody, ResponseFuture};
/// ts-rs, whose `TS` derive writes the TypeScript of declared events' payloads (feature
/// `typed`); `#[ts(crate = "tower_realtime::ts_rs")]` uses this one.
#[cfg(feature = "typed")]
pub use ts_rs;

/// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
