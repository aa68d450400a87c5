//! The server's WebSocket frame reader (RFC 6455, section 5), without I/O: bytes in, messages
//! and control frames out.
//!
//! It is fed whatever the socket gave ([`FrameReader::advance`]) and keeps only what a frame
//! or a message in progress needs: the frame header (at most 14 bytes, inline), and the work
//! of a message or control frame under way (its bytes so far, what is known of them), in a box
//! taken when a frame starts and given back to the thread when nothing is under way. An idle
//! connection's reader holds no heap memory, and keeps the few words of that work out of the
//! connection too.
//!
//! Every rule is checked on the header, before a payload byte is buffered: client frames are
//! masked, reserved bits and opcodes are refused, control frames are final and at most 125
//! bytes, a continuation continues something and a new message does not interrupt one, and a
//! message's size (its fragments added up) stays within the limit. Text is checked for UTF-8
//! as it arrives, across fragments and reads: the first invalid byte fails the message, with
//! no wait for its end. A close frame's code and reason are checked too.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::deflate::{Agreed, InflateError, Inflater};

/// What a client sent that ends its connection, with the close code it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// A violation of the protocol (1002).
    Protocol(&'static str),
    /// Text that is not UTF-8 (1007).
    Utf8,
    /// A message over the size limit (1009).
    TooBig,
}

/// What a reader made of its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A whole text message.
    Text(Utf8Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// A ping, with its payload.
    Ping(Bytes),
    /// A pong, with its payload.
    Pong(Bytes),
    /// A close frame: its code and reason, when it had a code.
    Close(Option<(u16, Utf8Bytes)>),
}

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: u8,
    fin: bool,
    /// Payload bytes still to come.
    remaining: u64,
    mask: [u8; 4],
    /// Payload bytes unmasked so far, modulo 4.
    offset: u8,
}

/// The kind of message being assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// An RFC 6455 frame reader for the server side.
#[derive(Debug)]
pub(crate) struct FrameReader {
    max_message: usize,
    /// The header being read, and how much of it is in.
    head: [u8; 14],
    head_len: u8,
    frame: Option<Frame>,
    /// permessage-deflate, when agreed.
    deflate: Option<Agreed>,
    /// A message or control frame under way, when one is (see the module's description).
    work: Option<Box<Work>>,
}

/// What a message or a control frame under way needs.
#[derive(Debug, Default)]
struct Work {
    /// The message being assembled (fragments so far), when one is.
    kind: Option<Kind>,
    message: Vec<u8>,
    /// How much of `message` is known to be UTF-8 (a text message).
    valid: usize,
    /// A control frame's payload so far.
    control: Vec<u8>,
    /// The message being assembled is compressed.
    compressed: bool,
    /// Its decompressor (kept between messages only with the client's context takeover).
    inflater: Option<Box<Inflater>>,
}

impl Work {
    /// Nothing under way, and nothing kept between messages.
    fn is_idle(&self) -> bool {
        self.kind.is_none() && self.control.is_empty() && self.inflater.is_none() && !self.compressed
    }
}

std::thread_local! {
    /// A [`Work`] given back by an idle reader, for the next one that starts a frame on this
    /// thread: most messages are read whole in one go, and take and give back this one.
    static SPARE_WORK: std::cell::Cell<Option<Box<Work>>> = const { std::cell::Cell::new(None) };
}

impl FrameReader {
    /// A reader that takes messages of up to `max_message` bytes.
    /// What permessage-deflate agreed, if it did (the stream's one copy of it).
    pub(crate) fn deflate(&self) -> Option<&Agreed> {
        self.deflate.as_ref()
    }

    pub(crate) fn new(max_message: usize, deflate: Option<Agreed>) -> Self {
        Self {
            deflate,
            max_message,
            head: [0; 14],
            head_len: 0,
            frame: None,
            work: None,
        }
    }

