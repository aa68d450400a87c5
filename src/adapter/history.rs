//! The cluster's history as the hub and every engine see it: what the hub's
//! [`History`](crate::History) asks of the engine ([`HistoryParams`]), the events an engine
//! reads back ([`StoredEvent`]) and what a read found ([`Missed`]). How an engine keeps them is
//! its own (the Redis engine's keys and scripts are in `redis/history.rs`).
//!
//! The hub's side (what to keep, how to recover) is in the hub's `cluster` module.

use std::time::Duration;

/// What the hub's [`History`](crate::History) says about Redis's part.
#[derive(Debug, Clone)]
pub(crate) struct HistoryParams {
    /// The epoch to use when Redis has none (a fresh random one).
    pub(crate) new_epoch: std::sync::Arc<str>,
    pub(crate) max_events: usize,
    pub(crate) max_age: Duration,
    /// Redis's streams outlive their last event by it (NATS keeps a session for the time
    /// each `keep_session` gives).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) session_ttl: Duration,
    pub(crate) max_replay: usize,
}

#[cfg(feature = "redis")]
impl HistoryParams {
    /// How long a stream outlives its last event: a session that saw it may come back for
    /// `session_ttl`, and wants nothing older than `max_age`.
    pub(crate) fn stream_ttl(&self) -> Duration {
        self.max_age + self.session_ttl
    }
}

/// Whether a client's session id can be one we gave out (so that nothing else is looked up).
pub(crate) fn plausible_session(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// One event read back from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredEvent {
    pub(crate) offset: u64,
    pub(crate) event: String,
    /// The payload, JSON.
    pub(crate) data: String,
    pub(crate) except: Vec<u64>,
    pub(crate) left_out: LeftOut,
}

/// The rooms and users an event kept in a stream left out (its field `y`, JSON; absent when
/// none).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LeftOut {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) rooms: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) users: Vec<String>,
}

impl LeftOut {
    /// The field's value: empty when nothing is left out.
    #[cfg(feature = "redis")]
    pub(crate) fn encode(rooms: &[String], users: &[String]) -> String {
        if rooms.is_empty() && users.is_empty() {
            return String::new();
        }
        let left_out = LeftOut {
            rooms: rooms.to_vec(),
            users: users.to_vec(),
        };
        serde_json::to_string(&left_out).unwrap_or_default()
    }
}

/// What the read script found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Missed {
    /// The events, by stream (a stream's events in offset order; streams may share events),
    /// and the last offset given out when they were read.
    Events {
        epoch: String,
        upto: u64,
        events: Vec<StoredEvent>,
    },
    /// The history is of another epoch than the session's (`epoch` is the current one, empty
    /// when there is none).
    EpochChanged { epoch: String },
    /// A wanted offset is past the last one given out: never given out.
    UnknownOffset,
    /// Some of the wanted events were evicted.
    Evicted,
    /// More than `max_replay` events.
    TooMany,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked_before_any_lookup() {
        assert!(plausible_session("0123abcdef"));
        assert!(!plausible_session(""));
        assert!(!plausible_session("a:b"));
        assert!(!plausible_session(&"a".repeat(65)));
    }
}
