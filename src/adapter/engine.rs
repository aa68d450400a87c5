//! The boundary between the cluster layer and its bus: [`Engine`], what the hub asks of any
//! bus (publish to every node or to one, ask every node and gather the answers, node
//! liveness, cluster-wide presence, the shared history and its sessions), and what a bus
//! hands the hub ([`Inbound`], answered through [`QueryReply`]).
//!
//! The hub holds its engine as `Arc<dyn Engine>` and names no bus; an engine knows nothing of
//! connections. Every engine speaks the same wire ([`Op`], `wire.rs`) and passes the same
//! conformance suite (`conformance.rs`, run against each engine the tests can reach).

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::{
    history::{HistoryParams, Missed},
    AdapterStats, ClusterAnswer, Op, Query,
};

/// Why an engine could not do what was asked (its bus unreachable, this node not registered,
/// an answer it could not read). The hub only logs it and falls back.
pub(crate) type EngineError = Box<dyn std::error::Error + Send + Sync>;

/// What the hub needs of a cluster bus. Methods that return `bool` never wait: they queue,
/// and `false` means lost at once (counted in [`AdapterStats::lost`]). Delivery is at most
/// once.
///
/// The hub does not call every method yet (`node_id`, `publish_to`, `live_nodes`, `stats`,
/// `shutdown` are the app's, through the engine's own handle); the conformance suite holds
/// every engine to all of them.
#[allow(dead_code)]
pub(crate) trait Engine: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;

    /// How long [`request`](Self::request) waits by default.
    fn query_timeout(&self) -> Duration;

    /// Sends an op to every other node (and, for [`Op::HistoryEmit`], to this one).
    fn publish(&self, op: &Op) -> bool;

    /// Sends an op to one node.
    fn publish_to(&self, node: &str, op: &Op) -> bool;

    /// Asks every other live node and gathers the answers until all answered or `timeout`
    /// (default [`query_timeout`](Self::query_timeout)); partial, with the missing nodes,
    /// otherwise. This node's own answer is not included.
    fn request(&self, query: Query, timeout: Option<Duration>) -> BoxFuture<'_, ClusterAnswer<Vec<Value>>>;

    /// The live nodes, this one included while registered, sorted.
    fn live_nodes(&self) -> BoxFuture<'_, Result<Vec<String>, EngineError>>;

    /// Counts a new live connection of `user` here; `true` when the user came online
    /// cluster-wide (of nodes racing on one user, exactly one gets `true`).
    fn user_connected<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<bool, EngineError>>;

    /// Counts the end of a live connection of `user` here; `true` when the user went offline
    /// cluster-wide.
    fn user_disconnected<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<bool, EngineError>>;

    /// The users online on any live node, sorted; this node's own, marked partial, when the
    /// bus cannot be read.
    fn online_users(&self) -> BoxFuture<'_, ClusterAnswer<Vec<String>>>;

    /// Keeps a [`HistoryEmit`](Op::HistoryEmit) in `streams` and publishes it with its epoch
    /// and offset, filled in by the engine, in order with the ops published before it.
    fn append_history(&self, op: &Op, streams: &[String], params: &HistoryParams) -> bool;

    /// The history's epoch and last offset (a new epoch when there is none).
    fn history_epoch<'a>(&'a self, params: &'a HistoryParams) -> BoxFuture<'a, Result<(String, u64), EngineError>>;

    /// The events of `streams` after their offsets for a session of `epoch`, and the last
    /// offset given out, read at one instant.
    fn read_history<'a>(
        &'a self,
        params: &'a HistoryParams,
        epoch: &'a str,
        streams: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<Missed, EngineError>>;

    /// Gives the number of events each append evicted to `hook` (set once).
    fn on_history_evicted(&self, hook: Box<dyn Fn(u64) + Send + Sync>);

    /// Keeps a dropped connection's session (JSON) for `ttl`, for any node.
    fn keep_session(&self, id: &str, session: &str, ttl: Duration) -> bool;

    /// Takes a kept session once, for its owner (`user` in namespace `ns`), with the user's
    /// revocations (room, or empty for all → the offset as of which). `None` when there is
    /// none or it is someone else's (then left in place).
    #[allow(clippy::type_complexity)]
    fn take_session<'a>(
        &'a self,
        id: &'a str,
        user: Option<&'a str>,
        ns: &'a str,
    ) -> BoxFuture<'a, Result<Option<(String, HashMap<String, u64>)>, EngineError>>;

    /// Takes `user` out of `room` (empty: out of everything) in the sessions kept for them,
    /// as of the last offset given out, for `ttl`.
    fn revoke(&self, user: &str, room: &str, ttl: Duration) -> bool;

    /// Counters, and whether the bus is reachable now.
    fn stats(&self) -> AdapterStats;

    /// Leaves the cluster now: the other nodes report this node's users offline.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), EngineError>>;
}

