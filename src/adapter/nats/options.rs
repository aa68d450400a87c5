//! The NATS engine's settings ([`NatsOptions`], checked before connecting), the names of its
//! subjects, buckets and stream, and what can go wrong ([`NatsAdapterError`]).

use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};

use crate::adapter::SigningKey;

use crate::adapter::common::is_name;

/// Settings of a [`NatsAdapter`](super::NatsAdapter).
///
/// | setting | default |
/// |---|---|
/// | [`prefix`](Self::prefix) | `"tower-realtime"` |
/// | [`heartbeat`](Self::heartbeat) | 2 s |
/// | [`node_timeout`](Self::node_timeout) | 6 s |
/// | [`query_timeout`](Self::query_timeout) | 1 s |
/// | [`command_timeout`](Self::command_timeout) | 1 s |
/// | [`node_id`](Self::node_id) | random (16 hex digits) |
/// | [`publish_queue`](Self::publish_queue) | 4096 ops |
/// | [`inbound_queue`](Self::inbound_queue) | 4096 messages |
/// | [`replicas`](Self::replicas) | 1 |
/// | [`signing_key`](Self::signing_key) | `None` (messages unsigned) |
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NatsOptions {
    /// Start of every subject, bucket and stream name: nodes with the same prefix form one
    /// cluster. Letters, digits, `-` and `_`, at most 64.
    pub prefix: String,
    /// How often a node announces that it is alive (and looks for dead nodes).
    pub heartbeat: Duration,
    /// A node whose last heartbeat is older than this is dead: the liveness bucket's entries
    /// live this long. Must be longer than `heartbeat` (three heartbeats is a good value).
    pub node_timeout: Duration,
    /// How long [`NatsAdapter::request`](super::NatsAdapter::request) waits for answers when
    /// given no timeout.
    pub query_timeout: Duration,
    /// Longest wait for NATS: connecting, and every JetStream request.
    pub command_timeout: Duration,
    /// This node's id (letters, digits, `-` and `_`, at most 64); `None`: a random one.
    pub node_id: Option<String>,
    /// Ops waiting to be written to NATS; past it,
    /// [`NatsAdapter::publish`](super::NatsAdapter::publish) counts them as lost.
    pub publish_queue: usize,
    /// Messages from other nodes waiting for the hub; past it they are dropped and counted.
    pub inbound_queue: usize,
    /// Replicas of the buckets and the history stream this node creates (on a NATS cluster
    /// with JetStream; at most 5).
    pub replicas: usize,
    /// The key every node of the cluster signs its messages with, and checks the messages it
    /// receives with (HMAC-SHA256), as with Redis
    /// ([`RedisOptions::signing_key`](crate::adapter::RedisOptions::signing_key)); also set
    /// with [`sign_with`](Self::sign_with). At least 32 bytes, or
    /// [`connect`](super::NatsAdapter::connect) fails.
    pub signing_key: Option<SigningKey>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            prefix: "tower-realtime".to_owned(),
            heartbeat: Duration::from_secs(2),
            node_timeout: Duration::from_secs(6),
            query_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            node_id: None,
            publish_queue: 4096,
            inbound_queue: 4096,
            replicas: 1,
            signing_key: None,
        }
    }
}

impl NatsOptions {
    /// These options, with every message on the bus signed with `key` (see
    /// [`signing_key`](Self::signing_key)): at least 32 bytes, shared by every node.
    ///
    /// ```
    /// use tower_realtime::adapter::NatsOptions;
    ///
    /// let key = [7u8; 32]; // in an app: 32 random bytes from its secret store
    /// let options = NatsOptions::default().sign_with(key);
    /// assert!(options.signing_key.is_some());
    /// ```
    pub fn sign_with(mut self, key: impl AsRef<[u8]>) -> Self {
        self.signing_key = Some(SigningKey::new(key));
        self
    }

