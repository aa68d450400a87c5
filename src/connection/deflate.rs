//! permessage-deflate (RFC 7692): the negotiation, and compression and decompression of one
//! message.
//!
//! The server never keeps a compression context: it always answers with
//! `server_no_context_takeover`, so each message is compressed on its own, by a compressor
//! shared by the thread and reset per message. The bytes of a message compressed once are
//! then the same for every recipient that agreed the same window (the emit's frame keeps them:
//! `outbox::Frame`), and no connection holds a compressor.
//!
//! The client's context is not kept either, unless the app asks for it
//! ([`Compression::client_context_takeover`]): the answer says
//! `client_no_context_takeover`, and a message is inflated by a decompressor taken from the
//! thread's pool as it starts and given back as it ends. Decompression stops at the message
//! size limit: past it the connection gets `1009`, and no more memory than the limit.

use std::cell::RefCell;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use http::{HeaderMap, HeaderValue};

use crate::config::Compression;

/// What was agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The window the server compresses with (9 to 15).
    pub(crate) server_bits: u8,
    /// The window the client compresses with, as far as we know (8 to 15).
    pub(crate) client_bits: u8,
    /// The client keeps its context from one message to the next.
    pub(crate) client_takeover: bool,
    /// Messages shorter than this go uncompressed.
    pub(crate) threshold: usize,
    /// The compression level (0 to 9).
    pub(crate) level: u8,
}

impl Agreed {
    /// The key of what this agreement makes of a message: compressed bytes are shared by
    /// every connection with the same key.
    pub(crate) fn key(&self) -> u8 {
        (self.level << 4) | self.server_bits
    }
}

/// One permessage-deflate offer's parameters, as the client sent them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// Present; with a value or without.
    client_max_window_bits: Option<Option<u8>>,
}

/// Reads one offer's parameters; `None` when it has one that is unknown, repeated, or has a
/// bad value (that offer is declined, the next one considered).
fn parse_offer<'a>(params: impl Iterator<Item = &'a str>) -> Option<Offer> {
    let mut offer = Offer::default();
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param.trim(), None),
        };
        let bits = |v: Option<&str>| -> Option<u8> {
            let v = v?;
            // 1*DIGIT without leading zeros, 8 to 15.
            if v.starts_with('0') {
                return None;
            }
            v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() && !offer.server_no_context_takeover => {
                offer.server_no_context_takeover = true;
            }
            "client_no_context_takeover" if value.is_none() && !offer.client_no_context_takeover => {
                offer.client_no_context_takeover = true;
            }
            "server_max_window_bits" if offer.server_max_window_bits.is_none() => {
                offer.server_max_window_bits = Some(bits(value)?);
            }
            "client_max_window_bits" if offer.client_max_window_bits.is_none() => {
                offer.client_max_window_bits = Some(match value {
                    None => None,
                    Some(_) => Some(bits(value)?),
                });
            }
            _ => return None,
        }
    }
    Some(offer)
}

/// Picks the first permessage-deflate offer in the request's `Sec-WebSocket-Extensions` that
/// `config` can accept: what is agreed, and the response's header.
pub(crate) fn negotiate(headers: &HeaderMap, config: &Compression) -> Option<(Agreed, HeaderValue)> {
    let offers = headers
        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for offer in offers {
        let mut parts = offer.split(';');
        if !parts
            .next()
            .is_some_and(|name| name.trim().eq_ignore_ascii_case("permessage-deflate"))
        {
            continue;
        }
        let Some(offer) = parse_offer(parts) else { continue };
        if let Some(agreed) = accept(&offer, config) {
            return Some(agreed);
        }
    }
    None
}

/// The answer to one offer, if `config` can accept it.
fn accept(offer: &Offer, config: &Compression) -> Option<(Agreed, HeaderValue)> {
    let ours = config.max_window_bits.clamp(9, 15);
    let server_bits = match offer.server_max_window_bits {
        // zlib cannot compress raw deflate with a 256-byte window: such an offer is declined.
        Some(8) => return None,
        Some(asked) => asked.min(ours),
        None => ours,
    };
    let mut answer = String::from("permessage-deflate; server_no_context_takeover");
    let client_takeover = config.client_context_takeover && !offer.client_no_context_takeover;
    if !client_takeover {
        answer.push_str("; client_no_context_takeover");
    }
    if server_bits < 15 {
        answer.push_str(&format!("; server_max_window_bits={server_bits}"));
    }
    let mut client_bits = 15;
    if let Some(offered) = offer.client_max_window_bits {
        // The client said it can take a limit: ours, or its own when smaller.
        client_bits = offered.unwrap_or(15).min(config.client_max_window_bits.clamp(9, 15));
        if client_bits < 15 {
            answer.push_str(&format!("; client_max_window_bits={client_bits}"));
        }
    }
    let header = HeaderValue::from_str(&answer).ok()?;
    let agreed = Agreed {
        server_bits,
        client_bits,
        client_takeover,
        threshold: config.threshold,
        level: config.level.min(9) as u8,
    };
    Some((agreed, header))
}

