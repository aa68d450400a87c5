//! `Hub::serve`, the hub on a port of its own: what it does with clients that hold sockets
//! without sending a request.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tower_realtime::{AllowAnonymous, Data, Hub};

fn hub(header_read_timeout: Duration) -> Hub {
    Hub::builder()
        .auth(AllowAnonymous::new())
        .configure(|c| c.header_read_timeout = header_read_timeout)
        .on("echo", |Data(v): Data<String>| async move { v })
        .build()
}

async fn serve(hub: &Hub) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hub.clone().serve(listener, "/ws"));
    addr
}

async fn control(addr: SocketAddr) {
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(format!("ws://{addr}/ws")))
        .await
        .expect("the control client connects in time")
        .expect("the control client connects");
    let mut client = Client::new(ws);
    assert_eq!(client.call("echo", json!("hi")).await["data"], json!("hi"));
}

/// A slow-loris client sends part of a request head and then nothing: the server closes its
/// connection once the header read timeout has passed, and serves others meanwhile.
#[tokio::test]
async fn a_slow_loris_client_is_disconnected_after_the_header_read_timeout() {
    let hub = hub(Duration::from_millis(300));
    let addr = serve(&hub).await;

    let mut loris = TcpStream::connect(addr).await.unwrap();
    loris
        .write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();

    // Others are served while it hangs on.
    control(addr).await;

    // Then its connection is closed: the stream ends (or is reset), with no upgrade.
    let mut got = Vec::new();
    let ended = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = loris.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the server closes a connection whose request head does not come"
    );
    assert!(
        !String::from_utf8_lossy(&got).contains(" 101 "),
        "no upgrade for an incomplete head"
    );

    // And the server still serves.
    control(addr).await;
}
