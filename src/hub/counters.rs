//! Cheap counters on the hub, readable from app code with [`Hub::counters`](crate::Hub::counters).

use std::sync::atomic::{AtomicU64, Ordering};

use super::RefusalCause;

/// Live counters. Atomics, updated with relaxed ordering; with the feature `metrics`, every
/// change is also recorded to the `metrics` facade (see [`Counter`]).
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) connections: Counter,
    pub(crate) connections_total: Counter,
    pub(crate) messages_in: Counter,
    pub(crate) messages_out: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) dropped: Counter,
    pub(crate) slow_consumer_closes: Counter,
    pub(crate) recovered: Counter,
    pub(crate) not_recovered: Counter,
    pub(crate) history_evicted: Counter,
    pub(crate) volatile_dropped: Counter,
    pub(crate) coalesced_replaced: Counter,
    pub(crate) deflate_compressions: Counter,
    pub(crate) deflate_bytes_in: Counter,
    pub(crate) deflate_bytes_out: Counter,
    pub(crate) rejected_bad_request: AtomicU64,
    pub(crate) rejected_origin: AtomicU64,
    pub(crate) rejected_auth: AtomicU64,
    pub(crate) rejected_limit: AtomicU64,
    pub(crate) rejected_shutdown: AtomicU64,
}

/// Built once per hub, when it is built: with the feature `metrics`, that also registers every
/// series at zero with the recorder installed then (see [`Counters::register`]).
impl Default for Counters {
    fn default() -> Self {
        let counters = Self {
            connections: Counter::gauge("realtime_connections"),
            connections_total: Counter::monotonic("realtime_connections_total"),
            messages_in: Counter::monotonic("realtime_messages_in_total"),
            messages_out: Counter::monotonic("realtime_messages_out_total"),
            bytes_out: Counter::monotonic("realtime_bytes_out_total"),
            dropped: Counter::monotonic("realtime_dropped_total"),
            slow_consumer_closes: Counter::monotonic("realtime_slow_consumer_closes_total"),
            recovered: Counter::monotonic("realtime_recovered_total"),
            not_recovered: Counter::monotonic("realtime_not_recovered_total"),
            history_evicted: Counter::monotonic("realtime_history_evicted_total"),
            volatile_dropped: Counter::monotonic("realtime_volatile_dropped_total"),
            coalesced_replaced: Counter::monotonic("realtime_coalesced_replaced_total"),
            deflate_compressions: Counter::monotonic("realtime_deflate_compressions_total"),
            deflate_bytes_in: Counter::monotonic("realtime_deflate_bytes_in_total"),
            deflate_bytes_out: Counter::monotonic("realtime_deflate_bytes_out_total"),
            rejected_bad_request: AtomicU64::default(),
            rejected_origin: AtomicU64::default(),
            rejected_auth: AtomicU64::default(),
            rejected_limit: AtomicU64::default(),
            rejected_shutdown: AtomicU64::default(),
        };
        #[cfg(feature = "metrics")]
        counters.register();
        counters
    }
}

/// An `AtomicU64` used like one (`fetch_add`, `fetch_sub`, `load`) that, with the feature
/// `metrics`, also records each change to the `metrics` facade under its name: as a counter,
/// or as a gauge for a value that goes down too. Every place that counts thus feeds both,
/// with one call. The names are listed in the crate docs, section "Metrics".
#[derive(Debug)]
pub(crate) struct Counter {
    value: AtomicU64,
    #[cfg(feature = "metrics")]
    metric: Metric,
}

