//! One event kept in a history, and its frames, encoded once per protocol.

use std::{cell::OnceCell, fmt, sync::Arc, time::Instant};

use smallvec::SmallVec;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    hub::{ConnectionId, Proto},
    outbox::Frame,
    protocol::offset,
};

/// Bookkeeping counted for each event kept, besides its strings.
pub(super) const ENTRY_OVERHEAD: usize = 160;

/// One event in a history, with its position. It keeps the event as text only: its frames are
/// encoded once per delivery ([`Entry::frames`], shared by that delivery's recipients) and
/// once per replay, not kept beside it for as long as it is kept.
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(super) at: Instant,
    /// The namespace and epoch, for the Socket.IO frame.
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    ns: Arc<str>,
    /// The event's name, then its payload (serialized): one allocation for the two.
    text: Box<str>,
    /// Where the name ends in `text`.
    event_len: usize,
    /// Connections the emit left out: a replay leaves them out too.
    except: SmallVec<[u64; 2]>,
    /// Rooms and users the emit left out (most emits leave none): a replay leaves out a
    /// session of those users, or in those rooms.
    left_out: Option<Box<LeftOut>>,
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    epoch: Arc<str>,
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
    pub(crate) fn new(
        seq: u64,
        epoch: &Arc<str>,
        ns: &Arc<str>,
        event: &str,
        data: &str,
        except: impl IntoIterator<Item = u64>,
    ) -> Self {
        let mut text = String::with_capacity(event.len() + data.len());
        text.push_str(event);
        text.push_str(data);
        Self {
            seq,
            at: Instant::now(),
            ns: ns.clone(),
            text: text.into_boxed_str(),
            event_len: event.len(),
            except: except.into_iter().collect(),
            left_out: None,
            epoch: epoch.clone(),
        }
    }

    /// The event, leaving out the members of `rooms` and the connections of `users` (kept
    /// only when there are any).
    pub(crate) fn leaving_out<'s>(
        mut self,
        rooms: impl IntoIterator<Item = &'s str>,
        users: impl IntoIterator<Item = &'s str>,
    ) -> Self {
        let left_out = LeftOut {
            rooms: rooms.into_iter().map(Box::from).collect(),
            users: users.into_iter().map(Box::from).collect(),
        };
        if !left_out.rooms.is_empty() || !left_out.users.is_empty() {
            self.left_out = Some(Box::new(left_out));
        }
        self
    }

    /// Bytes counted against [`History::max_bytes`]: the strings and the bookkeeping.
    pub(super) fn size(&self) -> usize {
        let left_out = self.left_out.as_ref().map_or(0, |l| {
            let names = l.rooms.iter().chain(&l.users);
            names.map(|n| n.len() + size_of::<Box<str>>()).sum::<usize>() + size_of::<LeftOut>()
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
    /// now (a replay's).
    pub(crate) fn frame(&self, proto: Proto) -> Frame {
        match proto {
            Proto::Native => Frame::new(Message::Text(offset::native_event_at(
                self.event(),
                self.data(),
                self.seq,
            ))),
            #[cfg(feature = "socketio")]
            Proto::SocketIo => Frame::new(Message::text(offset::socketio_event_at(
                &self.ns,
                self.event(),
                self.data(),
                &self.epoch,
                self.seq,
            ))),
        }
    }

    /// The frames of one delivery: each protocol's encoded on first use and shared by every
    /// recipient of the delivery.
    pub(crate) fn frames(&self) -> impl Fn(Proto) -> Frame + '_ {
        let native = OnceCell::new();
        #[cfg(feature = "socketio")]
        let socketio = OnceCell::new();
        move |proto| {
            let cell = match proto {
                Proto::Native => &native,
                #[cfg(feature = "socketio")]
                Proto::SocketIo => &socketio,
            };
            cell.get_or_init(|| self.frame(proto)).clone()
        }
    }

    /// Whether a replay to a session leaves this event out: the session's connections
    /// `conns`, its user, its rooms with the offset each was joined at.
    pub(super) fn excludes(&self, conns: &[u64], user: Option<&str>, rooms: &[(Arc<str>, u64)]) -> bool {
        if self.except.iter().any(|id| conns.contains(id)) {
            return true;
        }
        let Some(left_out) = &self.left_out else {
            return false;
        };
        user.is_some_and(|user| left_out.users.iter().any(|u| **u == *user))
            || (rooms.iter()).any(|(room, joined)| *joined < self.seq && left_out.rooms.iter().any(|r| **r == **room))
    }
}

/// The rooms and users an event left out.
#[derive(Debug)]
struct LeftOut {
    rooms: Vec<Box<str>>,
    users: Vec<Box<str>>,
}

/// An event being emitted, before it has a position.
pub(crate) struct NewEvent<'a> {
    pub(crate) ns: &'a Arc<str>,
    pub(crate) event: &'a str,
    /// The payload, serialized.
    pub(crate) data: &'a str,
    pub(crate) except: &'a [ConnectionId],
    pub(crate) except_rooms: &'a [&'a str],
    pub(crate) except_users: &'a [&'a str],
}
