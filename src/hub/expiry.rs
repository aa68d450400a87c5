//! Token lifetime: the connections whose identity expires, and the one hub-wide sweeper that
//! warns them (`token_expiring`) and closes them (`4003`) when their deadline passes.
//!
//! A connection whose identity has no expiry is never entered here: it costs nothing. The
//! sweeper is a single task for the whole hub, started when the first expiring connection
//! arrives and gone once none is left; it sleeps until the next warning or deadline (or until
//! an earlier one is entered), so an expiry is acted on when it is due, not on a heartbeat.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Weak,
    },
    time::{Duration, SystemTime},
};

use parking_lot::Mutex;
use serde_json::json;
use tokio::{sync::Notify, time::Instant};
use tokio_tungstenite::tungstenite::Message;

use super::{emit::Packet, Conn, ConnectionId, Hub, HubInner, NsInner, Proto};
use crate::protocol::{close_code, native};

use crate::protocol::TOKEN_EXPIRING_EVENT as EXPIRING_EVENT;

/// The longest a deadline is kept as it is (a century).
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The expiring connections of a hub.
#[derive(Default)]
pub(crate) struct Expiry {
    state: Mutex<State>,
    /// Wakes the sweeper when an entry is due before the time it sleeps until.
    wake: Arc<Notify>,
    /// Whether a connection was ever entered: a hub whose identities never expire takes no
    /// lock when its connections end.
    used: AtomicBool,
}

#[derive(Default)]
struct State {
    entries: HashMap<ConnectionId, Entry>,
    /// Whether the sweeper task runs.
    running: bool,
    /// When the sweeper wakes next.
    next: Option<Instant>,
}

struct Entry {
    ns: Arc<NsInner>,
    conn: Arc<Conn>,
    /// When the identity expires, as the client is told it.
    at: SystemTime,
    deadline: Instant,
    warned: bool,
}

/// What the sweeper does to one connection.
enum Act {
    Warn(Arc<NsInner>, Arc<Conn>, SystemTime),
    Expire(Arc<NsInner>, Arc<Conn>),
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Expiry {
    /// Enters (or moves) a connection's deadline: `at`, or none. Starts the sweeper when
    /// needed (from within the runtime, as every connection is).
    pub(crate) fn set(&self, hub: &Hub, ns: &Arc<NsInner>, conn: &Arc<Conn>, at: Option<SystemTime>) {
        let mut state = self.state.lock();
        self.used.store(true, Ordering::Relaxed);
        let Some(at) = at else {
            state.entries.remove(&conn.id);
            return;
        };
        // A century at most: an expiry far in the future must not overflow the clock.
        let left = (at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)).min(FAR);
        let deadline = Instant::now() + left;
        let entry = Entry {
            ns: ns.clone(),
            conn: conn.clone(),
            at,
            deadline,
            warned: false,
        };
        state.entries.insert(conn.id, entry);
        let due = Self::due(&hub.inner.config, deadline);
        if !state.running {
            state.running = true;
            state.next = Some(due);
            tokio::spawn(sweep(Arc::downgrade(&hub.inner), self.wake.clone()));
        } else if state.next.is_none_or(|next| due < next) {
            state.next = Some(due);
            self.wake.notify_one();
        }
    }

    /// Forgets a connection (it ended).
    pub(crate) fn remove(&self, id: ConnectionId) {
        // Set under the lock before an entry goes in, by the connection's own task (entering
        // it, or its `$refresh`), which retires it later: never missed here.
        if !self.used.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.state.lock();
        if !state.entries.is_empty() {
            state.entries.remove(&id);
        }
    }

    /// When an entry with this deadline needs the sweeper first: its warning, or its end.
    fn due(cfg: &crate::config::Config, deadline: Instant) -> Instant {
        match cfg.token_expiry_warning {
            Some(warning) => deadline.checked_sub(warning).unwrap_or(deadline),
            None => deadline,
        }
    }

    /// What is due now, and when the sweeper wakes next (`None`: nothing is left, it stops).
    fn take_due(&self, cfg: &crate::config::Config) -> (Vec<Act>, Option<Instant>) {
        let now = Instant::now();
        let mut state = self.state.lock();
        let mut acts = Vec::new();
        let mut next: Option<Instant> = None;
        state.entries.retain(|_, e| {
            if e.deadline <= now {
                acts.push(Act::Expire(e.ns.clone(), e.conn.clone()));
                return false;
            }
            let warn_at = Self::due(cfg, e.deadline);
            let wake = if e.warned || cfg.token_expiry_warning.is_none() {
                e.deadline
            } else if warn_at <= now {
                e.warned = true;
                acts.push(Act::Warn(e.ns.clone(), e.conn.clone(), e.at));
                e.deadline
            } else {
                warn_at
            };
            next = Some(next.map_or(wake, |n| n.min(wake)));
            true
        });
        state.next = next;
        if next.is_none() {
            state.running = false;
        }
        (acts, next)
    }
}

/// The hub's sweeper: warns and closes expiring connections when they are due. Holds the hub
/// weakly: a dropped hub ends it at its next wake-up.
async fn sweep(hub: Weak<HubInner>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = hub.upgrade() else { return };
            let hub = Hub { inner };
            let cfg = &hub.inner.config;
            let (acts, next) = hub.inner.expiry.take_due(cfg);
            for act in acts {
                match act {
                    Act::Warn(ns, conn, at) => {
                        let left = at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
                        let data = json!({ "expires_at": unix_secs(at), "expires_in_ms": left.as_millis() as u64 });
                        tell(&hub, &ns, &conn, EXPIRING_EVENT, &data);
                    }
                    Act::Expire(ns, conn) => {
                        let error = json!({
                            "status": "token_expired",
                            "message": "token expired",
                            "code": close_code::TOKEN_EXPIRED,
                        });
                        tell_error(&hub, &ns, &conn, &error);
                        if cfg.close_on_token_expiry {
                            tracing::debug!(conn = %conn.id, "token expired: closing the connection");
                            conn.request_close(close_code::TOKEN_EXPIRED, "token expired");
                        }
                    }
                }
            }
            match next {
                Some(next) => next,
                None => return,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = wake.notified() => {}
        }
    }
}

/// Queues one event for this connection only (kept in no history, sent to no other node).
/// Sends an error event: for a native connection, as the hub's config names and shapes it.
#[cfg_attr(not(feature = "socketio"), allow(unused_variables))]
fn tell_error(hub: &Hub, ns: &NsInner, conn: &Conn, error: &serde_json::Value) {
    match conn.proto {
        Proto::Native => {
            let frame = native::encode_error_as(&hub.inner.config, None, error);
            conn.send(hub, Message::Text(frame));
        }
        #[cfg(feature = "socketio")]
        Proto::SocketIo => tell(hub, ns, conn, "error", error),
    }
}

fn tell(hub: &Hub, ns: &NsInner, conn: &Conn, event: &str, data: &serde_json::Value) {
    let json = data.to_string();
    conn.send_frames(hub, Packet::new(&ns.name, event, &json).frame(conn.proto));
}
