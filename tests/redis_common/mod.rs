//! What the Redis Cluster tests that run in binaries of their own share: the cluster's seeds
//! from `REALTIME_TEST_REDIS_CLUSTER`, fast options, and whether an op from one node reaches
//! another.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tokio::sync::mpsc::Receiver;
use tower_realtime::adapter::{Inbound, Op, RedisAdapter, RedisOptions};

/// The cluster's seeds, or `None` (said on stderr, past the harness's capture) when
/// `REALTIME_TEST_REDIS_CLUSTER` is not set: `test` names what did not run.
pub fn seeds(test: &str) -> Option<Vec<String>> {
    match std::env::var("REALTIME_TEST_REDIS_CLUSTER") {
        Ok(urls) if !urls.is_empty() => Some(urls.split(',').map(str::to_owned).collect()),
        _ => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "{test} did not run: run tests/redis-cluster.sh start, and set \
                 REALTIME_TEST_REDIS_CLUSTER=redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103"
            );
            None
        }
    }
}

/// Options with a short heartbeat and timeouts, on a prefix of the test's own.
pub fn options(prefix: &str) -> RedisOptions {
    let mut o = RedisOptions::default();
    o.prefix = prefix.to_owned();
    o.heartbeat = Duration::from_millis(200);
    o.node_timeout = Duration::from_millis(800);
    o.command_timeout = Duration::from_millis(500);
    o
}

pub async fn next_op(rx: &mut Receiver<Inbound>, within: Duration) -> Option<(String, Op)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Inbound::Op { from, op })) => return Some((from, op)),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Whether an op from `from` reaches `to` within a few tries (ops sent while a subscription
/// is being made again may be lost: at most once).
pub async fn reaches(from: &RedisAdapter, to: &mut Receiver<Inbound>, tag: &str) -> bool {
    for attempt in 0..20 {
        let user = format!("{tag}-{attempt}");
        from.publish(&Op::DisconnectUser { user: user.clone() });
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match next_op(to, left).await {
                Some((_, Op::DisconnectUser { user: got })) if got == user => return true,
                Some(_) => continue,
                None => break,
            }
        }
    }
    false
}
