//! A history event on the wire, with its position, per protocol: the native protocol's
//! `offset` field, and Socket.IO's `"<epoch>-<offset>"` last argument, which the client keeps
//! and presents to recover.

use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The native frame of a history event: `{"event":…,"data":…,"offset":…}`.
pub(crate) fn native_event_at(event: &str, data_json: &str, seq: u64) -> Utf8Bytes {
    super::native::encode_event_at(event, data_json, seq)
}

/// The Engine.IO message carrying a history event to a Socket.IO client: an EVENT whose last
/// argument is the event's [offset](socketio_offset), `42["message",{…},"3f2a-17"]`.
#[cfg(feature = "socketio")]
pub(crate) fn socketio_event_at(ns: &str, event: &str, data_json: &str, epoch: &str, seq: u64) -> String {
    let offset = socketio_offset(epoch, seq);
    let packet = super::socketio::packet::encode_event_offset(ns, event, data_json, &offset);
    format!("4{packet}")
}

/// The offset a Socket.IO client keeps: `"<epoch>-<offset>"`.
#[cfg(feature = "socketio")]
pub(crate) fn socketio_offset(epoch: &str, seq: u64) -> String {
    format!("{epoch}-{seq}")
}

/// Splits a Socket.IO offset into its epoch and offset.
#[cfg_attr(not(feature = "socketio"), allow(dead_code))]
pub(crate) fn parse_socketio_offset(offset: &str) -> Option<(&str, u64)> {
    let (epoch, seq) = offset.rsplit_once('-')?;
    Some((epoch, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketio_offsets_round_trip() {
        assert_eq!(parse_socketio_offset("ab12-42"), Some(("ab12", 42)));
        assert_eq!(parse_socketio_offset("nothing"), None);
        assert_eq!(parse_socketio_offset("ab-x"), None);
    }
}
