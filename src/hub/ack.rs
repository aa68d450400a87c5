//! Emits that wait for the recipients' answers (Socket.IO's `emitWithAck`), to one
//! connection ([`Socket::emit_with_ack`](crate::Socket::emit_with_ack)) or to many
//! ([`Emit::timeout`], [`Emit::emit_with_ack`]).
//!
//! One ack id, from a counter the whole hub shares, goes with the emit: every recipient gets
//! the same frame bytes, and the id never meets one of a connection's own server emits. Each
//! recipient's ack table gets a slot for that id before the frame is queued; the answers come
//! back the usual way (`Conn::resolve_ack`, for both protocols) and are collected without a
//! task per recipient. In a cluster (feature `redis`) the other nodes are asked with one
//! query (`Query::EmitWithAck`): each delivers to its own recipients, collects their answers
//! the same way, and replies once.

use std::{
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{stream::FuturesUnordered, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::oneshot;

use super::{conn, emit::Packet, Conn, ConnectionId, Emit, Hub};
use crate::protocol::attach;

/// Why an emit waiting for an answer got none from a recipient (or could not be sent).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// No answer came within the timeout.
    #[error("no ack within the timeout")]
    Timeout,
    /// The connection ended (or its queue was full) before the answer came.
    #[error("the connection ended before it answered")]
    Disconnected,
    /// The payload could not be serialized.
    #[error("payload could not be serialized: {0}")]
    Serialize(serde_json::Error),
    /// The answer did not deserialize into the expected type.
    #[error("ack did not deserialize: {0}")]
    Deserialize(serde_json::Error),
}

/// One recipient's part of [`AckResponses`]: its answer, or why there is none.
#[derive(Debug)]
#[non_exhaustive]
pub struct AckResponse<T> {
    /// The recipient.
    pub connection: ConnectionId,
    /// Its answer, or [`AckError::Timeout`], [`AckError::Disconnected`] (its queue was full,
    /// or it ended before answering) or [`AckError::Deserialize`] (the answer is not a `T`).
    pub result: Result<T, AckError>,
}

/// What the recipients of [`AckEmit::emit_with_ack`] answered.
///
/// `responses` holds one entry per recipient reached (on every node of a cluster), sorted by
/// connection id; a recipient that did not answer in time has [`AckError::Timeout`]. In a
/// cluster, `missing_nodes` names the nodes that did not reply at all (unreachable, too slow,
/// or too old to know the op): their recipients, if any, are not in `responses`. An empty
/// `responses` with no missing node means there was nobody to ask.
#[derive(Debug)]
#[non_exhaustive]
pub struct AckResponses<T> {
    /// One entry per recipient, sorted by connection id.
    pub responses: Vec<AckResponse<T>>,
    /// The other nodes that did not reply, sorted (always empty without a cluster).
    pub missing_nodes: Vec<String>,
}

impl<T> AckResponses<T> {
    /// Every node took part: `responses` covers every recipient in the cluster.
    pub fn is_complete(&self) -> bool {
        self.missing_nodes.is_empty()
    }

    /// The answers that came, with their connections (the errors left out).
    pub fn answers(&self) -> impl Iterator<Item = (ConnectionId, &T)> {
        (self.responses.iter()).filter_map(|r| r.result.as_ref().ok().map(|t| (r.connection, t)))
    }
}

/// An emit that waits for every recipient's answer, up to a timeout: made by
/// [`Emit::timeout`], finished by [`emit_with_ack`](Self::emit_with_ack).
///
/// ```no_run
/// # async fn f(hub: tower_realtime::Hub) -> Result<(), tower_realtime::AckError> {
/// use std::time::Duration;
/// use tower_realtime::Emitter;
///
/// let votes = hub
///     .to_room("jury")
///     .timeout(Duration::from_secs(5))
///     .emit_with_ack::<_, bool>("vote", &"guilty?")
///     .await?;
/// let guilty = votes.answers().filter(|(_, yes)| **yes).count();
/// let silent = votes.responses.iter().filter(|r| r.result.is_err()).count();
/// # Ok(()) }
/// ```
#[must_use = "nothing is sent until `.emit_with_ack(event, data)` is awaited"]
#[derive(Debug, Clone)]
pub struct AckEmit<'a> {
    emit: Emit<'a>,
    timeout: Duration,
}

/// The longest wait for answers: a longer timeout counts as this one.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

impl<'a> Emit<'a> {
    /// Waits at most `timeout` for each recipient's answer: finish with
    /// [`emit_with_ack`](AckEmit::emit_with_ack) (Socket.IO's `timeout(ms).emitWithAck`). A
    /// timeout longer than a day counts as a day.
    pub fn timeout(self, timeout: Duration) -> AckEmit<'a> {
        AckEmit {
            emit: self,
            timeout: timeout.min(MAX_TIMEOUT),
        }
    }

    /// [`emit_with_ack`](AckEmit::emit_with_ack) with the default timeout,
    /// [`AckEmit::DEFAULT_TIMEOUT`].
    pub async fn emit_with_ack<T, R>(self, event: &str, data: &T) -> Result<AckResponses<R>, AckError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.timeout(AckEmit::DEFAULT_TIMEOUT).emit_with_ack(event, data).await
    }

    /// Queues the event, asking for ack `id`, for every recipient of this node, and registers
    /// the wait for each answer.
    pub(crate) fn ask(&self, event: &str, data_json: &str, attachments: &[Bytes]) -> Asked {
        let id = self.hub.next_ack_id();
        let packet = Packet::new(&self.ns.name, event, data_json)
            .with(attachments)
            .with_ack(id);
        let mut asked = Asked::new(id);
        self.each_recipient(|conn| asked.ask(self.hub, conn, &packet));
        asked
    }
}

