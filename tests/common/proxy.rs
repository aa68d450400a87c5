//! A TCP forwarder to Redis that tests can cut and restore, to simulate an outage without
//! stopping the shared Redis server.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::{AbortHandle, JoinHandle},
};

/// A TCP forwarder to Redis that can be cut (every connection closed, new ones refused)
/// and restored.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let task = tokio::spawn({
            let (cut, conns) = (cut.clone(), conns.clone());
            async move {
                while let Ok((mut down, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(down);
                        continue;
                    }
                    let forward = tokio::spawn(async move {
                        if let Ok(mut up) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                    let mut conns = conns.lock().unwrap();
                    conns.retain(|h| !h.is_finished());
                    conns.push(forward.abort_handle());
                }
            }
        });
        Proxy { addr, cut, conns, task }
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
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// `redis://[auth@]host:port[/db]` → host:port, and the same URL through `proxy`.
pub async fn through(url: &str, proxy: Option<SocketAddr>) -> (SocketAddr, String) {
    let rest = url.strip_prefix("redis://").expect("a redis:// URL");
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    let upstream = tokio::net::lookup_host(host_port).await.unwrap().next().unwrap();
    let proxied = match proxy {
        Some(p) => url.replacen(host_port, &p.to_string(), 1),
        None => url.to_owned(),
    };
    (upstream, proxied)
}
