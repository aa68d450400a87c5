//! History on JetStream: one stream per cluster (`<prefix>-history`, subjects
//! `<prefix>.h.<stream token>`), whose sequence is the cluster-wide offset and whose
//! description is the epoch; sessions and revocations in buckets of their own.
//!
//! An event kept in several history streams is one message per stream: the first is the
//! event (its sequence is the offset), the others are copies carrying the offset in the header
//! [`COPY_OF`]. Nodes deliver the first only; a read of a stream counts a copy at its offset.

use std::{collections::HashMap, future::IntoFuture, time::Duration};

use async_nats::{
    jetstream::{
        self,
        context::{CreateStreamErrorKind, GetStreamErrorKind},
        kv,
        stream::{self, DirectGetErrorKind},
        ErrorCode,
    },
    HeaderMap,
};
use bytes::Bytes;
use tokio::sync::OnceCell;

use super::{
    options::{token, NatsAdapterError},
    shared::{timed, Shared},
};
use crate::adapter::{
    history::{plausible_session, HistoryParams, LeftOut, Missed, StoredEvent},
    wire::{self, Decoded, Op},
};

/// The header of a copy of an event kept in another history stream: the event's offset.
pub(super) const COPY_OF: &str = "Tr-Copy-Of";

/// A history emit written to JetStream, not known to be kept yet.
pub(super) struct Appending {
    ack: jetstream::context::PublishAckFuture,
    /// The subjects of its copies, written once it is kept (they carry its offset).
    copies: Vec<String>,
    payload: Bytes,
}

/// Messages past the last offset read at most while looking for late copies.
const LATE_COPIES: usize = 64;

/// The offset of a stored message: its own sequence, or the one its copy header names
/// (`None` when that header is not a number).
pub(super) fn offset_of(sequence: u64, headers: Option<&HeaderMap>) -> Option<u64> {
    match headers.and_then(|h| h.get(COPY_OF)) {
        Some(value) => value.as_str().parse().ok(),
        None => Some(sequence),
    }
}

/// Whether a stored message is a copy.
pub(super) fn is_copy(headers: Option<&HeaderMap>) -> bool {
    headers.is_some_and(|h| h.get(COPY_OF).is_some())
}

/// A stored history emit, read back (`None` when it is not one).
pub(super) fn stored_event(json: &[u8], offset: u64) -> Option<StoredEvent> {
    let Ok(Decoded::Op {
        op:
            Op::HistoryEmit {
                except,
                except_rooms,
                except_users,
                event,
                data,
                ..
            },
        ..
    }) = wire::decode(json, "")
    else {
        return None;
    };
    Some(StoredEvent {
        offset,
        event,
        data: data.get().to_owned(),
        except,
        left_out: LeftOut {
            rooms: except_rooms,
            users: except_users,
        },
    })
}

/// The session's owner and namespace match (`user` none: an anonymous connection).
pub(super) fn owned_by(json: &[u8], user: Option<&str>, ns: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Owner {
        #[serde(default)]
        user: Option<String>,
        ns: String,
    }
    serde_json::from_slice::<Owner>(json).is_ok_and(|o| o.user.as_deref() == user && o.ns == ns)
}

fn not_found(e: &stream::DirectGetError) -> bool {
    e.kind() == DirectGetErrorKind::NotFound
}

impl Shared {
    fn stream_config(&self, params: &HistoryParams) -> stream::Config {
        stream::Config {
            name: self.names.history.clone(),
            subjects: vec![self.names.history_subjects.clone()],
            description: Some(params.new_epoch.to_string()),
            max_age: params.max_age,
            max_messages_per_subject: i64::try_from(params.max_events.max(1)).unwrap_or(i64::MAX),
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: self.options.replicas,
            allow_direct: true,
            ..Default::default()
        }
    }

