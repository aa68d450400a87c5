//! Liveness: the heartbeat task keeps this node's entry in the liveness bucket (entries expire
//! `node_timeout` after their last write, by the server's clock), registers the node in the
//! nodes bucket (no expiry), syncs the presence when needed, and takes the users of dead nodes
//! (registered, no longer live) offline. Keys of these two buckets are removed whole (expired,
//! or purged), so their keys are read with one stream info request.

use std::{
    collections::HashSet,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use async_nats::jetstream::kv::Operation;
use tokio::sync::watch;

use super::{
    options::NatsAdapterError,
    presence::{forget, list_held},
    shared::{timed, Shared},
};

/// While NATS is unreachable, the heartbeat is retried at least this often.
const DOWN_PROBE: Duration = Duration::from_millis(500);
/// Dead nodes taken care of in one heartbeat at most.
const REAP_BATCH: usize = 16;

impl Shared {
    /// Puts this node's liveness entry, and registers it when it is not (first connect, or
    /// after others found it dead). With `scan`, a sync also takes off what an earlier run of
    /// the same node id left.
    pub(super) async fn register(&self, first: bool) -> Result<(), NatsAdapterError> {
        let limit = self.options.command_timeout;
        timed(limit, self.live.put(&self.node, bytes::Bytes::new())).await?;
        let entry = timed(limit, self.nodes.entry(&self.node)).await?;
        let registered = entry.is_some_and(|e| e.operation == Operation::Put);
        if !registered {
            timed(limit, self.nodes.put(&self.node, bytes::Bytes::new())).await?;
        }
        if first || !registered || self.needs_sync.load(Ordering::Relaxed) {
            // Scans the bucket only when something of this node may be left there.
            let scan = (first && registered) || (!first && self.needs_sync.load(Ordering::Relaxed));
            self.sync(scan).await?;
        }
        Ok(())
    }

    /// The live nodes, sorted (and remembered).
    pub(super) async fn live_nodes(&self) -> Result<Vec<String>, NatsAdapterError> {
        let mut nodes = list_held(&self.live, self.options.command_timeout).await?;
        nodes.sort_unstable();
        *self.live_cache.lock() = nodes.clone();
        Ok(nodes)
    }

    /// Finds the registered nodes that are not live, takes their users off, reports the ones
    /// this takes offline, and forgets those nodes.
    pub(super) async fn reap(&self, live: &[String]) -> Result<(), NatsAdapterError> {
        let limit = self.options.command_timeout;
        let live: HashSet<&str> = live.iter().map(String::as_str).collect();
        let dead: HashSet<String> = list_held(&self.nodes, limit)
            .await?
            .into_iter()
            .filter(|n| !live.contains(n.as_str()) && *n != self.node)
            .take(REAP_BATCH)
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        // A node registers after its first liveness write: one that registered since `live`
        // was read is live now.
        let mut confirmed = HashSet::with_capacity(dead.len());
        for node in dead {
            if !self.is_live(&node).await? {
                confirmed.insert(node);
            }
        }
        let dead = confirmed;
        if dead.is_empty() {
            return Ok(());
        }
        let offline = self.take_off(&dead).await?;
        self.report(Vec::new(), offline);
        for node in &dead {
            // Back meanwhile: it registers again by itself.
            if !self.is_live(node).await? {
                forget(&self.nodes, node, limit).await?;
            }
        }
        Ok(())
    }

    /// One heartbeat.
    pub(super) async fn beat(&self) -> Result<(), NatsAdapterError> {
        self.register(false).await?;
        let live = self.live_nodes().await?;
        self.reap(&live).await
    }
}

/// Heartbeats every interval (faster while NATS is away).
pub(super) async fn heartbeat(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = if shared.link_up() {
            shared.options.heartbeat
        } else {
            shared.options.heartbeat.min(DOWN_PROBE)
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = shared.wake_heartbeat.notified() => {}
        }
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = shared.beat().await {
            shared.warn_link.warn(&shared.node, "heartbeat failed", &e);
        }
    }
}
