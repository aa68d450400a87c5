//! A hub in a cluster (feature `redis`): what it publishes to the other nodes, what it does
//! for them, and the cluster-wide queries.
//!
//! - Emits are delivered to local recipients at once, then published once to the other nodes,
//!   which deliver to theirs: each connection gets an event once, local ones without a round
//!   trip through Redis. An emit to one local connection is not published at all.
//! - With a [`History`](crate::History), the history is the cluster's, in Redis: an emit kept
//!   in it gets its offset from a script that keeps it and publishes it in one step, and every
//!   node, this one included, delivers it from what Redis publishes, in offset order. Sessions
//!   of dropped connections are kept in Redis too, so a client recovers on any node.
//! - Presence is cluster-wide: the presence hook fires for a user's first connection anywhere
//!   and their last one anywhere, on one node only.
//! - `disconnect_user`, and `join`/`leave`/`disconnect` of a connection on another node, act
//!   wherever the connections are.

use std::{
    sync::{atomic::Ordering, Arc, Weak},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use smallvec::SmallVec;
use tokio::sync::mpsc;

use super::{
    ack::{Answered, Answers},
    history::{
        entry::Entry,
        sessions::Resume,
        store::{HistoryState, NotRecovered, Saved, StreamKey},
    },
    AckError, ConnectionId, Emit, Emitter, Frames, Hub, HubInner, NsInner, Presence, Target,
};
use crate::adapter::{
    self,
    history::{HistoryParams, Missed},
    Adapter, ClusterAnswer, Engine, Inbound, Op, Query,
};
use crate::protocol::{attach, close_code};

/// What became of one recipient of an emit with ack, as a node replies it: `{"ack": …}`,
/// `"timeout"` or `"disconnected"`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Ack(Value),
    /// An answer with binary values: `{"binary":{"data":…,"attachments":["<base64>",…]}}`.
    Binary {
        data: Value,
        #[serde(with = "crate::adapter::base64_list")]
        attachments: Vec<bytes::Bytes>,
    },
    Timeout,
    Disconnected,
}

impl From<Answered> for Outcome {
    fn from(result: Answered) -> Self {
        match result {
            Ok((value, attachments)) if attachments.is_empty() => Outcome::Ack(value),
            Ok((data, attachments)) => Outcome::Binary { data, attachments },
            Err(AckError::Timeout) => Outcome::Timeout,
            Err(_) => Outcome::Disconnected,
        }
    }
}

impl From<Outcome> for Answered {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Ack(value) => Ok((value, Vec::new())),
            Outcome::Binary { data, attachments } => Ok((data, attachments)),
            Outcome::Timeout => Err(AckError::Timeout),
            Outcome::Disconnected => Err(AckError::Disconnected),
        }
    }
}

/// The hub's side of the cluster.
pub(crate) struct Cluster {
    /// The bus, whichever it is.
    pub(crate) engine: Arc<dyn Engine>,
    /// The app's handle on it, for [`Hub::adapter`].
    adapter: Box<dyn Adapter>,
}

impl Cluster {
    /// A cluster on the bus of `adapter`.
    pub(crate) fn new<A: Adapter>(adapter: A) -> Self {
        Self {
            engine: adapter.engine().0,
            adapter: Box::new(adapter),
        }
    }

    /// Starts acting on what other nodes send, for as long as the hub lives.
    pub(crate) fn start(hub: &Hub, mut inbound: mpsc::Receiver<Inbound>) {
        let weak: Weak<HubInner> = Arc::downgrade(&hub.inner);
        if let (Some(cluster), Some(_)) = (&hub.inner.cluster, &hub.inner.history) {
            let weak = weak.clone();
            cluster.engine.on_history_evicted(Box::new(move |n| {
                if let Some(inner) = weak.upgrade() {
                    inner.counters.history_evicted.fetch_add(n, Ordering::Relaxed);
                }
            }));
        }
        tokio::spawn(async move {
            while let Some(message) = inbound.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                apply(&Hub { inner }, message).await;
            }
        });
    }
}

fn owned(target: &Target<'_>) -> adapter::Target {
    match *target {
        Target::All => adapter::Target::All,
        Target::Room(r) => adapter::Target::Room(r.to_owned()),
        Target::User(u) => adapter::Target::User(u.to_owned()),
        Target::Connection(id) => adapter::Target::Connection(id.0),
    }
}

fn borrowed(target: &adapter::Target) -> Target<'_> {
    match target {
        adapter::Target::All => Target::All,
        adapter::Target::Room(r) => Target::Room(r),
        adapter::Target::User(u) => Target::User(u),
        adapter::Target::Connection(id) => Target::Connection(ConnectionId(*id)),
    }
}

