//! The per-connection task: reads frames and hands them to the gateway, drains the outbound
//! queue in batches (one flush per batch), pings, and enforces the limits and close codes.

pub(crate) mod coalesce;
pub(crate) mod outbox;

use std::{
    collections::{HashMap, VecDeque},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{oneshot, Notify},
    time::Instant,
};
use tokio_tungstenite::{
    tungstenite::{
        error::{CapacityError, Error as WsError, ProtocolError},
        protocol::{frame::coding::CloseCode, CloseFrame},
        Message, Utf8Bytes,
    },
    WebSocketStream,
};

use crate::{
    auth::Identity,
    config::SlowConsumerPolicy,
    gateway::{DisconnectReason, ErrorEvent, Incoming, RateState, RawMessage, Refused, Socket},
    hub::{
        history::{Ask, Offer, Recovery},
        registry::Join,
        ConnectionId, Hub, NsInner,
    },
    protocol::{
        close_code,
        native::{self, Inbound},
    },
};

/// The wire protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    /// The native JSON protocol.
    Native,
    /// Socket.IO v5 (feature `socketio`).
    #[cfg(feature = "socketio")]
    SocketIo,
}

/// A live connection as the hub sees it: its queue, its identity, its rooms.
pub(crate) struct Conn {
    pub(crate) id: ConnectionId,
    pub(crate) proto: Proto,
    pub(crate) identity: Identity,
    tx: outbox::Sender,
    /// The connection's rooms: the reverse index of the registry's rooms → connections.
    rooms: Mutex<Vec<Arc<str>>>,
    /// Set once: why and how the connection is to be closed.
    close: Mutex<Option<(u16, &'static str)>>,
    /// Wakes whoever runs the connection when a close is requested: the sockets of one
    /// Socket.IO session share their session's; without one, the outbound queue's reader is
    /// nudged (a native connection's task reads it).
    close_notify: Option<Arc<Notify>>,
    /// What a Socket.IO client sent in its CONNECT (`auth`), if anything.
    pub(crate) auth: Option<Box<Value>>,
    /// Server emits waiting for the client's answer.
    acks: Mutex<AckTable>,
    /// The connection's recovery session, when the hub keeps history and the client takes part.
    pub(crate) recovery: Option<Box<Recovery>>,
}

#[derive(Default)]
struct AckTable {
    next: u64,
    pending: HashMap<u64, oneshot::Sender<Value>>,
}

impl Conn {
    pub(crate) fn new(
        id: ConnectionId,
        identity: Identity,
        capacity: usize,
        recovery: Option<Box<Recovery>>,
    ) -> (Arc<Self>, outbox::Receiver) {
        let (tx, rx) = outbox::channel(capacity);
        (
            Self::with_sender(id, Proto::Native, identity, tx, None, None, recovery),
            rx,
        )
    }