    /// The work under way, taken when there is none.
    fn work(&mut self) -> &mut Work {
        self.work.get_or_insert_with(|| SPARE_WORK.take().unwrap_or_default())
    }

    /// The kind of message being assembled, if one is.
    fn kind(&self) -> Option<Kind> {
        self.work.as_ref().and_then(|w| w.kind)
    }

    /// Reads from `input` up to the next event, or to its end. Returns how many bytes it took
    /// and the event, if one is complete. After an error the reader must not be fed again.
    pub(crate) fn advance(&mut self, input: &[u8]) -> (usize, Option<Result<Event, ReadError>>) {
        let advanced = self.advance_in(input);
        if self.work.as_ref().is_some_and(|w| w.is_idle()) {
            SPARE_WORK.set(self.work.take());
        }
        advanced
    }

    fn advance_in(&mut self, mut input: &[u8]) -> (usize, Option<Result<Event, ReadError>>) {
        let len = input.len();
        loop {
            let Some(frame) = self.frame else {
                if input.is_empty() {
                    return (len, self.check_partial().err().map(Err));
                }
                let taken = match self.read_head(input) {
                    Ok(taken) => taken,
                    Err(e) => return (len - input.len(), Some(Err(e))),
                };
                input = &input[taken..];
                if self.frame.is_some_and(|f| f.remaining == 0) {
                    if let Some(event) = self.end_of_frame() {
                        return (len - input.len(), Some(event));
                    }
                }
                continue;
            };
            if input.is_empty() {
                return (len, self.check_partial().err().map(Err));
            }
            let n = usize::try_from(frame.remaining).map_or(input.len(), |r| r.min(input.len()));
            let (chunk, rest) = input.split_at(n);
            input = rest;
            match frame.opcode {
                TEXT | BINARY | CONTINUATION if self.work().compressed => {
                    if let Err(e) = self.inflate(chunk, frame.mask, frame.offset) {
                        return (len - input.len(), Some(Err(e)));
                    }
                }
                opcode => {
                    let work = self.work();
                    let dest = if is_control(opcode) {
                        &mut work.control
                    } else {
                        &mut work.message
                    };
                    let start = dest.len();
                    dest.extend_from_slice(chunk);
                    unmask(&mut dest[start..], frame.mask, frame.offset);
                }
            }
            let f = self.frame.as_mut().expect("a frame is being read");
            f.remaining -= n as u64;
            f.offset = ((f.offset as usize + n) % 4) as u8;
            if f.remaining == 0 {
                if let Some(event) = self.end_of_frame() {
                    return (len - input.len(), Some(event));
                }
            }
        }
    }

