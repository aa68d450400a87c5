//! The WebSocket wire, for the native protocol and for Socket.IO's WebSocket transport alike:
//! the stream ([`WsStream`]: our own frame reader on the read side, frames written straight
//! into the write buffer on the other), batched writes, pings, the pong to a peer's ping, and
//! one close sequence. A protocol supplies only its framing ([`Framing`]): what a text or
//! binary message is to it.

use std::{
    cell::RefCell,
    io,
    marker::PhantomData,
    pin::Pin,
    sync::atomic::Ordering,
    task::{ready, Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    time::Instant,
};
use tokio_tungstenite::tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message, Utf8Bytes,
};

use super::{
    coalesce::{self, CoalescingIo},
    deflate::Agreed,
    lifecycle::{End, Read, Wire, CLOSE_GRACE},
    reader::{Event, FrameReader, ReadError},
};
use crate::{
    hub::{DisconnectReason, Hub},
    outbox,
    protocol::close_code,
};

thread_local! {
    /// The buffer every connection on a thread reads into: bytes left over after an event are
    /// copied out (into the connection's own spill), so a connection holds nothing between
    /// reads.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Why a WebSocket stream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WsError {
    /// The peer broke the protocol.
    #[error("{0:?}")]
    Read(ReadError),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The close handshake is over: nothing more is sent.
    #[error("the WebSocket is closed")]
    Closed,
}

/// The server side of an upgraded WebSocket connection.
///
/// Reading: the bytes of one `read(2)` at a time, into the thread's shared buffer, through the
/// connection's [`FrameReader`]; bytes past an event are kept (`spill`) until the next poll
/// and freed once taken. A ping is answered (the pong waits in the write buffer for the next
/// flush), and a close frame too, with its code. Writing: every frame, data or control, is
/// framed into the [`CoalescingIo`]'s buffer and leaves on a flush.
pub(crate) struct WsStream<S: AsyncWrite + Unpin> {
    io: CoalescingIo<S>,
    out: coalesce::Outgoing,
    reader: FrameReader,
    /// Bytes read but not yet given to the reader, and how many of them it took.
    spill: Box<[u8]>,
    spill_at: u32,
    /// How much one read asks for.
    read_chunk: u32,
    /// Our close frame is in the write buffer or gone: nothing more is written.
    close_sent: bool,
    /// The peer's close frame was read, or the stream ended or failed: nothing more is read.
    read_done: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// A stream over an upgraded connection: messages of up to `max_message` bytes, reads of
    /// up to `read_chunk` bytes, permessage-deflate when `deflate` was agreed.
    pub(crate) fn new(io: S, max_message: usize, read_chunk: usize, deflate: Option<Agreed>) -> Self {
        let io = CoalescingIo::new(io);
        let out = io.outgoing();
        Self {
            io,
            out,
            reader: FrameReader::new(max_message, deflate),
            spill: Box::default(),
            spill_at: 0,
            read_chunk: u32::try_from(read_chunk.max(64)).unwrap_or(u32::MAX),
            close_sent: false,
            read_done: false,
        }
    }

    /// The next message or control frame; `None` once the stream ended (the peer's close
    /// frame was the last thing read, or the socket ended).
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, WsError>>> {
        loop {
            if self.read_done {
                return Poll::Ready(None);
            }
            if (self.spill_at as usize) < self.spill.len() {
                let (n, event) = self.reader.advance(&self.spill[self.spill_at as usize..]);
                // At most the spill's length, which is at most one read (`read_chunk`).
                self.spill_at += n as u32;
                if self.spill_at as usize == self.spill.len() {
                    (self.spill, self.spill_at) = (Box::default(), 0);
                }
                if let Some(event) = event {
                    return Poll::Ready(Some(self.event(event)));
                }
                continue;
            }
            let Self {
                io,
                reader,
                spill,
                read_chunk,
                ..
            } = self;
            let read = READ_BUF.with_borrow_mut(|buf| {
                let read_chunk = *read_chunk as usize;
                if buf.len() < read_chunk {
                    buf.resize(read_chunk, 0);
                }
                let mut rb = ReadBuf::new(&mut buf[..read_chunk]);
                ready!(Pin::new(&mut *io).poll_read(cx, &mut rb))?;
                let filled = rb.filled();
                if filled.is_empty() {
                    return Poll::Ready(Ok(None));
                }
                let (n, event) = reader.advance(filled);
                if n < filled.len() {
                    *spill = filled[n..].into();
                }
                Poll::Ready(Ok(Some(event)))
            });
            match ready!(read) {
                Ok(Some(Some(event))) => return Poll::Ready(Some(self.event(event))),
                Ok(Some(None)) => {}
                Ok(None) => {
                    self.read_done = true;
                    return Poll::Ready(None);
                }
                Err(e) => {
                    self.read_done = true;
                    return Poll::Ready(Some(Err(WsError::Io(e))));
                }
            }
        }
    }

