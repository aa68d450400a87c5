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
//!
//! The queue is also where its reader's task is woken for anything else: a close request
//! ([`Sender::nudge`]), and the reader's other sources — the socket's read side, the ping
//! clock — through gates ([`Wakes::poll_gated`]). A connection's loop waits on all of these
//! at once, and `select!` polls every one on each pass; most passes are for the queue, and
//! polling the socket and the timer there would find nothing new yet take locks on the way
//! (the socket's readiness, tungstenite's wakers, the timer entry). A gated source is polled
//! only if it woke since it last returned `Pending`, or if it returned an item last time (a
//! stream may hold more without waking anyone). The gates' state lives here, in an
//! allocation every connection has anyway.
//!
//! Volatile and coalesced messages ([`Sender::send_with`]) use the same allocation: a flag
//! the reader keeps, set while it writes a batch or cannot write one (its wire not writable,
//! as a long-polling session with no request waiting), so that a volatile message for a busy
//! reader is dropped; and a side list of the coalesced frames still queued, by key, empty and
//! without storage unless one is queued, so that a new frame with the same key takes the old
//! one's place. Plain messages ([`Sender::try_send`]) look at neither.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::task::{waker_ref, ArcWake, AtomicWaker, WakerRef};
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::Message;

/// A queued message: shared by every connection it goes to, one pointer per queue slot.
///
/// It also keeps what permessage-deflate made of it, once per compression setting
/// (`connection::deflate`): the first writer with a setting compresses it, every other
/// recipient with that setting writes those bytes.
#[derive(Debug, Clone)]
pub struct Frame(Arc<FrameData>);

#[derive(Debug)]
struct FrameData {
    msg: Message,
    /// Compressed payloads by setting (`None`: compressing did not make it smaller).
    deflated: Mutex<Vec<(u8, Option<Bytes>)>>,
}

impl Frame {
    pub(crate) fn new(msg: Message) -> Self {
        Self(Arc::new(FrameData {
            msg,
            deflated: Mutex::new(Vec::new()),
        }))
    }

    /// Whether two frames are the same one.
    pub(crate) fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    /// Its payload compressed with setting `key`, compressed by `compress` the first time
    /// (`None`: compressing does not make it smaller). The second value says whether this
    /// call compressed it.
    pub(crate) fn deflated(&self, key: u8, compress: impl FnOnce() -> Option<Bytes>) -> (Option<Bytes>, bool) {
        // The lock is held while the first writer compresses: the others with the same
        // setting wait for its bytes rather than compress again.
        let mut deflated = self.0.deflated.lock();
        if let Some((_, bytes)) = deflated.iter().find(|(k, _)| *k == key) {
            return (bytes.clone(), false);
        }
        let bytes = compress();
        deflated.push((key, bytes.clone()));
        (bytes, true)
    }
}

impl std::ops::Deref for Frame {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.0.msg
    }
}

impl From<Message> for Frame {
    fn from(msg: Message) -> Self {
        Self::new(msg)
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.0.msg == other.0.msg
    }
}

/// Storage kept after the queue empties, in messages (a small reserve avoids reallocating
/// for every single message).
const KEEP: usize = 4;

/// Coalesced frames still queued, each with the hash of its key.
type Keyed = Vec<(u64, Frame)>;

