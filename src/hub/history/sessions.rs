//! Kept sessions: what a client presents to resume, the sessions of dropped connections
//! waiting for their clients, and the takeover of a session still held by an older connection.

use std::{sync::Arc, time::Duration};

use super::store::{HistoryState, NotRecovered, Saved};
use crate::{hub::Conn, protocol::close_code};

/// Longest session id or epoch a client may present (the native `session` and `epoch`,
/// Socket.IO's `pid`); the ids given out are 32 hex digits, the epochs 16.
pub(crate) const MAX_RECOVERY_TOKEN: usize = 64;

/// What a client asks of recovery at its handshake.
#[derive(Debug, Clone)]
pub(crate) enum Ask {
    /// A session, nothing to recover.
    New,
    /// Resume this session.
    Resume(Resume),
}

/// What a client presents to recover.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resume {
    pub(crate) session: String,
    /// The epoch of the client's last position, when it has one.
    pub(crate) epoch: Option<String>,
    /// The offset of the last history event the client received.
    pub(crate) offset: Option<u64>,
    /// The client presented a position that is not one of ours.
    pub(crate) unknown_offset: bool,
}

/// How long a connection resuming a session waits for the older connection holding it to
/// let it go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);

impl HistoryState {
    /// Keeps a dropped connection's session. Returns `false` when too many are kept already.
    pub(crate) fn keep(&self, id: Arc<str>, saved: Saved) -> bool {
        let mut sessions = self.sessions.lock();
        if sessions.len() >= self.cfg.max_sessions {
            let ttl = self.cfg.session_ttl;
            sessions.retain(|_, s| s.at.elapsed() <= ttl);
            if sessions.len() >= self.cfg.max_sessions {
                return false;
            }
        } else if sessions.len() % 256 == 255 {
            let ttl = self.cfg.session_ttl;
            sessions.retain(|_, s| s.at.elapsed() <= ttl);
        }
        sessions.insert(id, saved);
        true
    }

    /// The sessions of `user` kept on this node forget `room`: recovering one does not bring it
    /// back.
    pub(crate) fn forget_room(&self, user: &str, room: &str) {
        for saved in self.sessions.lock().values_mut() {
            if saved.user.as_deref() == Some(user) {
                saved.rooms.retain(|(r, _)| &**r != room);
            }
        }
    }

    /// The sessions of `user` kept on this node are dropped: none is resumed.
    pub(crate) fn forget_user(&self, user: &str) {
        self.sessions
            .lock()
            .retain(|_, saved| saved.user.as_deref() != Some(user));
    }

    /// Whether this node's sessions are kept here (not in a cluster's Redis).
    pub(super) fn local(&self) -> bool {
        #[cfg(feature = "cluster")]
        if self.shared {
            return false;
        }
        true
    }

    /// `conn` holds session `id` from now on.
    pub(super) fn hold_session(&self, id: Arc<str>, conn: &Arc<Conn>) {
        self.live.lock().insert(id, Arc::downgrade(conn));
    }

    /// `conn` ended: it holds its session no more.
    pub(super) fn end_session(&self, id: &str, conn: &Conn) {
        let mut live = self.live.lock();
        if live.get(id).is_some_and(|w| std::ptr::eq(w.as_ptr(), conn)) {
            live.remove(id);
            drop(live);
            // A takeover waiting for this connection stops waiting, kept session or not.
            self.kept.notify_waiters();
        }
    }

    /// A client is back with session `id` while another connection still holds it: the
    /// client's old connection, which this server has not yet seen to be gone (a network
    /// change, a phone waking up). That one is closed with `4002` and its session kept, for
    /// `conn` to resume. Waits at most `TAKEOVER_WAIT`.
    pub(super) async fn take_over(&self, id: &str, conn: &Conn) {
        let old = self.live.lock().get(id).and_then(std::sync::Weak::upgrade);
        let Some(old) = old else { return };
        if old.id == conn.id || old.identity.user_key() != conn.identity.user_key() {
            return;
        }
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        old.request_close(
            close_code::SESSION_TAKEN_OVER,
            "session taken over by a newer connection",
        );
        drop(old);
        loop {
            let kept = self.kept.notified();
            if !self.live.lock().contains_key(id) || tokio::time::Instant::now() >= deadline {
                return;
            }
            let _ = tokio::time::timeout_at(deadline, kept).await;
        }
    }

    /// Takes a kept session (once), unless it expired, when `user` in namespace `ns` is its
    /// owner. Anyone else finds nothing, and leaves the session to its owner: a session id
    /// that leaked (an access log, a shared link) cannot be spent by someone else, nor told
    /// apart from one that does not exist.
    pub(crate) fn take(&self, id: &str, user: Option<&Arc<str>>, ns: &Arc<str>) -> Option<Saved> {
        let mut sessions = self.sessions.lock();
        let saved = sessions.get(id)?;
        if saved.user.as_deref() != user.map(|u| &**u) || saved.ns != *ns {
            return None;
        }
        let saved = sessions.remove(id)?;
        (saved.at.elapsed() <= self.cfg.session_ttl).then_some(saved)
    }

    pub(super) fn check(&self, user: Option<&Arc<str>>, ns: &Arc<str>, resume: &Resume) -> Result<Saved, NotRecovered> {
        if resume.epoch.as_deref().is_some_and(|e| e != &*self.epoch) {
            return Err(NotRecovered::EpochChanged);
        }
        let saved = (self.take(&resume.session, user, ns)).ok_or(NotRecovered::UnknownSession)?;
        if saved.epoch != self.epoch {
            return Err(NotRecovered::EpochChanged);
        }
        Ok(saved)
    }
}
