//! The cluster layer (feature `cluster`, turned on by `redis` and `nats`): several app
//! instances, each with its own [`Hub`](crate::Hub), act as one through a bus, Redis or NATS.
//!
//! [`Adapter`] is what every engine offers; what follows is Redis's ([`RedisAdapter`], feature
//! `redis`); NATS's (`NatsAdapter`, feature `nats`) keeps the same contract.
//! [`RedisAdapter`] carries [`Op`]s between nodes (emits, remote disconnects and room
//! changes, queries and their replies) over Redis pub/sub, keeps the set of live nodes by
//! heartbeat, and keeps presence (who is online anywhere) atomic with Lua scripts. It knows
//! nothing of connections: the hub publishes what it does, acts on the [`Inbound`] messages of
//! other nodes, answers their queries, and tells the adapter about each user's connections.
//!
//! - **Wire format**: `{"v":1,"node":"<origin node id>","op":{...}}`, versioned (see
//!   [`WIRE_VERSION`], [`Op`]). A node never receives its own ops, except
//!   [`Op::HistoryEmit`], which every node delivers from what Redis publishes.
//! - **Signing**: with a [`signing_key`](RedisOptions::signing_key), every message is signed
//!   (HMAC-SHA256) and unsigned or badly signed ones are dropped and counted
//!   ([`AdapterStats::unauthenticated`]): anyone who can publish on Redis without the key
//!   cannot forge ops. Not encrypted, and replays are not stopped (see `docs/cluster.md`).
//! - **Delivery**: at most once. [`RedisAdapter::publish`] never waits; an op is lost (and
//!   counted) when Redis is unreachable or the queue is full.
//! - **Liveness**: a node whose last heartbeat is older than
//!   [`node_timeout`](RedisOptions::node_timeout) is dead: it leaves
//!   [`live_nodes`](RedisAdapter::live_nodes) at once, and its users are reported offline
//!   ([`Inbound::PresenceChanged`]) within one more heartbeat.
//! - **History**: for a hub with a [`History`](crate::History), the adapter keeps the
//!   history in Redis (streams, offsets, epoch, sessions), so a client recovers on any node.
//! - **Redis Cluster**: [`RedisAdapter::connect_cluster`] uses sharded pub/sub, its channels
//!   spread over the shards; each script's keys share a slot.
//! - **Faults**: nothing panics; once connected, the adapter reconnects and subscribes again by
//!   itself, and logs outages at most once per 10 s.
//!
//! `docs/cluster.md` describes the channels, keys, scripts and bounds in full.

// `cluster` alone (no engine) builds what the engines share with nothing to use it.
#![cfg_attr(not(any(feature = "redis", feature = "nats")), allow(dead_code))]

/// What the engines share.
#[cfg(any(feature = "redis", feature = "nats"))]
mod common;
#[cfg(test)]
pub(crate) mod conformance;
mod engine;
pub(crate) mod history;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "redis")]
mod redis;
mod wire;

#[cfg(feature = "nats")]
pub use self::nats::{NatsAdapter, NatsAdapterError, NatsOptions};
#[cfg(feature = "redis")]
pub use self::redis::{RedisAdapter, RedisAdapterError, RedisOptions};
pub(crate) use engine::Engine;
pub use engine::{Inbound, QueryReply};

