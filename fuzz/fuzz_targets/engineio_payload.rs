//! The long-polling body decoder on arbitrary bytes: it must never panic, it refuses a body
//! over the limit, and the packets it accepts go back into a body that decodes to the same
//! packets.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_realtime::unstable::socketio::engineio::{decode_payload_bytes, PayloadBuilder};

/// The limit the fuzzer decodes with: small enough that bodies over it are common.
const MAX: usize = 4096;

fuzz_target!(|bytes: &[u8]| {
    let Ok(packets) = decode_payload_bytes(bytes, MAX) else {
        return;
    };
    assert!(bytes.len() <= MAX, "a body over the limit is refused");
    if packets.is_empty() {
        return;
    }
    let mut body = PayloadBuilder::new(usize::MAX);
    for packet in &packets {
        assert!(body.push(packet));
    }
    let again = decode_payload_bytes(body.finish().as_bytes(), usize::MAX).expect("a rebuilt body decodes");
    assert_eq!(again, packets);
});
