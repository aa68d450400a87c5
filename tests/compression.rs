//! permessage-deflate (RFC 7692) over a real socket: the negotiation, compressed and
//! uncompressed messages on one connection, the size limit while inflating, and a broadcast
//! compressed once for all its recipients.

mod common;

use std::net::SocketAddr;

use common::raw::{self, Raw};
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};
use tower_realtime::{AllowAnonymous, Compression, Emitter, Hub, RawMessage, Socket};

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const RSV1: u8 = 0x40;

/// An echo hub (raw messages back as they came) with compression from 64 bytes on, and
/// messages up to 64 KiB.
fn hub(compression: Option<Compression>) -> Hub {
    let mut builder = Hub::builder()
        .auth(AllowAnonymous::new())
        .allow_any_origin()
        .configure(|c| c.max_message_size = 64 * 1024)
        .on_raw(|socket: Socket, msg: RawMessage| async move {
            socket.send_raw(msg);
        });
    if let Some(compression) = compression {
        builder = builder.compression(compression);
    }
    builder.build()
}

fn compression() -> Compression {
    let mut c = Compression::default();
    c.threshold = 64;
    c
}

/// A client's compressed message: raw deflate, sync flush, the tail removed.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(flate2::Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A server's compressed message, inflated.
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
    out
}

/// A compressed client frame (RSV1 set).
fn compressed_frame(opcode: u8, data: &[u8]) -> Vec<u8> {
    let mut f = raw::frame(true, opcode, &deflate(data));
    f[0] |= RSV1;
    f
}

async fn start(hub: &Hub) -> SocketAddr {
    common::serve_hub(hub).await
}

fn chat_line(i: usize) -> String {
    json!({"event": "message", "data": {"room": "lobby", "user": "ada", "text": format!("line {i}: the quick brown fox jumps over the lazy dog")}}).to_string()
}

#[tokio::test]
async fn agreed_when_offered_and_messages_both_ways_arrive_intact() {
    let hub = hub(Some(compression()));
    let addr = start(&hub).await;
    let (mut ws, head) = Raw::connect_to(addr, "/ws", OFFER).await;
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains(
            "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        ),
        "{head}"
    );

    // A compressed message in, compressed back (past the threshold).
    let long: String = (0..20).map(chat_line).collect();
    ws.send(&compressed_frame(raw::TEXT, long.as_bytes())).await;
    let (first, payload) = ws.next_frame_bits().await;
    assert_eq!(first, 0x80 | RSV1 | raw::TEXT);
    assert!(payload.len() < long.len() / 3, "{} of {}", payload.len(), long.len());
    assert_eq!(inflate(&payload), long.as_bytes());

    // An uncompressed message in, on the same connection; a short one goes back uncompressed.
    ws.send(&raw::frame(true, raw::TEXT, b"short")).await;
    assert_eq!(ws.next_frame_bits().await, (0x80 | raw::TEXT, b"short".to_vec()));

    // A compressed message in fragments (RSV1 on the first only), with a ping between them.
    let packed = deflate(long.as_bytes());
    let (a, b) = packed.split_at(packed.len() / 2);
    let mut start = raw::frame(false, raw::TEXT, a);
    start[0] |= RSV1;
    ws.send(&start).await;
    ws.send(&raw::frame(true, raw::PING, b"p")).await;
    ws.send(&raw::frame(true, 0x0, b)).await;
    assert_eq!(ws.next_frame_bits().await, (0x80 | raw::PONG, b"p".to_vec()));
    let (first, payload) = ws.next_frame_bits().await;
    assert_eq!(first, 0x80 | RSV1 | raw::TEXT);
    assert_eq!(inflate(&payload), long.as_bytes());

    // Binary too.
    let bin = vec![7u8; 10_000];
    ws.send(&compressed_frame(0x2, &bin)).await;
    let (first, payload) = ws.next_frame_bits().await;
    assert_eq!(first, 0x80 | RSV1 | 0x2);
    assert_eq!(inflate(&payload), bin);

    let counters = hub.counters();
    assert_eq!(counters.deflate_bytes_in, (2 * long.len() + bin.len()) as u64);
    assert!(
        counters.deflate_bytes_out < counters.deflate_bytes_in / 3,
        "{counters:?}"
    );
}

#[tokio::test]
async fn not_agreed_without_an_offer_or_with_compression_off() {
    // Compression on, no offer: no extension, and RSV1 is a protocol error.
    let on = hub(Some(compression()));
    let addr = start(&on).await;
    let (mut ws, head) = Raw::connect_to(addr, "/ws", "").await;
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-extensions"),
        "{head}"
    );
    ws.send(&compressed_frame(raw::TEXT, b"hello hello hello")).await;
    let (code, _, _) = ws.expect_close().await;
    assert_eq!(code, 1002);

    // Compression off (the default), an offer: declined.
    let off = hub(None);
    let addr = start(&off).await;
    let (mut ws, head) = Raw::connect_to(addr, "/ws", OFFER).await;
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-extensions"),
        "{head}"
    );
    let long: String = (0..20).map(chat_line).collect();
    ws.send(&raw::frame(true, raw::TEXT, long.as_bytes())).await;
    assert_eq!(ws.next_frame_bits().await, (0x80 | raw::TEXT, long.into_bytes()));
}

#[tokio::test]
async fn a_compressed_message_that_inflates_past_the_limit_gets_1009() {
    let hub = hub(Some(compression()));
    let addr = start(&hub).await;
    let (mut ws, _) = Raw::connect_to(addr, "/ws", OFFER).await;
    // 10 MiB of zeros compress to about 10 KiB: well under the limit as sent.
    let bomb = compressed_frame(0x2, &vec![0u8; 10 << 20]);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    ws.send(&bomb).await;
    let (code, reason, _) = ws.expect_close().await;
    assert_eq!((code, reason.as_str()), (1009, "message too big"));
}

#[tokio::test]
async fn a_broadcast_is_compressed_once_for_every_recipient() {
    let hub = hub(Some(compression()));
    let addr = start(&hub).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(Raw::connect_to(addr, "/ws", OFFER).await.0);
    }
    // One that did not offer compression gets the message as it is.
    let (mut plain, _) = Raw::connect_to(addr, "/ws", "").await;
    for _ in 0..100 {
        if hub.connection_count() == 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = hub.counters();
    let data: Vec<String> = (0..20).map(chat_line).collect();
    assert_eq!(hub.emit("news", &data), 6);
    let mut sizes = Vec::new();
    for ws in &mut clients {
        let (first, payload) = ws.next_frame_bits().await;
        assert_eq!(first, 0x80 | RSV1 | raw::TEXT);
        let event: Value = serde_json::from_slice(&inflate(&payload)).unwrap();
        assert_eq!(event, json!({"event": "news", "data": data}));
        sizes.push(payload.len());
    }
    let (first, payload) = plain.next_frame_bits().await;
    assert_eq!(first, 0x80 | raw::TEXT);
    let event: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(event, json!({"event": "news", "data": data}));

    let after = hub.counters();
    assert_eq!(after.deflate_compressions - before.deflate_compressions, 1, "{after:?}");
    let sent: u64 = sizes.iter().map(|&n| n as u64).sum();
    assert_eq!(after.deflate_bytes_out - before.deflate_bytes_out, sent);
    assert_eq!(
        after.deflate_bytes_in - before.deflate_bytes_in,
        5 * payload.len() as u64
    );
}
