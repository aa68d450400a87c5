//! Missed-message recovery: a bounded history per room, per user and for broadcasts, the
//! position of every event in it, and the sessions that let a client that dropped come back
//! for what it missed.
//!
//! ## Positions
//!
//! Every event appended to a history takes the hub's next *offset*: one sequence for all the
//! streams of a hub, so a connection, which receives its history events in offset order,
//! says how far it got with one number. The *epoch* names the lifetime of the history: it
//! changes whenever the history is lost as a whole (the process restarted; in a cluster,
//! Redis lost its data). Losses within one lifetime (events evicted by count, age or the
//! memory cap) are tracked per stream, so a client is never told it recovered when something
//! it needed is gone.
//!
//! ## No gap, no duplicate
//!
//! Appending an event and queueing it for its recipients happen under one lock, so every
//! connection gets its history events in offset order. A connection that recovers is put in
//! its rooms first, with live history events *held*; then the missed events are read; then,
//! under the hold, the replay is queued, followed by the held events it does not already
//! contain. Live delivery resumes from there.
//!
//! ## In a cluster
//!
//! With the `redis` feature and a hub joined to a cluster, the history lives in Redis: the
//! offsets and the epoch are the cluster's, every node delivers history events in offset order
//! from what Redis publishes, and sessions are kept in Redis, so a client that drops on one
//! node recovers on any other (`docs/cluster.md` has the keys, scripts and bounds). The
//! memory cap and the session cap below are then this node's business no more: the streams
//! are bounded by count and age, the sessions by their time to live.
//!
//! ## Bounds
//!
//! Each stream keeps at most [`History::max_events`] events for at most [`History::max_age`];
//! all streams together at most [`History::max_bytes`] (the oldest events anywhere go first).
//! Evictions are counted ([`CounterSnapshot::history_evicted`](crate::CounterSnapshot)). A
//! replay is capped at [`History::max_replay`] events, encoded for the replay (an event is kept
//! as text only, not with the frames its live delivery used) and written at the pace the client
//! reads, one batch per flush.

pub(super) mod entry;
mod glob;
mod recovery;
pub(super) mod sessions;
pub(super) mod store;

use std::time::Duration;

pub(crate) use entry::NewEvent;
use glob::glob;
pub(crate) use recovery::{Offer, Recovery, SessionNews};
pub(crate) use sessions::{Ask, Resume, MAX_RECOVERY_TOKEN};
pub(crate) use store::{random_id, HistoryState, StreamKey};

/// What a hub keeps for clients that reconnect, and for how long. History is off unless a
/// `History` is given to [`HubBuilder::history`](crate::HubBuilder::history).
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`rooms`](Self::rooms) | none | room name patterns whose events are kept (`*` matches any run of characters) |
/// | [`users`](Self::users) | off | keep events emitted to a user |
/// | [`broadcasts`](Self::broadcasts) | off | keep events emitted to everyone |
/// | [`max_events`](Self::max_events) | 100 | events kept per room, user or broadcast stream |
/// | [`max_age`](Self::max_age) | 120 s | how long an event is kept |
/// | [`max_bytes`](Self::max_bytes) | 64 MiB | all histories of the hub together (single node) |
/// | [`session_ttl`](Self::session_ttl) | 120 s | how long a dropped connection's session waits for its client |
/// | [`max_replay`](Self::max_replay) | 10,000 | most events replayed to one client; a larger gap is not recovered |
/// | [`max_sessions`](Self::max_sessions) | 100,000 | sessions waiting at once (single node); past it, no new one is kept |
///
/// In a cluster (feature `redis`, `HubBuilder::redis`), the
/// history is kept in Redis, for the whole cluster: give every node the same `History`.
/// `max_bytes` and `max_sessions` then do not apply (streams are bounded by `max_events` and
/// time, sessions by `session_ttl`).
///
/// ```
/// use std::time::Duration;
/// use tower_realtime::{History, Hub};
/// let hub = Hub::builder()
///     .history(History::new().rooms("chat:*").users().max_age(Duration::from_secs(300)))
///     .build();
/// # drop(hub);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct History {
    /// Room name patterns whose events are kept.
    pub rooms: Vec<String>,
    /// Whether events emitted to users are kept.
    pub users: bool,
    /// Whether events emitted to everyone are kept.
    pub broadcasts: bool,
    /// Events kept per stream.
    pub max_events: usize,
    /// How long an event is kept.
    pub max_age: Duration,
    /// Bytes kept by all the histories of a hub together (on a single node).
    pub max_bytes: usize,
    /// How long the session of a dropped connection is kept for its client to come back.
    pub session_ttl: Duration,
    /// Most events replayed to one client.
    pub max_replay: usize,
    /// Most sessions kept at once (on a single node).
    pub max_sessions: usize,
}

impl Default for History {
    fn default() -> Self {
        Self {
            rooms: Vec::new(),
            users: false,
            broadcasts: false,
            max_events: 100,
            max_age: Duration::from_secs(120),
            max_bytes: 64 << 20,
            session_ttl: Duration::from_secs(120),
            max_replay: 10_000,
            max_sessions: 100_000,
        }
    }
}

impl History {
    /// Keeps nothing yet: add [`rooms`](Self::rooms), [`users`](Self::users) or
    /// [`broadcasts`](Self::broadcasts).
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the events of every room, of every user and of broadcasts.
    pub fn all() -> Self {
        Self::new().rooms("*").users().broadcasts()
    }

    /// Keeps the events of the rooms whose name matches `pattern` (`*` matches any run of
    /// characters: `"chat:*"`, `"*"`).
    pub fn rooms(mut self, pattern: impl Into<String>) -> Self {
        self.rooms.push(pattern.into());
        self
    }

    /// Keeps the events emitted to users (all their connections).
    pub fn users(mut self) -> Self {
        self.users = true;
        self
    }

    /// Keeps the events emitted to everyone.
    pub fn broadcasts(mut self) -> Self {
        self.broadcasts = true;
        self
    }

    /// Events kept per stream (room, user or broadcasts).
    pub fn max_events(mut self, n: usize) -> Self {
        self.max_events = n.max(1);
        self
    }

    /// How long an event is kept.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// Bytes kept by all histories of the hub together.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How long a dropped connection's session waits for its client.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Most events replayed to one client; a larger gap is reported as not recovered.
    pub fn max_replay(mut self, n: usize) -> Self {
        self.max_replay = n;
        self
    }

    fn keeps_room(&self, room: &str) -> bool {
        self.rooms.iter().any(|p| glob(p, room))
    }
}
