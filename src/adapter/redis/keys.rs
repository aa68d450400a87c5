//! The names of the adapter's Redis keys and pub/sub channels, made from the prefix and the
//! node id. The liveness and presence keys carry the hash tag `{<prefix>}`: on Redis Cluster
//! they share one slot, as the scripts that change them at once need.

use std::sync::Arc;

/// Key and channel names.
pub(super) struct Keys {
    pub(super) nodes: String,
    pub(super) presence: String,
    pub(super) presence_prefix: String,
    /// This node's presence hash.
    pub(super) own_presence: String,
    pub(super) all: Arc<str>,
    pub(super) own: String,
}

impl Keys {
    pub(super) fn new(prefix: &str, node: &str) -> Self {
        Self {
            nodes: format!("{{{prefix}}}:nodes"),
            presence: format!("{{{prefix}}}:presence"),
            presence_prefix: format!("{{{prefix}}}:presence:"),
            own_presence: format!("{{{prefix}}}:presence:{node}"),
            all: Arc::from(format!("{prefix}#all")),
            own: format!("{prefix}#node#{node}"),
        }
    }

    pub(super) fn node_channel(prefix: &str, node: &str) -> Arc<str> {
        Arc::from(format!("{prefix}#node#{node}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_from_the_prefix_and_the_node_id() {
        let keys = Keys::new("app", "node-1");
        assert_eq!(keys.nodes, "{app}:nodes");
        assert_eq!(keys.presence, "{app}:presence");
        assert_eq!(keys.presence_prefix, "{app}:presence:");
        assert_eq!(keys.own_presence, "{app}:presence:node-1");
        assert_eq!(&*keys.all, "app#all");
        assert_eq!(keys.own, "app#node#node-1");
        // What another node publishes to this one lands on the channel it subscribed to.
        assert_eq!(&*Keys::node_channel("app", "node-1"), keys.own);
        assert_eq!(&*Keys::node_channel("app", "node-2"), "app#node#node-2");
        assert_eq!(&*Keys::new("other", "node-1").all, "other#all");
    }
}