/// Who an emit reaches, as the cluster's messages carry it.
struct Audience {
    targets: Vec<adapter::Target>,
    except: Vec<u64>,
    except_rooms: Vec<String>,
    except_users: Vec<String>,
}

impl Emit<'_> {
    /// Its targets and exceptions, owned, for a message to the other nodes.
    fn audience(&self) -> Audience {
        Audience {
            targets: self.targets.iter().map(owned).collect(),
            except: self.except.iter().map(|id| id.0).collect(),
            except_rooms: self.except_rooms.iter().map(|r| r.to_string()).collect(),
            except_users: self.except_users.iter().map(|u| u.to_string()).collect(),
        }
    }

    /// Whether every target is a connection of this node: the other nodes have nothing to do.
    fn local_only(&self) -> bool {
        self.targets.iter().all(|t| match t {
            Target::Connection(id) => self.ns.registry.conns.contains_key(id),
            _ => false,
        })
    }

    /// Sends this emit to the other nodes, unless every target is a local connection.
    pub(crate) fn publish(&self, event: &str, payload: &attach::Encoded) {
        let Some(cluster) = &self.hub.inner.cluster else { return };
        if self.local_only() {
            return;
        }
        let Ok(data) = serde_json::value::RawValue::from_string(payload.json.clone()) else {
            return;
        };
        let Audience {
            targets,
            except,
            except_rooms,
            except_users,
        } = self.audience();
        let op = Op::Emit {
            ns: self.ns.name.to_string(),
            targets,
            except,
            except_rooms,
            except_users,
            volatile: self.volatile,
            coalesce: self.coalesce.map(str::to_owned),
            event: event.to_owned(),
            data,
            attachments: payload.attachments.clone(),
        };
        cluster.engine.publish(&op);
    }

    /// Asks the other nodes to deliver this emit asking for an answer (one query,
    /// [`Query::EmitWithAck`]), and gathers what their recipients answered within `timeout`,
    /// and the nodes that did not reply. Their replies are waited for at most `timeout` plus
    /// the adapter's query timeout.
    pub(crate) async fn ask_others(
        &self,
        event: &str,
        data_json: &str,
        attachments: &[bytes::Bytes],
        timeout: Duration,
    ) -> (Answers, Vec<String>) {
        let Some(cluster) = (self.hub.inner.cluster.as_ref()).filter(|_| !self.local_only()) else {
            return (Vec::new(), Vec::new());
        };
        let Ok(data) = serde_json::from_str(data_json) else {
            return (Vec::new(), Vec::new());
        };
        let Audience {
            targets,
            except,
            except_rooms,
            except_users,
        } = self.audience();
        let query = Query::EmitWithAck {
            ns: self.ns.name.to_string(),
            targets,
            except,
            except_rooms,
            except_users,
            event: event.to_owned(),
            data,
            attachments: attachments.to_vec(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let margin = cluster.engine.query_timeout();
        let replies = cluster.engine.request(query, Some(timeout + margin)).await;
        let mut answers = Vec::new();
        for reply in replies.value {
            match serde_json::from_value::<Vec<(u64, Outcome)>>(reply) {
                Ok(list) => answers.extend(list.into_iter().map(|(id, outcome)| (ConnectionId(id), outcome.into()))),
                Err(e) => tracing::debug!(error = %e, "a node's answers to an emit with ack could not be read"),
            }
        }
        (answers, replies.missing_nodes)
    }

    /// Keeps this emit in the cluster's history, in `keys`, and publishes it: every node, this
    /// one included, delivers it when Redis hands it back. Returns `false` when it could not
    /// be handed to the adapter (Redis unreachable, or the queue full).
    pub(crate) fn publish_kept(
        &self,
        history: &HistoryState,
        keys: &[StreamKey],
        event: &str,
        data_json: &str,
    ) -> bool {
        let Some(cluster) = &self.hub.inner.cluster else {
            return false;
        };
        let Ok(data) = serde_json::value::RawValue::from_string(data_json.to_owned()) else {
            return false;
        };
        let Audience {
            targets,
            except,
            except_rooms,
            except_users,
        } = self.audience();
        let op = Op::HistoryEmit {
            epoch: String::new(),
            offset: 0,
            ns: self.ns.name.to_string(),
            targets,
            except,
            except_rooms,
            except_users,
            event: event.to_owned(),
            data,
        };
        let streams: Vec<String> = keys.iter().map(StreamKey::redis_name).collect();
        cluster.engine.append_history(&op, &streams, &history.params())
    }
}

impl HistoryState {
    /// What the adapter needs of this history.
    fn params(&self) -> HistoryParams {
        HistoryParams {
            new_epoch: self.epoch.clone(),
            max_events: self.cfg.max_events,
            max_age: self.cfg.max_age,
            session_ttl: self.cfg.session_ttl,
            max_replay: self.cfg.max_replay,
        }
    }

    /// Notes the epoch Redis has, and returns it. When it changed (Redis lost its data), the
    /// offsets started over: what this node knew of the old ones is forgotten.
    fn observe_epoch(&self, hub: &Hub, epoch: &str) -> Arc<str> {
        let mut known = self.shared_epoch.lock();
        if let Some(same) = known.as_ref().filter(|e| ***e == *epoch) {
            return same.clone();
        }
        let changed = known.is_some();
        let epoch: Arc<str> = Arc::from(epoch);
        *known = Some(epoch.clone());
        drop(known);
        if changed {
            tracing::warn!(%epoch, "history: the cluster's history was lost (new epoch); offsets start over");
            self.delivered.store(0, Ordering::Relaxed);
            self.current.store(0, Ordering::Release);
            for ns in hub.each_namespace() {
                for conn in ns.registry.conns.iter() {
                    if let Some(recovery) = &conn.recovery {
                        recovery.forget_replay();
                    }
                }
            }
        }
        epoch
    }

    /// Notes a history event that came from Redis, whether or not it is for anyone here, and
    /// returns its epoch, and the offset after which events never reached this node when
    /// some did not (the offsets between that one and this event's).
    fn arrived(&self, hub: &Hub, epoch: &str, offset: u64) -> (Arc<str>, Option<u64>) {
        let epoch = self.observe_epoch(hub, epoch);
        let before = self.delivered.swap(offset, Ordering::Relaxed);
        // The offset is Redis's, as published: an extreme one (replayed or written by anyone
        // with access to Redis) is a hole like any other, never an overflow.
        if before != 0 && before.checked_add(1) != Some(offset) {
            // Every history event is published on the channel every node reads: a hole means
            // some never reached this node (its inbound queue was full, its link to Redis was
            // down, or it was subscribing again).
            tracing::warn!(before, offset, "history: events did not reach this node");
            if offset > before {
                return (epoch, Some(before));
            }
        }
        (epoch, None)
    }

    /// Delivers a history event from Redis to this node's recipients.
    fn deliver_kept(&self, emit: &Emit<'_>, epoch: &Arc<str>, offset: u64, event: &str, data: &str) {
        let except = emit.except.iter().map(|id| id.0);
        // Only its frames are used here (the history is Redis's): `emit` leaves out whom it
        // does.
        let entry = Entry::new(offset, event, data, except);
        let frames = entry.frames(&emit.ns.name, epoch);
        emit.deliver(|proto| Frames::One(frames(proto)), Some(offset));
        self.current.fetch_max(offset, Ordering::AcqRel);
    }
}

/// The epoch: as known, once this node has delivered history events (each one carries its
/// epoch); before, asked of Redis (made there when it has none), and this node's offsets start
/// at Redis's last one. As known when Redis does not answer.
pub(super) async fn epoch_now(hub: &Hub, history: &HistoryState) -> Option<Arc<str>> {
    let known = history.known_epoch();
    if known.is_some() && history.delivered.load(Ordering::Relaxed) != 0 {
        return known;
    }
    let Some(cluster) = &hub.inner.cluster else {
        return known;
    };
    match cluster.engine.history_epoch(&history.params()).await {
        Ok((epoch, seq)) => {
            let epoch = history.observe_epoch(hub, &epoch);
            if history.delivered.load(Ordering::Relaxed) == 0 {
                history.current.fetch_max(seq, Ordering::AcqRel);
            }
            Some(epoch)
        }
        Err(e) => {
            tracing::debug!(error = %e, "history: the epoch could not be read");
            history.known_epoch()
        }
    }
}

/// How many connections' missed events are read from Redis at once after a hole.
const FILL_READS: usize = 32;

/// Gives this node's connections that take part in recovery the history events in the hole
/// between offsets `after` and `upto` (both excluded), read back from Redis, before anything
/// past it: each connection's as its session would be replayed (its rooms, its user, from
/// when it joined them). A connection whose events cannot be read (Redis away again, too many,
/// evicted) gets nothing past `after` any more and is closed with
/// [`HISTORY_GAP`](crate::protocol::close_code::HISTORY_GAP), its session kept: its client
/// resumes it and gets the hole in the replay. Connections that do not take part in recovery
/// miss the hole.
async fn fill_hole(hub: &Hub, history: &HistoryState, epoch: &Arc<str>, after: u64, upto: u64) {
    use futures_util::StreamExt;

    let conns: Vec<(Arc<NsInner>, Arc<super::Conn>)> = hub
        .each_namespace()
        .flat_map(|ns| {
            let conns: Vec<Arc<super::Conn>> = (ns.registry.conns.iter())
                .filter(|c| c.recovery.as_ref().is_some_and(|r| r.started()))
                .map(|c| c.value().clone())
                .collect();
            conns.into_iter().map(move |c| (ns.clone(), c))
        })
        .collect();
    if conns.is_empty() {
        return;
    }
    // Once Redis does not answer one read, the others are not tried: live delivery waits.
    let away = &std::sync::atomic::AtomicBool::new(false);
    let reads = conns.into_iter().map(|(ns, conn)| async move {
        let Some(recovery) = &conn.recovery else {
            return Ok(());
        };
        if away.load(Ordering::Relaxed) {
            return Err((conn.clone(), NotRecovered::Unavailable));
        }
        let saved = recovery.save(conn.identity.user_key(), &ns.name, epoch, &conn.rooms());
        let read = read_missed(hub, history, &saved, after).await;
        if matches!(read, Err(NotRecovered::Unavailable)) {
            away.store(true, Ordering::Relaxed);
        }
        let (entries, _) = read.map_err(|e| (conn.clone(), e))?;
        let missed = (entries.iter())
            .filter(|e| e.seq < upto)
            .map(|e| (e.seq, e.frame(conn.proto, &saved.ns, &saved.epoch)))
            .collect();
        recovery.fill(&conn, missed);
        Ok(())
    });
    let results: Vec<Result<(), (Arc<super::Conn>, NotRecovered)>> = futures_util::stream::iter(reads)
        .buffer_unordered(FILL_READS)
        .collect()
        .await;
    let (mut filled, mut closed) = (0usize, 0usize);
    for result in results {
        match result {
            Ok(()) => filled += 1,
            Err((conn, reason)) => {
                closed += 1;
                if let Some(recovery) = &conn.recovery {
                    recovery.cut_after(after);
                }
                conn.request_close(close_code::HISTORY_GAP, "missed history events");
                tracing::debug!(conn = %conn.id, reason = reason.as_str(), "history: missed events could not be read back");
            }
        }
    }
    tracing::warn!(
        after,
        upto,
        filled,
        closed,
        "history: missed events read back from Redis for the connections taking part in recovery; those that could not have them are closed to resume"
    );
}

/// A session as kept in Redis (JSON).
#[derive(Serialize, Deserialize)]
struct StoredSession {
    user: Option<String>,
    ns: String,
    epoch: String,
    /// Each room, with the offset at which the session joined it.
    rooms: Vec<(String, u64)>,
    since: u64,
    conns: Vec<u64>,
}

/// Hands a dropped connection's session to the adapter, which writes it to Redis (for
/// `session_ttl`) without making the caller wait.
pub(super) fn keep_session(hub: &Hub, history: &HistoryState, id: &str, saved: &Saved) {
    let Some(cluster) = &hub.inner.cluster else { return };
    let stored = StoredSession {
        user: saved.user.as_deref().map(str::to_owned),
        ns: saved.ns.to_string(),
        epoch: saved.epoch.to_string(),
        rooms: saved.rooms.iter().map(|(r, j)| (r.to_string(), *j)).collect(),
        since: saved.since,
        conns: saved.conns.to_vec(),
    };
    let Ok(json) = serde_json::to_string(&stored) else {
        return;
    };
    if !cluster.engine.keep_session(id, &json, history.cfg.session_ttl) {
        tracing::debug!(
            session = id,
            "history: Redis unreachable or busy, the session is not kept"
        );
    }
}

/// Takes the session `resume` names from Redis (once), when this client's user is its owner.
pub(super) async fn take_session(
    hub: &Hub,
    user: Option<&Arc<str>>,
    ns: &Arc<str>,
    resume: &Resume,
) -> Result<Saved, NotRecovered> {
    let Some(cluster) = &hub.inner.cluster else {
        return Err(NotRecovered::Unavailable);
    };
    // Taken only for its owner (the script compares): anyone else finds nothing.
    let (json, revoked) = match (cluster.engine)
        .take_session(&resume.session, user.map(|u| &**u), ns)
        .await
    {
        Ok(Some(taken)) => taken,
        Ok(None) => return Err(NotRecovered::UnknownSession),
        Err(e) => {
            tracing::debug!(error = %e, "history: the session could not be read");
            return Err(NotRecovered::Unavailable);
        }
    };
    let stored: StoredSession = serde_json::from_str(&json).map_err(|_| NotRecovered::UnknownSession)?;
    if resume.epoch.as_deref().is_some_and(|e| e != stored.epoch) {
        return Err(NotRecovered::EpochChanged);
    }
    if stored.user.as_deref() != user.map(|u| &**u) || *stored.ns != **ns {
        return Err(NotRecovered::UnknownSession);
    }
    // What the app took the user out of meanwhile (`Hub::disconnect_user`, `Hub::leave_user`):
    // a session begun before is not resumed; a room joined before is not restored. At the
    // same offset, the revocation wins.
    if revoked.get("").is_some_and(|at| stored.since <= *at) {
        return Err(NotRecovered::UnknownSession);
    }
    let mut stored = stored;
    stored
        .rooms
        .retain(|(room, joined)| revoked.get(room).is_none_or(|at| joined > at));
    Ok(Saved {
        user: stored.user.map(Arc::from),
        ns: ns.clone(),
        epoch: Arc::from(stored.epoch),
        rooms: stored.rooms.into_iter().map(|(r, j)| (Arc::from(r), j)).collect(),
        since: stored.since,
        conns: SmallVec::from_vec(stored.conns),
        at: std::time::Instant::now(),
    })
}

/// Takes `user` out of `room` (`None`: out of every session) in the sessions kept for them in
/// Redis, and (for a room) makes their connections on the other nodes leave it.
pub(super) fn revoke(hub: &Hub, history: &HistoryState, user: &str, room: Option<&str>) {
    let Some(cluster) = &hub.inner.cluster else { return };
    if !(cluster.engine).revoke(user, room.unwrap_or(""), history.cfg.session_ttl) {
        tracing::warn!(
            user,
            "history: Redis unreachable or busy, kept sessions were not edited"
        );
    }
    let Some(room) = room else { return };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            user,
            room,
            "leave_user outside a tokio runtime: the other nodes are not asked"
        );
        return;
    };
    let (hub, user, room) = (hub.clone(), user.to_owned(), room.to_owned());
    runtime.spawn(async move {
        for ns in hub.namespaces() {
            let query = Query::ConnectionsOf {
                ns: ns.clone(),
                user: user.clone(),
            };
            for id in hub.gather::<u64>(query, Vec::new()).await.value {
                hub.leave(ConnectionId(id), &room);
            }
        }
    });
}