use std::{any::Any, fmt, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use serde_json::Value;

/// Why an adapter could not do what was asked; the engine's own error inside
/// ([`RedisAdapterError`] for Redis).
pub type AdapterError = Box<dyn std::error::Error + Send + Sync>;

/// A cluster bus a hub can join with [`HubBuilder::cluster`](crate::HubBuilder::cluster):
/// [`RedisAdapter`] (one Redis or a Redis Cluster). What every engine offers the app through
/// [`Hub::adapter`](crate::Hub::adapter); the engine's own handle has the rest (its options,
/// for one). Implemented by the crate's engines only.
pub trait Adapter: sealed::Sealed + fmt::Debug + Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;

    /// Sends an op to every other node; never waits, `false` when it is lost at once (counted
    /// in [`AdapterStats::lost`]). Delivery is at most once.
    fn publish(&self, op: &Op) -> bool;

    /// Sends an op to one node (as [`publish`](Self::publish)).
    fn publish_to(&self, node: &str, op: &Op) -> bool;

    /// Asks every other live node `query` and gathers their answers until all answered or
    /// `timeout` (the engine's query timeout when `None`); partial, naming the nodes that did
    /// not answer, otherwise. This node's own answer is not included.
    fn request(&self, query: Query, timeout: Option<Duration>) -> BoxFuture<'_, ClusterAnswer<Vec<Value>>>;

    /// The live nodes, this one included while registered, sorted.
    fn live_nodes(&self) -> BoxFuture<'_, Result<Vec<String>, AdapterError>>;

    /// Counters, and whether the bus is reachable now.
    fn stats(&self) -> AdapterStats;

    /// Leaves the cluster now: the other nodes see this node gone and report its users
    /// offline; ops published afterwards are lost.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), AdapterError>>;

    /// The engine's own handle, to downcast: `adapter.as_any().downcast_ref::<RedisAdapter>()`.
    fn as_any(&self) -> &dyn Any;
}

mod sealed {
    use super::*;

    /// Only the crate's engines are adapters; this gives the hub the engine behind one.
    pub trait Sealed {
        /// The engine, for the hub.
        fn engine(&self) -> EngineHandle;
    }

    /// An engine, opaque outside the crate.
    pub struct EngineHandle(pub(crate) Arc<dyn Engine>);

    impl<T: Engine + Clone> Sealed for T {
        fn engine(&self) -> EngineHandle {
            EngineHandle(Arc::new(self.clone()))
        }
    }
}

impl<T: Engine + Clone + fmt::Debug> Adapter for T {
    fn node_id(&self) -> &str {
        Engine::node_id(self)
    }

    fn publish(&self, op: &Op) -> bool {
        Engine::publish(self, op)
    }

    fn publish_to(&self, node: &str, op: &Op) -> bool {
        Engine::publish_to(self, node, op)
    }

    fn request(&self, query: Query, timeout: Option<Duration>) -> BoxFuture<'_, ClusterAnswer<Vec<Value>>> {
        Engine::request(self, query, timeout)
    }

    fn live_nodes(&self) -> BoxFuture<'_, Result<Vec<String>, AdapterError>> {
        Engine::live_nodes(self)
    }

    fn stats(&self) -> AdapterStats {
        Engine::stats(self)
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), AdapterError>> {
        Engine::shutdown(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
pub(crate) use wire::base64_list;
pub use wire::{Op, Query, SigningKey, Target, WIRE_VERSION};

/// An answer gathered from the nodes of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterAnswer<T> {
    /// What the nodes that answered said.
    pub value: T,
    /// Some node did not answer (in time, or at all): `value` is missing its part.
    pub partial: bool,
    /// The nodes whose part is missing, sorted.
    pub missing_nodes: Vec<String>,
}

impl<T> ClusterAnswer<T> {
    /// An answer every node took part in.
    pub fn complete(value: T) -> Self {
        Self {
            value,
            partial: false,
            missing_nodes: Vec::new(),
        }
    }
}

/// Counters of a [`RedisAdapter`], since it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AdapterStats {
    /// Ops written to Redis (queries and replies included).
    pub published: u64,
    /// Ops that did not reach Redis: it was unreachable, the publish queue was full, or the
    /// write failed.
    pub lost: u64,
    /// Ops received from other nodes.
    pub received: u64,
    /// Messages for the hub dropped because the inbound queue was full.
    pub dropped: u64,
    /// Messages from other nodes that could not be read (another wire version, bad JSON,
    /// unknown op).
    pub malformed: u64,
    /// Messages dropped because the node has a
    /// [`signing_key`](RedisOptions::signing_key) and they were unsigned or badly signed
    /// (forged, or from a node with another key or none).
    pub unauthenticated: u64,
    /// Times the subscription was lost and made again.
    pub reconnects: u64,
    /// The last command to Redis succeeded.
    pub link_up: bool,
    /// The subscription is in place.
    pub subscribed: bool,
}