/// How an engine sends a query's answer back to the node that asked ([`QueryReply`]).
pub(crate) trait Replies: Send + Sync {
    /// Sends [`Op::Reply`] to node `to`; whether it was queued.
    fn reply(&self, to: &str, id: u64, answer: Value, error: Option<String>) -> bool;
}

/// A message for the local hub, from the [`Receiver`](tokio::sync::mpsc::Receiver) an engine
/// hands out with its handle ([`RedisAdapter::connect`](super::RedisAdapter::connect)).
#[derive(Debug)]
#[non_exhaustive]
pub enum Inbound {
    /// An op published by another node (never one of this node's own, except a
    /// [`HistoryEmit`](Op::HistoryEmit): those are delivered by every node from what Redis
    /// publishes, the emitting node included).
    Op {
        /// The node that sent it.
        from: String,
        /// What to do.
        op: Op,
    },
    /// Another node asks about this node's connections: answer with
    /// [`QueryReply::send`]. A reply dropped unanswered tells the asker this node could not
    /// answer.
    Query {
        /// The asking node.
        from: String,
        /// The question.
        query: Query,
        /// Where the answer goes.
        reply: QueryReply,
    },
    /// Presence changes the adapter found by itself, not as the answer of
    /// [`user_connected`](super::RedisAdapter::user_connected) /
    /// [`user_disconnected`](super::RedisAdapter::user_disconnected): users of a dead node
    /// left with no connection anywhere (`offline`), and, after this node registered again,
    /// users it brought back online (`online`) or whose last connection ended while Redis was
    /// away (`offline`). Each change is reported by exactly one node of the cluster.
    PresenceChanged {
        /// Users who came online cluster-wide.
        online: Vec<String>,
        /// Users who went offline cluster-wide.
        offline: Vec<String>,
    },
}

/// The way back to a node that asked a [`Query`]: answer it once with [`send`](Self::send).
/// Dropped unanswered, it sends an error reply, so the asker stops waiting for this node.
pub struct QueryReply {
    via: Arc<dyn Replies>,
    id: u64,
    to: String,
    done: bool,
}

impl fmt::Debug for QueryReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryReply")
            .field("id", &self.id)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl QueryReply {
    /// The reply to query `id` of node `to`, sent through `via`.
    pub(crate) fn new(via: Arc<dyn Replies>, id: u64, to: String) -> Self {
        Self {
            via,
            id,
            to,
            done: false,
        }
    }

    /// The id of the query (unique per asking node).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The asking node.
    pub fn to(&self) -> &str {
        &self.to
    }

    /// Sends the answer. Returns whether it was handed to the bus (see
    /// [`RedisAdapter::publish`](super::RedisAdapter::publish)).
    pub fn send(mut self, answer: Value) -> bool {
        self.done = true;
        self.via.reply(&self.to, self.id, answer, None)
    }

    /// Tells the asker this node cannot answer.
    pub fn fail(mut self, reason: &str) -> bool {
        self.done = true;
        self.via.reply(&self.to, self.id, Value::Null, Some(reason.to_owned()))
    }
}

impl Drop for QueryReply {
    fn drop(&mut self) {
        if !self.done {
            self.via
                .reply(&self.to, self.id, Value::Null, Some("not answered".to_owned()));
        }
    }
}

