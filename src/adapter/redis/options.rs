//! The adapter's settings ([`RedisOptions`], checked before connecting), the node id, and what
//! can go wrong ([`RedisAdapterError`]).

use std::time::Duration;

use crate::adapter::wire::SigningKey;

/// Settings of a [`RedisAdapter`](super::RedisAdapter).
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
/// | [`signing_key`](Self::signing_key) | `None` (messages unsigned) |
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Start of every channel and key name: nodes with the same prefix form one cluster. No
    /// spaces, `{` or `}` (the keys put it in hash tags).
    pub prefix: String,
    /// How often a node announces that it is alive.
    pub heartbeat: Duration,
    /// A node whose last heartbeat is older than this is dead. Must be longer than
    /// `heartbeat` (three heartbeats is a good value).
    pub node_timeout: Duration,
    /// How long [`RedisAdapter::request`](super::RedisAdapter::request) waits for answers
    /// when given no timeout.
    pub query_timeout: Duration,
    /// Longest wait for Redis: connecting, and every command.
    pub command_timeout: Duration,
    /// This node's id (letters, digits, `-` and `_`, at most 64); `None`: a random one.
    pub node_id: Option<String>,
    /// Ops waiting to be written to Redis; past it,
    /// [`RedisAdapter::publish`](super::RedisAdapter::publish) counts them as lost.
    pub publish_queue: usize,
    /// Messages from other nodes waiting for the hub; past it they are dropped and counted.
    pub inbound_queue: usize,
    /// The key every node of the cluster signs its messages on the bus with, and checks the
    /// messages it receives with (HMAC-SHA256, compared in constant time); also set with
    /// [`sign_with`](Self::sign_with). With a key, a message that is unsigned or badly
    /// signed (from anyone who can publish on Redis but lacks the key, or from a node with
    /// another key or none) is dropped and counted in
    /// [`AdapterStats::unauthenticated`](crate::adapter::AdapterStats::unauthenticated).
    /// Every node of a cluster needs the same key: a node with none and a node with one do
    /// not hear each other. At least 32 bytes, or
    /// [`connect`](super::RedisAdapter::connect) fails. It authenticates messages; it does
    /// not hide them, nor stop a signed message from being replayed (see `docs/cluster.md`).
    pub signing_key: Option<SigningKey>,
}

impl Default for RedisOptions {
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
            signing_key: None,
        }
    }
}

impl RedisOptions {
    /// These options, with every message on the bus signed with `key` (see
    /// [`signing_key`](Self::signing_key)): at least 32 bytes, shared by every node.
    ///
    /// ```
    /// use tower_realtime::adapter::RedisOptions;
    ///
    /// let key = [7u8; 32]; // in an app: 32 random bytes from its secret store
    /// let options = RedisOptions::default().sign_with(key);
    /// assert!(options.signing_key.is_some());
    /// ```
    pub fn sign_with(mut self, key: impl AsRef<[u8]>) -> Self {
        self.signing_key = Some(SigningKey::new(key));
        self
    }