    /// A connection writing into an existing queue (several Socket.IO namespaces share one).
    pub(crate) fn with_sender(
        id: ConnectionId,
        proto: Proto,
        identity: Identity,
        tx: outbox::Sender,
        close_notify: Option<Arc<Notify>>,
        auth: Option<Box<Value>>,
        recovery: Option<Box<Recovery>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            proto,
            identity,
            tx,
            rooms: Mutex::new(Vec::new()),
            close: Mutex::new(None),
            close_notify,
            auth,
            acks: Mutex::default(),
            recovery,
        })
    }

    /// Queues a frame without waiting. Returns whether it was queued; on a full queue the
    /// hub's slow-consumer policy applies.
    pub(crate) fn send(&self, hub: &Hub, msg: impl Into<outbox::Frame>) -> bool {
        match self.tx.try_send(msg.into()) {
            Ok(()) => true,
            Err(outbox::Full::Full) => {
                self.overflowed(hub);
                false
            }
        }
    }

    /// Queues a history event (offset `seq`): held while the connection recovers, skipped
    /// when its replay had it already.
    pub(crate) fn send_at(&self, hub: &Hub, msg: outbox::Frame, seq: u64) -> bool {
        let Some(recovery) = &self.recovery else {
            return self.send(hub, msg);
        };
        match recovery.offer(seq, msg, hub.inner.config.outbound_queue) {
            Offer::Send(msg) => self.send(hub, msg),
            Offer::Held => true,
            Offer::Skip => false,
            Offer::Full => {
                self.overflowed(hub);
                false
            }
        }
    }

    /// Queues frames past the queue's capacity: a replay, bounded by the history it comes from.
    pub(crate) fn send_all(&self, msgs: Vec<outbox::Frame>) {
        self.tx.push_all(msgs);
    }

    /// A message did not fit: the slow-consumer policy applies.
    fn overflowed(&self, hub: &Hub) {
        let counters = &hub.inner.counters;
        counters.dropped.fetch_add(1, Ordering::Relaxed);
        if hub.inner.config.slow_consumer == SlowConsumerPolicy::Close
            && self.request_close(close_code::TRY_AGAIN_LATER, "slow consumer")
        {
            counters.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(conn = %self.id, "outbound queue full: closing a slow consumer");
        }
    }

    /// Asks the connection task to close with `code`. Returns `false` if a close was
    /// already requested (the first reason wins).
    pub(crate) fn request_close(&self, code: u16, reason: &'static str) -> bool {
        let mut close = self.close.lock();
        if close.is_some() {
            return false;
        }
        *close = Some((code, reason));
        drop(close);
        match &self.close_notify {
            Some(notify) => notify.notify_one(),
            None => self.tx.nudge(),
        }
        true
    }

    /// Fails the server emits still waiting for an answer (`AckError::Disconnected`).
    pub(crate) fn fail_acks(&self) {
        self.acks.lock().pending.clear();
    }

    /// The close requested for this connection, if any.
    pub(crate) fn close_requested(&self) -> Option<(u16, &'static str)> {
        *self.close.lock()
    }

    /// A new ack id, and where its answer will arrive.
    pub(crate) fn register_ack(&self) -> (u64, oneshot::Receiver<Value>) {
        let (tx, rx) = oneshot::channel();
        let mut acks = self.acks.lock();
        acks.next += 1;
        let id = acks.next;
        acks.pending.insert(id, tx);
        (id, rx)
    }

    pub(crate) fn forget_ack(&self, id: u64) {
        self.acks.lock().pending.remove(&id);
    }

    /// Hands the client's answer to the emit waiting for it. `false` for an unknown id (a late
    /// answer, after a timeout).
    pub(crate) fn resolve_ack(&self, id: u64, data: Value) -> bool {
        match self.acks.lock().pending.remove(&id) {
            Some(tx) => tx.send(data).is_ok(),
            None => false,
        }
    }

    pub(crate) fn rooms(&self) -> Vec<String> {
        self.rooms.lock().iter().map(|r| r.to_string()).collect()
    }

    pub(crate) fn in_room(&self, room: &str) -> bool {
        self.rooms.lock().iter().any(|r| &**r == room)
    }

    pub(crate) fn add_room(&self, room: &str, max: usize) -> Join {
        let mut rooms = self.rooms.lock();
        if rooms.iter().any(|r| &**r == room) {
            Join::AlreadyIn
        } else if rooms.len() >= max {
            Join::TooManyRooms
        } else {
            rooms.push(Arc::from(room));
            Join::Joined
        }
    }

    pub(crate) fn remove_room(&self, room: &str) -> bool {
        let mut rooms = self.rooms.lock();
        match rooms.iter().position(|r| &**r == room) {
            Some(i) => {
                rooms.swap_remove(i);
                true
            }
            None => false,
        }
    }

    pub(crate) fn take_rooms(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *self.rooms.lock())
    }
}

/// The event that tells a native client about its recovery session.
pub(crate) const SESSION_EVENT: &str = "$session";

