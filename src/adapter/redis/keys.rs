//! The names of the adapter's Redis keys and pub/sub channels, made from the prefix and the
//! node id.

use std::sync::Arc;

/// Key and channel names.
pub(super) struct Keys {
    pub(super) nodes: String,
    pub(super) presence: String,
    pub(super) presence_prefix: String,
    pub(super) all: Arc<str>,
    pub(super) own: String,
}

impl Keys {
    pub(super) fn new(prefix: &str, node: &str) -> Self {
        Self {
            nodes: format!("{prefix}:nodes"),
            presence: format!("{prefix}:presence"),
            presence_prefix: format!("{prefix}:presence:"),
            all: Arc::from(format!("{prefix}#all")),
            own: format!("{prefix}#node#{node}"),
        }
    }

    pub(super) fn node_channel(prefix: &str, node: &str) -> Arc<str> {
        Arc::from(format!("{prefix}#node#{node}"))
    }
}
