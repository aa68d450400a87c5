//! The messages nodes exchange through Redis, and their JSON encoding.
//!
//! Every message is one JSON object, `{"v":1,"node":"<origin node id>","op":{...}}`. The op is
//! externally tagged: `{"emit":{...}}`, `{"disconnect_user":{"user":"42"}}`, and so on (see
//! `docs/cluster.md` for every shape). A node drops messages whose `v` it does not know, and
//! counts them as malformed.
//!
//! With a signing key ([`RedisOptions::signing_key`](super::RedisOptions::signing_key)), each
//! message goes in a signed frame ([`Signer`]): a version byte, an HMAC-SHA256 tag, the place
//! of the part Redis fills in (a history emit's epoch and offset), then the JSON.

use std::{borrow::Cow, fmt, sync::Arc};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{value::RawValue, Value};
use sha2::Sha256;

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
    /// The data a connection stored with [`Socket::set_data`](crate::Socket::set_data)
    /// (answer: an array holding it, empty when the connection is not on the answering node
    /// or set none).
    ConnectionData {
        /// The connection.
        conn: u64,
    },
    /// How many connections the node has (answer: a number), in one namespace or, with
    /// `None`, in all. A node without the namespace answers any query about it with `[]`
    /// (nothing).
    ConnectionCount {
        /// The namespace, or `None` for every namespace.
        ns: Option<String>,
    },
    /// Deliver an event asking for an answer (an ack) to the matching connections of the
    /// node, wait at most `timeout_ms` for their answers, and answer with an array of
    /// `[connection id, outcome]` pairs, the outcome being `{"ack": <answer>}`, `"timeout"` or
    /// `"disconnected"` (an empty array when none of the node's connections matches). Sent by
    /// a hub's `emit_with_ack`; each node picks its own ack id for its connections.
    EmitWithAck {
        /// The namespace.
        ns: String,
        /// Who gets it (the union of the targets).
        targets: Vec<Target>,
        /// Connections left out, whatever the targets.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except: Vec<u64>,
        /// The members of these rooms are left out.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except_rooms: Vec<String>,
        /// The connections of these users are left out.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except_users: Vec<String>,
        /// The event name.
        event: String,
        /// The event's payload. Each binary value is a placeholder
        /// `{"_placeholder":true,"num":n}` for `attachments[n]`.
        data: Value,
        /// The payload's binary values, in placeholder order: base64 strings on the wire,
        /// the field left out when there are none.
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "base64_list")]
        attachments: Vec<Bytes>,
        /// The longest wait for the answers, in milliseconds.
        timeout_ms: u64,
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
        /// Rooms whose members are left out, whatever the targets.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except_rooms: Vec<String>,
        /// Users whose connections are left out, whatever the targets.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except_users: Vec<String>,
        /// Not queued for a busy connection ([`Emit::volatile`](crate::Emit::volatile)).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        volatile: bool,
        /// Replaces a queued message with the same key ([`Emit::coalesce`](crate::Emit::coalesce)).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        coalesce: Option<String>,
        /// The event name.
        event: String,
        /// The event's payload, as JSON, serialized once by the emitting node. Each binary
        /// value is a placeholder `{"_placeholder":true,"num":n}` for `attachments[n]`.
        data: Box<RawValue>,
        /// The payload's binary values, in placeholder order: base64 strings on the wire,
        /// the field left out when there are none.
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "base64_list")]
        attachments: Vec<Bytes>,
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
        /// Rooms whose members are left out, whatever the targets.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except_rooms: Vec<String>,
        /// Users whose connections are left out, whatever the targets.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except_users: Vec<String>,
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

/// Attachments as a list of base64 strings (standard alphabet, padded).
pub(crate) mod base64_list {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use bytes::Bytes;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(list: &[Bytes], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|b| STANDARD.encode(b)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Bytes>, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        (list.iter())
            .map(|s| STANDARD.decode(s).map(Bytes::from).map_err(de::Error::custom))
            .collect()
    }
}