/// Reads from Redis what a session missed after `offset`, in offset order, one each, and the
/// last offset given out at that instant.
pub(super) async fn read_missed(
    hub: &Hub,
    history: &HistoryState,
    saved: &Saved,
    offset: u64,
) -> Result<(Vec<Arc<Entry>>, u64), NotRecovered> {
    let Some(cluster) = &hub.inner.cluster else {
        return Err(NotRecovered::Unavailable);
    };
    let streams: Vec<(String, u64)> = (history.wanted(saved).into_iter())
        .map(|(key, joined)| (key.redis_name(), offset.max(joined)))
        .collect();
    let missed = cluster
        .engine
        .read_history(&history.params(), &saved.epoch, &streams)
        .await;
    match missed {
        Err(e) => {
            tracing::debug!(error = %e, "history: the missed events could not be read");
            Err(NotRecovered::Unavailable)
        }
        Ok(Missed::EpochChanged { epoch }) => {
            if !epoch.is_empty() {
                history.observe_epoch(hub, &epoch);
            }
            Err(NotRecovered::EpochChanged)
        }
        Ok(Missed::UnknownOffset) => Err(NotRecovered::UnknownOffset),
        Ok(Missed::Evicted) => Err(NotRecovered::Evicted),
        Ok(Missed::TooMany) => Err(NotRecovered::TooMany),
        // A position past the last offset given out was never given out.
        Ok(Missed::Events { upto, .. }) if offset > upto => Err(NotRecovered::UnknownOffset),
        Ok(Missed::Events { upto, events, .. }) => {
            let mut out: Vec<Arc<Entry>> = (events.into_iter())
                .map(|e| {
                    let entry = Entry::new(e.offset, &e.event, &e.data, e.except);
                    let (rooms, users) = (e.left_out.rooms.iter(), e.left_out.users.iter());
                    Arc::new(entry.leaving_out(rooms.map(String::as_str), users.map(String::as_str)))
                })
                .filter(|entry| !saved.skips(entry))
                .collect();
            out.sort_unstable_by_key(|e| e.seq);
            out.dedup_by_key(|e| e.seq);
            if out.len() > history.cfg.max_replay {
                return Err(NotRecovered::TooMany);
            }
            Ok((out, upto))
        }
    }
}