    /// Takes header bytes from `input`; once the header is whole, checks it and starts its
    /// frame. Returns how many bytes it took.
    fn read_head(&mut self, input: &[u8]) -> Result<usize, ReadError> {
        let mut taken = 0;
        loop {
            let have = self.head_len as usize;
            let need = if have < 2 { 2 } else { head_size(self.head[1]) };
            if have == need {
                break;
            }
            let take = (need - have).min(input.len() - taken);
            if take == 0 {
                // The rest of the header comes with the next read.
                return Ok(taken);
            }
            self.head[have..have + take].copy_from_slice(&input[taken..taken + take]);
            self.head_len += take as u8;
            taken += take;
            if have < 2 && self.head_len == 2 {
                // The first two bytes say all that can be refused without the length.
                self.check_first(self.head[0], self.head[1])?;
            }
        }
        let (b0, b1) = (self.head[0], self.head[1]);
        let (len, mask_at) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes([self.head[2], self.head[3]])), 4),
            127 => {
                let len = u64::from_be_bytes(self.head[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(ReadError::Protocol("a frame length with its top bit set"));
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        let opcode = b0 & 0x0f;
        if is_control(opcode) {
            if len > 125 {
                return Err(ReadError::Protocol("a control frame over 125 bytes"));
            }
        } else if len > (self.max_message - self.work.as_ref().map_or(0, |w| w.message.len())) as u64 {
            // (A compressed frame: its compressed size is held to the limit too.)
            return Err(ReadError::TooBig);
        }
        let mask = self.head[mask_at..mask_at + 4].try_into().expect("4 bytes");
        self.head_len = 0;
        if !is_control(opcode) {
            let work = self.work();
            if opcode != CONTINUATION {
                work.kind = Some(if opcode == TEXT { Kind::Text } else { Kind::Binary });
                work.compressed = b0 & 0x40 != 0;
            }
            if !work.compressed {
                // Room for the whole frame at once when it is small; a large one grows as its
                // bytes arrive (its length is only what the peer claims).
                work.message.reserve(len.min(64 * 1024) as usize);
            }
        }
        self.frame = Some(Frame {
            opcode,
            fin: b0 & 0x80 != 0,
            remaining: len,
            mask,
            offset: 0,
        });
        Ok(taken)
    }

    /// Checks what the first two bytes of a header say.
    fn check_first(&self, b0: u8, b1: u8) -> Result<(), ReadError> {
        let opcode = b0 & 0x0f;
        if b0 & 0x30 != 0 || (b0 & 0x40 != 0 && self.deflate.is_none()) {
            return Err(ReadError::Protocol("reserved bits set with no extension agreed"));
        }
        if b0 & 0x40 != 0 && !matches!(opcode, TEXT | BINARY) {
            return Err(ReadError::Protocol("RSV1 set on a frame that does not start a message"));
        }
        if b1 & 0x80 == 0 {
            return Err(ReadError::Protocol("an unmasked frame from a client"));
        }
        match opcode {
            CLOSE | PING | PONG if b0 & 0x80 == 0 => Err(ReadError::Protocol("a fragmented control frame")),
            CLOSE | PING | PONG => Ok(()),
            CONTINUATION if self.kind().is_none() => {
                Err(ReadError::Protocol("a continuation with nothing to continue"))
            }
            TEXT | BINARY if self.kind().is_some() => Err(ReadError::Protocol(
                "a new message before the last one's final fragment",
            )),
            CONTINUATION | TEXT | BINARY => Ok(()),
            _ => Err(ReadError::Protocol("an unknown opcode")),
        }
    }

    /// A frame's payload is complete: the event it makes, if any.
    fn end_of_frame(&mut self) -> Option<Result<Event, ReadError>> {
        let frame = self.frame.take().expect("a frame was being read");
        match frame.opcode {
            PING => Some(Ok(Event::Ping(take_bytes(&mut self.work().control)))),
            PONG => Some(Ok(Event::Pong(take_bytes(&mut self.work().control)))),
            CLOSE => Some(close(std::mem::take(&mut self.work().control))),
            _ if !frame.fin => self.check_partial().err().map(Err),
            _ => {
                if self.work().compressed {
                    if let Err(e) = self.end_of_compressed() {
                        return Some(Err(e));
                    }
                }
                let work = self.work();
                let kind = work.kind.take().expect("a message was being read");
                let message = std::mem::take(&mut work.message);
                work.valid = 0;
                Some(match kind {
                    Kind::Binary => Ok(Event::Binary(Bytes::from(message))),
                    // What was checked already is checked again here: only a text message read
                    // in more than one piece pays that, and only for its earlier pieces.
                    Kind::Text => match Utf8Bytes::try_from(message) {
                        Ok(text) => Ok(Event::Text(text)),
                        Err(_) => Err(ReadError::Utf8),
                    },
                })
            }
        }
    }

    /// Unmasks a piece of a compressed message's payload and inflates it onto the message.
    fn inflate(&mut self, chunk: &[u8], mask: [u8; 4], offset: u8) -> Result<(), ReadError> {
        let agreed = self.deflate.expect("RSV1 is refused without deflate");
        let max_message = self.max_message;
        let Work { message, inflater, .. } = self.work();
        let inflater = inflater.get_or_insert_with(|| Box::new(Inflater::take(agreed.client_bits)));
        let mut scratch = [0u8; 1024];
        let mut offset = offset as usize;
        for piece in chunk.chunks(scratch.len()) {
            let scratch = &mut scratch[..piece.len()];
            scratch.copy_from_slice(piece);
            unmask(scratch, mask, (offset % 4) as u8);
            offset += piece.len();
            inflater.inflate(scratch, message, max_message).map_err(inflate_error)?;
        }
        Ok(())
    }

    /// A compressed message's last frame is in: the tail its sender removed, and the
    /// decompressor back to the pool unless the client keeps its context.
    fn end_of_compressed(&mut self) -> Result<(), ReadError> {
        let agreed = self.deflate.expect("RSV1 is refused without deflate");
        let max_message = self.max_message;
        let work = self.work();
        work.compressed = false;
        let inflater = (work.inflater).get_or_insert_with(|| Box::new(Inflater::take(agreed.client_bits)));
        inflater.finish(&mut work.message, max_message).map_err(inflate_error)?;
        if !agreed.client_takeover {
            if let Some(inflater) = work.inflater.take() {
                inflater.give_back();
            }
        }
        Ok(())
    }

    /// Checks the text received so far of a message not complete yet: it fails on the first
    /// invalid byte; a character cut at the end waits for the rest of it.
    fn check_partial(&mut self) -> Result<(), ReadError> {
        let Some(work) = &mut self.work else { return Ok(()) };
        if work.kind != Some(Kind::Text) || work.valid == work.message.len() {
            return Ok(());
        }
        match std::str::from_utf8(&work.message[work.valid..]) {
            Ok(_) => work.valid = work.message.len(),
            Err(e) if e.error_len().is_some() => return Err(ReadError::Utf8),
            Err(e) => work.valid += e.valid_up_to(),
        }
        Ok(())
    }
}

/// What a failed inflate is to the connection.
fn inflate_error(e: InflateError) -> ReadError {
    match e {
        InflateError::TooBig => ReadError::TooBig,
        InflateError::Corrupt => ReadError::Protocol("invalid compressed data"),
    }
}

/// The size of a header that starts with these two bytes.
fn head_size(b1: u8) -> usize {
    let len = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + len + if b1 & 0x80 != 0 { 4 } else { 0 }
}

fn is_control(opcode: u8) -> bool {
    opcode & 0x8 != 0
}

/// A control payload as bytes; its buffer is handed on (an empty one costs nothing).
fn take_bytes(control: &mut Vec<u8>) -> Bytes {
    Bytes::from(std::mem::take(control))
}

/// Reads a close frame's payload: nothing, or a valid code and a UTF-8 reason.
fn close(payload: Vec<u8>) -> Result<Event, ReadError> {
    match payload.len() {
        0 => return Ok(Event::Close(None)),
        1 => return Err(ReadError::Protocol("a close frame with a 1-byte payload")),
        _ => {}
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    if !valid_close_code(code) {
        return Err(ReadError::Protocol("an invalid close code"));
    }
    let reason = Utf8Bytes::try_from(Bytes::from(payload).slice(2..)).map_err(|_| ReadError::Utf8)?;
    Ok(Event::Close(Some((code, reason))))
}

/// Whether a peer may send this close code (RFC 6455, 7.4; the IANA registry).
pub(crate) fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Unmasks `data`, whose first byte is at `offset` (mod 4) in its frame's payload.
fn unmask(data: &mut [u8], mask: [u8; 4], offset: u8) {
    let mut key = [0u8; 8];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(i + offset as usize) % 4];
    }
    let key = u64::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ key;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let done = data.len() - data.len() % 8;
    for (i, b) in data[done..].iter_mut().enumerate() {
        *b ^= mask[(done + i + offset as usize) % 4];
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame: masked, with the shortest length form.
    pub(crate) fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            out.push(0x80 | 126);
            out.extend_from_slice(&short.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        out
    }

    /// Feeds `input` in pieces of `step` bytes, collecting events until the first error.
    fn feed(reader: &mut FrameReader, input: &[u8], step: usize) -> Vec<Result<Event, ReadError>> {
        let mut events = Vec::new();
        for mut piece in input.chunks(step) {
            while !piece.is_empty() {
                let (n, event) = reader.advance(piece);
                piece = &piece[n..];
                if let Some(event) = event {
                    let failed = event.is_err();
                    events.push(event);
                    if failed {
                        return events;
                    }
                }
            }
        }
        events
    }

    /// Feeds `input` whole, one byte at a time, and in odd pieces: the events must not depend
    /// on how the bytes arrive.
    fn events(max: usize, input: &[u8]) -> Vec<Result<Event, ReadError>> {
        let whole = feed(&mut FrameReader::new(max, None), input, input.len().max(1));
        for step in [1, 3, 7, 130] {
            assert_eq!(
                feed(&mut FrameReader::new(max, None), input, step),
                whole,
                "in pieces of {step}"
            );
        }
        whole
    }

    fn text(s: &str) -> Result<Event, ReadError> {
        Ok(Event::Text(s.into()))
    }

    #[test]
    fn messages_of_every_length_form_unmasked() {
        let mut input = Vec::new();
        let sizes = [0usize, 1, 125, 126, 65_535, 65_536, 70_001];
        for &n in &sizes {
            input.extend(frame(true, TEXT, "é".repeat(n / 2).as_bytes()));
        }
        input.extend(frame(true, BINARY, &[1, 2, 3, 4, 5, 6, 7, 8, 9]));
        let got = feed(&mut FrameReader::new(1 << 20, None), &input, 4096);
        let mut want: Vec<_> = sizes.iter().map(|n| text(&"é".repeat(n / 2))).collect();
        want.push(Ok(Event::Binary(Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8, 9]))));
        assert_eq!(got, want);
        // Byte by byte, too.
        assert_eq!(feed(&mut FrameReader::new(1 << 20, None), &input, 1), want);
    }

    #[test]
    fn fragments_with_pings_between_them() {
        let mut input = frame(false, TEXT, "Hel".as_bytes());
        input.extend(frame(true, PING, b"p1"));
        input.extend(frame(false, CONTINUATION, "lo, ".as_bytes()));
        input.extend(frame(true, PONG, b""));
        input.extend(frame(true, PING, b""));
        input.extend(frame(true, CONTINUATION, "wörld".as_bytes()));
        input.extend(frame(false, BINARY, &[1]));
        input.extend(frame(true, CONTINUATION, &[2]));
        assert_eq!(
            events(1024, &input),
            vec![
                Ok(Event::Ping(Bytes::from_static(b"p1"))),
                Ok(Event::Pong(Bytes::new())),
                Ok(Event::Ping(Bytes::new())),
                text("Hello, wörld"),
                Ok(Event::Binary(Bytes::from_static(&[1, 2]))),
            ]
        );
    }

    #[test]
    fn a_character_split_over_fragments_is_whole() {
        // "€" is e2 82 ac: cut after its first byte and after its second.
        let mut input = frame(false, TEXT, &[b'a', 0xe2]);
        input.extend(frame(false, CONTINUATION, &[0x82]));
        input.extend(frame(true, CONTINUATION, &[0xac, b'b']));
        assert_eq!(events(1024, &input), vec![text("a€b")]);
    }

    #[test]
    fn bad_utf8_fails_on_the_first_bad_byte_not_at_the_end() {
        // The second fragment is bad; the message never ends.
        let mut input = frame(false, TEXT, b"fine");
        input.extend(frame(false, CONTINUATION, &[b'x', 0xc3, 0x28]));
        assert_eq!(events(1024, &input), vec![Err(ReadError::Utf8)]);
        // Within one frame whose end has not come: the bad byte is enough.
        let whole = frame(
            true,
            TEXT,
            &[b'a'; 100]
                .iter()
                .chain(&[0xff])
                .copied()
                .chain([b'b'; 100])
                .collect::<Vec<_>>(),
        );
        let mut r = FrameReader::new(1024, None);
        // A header of 8 bytes (a 16-bit length), then 100 good bytes and the bad one.
        let (_, event) = r.advance(&whole[..8 + 101]);
        assert_eq!(event, Some(Err(ReadError::Utf8)));
        // A code point past U+10FFFF, and an unfinished character at the end of a message.
        assert_eq!(
            events(1024, &frame(true, TEXT, &[0xf4, 0x90, 0x80, 0x80])),
            vec![Err(ReadError::Utf8)]
        );
        assert_eq!(
            events(1024, &frame(true, TEXT, &[b'a', 0xe2, 0x82])),
            vec![Err(ReadError::Utf8)]
        );
        // Binary messages are not text.
        assert_eq!(
            events(1024, &frame(true, BINARY, &[0xff])),
            vec![Ok(Event::Binary(Bytes::from_static(&[0xff])))]
        );
    }

    #[test]
    fn protocol_violations() {
        let protocol = |input: &[u8]| match events(1024, input).pop() {
            Some(Err(ReadError::Protocol(why))) => why,
            other => panic!("expected a protocol error, got {other:?}"),
        };
        // Unmasked.
        assert_eq!(protocol(&[0x81, 0x01, b'x']), "an unmasked frame from a client");
        // Reserved bits, each of them.
        for rsv in [0x40, 0x20, 0x10] {
            let mut f = frame(true, TEXT, b"x");
            f[0] |= rsv;
            assert_eq!(protocol(&f), "reserved bits set with no extension agreed");
        }
        // Reserved opcodes, data and control.
        for op in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(protocol(&frame(true, op, b"")), "an unknown opcode");
        }
        assert_eq!(
            protocol(&frame(true, CONTINUATION, b"x")),
            "a continuation with nothing to continue"
        );
        let mut input = frame(false, TEXT, b"x");
        input.extend(frame(true, TEXT, b"y"));
        assert_eq!(protocol(&input), "a new message before the last one's final fragment");
        assert_eq!(protocol(&frame(false, PING, b"")), "a fragmented control frame");
        assert_eq!(
            protocol(&frame(true, PING, &[0; 126])),
            "a control frame over 125 bytes"
        );
        // The 64-bit length with its top bit set.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        huge.extend_from_slice(&MASK);
        assert_eq!(protocol(&huge), "a frame length with its top bit set");
    }

    #[test]
    fn close_frames() {
        let close = |payload: &[u8]| events(1024, &frame(true, CLOSE, payload)).pop().expect("an event");
        assert_eq!(close(b""), Ok(Event::Close(None)));
        assert_eq!(close(&[0x03, 0xe8]), Ok(Event::Close(Some((1000, "".into())))));
        let mut bye = 4999u16.to_be_bytes().to_vec();
        bye.extend_from_slice("ciao ✓".as_bytes());
        assert_eq!(close(&bye), Ok(Event::Close(Some((4999, "ciao ✓".into())))));
        assert_eq!(
            close(&[0x03]),
            Err(ReadError::Protocol("a close frame with a 1-byte payload"))
        );
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert_eq!(
                close(&bad.to_be_bytes()),
                Err(ReadError::Protocol("an invalid close code")),
                "{bad}"
            );
        }
        for good in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000,
        ] {
            assert_eq!(close(&good.to_be_bytes()), Ok(Event::Close(Some((good, "".into())))));
        }
        assert_eq!(close(&[0x03, 0xe8, 0xff]), Err(ReadError::Utf8));
    }

    #[test]
    fn oversized_frames_are_refused_on_their_header() {
        // Only the header of a frame over the limit: refused with nothing of it buffered.
        let big = frame(true, BINARY, &vec![0; 2000]);
        let mut r = FrameReader::new(1024, None);
        let (_, event) = r.advance(&big[..8]);
        assert_eq!(event, Some(Err(ReadError::TooBig)));
        assert!(r.work.is_none(), "nothing of it buffered");
        // The limit holds for the fragments of one message added up.
        let mut input = frame(false, TEXT, &[b'a'; 1000]);
        input.extend(frame(false, CONTINUATION, &[b'a'; 24]));
        input.extend(frame(true, CONTINUATION, &[b'a'; 1]));
        assert_eq!(events(1024, &input), vec![Err(ReadError::TooBig)]);
        // Exactly the limit is fine.
        let mut input = frame(false, TEXT, &[b'a'; 1000]);
        input.extend(frame(true, CONTINUATION, &[b'a'; 24]));
        assert_eq!(events(1024, &input), vec![text(&"a".repeat(1024))]);
    }

    #[test]
    fn an_idle_reader_holds_no_buffer() {
        let mut r = FrameReader::new(1 << 20, None);
        let mut input = frame(false, TEXT, &[b'x'; 5000]);
        input.extend(frame(true, PING, b"ping"));
        input.extend(frame(true, CONTINUATION, b"y"));
        // Under way: the first fragment is in, the ping is not whole yet.
        let (_, event) = r.advance(&input[..5010]);
        assert_eq!(event, None);
        assert!(r.work.as_ref().is_some_and(|w| w.message.len() == 5000));
        let got = feed(&mut r, &input[5010..], 1000);
        assert_eq!(got.len(), 2);
        assert!(r.work.is_none() && r.frame.is_none(), "the work was given back");
        // Another message takes it (or another) again, and gives it back once read.
        let got = feed(&mut r, &frame(true, TEXT, b"z"), 1000);
        assert_eq!(got, vec![text("z")]);
        assert!(r.work.is_none());
    }

    #[test]
    fn unmask_at_any_offset() {
        let data: Vec<u8> = (0..=255).collect();
        for offset in 0..4u8 {
            let mut got = data.clone();
            unmask(&mut got, MASK, offset);
            let want: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ MASK[(i + offset as usize) % 4])
                .collect();
            assert_eq!(got, want);
        }
    }

    use crate::connection::deflate::compress;

    /// A small deterministic generator for the randomized test below.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// One frame of a random stream: mostly valid (text with multi-byte characters, binary,
    /// fragments, pings, closes, compressed messages when `deflate`), some not (unmasked,
    /// reserved bits, unknown opcodes, bad UTF-8, a bad close code, random bytes).
    fn random_frame(rng: &mut Rng, deflate: Option<&Agreed>) -> Vec<u8> {
        let len = match rng.below(10) {
            0 => 126 + rng.below(400),
            1 => 0,
            _ => rng.below(40),
        };
        let text: String = (0..len).map(|_| ['a', 'é', '€', '😀', ' '][rng.below(5)]).collect();
        match rng.below(14) {
            0..=3 => frame(true, TEXT, text.as_bytes()),
            4 => frame(true, BINARY, &rng.bytes(len)),
            5 => {
                // A text message in two fragments, a ping between them, split anywhere (in
                // the middle of a character too).
                let cut = rng.below(text.len() + 1);
                let mut out = frame(false, TEXT, &text.as_bytes()[..cut]);
                out.extend(frame(true, PING, b"p"));
                out.extend(frame(true, CONTINUATION, &text.as_bytes()[cut..]));
                out
            }
            6 => {
                let n = rng.below(126);
                frame(true, PING, &rng.bytes(n))
            }
            7 => {
                let mut payload = [1000u16, 1001, 1005, 3000, 999, 2999, 4999][rng.below(7)]
                    .to_be_bytes()
                    .to_vec();
                payload.extend(text.as_bytes().iter().take(100));
                frame(true, CLOSE, &payload)
            }
            8 => frame(true, TEXT, &rng.bytes(len)),
            9 => {
                let mut out = frame(true, [TEXT, 0x3, 0xB, CONTINUATION][rng.below(4)], text.as_bytes());
                out[0] |= [0, 0x40, 0x20, 0x10][rng.below(4)];
                out
            }
            10 => {
                let mut out = frame(true, TEXT, text.as_bytes());
                out[1] &= 0x7f; // unmasked (the mask stays in the payload's place)
                out
            }
            11 => {
                let n = rng.below(20);
                rng.bytes(n)
            }
            _ => match deflate.and_then(|agreed| compress(text.as_bytes(), agreed)) {
                Some(packed) => {
                    let mut packed = packed;
                    if rng.below(4) == 0 && !packed.is_empty() {
                        let at = rng.below(packed.len());
                        packed[at] ^= 1 << rng.below(8); // corrupted
                    }
                    let mut out = frame(true, TEXT, &packed);
                    out[0] |= 0x40;
                    out
                }
                None => frame(true, BINARY, text.as_bytes()),
            },
        }
    }

    #[test]
    fn random_streams_read_the_same_however_they_arrive_and_never_panic() {
        let agreed = Agreed {
            server_bits: 15,
            client_bits: 15,
            client_takeover: false,
            threshold: 0,
            level: 1,
        };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // What the streams held, so that a generator gone wrong (all garbage, or nothing
        // compressed) fails here rather than passes on nothing.
        let (mut texts, mut failed) = (0, 0);
        for case in 0..20_000 {
            let deflate = (case % 2 == 1).then_some(agreed);
            let mut input = Vec::new();
            for _ in 0..1 + rng.below(6) {
                input.extend(random_frame(&mut rng, deflate.as_ref()));
            }
            if rng.below(5) == 0 && !input.is_empty() {
                let at = rng.below(input.len());
                input[at] = rng.next() as u8; // one byte changed anywhere
            }
            if rng.below(5) == 0 {
                input.truncate(rng.below(input.len() + 1)); // cut short
            }
            let max = [64, 300, 1 << 16][rng.below(3)];
            let whole = feed(&mut FrameReader::new(max, deflate), &input, input.len().max(1));
            for step in [1, 2 + rng.below(9), 1 + rng.below(input.len().max(1))] {
                let got = feed(&mut FrameReader::new(max, deflate), &input, step);
                // A corrupted compressed text may be found out as bad UTF-8 (1007) by a reader
                // that inflated a piece at a time, before zlib finds the stream bad (1002): the
                // events before a failure are the same, and both readers fail.
                let same_failure = |a: &[Result<Event, ReadError>], b: &[Result<Event, ReadError>]| {
                    matches!((a.last(), b.last()), (Some(Err(_)), Some(Err(_)))) && a[..a.len() - 1] == b[..b.len() - 1]
                };
                assert!(
                    got == whole || (deflate.is_some() && same_failure(&got, &whole)),
                    "case {case}, in pieces of {step}: {input:02x?}\n{got:?}\n{whole:?}"
                );
            }
            failed += usize::from(whole.last().is_some_and(|e| e.is_err()));
            texts += whole.iter().filter(|e| matches!(e, Ok(Event::Text(_)))).count();
            for event in whole.iter().flatten() {
                match event {
                    Event::Text(t) => assert!(t.len() <= max, "case {case}"),
                    Event::Binary(b) => assert!(b.len() <= max, "case {case}"),
                    Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125, "case {case}"),
                    Event::Close(_) => {}
                }
            }
        }
        assert!(
            texts > 5_000 && failed > 5_000,
            "{texts} texts read, {failed} streams failed"
        );
    }
}
