//! Emit operators: choose the recipients (everyone, rooms, users, connections), remove
//! some with `except`, then `emit` — the payload is encoded once, whatever the number of
//! recipients, and each recipient gets it once.

use std::{
    collections::HashSet,
    hash::BuildHasherDefault,
    sync::{atomic::Ordering, Arc, OnceLock},
};

use bytes::Bytes;

use serde::Serialize;
use smallvec::SmallVec;
use tokio_tungstenite::tungstenite::Message;

use super::{
    history::{HistoryState, NewEvent, StreamKey},
    registry::{IdHasher, Registry},
    Conn, ConnectionId, Hub, NsInner, Proto,
};
use crate::{
    outbox::Frame,
    protocol::{attach, native},
};

/// One set of recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    All,
    Room(&'a str),
    User(&'a str),
    Connection(ConnectionId),
}

/// An emit being built: targets and exceptions. Finish it with [`emit`](Emit::emit).
///
/// ```
/// # use tower_realtime::{Emitter, Hub};
/// # use serde_json::json;
/// # let hub = Hub::builder().build();
/// # let sender = None;
/// let reached = hub.to_room("general").to_room("random").except_opt(sender).emit("message", &json!({"text": "hi"}));
/// assert_eq!(reached, 0); // nobody is connected in this example
/// ```
#[must_use = "an emit does nothing until `.emit(event, data)` is called"]
#[derive(Clone)]
pub struct Emit<'a> {
    pub(super) hub: &'a Hub,
    pub(super) ns: &'a NsInner,
    pub(super) targets: SmallVec<[Target<'a>; 2]>,
    pub(super) except: SmallVec<[ConnectionId; 2]>,
}

impl std::fmt::Debug for Emit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emit")
            .field("namespace", &self.ns.name)
            .field("targets", &self.targets)
            .field("except", &self.except)
            .finish()
    }
}

impl<'a> Emit<'a> {
    pub(crate) fn new(hub: &'a Hub, ns: &'a NsInner, target: Target<'a>) -> Self {
        Self::many(hub, ns, [target])
    }

    /// An emit to several targets (none at all reaches nobody).
    pub(crate) fn many(hub: &'a Hub, ns: &'a NsInner, targets: impl IntoIterator<Item = Target<'a>>) -> Self {
        Self {
            hub,
            ns,
            targets: targets.into_iter().collect(),
            except: SmallVec::new(),
        }
    }

    /// Adds the members of a room.
    pub fn to_room(mut self, room: &'a str) -> Self {
        self.targets.push(Target::Room(room));
        self
    }

    /// Adds every connection of a user.
    pub fn to_user(mut self, user: &'a str) -> Self {
        self.targets.push(Target::User(user));
        self
    }

    /// Adds one connection.
    pub fn to_connection(mut self, id: ConnectionId) -> Self {
        self.targets.push(Target::Connection(id));
        self
    }

    /// Leaves out one connection (typically the sender).
    pub fn except(mut self, id: ConnectionId) -> Self {
        self.except.push(id);
        self
    }

    /// Leaves out a connection when there is one.
    pub fn except_opt(self, id: Option<ConnectionId>) -> Self {
        match id {
            Some(id) => self.except(id),
            None => self,
        }
    }