impl AckEmit<'_> {
    /// The timeout of [`Emit::emit_with_ack`], without [`Emit::timeout`]: 10 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Sends `event` with `data` to every recipient, encoded once with one ack id, and waits
    /// until each has answered, or ended, or the timeout passed. Each answer is deserialized
    /// into `R` (use [`serde_json::Value`] to take any).
    ///
    /// A native client answers `{"ack": id, "data": …}`; a Socket.IO client's listener calls
    /// its callback (several arguments arrive as an array). A recipient whose queue is full,
    /// or whose connection ends before it answers, is [`AckError::Disconnected`] at once. In a
    /// cluster (feature `redis`) the recipients on other nodes answer too: the wait is then at
    /// most the timeout plus the adapter's `query_timeout` (`RedisOptions::query_timeout`)
    /// for their replies. The event is not kept in a [`History`](crate::History).
    ///
    /// Fails only when `data` cannot be serialized ([`AckError::Serialize`]); what each
    /// recipient did is in the [`AckResponses`].
    pub async fn emit_with_ack<T, R>(self, event: &str, data: &T) -> Result<AckResponses<R>, AckError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let payload = attach::to_json(data).map_err(AckError::Serialize)?;
        let (json, attachments) = (&payload.json, &payload.attachments);
        let local = self.emit.ask(event, json, attachments).collect(self.timeout);
        let (mut answers, (remote, missing_nodes)) = tokio::join!(local, self.others(event, json, attachments));
        answers.extend(remote);
        answers.sort_unstable_by_key(|(id, _)| *id);
        Ok(AckResponses {
            responses: answers
                .into_iter()
                .map(|(connection, result)| AckResponse {
                    connection,
                    result: result.and_then(|(value, attachments)| {
                        attach::from_value(value, &attachments).map_err(AckError::Deserialize)
                    }),
                })
                .collect(),
            missing_nodes,
        })
    }

    /// What the recipients on the other nodes answered, and the nodes that did not reply.
    async fn others(&self, event: &str, data_json: &str, attachments: &[Bytes]) -> (Answers, Vec<String>) {
        #[cfg(feature = "cluster")]
        return self.emit.ask_others(event, data_json, attachments, self.timeout).await;
        #[cfg(not(feature = "cluster"))]
        {
            let _ = (event, data_json, attachments);
            (Vec::new(), Vec::new())
        }
    }
}

/// A recipient's answer, or why there is none.
pub(crate) type Answered = Result<conn::Answer, AckError>;

/// Each recipient with its answer, or why there is none.
pub(crate) type Answers = Vec<(ConnectionId, Answered)>;

/// The answers an emit waits for: one ack id, each recipient that was asked.
pub(crate) struct Asked {
    id: u64,
    /// Each recipient asked, and what became of it (`None`: still waiting).
    recipients: Vec<(Arc<Conn>, Option<Answered>)>,
    /// The answers to come, by index into `recipients`.
    pending: FuturesUnordered<Pending>,
}

impl Asked {
    /// Nobody asked yet for an answer to ack `id`.
    pub(crate) fn new(id: u64) -> Self {
        Self {
            id,
            recipients: Vec::new(),
            pending: FuturesUnordered::new(),
        }
    }

    /// Whether nobody was asked.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn is_empty(&self) -> bool {
        self.recipients.is_empty()
    }

    /// Registers the wait for `conn`'s answer, then queues `packet` for it; a connection that
    /// ended, or whose queue is full, is `Disconnected` at once.
    pub(crate) fn ask(&mut self, hub: &Hub, conn: &Arc<Conn>, packet: &Packet<'_>) {
        let index = self.recipients.len();
        let outcome = match conn.register_ack(self.id) {
            Some(rx) if conn.send_frames(hub, packet.frame(conn.proto)) => {
                hub.inner.counters.messages_out.fetch_add(1, Ordering::Relaxed);
                self.pending.push(Pending { index, rx });
                None
            }
            Some(_) => {
                conn.forget_ack(self.id);
                Some(Err(AckError::Disconnected))
            }
            None => Some(Err(AckError::Disconnected)),
        };
        self.recipients.push((conn.clone(), outcome));
    }

    /// Waits for the answers, at most `timeout`; the recipients still silent then are
    /// `Timeout` (and no longer waited for).
    pub(crate) async fn collect(mut self, timeout: Duration) -> Answers {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_TIMEOUT);
        while let Ok(Some((index, answer))) = tokio::time::timeout_at(deadline, self.pending.next()).await {
            self.recipients[index].1 = Some(answer.map_err(|_| AckError::Disconnected));
        }
        let id = self.id;
        (self.recipients.into_iter())
            .map(|(conn, outcome)| {
                let outcome = outcome.unwrap_or_else(|| {
                    conn.forget_ack(id);
                    Err(AckError::Timeout)
                });
                (conn.id, outcome)
            })
            .collect()
    }
}

/// One recipient's answer to come, with its index.
struct Pending {
    index: usize,
    rx: oneshot::Receiver<conn::Answer>,
}

impl Future for Pending {
    type Output = (usize, Result<conn::Answer, oneshot::error::RecvError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index;
        Pin::new(&mut self.rx).poll(cx).map(|answer| (index, answer))
    }
}