thread_local! {
    /// The thread's compressors, one per (level, window) in use.
    static COMPRESSORS: RefCell<Vec<(u8, Compress)>> = const { RefCell::new(Vec::new()) };
    /// Decompressors not in use, for messages starting on this thread.
    static INFLATERS: RefCell<Vec<(u8, Box<Decompress>)>> = const { RefCell::new(Vec::new()) };
}

/// Decompressors a thread keeps for later messages (each is a window and zlib's state).
const POOL: usize = 4;

/// The compressed payload of one message (the trailing `00 00 ff ff` removed), or `None`
/// when compressing does not make it smaller.
pub(crate) fn compress(payload: &[u8], agreed: &Agreed) -> Option<Vec<u8>> {
    let key = agreed.key();
    COMPRESSORS.with_borrow_mut(|compressors| {
        let at = match compressors.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let level = flate2::Compression::new(u32::from(agreed.level));
                compressors.push((key, Compress::new_with_window_bits(level, false, agreed.server_bits)));
                compressors.len() - 1
            }
        };
        let c = &mut compressors[at].1;
        c.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        loop {
            let taken = c.total_in() as usize;
            c.compress_vec(&payload[taken..], &mut out, FlushCompress::Sync).ok()?;
            // A sync flush is complete once all input is taken and room is left over.
            if c.total_in() as usize == payload.len() && out.len() < out.capacity() {
                break;
            }
            if out.len() >= payload.len() + 64 {
                return None;
            }
            out.reserve(out.capacity().max(64));
        }
        if !out.ends_with(&[0, 0, 0xff, 0xff]) {
            return None;
        }
        out.truncate(out.len() - 4);
        (out.len() < payload.len()).then_some(out)
    })
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It inflates past the size limit.
    TooBig,
    /// It is not a deflate stream, or has data after its end.
    Corrupt,
}

/// The decompressor of a message being read.
#[derive(Debug)]
pub(crate) struct Inflater {
    bits: u8,
    inner: Box<Decompress>,
    /// The sender ended the deflate stream (a block with BFINAL set): the message's tail is
    /// not inflated, and the next message starts a new stream.
    ended: bool,
}

impl Inflater {
    /// One for a message compressed with a window of `bits` (8 is read with 9: zlib's least,
    /// and a larger window reads a smaller one's output).
    pub(crate) fn take(bits: u8) -> Self {
        let bits = bits.clamp(9, 15);
        let pooled = INFLATERS.with_borrow_mut(|pool| {
            let at = pool.iter().position(|(b, _)| *b == bits)?;
            Some(pool.swap_remove(at).1)
        });
        let inner = pooled.unwrap_or_else(|| Box::new(Decompress::new_with_window_bits(false, bits)));
        Self {
            bits,
            inner,
            ended: false,
        }
    }

    /// Gives it back to the thread's pool, reset.
    pub(crate) fn give_back(mut self) {
        self.inner.reset(false);
        INFLATERS.with_borrow_mut(|pool| {
            if pool.len() < POOL {
                pool.push((self.bits, self.inner));
            }
        });
    }

    /// Inflates `input` onto `out`, which may not grow past `limit` bytes.
    pub(crate) fn inflate(&mut self, mut input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        if self.ended {
            // Nothing may follow the end of the stream within its message.
            return match input.is_empty() {
                true => Ok(()),
                false => Err(InflateError::Corrupt),
            };
        }
        loop {
            if out.len() == out.capacity() {
                // Room for what may come, never more than one byte past the limit.
                let room = out.len().clamp(256, 64 * 1024).min(limit + 1 - out.len().min(limit));
                if room == 0 {
                    return Err(InflateError::TooBig);
                }
                out.reserve_exact(room);
            }
            let (before_in, before_out) = (self.inner.total_in(), out.len());
            let status = self
                .inner
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            input = &input[(self.inner.total_in() - before_in) as usize..];
            let progress = out.len() > before_out || self.inner.total_in() > before_in;
            match status {
                Status::StreamEnd => {
                    self.ended = true;
                    return match input.is_empty() {
                        true => Ok(()),
                        false => Err(InflateError::Corrupt),
                    };
                }
                _ if input.is_empty() && out.len() < out.capacity() => return Ok(()),
                // Input left, room left, and zlib takes none of it.
                _ if !progress && out.len() < out.capacity() => return Err(InflateError::Corrupt),
                _ => {}
            }
        }
    }

