//! The native protocol's decoder on arbitrary text: it must never panic nor overflow the
//! stack, and whatever it accepts must survive a round trip through JSON unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tower_realtime::unstable::native::{decode, DecodeError, Inbound};

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    // Reading the ack id of a frame that does not decode must not fail either.
    let hint = DecodeError::ack_hint(text);
    let Ok(frame) = decode(text) else {
        return;
    };
    let encoded = match &frame {
        Inbound::Event {
            event,
            data,
            id,
            attachments,
        } => {
            assert_eq!(hint, *id, "the ack hint reads the id of a frame that decodes");
            json!({ "event": event, "data": data, "id": id, "attachments": attachments })
        }
        Inbound::Ack { ack, data, attachments } => json!({ "ack": ack, "data": data, "attachments": attachments }),
    };
    let again = decode(&encoded.to_string()).expect("a decoded frame encodes to a valid one");
    assert_eq!(again, frame);
});
