//! The per-connection task: reads frames and hands them to the gateway, drains the outbound
//! queue in batches (one flush per batch), pings, and enforces the limits and close codes.

pub(crate) mod admission;
pub(crate) mod coalesce;
pub(crate) mod handshake;

use std::{
    collections::VecDeque,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite},
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
    gateway::{ErrorEvent, Incoming, RateState, RawMessage, Refused, Socket},
    hub::{
        history::{Ask, SessionNews},
        Conn, DisconnectReason, Hub, NsInner,
    },
    outbox,
    protocol::{
        close_code,
        native::{self, Inbound},
    },
};

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
pub(crate) enum End {
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
    // The stream comes boxed, and the recovery request too: a task keeps room for its
    // arguments for as long as it lives, so they cost a pointer each rather than their size.
    let out = ws.get_ref().outgoing();
    let (mut sink, mut stream) = (*ws).split();

    // A client that takes part in recovery reads `$session` (and its replay) first.
    let hello = |news: Option<&SessionNews<'_>>| {
        let news = news.map(|news| news.to_json().to_string());
        (news.iter())
            .map(|data| outbox::Frame::new(Message::Text(native::encode_event_raw(SESSION_EVENT, data, None))))
            .collect()
    };
    if let Err(refused) = Box::pin(admission::enter(&socket, ask.as_deref(), hello)).await {
        let frame = close_frame(close_code::POLICY_VIOLATION, refused.refusal.message().into_owned());
        if let Ok(mut ws) = sink.reunite(stream) {
            Box::pin(close_websocket(&mut ws, Some(frame))).await;
        }
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
    let mut rate = RateState::new(ns.gateway().rate);
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
                        Pending::Raw(msg) => ns.gateway().raw.as_ref().map(|raw| raw(socket.clone(), RawMessage(msg))),
                        Pending::Frame(text, frame) => dispatch(&socket, &text, frame, &mut rate),
                    };
                }
            }
            frame = std::future::poll_fn(|cx| wakes.poll_gated(outbox::READ, cx, |cx| stream.poll_next_unpin(cx))), if inflight.is_none() || backlog.len() < BACKLOG => {
                last_seen = Instant::now();
                pinged = false;
                match frame {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) if ns.gateway().raw.is_some() => {
                        hub.inner.counters.messages_in.fetch_add(1, Ordering::Relaxed);
                        if inflight.is_some() {
                            backlog.push_back(Pending::Raw(msg));
                        } else {
                            inflight = ns.gateway().raw.as_ref().map(|raw| raw(socket.clone(), RawMessage(msg)));
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
                        // tungstenite queued the pong; write it now, within the stall limit.
                        // Boxed: rare, and a timer inline would grow every connection's task.
                        match Box::pin(tokio::time::timeout(stall_limit, sink.flush())).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => break End::Gone(DisconnectReason::TransportError(e.to_string())),
                            Err(_) => break End::Close(close_code::PING_TIMEOUT, "ping timeout".to_owned()),
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
            // The ending steps are boxed: the task's size is that of its largest state, and
            // these run once.
            if let Ok(mut ws) = sink.reunite(stream) {
                Box::pin(close_websocket(&mut ws, Some(close_frame(code, reason.clone())))).await;
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
    admission::retire(socket, reason).await;
}

/// Closes a WebSocket from the server's side, the same way on every transport: the close
/// frame, then no more writing (the write side is shut: the peer sees the end of the stream
/// right after the frame), then the input is read and thrown away until the peer's close, the
/// end of its stream, or [`CLOSE_GRACE`]. A socket dropped with unread input is reset by the
/// kernel, and a peer still writing (a message over the size limit, say) would get that reset
/// instead of the close code. A peer that reads nothing cannot hold it longer than the grace.
pub(crate) async fn close_websocket<S>(ws: &mut WebSocketStream<coalesce::CoalescingIo<S>>, frame: Option<CloseFrame>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + CLOSE_GRACE;
    match tokio::time::timeout_at(deadline, ws.send(Message::Close(frame))).await {
        Ok(Ok(())) => {}
        // Closed already (the peer's close crossed ours), failed, or not read at all.
        _ => return,
    }
    let _ = tokio::time::timeout_at(deadline, ws.get_mut().shutdown()).await;
    let rest = async {
        // Frames while the stream still parses them; raw bytes once it cannot (the rest of a
        // frame it refused, say).
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
                // The stream refused a frame (and reads no further), or ended: what is left,
                // if anything, is read raw until the peer's end of stream.
                Some(Err(_)) | None => break,
            }
        }
        let mut scrap = [0u8; 4096];
        while let Ok(1..) = ws.get_mut().read(&mut scrap).await {}
    };
    let _ = tokio::time::timeout_at(deadline, rest).await;
}

pub(crate) fn close_frame(code: u16, reason: impl Into<Utf8Bytes>) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }
}

/// Maps a read error to how the connection ends.
pub(crate) fn classify(e: WsError) -> End {
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
    let call = match socket.ns().gateway().route(socket, incoming, rate) {
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
