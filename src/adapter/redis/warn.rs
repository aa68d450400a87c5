//! Outage warnings: each kind of trouble logged at most once per [`WARN_EVERY`].

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use parking_lot::Mutex;

/// How often at most an outage is logged (the ops lost meanwhile are counted).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Logs a kind of trouble at most once per [`WARN_EVERY`], with how many were not logged.
pub(super) struct Warn {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Warn {
    pub(super) fn new() -> Self {
        Self {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    pub(super) fn warn(&self, node: &str, what: &str, error: &dyn fmt::Display) {
        let now = Instant::now();
        {
            let mut last = self.last.lock();
            if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            *last = Some(now);
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(node, %error, suppressed, "redis adapter: {what}");
    }
}