    /// Sends `event` with `data` to the chosen connections, encoding it once. Never waits on a
    /// slow connection. Returns how many connections it was queued for.
    ///
    /// A payload that cannot be serialized (a map with non-string keys, say) reaches nobody
    /// and is logged.
    ///
    /// In a cluster with a [`History`](crate::History) (feature `redis`), an event kept in the
    /// history is queued for its recipients when Redis hands it back with its offset, on every
    /// node alike: `emit` then returns 0. While Redis is unreachable it is delivered at once to
    /// this node's recipients, like an event that is not kept (see `docs/cluster.md`).
    ///
    /// Binary values (a [`Bytes`](bytes::Bytes) field, or one serialized with `serde_bytes`)
    /// go out as binary attachments: a Socket.IO client gets a `Buffer` (an `ArrayBuffer` in
    /// a browser), a native client the binary frames after the event (`docs/protocol.md`). A
    /// plain `Vec<u8>` is a JSON array of numbers. An event with attachments is not kept in a
    /// history.
    pub fn emit<T: Serialize + ?Sized>(self, event: &str, data: &T) -> usize {
        match attach::to_json(data) {
            Ok(encoded) => {
                let json = encoded.json.as_str();
                // An event with binary values is not kept in a history.
                let kept = (encoded.attachments.is_empty())
                    .then(|| self.history_streams())
                    .flatten();
                #[cfg(feature = "redis")]
                if let Some((history, keys)) = kept.as_ref().filter(|(h, _)| h.shared) {
                    if self.publish_kept(history, keys, event, json) {
                        return 0;
                    }
                    // Not handed to Redis (unreachable, or the queue is full; counted as lost
                    // by the adapter): this node's recipients get it as an event not kept.
                    return self.send(&Packet::new(&self.ns.name, event, json));
                }
                let reached = match kept {
                    Some((history, keys)) => {
                        let evictions = &self.hub.inner.counters.history_evicted;
                        let new = NewEvent {
                            ns: &self.ns.name,
                            event,
                            data: json,
                            except: &self.except,
                        };
                        history.append(&keys, &new, evictions, |entry| {
                            self.deliver(|proto| Frames::One(entry.frame(proto)), Some(entry.seq))
                        })
                    }
                    None => self.send(&Packet::new(&self.ns.name, event, json).with(&encoded.attachments)),
                };
                #[cfg(feature = "redis")]
                self.publish(event, &encoded);
                reached
            }
            Err(e) => {
                tracing::warn!(%event, error = %e, "emit payload could not be serialized");
                0
            }
        }
    }

    /// The hub's history and the streams this emit is kept in, when it is kept at all.
    fn history_streams(&self) -> Option<(&'a HistoryState, SmallVec<[StreamKey; 2]>)> {
        let history = self.hub.inner.history.as_ref()?;
        let keys = history.streams(&self.ns.name, &self.targets);
        (!keys.is_empty()).then_some((history, keys))
    }

    /// Queues a packet for every recipient, encoded once per protocol.
    pub(crate) fn send(&self, packet: &Packet<'_>) -> usize {
        self.deliver(|proto| packet.frame(proto), None)
    }

    /// Queues `frame(proto)` for every recipient; `seq` is the event's offset when it is kept
    /// in a history.
    pub(super) fn deliver(&self, frame: impl Fn(Proto) -> Frames, seq: Option<u64>) -> usize {
        let mut reached = 0usize;
        self.each_recipient(|conn| {
            let queued = match (frame(conn.proto), seq) {
                (Frames::One(frame), Some(seq)) => conn.send_at(self.hub, frame, seq),
                (frames, _) => conn.send_frames(self.hub, frames),
            };
            if queued {
                reached += 1;
            }
        });
        self.hub
            .inner
            .counters
            .messages_out
            .fetch_add(reached as u64, Ordering::Relaxed);
        reached
    }

    /// Calls `f` once on each recipient: each connection of the targets, once, unless left out.
    pub(super) fn each_recipient(&self, mut f: impl FnMut(&Arc<Conn>)) {
        let registry = &self.ns.registry;
        let except = &self.except;
        let mut deliver = |conn: &Arc<Conn>| {
            if !except.contains(&conn.id) {
                f(conn);
            }
        };
        if let [target] = self.targets[..] {
            // One target: each connection appears in it at most once, no de-duplication needed.
            visit(registry, target, &mut deliver);
        } else {
            let expected = self.targets.iter().map(|t| target_len(registry, *t)).sum();
            let mut seen: IdSet = HashSet::with_capacity_and_hasher(expected, Default::default());
            for target in &self.targets {
                visit(registry, *target, &mut |conn: &Arc<Conn>| {
                    if seen.insert(conn.id) {
                        deliver(conn);
                    }
                });
            }
        }
    }
}

/// What one recipient is sent for an event: one frame, or (an event with binary
/// attachments) the event's frame and its attachments, queued together.
#[derive(Clone)]
pub(crate) enum Frames {
    One(Frame),
    Group(Arc<[Frame]>),
}

