//! Per-connection rate limits on events (token buckets from `governor`).

use std::sync::Arc;

use governor::DefaultDirectRateLimiter;

use crate::config::RateLimit;

/// One connection's buckets, owned by its task (no lock).
#[derive(Default)]
pub(crate) struct RateState {
    /// The namespace-wide bucket, when the namespace has a limit.
    all: Option<DefaultDirectRateLimiter>,
    /// Buckets of events with their own limit, created on first use.
    events: Vec<(Arc<str>, DefaultDirectRateLimiter)>,
    /// Events refused in a row.
    strikes: u32,
}

/// The verdict on one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    Limited,
    /// Limited, and the connection has been refused `threshold` events in a row.
    Flooding,
}

impl RateState {
    pub(crate) fn new(all: Option<RateLimit>) -> Self {
        Self {
            all: all.map(|r| r.limiter()),
            ..Self::default()
        }
    }

    /// Takes a token for `event` (from its own bucket if it has a limit, and from the
    /// namespace-wide one).
    pub(crate) fn check(&mut self, event: &Arc<str>, own: Option<RateLimit>, flood_threshold: u32) -> Verdict {
        let mut allowed = true;
        if let Some(limit) = own {
            let idx = match self.events.iter().position(|(e, _)| e == event) {
                Some(i) => i,
                None => {
                    self.events.push((event.clone(), limit.limiter()));
                    self.events.len() - 1
                }
            };
            allowed &= self.events[idx].1.check().is_ok();
        }
        if allowed {
            if let Some(all) = &self.all {
                allowed &= all.check().is_ok();
            }
        }
        if allowed {
            self.strikes = 0;
            return Verdict::Allowed;
        }
        self.strikes = self.strikes.saturating_add(1);
        if flood_threshold > 0 && self.strikes >= flood_threshold {
            Verdict::Flooding
        } else {
            Verdict::Limited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_limits_then_floods() {
        let mut state = RateState::new(Some(RateLimit::per_second(1).burst(3)));
        let ev: Arc<str> = Arc::from("e");
        let verdicts: Vec<_> = (0..6).map(|_| state.check(&ev, None, 3)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Allowed,
                Verdict::Allowed,
                Verdict::Allowed,
                Verdict::Limited,
                Verdict::Limited,
                Verdict::Flooding
            ]
        );
    }

    #[test]
    fn an_event_limit_is_separate() {
        let mut state = RateState::new(None);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let one = Some(RateLimit::per_second(1));
        assert_eq!(state.check(&a, one, 0), Verdict::Allowed);
        assert_eq!(state.check(&a, one, 0), Verdict::Limited);
        assert_eq!(state.check(&b, one, 0), Verdict::Allowed);
        assert_eq!(state.check(&b, None, 0), Verdict::Allowed);
    }
}
