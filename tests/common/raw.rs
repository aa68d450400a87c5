//! A WebSocket client on a bare TCP stream, for what no well-behaved client sends (and for
//! looking at the frames' bits, as permessage-deflate's RSV1).

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

use super::WAIT;

pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame header; `masked` as a client must.
pub fn header(fin: bool, opcode: u8, len: u64, masked: bool) -> Vec<u8> {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
    if len < 126 {
        h.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        h.push(mask_bit | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(mask_bit | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    if masked {
        h.extend_from_slice(&MASK);
    }
    h
}

/// `payload` masked, as the start of a frame's payload.
pub fn mask(payload: &[u8]) -> Vec<u8> {
    payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]).collect()
}

/// A whole masked frame.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = header(fin, opcode, payload.len() as u64, true);
    f.extend_from_slice(&mask(payload));
    f
}

pub struct Raw {
    pub tcp: TcpStream,
}

impl Raw {
    /// Completes a handshake by hand; reads the answer's head byte by byte so that no
    /// frame is consumed with it.
    pub async fn connect(addr: SocketAddr, token: &str) -> Raw {
        Self::connect_to(addr, "/ws", &format!("Authorization: Bearer {token}\r\n"))
            .await
            .0
    }

    /// A handshake to `path` with `headers` (each line ending in `\r\n`): the connection and
    /// the answer's head.
    pub async fn connect_to(addr: SocketAddr, path: &str, headers: &str) -> (Raw, String) {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{headers}\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = timeout(WAIT, tcp.read_u8()).await.expect("no handshake answer");
            head.push(byte.expect("handshake answer"));
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        (Raw { tcp }, head)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// The next frame from the server: its opcode and payload.
    pub async fn next_frame(&mut self) -> (u8, Vec<u8>) {
        let (first, payload) = self.next_frame_bits().await;
        (first & 0x0f, payload)
    }

    /// The next frame from the server: its first byte (FIN, the reserved bits, the opcode)
    /// and its payload.
    pub async fn next_frame_bits(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        self.read_exact(&mut h).await;
        assert_eq!(h[1] & 0x80, 0, "a server frame must not be masked");
        assert_ne!(h[0] & 0x80, 0, "the server does not fragment");
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.read_exact(&mut b).await;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.read_exact(&mut b).await;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        self.read_exact(&mut payload).await;
        (h[0], payload)
    }

    async fn read_exact(&mut self, buf: &mut [u8]) {
        timeout(WAIT, self.tcp.read_exact(buf))
            .await
            .expect("nothing from the server in time")
            .expect("read from the server");
    }

    /// Reads up to the server's close frame, skipping pings and pongs. Returns the code,
    /// the reason and how many pings came first.
    pub async fn expect_close(&mut self) -> (u16, String, usize) {
        let mut pings = 0;
        loop {
            match self.next_frame().await {
                (PING, _) => pings += 1,
                (PONG, _) => {}
                (CLOSE, p) => {
                    assert!(p.len() >= 2, "a close frame without a code");
                    let reason = String::from_utf8(p[2..].to_vec()).unwrap();
                    return (u16::from_be_bytes([p[0], p[1]]), reason, pings);
                }
                (op, p) => panic!(
                    "expected a close frame, got opcode {op}: {}",
                    String::from_utf8_lossy(&p)
                ),
            }
        }
    }
}