    pub(super) fn check(&self) -> Result<(), RedisAdapterError> {
        let bad = |why: &str| Err(RedisAdapterError::Options(why.to_owned()));
        if self.prefix.is_empty()
            || (self.prefix.chars()).any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
        {
            return bad("the prefix must be non-empty, without spaces, '{' or '}'");
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
        if let Some(key) = &self.signing_key {
            if !key.usable() {
                return bad("the signing key must be at least 32 bytes");
            }
        }
        if let Some(id) = &self.node_id {
            if !crate::adapter::common::is_name(id) {
                return bad("the node id must be 1 to 64 letters, digits, '-' or '_'");
            }
        }
        Ok(())
    }

    /// The longest a dead node stays in
    /// [`RedisAdapter::live_nodes`](super::RedisAdapter::live_nodes) (and its users in
    /// [`RedisAdapter::online_users`](super::RedisAdapter::online_users)), counted from its
    /// last heartbeat: `node_timeout`.
    pub fn liveness_bound(&self) -> Duration {
        self.node_timeout
    }

    /// The longest until a live node reports the users of a dead node as gone offline
    /// ([`Inbound::PresenceChanged`](super::Inbound::PresenceChanged)), counted from the dead
    /// node's last heartbeat: `node_timeout + heartbeat` (plus one `command_timeout` when
    /// Redis is slow).
    pub fn presence_expiry_bound(&self) -> Duration {
        self.node_timeout + self.heartbeat
    }
}

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisAdapterError {
    /// The options are not usable.
    #[error("invalid Redis adapter options: {0}")]
    Options(String),
    /// Redis refused, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer within the command timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// This node is not in the cluster's view (its registration lapsed, or Redis lost its
    /// data). It registers again on its next heartbeat, publishing its presence anew.
    #[error("this node is not registered in the cluster; it registers again on its next heartbeat")]
    NotRegistered,
}

pub(super) use crate::adapter::common::random_node_id;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{common::MAX_NAME_LEN as MAX_NODE_ID_LEN, wire::MIN_SIGNING_KEY_LEN};

    fn with_node_id(id: &str) -> RedisOptions {
        RedisOptions {
            node_id: Some(id.to_owned()),
            ..RedisOptions::default()
        }
    }

    #[test]
    fn node_ids_are_letters_digits_dashes_and_underscores_up_to_64() {
        for id in ["a", "node-1_B", &"x".repeat(MAX_NODE_ID_LEN)] {
            assert!(with_node_id(id).check().is_ok(), "{id:?} refused");
        }
        for id in [
            "",
            &"x".repeat(MAX_NODE_ID_LEN + 1),
            "a b",
            "a:b",
            "a#b",
            "a.b",
            "é",
            "a\n",
        ] {
            assert!(
                matches!(with_node_id(id).check(), Err(RedisAdapterError::Options(_))),
                "{id:?} accepted"
            );
        }
    }

    #[test]
    fn unusable_options_are_refused() {
        assert!(RedisOptions::default().check().is_ok());
        let second = Duration::from_secs(1);
        let bad: [fn(&mut RedisOptions); 10] = [
            |o| o.prefix = String::new(),
            |o| o.prefix = "my app".into(),
            |o| o.prefix = "{app}".into(),
            |o| o.heartbeat = Duration::ZERO,
            |o| o.query_timeout = Duration::ZERO,
            |o| o.node_timeout = o.heartbeat,
            |o| o.publish_queue = 0,
            |o| o.inbound_queue = 0,
            |o| o.signing_key = Some(SigningKey::new([1u8; 31])),
            |o| o.signing_key = Some(SigningKey::new([])),
        ];
        for (i, change) in bad.iter().enumerate() {
            let mut options = RedisOptions::default();
            change(&mut options);
            assert!(
                matches!(options.check(), Err(RedisAdapterError::Options(_))),
                "change {i} accepted"
            );
        }
        let options = RedisOptions {
            heartbeat: second,
            node_timeout: 3 * second,
            ..RedisOptions::default()
        };
        assert_eq!(options.liveness_bound(), 3 * second);
        assert_eq!(options.presence_expiry_bound(), 4 * second);
    }

    #[test]
    fn signing_keys_of_32_bytes_or_more_are_taken_and_never_shown() {
        for len in [MIN_SIGNING_KEY_LEN, 64, 200] {
            let options = RedisOptions::default().sign_with(vec![0xabu8; len]);
            assert!(options.check().is_ok(), "{len} bytes refused");
            let shown = format!("{options:?}");
            assert!(
                !shown.contains("171") && !shown.to_lowercase().contains("abab"),
                "{shown}"
            );
            assert!(shown.contains("redacted"), "{shown}");
        }
        let short = RedisOptions::default().sign_with(b"short passphrase");
        match short.check() {
            Err(RedisAdapterError::Options(why)) => assert!(why.contains("at least 32 bytes"), "{why}"),
            other => panic!("a short key was accepted: {other:?}"),
        }
    }
}