/// The emit another node asked for, to this node's connections in `ns`.
fn remote_emit<'a>(hub: &'a Hub, ns: &'a NsInner, targets: &'a [adapter::Target], left_out: LeftOut<'a>) -> Emit<'a> {
    let mut emit = Emit::many(hub, ns, targets.iter().map(borrowed));
    emit.except = left_out.conns.iter().map(|id| ConnectionId(*id)).collect();
    emit.except_rooms = left_out.rooms.iter().map(String::as_str).collect();
    emit.except_users = left_out.users.iter().map(String::as_str).collect();
    emit
}

/// What a remote emit leaves out.
struct LeftOut<'a> {
    conns: &'a [u64],
    rooms: &'a [String],
    users: &'a [String],
}

/// Acts on one message from another node.
async fn apply(hub: &Hub, message: Inbound) {
    match message {
        Inbound::Op { op, .. } => match op {
            Op::Emit {
                ns,
                targets,
                except,
                except_rooms,
                except_users,
                volatile,
                coalesce,
                event,
                data,
                attachments,
            } => {
                // A namespace this node does not have (a dynamic one nobody here is in): nobody.
                let Some(ns) = hub.namespace(&ns) else { return };
                let left_out = LeftOut {
                    conns: &except,
                    rooms: &except_rooms,
                    users: &except_users,
                };
                let mut emit = remote_emit(hub, &ns, &targets, left_out);
                emit.volatile = volatile;
                emit.coalesce = coalesce.as_deref();
                emit.send_packet(&super::emit::Packet::new(&emit.ns.name, &event, data.get()).with(&attachments));
            }
            Op::HistoryEmit {
                epoch,
                offset,
                ns,
                targets,
                except,
                except_rooms,
                except_users,
                event,
                data,
            } => {
                let history = hub.inner.history.as_ref().filter(|h| h.shared);
                let arrival = history.map(|h| h.arrived(hub, &epoch, offset));
                if let (Some(history), Some((epoch, Some(after)))) = (history, &arrival) {
                    fill_hole(hub, history, epoch, *after, offset).await;
                }
                let epoch = arrival.map(|(epoch, _)| epoch);
                let Some(ns) = hub.namespace(&ns) else { return };
                let left_out = LeftOut {
                    conns: &except,
                    rooms: &except_rooms,
                    users: &except_users,
                };
                let emit = remote_emit(hub, &ns, &targets, left_out);
                match (history, epoch) {
                    (Some(history), Some(epoch)) => history.deliver_kept(&emit, &epoch, offset, &event, data.get()),
                    // A node that keeps no history delivers it as any emit.
                    _ => {
                        emit.send_packet(&super::emit::Packet::new(&emit.ns.name, &event, data.get()));
                    }
                }
            }
            Op::DisconnectUser { user } => {
                hub.disconnect_user_locally(&user);
            }
            Op::Disconnect { conn } => {
                hub.disconnect_locally(ConnectionId(conn));
            }
            Op::Join { conn, room } => {
                hub.join_locally(ConnectionId(conn), &room);
            }
            Op::Leave { conn, room } => {
                hub.leave_locally(ConnectionId(conn), &room);
            }
            _ => {}
        },
        Inbound::Query {
            query:
                Query::EmitWithAck {
                    ns,
                    targets,
                    except,
                    except_rooms,
                    except_users,
                    event,
                    data,
                    attachments,
                    timeout_ms,
                },
            reply,
            ..
        } => {
            // A namespace this node does not have (a dynamic one nobody here is in): nobody.
            let ns = hub.namespace(&ns);
            let asked = (ns.as_ref()).map(|ns| {
                remote_emit(
                    hub,
                    ns,
                    &targets,
                    LeftOut {
                        conns: &except,
                        rooms: &except_rooms,
                        users: &except_users,
                    },
                )
                .ask(&event, &data.to_string(), &attachments)
            });
            let Some(asked) = asked.filter(|a| !a.is_empty()) else {
                reply.send(json!([]));
                return;
            };
            // Answered once every recipient has, or at the timeout; meanwhile this node goes
            // on with what the others send.
            tokio::spawn(async move {
                let answers = asked.collect(Duration::from_millis(timeout_ms)).await;
                let list: Vec<(u64, Outcome)> = (answers.into_iter())
                    .map(|(id, result)| (id.0, result.into()))
                    .collect();
                reply.send(json!(list));
            });
        }
        Inbound::Query { query, reply, .. } => {
            let answer = answer(hub, &query);
            match answer {
                Some(value) => reply.send(value),
                None => reply.fail("unknown query"),
            };
        }
        Inbound::PresenceChanged { online, offline } => {
            for user in online {
                hub.fire_presence(Presence {
                    user_id: user,
                    online: true,
                })
                .await;
            }
            for user in offline {
                hub.fire_presence(Presence {
                    user_id: user,
                    online: false,
                })
                .await;
            }
        }
    }
}

