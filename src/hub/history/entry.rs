//! One event kept in a history, and its frames, encoded once per protocol.

use std::{cell::OnceCell, fmt, sync::Arc, time::Instant};

use tokio_tungstenite::tungstenite::Message;

use crate::{
    hub::{ConnectionId, Proto},
    outbox::Frame,
    protocol::offset,
};

/// Bookkeeping counted for each event kept, besides its strings: the entry, its `Arc`'s
/// counts, its slot in a stream, and the allocator's headers of the entry and its text.
pub(super) const ENTRY_OVERHEAD: usize = size_of::<Entry>() + 2 * size_of::<usize>() + size_of::<Arc<Entry>>() + 2 * 16;

/// One event in a history, with its position. It keeps the event as text only: its frames are
/// encoded once per delivery ([`Entry::frames`], shared by that delivery's recipients) and
/// once per replay, not kept beside it for as long as it is kept.
///
/// Every event a history keeps is one of these, for as long as it is kept (a room's events
/// of members joining, say, are kept per member): it holds what differs from one event to
/// the next and nothing its streams know (the namespace, the epoch: given when a frame is
/// encoded).
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(super) at: Instant,
    /// The event's name, then its payload (serialized): one allocation for the two.
    text: Box<str>,
    /// Where the name ends in `text`.
    event_len: usize,
    /// The connection the emit left out, when it left out one (the sender of a message to its
    /// room, most often); the others, when there are more, are in `left_out`. A replay leaves
    /// them out too.
    except: Option<u64>,
    /// Whom else the emit left out (most emits leave out nobody else): a replay leaves out a
    /// session of those users, or in those rooms.
    left_out: Option<Box<LeftOut>>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("seq", &self.seq)
            .field("event", &self.event())
            .finish_non_exhaustive()
    }
}

impl Entry {
    pub(crate) fn new(seq: u64, event: &str, data: &str, except: impl IntoIterator<Item = u64>) -> Self {
        let mut text = String::with_capacity(event.len() + data.len());
        text.push_str(event);
        text.push_str(data);
        let mut except = except.into_iter();
        let first = except.next();
        let others: Vec<u64> = except.collect();
        Self {
            seq,
            at: Instant::now(),
            text: text.into_boxed_str(),
            event_len: event.len(),
            except: first,
            left_out: (!others.is_empty()).then(|| {
                Box::new(LeftOut {
                    conns: others,
                    ..LeftOut::default()
                })
            }),
        }
    }

    /// The event, leaving out the members of `rooms` and the connections of `users`.
    pub(crate) fn leaving_out<'s>(
        mut self,
        rooms: impl IntoIterator<Item = &'s str>,
        users: impl IntoIterator<Item = &'s str>,
    ) -> Self {
        let rooms: Vec<Box<str>> = rooms.into_iter().map(Box::from).collect();
        let users: Vec<Box<str>> = users.into_iter().map(Box::from).collect();
        if !rooms.is_empty() || !users.is_empty() {
            let left_out = self.left_out.get_or_insert_default();
            left_out.rooms = rooms;
            left_out.users = users;
        }
        self
    }

    /// Bytes counted against [`History::max_bytes`]: the strings and the bookkeeping.
    pub(super) fn size(&self) -> usize {
        let left_out = self.left_out.as_ref().map_or(0, |l| {
            let names = l.rooms.iter().chain(&l.users);
            let names = names.map(|n| n.len() + size_of::<Box<str>>()).sum::<usize>();
            names + l.conns.len() * size_of::<u64>() + size_of::<LeftOut>()
        });
        ENTRY_OVERHEAD + self.text.len() + left_out
    }

    /// The event's name.
    fn event(&self) -> &str {
        &self.text[..self.event_len]
    }

    /// The event's payload, serialized.
    fn data(&self) -> &str {
        &self.text[self.event_len..]
    }

    /// The frame for a connection speaking `proto`, carrying the event's position, encoded
    /// now (a replay's). A Socket.IO frame names the namespace `ns` and the history's `epoch`.
    #[cfg_attr(not(feature = "socketio"), allow(unused_variables))]
    pub(crate) fn frame(&self, proto: Proto, ns: &str, epoch: &str) -> Frame {
        match proto {
            Proto::Native => Frame::new(Message::Text(offset::native_event_at(
                self.event(),
                self.data(),
                self.seq,
            ))),
            #[cfg(feature = "socketio")]
            Proto::SocketIo => Frame::new(Message::text(offset::socketio_event_at(
                ns,
                self.event(),
                self.data(),
                epoch,
                self.seq,
            ))),
        }
    }

    /// The frames of one delivery: each protocol's encoded on first use and shared by every
    /// recipient of the delivery.
    pub(crate) fn frames<'e>(&'e self, ns: &'e str, epoch: &'e str) -> impl Fn(Proto) -> Frame + 'e {
        let native = OnceCell::new();
        #[cfg(feature = "socketio")]
        let socketio = OnceCell::new();
        move |proto| {
            let cell = match proto {
                Proto::Native => &native,
                #[cfg(feature = "socketio")]
                Proto::SocketIo => &socketio,
            };
            cell.get_or_init(|| self.frame(proto, ns, epoch)).clone()
        }
    }

    /// Whether a replay to a session leaves this event out: the session's connections
    /// `conns`, its user, its rooms with the offset each was joined at.
    pub(super) fn excludes(&self, conns: &[u64], user: Option<&str>, rooms: &[(Arc<str>, u64)]) -> bool {
        if self.except.is_some_and(|id| conns.contains(&id)) {
            return true;
        }
        let Some(left_out) = &self.left_out else {
            return false;
        };
        if left_out.conns.iter().any(|id| conns.contains(id)) {
            return true;
        }
        user.is_some_and(|user| left_out.users.iter().any(|u| **u == *user))
            || (rooms.iter()).any(|(room, joined)| *joined < self.seq && left_out.rooms.iter().any(|r| **r == **room))
    }
}

/// The connections besides the first, the rooms and the users an event left out.
#[derive(Debug, Default)]
struct LeftOut {
    conns: Vec<u64>,
    rooms: Vec<Box<str>>,
    users: Vec<Box<str>>,
}

/// An event being emitted, before it has a position.
pub(crate) struct NewEvent<'a> {
    pub(crate) event: &'a str,
    /// The payload, serialized.
    pub(crate) data: &'a str,
    pub(crate) except: &'a [ConnectionId],
    pub(crate) except_rooms: &'a [&'a str],
    pub(crate) except_users: &'a [&'a str],
}