    /// What an event is to the connection; a ping or a close is answered on the way.
    fn event(&mut self, event: Result<Event, ReadError>) -> Result<Message, WsError> {
        match event {
            Ok(Event::Text(text)) => Ok(Message::Text(text)),
            Ok(Event::Binary(bytes)) => Ok(Message::Binary(bytes)),
            Ok(Event::Ping(payload)) => {
                if !self.close_sent {
                    self.out.push(&Message::Pong(payload.clone()));
                }
                Ok(Message::Ping(payload))
            }
            Ok(Event::Pong(payload)) => Ok(Message::Pong(payload)),
            Ok(Event::Close(frame)) => {
                self.read_done = true;
                let frame = frame.map(|(code, reason)| close_frame(code, reason));
                if !self.close_sent {
                    // The answer echoes the code, with no reason.
                    self.close_sent = true;
                    let answer = frame.as_ref().map(|f| close_frame(u16::from(f.code), ""));
                    self.out.push(&Message::Close(answer));
                }
                Ok(Message::Close(frame))
            }
            Err(e) => {
                self.read_done = true;
                Err(WsError::Read(e))
            }
        }
    }

    /// The next message or control frame.
    pub(crate) async fn next(&mut self) -> Option<Result<Message, WsError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// What permessage-deflate agreed, if it did.
    pub(crate) fn deflate(&self) -> Option<&Agreed> {
        self.reader.deflate()
    }

    /// Frames `msg` into the write buffer (a close frame ends the writing) and flushes.
    pub(crate) async fn send(&mut self, msg: Message) -> Result<(), WsError> {
        if self.close_sent {
            return Err(WsError::Closed);
        }
        self.close_sent = matches!(msg, Message::Close(_));
        self.out.push_message(&msg, self.reader.deflate());
        self.flush().await
    }

    /// Writes out what the write buffer holds.
    pub(crate) async fn flush(&mut self) -> Result<(), WsError> {
        Ok(self.io.flush().await?)
    }

    /// Writes out what the write buffer holds, polled.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Shuts the write side (after the write buffer).
    async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }

    /// Reads and throws away what the peer still sends, until the end of its stream.
    async fn discard(&mut self) {
        use tokio::io::AsyncReadExt;
        (self.spill, self.spill_at) = (Box::default(), 0);
        let mut scrap = [0u8; 4096];
        while let Ok(1..) = self.io.read(&mut scrap).await {}
    }
}

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
    ws: Box<WsStream<S>>,
    /// The batch being written, if one is.
    batch: Batch,
    framing: PhantomData<fn() -> F>,
}

/// Where a batch write stands.
#[derive(Debug, Default)]
struct Batch {
    /// Messages and bytes taken into the write buffer.
    count: u32,
    bytes: usize,
    /// A flush is under way; `last`: it ends the batch.
    flushing: bool,
    last: bool,
}

