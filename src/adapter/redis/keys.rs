//! The names of the adapter's Redis keys and pub/sub channels, made from the prefix and the
//! node id. The liveness and presence keys carry the hash tag `{<prefix>}`: on Redis Cluster
//! they share one slot, as the scripts that change them at once need.
//!
//! On one Redis, ops for every node go on `P#all` and ops for node `N` on `P#node#N`. On a
//! Redis Cluster, pub/sub is sharded (`SPUBLISH`/`SSUBSCRIBE`: a channel lives on the shard
//! of its slot), and the channels are spread over the slots: ops for every node go on one of
//! [`BROADCAST_CHANNELS`] channels `{P:b:<i>}` (a node always uses the same one, chosen by its
//! id; every node listens to all of them), ops for node `N` on `{P:n:N}`, and history emits
//! on `{P:h}:all`, in the slot of the history's keys (the append script publishes there).

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
};

/// How many broadcast channels a Redis Cluster's nodes share.
pub(super) const BROADCAST_CHANNELS: u64 = 16;

/// Key and channel names.
pub(super) struct Keys {
    prefix: String,
    cluster: bool,
    pub(super) nodes: String,
    pub(super) presence: String,
    pub(super) presence_prefix: String,
    /// This node's presence hash.
    pub(super) own_presence: String,
    /// Where this node publishes ops for every node.
    pub(super) all: Arc<str>,
    /// Where the append script publishes history emits.
    pub(super) history: String,
    /// The channels this node listens to.
    pub(super) listen: Vec<String>,
}

impl Keys {
    /// The names for one Redis, or for a Redis Cluster.
    pub(super) fn new(prefix: &str, node: &str, cluster: bool) -> Self {
        let (all, history, listen) = if cluster {
            let mut h = std::hash::DefaultHasher::new();
            node.hash(&mut h);
            let mine = h.finish() % BROADCAST_CHANNELS;
            let broadcast = |i: u64| format!("{{{prefix}:b:{i}}}");
            let mut listen: Vec<String> = (0..BROADCAST_CHANNELS).map(broadcast).collect();
            let history = format!("{{{prefix}:h}}:all");
            listen.push(format!("{{{prefix}:n:{node}}}"));
            listen.push(history.clone());
            (broadcast(mine), history, listen)
        } else {
            let all = format!("{prefix}#all");
            let listen = vec![all.clone(), format!("{prefix}#node#{node}")];
            (all.clone(), all, listen)
        };
        Self {
            prefix: prefix.to_owned(),
            cluster,
            nodes: format!("{{{prefix}}}:nodes"),
            presence: format!("{{{prefix}}}:presence"),
            presence_prefix: format!("{{{prefix}}}:presence:"),
            own_presence: format!("{{{prefix}}}:presence:{node}"),
            all: Arc::from(all),
            history,
            listen,
        }
    }

    /// Whether the names are for a Redis Cluster (sharded pub/sub).
    pub(super) fn cluster(&self) -> bool {
        self.cluster
    }

    /// Where ops for `node` go.
    pub(super) fn node_channel(&self, node: &str) -> Arc<str> {
        let prefix = &self.prefix;
        Arc::from(if self.cluster {
            format!("{{{prefix}:n:{node}}}")
        } else {
            format!("{prefix}#node#{node}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_from_the_prefix_and_the_node_id() {
        let keys = Keys::new("app", "node-1", false);
        assert_eq!(keys.nodes, "{app}:nodes");
        assert_eq!(keys.presence, "{app}:presence");
        assert_eq!(keys.presence_prefix, "{app}:presence:");
        assert_eq!(keys.own_presence, "{app}:presence:node-1");
        assert_eq!(&*keys.all, "app#all");
        assert_eq!(keys.history, "app#all");
        assert_eq!(keys.listen, ["app#all", "app#node#node-1"]);
        // What another node publishes to this one lands on a channel it listens to.
        assert_eq!(&*keys.node_channel("node-1"), keys.listen[1]);
        assert_eq!(&*keys.node_channel("node-2"), "app#node#node-2");
        assert_eq!(&*Keys::new("other", "node-1", false).all, "other#all");
    }

    #[test]
    fn on_a_cluster_channels_are_sharded_and_spread() {
        let keys = Keys::new("app", "node-1", true);
        assert_eq!(keys.nodes, "{app}:nodes");
        assert_eq!(keys.history, "{app:h}:all");
        // Every broadcast channel, its own, and the history's.
        assert_eq!(keys.listen.len() as u64, BROADCAST_CHANNELS + 2);
        assert!(keys.listen.contains(&"{app:b:0}".to_owned()));
        assert!(keys.listen.contains(&"{app:n:node-1}".to_owned()));
        assert!(keys.listen.contains(&keys.history));
        assert_eq!(&*keys.node_channel("node-1"), "{app:n:node-1}");
        // Each node publishes on one broadcast channel, always the same, which every node
        // listens to; nodes spread over them.
        let mut used = std::collections::HashSet::new();
        for i in 0..64 {
            let node = format!("node-{i}");
            let a = Keys::new("app", &node, true);
            assert_eq!(a.all, Keys::new("app", &node, true).all);
            assert!(keys.listen.iter().any(|c| **c == *a.all), "{}", a.all);
            used.insert(a.all.to_string());
        }
        assert!(used.len() > (BROADCAST_CHANNELS / 2) as usize, "{used:?}");
    }
}
