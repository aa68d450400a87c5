//! The messages nodes exchange through Redis, and their JSON encoding.
//!
//! Every message is one JSON object, `{"v":1,"node":"<origin node id>","op":{...}}`. The op is
//! externally tagged: `{"emit":{...}}`, `{"disconnect_user":{"user":"42"}}`, and so on (see
//! `docs/cluster.md` for every shape). A node drops messages whose `v` it does not know, and
//! counts them as malformed.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{value::RawValue, Value};

/// The version of the wire format this build speaks (`"v"` in every message).
pub const WIRE_VERSION: u32 = 1;

/// One set of recipients of a cluster-wide emit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Every connection of the namespace: `"all"`.
    All,
    /// The members of a room: `{"room":"general"}`.
    Room(String),
    /// Every connection of a user: `{"user":"42"}`.
    User(String),
    /// One connection: `{"connection":12345}`.
    Connection(u64),
}

/// A question asked to every other live node with
/// [`RedisAdapter::request`](super::RedisAdapter::request). Each node answers with a JSON value
/// about its own connections; the asker merges the answers with its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Query {
    /// The connection ids in a room (answer: an array of numbers).
    RoomMembers {
        /// The namespace (`"/"` for the default one).
        ns: String,
        /// The room.
        room: String,
    },
    /// The users with a connection in a room (answer: an array of strings).
    RoomUsers {
        /// The namespace.
        ns: String,
        /// The room.
        room: String,
    },
    /// The connection ids of a user (answer: an array of numbers).
    ConnectionsOf {
        /// The namespace.
        ns: String,
        /// The user.
        user: String,
    },
    /// The rooms a connection is in (answer: an array of strings; empty when the connection
    /// is not on the answering node).
    RoomsOf {
        /// The connection.
        conn: u64,
    },
    /// How many connections the node has (answer: a number), in one namespace or, with
    /// `None`, in all.
    ConnectionCount {
        /// The namespace, or `None` for every namespace.
        ns: Option<String>,
    },
    /// A question of the app's own: `name` says what, `data` carries the arguments.
    Custom {
        /// What is asked.
        name: String,
        /// Its arguments.
        data: Value,
    },
}

/// One operation sent from a node to the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Op {
    /// Deliver an event to the matching connections of the receiving node.
    Emit {
        /// The namespace (`"/"` for the default one).
        ns: String,
        /// Who gets it (the union of the targets).
        targets: Vec<Target>,
        /// Connections left out, whatever the targets.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except: Vec<u64>,
        /// The event name.
        event: String,
        /// The event's payload, as JSON, serialized once by the emitting node.
        data: Box<RawValue>,
    },
    /// An emit kept in the cluster's history (a hub with both a cluster and a
    /// [`History`](crate::History)). Written by a Lua script that gives it its offset, keeps it
    /// in Redis and publishes it in one step, so every node, the emitting one included,
    /// receives these in offset order, and delivers them to its matching connections.
    HistoryEmit {
        /// The lifetime of the history the offset belongs to.
        epoch: String,
        /// The event's position, one sequence for the whole cluster.
        offset: u64,
        /// The namespace.
        ns: String,
        /// Who gets it (the union of the targets).
        targets: Vec<Target>,
        /// Connections left out, whatever the targets.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except: Vec<u64>,
        /// The event name.
        event: String,
        /// The event's payload, as JSON.
        data: Box<RawValue>,
    },
    /// Close every connection of a user.
    DisconnectUser {
        /// The user.
        user: String,
    },
    /// Close one connection.
    Disconnect {
        /// The connection.
        conn: u64,
    },
    /// Make a connection join a room.
    Join {
        /// The connection.
        conn: u64,
        /// The room.
        room: String,
    },
    /// Make a connection leave a room.
    Leave {
        /// The connection.
        conn: u64,
        /// The room.
        room: String,
    },
    /// A question for every node; answered with a [`Reply`](Op::Reply) on the asker's own
    /// channel. Sent by [`RedisAdapter::request`](super::RedisAdapter::request).
    Query {
        /// Matches the reply to the question (unique per asking node).
        id: u64,
        /// The asking node.
        reply_to: String,
        /// What is asked.
        query: Query,
    },
    /// The answer of one node to a [`Query`](Op::Query).
    Reply {
        /// The id of the query.
        id: u64,
        /// The answer (`null` with an error).
        #[serde(default)]
        answer: Value,
        /// Set when the node could not answer (an unknown query, say).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl Op {
    /// An [`Emit`](Op::Emit), serializing `data` once.
    pub fn emit<T: Serialize + ?Sized>(
        ns: impl Into<String>,
        targets: Vec<Target>,
        except: Vec<u64>,
        event: impl Into<String>,
        data: &T,
    ) -> Result<Op, serde_json::Error> {
        Ok(Op::Emit {
            ns: ns.into(),
            targets,
            except,
            event: event.into(),
            data: serde_json::value::to_raw_value(data)?,
        })
    }

    /// The name of the operation on the wire (`"emit"`, `"join"`, ...), for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Emit { .. } => "emit",
            Op::HistoryEmit { .. } => "history_emit",
            Op::DisconnectUser { .. } => "disconnect_user",
            Op::Disconnect { .. } => "disconnect",
            Op::Join { .. } => "join",
            Op::Leave { .. } => "leave",
            Op::Query { .. } => "query",
            Op::Reply { .. } => "reply",
        }
    }
}

/// A message as sent.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u32,
    node: &'a str,
    op: &'a Op,
}

/// The first look at a message: the op stays unparsed until the version and sender are known.
#[derive(Deserialize)]
struct Head<'a> {
    v: u32,
    #[serde(borrow)]
    node: Cow<'a, str>,
    #[serde(borrow)]
    op: &'a RawValue,
}

