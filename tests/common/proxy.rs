//! A TCP forwarder to Redis that tests can cut and restore, to simulate an outage without
//! stopping the shared Redis server; or freeze and thaw, to simulate a network that drops
//! packets silently (no FIN, no RST) and then delivers again.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::watch,
    task::{AbortHandle, JoinHandle},
};

/// A TCP forwarder to Redis that can be cut (every connection closed, new ones refused)
/// and restored, or frozen (nothing forwarded either way, every socket left open, new
/// connections accepted but not forwarded) and thawed (forwarding goes on where it stopped,
/// as TCP does when a partition heals before its retransmissions give up).
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    frozen: watch::Sender<bool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let (frozen, _) = watch::channel(false);
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let task = tokio::spawn({
            let (cut, conns, frozen) = (cut.clone(), conns.clone(), frozen.clone());
            async move {
                while let Ok((down, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(down);
                        continue;
                    }
                    let thawed = frozen.subscribe();
                    let forward = tokio::spawn(async move {
                        // A connection made during a freeze waits for the thaw, as a SYN that
                        // gets no answer would.
                        if wait_thawed(thawed.clone()).await.is_err() {
                            return;
                        }
                        if let Ok(up) = TcpStream::connect(upstream).await {
                            let (down_r, down_w) = down.into_split();
                            let (up_r, up_w) = up.into_split();
                            tokio::select! {
                                _ = pump(down_r, up_w, thawed.clone()) => {}
                                _ = pump(up_r, down_w, thawed) => {}
                            }
                        }
                    });
                    let mut conns = conns.lock().unwrap();
                    conns.retain(|h| !h.is_finished());
                    conns.push(forward.abort_handle());
                }
            }
        });
        Proxy {
            addr,
            cut,
            frozen,
            conns,
            task,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Stops forwarding in both directions, closing nothing: bytes in flight stay where they
    /// are, and neither side is told.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again what waited during the freeze, and what follows.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

/// Waits until the proxy is not frozen; `Err` when the proxy is gone.
async fn wait_thawed(mut frozen: watch::Receiver<bool>) -> Result<(), watch::error::RecvError> {
    frozen.wait_for(|f| !*f).await.map(|_| ())
}

/// Copies `from` to `to`, holding each chunk while the proxy is frozen (so nothing is read
/// from either side during a freeze, beyond one chunk already on its way).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if wait_thawed(frozen.clone()).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if wait_thawed(frozen.clone()).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// `scheme://[auth@]host:port[/path]` (`redis://`, `nats://`) → host:port, and the same URL
/// through `proxy`.
pub async fn through(url: &str, proxy: Option<SocketAddr>) -> (SocketAddr, String) {
    let (_, rest) = url.split_once("://").expect("a URL with a scheme");
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    let upstream = tokio::net::lookup_host(host_port).await.unwrap().next().unwrap();
    let proxied = match proxy {
        Some(p) => url.replacen(host_port, &p.to_string(), 1),
        None => url.to_owned(),
    };
    (upstream, proxied)
}