struct Shared {
    queue: Mutex<VecDeque<Frame>>,
    /// The reader's waker. One reader at a time, so an `AtomicWaker` will do: no lock and no
    /// list of waiters, as a `Notify` would take on every wait.
    waker: AtomicWaker,
    capacity: usize,
    /// Room made by [`Sender::push_all`] for a replay, on top of `capacity`, until the queue
    /// is next empty.
    extra: AtomicUsize,
    /// Set by [`Sender::nudge`]: the reader has something to look at besides the queue.
    nudged: AtomicBool,
    /// One bit per gated source: set when the source is to be polled at the next pass.
    gates: AtomicU8,
    /// Set while the reader cannot write: a batch is being written, or the transport cannot
    /// take one (a long-polling session with no pending request). Read by volatile sends.
    blocked: AtomicBool,
    /// The coalesced frames still queued, by key: none unless [`Sender::send_with`] queued
    /// one with a key since the queue last emptied (and then freed with the queue's storage).
    /// Boxed, so that a connection that never gets one pays a pointer for it. Locked after
    /// `queue`, only by coalesced sends and when the queue empties.
    keyed: Mutex<Option<Box<Keyed>>>,
    /// Whether `keyed` may hold anything (changed under the queue's lock): a queue that
    /// empties looks at `keyed` only then.
    any_keyed: AtomicBool,
}

impl Shared {
    /// The queue is empty (its lock held): no coalesced frame is queued any more.
    fn forget_keys(&self) {
        if self.any_keyed.load(Ordering::Relaxed) {
            self.any_keyed.store(false, Ordering::Relaxed);
            *self.keyed.lock() = None;
        }
    }
}

/// The gated sources' waker: any of them waking opens every gate (a source that did not wake
/// is then polled once for nothing, which costs what polling it did before gates). Made from
/// the queue's own `Arc` when it is used ([`waker_ref`]), so that the reader keeps nothing
/// for it.
impl ArcWake for Shared {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.gates.store(u8::MAX, Ordering::Release);
        arc_self.waker.wake();
    }
}

/// Why [`Sender::try_send`] did not queue a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The queue holds `capacity` messages already.
    Full,
}

/// How [`Sender::send_with`] queues a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mode {
    /// Dropped rather than queued unless the queue is empty and the reader can write now.
    pub(crate) volatile: bool,
    /// Replaces, in place, the message queued with the same key (a hash of the app's key).
    pub(crate) key: Option<u64>,
}

/// What [`Sender::send_with`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Queued at the back.
    Queued,
    /// Put in the place of the message queued with the same key.
    Replaced,
    /// Volatile, and the reader was busy: not queued.
    Dropped,
    /// The queue holds `capacity` messages already.
    Full,
}

/// The sending side; cheap to clone (several Socket.IO namespaces share one queue).
#[derive(Clone)]
pub(crate) struct Sender(Arc<Shared>);

/// The receiving side: one reader at a time.
pub struct Receiver(Arc<Shared>);