/// Enough of a query to answer it with an error when the rest is not understood.
#[derive(Deserialize)]
struct QueryHead {
    query: QueryIds,
}

#[derive(Deserialize)]
struct QueryIds {
    id: u64,
    reply_to: String,
}

/// How an encoded history emit's op begins.
const HISTORY_EMIT: &str = r#"{"history_emit":"#;

/// Encodes a message from `node`.
pub(crate) fn encode(node: &str, op: &Op) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&EnvelopeOut {
        v: WIRE_VERSION,
        node,
        op,
    })
}

/// What a received message turned out to be.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// An op from another node (or one of this node's own history emits).
    Op { from: String, op: Op },
    /// One of this node's own broadcasts, echoed by Redis.
    Own,
    /// A query this build does not understand: answer it with an error.
    UnknownQuery { from: String, id: u64, reply_to: String },
}

/// Why a message was dropped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("not a message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported wire version {0}")]
    Version(u32),
}

/// Decodes a message received by node `me`.
pub(crate) fn decode(payload: &[u8], me: &str) -> Result<Decoded, DecodeError> {
    let head: Head<'_> = serde_json::from_slice(payload)?;
    if head.v != WIRE_VERSION {
        return Err(DecodeError::Version(head.v));
    }
    if head.node == me {
        // A history emit is delivered by every node from what Redis publishes, the emitting
        // node included; anything else of our own was handled when it was sent.
        if !head.op.get().starts_with(HISTORY_EMIT) {
            return Ok(Decoded::Own);
        }
    }
    let from = head.node.into_owned();
    match serde_json::from_str::<Op>(head.op.get()) {
        Ok(op) => Ok(Decoded::Op { from, op }),
        Err(e) => match serde_json::from_str::<QueryHead>(head.op.get()) {
            Ok(QueryHead {
                query: QueryIds { id, reply_to },
            }) => Ok(Decoded::UnknownQuery { from, id, reply_to }),
            Err(_) => Err(DecodeError::Json(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emit_round_trips_with_the_payload_untouched() {
        let op = Op::emit(
            "/",
            vec![Target::Room("general".into()), Target::User("42".into()), Target::All],
            vec![7],
            "message",
            &json!({"text": "hi", "n": 1.5}),
        )
        .unwrap();
        let bytes = encode("node-a", &op).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"node":"node-a","op":{"emit":{"ns":"/","targets":[{"room":"general"},{"user":"42"},"all"],"except":[7],"event":"message","data":{"n":1.5,"text":"hi"}}}}"#
        );
        match decode(&bytes, "node-b").unwrap() {
            Decoded::Op {
                from,
                op: Op::Emit { data, targets, .. },
            } => {
                assert_eq!(from, "node-a");
                assert_eq!(data.get(), r#"{"n":1.5,"text":"hi"}"#);
                assert_eq!(targets.len(), 3);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(decode(&bytes, "node-a").unwrap(), Decoded::Own));
    }

    #[test]
    fn history_emits_come_back_to_their_own_node() {
        let op = Op::HistoryEmit {
            epoch: "e1".into(),
            offset: 42,
            ns: "/".into(),
            targets: vec![Target::Room("general".into())],
            except: vec![],
            event: "message".into(),
            data: serde_json::value::to_raw_value(&json!("hi")).unwrap(),
        };
        let bytes = encode("node-a", &op).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"node":"node-a","op":{"history_emit":{"epoch":"e1","offset":42,"ns":"/","targets":[{"room":"general"}],"event":"message","data":"hi"}}}"#
        );
        for me in ["node-a", "node-b"] {
            match decode(&bytes, me).unwrap() {
                Decoded::Op {
                    from,
                    op: Op::HistoryEmit { offset, epoch, .. },
                } => assert_eq!((from.as_str(), offset, epoch.as_str()), ("node-a", 42, "e1")),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let v2 = br#"{"v":2,"node":"x","op":{"emit":{}}}"#;
        assert!(matches!(decode(v2, "me"), Err(DecodeError::Version(2))));
        assert!(decode(b"not json", "me").is_err());
        assert!(decode(br#"{"v":1,"node":"x","op":{"teleport":{}}}"#, "me").is_err());
    }

    #[test]
    fn an_unknown_query_can_still_be_answered() {
        let msg = br#"{"v":1,"node":"x","op":{"query":{"id":9,"reply_to":"x","query":{"weather":{}}}}}"#;
        match decode(msg, "me").unwrap() {
            Decoded::UnknownQuery { from, id, reply_to } => {
                assert_eq!((from.as_str(), id, reply_to.as_str()), ("x", 9, "x"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn remote_actions_and_replies_have_flat_shapes() {
        let op = Op::Join {
            conn: 1 << 40,
            room: "r".into(),
        };
        assert_eq!(
            String::from_utf8(encode("n", &op).unwrap()).unwrap(),
            r#"{"v":1,"node":"n","op":{"join":{"conn":1099511627776,"room":"r"}}}"#
        );
        let op = Op::Query {
            id: 3,
            reply_to: "n".into(),
            query: Query::ConnectionCount { ns: None },
        };
        assert_eq!(
            String::from_utf8(encode("n", &op).unwrap()).unwrap(),
            r#"{"v":1,"node":"n","op":{"query":{"id":3,"reply_to":"n","query":{"connection_count":{"ns":null}}}}}"#
        );
        let op = Op::Reply {
            id: 3,
            answer: json!(12),
            error: None,
        };
        assert_eq!(
            String::from_utf8(encode("n", &op).unwrap()).unwrap(),
            r#"{"v":1,"node":"n","op":{"reply":{"id":3,"answer":12}}}"#
        );
    }
}
