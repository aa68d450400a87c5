//! Per-connection rate limits on events: a token bucket per limit, kept as one number.
//!
//! Each bucket is the generic cell rate algorithm (GCRA, as `governor` implements it): the
//! bucket is the time at which it would be full again (its *theoretical arrival time*), and
//! an event is allowed when taking its token leaves that time no further ahead of now than
//! the burst allows. `governor`'s direct limiter keeps its quota and a clock beside that one
//! number, 72 bytes in every connection (and in every event bucket), for state that is 8: the
//! quota is the namespace's ([`RateLimit`]), the clock is shared, and a connection keeps only
//! the time. The hub's keyed limiters (by address, by user) are still `governor`'s.

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use crate::config::RateLimit;

/// One connection's buckets, owned by its task (no lock). The limits are the namespace's,
/// given with each check.
#[derive(Default)]
pub(crate) struct RateState {
    /// The namespace-wide bucket (used when the namespace has a limit).
    all: Bucket,
    /// Buckets of events with their own limit, created on first use; boxed, as most
    /// connections never send one.
    #[allow(clippy::box_collection, reason = "a pointer while empty, in every connection")]
    events: Option<Box<EventBuckets>>,
    /// Events refused in a row.
    strikes: u32,
}

/// The buckets of events with a limit of their own, by name.
type EventBuckets = Vec<(Arc<str>, Bucket)>;

/// A token bucket: when it would be full again, in nanoseconds of [`now`] (0: full).
#[derive(Debug, Default, Clone, Copy)]
struct Bucket(u64);

/// Nanoseconds since the first time any bucket was looked at.
fn now() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Bucket {
    /// Takes a token at `now` if the bucket has one.
    fn take(&mut self, limit: RateLimit, now: u64) -> bool {
        // One token comes back every `every` nanoseconds; a full bucket holds `burst`.
        let every = 1_000_000_000 / u64::from(limit.per_second.get());
        let burst = every.saturating_mul(u64::from(limit.burst.get()));
        let after = self.0.max(now).saturating_add(every);
        if after - now > burst {
            return false;
        }
        self.0 = after;
        true
    }
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
    /// Takes a token for `event`: from its own bucket if it has a limit (`own`), and from the
    /// namespace-wide one if the namespace has one (`all`).
    pub(crate) fn check(
        &mut self,
        event: &Arc<str>,
        own: Option<RateLimit>,
        all: Option<RateLimit>,
        flood_threshold: u32,
    ) -> Verdict {
        let now = now();
        let mut allowed = true;
        if let Some(limit) = own {
            let events = self.events.get_or_insert_default();
            let idx = match events.iter().position(|(e, _)| e == event) {
                Some(i) => i,
                None => {
                    events.push((event.clone(), Bucket::default()));
                    events.len() - 1
                }
            };
            allowed &= events[idx].1.take(limit, now);
        }
        if allowed {
            if let Some(limit) = all {
                allowed &= self.all.take(limit, now);
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
        let mut state = RateState::default();
        let all = Some(RateLimit::per_second(1).burst(3));
        let ev: Arc<str> = Arc::from("e");
        let verdicts: Vec<_> = (0..6).map(|_| state.check(&ev, None, all, 3)).collect();
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
        let mut state = RateState::default();
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let one = Some(RateLimit::per_second(1));
        assert_eq!(state.check(&a, one, None, 0), Verdict::Allowed);
        assert_eq!(state.check(&a, one, None, 0), Verdict::Limited);
        assert_eq!(state.check(&b, one, None, 0), Verdict::Allowed);
        assert_eq!(state.check(&b, None, None, 0), Verdict::Allowed);
    }

    #[test]
    fn a_token_comes_back_after_its_interval_and_the_bucket_refills_to_its_burst() {
        let limit = RateLimit::per_second(10).burst(2);
        let mut bucket = Bucket::default();
        let ms = 1_000_000;
        let t0 = 5_000 * ms;
        assert!(bucket.take(limit, t0));
        assert!(bucket.take(limit, t0));
        assert!(!bucket.take(limit, t0), "the burst is 2");
        assert!(!bucket.take(limit, t0 + 99 * ms), "a token every 100 ms");
        assert!(bucket.take(limit, t0 + 100 * ms));
        assert!(!bucket.take(limit, t0 + 100 * ms));
        // A long quiet spell refills the bucket to its burst, not past it.
        let later = t0 + 60_000 * ms;
        assert!(bucket.take(limit, later));
        assert!(bucket.take(limit, later));
        assert!(!bucket.take(limit, later));
    }
}
