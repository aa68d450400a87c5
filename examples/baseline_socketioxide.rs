//! socketioxide serving the part of the chat demo's contract that the load generator uses, to
//! compare with in the same run (`BENCHMARKS.md`): `joinRoom` (acknowledged), `message`
//! `{"text","room"}` sent on to the whole room, and `POST /posts` `{"title"}` sent to everyone
//! as `notification`. No authentication: the CONNECT packet's `auth` is ignored.
//!
//! ```text
//! PORT=3402 cargo run --release --example baseline_socketioxide
//! cargo run --release --example loadgen -- --protocol socketio --url ws://127.0.0.1:3402/socket.io/
//! ```
//!
//! Settings: socketioxide's defaults, except a queue of 1,024 packets per socket (the hub's
//! `outbound_queue`; socketioxide's default of 128 drops packets under the flat-out load).

use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use socketioxide::{
    extract::{AckSender, Data, SocketRef},
    SocketIo,
};

#[derive(Deserialize)]
struct ChatMessage {
    text: String,
    room: String,
}

#[derive(Deserialize)]
struct Post {
    title: String,
}

#[tokio::main]
async fn main() {
    let (layer, io) = SocketIo::builder().max_buffer_size(1024).build_layer();
    io.ns("/", async |socket: SocketRef| {
        socket.on(
            "joinRoom",
            async |socket: SocketRef, Data::<String>(room), ack: AckSender| {
                socket.join(room.clone());
                let _ = ack.send(&json!({ "event": "joinedRoom", "room": room }));
            },
        );
        socket.on("message", async |socket: SocketRef, Data::<ChatMessage>(msg)| {
            let out = json!({ "text": msg.text, "room": msg.room });
            let _ = socket.within(msg.room).emit("message", &out).await;
        });
    });
    let app = Router::new().route("/posts", post(posts)).with_state(io).layer(layer);
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3402);
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(([127, 0, 0, 1], port).into()).expect("the port is free");
    // A backlog past tokio's 128: 200 handshakes in flight would otherwise lose SYNs.
    let listener = socket.listen(4096).expect("listen");
    println!("socketioxide baseline on ws://127.0.0.1:{port}/socket.io/");
    axum::serve(listener, app).await.expect("server");
}

async fn posts(State(io): State<SocketIo>, Json(post): Json<Post>) -> (StatusCode, Json<Value>) {
    let _ = io.emit("notification", &json!({ "title": post.title })).await;
    (StatusCode::CREATED, Json(json!({ "ok": true })))
}