/// Frames read while a handler runs: at most this many wait; then reading pauses.
const BACKLOG: usize = 32;

/// A frame waiting for the handler before it to finish.
enum Pending {
    Raw(Message),
    Frame(Utf8Bytes, Result<Inbound, native::DecodeError>),
}

/// How long a closing connection waits for its close frame to be written and answered.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What ended the read/write loop.
enum End {
    /// We close with this code and reason.
    Close(u16, String),
    /// The peer closed, or the transport failed; nothing more to send.
    Gone(DisconnectReason),
}

/// Runs one upgraded connection to its end, then removes it from the hub.
pub(crate) async fn run<S>(
    hub: Hub,
    ns: Arc<NsInner>,
    conn: Arc<Conn>,
    mut rx: outbox::Receiver,
    ws: Box<WebSocketStream<coalesce::CoalescingIo<S>>>,
    ask: Option<Box<Ask>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let socket = Socket::new(hub.clone(), ns.clone(), conn.clone());
    hub.inner.counters.connections.fetch_add(1, Ordering::Relaxed);
    // The stream comes boxed, and the recovery request too: a task keeps room for its
    // arguments for as long as it lives, so they cost a pointer each rather than their size.
    let out = ws.get_ref().outgoing();
    let (mut sink, mut stream) = (*ws).split();

    // The connection is live (reachable by user, counted online) while its connect hook runs,
    // so the hook sees a consistent hub; presence is announced only once the hook accepts.
    let user = conn.identity.user_key();
    ns.registry.insert(&conn);
    if let Some(ask) = &ask {
        // Before the connect hook: it sees the restored rooms, and the client reads `$session`
        // (and its replay) before anything else.
        let resume = match &**ask {
            Ask::New => None,
            Ask::Resume(resume) => Some(resume),
        };
        Box::pin(hub.recover(&ns, &conn, resume, |news| {
            let data = news.to_json().to_string();
            vec![outbox::Frame::new(Message::Text(native::encode_event_raw(
                SESSION_EVENT,
                &data,
                None,
            )))]
        }))
        .await;
    }
    if let Err(reason) = Box::pin(hub.go_live(user, ns.gateway.on_connect(socket.clone()))).await {
        tracing::debug!(conn = %conn.id, %reason, "connection refused by the connect hook");
        // Refused: no session to keep (this lets go of the one recovery gave it).
        let refused = DisconnectReason::ServerClosed(close_code::POLICY_VIOLATION, reason.clone());
        hub.keep_session(&ns, &conn, &refused);
        let frame = close_frame(close_code::POLICY_VIOLATION, reason);
        let _ = Box::pin(tokio::time::timeout(
            CLOSE_GRACE,
            sink.send(Message::Close(Some(frame))),
        ))
        .await;
        ns.registry.remove(&conn);
        hub.inner.counters.connections.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    tracing::debug!(conn = %conn.id, user = ?conn.identity.user_id(), "connected");

    let cfg = &hub.inner.config;
    let mut last_seen = Instant::now();
    // Whether a ping went out since the peer was last heard from.
    let mut pinged = false;
    let check_every = cfg.ping_interval.min(cfg.ping_timeout).max(Duration::from_millis(10));
    let mut ping = tokio::time::interval_at(Instant::now() + check_every, check_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inflight: Option<futures_util::future::BoxFuture<'static, ()>> = None;
    let mut rate = RateState::new(ns.gateway.rate);
    // Frames read while a handler runs, handled after it, in order (at most `BACKLOG`; past
    // that, reading pauses).
    let mut backlog: VecDeque<Pending> = VecDeque::new();
    // A message taken from the queue but not yet accepted by the sink: a write cancelled by a
    // close keeps it here, so the drain before a `1001` or `4000` still delivers it.
    let mut unsent: Option<outbox::Frame> = None;
    // A write that makes no progress for this long means the peer reads nothing at all.
    let stall_limit = cfg.ping_interval + cfg.ping_timeout;

    // Most wake-ups are for the outbound queue: the read side and the ping timer are polled
    // only once they have woken (gates, see `outbox`). A close request nudges the queue's
    // reader.
    let wakes = rx.wakes();
    let end = loop {
        tokio::select! {
            biased;
            next = rx.next() => {
                let first = match next {
                    outbox::Next::Message(first) => first,
                    outbox::Next::Nudged => {
                        let Some((code, reason)) = conn.close_requested() else { continue };
                        if code == close_code::GOING_AWAY || code == close_code::DISCONNECTED_BY_SERVER {
                            // Deliver what is already queued before saying goodbye; a shutdown
                            // allows its whole deadline for it.
                            let grace = if hub.is_shutting_down() { cfg.shutdown_timeout } else { CLOSE_GRACE };
                            let _ = Box::pin(tokio::time::timeout(grace, drain(&mut sink, &out, &mut unsent, &mut rx, &hub))).await;
                        }
                        break End::Close(code, reason.to_owned());
                    }
                };
                // `unsent` is empty here: a batch is only cut short on the way to closing.
                unsent = Some(first);
                // Biased: a write that completes at once returns before the stall timer is
                // ever polled, so it is not registered with the timer wheel for every batch.
                let written = tokio::select! {
                    biased;
                    r = write_batch(&mut sink, &out, &mut unsent, &mut rx, &hub) => r.map(|()| true),
                    // Taken at the top of the loop, where the close is handled.
                    () = wakes.nudged() => Ok(true),
                    // While a write is blocked nothing is read and no ping goes out: a peer
                    // that accepts nothing for the whole ping window is dead all the same.
                    _ = tokio::time::sleep(stall_limit) => Ok(false),
                };
                match written {
                    Ok(true) => {}
                    Ok(false) => break End::Close(close_code::PING_TIMEOUT, "ping timeout".to_owned()),
                    Err(e) => break End::Gone(DisconnectReason::TransportError(e.to_string())),
                }
            }
            _ = async { inflight.as_mut().expect("guarded by the branch condition").await }, if inflight.is_some() => {
                inflight = None;
                // Frames that arrived while the handler ran, in order.
                while inflight.is_none() {
                    let Some(next) = backlog.pop_front() else { break };
                    inflight = match next {
                        Pending::Raw(msg) => ns.gateway.raw.as_ref().map(|raw| raw(socket.clone(), RawMessage(msg))),
                        Pending::Frame(text, frame) => dispatch(&socket, &text, frame, &mut rate),
                    };
                }
            }
            frame = std::future::poll_fn(|cx| wakes.poll_gated(outbox::READ, cx, |cx| stream.poll_next_unpin(cx))), if inflight.is_none() || backlog.len() < BACKLOG => {
                last_seen = Instant::now();
                pinged = false;
                match frame {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) if ns.gateway.raw.is_some() => {
                        hub.inner.counters.messages_in.fetch_add(1, Ordering::Relaxed);
                        if inflight.is_some() {
                            backlog.push_back(Pending::Raw(msg));
                        } else {
                            inflight = ns.gateway.raw.as_ref().map(|raw| raw(socket.clone(), RawMessage(msg)));
                        }
                    }
                    Some(Ok(Message::Text(text))) => {
                        hub.inner.counters.messages_in.fetch_add(1, Ordering::Relaxed);
                        let frame = native::decode(&text);
                        if let Ok(Inbound::Ack { ack, data }) = frame {
                            // Answers to the server's emits are taken at once, even while a
                            // handler runs: that handler may be the one waiting for them.
                            if !conn.resolve_ack(ack, data) {
                                tracing::debug!(conn = %conn.id, ack, "an ack nobody waits for (late, or unknown id)");
                            }
                        } else if inflight.is_some() {
                            backlog.push_back(Pending::Frame(text, frame));
                        } else {
                            inflight = dispatch(&socket, &text, frame, &mut rate);
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        hub.inner.counters.messages_in.fetch_add(1, Ordering::Relaxed);
                        socket.send_error(None, ErrorEvent::new("binary frames are not supported by the native protocol; send JSON text frames"));
                    }
                    Some(Ok(Message::Ping(_))) => {
                        // tungstenite queued the pong; write it now.
                        if let Err(e) = sink.flush().await {
                            break End::Gone(DisconnectReason::TransportError(e.to_string()));
                        }
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(frame))) => {
                        // tungstenite answers the close; read on until the stream ends.
                        let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, sink.flush())).await;
                        break End::Gone(DisconnectReason::ClientClosed(frame.map(|f| u16::from(f.code))));
                    }
                    Some(Err(e)) => break classify(e),
                    None => break End::Gone(DisconnectReason::TransportClosed),
                }
            }
            _ = std::future::poll_fn(|cx| wakes.poll_gated(outbox::PING, cx, |cx| ping.poll_tick(cx))) => {
                if last_seen.elapsed() >= cfg.ping_interval + cfg.ping_timeout {
                    break End::Close(close_code::PING_TIMEOUT, "ping timeout".to_owned());
                }
                if last_seen.elapsed() >= cfg.ping_interval && !pinged {
                    pinged = true;
                    let ping = tokio::time::timeout(cfg.ping_timeout, sink.send(Message::Ping(Default::default())));
                    match Box::pin(ping).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break End::Gone(DisconnectReason::TransportError(e.to_string())),
                        // The peer accepts nothing, not even a ping.
                        Err(_) => break End::Close(close_code::PING_TIMEOUT, "ping timeout".to_owned()),
                    }
                }
            }
        }
    };

    // The session is kept as the end found it, before the close handshake (which may wait on a
    // dead peer) and before the hook can change its rooms: a client that is already back can
    // resume it at once.
    let ending = match &end {
        End::Close(code, reason) => DisconnectReason::ServerClosed(*code, reason.clone()),
        End::Gone(reason) => reason.clone(),
    };
    hub.keep_session(&ns, &conn, &ending);
    let reason = match end {
        End::Close(code, reason) => {
            let frame = close_frame(code, reason.clone());
            // The ending steps are boxed: the task's size is that of its largest state, and
            // these run once.
            if Box::pin(tokio::time::timeout(
                CLOSE_GRACE,
                sink.send(Message::Close(Some(frame))),
            ))
            .await
            .is_ok()
            {
                // Wait (briefly) for the peer's close, so the close handshake completes.
                let rest = async { while let Some(Ok(_)) = stream.next().await {} };
                let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, rest)).await;
            }
            DisconnectReason::ServerClosed(code, reason)
        }
        End::Gone(reason) => reason,
    };
    // A handler still running when the connection ended is finished first: its replies are
    // dropped, but its side effects (joins, emits to others) are not cut in half.
    if let Some(fut) = inflight.take() {
        fut.await;
    }
    let code = match &reason {
        DisconnectReason::ServerClosed(code, _) => Some(*code),
        DisconnectReason::ClientClosed(code) => *code,
        _ => None,
    };
    tracing::debug!(conn = %conn.id, reason = ?reason, code = ?code, "disconnected");
    Box::pin(ns.gateway.on_disconnect(socket, reason)).await;
    // Server emits still waiting for an answer get `AckError::Disconnected`.
    conn.fail_acks();
    ns.registry.remove(&conn);
    Box::pin(hub.go_offline(user)).await;
    hub.inner.counters.connections.fetch_sub(1, Ordering::Relaxed);
}