impl Op {
    /// An [`Emit`](Op::Emit), serializing `data` once (no room or user left out, neither
    /// volatile nor coalesced: set those fields on the result).
    pub fn emit<T: Serialize + ?Sized>(
        ns: impl Into<String>,
        targets: Vec<Target>,
        except: Vec<u64>,
        event: impl Into<String>,
        data: &T,
    ) -> Result<Op, serde_json::Error> {
        let payload = crate::protocol::attach::to_json(data)?;
        Ok(Op::Emit {
            ns: ns.into(),
            targets,
            except,
            except_rooms: Vec::new(),
            except_users: Vec::new(),
            volatile: false,
            coalesce: None,
            event: event.into(),
            data: RawValue::from_string(payload.json)?,
            attachments: payload.attachments,
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
///
/// Lives only from decode to dispatch, by value on the subscriber's stack:
/// boxing the op would cost an allocation per received message to save a
/// few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
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

/// Shortest signing key, in bytes.
pub(crate) const MIN_SIGNING_KEY_LEN: usize = 32;

/// The key the nodes of a cluster share to sign their messages on the bus (HMAC-SHA256); see
/// [`RedisOptions::signing_key`](crate::adapter::RedisOptions::signing_key) or `NatsOptions::signing_key`. At least 32 bytes (32 random bytes are right; a passphrase
/// is not). Its `Debug` does not show it.
#[derive(Clone)]
pub struct SigningKey(Arc<[u8]>);

impl SigningKey {
    /// A key of these bytes (checked when the adapter connects).
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        Self(key.as_ref().into())
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether it is long enough to sign with.
    pub(crate) fn usable(&self) -> bool {
        self.0.len() >= MIN_SIGNING_KEY_LEN && Signer::new(&self.0).is_some()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({} bytes, redacted)", self.0.len())
    }
}

/// The first byte of a signed frame (never the first byte of a JSON message).
const SIGNED_V1: u8 = 0x01;
/// Bytes of the tag (HMAC-SHA256).
const TAG_LEN: usize = 32;
/// Bytes before the JSON in a signed frame: the version byte, the tag, the position (`u32`,
/// big-endian).
pub(crate) const FRAME_HEAD: usize = 1 + TAG_LEN + 4;
/// The position of a frame with nothing filled in by Redis.
const NO_POSITION: u32 = u32::MAX;
/// The longest epoch a signed history emit may carry where Redis filled it in.
const MAX_EPOCH_LEN: usize = 128;

/// Signs and checks the messages of the bus with the cluster's shared key.
///
/// A signed frame is `0x01`, a 32-byte tag, a 4-byte big-endian position `p`, then the JSON
/// message. `p` is `0xFFFFFFFF` for a message sent as it is; for a history emit it is where,
/// in the JSON, Redis's append script inserted `"epoch":"<epoch>","offset":<offset>`. The tag
/// is HMAC-SHA256 over the version byte, the position and the JSON without that inserted
/// part (the epoch and offset are Redis's, not the sender's).
#[derive(Clone)]
pub(crate) struct Signer {
    /// The keyed state, cloned for each message (the key is not hashed again).
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// Why a message was not accepted as signed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unauthenticated {
    #[error("unsigned message")]
    Unsigned,
    #[error("the inserted epoch and offset are not where the frame says")]
    Position,
    #[error("bad signature")]
    BadTag,
}

impl Signer {
    /// A signer with `key` (HMAC takes any length; the options refuse short keys).
    pub(crate) fn new(key: &[u8]) -> Option<Self> {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
        Some(Self { mac })
    }

    fn tag(&self, position: u32, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(&[SIGNED_V1]);
        mac.update(&position.to_be_bytes());
        for part in parts {
            mac.update(part);
        }
        mac
    }

    /// Encodes a message from `node`, signed.
    pub(crate) fn encode(&self, node: &str, op: &Op) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(256);
        out.resize(FRAME_HEAD, 0);
        serde_json::to_writer(
            &mut out,
            &EnvelopeOut {
                v: WIRE_VERSION,
                node,
                op,
            },
        )?;
        let tag = self.tag(NO_POSITION, &[&out[FRAME_HEAD..]]).finalize().into_bytes();
        out[0] = SIGNED_V1;
        out[1..1 + TAG_LEN].copy_from_slice(&tag);
        out[1 + TAG_LEN..FRAME_HEAD].copy_from_slice(&NO_POSITION.to_be_bytes());
        Ok(out)
    }

    /// The signed frame's start for a message whose JSON is `head`, then what Redis inserts,
    /// then `tail`: the frame head followed by `head`. `None` when `head` is too long for a
    /// position.
    #[cfg(feature = "redis")]
    pub(crate) fn seal_split(&self, head: &[u8], tail: &[u8]) -> Option<Vec<u8>> {
        let position = u32::try_from(head.len()).ok().filter(|p| *p != NO_POSITION)?;
        let tag = self.tag(position, &[head, tail]).finalize().into_bytes();
        let mut out = Vec::with_capacity(FRAME_HEAD + head.len());
        out.push(SIGNED_V1);
        out.extend_from_slice(&tag);
        out.extend_from_slice(&position.to_be_bytes());
        out.extend_from_slice(head);
        Some(out)
    }

    /// Checks a received frame; its JSON message when the tag is right (compared in constant
    /// time).
    pub(crate) fn open<'a>(&self, frame: &'a [u8]) -> Result<&'a [u8], Unauthenticated> {
        let (Some(&SIGNED_V1), Some(tag), Some(position), Some(json)) = (
            frame.first(),
            frame.get(1..1 + TAG_LEN),
            frame.get(1 + TAG_LEN..FRAME_HEAD),
            frame.get(FRAME_HEAD..),
        ) else {
            return Err(Unauthenticated::Unsigned);
        };
        let mut p = [0u8; 4];
        p.copy_from_slice(position);
        let position = u32::from_be_bytes(p);
        let mac = if position == NO_POSITION {
            self.tag(position, &[json])
        } else {
            let at = usize::try_from(position).map_err(|_| Unauthenticated::Position)?;
            let (head, rest) = (json.get(..at), json.get(at..));
            let (Some(head), Some(rest)) = (head, rest) else {
                return Err(Unauthenticated::Position);
            };
            let inserted = inserted_position(rest).ok_or(Unauthenticated::Position)?;
            let tail = rest.get(inserted..).ok_or(Unauthenticated::Position)?;
            self.tag(position, &[head, tail])
        };
        mac.verify_slice(tag).map_err(|_| Unauthenticated::BadTag)?;
        Ok(json)
    }
}

/// The length of the `"epoch":"<epoch>","offset":<digits>` that starts `rest`, if it does.
fn inserted_position(rest: &[u8]) -> Option<usize> {
    const EPOCH: &[u8] = br#""epoch":""#;
    const OFFSET: &[u8] = br#"","offset":"#;
    let after_epoch = rest.strip_prefix(EPOCH)?;
    let epoch_len = after_epoch
        .iter()
        .take(MAX_EPOCH_LEN + 1)
        .position(|&b| b == b'"' || b == b'\\')?;
    if epoch_len > MAX_EPOCH_LEN {
        return None;
    }
    let after_offset = after_epoch.get(epoch_len..)?.strip_prefix(OFFSET)?;
    let digits = after_offset.iter().take(21).take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    EPOCH
        .len()
        .checked_add(epoch_len)?
        .checked_add(OFFSET.len())?
        .checked_add(digits)
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
    fn binary_values_travel_as_base64_attachments() {
        #[derive(Serialize)]
        struct File {
            name: &'static str,
            file: Bytes,
        }
        let file = File {
            name: "a",
            file: Bytes::from_static(&[0, 1, 2, 255]),
        };
        let op = Op::emit("/", vec![Target::All], vec![], "file", &file).unwrap();
        let bytes = encode("node-a", &op).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.ends_with(r#""data":{"name":"a","file":{"_placeholder":true,"num":0}},"attachments":["AAEC/w=="]}}}"#),
            "{text}"
        );
        match decode(&bytes, "node-b").unwrap() {
            Decoded::Op {
                op: Op::Emit { attachments, .. },
                ..
            } => assert_eq!(attachments, [Bytes::from_static(&[0, 1, 2, 255])]),
            other => panic!("unexpected {other:?}"),
        }
        let bad = text.replace("AAEC/w==", "not base64!");
        assert!(decode(bad.as_bytes(), "node-b").is_err());
    }

    #[test]
    fn an_emit_carries_what_it_leaves_out_and_how_it_is_queued() {
        let text = r#"{"v":1,"node":"a","op":{"emit":{"ns":"/","targets":["all"],"except_rooms":["c"],"except_users":["42"],"volatile":true,"coalesce":"cursor:42","event":"e","data":1}}}"#;
        let Decoded::Op { op, .. } = decode(text.as_bytes(), "b").unwrap() else {
            panic!("an op expected");
        };
        let Op::Emit {
            except_rooms,
            except_users,
            volatile,
            coalesce,
            ..
        } = &op
        else {
            panic!("an emit expected");
        };
        assert_eq!(
            (except_rooms.as_slice(), except_users.as_slice()),
            (&["c".to_owned()][..], &["42".to_owned()][..])
        );
        assert!(*volatile);
        assert_eq!(coalesce.as_deref(), Some("cursor:42"));
        assert_eq!(
            std::str::from_utf8(&encode("a", &op).unwrap()).unwrap(),
            text,
            "the same back"
        );
    }

    #[test]
    fn history_emits_come_back_to_their_own_node() {
        let op = Op::HistoryEmit {
            epoch: "e1".into(),
            offset: 42,
            ns: "/".into(),
            targets: vec![Target::Room("general".into())],
            except: vec![],
            except_rooms: vec![],
            except_users: vec![],
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

    #[test]
    fn an_emit_with_ack_is_a_query_with_its_timeout() {
        let op = Op::Query {
            id: 4,
            reply_to: "n".into(),
            query: Query::EmitWithAck {
                ns: "/".into(),
                targets: vec![Target::Room("jury".into())],
                except: vec![12],
                except_rooms: Vec::new(),
                except_users: Vec::new(),
                event: "vote".into(),
                data: json!({"q": 1}),
                attachments: Vec::new(),
                timeout_ms: 5000,
            },
        };
        let bytes = encode("n", &op).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"node":"n","op":{"query":{"id":4,"reply_to":"n","query":{"emit_with_ack":{"ns":"/","targets":[{"room":"jury"}],"except":[12],"event":"vote","data":{"q":1},"timeout_ms":5000}}}}}"#
        );
        assert!(matches!(
            decode(&bytes, "m").unwrap(),
            Decoded::Op {
                op: Op::Query {
                    query: Query::EmitWithAck { timeout_ms: 5000, .. },
                    ..
                },
                ..
            }
        ));
    }

    fn signer(key: u8) -> Signer {
        Signer::new(&[key; 32]).unwrap()
    }

    fn history_emit() -> Op {
        Op::HistoryEmit {
            epoch: String::new(),
            offset: 0,
            ns: "/".into(),
            targets: vec![Target::Room("r".into())],
            except: vec![],
            except_rooms: vec![],
            except_users: vec![],
            event: "m".into(),
            data: serde_json::value::to_raw_value(&json!("hi")).unwrap(),
        }
    }

    /// What Redis's append script publishes: the frame start, the position, the tail.
    fn as_published(signer: &Signer, epoch: &str, offset: &str) -> Vec<u8> {
        let encoded = encode("node-a", &history_emit()).unwrap();
        let position = br#""epoch":"","offset":0"#;
        let at = encoded.windows(position.len()).position(|w| w == position).unwrap();
        let (head, tail) = (&encoded[..at], &encoded[at + position.len()..]);
        let mut out = signer.seal_split(head, tail).unwrap();
        out.extend_from_slice(format!(r#""epoch":"{epoch}","offset":{offset}"#).as_bytes());
        out.extend_from_slice(tail);
        out
    }

    #[test]
    fn signed_frames_open_with_the_same_key_only() {
        let op = Op::Join {
            conn: 1,
            room: "r".into(),
        };
        let frame = signer(1).encode("node-a", &op).unwrap();
        assert_eq!(frame[0], SIGNED_V1);
        let json = signer(1).open(&frame).unwrap();
        assert_eq!(json, &encode("node-a", &op).unwrap()[..]);
        assert!(matches!(
            decode(json, "node-b").unwrap(),
            Decoded::Op {
                op: Op::Join { conn: 1, .. },
                ..
            }
        ));
        assert!(matches!(signer(2).open(&frame), Err(Unauthenticated::BadTag)));
        // Unsigned JSON, as a node without a key sends it.
        assert!(matches!(
            signer(1).open(&encode("node-a", &op).unwrap()),
            Err(Unauthenticated::Unsigned)
        ));
    }

    #[test]
    fn a_signed_frame_changed_anywhere_is_refused() {
        let frame = signer(1)
            .encode(
                "node-a",
                &Op::Join {
                    conn: 1,
                    room: "r".into(),
                },
            )
            .unwrap();
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x20;
            assert!(signer(1).open(&bad).is_err(), "byte {i} changed, accepted");
        }
        for len in 0..frame.len() {
            assert!(signer(1).open(&frame[..len]).is_err(), "cut at {len}, accepted");
        }
        let mut longer = frame.clone();
        longer.push(b' ');
        assert!(signer(1).open(&longer).is_err());
    }

    #[test]
    fn history_emits_signed_before_redis_fills_in_their_position_open() {
        let frame = as_published(&signer(1), "ep0ch", "18446744073709551615");
        let json = signer(1).open(&frame).unwrap();
        match decode(json, "node-b").unwrap() {
            Decoded::Op {
                op: Op::HistoryEmit { epoch, offset, .. },
                ..
            } => {
                assert_eq!((epoch.as_str(), offset), ("ep0ch", u64::MAX));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(signer(2).open(&frame).is_err());
    }

    #[test]
    fn crafted_positions_and_lengths_are_refused_without_panicking() {
        let good = as_published(&signer(1), "e", "5");
        let with_position = |p: u32| {
            let mut f = good.clone();
            f[1 + TAG_LEN..FRAME_HEAD].copy_from_slice(&p.to_be_bytes());
            f
        };
        for p in [
            0,
            1,
            5,
            (good.len() - FRAME_HEAD) as u32,
            (good.len() - FRAME_HEAD + 1) as u32,
            u32::MAX - 1,
            1 << 31,
        ] {
            assert!(signer(1).open(&with_position(p)).is_err(), "position {p} accepted");
        }
        // Inserted parts Redis would never write.
        for (epoch, offset) in [
            ("e", ""),
            ("e", "-1"),
            ("e", "99999999999999999999999"),
            (&"x".repeat(MAX_EPOCH_LEN + 1) as &str, "1"),
            ("e\\\"", "1"),
            ("e", "1e9"),
        ] {
            assert!(
                signer(1).open(&as_published(&signer(1), epoch, offset)).is_err(),
                "{epoch:?} {offset:?} accepted"
            );
        }
        // A different epoch or offset opens (Redis's part is not signed): the JSON decoder has
        // the last word, and an offset past u64 is malformed, not a panic.
        let past = as_published(&signer(1), "e", "18446744073709551616");
        let json = signer(1).open(&past).unwrap();
        assert!(decode(json, "me").is_err());
        // Frames of every short length, and a bare head.
        for len in 0..=FRAME_HEAD {
            assert!(signer(1).open(&vec![SIGNED_V1; len]).is_err());
        }
        assert!(inserted_position(b"").is_none());
        assert!(inserted_position(br#""epoch":""#).is_none());
        assert_eq!(inserted_position(br#""epoch":"","offset":0}"#), Some(21));
    }
}