/// This node's answer to a query.
fn answer(hub: &Hub, query: &Query) -> Option<Value> {
    // A namespace this node does not have (a dynamic one nobody here is in) has nothing
    // here: an empty list, which the asking node adds as nothing, whatever it asked.
    let of = |name: &str, f: &dyn Fn(&super::Namespace) -> Value| hub.of(name).map_or(json!([]), |ns| f(&ns));
    Some(match query {
        Query::RoomMembers { ns, room } => of(ns, &|ns| json!(ns.room_members(room))),
        Query::RoomUsers { ns, room } => of(ns, &|ns| json!(ns.room_users(room))),
        Query::ConnectionsOf { ns, user } => of(ns, &|ns| json!(ns.connections_of(user))),
        Query::RoomsOf { conn } => json!(hub.rooms_of(ConnectionId(*conn))),
        Query::ConnectionData { conn } => {
            json!(hub.connection_data(ConnectionId(*conn)).into_iter().collect::<Vec<_>>())
        }
        Query::ConnectionCount { ns: Some(ns) } => of(ns, &|ns| json!(ns.connection_count())),
        Query::ConnectionCount { ns: None } => json!(hub.connection_count()),
        _ => return None,
    })
}

impl Hub {
    /// The cluster adapter, when the hub is in a cluster. The engine's own handle through
    /// [`as_any`](Adapter::as_any): `hub.adapter()?.as_any().downcast_ref::<RedisAdapter>()`.
    pub fn adapter(&self) -> Option<&dyn Adapter> {
        self.inner.cluster.as_ref().map(|c| &*c.adapter)
    }