fn close_frame(code: u16, reason: impl Into<Utf8Bytes>) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }
}

/// Maps a read error to how the connection ends.
fn classify(e: WsError) -> End {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            End::Close(close_code::MESSAGE_TOO_BIG, "message too big".into())
        }
        WsError::Capacity(_) => End::Close(close_code::MESSAGE_TOO_BIG, "frame too big".into()),
        WsError::Utf8(_) => End::Close(close_code::INVALID_PAYLOAD, "invalid UTF-8 in a text frame".into()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Gone(DisconnectReason::TransportClosed),
        WsError::Protocol(p) => End::Close(close_code::PROTOCOL_ERROR, format!("protocol error: {p}")),
        WsError::ConnectionClosed | WsError::AlreadyClosed => End::Gone(DisconnectReason::TransportClosed),
        other => End::Gone(DisconnectReason::TransportError(other.to_string())),
    }
}

/// Writes `unsent` (when set) and whatever else is queued, up to `write_batch` messages, then
/// flushes once.
///
/// Text and binary messages are framed straight into the connection's write buffer (`out`);
/// anything else goes through the sink, behind them. Cancel-safe: a message leaves `unsent`
/// or the queue only once it is in the buffer or taken by the sink, so a batch cut short by
/// a close loses nothing: what was taken is written by the next flush, and `unsent` goes
/// first in the next batch.
pub(crate) async fn write_batch<S>(
    sink: &mut S,
    out: &coalesce::Outgoing,
    unsent: &mut Option<outbox::Frame>,
    rx: &mut outbox::Receiver,
    hub: &Hub,
) -> Result<(), WsError>
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    let max = hub.inner.config.write_batch.max(1);
    let mut bytes = 0;
    let mut n = 0;
    while n < max {
        if unsent.is_none() {
            match rx.try_recv() {
                Ok(msg) => *unsent = Some(msg),
                Err(_) => break,
            }
        }
        let Some(msg) = unsent.take() else { break };
        bytes += msg.len();
        n += 1;
        match out.push(&msg) {
            // Past the threshold, the buffer goes out before it grows further.
            Some(buffered) if buffered >= coalesce::FLUSH_AT => sink.flush().await?,
            Some(_) => {}
            None => {
                *unsent = Some(msg);
                futures_util::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).await?;
                let msg = unsent.take().expect("set above");
                sink.start_send_unpin(Arc::unwrap_or_clone(msg))?;
            }
        }
    }
    sink.flush().await?;
    hub.inner.counters.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    Ok(())
}