    pub(super) fn check(&self) -> Result<(), NatsAdapterError> {
        let bad = |why: &str| Err(NatsAdapterError::Options(why.to_owned()));
        if !is_name(&self.prefix) {
            return bad("the prefix must be 1 to 64 letters, digits, '-' or '_'");
        }
        if self.heartbeat.is_zero() || self.command_timeout.is_zero() || self.query_timeout.is_zero() {
            return bad("heartbeat, command_timeout and query_timeout must be above zero");
        }
        if self.node_timeout <= self.heartbeat {
            return bad("node_timeout must be longer than heartbeat");
        }
        if self.publish_queue == 0 || self.inbound_queue == 0 {
            return bad("publish_queue and inbound_queue must be above zero");
        }
        if self.replicas == 0 || self.replicas > 5 {
            return bad("replicas must be 1 to 5");
        }
        if let Some(key) = &self.signing_key {
            if !key.usable() {
                return bad("the signing key must be at least 32 bytes");
            }
        }
        if let Some(id) = &self.node_id {
            if !is_name(id) {
                return bad("the node id must be 1 to 64 letters, digits, '-' or '_'");
            }
        }
        Ok(())
    }

    /// The longest a dead node stays in
    /// [`NatsAdapter::live_nodes`](super::NatsAdapter::live_nodes), counted from its last
    /// heartbeat: `node_timeout` (the liveness bucket's entries expire then).
    pub fn liveness_bound(&self) -> Duration {
        self.node_timeout
    }

    /// The longest until a live node reports the users of a dead node as gone offline
    /// ([`Inbound::PresenceChanged`](crate::adapter::Inbound::PresenceChanged)), counted from
    /// the dead node's last heartbeat: `node_timeout + heartbeat` (plus the time to go through
    /// the presence bucket).
    pub fn presence_expiry_bound(&self) -> Duration {
        self.node_timeout + self.heartbeat
    }
}

/// What went wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsAdapterError {
    /// The options are not usable.
    #[error("invalid NATS adapter options: {0}")]
    Options(String),
    /// NATS refused, the connection failed, or JetStream answered with an error.
    #[error("nats: {0}")]
    Nats(#[source] async_nats::Error),
    /// NATS did not answer within the command timeout.
    #[error("nats did not answer within {0:?}")]
    Timeout(Duration),
    /// What NATS holds for the cluster is not what this engine writes (a bucket or stream of
    /// the same name made by something else, or an entry it cannot read).
    #[error("unexpected data in NATS: {0}")]
    Unexpected(String),
}

impl NatsAdapterError {
    pub(super) fn nats(e: impl Into<async_nats::Error>) -> Self {
        Self::Nats(e.into())
    }
}

pub(super) use crate::adapter::common::random_node_id;

/// The names of the cluster's subjects, buckets and stream, made from the prefix and the node
/// id.
#[derive(Debug, Clone)]
pub(super) struct Names {
    pub(super) prefix: String,
    /// Ops (and queries) for every node.
    pub(super) all: String,
    /// Ops (and replies) for this node.
    pub(super) own: String,
    /// Live nodes: a key per node, expiring `node_timeout` after its last heartbeat.
    pub(super) live: String,
    /// Registered nodes: a key per node whose users may still count (no expiry).
    pub(super) nodes: String,
    /// Presence: a key per online user.
    pub(super) presence: String,
    /// Sessions of dropped connections.
    pub(super) sessions: String,
    /// Revocations, a key per user.
    pub(super) revoked: String,
    /// The history stream.
    pub(super) history: String,
    /// The history stream's subjects.
    pub(super) history_subjects: String,
}

impl Names {
    pub(super) fn new(prefix: &str, node: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            all: format!("{prefix}.all"),
            own: Self::node_subject(prefix, node),
            live: format!("{prefix}-live"),
            nodes: format!("{prefix}-nodes"),
            presence: format!("{prefix}-presence"),
            sessions: format!("{prefix}-sessions"),
            revoked: format!("{prefix}-revoked"),
            history: format!("{prefix}-history"),
            history_subjects: format!("{prefix}.h.>"),
        }
    }

    /// The subject of one node.
    pub(super) fn node_subject(prefix: &str, node: &str) -> String {
        format!("{prefix}.node.{node}")
    }

    /// The subject of one history stream (room, user or broadcast stream).
    pub(super) fn history_subject(&self, stream: &str) -> String {
        format!("{}.h.{}", self.prefix, token(stream))
    }
}