/// `impl Engine` for an engine whose inherent methods have the trait's names (its own error
/// type turned into [`EngineError`]): each engine writes its methods once, for its own users
/// and for the hub.
macro_rules! engine_from_inherent_methods {
    ($engine:ty) => {
        impl $crate::adapter::engine::Engine for $engine {
            fn node_id(&self) -> &str {
                <$engine>::node_id(self)
            }

            fn query_timeout(&self) -> ::std::time::Duration {
                self.options().query_timeout
            }

            fn publish(&self, op: &$crate::adapter::Op) -> bool {
                <$engine>::publish(self, op)
            }

            fn publish_to(&self, node: &str, op: &$crate::adapter::Op) -> bool {
                <$engine>::publish_to(self, node, op)
            }

            fn request(
                &self,
                query: $crate::adapter::Query,
                timeout: Option<::std::time::Duration>,
            ) -> ::futures_util::future::BoxFuture<'_, $crate::adapter::ClusterAnswer<Vec<::serde_json::Value>>> {
                Box::pin(<$engine>::request(self, query, timeout))
            }

            fn live_nodes(
                &self,
            ) -> ::futures_util::future::BoxFuture<'_, Result<Vec<String>, $crate::adapter::engine::EngineError>> {
                Box::pin(async { Ok(<$engine>::live_nodes(self).await?) })
            }

            fn user_connected<'a>(
                &'a self,
                user: &'a str,
            ) -> ::futures_util::future::BoxFuture<'a, Result<bool, $crate::adapter::engine::EngineError>> {
                Box::pin(async { Ok(<$engine>::user_connected(self, user).await?) })
            }

            fn user_disconnected<'a>(
                &'a self,
                user: &'a str,
            ) -> ::futures_util::future::BoxFuture<'a, Result<bool, $crate::adapter::engine::EngineError>> {
                Box::pin(async { Ok(<$engine>::user_disconnected(self, user).await?) })
            }

            fn online_users(
                &self,
            ) -> ::futures_util::future::BoxFuture<'_, $crate::adapter::ClusterAnswer<Vec<String>>> {
                Box::pin(<$engine>::online_users(self))
            }

            fn append_history(
                &self,
                op: &$crate::adapter::Op,
                streams: &[String],
                params: &$crate::adapter::history::HistoryParams,
            ) -> bool {
                <$engine>::append_history(self, op, streams, params)
            }

            fn history_epoch<'a>(
                &'a self,
                params: &'a $crate::adapter::history::HistoryParams,
            ) -> ::futures_util::future::BoxFuture<'a, Result<(String, u64), $crate::adapter::engine::EngineError>>
            {
                Box::pin(async { Ok(<$engine>::history_epoch(self, params).await?) })
            }

            fn read_history<'a>(
                &'a self,
                params: &'a $crate::adapter::history::HistoryParams,
                epoch: &'a str,
                streams: &'a [(String, u64)],
            ) -> ::futures_util::future::BoxFuture<
                'a,
                Result<$crate::adapter::history::Missed, $crate::adapter::engine::EngineError>,
            > {
                Box::pin(async { Ok(<$engine>::read_history(self, params, epoch, streams).await?) })
            }

            fn on_history_evicted(&self, hook: Box<dyn Fn(u64) + Send + Sync>) {
                let _ = self.shared().on_evicted.set(hook);
            }

            fn keep_session(&self, id: &str, session: &str, ttl: ::std::time::Duration) -> bool {
                <$engine>::keep_session(self, id, session, ttl)
            }

            fn take_session<'a>(
                &'a self,
                id: &'a str,
                user: Option<&'a str>,
                ns: &'a str,
            ) -> ::futures_util::future::BoxFuture<
                'a,
                Result<
                    Option<(String, ::std::collections::HashMap<String, u64>)>,
                    $crate::adapter::engine::EngineError,
                >,
            > {
                Box::pin(async move { Ok(<$engine>::take_session(self, id, user, ns).await?) })
            }

            fn revoke(&self, user: &str, room: &str, ttl: ::std::time::Duration) -> bool {
                <$engine>::revoke(self, user, room, ttl)
            }

            fn stats(&self) -> $crate::adapter::AdapterStats {
                <$engine>::stats(self)
            }

            fn shutdown(
                &self,
            ) -> ::futures_util::future::BoxFuture<'_, Result<(), $crate::adapter::engine::EngineError>> {
                Box::pin(async { Ok(<$engine>::shutdown(self).await?) })
            }
        }
    };
}
pub(crate) use engine_from_inherent_methods;
