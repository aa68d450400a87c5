//! Liveness: the heartbeat task keeps this node's entry in the liveness bucket (entries expire
//! `node_timeout` after their last write, by the server's clock) on time, every `heartbeat`,
//! whatever else is under way; after each write, unless the last one still runs, the upkeep
//! registers the node in the nodes bucket (no expiry), syncs the presence when needed, takes
//! the users of dead nodes (registered, no longer live) offline, and removes delete markers
//! left in the presence bucket. Keys of the liveness and nodes buckets are removed whole
//! (expired, or purged), so their keys are read with one stream info request.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
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
        self.keep_alive().await?;
        self.enrol(first).await
    }

    /// Writes this node's liveness entry.
    pub(super) async fn keep_alive(&self) -> Result<(), NatsAdapterError> {
        let limit = self.options.command_timeout;
        timed(limit, self.live.put(&self.node, bytes::Bytes::new())).await?;
        Ok(())
    }

    /// Registers this node when it is not (after a liveness write), and syncs its presence
    /// when needed.
    async fn enrol(&self, first: bool) -> Result<(), NatsAdapterError> {
        let limit = self.options.command_timeout;
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
        // Forgotten even when back meanwhile (a freeze that outlived its liveness entry): its
        // users were taken off, and a node finds that it must write them again by finding
        // itself unregistered.
        for node in &dead {
            forget(&self.nodes, node, limit).await?;
        }
        Ok(())
    }

    /// What follows a liveness write: registration and presence sync, dead nodes taken off,
    /// delete markers removed. It may take several round trips per user; the liveness writes
    /// go on meanwhile.
    pub(super) async fn upkeep(&self) -> Result<(), NatsAdapterError> {
        self.enrol(false).await?;
        let live = self.live_nodes().await?;
        self.reap(&live).await?;
        self.purge_markers().await
    }
}

type Upkeep = Pin<Box<dyn Future<Output = Result<(), NatsAdapterError>> + Send>>;

/// Writes the liveness entry every interval (faster while NATS is away), on time: the upkeep
/// after a write runs beside the next ones, one at a time. A heartbeat that waited for the
/// upkeep (a sync of many users, a command stuck until `command_timeout`) could leave the
/// entry to expire, and the other nodes would take this live node's users offline.
pub(super) async fn heartbeat(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut upkeep: Option<Upkeep> = None;
    let mut next = tokio::time::Instant::now() + shared.options.heartbeat;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep_until(next) => {}
            _ = shared.wake_heartbeat.notified() => {}
            done = async { upkeep.as_mut().expect("guarded").await }, if upkeep.is_some() => {
                upkeep = None;
                if let Err(e) = done {
                    shared.warn_link.warn(&shared.node, "heartbeat failed", &e);
                }
                continue;
            }
        }
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        let began = tokio::time::Instant::now();
        let alive = shared.keep_alive().await;
        next = began
            + if shared.link_up() {
                shared.options.heartbeat
            } else {
                shared.options.heartbeat.min(DOWN_PROBE)
            };
        match alive {
            Ok(()) if upkeep.is_none() => {
                let shared = shared.clone();
                upkeep = Some(Box::pin(async move { shared.upkeep().await }));
            }
            Ok(()) => {}
            Err(e) => {
                shared.warn_link.warn(&shared.node, "heartbeat failed", &e);
            }
        }
    }
}