/// A name of any bytes as one subject token and key: `s` then base64url (never empty, no
/// `.`, `*`, `>` or space).
pub(super) fn token(name: &str) -> String {
    format!("s{}", URL_SAFE_NO_PAD.encode(name))
}

/// The name back from a [`token`].
pub(super) fn untoken(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token.strip_prefix('s')?).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::common::MAX_NAME_LEN;

    fn with_node_id(id: &str) -> NatsOptions {
        NatsOptions {
            node_id: Some(id.to_owned()),
            ..NatsOptions::default()
        }
    }

    #[test]
    fn node_ids_and_prefixes_are_letters_digits_dashes_and_underscores_up_to_64() {
        for id in ["a", "node-1_B", &"x".repeat(MAX_NAME_LEN)] {
            assert!(with_node_id(id).check().is_ok(), "{id:?} refused");
            let options = NatsOptions {
                prefix: id.to_owned(),
                ..NatsOptions::default()
            };
            assert!(options.check().is_ok(), "prefix {id:?} refused");
        }
        for id in ["", &"x".repeat(MAX_NAME_LEN + 1), "a b", "a.b", "a*", "a>", "é", "a\n"] {
            assert!(
                matches!(with_node_id(id).check(), Err(NatsAdapterError::Options(_))),
                "{id:?} accepted"
            );
            let options = NatsOptions {
                prefix: id.to_owned(),
                ..NatsOptions::default()
            };
            assert!(options.check().is_err(), "prefix {id:?} accepted");
        }
    }

    #[test]
    fn unusable_options_are_refused() {
        assert!(NatsOptions::default().check().is_ok());
        let bad: [fn(&mut NatsOptions); 9] = [
            |o| o.heartbeat = Duration::ZERO,
            |o| o.query_timeout = Duration::ZERO,
            |o| o.command_timeout = Duration::ZERO,
            |o| o.node_timeout = o.heartbeat,
            |o| o.publish_queue = 0,
            |o| o.inbound_queue = 0,
            |o| o.replicas = 0,
            |o| o.replicas = 6,
            |o| o.signing_key = Some(SigningKey::new([1u8; 31])),
        ];
        for (i, change) in bad.iter().enumerate() {
            let mut options = NatsOptions::default();
            change(&mut options);
            assert!(
                matches!(options.check(), Err(NatsAdapterError::Options(_))),
                "change {i} accepted"
            );
        }
        assert!(NatsOptions::default().sign_with([9u8; 32]).check().is_ok());
        let options = NatsOptions {
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(3),
            ..NatsOptions::default()
        };
        assert_eq!(options.liveness_bound(), Duration::from_secs(3));
        assert_eq!(options.presence_expiry_bound(), Duration::from_secs(4));
    }

    #[test]
    fn names_are_made_from_the_prefix_and_the_node_id() {
        let names = Names::new("app", "node-1");
        assert_eq!(names.all, "app.all");
        assert_eq!(names.own, "app.node.node-1");
        assert_eq!(Names::node_subject("app", "node-1"), names.own);
        assert_eq!(names.live, "app-live");
        assert_eq!(names.nodes, "app-nodes");
        assert_eq!(names.presence, "app-presence");
        assert_eq!(names.sessions, "app-sessions");
        assert_eq!(names.revoked, "app-revoked");
        assert_eq!(names.history, "app-history");
        assert_eq!(names.history_subjects, "app.h.>");
        assert_eq!(names.history_subject("r1:/:general"), "app.h.scjE6LzpnZW5lcmFs");
        assert!(names.history_subject("r1:/:general").starts_with("app.h."));
    }

    #[test]
    fn any_name_makes_one_token_and_comes_back() {
        for name in ["", "ann", "r1:/:a.b c*>", "é\u{0}\n", &"x".repeat(300)] {
            let t = token(name);
            assert!(t.starts_with('s'));
            assert!(
                t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{t}"
            );
            assert_eq!(untoken(&t).as_deref(), Some(name));
        }
        assert_ne!(token("a"), token("b"));
        assert_eq!(untoken("x"), None);
        assert_eq!(untoken("s!!"), None);
        assert_eq!(untoken("s_w"), None, "not UTF-8");
    }
}
