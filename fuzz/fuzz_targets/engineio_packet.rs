//! The Engine.IO packet decoder on arbitrary text, as a WebSocket frame and as one record of a
//! polling body: it must never panic, and a packet it accepts encodes to text that decodes to
//! the same packet.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_realtime::unstable::socketio::engineio::EioPacket;

fuzz_target!(|text: &str| {
    for decoded in [EioPacket::decode(text), EioPacket::decode_polling(text)] {
        let Ok(packet) = decoded else { continue };
        let again = match &packet {
            // A binary message is carried as a binary frame, or as `b<base64>` in a body.
            EioPacket::BinaryMessage(_) => {
                let mut body = tower_realtime::unstable::socketio::engineio::PayloadBuilder::new(usize::MAX);
                assert!(body.push(&packet));
                EioPacket::decode_polling(&body.finish())
            }
            other => EioPacket::decode(&other.encode()),
        };
        assert_eq!(again.expect("an accepted packet re-encodes to a valid one"), packet);
    }
});
