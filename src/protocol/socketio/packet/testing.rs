//! Helpers for the unit tests: decode a text packet that must be complete, partial or an error,
//! and complete a partial one.

use bytes::Bytes;

use super::{decode, Decoded, PartialBinaryPacket, SioDecodeError, SioPacket};

pub(super) fn packet(text: &str) -> SioPacket {
    match decode(text) {
        Ok(Decoded::Packet(p)) => p,
        other => panic!("{text:?} should decode to a complete packet, got {other:?}"),
    }
}

pub(super) fn partial(text: &str) -> PartialBinaryPacket {
    match decode(text) {
        Ok(Decoded::Partial(p)) => p,
        other => panic!("{text:?} should decode to a partial packet, got {other:?}"),
    }
}

pub(super) fn err(text: &str) -> SioDecodeError {
    match decode(text) {
        Err(e) => e,
        Ok(d) => panic!("{text:?} should not decode, got {d:?}"),
    }
}

pub(super) fn complete(p: PartialBinaryPacket, frames: &[&'static [u8]]) -> SioPacket {
    let mut d = Decoded::Partial(p);
    for f in frames {
        d = match d {
            Decoded::Partial(p) => p.push(Bytes::from_static(f)),
            Decoded::Packet(_) => panic!("complete too early"),
        };
    }
    match d {
        Decoded::Packet(p) => p,
        Decoded::Partial(p) => panic!("still awaiting: {p:?}"),
    }
}
