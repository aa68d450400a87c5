//! The WebSocket wire, for the native protocol and for Socket.IO's WebSocket transport alike:
//! batched writes framed straight into the write buffer, tungstenite's reading side, pings,
//! the pong to a peer's ping, and one close sequence. A protocol supplies only its framing
//! ([`Framing`]): what a text or binary message is to it.

use std::{
    marker::PhantomData,
    sync::{atomic::Ordering, Arc},
    task::{ready, Context, Poll},
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

use super::{
    coalesce::{self, CoalescingIo},
    lifecycle::{End, Read, Wire, CLOSE_GRACE},
};
use crate::{
    hub::{DisconnectReason, Hub},
    outbox,
    protocol::close_code,
};

/// What a protocol makes of a WebSocket's text and binary messages.
pub(crate) trait Framing: Send + 'static {
    /// Its inbound unit.
    type In: Send;

    /// One text or binary message, as a unit; an error ends the connection.
    fn decode(msg: Message) -> Result<Self::In, End>;
}

/// A WebSocket carrying a protocol framed by `F`.
pub(crate) struct WsWire<S: AsyncRead + AsyncWrite + Unpin, F> {
    /// Boxed: a task keeps room for what it was handed for as long as it lives.
    ws: Box<WebSocketStream<CoalescingIo<S>>>,
    out: coalesce::Outgoing,
    framing: PhantomData<fn() -> F>,
}

impl<S, F> WsWire<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    pub(crate) fn new(ws: Box<WebSocketStream<CoalescingIo<S>>>) -> Self {
        let out = ws.get_ref().outgoing();
        Self {
            ws,
            out,
            framing: PhantomData,
        }
    }

    /// Sends one message now (a handshake's answer, written before the loop starts).
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    pub(crate) async fn send(&mut self, msg: Message) -> Result<(), WsError> {
        self.ws.send(msg).await
    }

    /// Writes `unsent` (when set) and whatever else is queued, up to `write_batch` messages,
    /// then flushes once.
    ///
    /// Text and binary messages are framed straight into the connection's write buffer
    /// (`out`); anything else goes through the sink, behind them. Cancel-safe: a message
    /// leaves `unsent` or the queue only once it is in the buffer or taken by the sink, so a
    /// batch cut short by a close loses nothing: what was taken is written by the next flush,
    /// and `unsent` goes first in the next batch.
    async fn write_batch(
        &mut self,
        unsent: &mut Option<outbox::Frame>,
        rx: &mut outbox::Receiver,
        hub: &Hub,
    ) -> Result<(), WsError> {
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
            match self.out.push(&msg) {
                // Past the threshold, the buffer goes out before it grows further.
                Some(buffered) if buffered >= coalesce::FLUSH_AT => self.ws.flush().await?,
                Some(_) => {}
                None => {
                    *unsent = Some(msg);
                    futures_util::future::poll_fn(|cx| self.ws.poll_ready_unpin(cx)).await?;
                    let msg = unsent.take().expect("set above");
                    self.ws.start_send_unpin(Arc::unwrap_or_clone(msg))?;
                }
            }
        }
        self.ws.flush().await?;
        hub.inner.counters.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Writes everything queued, in batches.
    async fn drain(
        &mut self,
        unsent: &mut Option<outbox::Frame>,
        rx: &mut outbox::Receiver,
        hub: &Hub,
    ) -> Result<(), WsError> {
        while unsent.is_some() || !rx.is_empty() {
            self.write_batch(unsent, rx, hub).await?;
        }
        Ok(())
    }

    /// The next text or binary message, for an exchange before the loop starts (Engine.IO's
    /// upgrade probe); `None` when the stream ends or fails.
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    pub(crate) async fn next_message(&mut self) -> Option<Message> {
        loop {
            match self.ws.next().await? {
                Ok(msg @ (Message::Text(_) | Message::Binary(_))) => return Some(msg),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

impl<S, F> Wire for WsWire<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Framing,
{
    type In = F::In;

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Read<F::In>, End>> {
        Poll::Ready(match ready!(self.ws.poll_next_unpin(cx)) {
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => F::decode(msg).map(Read::Unit),
            // tungstenite queued the pong; the loop has it written.
            Some(Ok(Message::Ping(_))) => Ok(Read::Pinged),
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => Ok(Read::Alive),
            Some(Ok(Message::Close(frame))) => Err(End::Gone(DisconnectReason::ClientClosed(
                frame.map(|f| u16::from(f.code)),
            ))),
            Some(Err(e)) => Err(classify(e)),
            None => Err(End::Gone(DisconnectReason::TransportClosed)),
        })
    }

    fn poll_writable(&mut self, _: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }

    async fn write(
        &mut self,
        unsent: &mut Option<outbox::Frame>,
        rx: &mut outbox::Receiver,
        hub: &Hub,
    ) -> Result<(), End> {
        self.write_batch(unsent, rx, hub).await.map_err(gone)
    }

    async fn flush(&mut self) -> Result<(), End> {
        self.ws.flush().await.map_err(gone)
    }

    async fn ping(&mut self) -> Result<(), End> {
        self.ws.send(Message::Ping(Default::default())).await.map_err(gone)
    }

    async fn close(mut self, hub: &Hub, end: &End, mut rx: outbox::Receiver, drain: Option<Duration>) {
        match end {
            End::Close(code, reason) => {
                if let Some(grace) = drain {
                    let mut unsent = None;
                    let _ = tokio::time::timeout(grace, self.drain(&mut unsent, &mut rx, hub)).await;
                }
                close_websocket(&mut self.ws, Some(close_frame(*code, reason.clone()))).await;
            }
            // tungstenite answered the peer's close; that answer goes out, then the socket.
            End::Gone(DisconnectReason::ClientClosed(_)) => {
                let _ = tokio::time::timeout(CLOSE_GRACE, self.ws.flush()).await;
            }
            End::Gone(_) => {}
        }
    }
}

fn gone(e: WsError) -> End {
    End::Gone(DisconnectReason::TransportError(e.to_string()))
}

/// Closes a WebSocket from the server's side, the same way on every transport: the close
/// frame, then no more writing (the write side is shut: the peer sees the end of the stream
/// right after the frame), then the input is read and thrown away until the peer's close, the
/// end of its stream, or [`CLOSE_GRACE`]. A socket dropped with unread input is reset by the
/// kernel, and a peer still writing (a message over the size limit, say) would get that reset
/// instead of the close code. A peer that reads nothing cannot hold it longer than the grace.
pub(crate) async fn close_websocket<S>(ws: &mut WebSocketStream<CoalescingIo<S>>, frame: Option<CloseFrame>)
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
