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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_logged_at_most_once_per_period_and_the_rest_counted() {
        let warn = Warn::new();
        warn.warn("n", "redis unreachable", &"down");
        assert!(warn.last.lock().is_some());
        assert_eq!(warn.suppressed.load(Ordering::Relaxed), 0);
        warn.warn("n", "redis unreachable", &"down");
        warn.warn("n", "redis unreachable", &"down");
        assert_eq!(warn.suppressed.load(Ordering::Relaxed), 2);
        // Once the period has passed, the next one is logged, and the count starts over.
        let Some(earlier) = Instant::now().checked_sub(WARN_EVERY) else {
            return; // the clock is too young to go back a period
        };
        *warn.last.lock() = Some(earlier);
        warn.warn("n", "redis unreachable", &"down");
        assert_eq!(warn.suppressed.load(Ordering::Relaxed), 0);
        assert!(warn.last.lock().is_some_and(|t| t > earlier));
    }
}
