//! A Socket.IO server with the fixed behaviour that Engine.IO v4 / Socket.IO v5 conformance
//! suites expect, built from the crate's public API only.
//!
//! ```text
//! cargo run --features socketio --example socketio_conformance     # http://localhost:3000/socket.io/
//! ```
//!
//! - The reference server's settings for the official suite (socketio/socket.io-protocol's
//!   `test-suite`): `pingInterval` 300 ms, `pingTimeout` 200 ms, `maxPayload` 1,000,000,
//!   `connectTimeout` 1000 ms, any origin; polling and WebSocket.
//! - The namespaces `/` and `/custom` accept any client; others get CONNECT_ERROR
//!   `{"message":"Invalid namespace"}`.
//! - On connect the server emits `auth` with the CONNECT payload (or `{}`).
//! - `message` (any arguments, binary included) is answered with `message-back` and the same
//!   arguments; `message-with-ack` is acknowledged with the same arguments.

use std::time::Duration;

use serde_json::json;
use tower_realtime::{
    socketio::SocketIoConfig, AllowAnonymous, Args, Attachments, Hub, NamespaceBuilder, Reply, Socket,
};

/// The behaviour shared by `/` and `/custom`.
fn conformance(ns: NamespaceBuilder) -> NamespaceBuilder {
    ns.on_connect(|socket: Socket| async move {
        // The CONNECT's answer goes out on its own first: the official suite reads one
        // message per turn of its event loop, and drops a second that came in the same read.
        tokio::task::yield_now().await;
        let auth = socket.auth_payload().cloned().unwrap_or_else(|| json!({}));
        socket.emit("auth", &auth);
    })
    .on(
        "message",
        |socket: Socket, Args(args): Args, Attachments(bin): Attachments| async move {
            socket.emit_args("message-back", args, bin);
        },
    )
    .on(
        "message-with-ack",
        |Args(args): Args, Attachments(bin): Attachments| async move { Reply::args(args).with_attachments(bin) },
    )
}

/// The conformance hub.
pub fn hub() -> Hub {
    let config = SocketIoConfig::default()
        .ping(Duration::from_millis(300), Duration::from_millis(200))
        .max_payload(1_000_000)
        .connect_timeout(Duration::from_millis(1000));
    Hub::builder()
        .auth(AllowAnonymous::new())
        .allow_any_origin()
        .socketio(config)
        .configure(|c| {
            c.max_event_name_len = 1024;
            // A conformance suite opens every connection from one address, in quick succession.
            c.max_connections_per_address = usize::MAX;
            c.connect_rate_per_address = None;
        })
        .namespace("/", conformance)
        .namespace("/custom", conformance)
        .build()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000);
    let hub = hub();
    // `localhost` may resolve to either address family.
    if let Ok(v6) = tokio::net::TcpListener::bind(("::1", port)).await {
        tokio::spawn(hub.clone().serve(v6, "/"));
    }
    let v4 = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("Socket.IO conformance server on http://localhost:{port}/socket.io/");
    hub.serve(v4, "/").await
}