impl Frames {
    /// The frames of an event for a connection speaking `proto`: `data_json` holds a
    /// placeholder for each of `attachments`; `id` asks for the client's answer.
    pub(crate) fn event(
        proto: Proto,
        ns: &str,
        event: &str,
        data_json: &str,
        attachments: &[Bytes],
        id: Option<u64>,
    ) -> Self {
        #[cfg(not(feature = "socketio"))]
        let _ = ns;
        let head = match proto {
            Proto::Native => Message::Text(native::encode_event_with(event, data_json, id, attachments.len())),
            #[cfg(feature = "socketio")]
            Proto::SocketIo => {
                // An Engine.IO message (`4`) carrying a Socket.IO (BINARY_)EVENT.
                let packet =
                    crate::protocol::socketio::packet::encode_binary_event(ns, event, data_json, attachments.len(), id);
                Message::text(format!("4{packet}"))
            }
        };
        Self::with_attachments(head, attachments)
    }

    /// `head`, followed by one binary message per attachment.
    pub(crate) fn with_attachments(head: Message, attachments: &[Bytes]) -> Self {
        if attachments.is_empty() {
            return Frames::One(Frame::new(head));
        }
        let rest = attachments.iter().map(|b| Frame::new(Message::Binary(b.clone())));
        Frames::Group(std::iter::once(Frame::new(head)).chain(rest).collect())
    }
}

/// One emitted event, with its payload serialized once; each protocol's frames are encoded on
/// first use and then shared by every recipient speaking that protocol.
pub(crate) struct Packet<'a> {
    ns: &'a str,
    event: &'a str,
    data_json: &'a str,
    attachments: &'a [Bytes],
    /// The ack id the recipients answer, for an emit that waits for their answers.
    ack: Option<u64>,
    native: OnceLock<Frames>,
    #[cfg(feature = "socketio")]
    socketio: OnceLock<Frames>,
}

impl<'a> Packet<'a> {
    pub(crate) fn new(ns: &'a str, event: &'a str, data_json: &'a str) -> Self {
        Self {
            ns,
            event,
            data_json,
            attachments: &[],
            ack: None,
            native: OnceLock::new(),
            #[cfg(feature = "socketio")]
            socketio: OnceLock::new(),
        }
    }

    /// The event with the attachments its payload's placeholders refer to.
    pub(crate) fn with(mut self, attachments: &'a [Bytes]) -> Self {
        self.attachments = attachments;
        self
    }

    /// The same packet, asking every recipient to answer ack `id`.
    pub(crate) fn with_ack(self, id: u64) -> Self {
        Self { ack: Some(id), ..self }
    }

    /// The frames for a connection speaking `proto` (cheap clones of shared bytes).
    pub(crate) fn frame(&self, proto: Proto) -> Frames {
        let cell = match proto {
            Proto::Native => &self.native,
            #[cfg(feature = "socketio")]
            Proto::SocketIo => &self.socketio,
        };
        cell.get_or_init(|| Frames::event(proto, self.ns, self.event, self.data_json, self.attachments, self.ack))
            .clone()
    }
}

/// Calls `f` on each connection of one target.
/// How many connections a target holds right now (a size hint: they may change meanwhile).
fn target_len(registry: &Registry, target: Target<'_>) -> usize {
    match target {
        Target::All => registry.conns.len(),
        Target::Room(room) => registry.rooms.get(room).map_or(0, |m| m.len()),
        Target::User(user) => registry.users.get(user).map_or(0, |c| c.len()),
        Target::Connection(_) => 1,
    }
}

/// The recipients an emit to several targets has reached.
type IdSet = HashSet<ConnectionId, BuildHasherDefault<IdHasher>>;

fn visit(registry: &Registry, target: Target<'_>, f: &mut impl FnMut(&Arc<Conn>)) {
    match target {
        Target::All => registry.conns.iter().for_each(|e| f(e.value())),
        Target::Room(room) => {
            if let Some(members) = registry.rooms.get(room) {
                members.values().for_each(f);
            }
        }
        Target::User(user) => {
            if let Some(conns) = registry.users.get(user) {
                conns.values().for_each(f);
            }
        }
        Target::Connection(id) => {
            if let Some(conn) = registry.conns.get(&id) {
                f(conn.value());
            }
        }
    }
}
