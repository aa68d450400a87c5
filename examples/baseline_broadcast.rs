//! The baseline for the benchmarks: a minimal broadcast server on tokio-tungstenite alone,
//! with batched writes, for `examples/loadgen.rs` to measure in the same run as the hub.
//!
//! ```text
//! cargo run --release --example baseline_broadcast     # ws://127.0.0.1:3100/ (any path)
//! PORT=3101 cargo run --release --example baseline_broadcast
//! ```
//!
//! What it does, and no more:
//!
//! - every connection is in one room; the `token` query parameter is ignored (no auth);
//! - `joinRoom` is acked like the demo acks it (`{"ack":id,"data":{"event":"joinedRoom",…}}`),
//!   nothing else happens;
//! - `message` `{"text","room"}` is sent to every connection, the sender too, as the demo
//!   sends it: `{"event":"message","data":{"text","sender","timestamp","room"}}`, encoded once;
//!   acked when it has an id;
//! - each connection has a bounded queue (1,024 messages); a broadcast pushes into every queue
//!   without waiting, dropping the message for a full one (and counting it);
//! - each connection's writer drains its queue, feeds everything queued (up to 256), and
//!   flushes once;
//! - the same socket settings as the hub: a 4 KiB read buffer, no write buffer beyond a
//!   frame, `TCP_NODELAY`; a listen backlog of 1,024.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use futures_util::{SinkExt, StreamExt};
use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::{net::TcpStream, sync::mpsc};
use tokio_tungstenite::tungstenite::{protocol::WebSocketConfig, Message, Utf8Bytes};

const QUEUE: usize = 1024;
const WRITE_BATCH: usize = 256;

#[derive(Default)]
struct Room {
    members: RwLock<HashMap<u64, mpsc::Sender<Message>>>,
    next_id: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Deserialize)]
struct Inbound {
    event: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    id: Option<u64>,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn ack(id: u64, data: &Value) -> Message {
    Message::Text(Utf8Bytes::from(json!({ "ack": id, "data": data }).to_string()))
}

async fn connection(room: Arc<Room>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    let id = room.next_id.fetch_add(1, Ordering::Relaxed);
    room.members.write().insert(id, tx.clone());

    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            let mut n = 1;
            while n < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(msg) => {
                        if sink.feed(msg).await.is_err() {
                            return;
                        }
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });

    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(frame) = serde_json::from_str::<Inbound>(&text) else {
            continue;
        };
        match frame.event.as_str() {
            "joinRoom" => {
                if let Some(id) = frame.id {
                    let _ = tx.try_send(ack(id, &json!({ "event": "joinedRoom", "room": frame.data })));
                }
            }
            "message" => {
                let out = json!({
                    "event": "message",
                    "data": {
                        "text": frame.data["text"],
                        "sender": "anonymous",
                        "timestamp": now_rfc3339(),
                        "room": frame.data["room"],
                    }
                });
                let msg = Message::Text(Utf8Bytes::from(out.to_string()));
                let mut dropped = 0;
                for member in room.members.read().values() {
                    if member.try_send(msg.clone()).is_err() {
                        dropped += 1;
                    }
                }
                if dropped > 0 {
                    room.dropped.fetch_add(dropped, Ordering::Relaxed);
                }
                if let Some(id) = frame.id {
                    let _ = tx.try_send(ack(id, &json!({ "event": "message", "data": "Message received" })));
                }
            }
            _ => {}
        }
    }
    room.members.write().remove(&id);
    drop(tx);
    let _ = writer.await;
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3100);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
    println!("baseline broadcast server on ws://{addr}/ (pid {})", std::process::id());
    let room = Arc::new(Room::default());
    let stats = room.clone();
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            let dropped = stats.dropped.load(Ordering::Relaxed);
            if dropped != last {
                println!("messages dropped on full queues so far: {dropped}");
                last = dropped;
            }
        }
    });
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(connection(room.clone(), stream));
    }
}
