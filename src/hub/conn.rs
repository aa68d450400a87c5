//! A live connection as the hub sees it: its id, identity, outbound queue, rooms, pending
//! acks and close request. Every transport registers one per connected socket; the hub emits
//! into its queue and never learns how the bytes leave.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
};

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{
    emit::Frames,
    history::{Offer, Recovery},
    registry::Join,
    ConnectionId, Extensions, Hub,
};
use crate::{address::ClientAddr, auth::Identity, config::SlowConsumerPolicy, outbox, protocol::close_code};

/// Why a connection ended, as the disconnect hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client sent a close frame (with its code, if any).
    ClientClosed(Option<u16>),
    /// The server closed, with this code and reason.
    ServerClosed(u16, String),
    /// The transport ended without a close frame (a TCP drop or reset).
    TransportClosed,
    /// Reading or writing failed.
    TransportError(String),
}

/// The wire protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    /// The native JSON protocol.
    Native,
    /// Socket.IO v5 (feature `socketio`).
    #[cfg(feature = "socketio")]
    SocketIo,
}

/// A live connection as the hub sees it: its queue, its identity, its rooms.
pub(crate) struct Conn {
    pub(crate) id: ConnectionId,
    pub(crate) proto: Proto,
    pub(crate) identity: Identity,
    tx: outbox::Sender,
    /// Its rooms, its close request and its pending acks, under one lock: each is held for a
    /// moment only, and one lock is smaller than three in every connection.
    locked: Mutex<Locked>,
    /// What a Socket.IO client sent in its CONNECT (`auth`), if anything.
    pub(crate) auth: Option<Box<Value>>,
    /// The connection's recovery session, when the hub keeps history and the client takes part.
    pub(crate) recovery: Option<Box<Recovery>>,
    /// The client address, when known, and whether the connection counts under it.
    pub(crate) addr: ClientAddr,
    /// What the app stored on the connection; allocated on the first store only.
    state: Mutex<Option<Box<ConnState>>>,
}

/// The app's per-connection state: typed values, and a JSON value the cluster can read.
#[derive(Default)]
pub(crate) struct ConnState {
    pub(crate) typed: Extensions,
    pub(crate) data: Option<Value>,
}

/// A client's answer to a server emit: its payload, and the attachments its placeholders
/// refer to.
pub(crate) type Answer = (Value, Vec<Bytes>);

/// A connection's state that changes, under its one lock.
#[derive(Default)]
struct Locked {
    /// The connection's rooms: the reverse index of the registry's rooms → connections.
    rooms: Vec<Arc<str>>,
    /// Server emits waiting for the client's answer. Made on the first wait: most
    /// connections never have one, and an empty map is 48 bytes in every connection.
    #[allow(clippy::box_collection, reason = "a pointer while empty, in every connection")]
    acks: Option<Box<HashMap<u64, oneshot::Sender<Answer>>>>,
    /// Why the connection is to be closed, once asked (`close_code` is then set).
    close_reason: &'static str,
    /// Set once: the code the connection is to be closed with (0: no close asked for; 0 is
    /// no close code).
    close_code: u16,
    /// Set when the connection ends: no new wait for an ack is registered.
    acks_closed: bool,
}

impl Locked {
    fn take_ack(&mut self, id: u64) -> Option<oneshot::Sender<Answer>> {
        self.acks.as_mut()?.remove(&id)
    }
}

impl Conn {
    pub(crate) fn new(
        id: ConnectionId,
        identity: Identity,
        capacity: usize,
        recovery: Option<Box<Recovery>>,
        addr: ClientAddr,
    ) -> (Arc<Self>, outbox::Receiver) {
        let (tx, rx) = outbox::channel(capacity);
        (
            Self::with_sender(id, Proto::Native, identity, tx, None, recovery, addr),
            rx,
        )
    }

