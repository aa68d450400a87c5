//! The heartbeat task: keeps this node registered, reads the live nodes, syncs the presence
//! when needed, and replaces the command connection when it keeps failing.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use redis::aio::ConnectionManager;
use tokio::sync::watch;

use super::{
    conn::Conn,
    options::RedisAdapterError,
    shared::{manager_config, Shared},
};

/// Failed heartbeats in a row after which the command connection is replaced.
const REBUILD_AFTER: u32 = 3;
/// While Redis is unreachable, the heartbeat is retried at least this often.
const DOWN_PROBE: Duration = Duration::from_millis(500);

impl Shared {
    /// One heartbeat (and a sync when needed).
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
        Ok(())
    }
}

/// Heartbeats every interval (faster while Redis is away); replaces the command connection
/// when it keeps failing.
pub(super) async fn heartbeat(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
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
        if shared.beat().await.is_err() {
            let failures = shared.failures.fetch_add(1, Ordering::Relaxed) + 1;
            // A Redis Cluster connection reconnects to each shard by itself.
            if let (true, Some(client)) = (failures >= REBUILD_AFTER, &shared.client) {
                shared.failures.store(0, Ordering::Relaxed);
                match ConnectionManager::new_lazy_with_config(client.clone(), manager_config(&shared.options)) {
                    Ok(conn) => *shared.conn.lock() = Conn::Single(conn),
                    Err(e) => {
                        shared
                            .warn_link
                            .warn(&shared.node, "could not make a new connection", &e);
                    }
                }
            }
        }
    }
}
