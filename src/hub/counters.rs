//! Cheap counters on the hub, readable from app code with [`Hub::counters`](crate::Hub::counters).

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters. Atomics, updated with relaxed ordering.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) slow_consumer_closes: AtomicU64,
    pub(crate) rejected_bad_request: AtomicU64,
    pub(crate) rejected_origin: AtomicU64,
    pub(crate) rejected_auth: AtomicU64,
    pub(crate) rejected_limit: AtomicU64,
    pub(crate) rejected_shutdown: AtomicU64,
}

/// Why an upgrade was refused, for [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    BadRequest,
    Origin,
    Auth,
    Limit,
    ShuttingDown,
}

impl Counters {
    pub(crate) fn rejected(&self, cause: Rejection) {
        let counter = match cause {
            Rejection::BadRequest => &self.rejected_bad_request,
            Rejection::Origin => &self.rejected_origin,
            Rejection::Auth => &self.rejected_auth,
            Rejection::Limit => &self.rejected_limit,
            Rejection::ShuttingDown => &self.rejected_shutdown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            connections: get(&self.connections),
            connections_total: get(&self.connections_total),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            bytes_out: get(&self.bytes_out),
            dropped: get(&self.dropped),
            slow_consumer_closes: get(&self.slow_consumer_closes),
            rejected_bad_request: get(&self.rejected_bad_request),
            rejected_origin: get(&self.rejected_origin),
            rejected_auth: get(&self.rejected_auth),
            rejected_limit: get(&self.rejected_limit),
            rejected_shutdown: get(&self.rejected_shutdown),
        }
    }
}

/// A reading of the hub's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CounterSnapshot {
    /// Connections open now (upgraded, including those in their connect hook).
    pub connections: u64,
    /// Connections upgraded since the hub was built.
    pub connections_total: u64,
    /// Frames received from clients.
    pub messages_in: u64,
    /// Messages queued for clients (one per recipient).
    pub messages_out: u64,
    /// Bytes of message payload written to sockets.
    pub bytes_out: u64,
    /// Messages dropped because a connection's queue was full.
    pub dropped: u64,
    /// Connections closed because their queue was full.
    pub slow_consumer_closes: u64,
    /// Upgrades refused as malformed (400, 405, 426).
    pub rejected_bad_request: u64,
    /// Upgrades refused for their Origin (403).
    pub rejected_origin: u64,
    /// Upgrades refused by authentication (401).
    pub rejected_auth: u64,
    /// Upgrades refused by a connection limit (429, 503).
    pub rejected_limit: u64,
    /// Upgrades refused because the hub is shutting down (503).
    pub rejected_shutdown: u64,
}
