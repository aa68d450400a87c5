//! Emit operators: choose the recipients (everyone, rooms, users, connections), remove
//! some (`except`, `except_room`, `except_user`), say how a busy recipient gets it
//! (`volatile`, `coalesce`), then `emit` — the payload is encoded once, whatever the number of
//! recipients, and each recipient gets it once.

use std::{
    collections::HashSet,
    hash::{BuildHasherDefault, Hash, Hasher},
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
    outbox::{Frame, Mode},
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

/// An emit being built: targets, exceptions and how it is queued. Finish it with
/// [`emit`](Emit::emit).
///
/// - Targets add up: [`to_room`](Emit::to_room), [`to_user`](Emit::to_user),
///   [`to_connection`](Emit::to_connection) (or everyone), and each connection gets the event
///   once, whatever the number of targets it is in.
/// - Exceptions take away, whatever the targets: one connection ([`except`](Emit::except)),
///   the members of a room ([`except_room`](Emit::except_room)), the connections of a user
///   ([`except_user`](Emit::except_user)), as they are when the emit is made.
/// - [`volatile`](Emit::volatile): not queued for a connection that is busy (it would only
///   arrive late). [`coalesce`](Emit::coalesce): replaces the queued message with the same key
///   (only the latest value matters). Neither is kept in a [`History`](crate::History).
///
/// ```
/// # use tower_realtime::{Emitter, Hub};
/// # use serde_json::json;
/// # let hub = Hub::builder().build();
/// # let sender = None;
/// // Everyone in `general` or `random` once, but the sender (if any), the muted and user 42.
/// let reached = hub
///     .to_room("general")
///     .to_room("random")
///     .except_opt(sender)
///     .except_room("muted")
///     .except_user("42")
///     .emit("message", &json!({"text": "hi"}));
/// assert_eq!(reached, 0); // nobody is connected in this example
/// // A cursor position: dropped for a busy connection, and only the latest one queued.
/// hub.to_room("doc:1").volatile().coalesce("cursor:42").emit("cursor", &json!([3, 14]));
/// ```
#[must_use = "an emit does nothing until `.emit(event, data)` is called"]
#[derive(Clone)]
pub struct Emit<'a> {
    pub(super) hub: &'a Hub,
    pub(super) ns: &'a NsInner,
    pub(super) targets: SmallVec<[Target<'a>; 2]>,
    pub(super) except: SmallVec<[ConnectionId; 2]>,
    /// Rooms whose members are left out.
    pub(super) except_rooms: SmallVec<[&'a str; 1]>,
    /// Users whose connections are left out.
    pub(super) except_users: SmallVec<[&'a str; 1]>,
    pub(super) volatile: bool,
    /// The key of a coalesced emit.
    pub(super) coalesce: Option<&'a str>,
}

impl std::fmt::Debug for Emit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emit")
            .field("namespace", &self.ns.name)
            .field("targets", &self.targets)
            .field("except", &self.except)
            .field("except_rooms", &self.except_rooms)
            .field("except_users", &self.except_users)
            .field("volatile", &self.volatile)
            .field("coalesce", &self.coalesce)
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
            except_rooms: SmallVec::new(),
            except_users: SmallVec::new(),
            volatile: false,
            coalesce: None,
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

    /// Leaves out the members of a room (as it is when the emit is made), whatever the
    /// targets.
    pub fn except_room(mut self, room: &'a str) -> Self {
        self.except_rooms.push(room);
        self
    }

    /// Leaves out every connection of a user, whatever the targets.
    pub fn except_user(mut self, user: &'a str) -> Self {
        self.except_users.push(user);
        self
    }

    /// Makes the emit volatile: a recipient that is busy does not get it at all. Busy means
    /// something is queued for it already, a write to it has not completed, or (a Socket.IO
    /// client on long-polling) it has no request waiting for data. Nothing tells the client;
    /// each one dropped is counted in
    /// [`CounterSnapshot::volatile_dropped`](crate::CounterSnapshot::volatile_dropped).
    ///
    /// For what is only worth having now: positions, typing indicators, live figures. A
    /// volatile emit is not kept in a [`History`](crate::History).
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// Makes the emit coalesced under `key`: for each recipient that still has a message with
    /// the same key queued, the new one takes its place in the queue (the old one is never
    /// sent; counted in
    /// [`CounterSnapshot::coalesced_replaced`](crate::CounterSnapshot::coalesced_replaced));
    /// otherwise it is queued as usual. So a client that falls behind gets the latest value of
    /// each key, where the first of the values it missed would have been.
    ///
    /// Keys are the app's, per recipient: `"typing:<room>:<user>"`, `"cursor:<user>"`. A
    /// message already being written is not replaced. With [`volatile`](Self::volatile), a
    /// busy recipient that has the key queued gets its message replaced, and one that does
    /// not gets nothing. A coalesced emit is not kept in a [`History`](crate::History).
    pub fn coalesce(mut self, key: &'a str) -> Self {
        self.coalesce = Some(key);
        self
    }

    /// Sends a declared event ([`ServerEvent`](crate::ServerEvent), feature `typed`): its
    /// name and payload come from its type, so a payload of the wrong type does not compile.
    /// The same as [`emit`](Self::emit) with the event's name.
    ///
    /// ```
    /// # use tower_realtime::{Emitter, Event, Hub};
    /// #[derive(serde::Serialize, Event, ts_rs::TS)]
    /// #[event(name = "userJoined")]
    /// struct UserJoined { room: String }
    ///
    /// # let hub = Hub::builder().build();
    /// let reached = hub.to_room("general").send(UserJoined { room: "general".into() });
    /// # assert_eq!(reached, 0);
    /// ```
    ///
    /// An event a client sends is not one the server sends:
    ///
    /// ```compile_fail
    /// # use tower_realtime::{Emitter, Event, Hub};
    /// #[derive(serde::Deserialize, serde::Serialize, Event, ts_rs::TS)]
    /// #[event(name = "joinRoom", ack = ())]
    /// struct JoinRoom(String);
    ///
    /// # let hub = Hub::builder().build();
    /// hub.to_room("general").send(JoinRoom("general".into()));
    /// ```
    #[cfg(feature = "typed")]
    pub fn send<E: crate::event::ServerEvent>(self, event: E) -> usize {
        self.emit(E::NAME, &event)
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
                #[cfg(feature = "cluster")]
                if let Some((history, keys)) = kept.as_ref().filter(|(h, _)| h.shared) {
                    if self.publish_kept(history, keys, event, json) {
                        return 0;
                    }
                    // Not handed to Redis (unreachable, or the queue is full; counted as lost
                    // by the adapter): this node's recipients get it as an event not kept.
                    return self.send_packet(&Packet::new(&self.ns.name, event, json));
                }
                let reached = match kept {
                    Some((history, keys)) => {
                        let evictions = &self.hub.inner.counters.history_evicted;
                        let new = NewEvent {
                            event,
                            data: json,
                            except: &self.except,
                            except_rooms: &self.except_rooms,
                            except_users: &self.except_users,
                        };
                        history.append(&keys, &new, evictions, |entry, epoch| {
                            let frames = entry.frames(&self.ns.name, epoch);
                            self.deliver(|proto| Frames::One(frames(proto)), Some(entry.seq))
                        })
                    }
                    None => self.send_packet(&Packet::new(&self.ns.name, event, json).with(&encoded.attachments)),
                };
                #[cfg(feature = "cluster")]
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
        if self.mode().is_some() {
            return None;
        }
        let history = self.hub.inner.history.as_ref()?;
        let keys = history.streams(&self.ns.name, &self.targets);
        (!keys.is_empty()).then_some((history, keys))
    }

    /// Queues a packet for every recipient, encoded once per protocol.
    pub(crate) fn send_packet(&self, packet: &Packet<'_>) -> usize {
        self.deliver(|proto| packet.frame(proto), None)
    }

    /// Queues `frame(proto)` for every recipient; `seq` is the event's offset when it is kept
    /// in a history.
    pub(super) fn deliver(&self, frame: impl Fn(Proto) -> Frames, seq: Option<u64>) -> usize {
        let mode = self.mode();
        let mut reached = 0usize;
        self.each_recipient(|conn| {
            let queued = match (frame(conn.proto), seq, mode) {
                (Frames::One(frame), Some(seq), _) => conn.send_at(self.hub, frame, seq),
                (Frames::One(frame), None, Some(mode)) => conn.send_with(self.hub, frame, mode),
                // An event with binary values is queued whole, as a plain one.
                (frames, _, _) => conn.send_frames(self.hub, frames),
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
        let left_out = self.left_out(registry);
        let mut deliver = |conn: &Arc<Conn>| {
            if !except.contains(&conn.id) && !left_out.as_ref().is_some_and(|ids| ids.contains(&conn.id)) {
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

impl Emit<'_> {
    /// The connections in the rooms and of the users left out, when there are any: looked up
    /// once, before delivering, so that each recipient costs one lookup.
    fn left_out(&self, registry: &Registry) -> Option<IdSet> {
        if self.except_rooms.is_empty() && self.except_users.is_empty() {
            return None;
        }
        let rooms = self.except_rooms.iter().map(|r| Target::Room(r));
        let targets: SmallVec<[Target<'_>; 2]> =
            rooms.chain(self.except_users.iter().map(|u| Target::User(u))).collect();
        let expected = targets.iter().map(|t| target_len(registry, *t)).sum();
        let mut ids: IdSet = HashSet::with_capacity_and_hasher(expected, Default::default());
        for target in targets {
            visit(registry, target, &mut |conn: &Arc<Conn>| {
                ids.insert(conn.id);
            });
        }
        Some(ids)
    }

    /// How each recipient's queue takes the frame, for a volatile or coalesced emit (`None`
    /// for a plain one).
    fn mode(&self) -> Option<Mode> {
        if !self.volatile && self.coalesce.is_none() {
            return None;
        }
        let key = self.coalesce.map(|key| {
            // Fixed keys: the same app key hashes alike for every emit. With the namespace:
            // the sockets of one Socket.IO session share its queue, each with keys of its own.
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (&*self.ns.name, key).hash(&mut hasher);
            hasher.finish()
        });
        Some(Mode {
            volatile: self.volatile,
            key,
        })
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
