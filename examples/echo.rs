//! An RFC 6455 echo server, for protocol conformance suites (such as Autobahn's fuzzing client).
//!
//! ```text
//! cargo run --release --example echo        # ws://127.0.0.1:9001/
//! ```
//!
//! Anonymous connections at `/`; every text or binary message comes back unchanged, of the
//! same type, through the raw-message handler. Limits are generous (16 MiB messages) so that
//! large-message cases are exercised rather than refused. Close handshakes, pings,
//! fragmentation and invalid UTF-8 are handled as RFC 6455 requires, with its close codes;
//! permessage-deflate (RFC 7692) is agreed with clients that offer it.

use tower_realtime::{AllowAnonymous, Compression, Hub, RawMessage, Socket};

/// The echo hub: raw messages, 16 MiB limit, any origin, anonymous, permessage-deflate for
/// the clients that offer it (every message compressed that compressing makes smaller).
pub fn hub() -> Hub {
    let mut compression = Compression::default();
    compression.threshold = 0;
    Hub::builder()
        .compression(compression)
        .auth(AllowAnonymous::new())
        .allow_any_origin()
        .configure(|c| {
            c.max_message_size = 16 * 1024 * 1024;
            c.outbound_queue = 4096;
            // A conformance suite opens every connection from one address, in quick succession.
            c.max_connections_per_address = usize::MAX;
            c.connect_rate_per_address = None;
        })
        .on_raw(|socket: Socket, msg: RawMessage| async move {
            socket.send_raw(msg);
        })
        .build()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(9001);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("echo server on ws://127.0.0.1:{port}/");
    hub().serve(listener, "/").await
}