    /// Asks the other nodes, and adds their answers (each one a `T`, or a list of them) to
    /// this node's own.
    async fn gather<T: serde::de::DeserializeOwned>(&self, query: Query, local: Vec<T>) -> ClusterAnswer<Vec<T>> {
        let Some(cluster) = &self.inner.cluster else {
            return ClusterAnswer::complete(local);
        };
        let answers = cluster.engine.request(query, None).await;
        let mut all = local;
        for value in answers.value {
            match value {
                Value::Array(_) => all.extend(serde_json::from_value::<Vec<T>>(value).unwrap_or_default()),
                one => all.extend(serde_json::from_value::<T>(one).ok()),
            }
        }
        ClusterAnswer {
            value: all,
            partial: answers.partial,
            missing_nodes: answers.missing_nodes,
        }
    }

    /// The users online anywhere in the cluster, sorted and unique (this node's alone without
    /// a cluster). This node's own users are always in it, even those whose presence has not
    /// reached Redis yet (a user connecting now, in the connect hook).
    pub async fn cluster_online_users(&self) -> ClusterAnswer<Vec<String>> {
        match &self.inner.cluster {
            Some(cluster) => {
                let mut answer = cluster.engine.online_users().await;
                answer.value.extend(self.online_users());
                answer.value.sort_unstable();
                answer.value.dedup();
                answer
            }
            None => ClusterAnswer::complete(self.online_users()),
        }
    }

