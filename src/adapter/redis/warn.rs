//! Outage warnings: each kind of trouble logged at most once per period (the engine-neutral
//! [`common::Warn`](crate::adapter::common::Warn), naming Redis).

use std::fmt;

use crate::adapter::common;

/// [`common::Warn`] for the Redis engine.
pub(super) struct Warn(common::Warn);

impl Warn {
    pub(super) fn new() -> Self {
        Self(common::Warn::new("redis"))
    }

    pub(super) fn warn(&self, node: &str, what: &str, error: &dyn fmt::Display) {
        self.0.warn(node, what, error);
    }
}
