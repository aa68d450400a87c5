//! One event kept in a history, and its frames, encoded once per protocol.

use std::{
    fmt,
    sync::{Arc, OnceLock},
    time::Instant,
};

use smallvec::SmallVec;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    hub::{ConnectionId, Proto},
    outbox::Frame,
    protocol::offset,
};

/// Bookkeeping counted for each event kept, besides its strings.
pub(super) const ENTRY_OVERHEAD: usize = 160;

/// One event in a history, with its position. Its frames are encoded once, on first use, and
/// shared by every live recipient and every replay.
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(super) at: Instant,
    /// The namespace and epoch, for the Socket.IO frame.
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    ns: Arc<str>,
    event: Box<str>,
    data: Box<str>,
    /// Connections the emit left out: a replay leaves them out too.
    except: SmallVec<[u64; 2]>,
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    epoch: Arc<str>,
    native: OnceLock<Frame>,
    #[cfg(feature = "socketio")]
    socketio: OnceLock<Frame>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("seq", &self.seq)
            .field("event", &self.event)
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
        Self {
            seq,
            at: Instant::now(),
            ns: ns.clone(),
            event: event.into(),
            data: data.into(),
            except: except.into_iter().collect(),
            epoch: epoch.clone(),
            native: OnceLock::new(),
            #[cfg(feature = "socketio")]
            socketio: OnceLock::new(),
        }
    }

    /// Bytes counted against [`History::max_bytes`]: the strings, once more for the frames
    /// encoded from them, and the bookkeeping.
    pub(super) fn size(&self) -> usize {
        ENTRY_OVERHEAD + 2 * (self.event.len() + self.data.len())
    }

    /// The frame for a connection speaking `proto`, carrying the event's position.
    pub(crate) fn frame(&self, proto: Proto) -> Frame {
        match proto {
            Proto::Native => (self.native)
                .get_or_init(|| {
                    Frame::new(Message::Text(offset::native_event_at(
                        &self.event,
                        &self.data,
                        self.seq,
                    )))
                })
                .clone(),
            #[cfg(feature = "socketio")]
            Proto::SocketIo => (self.socketio)
                .get_or_init(|| {
                    Frame::new(Message::text(offset::socketio_event_at(
                        &self.ns,
                        &self.event,
                        &self.data,
                        &self.epoch,
                        self.seq,
                    )))
                })
                .clone(),
        }
    }

    pub(super) fn excludes(&self, conns: &[u64]) -> bool {
        self.except.iter().any(|id| conns.contains(id))
    }
}

/// An event being emitted, before it has a position.
pub(crate) struct NewEvent<'a> {
    pub(crate) ns: &'a Arc<str>,
    pub(crate) event: &'a str,
    /// The payload, serialized.
    pub(crate) data: &'a str,
    pub(crate) except: &'a [ConnectionId],
}