#[cfg(feature = "metrics")]
#[derive(Debug, Clone, Copy)]
enum Metric {
    Counter(&'static str),
    Gauge(&'static str),
}

impl Counter {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn monotonic(name: &'static str) -> Self {
        Self {
            value: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metric: Metric::Counter(name),
        }
    }

    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn gauge(name: &'static str) -> Self {
        Self {
            value: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metric: Metric::Gauge(name),
        }
    }

    #[inline]
    pub(crate) fn fetch_add(&self, n: u64, order: Ordering) -> u64 {
        #[cfg(feature = "metrics")]
        if n > 0 {
            match self.metric {
                Metric::Counter(name) => metrics::counter!(name).increment(n),
                Metric::Gauge(name) => metrics::gauge!(name).increment(n as f64),
            }
        }
        self.value.fetch_add(n, order)
    }

    /// Only for gauges: a counter never goes down.
    #[inline]
    pub(crate) fn fetch_sub(&self, n: u64, order: Ordering) -> u64 {
        #[cfg(feature = "metrics")]
        if let Metric::Gauge(name) = self.metric {
            metrics::gauge!(name).decrement(n as f64);
        }
        self.value.fetch_sub(n, order)
    }

    #[inline]
    pub(crate) fn load(&self, order: Ordering) -> u64 {
        self.value.load(order)
    }

    /// Makes the series exist in the recorder without changing it: a scrape lists it at zero
    /// before anything was counted. Adding zero, not setting zero, leaves alone what another hub
    /// of the process already counted under the same name.
    #[cfg(feature = "metrics")]
    fn register(&self) {
        match self.metric {
            Metric::Counter(name) => metrics::counter!(name).increment(0),
            Metric::Gauge(name) => metrics::gauge!(name).increment(0.0),
        }
    }
}

/// Every cause, for registering each series at zero: a new cause goes here too (a guard's
/// refusal counts under `auth`).
#[cfg(feature = "metrics")]
const COUNTED: [RefusalCause; 5] = [
    RefusalCause::BadRequest,
    RefusalCause::Origin,
    RefusalCause::Auth,
    RefusalCause::Limit,
    RefusalCause::ShuttingDown,
];

impl Counters {
    pub(crate) fn rejected(&self, cause: RefusalCause) {
        let counter = match cause {
            RefusalCause::BadRequest => &self.rejected_bad_request,
            RefusalCause::Origin => &self.rejected_origin,
            RefusalCause::Auth | RefusalCause::Guard => &self.rejected_auth,
            RefusalCause::Limit => &self.rejected_limit,
            RefusalCause::ShuttingDown => &self.rejected_shutdown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        export::rejected(cause);
    }

    /// Registers every series of the crate docs' "Metrics" table at zero, but the histogram
    /// (labelled by event, it appears with the first handled event): each counter and the gauge,
    /// and the rejections for each cause. Only a recorder installed by then sees them: a
    /// recorder installed after the hub is built sees a series from its first change only.
    #[cfg(feature = "metrics")]
    fn register(&self) {
        for counter in [
            &self.connections,
            &self.connections_total,
            &self.messages_in,
            &self.messages_out,
            &self.bytes_out,
            &self.dropped,
            &self.slow_consumer_closes,
            &self.recovered,
            &self.not_recovered,
            &self.history_evicted,
            &self.volatile_dropped,
            &self.coalesced_replaced,
            &self.deflate_compressions,
            &self.deflate_bytes_in,
            &self.deflate_bytes_out,
        ] {
            counter.register();
        }
        for cause in COUNTED {
            export::rejections(cause).increment(0);
        }
    }

    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &Counter| c.load(Ordering::Relaxed);
        let raw = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            connections: get(&self.connections),
            connections_total: get(&self.connections_total),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            bytes_out: get(&self.bytes_out),
            dropped: get(&self.dropped),
            slow_consumer_closes: get(&self.slow_consumer_closes),
            recovered: get(&self.recovered),
            not_recovered: get(&self.not_recovered),
            history_evicted: get(&self.history_evicted),
            volatile_dropped: get(&self.volatile_dropped),
            coalesced_replaced: get(&self.coalesced_replaced),
            deflate_compressions: get(&self.deflate_compressions),
            deflate_bytes_in: get(&self.deflate_bytes_in),
            deflate_bytes_out: get(&self.deflate_bytes_out),
            rejected_bad_request: raw(&self.rejected_bad_request),
            rejected_origin: raw(&self.rejected_origin),
            rejected_auth: raw(&self.rejected_auth),
            rejected_limit: raw(&self.rejected_limit),
            rejected_shutdown: raw(&self.rejected_shutdown),
        }
    }
}

/// What the `metrics` facade gets besides the [`Counter`]s: handshake rejections by cause, and
/// handler latency (feature `metrics`).
#[cfg(feature = "metrics")]
pub(crate) mod export {
    use super::RefusalCause;

    pub(crate) fn rejected(cause: RefusalCause) {
        rejections(cause).increment(1);
    }

    /// The rejections counter of one cause.
    pub(super) fn rejections(cause: RefusalCause) -> metrics::Counter {
        let cause = match cause {
            RefusalCause::Guard => "auth",
            other => other.as_str(),
        };
        metrics::counter!("realtime_handshake_rejections_total", "cause" => cause)
    }

    /// How long a handler took, from its call to its reply (or error, or panic).
    pub(crate) fn handler_latency(event: &std::sync::Arc<str>, elapsed: std::time::Duration) {
        metrics::histogram!("realtime_handler_duration_seconds", "event" => event.clone())
            .record(elapsed.as_secs_f64());
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
    /// Clients that came back and recovered what they missed.
    pub recovered: u64,
    /// Clients that asked to recover and could not (told so, with the reason).
    pub not_recovered: u64,
    /// Events evicted from histories (by count, age or the memory cap).
    pub history_evicted: u64,
    /// Volatile emits not queued for a connection that was busy (something queued, a write in
    /// progress, or a long-polling client with no pending request), one per recipient.
    pub volatile_dropped: u64,
    /// Coalesced emits that took the place of a message with the same key still queued, one
    /// per recipient.
    pub coalesced_replaced: u64,
    /// Messages compressed (permessage-deflate): once per message and compression setting,
    /// however many recipients it has.
    pub deflate_compressions: u64,
    /// Payload bytes of the messages sent compressed, before compression, one count per
    /// recipient.
    pub deflate_bytes_in: u64,
    /// The same messages' bytes after compression, one count per recipient: what the
    /// sockets carried for them.
    pub deflate_bytes_out: u64,
    /// Connections refused as malformed requests (400, 405, 426; a Socket.IO CONNECT to an
    /// unknown namespace).
    pub rejected_bad_request: u64,
    /// Connections refused for their Origin (403).
    pub rejected_origin: u64,
    /// Connections refused by authentication (401; Socket.IO: `CONNECT_ERROR`), a connect
    /// guard or the connect hook.
    pub rejected_auth: u64,
    /// Connections refused by a connection limit (429, 503; Socket.IO: `CONNECT_ERROR`).
    pub rejected_limit: u64,
    /// Connections refused because the hub is shutting down (503).
    pub rejected_shutdown: u64,
}
