//! A hub in a cluster (feature `redis`): what it publishes to the other nodes, what it does
//! for them, and the cluster-wide queries.
//!
//! - Emits are delivered to local recipients at once, then published once to the other nodes,
//!   which deliver to theirs: each connection gets an event once, local ones without a round
//!   trip through Redis. An emit to one local connection is not published at all.
//! - Presence is cluster-wide: the presence hook fires for a user's first connection anywhere
//!   and their last one anywhere, on one node only.
//! - `disconnect_user`, and `join`/`leave`/`disconnect` of a connection on another node, act
//!   wherever the connections are.

use std::sync::{Arc, Weak};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{ConnectionId, Emit, Hub, HubInner, Target};
use crate::{
    adapter::{self, ClusterAnswer, Inbound, Op, Query, RedisAdapter},
    gateway::Presence,
};

/// The hub's side of the cluster.
pub(crate) struct Cluster {
    pub(crate) adapter: RedisAdapter,
}

impl Cluster {
    /// Starts acting on what other nodes send, for as long as the hub lives.
    pub(crate) fn start(hub: &Hub, mut inbound: mpsc::Receiver<Inbound>) {
        let weak: Weak<HubInner> = Arc::downgrade(&hub.inner);
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
                let Some(ns) = hub.inner.namespaces.get(ns.as_str()) else {
                    return;
                };
                let mut emit = Emit::many(hub, ns, targets.iter().map(borrowed));
                for id in except {
                    emit = emit.except(ConnectionId(id));
                }
                emit.send(&super::emit::Packet::new(&ns.name, &event, data.get()));
            }
            Op::DisconnectUser { user } => {
                hub.disconnect_user_locally(&user);
            }
            Op::Disconnect { conn } => {
                if let Some(socket) = hub.socket(ConnectionId(conn)) {
                    socket.disconnect();
                }
            }
            Op::Join { conn, room } => {
                if let Some(socket) = hub.socket(ConnectionId(conn)) {
                    let _ = socket.join(&room);
                }
            }
            Op::Leave { conn, room } => {
                if let Some(socket) = hub.socket(ConnectionId(conn)) {
                    socket.leave(&room);
                }
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

    /// The number of connections on every node.
    pub async fn cluster_connection_count(&self) -> ClusterAnswer<usize> {
        let answer = self
            .gather(Query::ConnectionCount { ns: None }, vec![self.connection_count()])
            .await;
        ClusterAnswer {
            value: answer.value.iter().sum(),
            partial: answer.partial,
            missing_nodes: answer.missing_nodes,
        }
    }
}
