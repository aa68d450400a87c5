//! The write buffer of a WebSocket connection, and the frames written into it.
//!
//! [`CoalescingIo`] sits between the connection and its socket: writes are appended to a
//! buffer and leave on a flush, so a batch goes out in one system call. After a flush the
//! buffer is freed, so an idle connection holds no write buffer, even one that once received
//! a burst.
//!
//! Every frame the server sends, messages and control frames alike, is framed straight into
//! that buffer ([`Outgoing::push`]): one copy of the payload and a header of 2 to 10 bytes.
//! Frames only ever enter it whole, under its lock, so the writer's batch, a pong and a close
//! frame never interleave.

use std::{
    io,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message;

use super::deflate::{self, Agreed};
use crate::{hub::Counters, outbox::Frame};

/// Past this many buffered bytes, a write first writes the buffer out.
pub(crate) const FLUSH_AT: usize = 64 * 1024;

/// Bytes waiting for a flush, and how much of them is already written out.
#[derive(Debug, Default)]
struct Buf {
    data: Vec<u8>,
    written: usize,
}

impl Buf {
    fn pending(&self) -> usize {
        self.data.len() - self.written
    }
}

/// The writer's way into a connection's write buffer.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing(Arc<Mutex<Buf>>);

impl Outgoing {
    /// Frames a message into the buffer, compressed when `deflate` is agreed and the message
    /// is long enough (and compressing makes it smaller), and returns how many bytes now wait
    /// for a flush.
    pub(crate) fn push_message(&self, msg: &Message, deflate: Option<&Agreed>) -> usize {
        let payload: &[u8] = match (deflate, msg) {
            (Some(_), Message::Text(t)) => t.as_bytes(),
            (Some(_), Message::Binary(b)) => b,
            _ => return self.push(msg),
        };
        let agreed = deflate.expect("matched above");
        if payload.len() < agreed.threshold.max(1) {
            return self.push(msg);
        }
        // Compressed before the lock is taken.
        match deflate::compress(payload, agreed) {
            Some(packed) => self.push_raw(0x40 | if msg.is_text() { 0x1 } else { 0x2 }, &packed, &[]),
            None => self.push(msg),
        }
    }

    /// Frames a queued message into the buffer as [`push_message`](Self::push_message) does,
    /// compressed once per setting for all its recipients: the first writer with `agreed`'s
    /// setting compresses it and keeps the bytes on the frame, the others write those.
    pub(crate) fn push_frame(&self, frame: &Frame, agreed: &Agreed, counters: &Counters) -> usize {
        let (opcode, payload): (u8, &[u8]) = match &**frame {
            Message::Text(t) => (0x1, t.as_bytes()),
            Message::Binary(b) => (0x2, b),
            _ => return self.push(frame),
        };
        if payload.len() < agreed.threshold.max(1) {
            return self.push(frame);
        }
        let (packed, fresh) = frame.deflated(agreed.key(), || deflate::compress(payload, agreed).map(Bytes::from));
        if fresh {
            counters.deflate_compressions.fetch_add(1, Ordering::Relaxed);
        }
        match packed {
            Some(packed) => {
                counters
                    .deflate_bytes_in
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                counters
                    .deflate_bytes_out
                    .fetch_add(packed.len() as u64, Ordering::Relaxed);
                self.push_raw(0x40 | opcode, &packed, &[])
            }
            None => self.push(frame),
        }
    }

    /// Frames a message into the buffer (a server's frames are not masked) and returns how
    /// many bytes now wait for a flush.
    pub(crate) fn push(&self, msg: &Message) -> usize {
        let close: [u8; 2];
        let (opcode, payload, reason): (u8, &[u8], &[u8]) = match msg {
            Message::Text(t) => (0x1, t.as_bytes(), &[]),
            Message::Binary(b) => (0x2, b, &[]),
            Message::Ping(p) => (0x9, p, &[]),
            Message::Pong(p) => (0xA, p, &[]),
            Message::Close(None) => (0x8, &[], &[]),
            Message::Close(Some(frame)) => {
                close = u16::from(frame.code).to_be_bytes();
                // A control frame carries at most 125 bytes: a longer reason is cut (at a
                // character boundary).
                let mut end = frame.reason.len().min(123);
                while !frame.reason.is_char_boundary(end) {
                    end -= 1;
                }
                (0x8, &close, frame.reason.as_bytes()[..end].as_ref())
            }
            // Never made by the crate: a raw frame is written as it is.
            Message::Frame(f) => {
                let mut buf = self.0.lock();
                f.clone().format(&mut buf.data).ok();
                return buf.pending();
            }
        };
        self.push_raw(opcode, payload, reason)
    }

    /// Frames a payload (in two parts, one after the other) with this opcode and these
    /// reserved bits (FIN always set, no mask).
    fn push_raw(&self, opcode: u8, payload: &[u8], reason: &[u8]) -> usize {
        let len = payload.len() + reason.len();
        let mut buf = self.0.lock();
        let data = &mut buf.data;
        data.reserve(len + 10);
        data.push(0x80 | opcode);
        if len < 126 {
            data.push(len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            data.push(126);
            data.extend_from_slice(&short.to_be_bytes());
        } else {
            data.push(127);
            data.extend_from_slice(&(len as u64).to_be_bytes());
        }
        data.extend_from_slice(payload);
        data.extend_from_slice(reason);
        buf.pending()
    }

    /// Bytes waiting for a flush.
    fn buffered(&self) -> usize {
        self.0.lock().pending()
    }
}

/// An `AsyncRead + AsyncWrite` that holds writes until a flush (or until [`FLUSH_AT`] bytes
/// are buffered), and releases its buffer once it is written out.
///
/// Reads pass straight through. Writes are accepted whole into the buffer; `poll_flush` and
/// `poll_shutdown` first write the buffer out, then flush or shut down the inner stream. A
/// write larger than [`FLUSH_AT`] that finds the buffer empty goes straight to the inner
/// stream, uncopied. On drop, what is still buffered gets one non-blocking write.
#[derive(Debug)]
pub(crate) struct CoalescingIo<T: AsyncWrite + Unpin> {
    io: T,
    buf: Outgoing,
}

impl<T: AsyncWrite + Unpin> CoalescingIo<T> {
    pub(crate) fn new(io: T) -> Self {
        Self {
            io,
            buf: Outgoing(Arc::default()),
        }
    }

    /// A handle on the buffer, for framing messages into it directly.
    pub(crate) fn outgoing(&self) -> Outgoing {
        self.buf.clone()
    }

    /// Bytes accepted but not yet written to the inner stream.
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.buf.buffered()
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.0.lock().data.capacity()
    }
}

impl<T: AsyncWrite + Unpin> CoalescingIo<T> {
    /// Writes the buffer out, then frees it.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut buf = self.buf.0.lock();
        while buf.written < buf.data.len() {
            let Buf { data, written } = &mut *buf;
            match ready!(Pin::new(&mut self.io).poll_write(cx, &data[*written..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => *written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // Not `clear()`: the capacity is what an idle connection would keep.
        *buf = Buf::default();
        Poll::Ready(Ok(()))
    }
}

/// What is still buffered goes out, if the stream takes it right away.
///
/// A connection that ends without a flush (a task cancelled, say) may leave its last frames
/// here. One non-blocking attempt is what writing them straight to the socket would have
/// made: a peer that reads nothing loses them either way.
impl<T: AsyncWrite + Unpin> Drop for CoalescingIo<T> {
    fn drop(&mut self) {
        if self.buf.buffered() > 0 {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = self.poll_write_out(&mut cx);
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for CoalescingIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescingIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut buf = this.buf.0.lock();
        if buf.data.len() >= FLUSH_AT {
            drop(buf);
            ready!(this.poll_write_out(cx))?;
            buf = this.buf.0.lock();
        }
        if buf.data.is_empty() && data.len() >= FLUSH_AT {
            drop(buf);
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        buf.data.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        time::Duration,
    };

    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// A stream that counts the writes reaching it.
    struct Counting {
        inner: DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counting {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let r = Pin::new(&mut this.inner).poll_write(cx, data);
            if matches!(r, Poll::Ready(Ok(_))) {
                this.writes.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }

    fn pair(capacity: usize) -> (CoalescingIo<Counting>, DuplexStream, Arc<AtomicUsize>) {
        let (a, b) = duplex(capacity);
        let writes = Arc::new(AtomicUsize::new(0));
        (
            CoalescingIo::new(Counting {
                inner: a,
                writes: writes.clone(),
            }),
            b,
            writes,
        )
    }

    /// Whatever the peer can read right now.
    async fn available(peer: &mut DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), peer.read(&mut chunk)).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        out
    }

    #[tokio::test]
    async fn writes_wait_for_flush_then_leave_in_one_write() {
        let (mut io, mut peer, writes) = pair(1 << 20);
        for i in 0..100u8 {
            io.write_all(&[i; 10]).await.unwrap();
        }
        assert_eq!(io.buffered(), 1000);
        assert!(
            available(&mut peer).await.is_empty(),
            "nothing written before the flush"
        );
        assert_eq!(writes.load(Ordering::Relaxed), 0);

        io.flush().await.unwrap();
        assert_eq!(writes.load(Ordering::Relaxed), 1);
        let got = available(&mut peer).await;
        let want: Vec<u8> = (0..100u8).flat_map(|i| [i; 10]).collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn buffer_is_released_after_flush() {
        let (mut io, mut peer, _) = pair(1 << 20);
        io.write_all(&[7; 30_000]).await.unwrap();
        assert!(io.capacity() >= 30_000);
        io.flush().await.unwrap();
        assert_eq!(io.capacity(), 0);
        assert_eq!(io.buffered(), 0);
        assert_eq!(available(&mut peer).await.len(), 30_000);
    }

    #[tokio::test]
    async fn past_the_threshold_writes_go_out_without_a_flush() {
        let (mut io, mut peer, writes) = pair(1 << 20);
        let chunk = vec![1u8; 1000];
        let n = FLUSH_AT / chunk.len() + 10;
        for _ in 0..n {
            io.write_all(&chunk).await.unwrap();
        }
        // The buffer was written out once on reaching the threshold, with no flush.
        assert_eq!(writes.load(Ordering::Relaxed), 1);
        assert!(io.buffered() < FLUSH_AT);
        let early = available(&mut peer).await.len();
        assert!(early >= FLUSH_AT, "{early}");
        io.flush().await.unwrap();
        assert_eq!(early + available(&mut peer).await.len(), n * chunk.len());
    }

    #[tokio::test]
    async fn a_large_write_on_an_empty_buffer_is_not_copied() {
        let (mut io, mut peer, writes) = pair(1 << 20);
        let big = vec![3u8; FLUSH_AT * 2];
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; FLUSH_AT * 2];
            peer.read_exact(&mut got).await.unwrap();
            got
        });
        io.write_all(&big).await.unwrap();
        assert_eq!(io.buffered(), 0);
        assert_eq!(io.capacity(), 0);
        assert!(writes.load(Ordering::Relaxed) >= 1);
        assert_eq!(reader.await.unwrap(), big);
    }

    #[tokio::test]
    async fn flush_waits_for_a_slow_peer() {
        // The pipe holds 1 KiB: the flush can only finish as the peer reads.
        let (mut io, mut peer, _) = pair(1024);
        io.write_all(&[9; 20_000]).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 20_000];
            peer.read_exact(&mut got).await.unwrap();
            got
        });
        io.flush().await.unwrap();
        assert_eq!(io.buffered(), 0);
        assert_eq!(reader.await.unwrap(), vec![9; 20_000]);
    }

    #[tokio::test]
    async fn shutdown_writes_the_buffer_first() {
        let (mut io, mut peer, _) = pair(1 << 20);
        io.write_all(b"last words").await.unwrap();
        io.shutdown().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
    }

    #[tokio::test]
    async fn drop_writes_what_is_left() {
        let (mut io, mut peer, _) = pair(1 << 20);
        io.write_all(b"close frame").await.unwrap();
        drop(io);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"close frame");
    }

    #[tokio::test]
    async fn frames_pushed_directly_read_back_as_messages() {
        use bytes::Bytes;
        use futures_util::StreamExt;
        use tokio_tungstenite::{
            tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role},
            WebSocketStream,
        };

        let (mut io, peer, writes) = pair(1 << 22);
        let out = io.outgoing();
        // Each length form: 7 bits, 16 bits, 64 bits, and the edges between them.
        let sizes = [0usize, 1, 125, 126, 65_535, 65_536, 70_000];
        let mut buffered = 0;
        for &n in &sizes {
            // The header: 2 bytes, 4 with a 16-bit length, 10 with a 64-bit one.
            buffered += n + if n < 126 {
                2
            } else if n <= 65_535 {
                4
            } else {
                10
            };
            assert_eq!(out.push(&Message::text("x".repeat(n))), buffered);
        }
        assert_eq!(out.push(&Message::binary(vec![7u8; 300])), buffered + 304);
        assert_eq!(out.push(&Message::Ping(Bytes::from_static(b"hi"))), buffered + 308);
        let bye = Some(CloseFrame {
            code: CloseCode::from(4000),
            reason: "é".repeat(100).into(),
        });
        // The reason is cut to fit in 125 bytes, at a character boundary.
        assert_eq!(out.push(&Message::Close(bye)), buffered + 308 + 2 + 2 + 122);
        assert_eq!(writes.load(Ordering::Relaxed), 0, "nothing written before the flush");
        io.flush().await.unwrap();
        assert_eq!(writes.load(Ordering::Relaxed), 1, "one write for the whole batch");

        let mut client = WebSocketStream::from_raw_socket(peer, Role::Client, None).await;
        for &n in &sizes {
            match client.next().await {
                Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "x".repeat(n)),
                other => panic!("expected a text message of {n} bytes, got {other:?}"),
            }
        }
        match client.next().await {
            Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], &[7u8; 300][..]),
            other => panic!("expected a binary message, got {other:?}"),
        }
        match client.next().await {
            Some(Ok(Message::Ping(p))) => assert_eq!(&p[..], b"hi"),
            other => panic!("expected a ping, got {other:?}"),
        }
        match client.next().await {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!((u16::from(f.code), f.reason.as_str()), (4000, "é".repeat(61).as_str()))
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn reads_pass_through() {
        let (mut io, mut peer, _) = pair(1 << 20);
        peer.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }
}
