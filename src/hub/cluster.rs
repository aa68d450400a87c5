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

use std::sync::{atomic::Ordering, Arc, Weak};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use smallvec::SmallVec;
use tokio::sync::mpsc;

use super::{
    history::{
        entry::Entry,
        sessions::Resume,
        store::{HistoryState, NotRecovered, Saved, StreamKey},
    },
    ConnectionId, Emit, Emitter, Hub, HubInner, Presence, Target,
};
use crate::adapter::{
    self,
    history::{HistoryParams, Missed},
    ClusterAnswer, Inbound, Op, Query, RedisAdapter,
};

/// The hub's side of the cluster.
pub(crate) struct Cluster {
    pub(crate) adapter: RedisAdapter,
}

impl Cluster {
    /// Starts acting on what other nodes send, for as long as the hub lives.
    pub(crate) fn start(hub: &Hub, mut inbound: mpsc::Receiver<Inbound>) {
        let weak: Weak<HubInner> = Arc::downgrade(&hub.inner);
        if let (Some(cluster), Some(_)) = (&hub.inner.cluster, &hub.inner.history) {
            let weak = weak.clone();
            cluster.adapter.on_history_evicted(move |n| {
                if let Some(inner) = weak.upgrade() {
                    inner.counters.history_evicted.fetch_add(n, Ordering::Relaxed);
                }
            });
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

impl Emit<'_> {
    /// Sends this emit to the other nodes, unless every target is a local connection.
    pub(crate) fn publish(&self, event: &str, data_json: &str) {
        let Some(cluster) = &self.hub.inner.cluster else { return };
        let all_local = self.targets.iter().all(|t| match t {
            Target::Connection(id) => self.ns.registry.conns.contains_key(id),
            _ => false,
        });
        if all_local {
            return;
        }
        let Ok(data) = serde_json::value::RawValue::from_string(data_json.to_owned()) else {
            return;
        };
        let op = Op::Emit {
            ns: self.ns.name.to_string(),
            targets: self.targets.iter().map(owned).collect(),
            except: self.except.iter().map(|id| id.0).collect(),
            event: event.to_owned(),
            data,
        };
        cluster.adapter.publish(&op);
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
        let op = Op::HistoryEmit {
            epoch: String::new(),
            offset: 0,
            ns: self.ns.name.to_string(),
            targets: self.targets.iter().map(owned).collect(),
            except: self.except.iter().map(|id| id.0).collect(),
            event: event.to_owned(),
            data,
        };
        let streams: Vec<String> = keys.iter().map(StreamKey::redis_name).collect();
        cluster.adapter.append_history(&op, &streams, &history.params())
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
            for ns in hub.inner.namespaces.values() {
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
    /// returns its epoch.
    fn arrived(&self, hub: &Hub, epoch: &str, offset: u64) -> Arc<str> {
        let epoch = self.observe_epoch(hub, epoch);
        let before = self.delivered.swap(offset, Ordering::Relaxed);
        // The offset is Redis's, as published: an extreme one (replayed or written by anyone
        // with access to Redis) is a hole like any other, never an overflow.
        if before != 0 && before.checked_add(1) != Some(offset) {
            // Every history event is published on the channel every node reads: a hole means
            // some never reached this node (its inbound queue was full, or it was subscribing
            // again). Its live connections miss them; they get them back by reconnecting.
            tracing::warn!(before, offset, "history: events did not reach this node");
        }
        epoch
    }

    /// Delivers a history event from Redis to this node's recipients.
    fn deliver_kept(&self, emit: &Emit<'_>, epoch: &Arc<str>, offset: u64, event: &str, data: &str) {
        let except = emit.except.iter().map(|id| id.0);
        let entry = Entry::new(offset, epoch, &emit.ns.name, event, data, except);
        emit.deliver(|proto| entry.frame(proto), Some(offset));
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
    match cluster.adapter.history_epoch(&history.params()).await {
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
    if !cluster.adapter.keep_session(id, &json, history.cfg.session_ttl) {
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
    let (json, revoked) = match (cluster.adapter)
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
    if !(cluster.adapter).revoke(user, room.unwrap_or(""), history.cfg.session_ttl) {
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
        .adapter
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
                .filter(|e| !e.except.iter().any(|id| saved.conns.contains(id)))
                .map(|e| {
                    Arc::new(Entry::new(
                        e.offset,
                        &saved.epoch,
                        &saved.ns,
                        &e.event,
                        &e.data,
                        e.except,
                    ))
                })
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

/// The emit another node asked for, to this node's connections (`None` for a namespace this
/// node does not have).
fn remote_emit<'a>(hub: &'a Hub, ns: &str, targets: &'a [adapter::Target], except: Vec<u64>) -> Option<Emit<'a>> {
    let ns = hub.inner.namespaces.get(ns)?;
    let mut emit = Emit::many(hub, ns, targets.iter().map(borrowed));
    for id in except {
        emit = emit.except(ConnectionId(id));
    }
    Some(emit)
}

/// Acts on one message from another node.
async fn apply(hub: &Hub, message: Inbound) {
    match message {
        Inbound::Op { op, .. } => match op {
            Op::Emit {
                ns,
                targets,
                except,
                event,
                data,
            } => {
                let Some(emit) = remote_emit(hub, &ns, &targets, except) else {
                    return;
                };
                emit.send(&super::emit::Packet::new(&emit.ns.name, &event, data.get()));
            }
            Op::HistoryEmit {
                epoch,
                offset,
                ns,
                targets,
                except,
                event,
                data,
            } => {
                let history = hub.inner.history.as_ref().filter(|h| h.shared);
                let epoch = history.map(|h| h.arrived(hub, &epoch, offset));
                let Some(emit) = remote_emit(hub, &ns, &targets, except) else {
                    return;
                };
                match (history, epoch) {
                    (Some(history), Some(epoch)) => history.deliver_kept(&emit, &epoch, offset, &event, data.get()),
                    // A node that keeps no history delivers it as any emit.
                    _ => {
                        emit.send(&super::emit::Packet::new(&emit.ns.name, &event, data.get()));
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
    let ns = |name: &str| hub.of(name);
    Some(match query {
        Query::RoomMembers { ns: name, room } => json!(ns(name)?.room_members(room)),
        Query::RoomUsers { ns: name, room } => json!(ns(name)?.room_users(room)),
        Query::ConnectionsOf { ns: name, user } => json!(ns(name)?.connections_of(user)),
        Query::RoomsOf { conn } => json!(hub.rooms_of(ConnectionId(*conn))),
        Query::ConnectionData { conn } => {
            json!(hub.connection_data(ConnectionId(*conn)).into_iter().collect::<Vec<_>>())
        }
        Query::ConnectionCount { ns: Some(name) } => json!(ns(name)?.connection_count()),
        Query::ConnectionCount { ns: None } => json!(hub.connection_count()),
        _ => return None,
    })
}

impl Hub {
    /// The cluster adapter, when the hub is in a cluster.
    pub fn adapter(&self) -> Option<&RedisAdapter> {
        self.inner.cluster.as_ref().map(|c| &c.adapter)
    }

    /// Asks the other nodes, and adds their answers (each one a `T`, or a list of them) to
    /// this node's own.
    async fn gather<T: serde::de::DeserializeOwned>(&self, query: Query, local: Vec<T>) -> ClusterAnswer<Vec<T>> {
        let Some(cluster) = &self.inner.cluster else {
            return ClusterAnswer::complete(local);
        };
        let answers = cluster.adapter.request(query, None).await;
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

    /// The users online anywhere in the cluster, sorted (this node's alone without a cluster).
    pub async fn cluster_online_users(&self) -> ClusterAnswer<Vec<String>> {
        match &self.inner.cluster {
            Some(cluster) => cluster.adapter.online_users().await,
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
