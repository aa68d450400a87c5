//! One coarse clock for every connection's heartbeat, instead of a timer in each.
//!
//! A connection's heartbeat only needs to be looked at now and then (every few seconds, by
//! default): after a quiet spell it pings, after a longer one it gives up. A tokio timer in
//! every connection costs its entry in the timer wheel (over a hundred bytes, boxed) for the
//! connection's whole life. Here a connection asks to be woken at or after a deadline, and
//! the clock keeps only its waker until then: sixteen bytes, in a list shared with the other
//! connections due at about the same time.
//!
//! Deadlines are rounded up to a step that grows with how far off they are (a thirty-second
//! part of the wait, between [`MIN_STEP`] and [`MAX_STEP`]), so that connections due at about
//! the same time share a list and the clock wakes once for all of them: a wake comes at most
//! that step late, and never early.
//!
//! The clock is a thread of its own, started on first use and shared by every hub in the
//! process: it wakes tasks of any runtime (waking a task is all it does), and it outlives
//! none of them in a way that matters (it sleeps while nothing is due). A waker is kept until
//! its time, even if its connection ended meanwhile: what the waker holds (a connection's
//! queue, emptied) is freed at most one heartbeat check after the connection.

use std::{
    collections::BTreeMap,
    sync::OnceLock,
    task::Waker,
    time::{Duration, Instant},
};

use parking_lot::{Condvar, Mutex};

/// The smallest rounding step, in milliseconds.
const MIN_STEP: u64 = 1;
/// The largest rounding step, in milliseconds.
const MAX_STEP: u64 = 250;

/// Milliseconds since the clock's start: what deadlines are given in.
pub(crate) type Millis = u64;

struct Clock {
    start: Instant,
    /// Wakers by the (rounded) time they are due.
    due: Mutex<BTreeMap<Millis, Vec<Waker>>>,
    /// Tells the clock's thread that something came due earlier than it sleeps for.
    earlier: Condvar,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<&'static Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let clock: &'static Clock = Box::leak(Box::new(Clock {
            start: Instant::now(),
            due: Mutex::new(BTreeMap::new()),
            earlier: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("tower-realtime-clock".into())
            .spawn(move || clock.run())
            .expect("the heartbeat clock's thread could not be started");
        clock
    })
}

/// Now, in milliseconds since the clock's start.
pub(crate) fn now() -> Millis {
    clock().now()
}

/// Wakes `waker` at `at` or up to one step later (see the module's description); at once if
/// `at` has passed.
pub(crate) fn wake_at(at: Millis, waker: &Waker) {
    let clock = clock();
    let now = clock.now();
    if at <= now {
        waker.wake_by_ref();
        return;
    }
    let step = ((at - now) / 32).clamp(MIN_STEP, MAX_STEP);
    let slot = at.div_ceil(step) * step;
    let mut due = clock.due.lock();
    let first = due.first_key_value().map(|(at, _)| *at);
    due.entry(slot).or_default().push(waker.clone());
    drop(due);
    if first.is_none_or(|first| slot < first) {
        clock.earlier.notify_one();
    }
}

impl Clock {
    fn now(&self) -> Millis {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn run(&self) {
        let mut due = self.due.lock();
        loop {
            let Some(&next) = due.first_key_value().map(|(at, _)| at) else {
                self.earlier.wait(&mut due);
                continue;
            };
            let now = self.now();
            if next > now {
                self.earlier.wait_for(&mut due, Duration::from_millis(next - now));
                continue;
            }
            let Some((_, wakers)) = due.pop_first() else { continue };
            // Woken without the lock: a woken task may ask for its next deadline at once.
            drop(due);
            for waker in wakers {
                waker.wake();
            }
            due = self.due.lock();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        task::Wake,
    };

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn a_waker_is_woken_once_its_deadline_has_passed_and_not_before() {
        let (count, waker) = counter();
        let asked = now();
        wake_at(asked + 60, &waker);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "woken early");
        let deadline = Instant::now() + Duration::from_secs(5);
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "never woken");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(now() >= asked + 60, "woken before its deadline");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_earlier_deadline_is_not_held_up_by_a_later_one() {
        let (late, late_waker) = counter();
        let (early, early_waker) = counter();
        let asked = now();
        wake_at(asked + 60_000, &late_waker);
        wake_at(asked + 20, &early_waker);
        let deadline = Instant::now() + Duration::from_secs(5);
        while early.0.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the early waker was held up by the late one");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(late.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_deadline_that_has_passed_wakes_at_once() {
        let (count, waker) = counter();
        wake_at(now().saturating_sub(1), &waker);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
