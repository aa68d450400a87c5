//! The Socket.IO packet decoder, binary attachments included, on an arbitrary sequence of
//! text and binary messages: it must never panic, never hand out a packet with more
//! attachments than its limit, and never accept an attachment that no packet waits for nor
//! text while one does.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tower_realtime::unstable::socketio::packet::{SioDecodeError, SioDecoder};

/// The attachment limit the fuzzer decodes with.
const MAX_ATTACHMENTS: usize = 4;

#[derive(Debug, Arbitrary)]
enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

fuzz_target!(|messages: Vec<Message<'_>>| {
    let mut decoder = SioDecoder::new(MAX_ATTACHMENTS);
    for message in messages {
        let awaiting = decoder.is_awaiting_attachments();
        let decoded = match message {
            Message::Text(text) => decoder.decode_text(text),
            Message::Binary(bytes) => decoder.decode_binary(bytes::Bytes::copy_from_slice(bytes)),
        };
        match decoded {
            Ok(Some(packet)) => {
                assert!(packet.attachments.len() <= MAX_ATTACHMENTS);
                assert!(!decoder.is_awaiting_attachments());
            }
            Ok(None) => assert!(decoder.is_awaiting_attachments()),
            Err(SioDecodeError::UnexpectedBinary) => assert!(!awaiting),
            Err(SioDecodeError::UnexpectedText) => assert!(awaiting),
            Err(_) => {}
        }
    }
});