    /// Ends a message: the tail the sender removed.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        if !self.ended {
            self.inflate(&[0, 0, 0xff, 0xff], out, limit)?;
        }
        if self.ended {
            // A stream that ended keeps no context for the next message.
            self.inner.reset(false);
            self.ended = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Compression {
        Compression::default()
    }

    fn offer(value: &str, config: &Compression) -> Option<(Agreed, String)> {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(value).unwrap(),
        );
        negotiate(&headers, config).map(|(a, h)| (a, h.to_str().unwrap().to_owned()))
    }

    #[test]
    fn negotiation() {
        let c = config();
        let (agreed, answer) = offer("permessage-deflate", &c).unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(
            (agreed.server_bits, agreed.client_bits, agreed.client_takeover),
            (15, 15, false)
        );
        // What a browser offers.
        let (agreed, answer) = offer("permessage-deflate; client_max_window_bits", &c).unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(agreed.client_bits, 15);
        // A server window asked for.
        let (agreed, answer) = offer(
            "permessage-deflate; server_max_window_bits=10; server_no_context_takeover",
            &c,
        )
        .unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
        assert_eq!(agreed.server_bits, 10);
        // Bad offers are declined; the next one is taken.
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown",
            "permessage-deflate; server_max_window_bits=8",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(bad, &c), None, "{bad}");
            let (agreed, _) = offer(&format!("{bad}, permessage-deflate; server_max_window_bits=12"), &c).unwrap();
            assert_eq!(agreed.server_bits, 12, "{bad}");
        }
        // A quoted value, and a client window limit asked by the server.
        let limited = Compression {
            client_max_window_bits: 10,
            max_window_bits: 12,
            ..c
        };
        let (agreed, answer) = offer("permessage-deflate; client_max_window_bits=\"11\"", &limited).unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=10"
        );
        assert_eq!((agreed.server_bits, agreed.client_bits), (12, 10));
        // Context takeover, when the app allows it and the client does not refuse it.
        let takeover = Compression {
            client_context_takeover: true,
            ..c
        };
        let (agreed, answer) = offer("permessage-deflate", &takeover).unwrap();
        assert_eq!(answer, "permessage-deflate; server_no_context_takeover");
        assert!(agreed.client_takeover);
        let (agreed, _) = offer("permessage-deflate; client_no_context_takeover", &takeover).unwrap();
        assert!(!agreed.client_takeover);
    }

    fn agreed(bits: u8) -> Agreed {
        Agreed {
            server_bits: bits,
            client_bits: 15,
            client_takeover: false,
            threshold: 0,
            level: 6,
        }
    }

    #[test]
    fn round_trip_at_every_window() {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i: u32| format!("{{\"n\":{i},\"room\":\"lobby\"}}").into_bytes())
            .collect();
        for bits in 9..=15 {
            let packed = compress(&text, &agreed(bits)).expect("smaller");
            assert!(packed.len() < text.len() / 4, "{bits}: {}", packed.len());
            let mut inf = Inflater::take(bits);
            let mut out = Vec::new();
            // In pieces, as frames and reads cut it.
            for piece in packed.chunks(777) {
                inf.inflate(piece, &mut out, usize::MAX / 2).unwrap();
            }
            inf.finish(&mut out, usize::MAX / 2).unwrap();
            assert_eq!(out, text, "{bits}");
            inf.give_back();
        }
        // Incompressible: sent as it is.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(compress(&noise, &agreed(15)), None);
    }

    #[test]
    fn a_message_that_ends_its_stream_is_read_and_the_next_starts_anew() {
        // A sender may end each message's stream (BFINAL) instead of a sync flush.
        let mut inf = Inflater::take(15);
        for text in [&b"first message, first message"[..], b"second message, second"] {
            let mut c = Compress::new(flate2::Compression::default(), false);
            let mut packed = Vec::with_capacity(256);
            c.compress_vec(text, &mut packed, FlushCompress::Finish).unwrap();
            let mut out = Vec::new();
            inf.inflate(&packed, &mut out, 1024).unwrap();
            inf.finish(&mut out, 1024).unwrap();
            assert_eq!(out, text);
        }
        // Data after the end, within the message, is not.
        let mut c = Compress::new(flate2::Compression::default(), false);
        let mut packed = Vec::with_capacity(256);
        c.compress_vec(b"x", &mut packed, FlushCompress::Finish).unwrap();
        packed.push(0);
        assert_eq!(inf.inflate(&packed, &mut Vec::new(), 1024), Err(InflateError::Corrupt));
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let packed = compress(&zeros, &agreed(15)).unwrap();
        assert!(packed.len() < 20_000, "{}", packed.len());
        let mut inf = Inflater::take(15);
        let mut out = Vec::new();
        assert_eq!(inf.inflate(&packed, &mut out, 64 * 1024), Err(InflateError::TooBig));
        assert!(out.capacity() <= 64 * 1024 + 1, "{}", out.capacity());
        // Garbage is a protocol error.
        let mut inf = Inflater::take(15);
        assert_eq!(
            inf.inflate(&[0xff; 32], &mut Vec::new(), 1024),
            Err(InflateError::Corrupt)
        );
    }
}