    /// The connections in a room of the default namespace, on every node, sorted.
    pub async fn cluster_room_members(&self, room: &str) -> ClusterAnswer<Vec<ConnectionId>> {
        let local: Vec<u64> = self.room_members(room).into_iter().map(|id| id.0).collect();
        let query = Query::RoomMembers {
            ns: "/".to_owned(),
            room: room.to_owned(),
        };
        self.gather_ids(query, local).await
    }

    /// The connections of a user in the default namespace (all their devices and tabs), on
    /// every node, sorted. An empty list: the user is offline (or only on nodes that did not
    /// answer, which `partial` says).
    pub async fn cluster_connections_of(&self, user: &str) -> ClusterAnswer<Vec<ConnectionId>> {
        let local: Vec<u64> = self.connections_of(user).into_iter().map(|id| id.0).collect();
        let query = Query::ConnectionsOf {
            ns: "/".to_owned(),
            user: user.to_owned(),
        };
        self.gather_ids(query, local).await
    }

    /// [`gather`](Self::gather) for a query answered with connection ids: sorted, unique.
    async fn gather_ids(&self, query: Query, local: Vec<u64>) -> ClusterAnswer<Vec<ConnectionId>> {
        let answer = self.gather(query, local).await;
        let mut ids: Vec<ConnectionId> = answer.value.into_iter().map(ConnectionId).collect();
        ids.sort_unstable();
        ids.dedup();
        ClusterAnswer {
            value: ids,
            partial: answer.partial,
            missing_nodes: answer.missing_nodes,
        }
    }

