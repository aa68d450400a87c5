//! The echo example (`examples/echo.rs`), end to end: RFC 6455 behaviour over a real socket.

mod common;

#[allow(dead_code)]
#[path = "../examples/echo.rs"]
mod echo;

use std::net::SocketAddr;

use common::WAIT;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message,
};

async fn start() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(echo::hub().serve(listener, "/"));
    addr
}

async fn next(ws: &mut common::Ws) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("ok")
}

#[tokio::test]
async fn text_and_binary_come_back_unchanged_and_of_the_same_type() {
    let addr = start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    ws.send(Message::text("héllo")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("héllo"));
    ws.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![0u8, 255, 7]));
    // Not JSON, and no `event`: still echoed, the raw handler takes everything.
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("{not json"));
    // A large message (4 MiB) is echoed whole.
    let big = "x".repeat(4 * 1024 * 1024);
    ws.send(Message::text(big.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text(big));
    // A ping gets its pong with the same payload.
    ws.send(Message::Ping(vec![1u8, 2, 3].into())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::Pong(vec![1u8, 2, 3].into()));
    // The close handshake echoes the code.
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a close, got {other:?}"),
    }
}

/// A masked client frame, written by hand.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

async fn raw_upgrade(addr: SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// Reads one unmasked server frame: (opcode, payload).
async fn read_frame(s: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    tokio::time::timeout(WAIT, s.read_exact(&mut h))
        .await
        .expect("a frame in time")
        .unwrap();
    let mut len = (h[1] & 0x7f) as usize;
    if len == 126 {
        let mut l = [0u8; 2];
        s.read_exact(&mut l).await.unwrap();
        len = u16::from_be_bytes(l) as usize;
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    (h[0] & 0x0f, payload)
}

#[tokio::test]
async fn fragments_are_reassembled_and_interleaved_pings_answered() {
    let addr = start().await;
    let mut s = raw_upgrade(addr).await;
    s.write_all(&frame(false, 0x1, b"frag")).await.unwrap();
    s.write_all(&frame(true, 0x9, b"p")).await.unwrap(); // a ping between fragments
    s.write_all(&frame(false, 0x0, b"men")).await.unwrap();
    s.write_all(&frame(true, 0x0, b"ted")).await.unwrap();
    assert_eq!(read_frame(&mut s).await, (0xA, b"p".to_vec()), "the pong comes first");
    assert_eq!(read_frame(&mut s).await, (0x1, b"fragmented".to_vec()));
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_and_protocol_errors_with_1002() {
    let addr = start().await;
    let mut s = raw_upgrade(addr).await;
    s.write_all(&frame(true, 0x1, &[0xce, 0xba, 0xff, 0xfe])).await.unwrap();
    let (op, payload) = read_frame(&mut s).await;
    assert_eq!(op, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1007);

    let mut s = raw_upgrade(addr).await;
    s.write_all(&frame(true, 0x3, b"reserved opcode")).await.unwrap();
    let (op, payload) = read_frame(&mut s).await;
    assert_eq!(op, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
}
