//! A connection's outbound queue: bounded, never waiting on the sending side, and holding no
//! storage while it is empty.
//!
//! tokio's bounded channel keeps the blocks it grew during a burst (a few KiB per connection,
//! for as long as the connection lives); at tens of thousands of idle connections that is most
//! of their memory. This queue is a `VecDeque` behind a mutex that gives its storage back each
//! time a reader empties it.
//!
//! A slot is one pointer ([`Frame`]): a burst queued to many connections at once (every member
//! of a room told of each join, say) costs 8 bytes per message and recipient rather than the
//! size of a [`Message`] (56). What a burst allocates the allocator tends to keep once it is
//! freed, so this is what the connections keep paying for, idle, long after the burst.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::Message;

/// A queued message: shared by every connection it goes to, one pointer per queue slot.
pub(crate) type Frame = Arc<Message>;

/// Storage kept after the queue empties, in messages (a small reserve avoids reallocating
/// for every single message).
const KEEP: usize = 4;

struct Shared {
    queue: Mutex<VecDeque<Frame>>,
    /// The reader's waker. One reader at a time, so an `AtomicWaker` will do: no lock and no
    /// list of waiters, as a `Notify` would take on every wait.
    waker: AtomicWaker,
    capacity: usize,
    /// Room made by [`Sender::push_all`] for a replay, on top of `capacity`, until the queue
    /// is next empty.
    extra: AtomicUsize,
}

/// Why [`Sender::try_send`] did not queue a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The queue holds `capacity` messages already.
    Full,
}

/// The sending side; cheap to clone (several Socket.IO namespaces share one queue).
#[derive(Clone)]
pub(crate) struct Sender(Arc<Shared>);

/// The receiving side: one reader at a time.
#[doc(hidden)]
pub struct Receiver(Arc<Shared>);

/// A queue of at most `capacity` messages.
pub(crate) fn channel(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        waker: AtomicWaker::new(),
        capacity: capacity.max(1),
        extra: AtomicUsize::new(0),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl Sender {
    /// Queues a message without waiting.
    pub(crate) fn try_send(&self, msg: Frame) -> Result<(), Full> {
        let mut queue = self.0.queue.lock();
        if queue.len() >= self.0.capacity + self.0.extra.load(Ordering::Relaxed) {
            return Err(Full::Full);
        }
        queue.push_back(msg);
        drop(queue);
        self.0.waker.wake();
        Ok(())
    }

    /// Queues a replay whatever its length (it is bounded by the history it comes from, and
    /// its frames share their bytes with it); live messages still get `capacity` on top of it.
    pub(crate) fn push_all(&self, msgs: Vec<Frame>) {
        if msgs.is_empty() {
            return;
        }
        let mut queue = self.0.queue.lock();
        self.0.extra.fetch_add(msgs.len(), Ordering::Relaxed);
        queue.extend(msgs);
        drop(queue);
        self.0.waker.wake();
    }
}

impl Receiver {
    /// The next message, waiting for one.
    pub async fn recv(&mut self) -> Option<Frame> {
        std::future::poll_fn(|cx| {
            // Registered before looking: a message queued after the look wakes this poll's
            // task, and one queued before it is found.
            self.0.waker.register(cx.waker());
            match self.try_recv() {
                Ok(msg) => std::task::Poll::Ready(Some(msg)),
                Err(()) => std::task::Poll::Pending,
            }
        })
        .await
    }

    /// The next message, if one is queued.
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&mut self) -> Result<Frame, ()> {
        let mut queue = self.0.queue.lock();
        let msg = queue.pop_front().ok_or(())?;
        if queue.is_empty() {
            self.0.extra.store(0, Ordering::Relaxed);
            if queue.capacity() > KEEP {
                // Give the storage of a burst back.
                *queue = VecDeque::new();
            }
        }
        Ok(msg)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.0.queue.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_fifo_that_frees_its_storage() {
        let (tx, mut rx) = channel(10);
        for i in 0..10 {
            tx.try_send(Frame::new(Message::text(i.to_string()))).unwrap();
        }
        assert_eq!(tx.try_send(Frame::new(Message::text("x"))), Err(Full::Full));
        for i in 0..10 {
            assert_eq!(rx.recv().await, Some(Frame::new(Message::text(i.to_string()))));
        }
        assert!(rx.is_empty());
        assert_eq!(rx.0.queue.lock().capacity(), 0, "storage given back once empty");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_replay_goes_past_the_capacity_and_leaves_room_for_live_messages() {
        let (tx, mut rx) = channel(2);
        tx.push_all((0..5).map(|i| Frame::new(Message::text(i.to_string()))).collect());
        tx.try_send(Frame::new(Message::text("live 1"))).unwrap();
        tx.try_send(Frame::new(Message::text("live 2"))).unwrap();
        assert_eq!(tx.try_send(Frame::new(Message::text("x"))), Err(Full::Full));
        for _ in 0..7 {
            rx.try_recv().unwrap();
        }
        // Once empty, the queue is back to its own capacity.
        tx.try_send(Frame::new(Message::text("a"))).unwrap();
        tx.try_send(Frame::new(Message::text("b"))).unwrap();
        assert_eq!(tx.try_send(Frame::new(Message::text("c"))), Err(Full::Full));
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken() {
        let (tx, mut rx) = channel(8);
        let reader = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send(Frame::new(Message::text("hi"))).unwrap();
        assert_eq!(reader.await.unwrap(), Some(Frame::new(Message::text("hi"))));
    }
}
