//! `Hub::serve` out of file descriptors: `accept` fails with `EMFILE` while the process is at
//! its limit, and the server keeps serving once descriptors are free again.
//!
//! A binary of its own, with one test: it lowers the process's `RLIMIT_NOFILE` and installs
//! the process-wide log subscriber.
#![cfg(unix)]

mod common;

use std::fs::File;

use common::*;
use serde_json::json;
use tokio::net::TcpStream;
use tower_realtime::{AllowAnonymous, Data, Hub};

fn nofile() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit
}

fn set_nofile(limit: libc::rlimit) {
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// The highest file descriptor open in this process.
fn highest_fd() -> u64 {
    (std::fs::read_dir("/proc/self/fd").unwrap())
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap()
}

async fn echo_over(stream: TcpStream, addr: std::net::SocketAddr) {
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(
            format!("ws://{addr}/ws"),
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        ),
    )
    .await
    .expect("the handshake is answered in time")
    .expect("the handshake succeeds");
    let mut client = Client::new(ws);
    assert_eq!(client.call("echo", json!("hi")).await["data"], json!("hi"));
}

#[tokio::test]
async fn accept_failing_with_emfile_does_not_stop_the_server() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("tower_realtime=warn")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let hub = Hub::builder()
        .auth(AllowAnonymous::new())
        .on("echo", |Data(v): Data<String>| async move { v })
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(hub.clone().serve(listener, "/ws"));
    echo_over(TcpStream::connect(addr).await.unwrap(), addr).await;

    // Fill the descriptor table: a low limit, then files until there is no descriptor left.
    let saved = nofile();
    set_nofile(libc::rlimit {
        rlim_cur: (highest_fd() + 64).min(saved.rlim_max),
        rlim_max: saved.rlim_max,
    });
    let mut files = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    // One descriptor for the client's socket: its connection is made by the kernel, but the
    // server has no descriptor to accept it with.
    files.pop();
    let pending = TcpStream::connect(addr)
        .await
        .expect("the kernel completes the connection");
    assert!(
        eventually(|| logs.text().contains("os error 24") || server.is_finished()).await,
        "accept fails while the process is out of descriptors"
    );
    assert!(
        !server.is_finished(),
        "the server still runs after accept failed with EMFILE"
    );
    assert!(logs.text().contains("accepting a connection failed"), "{}", logs.text());

    // Descriptors free again: the waiting connection is accepted and served, and so is a new one.
    drop(files);
    set_nofile(saved);
    echo_over(pending, addr).await;
    echo_over(TcpStream::connect(addr).await.unwrap(), addr).await;
    assert!(!server.is_finished());
}
