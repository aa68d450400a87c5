//! What the adapter hands the local hub ([`Inbound`]), and the way back to a node that asked a
//! query ([`QueryReply`]).

use std::{fmt, sync::Arc};

use serde_json::Value;

use super::shared::Shared;
use crate::adapter::wire::{Op, Query};

/// A message for the local hub, from the [`Receiver`](tokio::sync::mpsc::Receiver) that
/// [`RedisAdapter::connect`](super::RedisAdapter::connect) returns.
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
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
    pub(super) to: String,
    pub(super) done: bool,
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
    /// The id of the query (unique per asking node).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The asking node.
    pub fn to(&self) -> &str {
        &self.to
    }

    /// Sends the answer. Returns whether it was handed to Redis (see
    /// [`RedisAdapter::publish`](super::RedisAdapter::publish)).
    pub fn send(mut self, answer: Value) -> bool {
        self.done = true;
        self.shared.reply(&self.to, self.id, answer, None)
    }

    /// Tells the asker this node cannot answer.
    pub fn fail(mut self, reason: &str) -> bool {
        self.done = true;
        self.shared
            .reply(&self.to, self.id, Value::Null, Some(reason.to_owned()))
    }
}

impl Drop for QueryReply {
    fn drop(&mut self) {
        if !self.done {
            self.shared
                .reply(&self.to, self.id, Value::Null, Some("not answered".to_owned()));
        }
    }
}