impl<S, F> WsWire<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    pub(crate) fn new(ws: Box<WsStream<S>>) -> Self {
        Self {
            ws,
            batch: Batch::default(),
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
    /// Messages are framed straight into the connection's write buffer (`out`). Cancel-safe:
    /// a message leaves `unsent` or the queue only once it is in the buffer, so a batch cut
    /// short by a close loses nothing: what was taken is written by the next flush, and
    /// `unsent` goes first in the next batch. Polled, not an `async fn`: its state is the few
    /// words of [`Batch`], not a future kept inline in every connection's task.
    fn poll_write_batch(
        &mut self,
        cx: &mut Context<'_>,
        unsent: &mut Option<outbox::Frame>,
        rx: &mut outbox::Receiver,
        hub: &Hub,
    ) -> Poll<Result<(), WsError>> {
        let max = u32::try_from(hub.inner.config.write_batch.max(1)).unwrap_or(u32::MAX);
        loop {
            if self.batch.flushing {
                if let Err(e) = ready!(self.ws.poll_flush(cx)) {
                    self.batch = Batch::default();
                    return Poll::Ready(Err(e.into()));
                }
                self.batch.flushing = false;
                if self.batch.last {
                    let bytes = std::mem::take(&mut self.batch).bytes;
                    hub.inner.counters.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
                    return Poll::Ready(Ok(()));
                }
            }
            // Fills the buffer until the batch is whole, or until it is past the threshold (then
            // it goes out before it grows further).
            loop {
                if self.batch.count >= max {
                    (self.batch.flushing, self.batch.last) = (true, true);
                    break;
                }
                let msg = match unsent.take() {
                    Some(msg) => msg,
                    None => match rx.try_recv() {
                        Ok(msg) => msg,
                        Err(()) => {
                            (self.batch.flushing, self.batch.last) = (true, true);
                            break;
                        }
                    },
                };
                self.batch.bytes += msg.len();
                self.batch.count += 1;
                let buffered = match self.ws.deflate() {
                    Some(agreed) => self.ws.out.push_frame(&msg, agreed, &hub.inner.counters),
                    None => self.ws.out.push(&msg),
                };
                if buffered >= coalesce::FLUSH_AT {
                    self.batch.flushing = true;
                    break;
                }
            }
        }
    }

    /// Writes everything queued, in batches.
    async fn drain(
        &mut self,
        unsent: &mut Option<outbox::Frame>,
        rx: &mut outbox::Receiver,
        hub: &Hub,
    ) -> Result<(), WsError> {
        while unsent.is_some() || !rx.is_empty() {
            std::future::poll_fn(|cx| self.poll_write_batch(cx, unsent, rx, hub)).await?;
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
        Poll::Ready(match ready!(self.ws.poll_next(cx)) {
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => F::decode(msg).map(Read::Unit),
            // The stream queued the pong; the loop has it written.
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

    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        unsent: &mut Option<outbox::Frame>,
        rx: &mut outbox::Receiver,
        hub: &Hub,
    ) -> Poll<Result<(), End>> {
        self.poll_write_batch(cx, unsent, rx, hub).map_err(gone)
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
            // The stream answered the peer's close; that answer goes out, then the socket.
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
pub(crate) async fn close_websocket<S>(ws: &mut WsStream<S>, frame: Option<CloseFrame>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + CLOSE_GRACE;
    match tokio::time::timeout_at(deadline, ws.send(Message::Close(frame))).await {
        Ok(Ok(())) => {}
        // Closed already (the peer's close crossed ours), failed, or not read at all.
        _ => return,
    }
    let _ = tokio::time::timeout_at(deadline, ws.shutdown()).await;
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
        ws.discard().await;
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
        WsError::Read(ReadError::TooBig) => End::Close(close_code::MESSAGE_TOO_BIG, "message too big".into()),
        WsError::Read(ReadError::Utf8) => {
            End::Close(close_code::INVALID_PAYLOAD, "invalid UTF-8 in a text frame".into())
        }
        WsError::Read(ReadError::Protocol(why)) => {
            End::Close(close_code::PROTOCOL_ERROR, format!("protocol error: {why}"))
        }
        WsError::Closed => End::Gone(DisconnectReason::TransportClosed),
        WsError::Io(e) => End::Gone(DisconnectReason::TransportError(e.to_string())),
    }
}