/// Writes everything queued, in batches.
pub(crate) async fn drain<S>(
    sink: &mut S,
    out: &coalesce::Outgoing,
    unsent: &mut Option<outbox::Frame>,
    rx: &mut outbox::Receiver,
    hub: &Hub,
) -> Result<(), WsError>
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    while unsent.is_some() || !rx.is_empty() {
        write_batch(sink, out, unsent, rx, hub).await?;
    }
    Ok(())
}

/// Decodes one text frame and returns the handler future to run, if any. Errors are answered
/// right away with an `error` event.
fn dispatch(
    socket: &Socket,
    text: &str,
    frame: Result<Inbound, native::DecodeError>,
    rate: &mut RateState,
) -> Option<futures_util::future::BoxFuture<'static, ()>> {
    let (event, data, id) = match frame {
        Ok(Inbound::Event { event, data, id }) => (event, data, id),
        Ok(Inbound::Ack { ack, data }) => {
            if !socket.conn().resolve_ack(ack, data) {
                tracing::debug!(conn = %socket.id(), ack, "an ack nobody waits for (late, or unknown id)");
            }
            return None;
        }
        Err(e) => {
            socket.send_error(native::DecodeError::ack_hint(text), ErrorEvent::new(e.to_string()));
            return None;
        }
    };
    let incoming = Incoming {
        event,
        data,
        many: false,
        attachments: Vec::new(),
        id,
    };
    let call = match socket.ns().gateway.route(socket, incoming, rate) {
        Ok(call) => call,
        Err(Refused::Error(ack, error)) => {
            socket.send_error(ack, error);
            return None;
        }
        Err(Refused::Flood(ack, error)) => {
            socket.send_error(ack, error);
            socket
                .conn()
                .request_close(close_code::POLICY_VIOLATION, "rate limit exceeded");
            return None;
        }
    };
    Some(Box::pin(call.run(socket.clone())))
}
