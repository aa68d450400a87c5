//! The client side of recovery over the native protocol: the `$session` event and the
//! position a client presents to come back.

use serde_json::Value;

use super::Client;

/// What a client remembers to come back: its session, epoch and last offset.
#[derive(Clone)]
pub struct Position {
    pub session: String,
    pub epoch: String,
    pub offset: Option<u64>,
}

impl Position {
    /// The handshake's query to resume from here.
    pub fn query(&self) -> String {
        let mut q = format!("session={}&epoch={}", self.session, self.epoch);
        if let Some(offset) = self.offset {
            q.push_str(&format!("&offset={offset}"));
        }
        q
    }

    /// Takes the offset of a history frame; offsets only go up.
    pub fn saw(&mut self, frame: &Value) {
        let offset = frame["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("a history frame: {frame}"));
        assert!(self.offset.is_none_or(|o| offset > o), "offsets go up: {frame}");
        self.offset = Some(offset);
    }
}

/// Reads the `$session` event, which comes first; returns its data and the position it starts.
pub async fn session(client: &mut Client) -> (Value, Position) {
    let frame = client.next_frame().await;
    assert_eq!(frame["event"], "$session", "the first frame tells the session: {frame}");
    let data = frame["data"].clone();
    let position = Position {
        session: data["session"].as_str().expect("a session id").to_owned(),
        epoch: data["epoch"].as_str().expect("an epoch").to_owned(),
        offset: None,
    };
    (data, position)
}
