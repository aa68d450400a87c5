//! The heartbeat task: keeps this node registered, reads the live nodes, syncs the presence
//! when needed, and replaces the command connection when it keeps failing.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::sync::watch;

use super::{
    conn::timed,
    conn::{ping_primaries, Conn},
    options::RedisAdapterError,
    shared::Shared,
};

/// Failed heartbeats in a row after which the command connection is replaced.
const REBUILD_AFTER: u32 = 3;
/// While Redis is unreachable, the heartbeat is retried at least this often.
const DOWN_PROBE: Duration = Duration::from_millis(500);

impl Shared {
    /// One heartbeat (and a sync when needed). On a Redis Cluster, every primary must answer
    /// a ping too: a shard the command connection cannot reach any more fails the heartbeat,
    /// even while the shard of the heartbeat's keys answers.
    pub(super) async fn beat(&self) -> Result<(), RedisAdapterError> {
        let beat = self.run::<(i64, Vec<String>, Vec<String>)>(&self.scripts.heartbeat, &[]);
        let (added, offline, mut live) = beat.await.inspect_err(|_| {
            // A heartbeat that timed out here may still run in Redis, register this node
            // again and lose the answer that says so: the next one that succeeds syncs.
            self.needs_sync.store(true, Ordering::Relaxed);
        })?;
        self.report(Vec::new(), offline);
        live.sort_unstable();
        *self.live_cache.lock() = live;
        if added == 1 || self.needs_sync.load(Ordering::Relaxed) {
            self.sync().await?;
        }
        if let Conn::Cluster(conn) = self.conn() {
            let sent = tokio::time::Instant::now();
            self.track(sent, timed(self.options.command_timeout, ping_primaries(&conn)).await)?;
        }
        Ok(())
    }
}

/// Heartbeats every interval (faster while Redis is away); replaces the command connection
/// when it keeps failing (on a Redis Cluster too: its own recovery may never end).
pub(super) async fn heartbeat(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut failures = 0;
    loop {
        let wait = if shared.link_up.load(Ordering::Relaxed) {
            shared.options.heartbeat
        } else {
            shared.options.heartbeat.min(DOWN_PROBE)
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = shared.wake_heartbeat.notified() => {}
        }
        let Err(e) = shared.beat().await else {
            failures = 0;
            continue;
        };
        failures += 1;
        tracing::debug!(node = %shared.node, error = %e, failures, "redis adapter: heartbeat failed");
        // Not at once: a connection that was frozen may still deliver what it was given, when
        // TCP sends it again, and what goes on a new connection meanwhile would pass it.
        if failures >= REBUILD_AFTER {
            failures = 0;
            match shared.connector.reconnect(&shared.options) {
                Ok(conn) => {
                    tracing::info!(node = %shared.node, "redis adapter: new command connection");
                    *shared.conn.lock() = conn;
                }
                Err(e) => {
                    shared
                        .warn_link
                        .warn(&shared.node, "could not make a new connection", &e);
                }
            }
        }
    }
}