    /// A connection writing into an existing queue (several Socket.IO namespaces share one).
    pub(crate) fn with_sender(
        id: ConnectionId,
        proto: Proto,
        identity: Identity,
        tx: outbox::Sender,
        auth: Option<Box<Value>>,
        recovery: Option<Box<Recovery>>,
        addr: ClientAddr,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            proto,
            identity,
            tx,
            locked: Mutex::default(),
            auth,
            recovery,
            addr,
            state: Mutex::new(None),
        })
    }

    /// Reads the app's state under its lock (`None` when nothing was ever stored).
    pub(crate) fn read_state<R>(&self, f: impl FnOnce(&mut ConnState) -> Option<R>) -> Option<R> {
        self.state.lock().as_deref_mut().and_then(f)
    }

    /// The app's JSON data for this connection, if any.
    pub(crate) fn data(&self) -> Option<Value> {
        self.read_state(|state| state.data.clone())
    }

    /// Changes the app's state under its lock, allocating it on the first store.
    pub(crate) fn write_state<R>(&self, f: impl FnOnce(&mut ConnState) -> R) -> R {
        f(self.state.lock().get_or_insert_with(Box::default))
    }

    /// Queues a frame without waiting. Returns whether it was queued; on a full queue the
    /// hub's slow-consumer policy applies.
    pub(crate) fn send(&self, hub: &Hub, msg: impl Into<outbox::Frame>) -> bool {
        match self.tx.try_send(msg.into()) {
            Ok(()) => true,
            Err(outbox::Full::Full) => {
                self.overflowed(hub);
                false
            }
        }
    }

    /// Queues an event's frames without waiting: one frame, or a group (a binary event and
    /// its attachments) with nothing else between them. Returns whether they were queued; on a
    /// full queue the hub's slow-consumer policy applies.
    pub(crate) fn send_frames(&self, hub: &Hub, frames: Frames) -> bool {
        let group = match frames {
            Frames::One(frame) => return self.send(hub, frame),
            Frames::Group(group) => group,
        };
        match self.tx.try_send_group(&group) {
            Ok(()) => true,
            Err(outbox::Full::Full) => {
                self.overflowed(hub);
                false
            }
        }
    }

    /// Queues a volatile or coalesced frame (see [`outbox::Mode`]). Returns whether it was
    /// queued (in a place of its own or in that of the frame it replaced).
    pub(crate) fn send_with(&self, hub: &Hub, msg: outbox::Frame, mode: outbox::Mode) -> bool {
        let counters = &hub.inner.counters;
        match self.tx.send_with(msg, mode) {
            outbox::Sent::Queued => true,
            outbox::Sent::Replaced => {
                counters.coalesced_replaced.fetch_add(1, Ordering::Relaxed);
                true
            }
            outbox::Sent::Dropped => {
                counters.volatile_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            outbox::Sent::Full => {
                self.overflowed(hub);
                false
            }
        }
    }

    /// Queues a history event (offset `seq`): held while the connection recovers, skipped
    /// when its replay had it already.
    pub(crate) fn send_at(&self, hub: &Hub, msg: outbox::Frame, seq: u64) -> bool {
        let Some(recovery) = &self.recovery else {
            return self.send(hub, msg);
        };
        let queued = match recovery.offer(seq, msg, hub.inner.config.outbound_queue) {
            Offer::Send(msg) => self.send(hub, msg),
            Offer::Held => return true,
            Offer::Skip => return false,
            Offer::Full => {
                self.overflowed(hub);
                false
            }
        };
        // Closing a slow consumer: nothing past the event it could not take is queued while it
        // closes (the writer may free room meanwhile), so that its client resumes from before
        // that event and gets it in the replay.
        if !queued && hub.inner.config.slow_consumer == SlowConsumerPolicy::Close {
            recovery.cut_after(seq.saturating_sub(1));
        }
        queued
    }

    /// Queues frames past the queue's capacity: a replay, bounded by the history it comes from.
    pub(crate) fn send_all(&self, msgs: Vec<outbox::Frame>) {
        self.tx.push_all(msgs);
    }

    /// A message did not fit: the slow-consumer policy applies.
    fn overflowed(&self, hub: &Hub) {
        let counters = &hub.inner.counters;
        counters.dropped.fetch_add(1, Ordering::Relaxed);
        if hub.inner.config.slow_consumer == SlowConsumerPolicy::Close
            && self.request_close(close_code::TRY_AGAIN_LATER, "slow consumer")
        {
            counters.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(conn = %self.id, "outbound queue full: closing a slow consumer");
        }
    }

    /// Asks the connection task to close with `code`. Returns `false` if a close was
    /// already requested (the first reason wins).
    pub(crate) fn request_close(&self, code: u16, reason: &'static str) -> bool {
        let mut locked = self.locked.lock();
        if locked.close_code != 0 {
            return false;
        }
        // A close code is never 0; a caller's 0 would read as no request.
        locked.close_code = code.max(1);
        locked.close_reason = reason;
        drop(locked);
        // Whoever runs the connection reads its queue (the sockets of one Socket.IO session
        // share their session's): the nudge wakes it.
        self.tx.nudge();
        true
    }

    /// Fails the server emits still waiting for an answer (`AckError::Disconnected`), and
    /// any registered later.
    pub(crate) fn fail_acks(&self) {
        let mut locked = self.locked.lock();
        locked.acks_closed = true;
        locked.acks = None;
    }

    /// The close requested for this connection, if any.
    pub(crate) fn close_requested(&self) -> Option<(u16, &'static str)> {
        let locked = self.locked.lock();
        (locked.close_code != 0).then_some((locked.close_code, locked.close_reason))
    }

    /// Waits for the answer to ack `id` (one of the hub's, see `Hub::next_ack_id`): where it
    /// will arrive, or `None` when the connection has ended.
    pub(crate) fn register_ack(&self, id: u64) -> Option<oneshot::Receiver<Answer>> {
        let mut locked = self.locked.lock();
        if locked.acks_closed {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        locked.acks.get_or_insert_default().insert(id, tx);
        Some(rx)
    }

    pub(crate) fn forget_ack(&self, id: u64) {
        self.locked.lock().take_ack(id);
    }

    /// Hands the client's answer to the emit waiting for it. `false` for an unknown id (a late
    /// answer, after a timeout).
    pub(crate) fn resolve_ack(&self, id: u64, answer: Answer) -> bool {
        let waiting = self.locked.lock().take_ack(id);
        match waiting {
            Some(tx) => tx.send(answer).is_ok(),
            None => false,
        }
    }

    pub(crate) fn rooms(&self) -> Vec<String> {
        self.locked.lock().rooms.iter().map(|r| r.to_string()).collect()
    }

    pub(crate) fn in_room(&self, room: &str) -> bool {
        self.locked.lock().rooms.iter().any(|r| &**r == room)
    }

    pub(crate) fn add_room(&self, room: &Arc<str>, max: usize) -> Join {
        let rooms = &mut self.locked.lock().rooms;
        if rooms.iter().any(|r| r == room) {
            Join::AlreadyIn
        } else if rooms.len() >= max {
            Join::TooManyRooms
        } else {
            rooms.push(room.clone());
            Join::Joined
        }
    }

    pub(crate) fn remove_room(&self, room: &str) -> bool {
        let rooms = &mut self.locked.lock().rooms;
        match rooms.iter().position(|r| &**r == room) {
            Some(i) => {
                rooms.swap_remove(i);
                true
            }
            None => false,
        }
    }

    pub(crate) fn take_rooms(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.locked.lock().rooms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> outbox::Frame {
        outbox::Frame::new(tokio_tungstenite::tungstenite::Message::text(n.to_string()))
    }

    /// A slow consumer closed while its writer frees room: a history event that did not fit is
    /// never followed by a later one (its client would resume past it).
    #[tokio::test]
    async fn nothing_past_a_history_event_a_slow_consumer_could_not_take_is_queued() {
        for policy in [SlowConsumerPolicy::Close, SlowConsumerPolicy::DropMessage] {
            let hub = Hub::builder()
                .configure(|c| {
                    c.outbound_queue = 2;
                    c.slow_consumer = policy;
                })
                .build();
            let recovery = Box::new(Recovery::new(Arc::from("s"), 0, ConnectionId(1)));
            let identity = Identity::user("u", Default::default());
            let (conn, mut rx) = Conn::new(ConnectionId(1), identity, 2, Some(recovery), Default::default());
            assert!(conn.send_at(&hub, frame(1), 1) && conn.send_at(&hub, frame(2), 2));
            assert!(!conn.send_at(&hub, frame(3), 3), "the queue is full");
            // The writer takes one; there is room again.
            assert_eq!(rx.try_recv().ok(), Some(frame(1)));
            let fourth = conn.send_at(&hub, frame(4), 4);
            match policy {
                SlowConsumerPolicy::Close => {
                    assert!(!fourth, "4 after 3 was dropped, on a connection being closed");
                    assert_eq!(
                        conn.close_requested(),
                        Some((close_code::TRY_AGAIN_LATER, "slow consumer"))
                    );
                }
                _ => assert!(fourth, "dropping messages, the connection goes on"),
            }
        }
    }

    #[test]
    fn state_costs_a_connection_that_stores_nothing_one_word_and_a_lock() {
        assert_eq!(std::mem::size_of::<Mutex<Option<Box<ConnState>>>>(), 16);
    }
}