/// A queue of at most `capacity` messages.
pub(crate) fn channel(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        waker: AtomicWaker::new(),
        capacity: capacity.max(1),
        extra: AtomicUsize::new(0),
        nudged: AtomicBool::new(false),
        gates: AtomicU8::new(u8::MAX),
        blocked: AtomicBool::new(false),
        keyed: Mutex::new(None),
        any_keyed: AtomicBool::new(false),
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

    /// Queues a group of messages together (a binary event and its attachments): one lock,
    /// so no other message comes between them. The group counts as one message against the
    /// capacity: it is queued when the queue holds fewer than `capacity` messages, and may
    /// then take the queue past it by its length less one (bounded by the attachment limits).
    pub(crate) fn try_send_group(&self, msgs: &[Frame]) -> Result<(), Full> {
        let mut queue = self.0.queue.lock();
        if queue.len() >= self.0.capacity + self.0.extra.load(Ordering::Relaxed) {
            return Err(Full::Full);
        }
        queue.extend(msgs.iter().cloned());
        drop(queue);
        self.0.waker.wake();
        Ok(())
    }

    /// Queues a message as `mode` says (a volatile or coalesced send; plain sends use
    /// [`try_send`](Self::try_send)).
    pub(crate) fn send_with(&self, msg: Frame, mode: Mode) -> Sent {
        if mode.volatile && mode.key.is_none() && self.0.blocked.load(Ordering::Relaxed) {
            return Sent::Dropped;
        }
        let mut queue = self.0.queue.lock();
        let mut keyed = mode.key.map(|key| (key, self.0.keyed.lock()));
        if let Some((key, Some(list))) = keyed.as_mut().map(|(key, list)| (*key, list.as_mut())) {
            if let Some(i) = list.iter().position(|(k, _)| *k == key) {
                let (_, old) = list.swap_remove(i);
                // Still queued (not taken by the writer yet): the new message takes its place.
                if let Some(slot) = queue.iter_mut().rev().find(|f| Frame::ptr_eq(f, &old)) {
                    *slot = msg.clone();
                    list.push((key, msg));
                    return Sent::Replaced;
                }
            }
        }
        if mode.volatile && (!queue.is_empty() || self.0.blocked.load(Ordering::Relaxed)) {
            return Sent::Dropped;
        }
        if queue.len() >= self.0.capacity + self.0.extra.load(Ordering::Relaxed) {
            return Sent::Full;
        }
        if let Some((key, list)) = keyed.as_mut() {
            // Made here only: the list exists (and `any_keyed` is set) once a frame is queued
            // with a key, until the queue empties.
            let list = list.get_or_insert_with(Box::default);
            // Entries of frames the writer took are dropped once there are more entries than
            // frames, so the list never outgrows the queue.
            if list.len() >= queue.len() {
                list.retain(|(_, f)| queue.iter().any(|q| Frame::ptr_eq(q, f)));
            }
            list.push((*key, msg.clone()));
            self.0.any_keyed.store(true, Ordering::Relaxed);
        }
        queue.push_back(msg);
        drop(keyed);
        drop(queue);
        self.0.waker.wake();
        Sent::Queued
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

    /// Wakes the reader for something other than a message (a close request, say): its
    /// [`Receiver::next`] answers [`Next::Nudged`] before any message.
    pub(crate) fn nudge(&self) {
        self.0.nudged.store(true, Ordering::Release);
        self.0.waker.wake();
    }
}

/// The gate of the socket's read side.
pub(crate) const READ: u8 = 1;
/// The gate of the heartbeat (woken by its clock).
pub(crate) const PING: u8 = 2;

/// The reader task's other wake-ups: nudges, and gated sources. Used from the reader's task
/// while the [`Receiver`] itself is busy elsewhere.
pub(crate) struct Wakes {
    shared: Arc<Shared>,
}

impl Wakes {
    /// Waits for a nudge, and leaves it for [`Receiver::next`] to take.
    #[cfg(test)]
    pub(crate) async fn nudged(&self) {
        std::future::poll_fn(|cx| self.poll_nudged(cx)).await
    }

    /// Whether a nudge is waiting (left for [`Receiver::next`] to take); registers for one
    /// when not.
    pub(crate) fn poll_nudged(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.waker.register(cx.waker());
        if self.shared.nudged.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The waker that opens the gates (for a source woken from elsewhere, as the heartbeat's
    /// clock).
    pub(crate) fn waker(&self) -> WakerRef<'_> {
        waker_ref(&self.shared)
    }

    /// Polls a source through `poll` if its gate (`gate`: a bit of its own) is open, with a
    /// waker that opens the gates; `Pending` at once otherwise.
    pub(crate) fn poll_gated<T>(
        &self,
        gate: u8,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // The task is registered before the gate is looked at: a wake after the look reaches
        // this task, and one before it left the gate open.
        self.shared.waker.register(cx.waker());
        if self.shared.gates.fetch_and(!gate, Ordering::AcqRel) & gate == 0 {
            return Poll::Pending;
        }
        match poll(&mut Context::from_waker(&waker_ref(&self.shared))) {
            Poll::Ready(v) => {
                self.shared.gates.fetch_or(gate, Ordering::Release);
                Poll::Ready(v)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What [`Receiver::next`] found.
#[derive(Debug, PartialEq)]
pub(crate) enum Next {
    /// [`Sender::nudge`] was called since the last `Nudged`.
    Nudged,
    Message(Frame),
}

impl Receiver {
    /// The next message, waiting for one.
    #[cfg(test)]
    pub async fn recv(&mut self) -> Option<Frame> {
        std::future::poll_fn(|cx| {
            // Registered before looking: a message queued after the look wakes this poll's
            // task, and one queued before it is found.
            self.0.waker.register(cx.waker());
            match self.try_recv() {
                Ok(msg) => Poll::Ready(Some(msg)),
                Err(()) => Poll::Pending,
            }
        })
        .await
    }

    /// A nudge, or else the next message, waiting for either.
    #[cfg(test)]
    pub(crate) async fn next(&mut self) -> Next {
        std::future::poll_fn(|cx| self.poll_next(cx, |_| Poll::Ready(()))).await
    }

    /// A nudge, or else the next message once `writable` is ready: a nudge is seen whether or
    /// not the writer can take a message.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        writable: impl FnOnce(&mut Context<'_>) -> Poll<()>,
    ) -> Poll<Next> {
        self.0.waker.register(cx.waker());
        if self.0.nudged.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Next::Nudged);
        }
        if writable(cx).is_pending() {
            self.0.blocked.store(true, Ordering::Relaxed);
            return Poll::Pending;
        }
        let next = self.try_recv();
        // A message taken is about to be written: the reader is busy until it asks again.
        self.0.blocked.store(next.is_ok(), Ordering::Relaxed);
        match next {
            Ok(msg) => Poll::Ready(Next::Message(msg)),
            Err(()) => Poll::Pending,
        }
    }

    /// Puts frames taken but not written back at the front of the queue, in order, past its
    /// capacity (they were in it already).
    pub(crate) fn unread(&mut self, frames: Vec<Frame>) {
        if frames.is_empty() {
            return;
        }
        let mut queue = self.0.queue.lock();
        self.0.extra.fetch_add(frames.len(), Ordering::Relaxed);
        for frame in frames.into_iter().rev() {
            queue.push_front(frame);
        }
    }

    /// A handle on the reader's other wake-ups.
    pub(crate) fn wakes(&self) -> Wakes {
        Wakes { shared: self.0.clone() }
    }

    /// The next message, if one is queued.
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&mut self) -> Result<Frame, ()> {
        let mut queue = self.0.queue.lock();
        let msg = queue.pop_front().ok_or(())?;
        if queue.is_empty() {
            self.0.extra.store(0, Ordering::Relaxed);
            self.0.forget_keys();
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
    use std::task::Waker;

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

    #[test]
    fn a_group_is_queued_whole_and_counts_as_one() {
        let (tx, mut rx) = channel(2);
        tx.try_send(Frame::new(Message::text("a"))).unwrap();
        let group: Vec<Frame> = (0..3).map(|i| Frame::new(Message::binary(vec![i]))).collect();
        tx.try_send_group(&group).unwrap();
        assert_eq!(tx.try_send(Frame::new(Message::text("x"))), Err(Full::Full));
        assert_eq!(tx.try_send_group(&group), Err(Full::Full));
        assert_eq!(rx.try_recv().unwrap(), Frame::new(Message::text("a")));
        for frame in &group {
            assert_eq!(&rx.try_recv().unwrap(), frame);
        }
        assert!(rx.is_empty());
    }

    fn text(s: &str) -> Frame {
        Frame::new(Message::text(s))
    }

    fn drain(rx: &mut Receiver) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|f| f.to_text().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_volatile_message_is_dropped_when_anything_is_queued_or_the_reader_is_busy() {
        let volatile = Mode {
            volatile: true,
            key: None,
        };
        let (tx, mut rx) = channel(8);
        assert_eq!(tx.send_with(text("v1"), volatile), Sent::Queued);
        assert_eq!(tx.send_with(text("v2"), volatile), Sent::Dropped, "v1 is queued");
        assert_eq!(drain(&mut rx), ["v1"]);
        // The reader took a message to write: busy until it asks for the next one.
        tx.try_send(text("a")).unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(rx.poll_next(&mut cx, |_| Poll::Ready(())).is_ready());
        assert_eq!(
            tx.send_with(text("v3"), volatile),
            Sent::Dropped,
            "a write is in progress"
        );
        assert!(rx.poll_next(&mut cx, |_| Poll::Ready(())).is_pending());
        assert_eq!(tx.send_with(text("v4"), volatile), Sent::Queued, "idle and writable");
        assert_eq!(drain(&mut rx), ["v4"]);
        // The transport cannot take a write (a long-polling session with no request).
        assert!(rx.poll_next(&mut cx, |_| Poll::Pending).is_pending());
        assert_eq!(tx.send_with(text("v5"), volatile), Sent::Dropped, "not writable");
    }

    #[test]
    fn a_coalesced_message_takes_the_place_of_the_queued_one_with_its_key() {
        let key = |k| Mode {
            volatile: false,
            key: Some(k),
        };
        let (tx, mut rx) = channel(8);
        tx.try_send(text("plain")).unwrap();
        assert_eq!(tx.send_with(text("k1=v1"), key(1)), Sent::Queued);
        assert_eq!(tx.send_with(text("k1=v2"), key(1)), Sent::Replaced);
        assert_eq!(tx.send_with(text("k2=x"), key(2)), Sent::Queued);
        assert_eq!(tx.send_with(text("k1=v3"), key(1)), Sent::Replaced);
        assert_eq!(drain(&mut rx), ["plain", "k1=v3", "k2=x"]);
        assert!(rx.0.keyed.lock().is_none(), "the keys go with the queue's storage");

        // Taken by the writer: the next one with the key is queued anew.
        tx.send_with(text("k1=a"), key(1));
        tx.try_send(text("plain")).unwrap();
        assert_eq!(rx.try_recv().unwrap(), text("k1=a"));
        assert_eq!(tx.send_with(text("k1=b"), key(1)), Sent::Queued);
        assert_eq!(drain(&mut rx), ["plain", "k1=b"]);

        // Volatile and coalesced: replaced while queued, dropped when busy otherwise.
        let both = |k| Mode {
            volatile: true,
            key: Some(k),
        };
        assert_eq!(tx.send_with(text("c=1"), both(3)), Sent::Queued);
        assert_eq!(tx.send_with(text("c=2"), both(3)), Sent::Replaced);
        assert_eq!(tx.send_with(text("d=1"), both(4)), Sent::Dropped);
        assert_eq!(drain(&mut rx), ["c=2"]);
        // Dropped with nothing queued: no list is made for it.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(rx.poll_next(&mut cx, |_| Poll::Pending).is_pending());
        assert_eq!(tx.send_with(text("e=1"), both(5)), Sent::Dropped);
        assert!(rx.0.keyed.lock().is_none());
    }

    #[test]
    fn the_keys_of_messages_taken_do_not_pile_up() {
        let (tx, mut rx) = channel(4);
        tx.try_send(text("first")).unwrap();
        for k in 0..100 {
            let mode = Mode {
                volatile: false,
                key: Some(k),
            };
            assert_eq!(tx.send_with(text("k"), mode), Sent::Queued);
            assert_eq!(rx.try_recv().unwrap(), text(if k == 0 { "first" } else { "k" }));
            assert!(rx.0.keyed.lock().as_ref().map_or(0, |k| k.len()) <= 2);
        }
    }

    #[tokio::test]
    async fn a_nudge_comes_before_messages_and_once() {
        let (tx, mut rx) = channel(8);
        tx.try_send(Frame::new(Message::text("a"))).unwrap();
        tx.nudge();
        tx.nudge();
        let wakes = rx.wakes();
        wakes.nudged().await;
        wakes.nudged().await;
        assert_eq!(rx.next().await, Next::Nudged);
        assert_eq!(rx.next().await, Next::Message(Frame::new(Message::text("a"))));

        let waiting = tokio::spawn(async move {
            wakes.nudged().await;
            rx.next().await
        });
        tokio::task::yield_now().await;
        tx.nudge();
        assert_eq!(waiting.await.unwrap(), Next::Nudged);
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken() {
        let (tx, mut rx) = channel(8);
        let reader = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send(Frame::new(Message::text("hi"))).unwrap();
        assert_eq!(reader.await.unwrap(), Some(Frame::new(Message::text("hi"))));
    }

    /// An unbounded receiver as a `Stream`.
    fn stream(mut rx: tokio::sync::mpsc::UnboundedReceiver<u32>) -> impl futures_util::Stream<Item = u32> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    #[test]
    fn a_gated_source_is_polled_again_only_after_a_wake() {
        use futures_util::StreamExt;
        let (_tx, rx) = channel(8);
        let wakes = rx.wakes();
        let (a_tx, a_rx) = tokio::sync::mpsc::unbounded_channel();
        let (b_tx, b_rx) = tokio::sync::mpsc::unbounded_channel();
        let (mut a_rx, mut b_rx) = (stream(a_rx), stream(b_rx));
        let polls = [AtomicUsize::new(0), AtomicUsize::new(0)];
        let mut cx = Context::from_waker(Waker::noop());
        let mut poll_a = |cx: &mut Context<'_>| {
            wakes.poll_gated(1, cx, |cx| {
                polls[0].fetch_add(1, Ordering::Relaxed);
                a_rx.poll_next_unpin(cx)
            })
        };
        let mut poll_b = |cx: &mut Context<'_>| {
            wakes.poll_gated(2, cx, |cx| {
                polls[1].fetch_add(1, Ordering::Relaxed);
                b_rx.poll_next_unpin(cx)
            })
        };
        let counts = || polls.each_ref().map(|p| p.load(Ordering::Relaxed));

        // Open at first: each is polled once, finds nothing; after that, neither is.
        for _ in 0..3 {
            assert!(poll_a(&mut cx).is_pending());
            assert!(poll_b(&mut cx).is_pending());
        }
        assert_eq!(counts(), [1, 1]);

        // Two items for `a`: one wake. Both come out, one poll each, then one more poll finds
        // nothing and the gate shuts. `b` is polled once for nothing (any wake opens all).
        a_tx.send(1).unwrap();
        a_tx.send(2).unwrap();
        assert_eq!(poll_a(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(poll_a(&mut cx), Poll::Ready(Some(2)));
        for _ in 0..3 {
            assert!(poll_a(&mut cx).is_pending());
            assert!(poll_b(&mut cx).is_pending());
        }
        assert_eq!(counts(), [4, 2]);

        b_tx.send(7).unwrap();
        assert_eq!(poll_b(&mut cx), Poll::Ready(Some(7)));
        assert!(poll_b(&mut cx).is_pending());
        assert_eq!(counts(), [4, 4]);
    }

    #[tokio::test]
    async fn a_gated_source_wakes_the_waiting_task() {
        use futures_util::StreamExt;
        let (src_tx, src_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut src = stream(src_rx);
        let reader = tokio::spawn(async move {
            let (_tx, rx) = channel(8);
            let wakes = rx.wakes();
            let mut got = Vec::new();
            while got.len() < 3 {
                let next = std::future::poll_fn(|cx| wakes.poll_gated(1, cx, |cx| src.poll_next_unpin(cx)));
                match next.await {
                    Some(v) => got.push(v),
                    None => break,
                }
            }
            got
        });
        for i in 0..3 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            src_tx.send(i).unwrap();
        }
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
        assert_eq!(got.expect("woken").unwrap(), [0, 1, 2]);
    }
}