    /// The history stream, fresh (made with `params` when there is none and they are given);
    /// `None` when there is none. Remembers it and its epoch.
    pub(super) async fn history_stream(
        &self,
        params: Option<&HistoryParams>,
    ) -> Result<Option<(stream::Stream, stream::Info)>, NatsAdapterError> {
        let limit = self.options.command_timeout;
        let name = &self.names.history;
        let mut made = false;
        let found = match timed(limit, self.js.get_stream(name)).await {
            Ok(found) => found,
            Err(NatsAdapterError::Nats(e)) if stream_missing(&e) => {
                let Some(params) = params else {
                    *self.history.lock().await = None;
                    return Ok(None);
                };
                match timed(limit, self.js.create_stream(self.stream_config(params))).await {
                    Ok(created) => {
                        made = true;
                        created
                    }
                    // Another node made it meanwhile.
                    Err(NatsAdapterError::Nats(e)) if stream_exists(&e) => {
                        timed(limit, self.js.get_stream(name)).await?
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let info = found.cached_info().clone();
        let epoch = info.config.description.clone().unwrap_or_default();
        if epoch.is_empty() || info.config.subjects != [self.names.history_subjects.clone()] {
            return Err(NatsAdapterError::Unexpected(format!(
                "the stream {name} is not a history stream"
            )));
        }
        *self.history.lock().await = Some(epoch);
        if made {
            self.history_made.notify_one();
        }
        Ok(Some((found, info)))
    }

    /// The history's epoch and last offset (the stream made when there is none).
    pub(super) async fn history_epoch(&self, params: &HistoryParams) -> Result<(String, u64), NatsAdapterError> {
        let Some((_, info)) = self.history_stream(Some(params)).await? else {
            return Err(NatsAdapterError::Unexpected("the history stream vanished".to_owned()));
        };
        Ok((info.config.description.unwrap_or_default(), info.state.last_sequence))
    }

    /// Writes an encoded history emit for `streams` (the first message is the event, the
    /// others copies of it, written once it is kept) without waiting for JetStream to keep it:
    /// [`kept`](Self::kept) waits.
    pub(super) async fn start_append(
        &self,
        streams: &[String],
        payload: Bytes,
        params: &HistoryParams,
    ) -> Result<Appending, NatsAdapterError> {
        let known = self.history.lock().await.is_some();
        if !known {
            self.history_stream(Some(params)).await?;
        }
        let mut subjects = streams.iter().map(|s| self.names.history_subject(s));
        let first = subjects.next().unwrap_or_else(|| self.names.history_subject(""));
        let copies = subjects.collect();
        match timed(self.options.command_timeout, self.js.publish(first, payload.clone())).await {
            Ok(ack) => Ok(Appending { ack, copies, payload }),
            Err(e) => {
                self.forget_history().await;
                Err(e)
            }
        }
    }

    /// Waits until a history emit is kept, then writes its copies and waits for those.
    pub(super) async fn kept(&self, appending: Appending) -> Result<(), NatsAdapterError> {
        let limit = self.options.command_timeout;
        let ack = match timed(limit, appending.ack.into_future()).await {
            Ok(ack) => ack,
            Err(e) => {
                self.forget_history().await;
                return Err(e);
            }
        };
        for subject in appending.copies {
            let mut headers = HeaderMap::new();
            headers.insert(COPY_OF, ack.sequence.to_string().as_str());
            let copied = timed(limit, async {
                let ack = (self.js)
                    .publish_with_headers(subject, headers, appending.payload.clone())
                    .await?;
                ack.await
            })
            .await;
            if let Err(e) = copied {
                self.warn_queue.warn(&self.node, "history copy not kept", &e);
            }
        }
        Ok(())
    }

    /// The stream may be gone (deleted, or the server lost it): found or made again on the
    /// next append.
    async fn forget_history(&self) {
        *self.history.lock().await = None;
    }

    /// The events of `streams` after their offsets, for a session of `epoch`, and the last
    /// offset given out when the read began.
    pub(super) async fn read_history(
        &self,
        params: &HistoryParams,
        epoch: &str,
        streams: &[(String, u64)],
    ) -> Result<Missed, NatsAdapterError> {
        let limit = self.options.command_timeout;
        let Some((stream, info)) = self.history_stream(None).await? else {
            return Ok(Missed::EpochChanged { epoch: String::new() });
        };
        let current = info.config.description.clone().unwrap_or_default();
        if current != epoch {
            return Ok(Missed::EpochChanged { epoch: current });
        }
        let upto = info.state.last_sequence;
        let first = info.state.first_sequence;
        let max_replay = params.max_replay;
        let mut events = Vec::new();
        let mut total = 0usize;
        for (name, from) in streams {
            let from = *from;
            if from > upto {
                return Ok(Missed::UnknownOffset);
            }
            // Something after `from` is gone from the stream (by age or by limit): it may
            // have been one of this stream's.
            if from.saturating_add(1) < first {
                return Ok(Missed::Evicted);
            }
            let subject = self.names.history_subject(name);
            let mut found = 0usize;
            let (mut next, mut past) = (from.saturating_add(1), 0usize);
            loop {
                let got = timed(limit, stream.direct_get_next_for_subject(subject.clone(), Some(next))).await;
                let message = match got {
                    Ok(message) => message,
                    Err(NatsAdapterError::Nats(e))
                        if e.downcast_ref::<stream::DirectGetError>().is_some_and(not_found) =>
                    {
                        break
                    }
                    Err(e) => return Err(e),
                };
                next = message.sequence.saturating_add(1);
                if message.sequence > upto {
                    // Only copies of events up to `upto` are wanted past it.
                    past += 1;
                    if past > LATE_COPIES {
                        break;
                    }
                }
                let Some(offset) = offset_of(message.sequence, Some(&message.headers)) else {
                    self.malformed("history message with a bad copy header: skipped", &message.sequence);
                    continue;
                };
                if offset <= from || offset > upto {
                    continue;
                }
                let Some(json) = self.open(&message.payload) else {
                    continue;
                };
                let Some(event) = stored_event(json, offset) else {
                    self.malformed("history message not understood: skipped", &message.sequence);
                    continue;
                };
                events.push(event);
                found += 1;
                total += 1;
                // One stream over the limit is too many; several may repeat an event, so their
                // sum may reach twice the limit before the caller counts each once.
                if found > max_replay || total > 2 * max_replay {
                    return Ok(Missed::TooMany);
                }
            }
            // The stream holds as many as it keeps, all after `from`: older ones of it may
            // have been evicted.
            if found >= params.max_events.max(1) {
                match timed(limit, stream.direct_get_first_for_subject(subject.clone())).await {
                    Ok(oldest) if oldest.sequence > from => return Ok(Missed::Evicted),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Missed::Events {
            epoch: current,
            upto,
            events,
        })
    }

    /// A bucket made on first use (its entries live `ttl`); `None` when there is none and
    /// no `ttl` to make it with.
    async fn bucket<'a>(
        &'a self,
        cell: &'a OnceCell<kv::Store>,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<&'a kv::Store>, NatsAdapterError> {
        if let Some(store) = cell.get() {
            return Ok(Some(store));
        }
        let limit = self.options.command_timeout;
        let store = match ttl {
            Some(ttl) => {
                let ttl = ttl.max(Duration::from_secs(1));
                super::bucket(&self.js, name, ttl, self.options.replicas, limit).await?
            }
            None => match timed(limit, self.js.get_stream(format!("KV_{name}"))).await {
                Ok(_) => timed(limit, self.js.get_key_value(name)).await?,
                Err(NatsAdapterError::Nats(e)) if stream_missing(&e) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        Ok(Some(cell.get_or_init(|| async { store }).await))
    }

    /// Keeps a session for `ttl` (the sessions bucket's life, set by the node that makes it).
    pub(super) async fn keep_session(&self, id: &str, json: Bytes, ttl: Duration) -> Result<(), NatsAdapterError> {
        let Some(sessions) = self.bucket(&self.sessions, &self.names.sessions, Some(ttl)).await? else {
            return Ok(());
        };
        timed(self.options.command_timeout, sessions.put(id, json)).await?;
        Ok(())
    }

    /// Takes a session once, for its owner, with the owner's revocations.
    pub(super) async fn take_session(
        &self,
        id: &str,
        user: Option<&str>,
        ns: &str,
    ) -> Result<Option<(String, HashMap<String, u64>)>, NatsAdapterError> {
        if !plausible_session(id) {
            return Ok(None);
        }
        let limit = self.options.command_timeout;
        let Some(sessions) = self.bucket(&self.sessions, &self.names.sessions, None).await? else {
            return Ok(None);
        };
        let Some(entry) = timed(limit, sessions.entry(id)).await? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put || !owned_by(&entry.value, user, ns) {
            return Ok(None);
        }
        let Ok(json) = String::from_utf8(entry.value.to_vec()) else {
            return Ok(None);
        };
        // Deleted only if nobody took or kept it again meanwhile: taken once.
        match timed(limit, sessions.delete_expect_revision(id, Some(entry.revision))).await {
            Ok(()) => {}
            Err(NatsAdapterError::Nats(e))
                if e.downcast_ref::<kv::UpdateError>()
                    .is_some_and(|u| u.kind() == kv::UpdateErrorKind::WrongLastRevision) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        let revoked = match user {
            Some(user) => self.revocations(user).await?.1,
            None => HashMap::new(),
        };
        Ok(Some((json, revoked)))
    }

    /// A user's revocations and the entry's revision (`None`: no entry to update).
    async fn revocations(&self, user: &str) -> Result<(Option<u64>, HashMap<String, u64>), NatsAdapterError> {
        let Some(revoked) = self.bucket(&self.revoked, &self.names.revoked, None).await? else {
            return Ok((None, HashMap::new()));
        };
        let entry = timed(self.options.command_timeout, revoked.entry(token(user))).await?;
        Ok(match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let map = serde_json::from_slice(&e.value).unwrap_or_else(|_| {
                    self.malformed("revocations not understood: replaced", &user);
                    HashMap::new()
                });
                (Some(e.revision), map)
            }
            Some(e) => (Some(e.revision), HashMap::new()),
            None => (None, HashMap::new()),
        })
    }

    /// Takes `user` out of `room` (empty: every session) as of the last offset given out,
    /// remembered for `ttl` (the revocations bucket's life, set by the node that makes it).
    pub(super) async fn revoke(&self, user: &str, room: &str, ttl: Duration) -> Result<(), NatsAdapterError> {
        let limit = self.options.command_timeout;
        let Some(store) = self.bucket(&self.revoked, &self.names.revoked, Some(ttl)).await? else {
            return Ok(());
        };
        let seq = match self.history_stream(None).await? {
            Some((_, info)) => info.state.last_sequence,
            None => 0,
        };
        let key = token(user);
        for _ in 0..64 {
            let (revision, mut map) = self.revocations(user).await?;
            let old = map.get(room).copied().unwrap_or(0);
            map.insert(room.to_owned(), seq.max(old));
            let value: Bytes = serde_json::to_vec(&map).unwrap_or_default().into();
            let written = match revision {
                Some(revision) => timed(limit, store.update(&key, value, revision)).await.map(drop),
                None => timed(limit, store.create(&key, value)).await.map(drop),
            };
            match written {
                Ok(()) => return Ok(()),
                Err(NatsAdapterError::Nats(e))
                    if e.downcast_ref::<kv::UpdateError>()
                        .is_some_and(|u| u.kind() == kv::UpdateErrorKind::WrongLastRevision)
                        || e.downcast_ref::<kv::CreateError>()
                            .is_some_and(|c| c.kind() == kv::CreateErrorKind::AlreadyExists) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Err(NatsAdapterError::Unexpected(
            "revocations of a user changed too often while being written".to_owned(),
        ))
    }
}

/// The stream does not exist.
fn stream_missing(e: &async_nats::Error) -> bool {
    e.downcast_ref::<jetstream::context::GetStreamError>().is_some_and(
        |e| matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND),
    )
}

/// The stream exists already (made by another node meanwhile).
fn stream_exists(e: &async_nats::Error) -> bool {
    e.downcast_ref::<jetstream::context::CreateStreamError>().is_some_and(
        |e| matches!(e.kind(), CreateStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NAME_EXIST),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{json, value::RawValue};

    use super::*;
    use crate::adapter::Target;

    fn emit() -> Op {
        Op::HistoryEmit {
            epoch: String::new(),
            offset: 0,
            ns: "/".into(),
            targets: vec![Target::Room("r".into())],
            except: vec![4, 5],
            except_rooms: vec!["quiet".into()],
            except_users: vec!["42".into()],
            event: "said".into(),
            data: RawValue::from_string(json!({ "n": 1 }).to_string()).unwrap(),
        }
    }

    #[test]
    fn a_stored_emit_is_read_back_at_its_offset() {
        let encoded = wire::encode("a", &emit()).unwrap();
        let event = stored_event(&encoded, 17).expect("a stored event");
        assert_eq!(event.offset, 17);
        assert_eq!(event.event, "said");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&event.data).unwrap(),
            json!({ "n": 1 })
        );
        assert_eq!(event.except, [4, 5]);
        assert_eq!(event.left_out.rooms, ["quiet"]);
        assert_eq!(event.left_out.users, ["42"]);
        // Another op, or garbage, is no stored event.
        let other = wire::encode("a", &Op::DisconnectUser { user: "u".into() }).unwrap();
        assert!(stored_event(&other, 1).is_none());
        assert!(stored_event(b"{", 1).is_none());
        assert!(stored_event(br#"{"v":9,"node":"a","op":{}}"#, 1).is_none());
    }

    #[test]
    fn copies_carry_the_offset_of_their_event() {
        assert_eq!(offset_of(9, None), Some(9));
        assert!(!is_copy(None));
        let mut headers = HeaderMap::new();
        assert_eq!(offset_of(9, Some(&headers)), Some(9));
        assert!(!is_copy(Some(&headers)));
        headers.insert(COPY_OF, "7");
        assert_eq!(offset_of(9, Some(&headers)), Some(7));
        assert!(is_copy(Some(&headers)));
        let mut bad = HeaderMap::new();
        bad.insert(COPY_OF, "seven");
        assert_eq!(offset_of(9, Some(&bad)), None);
    }

    #[test]
    fn a_session_is_its_owners_only() {
        let mine = br#"{"user":"ann","ns":"/","epoch":"e","rooms":[],"since":1,"conns":[]}"#;
        assert!(owned_by(mine, Some("ann"), "/"));
        assert!(!owned_by(mine, Some("bob"), "/"));
        assert!(!owned_by(mine, None, "/"));
        assert!(!owned_by(mine, Some("ann"), "/chat"));
        let anonymous = br#"{"user":null,"ns":"/"}"#;
        assert!(owned_by(anonymous, None, "/"));
        assert!(!owned_by(anonymous, Some("ann"), "/"));
        assert!(!owned_by(b"not json", None, "/"));
        assert!(!owned_by(br#"{"user":"ann"}"#, Some("ann"), "/"));
    }
}