    /// The users with a connection in a room of the default namespace, on every node, sorted
    /// and unique.
    pub async fn cluster_room_users(&self, room: &str) -> ClusterAnswer<Vec<String>> {
        let query = Query::RoomUsers {
            ns: "/".to_owned(),
            room: room.to_owned(),
        };
        let mut answer = self.gather(query, self.room_users(room)).await;
        answer.value.sort_unstable();
        answer.value.dedup();
        answer
    }

    /// The data a connection stored with [`Socket::set_data`](crate::Socket::set_data),
    /// wherever in the cluster it is: this node's answer when the connection is here, else the
    /// other nodes are asked. `None` when no node has the connection or it set no data;
    /// [`partial`](ClusterAnswer::partial) says whether some nodes did not answer.
    ///
    /// ```no_run
    /// # async fn f(hub: tower_realtime::Hub, id: tower_realtime::ConnectionId) {
    /// if let Some(data) = hub.cluster_connection_data(id).await.value {
    ///     println!("{id}: {data}");
    /// }
    /// # }
    /// ```
    pub async fn cluster_connection_data(&self, id: ConnectionId) -> ClusterAnswer<Option<Value>> {
        if let Some(data) = self.connection_data(id) {
            return ClusterAnswer::complete(Some(data));
        }
        let answer = self.gather(Query::ConnectionData { conn: id.0 }, Vec::new()).await;
        ClusterAnswer {
            value: answer.value.into_iter().next(),
            partial: answer.partial,
            missing_nodes: answer.missing_nodes,
        }
    }

    /// The number of connections on every node.
    pub async fn cluster_connection_count(&self) -> ClusterAnswer<usize> {
        let answer = self
            .gather(Query::ConnectionCount { ns: None }, vec![self.connection_count()])
            .await;
        ClusterAnswer {
            // Each node's count is its own word: a huge one saturates, never overflows.
            value: answer.value.iter().fold(0usize, |total, n| total.saturating_add(*n)),
            partial: answer.partial,
            missing_nodes: answer.missing_nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_ack_outcomes_have_flat_shapes_and_bad_ones_are_refused() {
        let answers: Answers = vec![
            (ConnectionId(1), Ok((json!(null), Vec::new()))),
            (ConnectionId(2), Err(AckError::Timeout)),
            (ConnectionId(3), Err(AckError::Disconnected)),
            (
                ConnectionId(4),
                Ok((
                    json!({"_placeholder": true, "num": 0}),
                    vec![bytes::Bytes::from_static(b"\x01\xff")],
                )),
            ),
        ];
        let list: Vec<(u64, Outcome)> = (answers.into_iter()).map(|(id, r)| (id.0, r.into())).collect();
        let wire = json!(list);
        assert_eq!(
            wire,
            json!([
                [1, {"ack": null}],
                [2, "timeout"],
                [3, "disconnected"],
                [4, {"binary": {"data": {"_placeholder": true, "num": 0}, "attachments": ["Af8="]}}]
            ])
        );
        let back: Vec<(u64, Outcome)> = serde_json::from_value(wire).unwrap();
        let back: Vec<Answered> = back.into_iter().map(|(_, o)| o.into()).collect();
        assert!(matches!(
            &back[..],
            [Ok((Value::Null, _)), Err(AckError::Timeout), Err(AckError::Disconnected), Ok((_, bytes))]
                if bytes[..] == [bytes::Bytes::from_static(b"\x01\xff")]
        ));
        for bad in [
            json!([[1, "maybe"]]),
            json!([["x", "timeout"]]),
            json!({"ack": 1}),
            json!([[1]]),
        ] {
            assert!(serde_json::from_value::<Vec<(u64, Outcome)>>(bad).is_err());
        }
    }
}
