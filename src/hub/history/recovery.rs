//! A connection's recovery: the hold on its live history events while it recovers, the
//! replay, and `Hub::recover` and `Hub::keep_session`; in a cluster, these read and keep
//! through Redis (`hub::cluster`).

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use parking_lot::Mutex;
use smallvec::SmallVec;

use super::{
    entry::Entry,
    sessions::Resume,
    store::{HistoryState, NotRecovered, Saved},
};
use crate::{
    hub::{Conn, ConnectionId, DisconnectReason, Hub, NsInner},
    outbox::Frame,
    protocol::close_code,
};

/// The recovery side of a connection: its session, and the hold while it recovers.
pub(crate) struct Recovery {
    session: Mutex<Arc<str>>,
    /// Set while recovering: live history events are held.
    holding: AtomicBool,
    /// The highest offset replayed (live history events at or below it were in the replay and
    /// are skipped). Any `u64` is a position: the hold is a flag of its own.
    skip_upto: AtomicU64,
    held: Mutex<Vec<(u64, Frame)>>,
    /// Set once the client has been told of its session (the first release).
    told: AtomicBool,
    /// No history event past this offset is queued any more: the node missed some after it
    /// and could not read them back, and the connection is closing (`u64::MAX`: no cut).
    cut: AtomicU64,
    /// The offset at which the connection joined each room.
    joined: Mutex<HashMap<Arc<str>, u64>>,
    since: AtomicU64,
    conns: Mutex<SmallVec<[u64; 4]>>,
    /// Set once the connection ended and its session was kept (or let go): a transport that
    /// keeps it early, before a slow close handshake, is not kept again at retirement.
    ended: AtomicBool,
}

impl fmt::Debug for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recovery")
            .field("session", &*self.session.lock())
            .finish()
    }
}

/// What [`Recovery::offer`] did with a live history event.
pub(crate) enum Offer {
    /// Queue it now.
    Send(Frame),
    /// Held until the recovery finishes.
    Held,
    /// Already in the replay.
    Skip,
    /// The hold is full: the connection is a slow consumer.
    Full,
}

impl Recovery {
    pub(crate) fn new(session: Arc<str>, since: u64, conn: ConnectionId) -> Self {
        Self {
            session: Mutex::new(session),
            holding: AtomicBool::new(false),
            skip_upto: AtomicU64::new(0),
            held: Mutex::default(),
            told: AtomicBool::new(false),
            cut: AtomicU64::new(u64::MAX),
            joined: Mutex::default(),
            since: AtomicU64::new(since),
            conns: Mutex::new(SmallVec::from_elem(conn.0, 1)),
            ended: AtomicBool::new(false),
        }
    }

    pub(crate) fn session(&self) -> Arc<str> {
        self.session.lock().clone()
    }

    /// A live history event for this connection.
    pub(crate) fn offer(&self, seq: u64, msg: Frame, cap: usize) -> Offer {
        if seq > self.cut.load(Ordering::Acquire) {
            return Offer::Skip;
        }
        if self.holding.load(Ordering::Acquire) {
            let mut held = self.held.lock();
            // The recovery may have finished meanwhile.
            if self.holding.load(Ordering::Acquire) {
                if held.len() >= cap {
                    return Offer::Full;
                }
                held.push((seq, msg));
                return Offer::Held;
            }
            drop(held);
            return self.offer(seq, msg, cap);
        }
        // `release` stores the skip before it clears the hold.
        if seq <= self.skip_upto.load(Ordering::Acquire) {
            Offer::Skip
        } else {
            Offer::Send(msg)
        }
    }

    fn hold(&self) {
        self.holding.store(true, Ordering::Release);
    }

    /// Ends the hold: queues `first` (what tells the client), then the replay merged with the
    /// live events held meanwhile that come after `after`; from then on, live history events
    /// go through, except those at or below `skip` (in the replay already, or older).
    fn release(&self, conn: &Conn, first: Vec<Frame>, replay: Vec<(u64, Frame)>, after: u64, skip: u64) {
        let mut held = self.held.lock();
        let cut = self.cut.load(Ordering::Acquire);
        let live: Vec<(u64, Frame)> = (std::mem::take(&mut *held).into_iter())
            .filter(|(seq, _)| *seq > after && *seq <= cut)
            .collect();
        let replay = replay.into_iter().filter(|(seq, _)| *seq <= cut).collect();
        let mut all = first;
        all.extend(merge(replay, live));
        conn.send_all(all);
        self.skip_upto.store(skip, Ordering::Release);
        self.told.store(true, Ordering::Release);
        self.holding.store(false, Ordering::Release);
    }

    /// History events this node missed and read back from Redis (`missed`, in offset order),
    /// given before any live event past them. While the connection recovers, they join the
    /// held events (merged with its replay, each offset once); once it has been told of its
    /// session, those its replay had already are left out and the others queued. Before that
    /// (a connection still being admitted), nothing: its recovery reads what it needs.
    #[cfg(feature = "cluster")]
    pub(crate) fn fill(&self, conn: &Conn, missed: Vec<(u64, Frame)>) {
        let mut held = self.held.lock();
        let cut = self.cut.load(Ordering::Acquire);
        let missed = missed.into_iter().filter(|(seq, _)| *seq <= cut);
        if self.holding.load(Ordering::Acquire) {
            held.extend(missed);
            return;
        }
        drop(held);
        if !self.told.load(Ordering::Acquire) {
            return;
        }
        let skip = self.skip_upto.load(Ordering::Acquire);
        conn.send_all(missed.filter(|(seq, _)| *seq > skip).map(|(_, m)| m).collect());
    }

    /// Whether the connection has been told of its session, or is being (its recovery runs).
    #[cfg(feature = "cluster")]
    pub(crate) fn started(&self) -> bool {
        self.holding.load(Ordering::Acquire) || self.told.load(Ordering::Acquire)
    }

    /// No history event past `offset` is queued from now on (held ones included): the
    /// connection is to close, and its client to resume from before what this node missed.
    pub(crate) fn cut_after(&self, offset: u64) {
        let _held = self.held.lock();
        self.cut.fetch_min(offset, Ordering::AcqRel);
    }

    /// Forgets which offsets the replay covered: they belonged to another epoch.
    #[cfg(feature = "cluster")]
    pub(crate) fn forget_replay(&self) {
        // While holding, the release to come sets the skip (under the same lock).
        let _held = self.held.lock();
        if !self.holding.load(Ordering::Acquire) {
            self.skip_upto.store(0, Ordering::Release);
        }
    }

    /// A new session starts no earlier than `seq`.
    fn raise_since(&self, seq: u64) {
        self.since.fetch_max(seq, Ordering::Relaxed);
    }

    pub(crate) fn joined(&self, room: &str, seq: u64) {
        self.joined.lock().insert(Arc::from(room), seq);
    }

    pub(crate) fn left(&self, room: &str) {
        self.joined.lock().remove(room);
    }

    /// The session as it is now, to keep while its client is away.
    pub(crate) fn save(&self, user: Option<&Arc<str>>, ns: &Arc<str>, epoch: &Arc<str>, rooms: &[String]) -> Saved {
        let since = self.since.load(Ordering::Relaxed);
        let joined = self.joined.lock();
        Saved {
            user: user.cloned(),
            ns: ns.clone(),
            epoch: epoch.clone(),
            rooms: rooms
                .iter()
                .map(|r| (Arc::from(r.as_str()), joined.get(r.as_str()).copied().unwrap_or(since)))
                .collect(),
            since,
            conns: self.conns.lock().clone(),
            at: Instant::now(),
        }
    }

    /// Takes over a saved session: its id, its join offsets, its earlier connections.
    fn adopt(&self, id: &str, saved: &Saved) {
        *self.session.lock() = Arc::from(id);
        self.since.store(saved.since, Ordering::Relaxed);
        let mut joined = self.joined.lock();
        for (room, seq) in &saved.rooms {
            joined.insert(room.clone(), *seq);
        }
        let mut conns = self.conns.lock();
        let current = conns.first().copied();
        let mut all: SmallVec<[u64; 4]> = saved.conns.clone();
        all.extend(current);
        let skip = all.len().saturating_sub(4);
        *conns = all.into_iter().skip(skip).collect();
    }
}

/// The replay and the held events, merged in offset order, each offset once.
fn merge(replay: Vec<(u64, Frame)>, held: Vec<(u64, Frame)>) -> Vec<Frame> {
    let mut all = replay;
    all.extend(held);
    // Stable: for an offset in both, the replay's frame comes first and stays.
    all.sort_by_key(|(seq, _)| *seq);
    all.dedup_by_key(|(seq, _)| *seq);
    all.into_iter().map(|(_, m)| m).collect()
}

impl HistoryState {
    /// The epoch, from Redis in a cluster (as known when Redis does not answer).
    async fn epoch_now(&self, hub: &Hub) -> Option<Arc<str>> {
        #[cfg(feature = "cluster")]
        if self.shared {
            return crate::hub::cluster::epoch_now(hub, self).await;
        }
        let _ = hub;
        Some(self.epoch.clone())
    }

    /// Takes the session `resume` names, when this client may have it.
    async fn take_checked(
        &self,
        hub: &Hub,
        user: Option<&Arc<str>>,
        ns: &Arc<str>,
        resume: &Resume,
    ) -> Result<Saved, NotRecovered> {
        if resume.unknown_offset {
            return Err(NotRecovered::UnknownOffset);
        }
        #[cfg(feature = "cluster")]
        if self.shared {
            return crate::hub::cluster::take_session(hub, user, ns, resume).await;
        }
        let _ = hub;
        self.check(user, ns, resume)
    }

    /// What a session missed after `offset` (see [`missed`](Self::missed)).
    async fn read_missed(&self, hub: &Hub, saved: &Saved, offset: u64) -> Result<(Vec<Arc<Entry>>, u64), NotRecovered> {
        #[cfg(feature = "cluster")]
        if self.shared {
            return crate::hub::cluster::read_missed(hub, self, saved, offset).await;
        }
        let _ = hub;
        self.missed(saved, offset)
    }
}

/// A recovered session, as told to its client.
#[derive(Debug, Clone)]
pub(crate) struct Recovered {
    pub(crate) rooms: Vec<String>,
    pub(crate) missed: usize,
}

/// What a client is told of its session when it connects.
#[derive(Debug)]
pub(crate) struct SessionNews<'a> {
    /// The session to present next time (none when the hub keeps no history).
    pub(crate) session: Option<Arc<str>>,
    pub(crate) epoch: Option<&'a str>,
    pub(crate) outcome: Option<Result<&'a Recovered, NotRecovered>>,
}

impl SessionNews<'_> {
    /// The native protocol's `$session` event data.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let mut news = serde_json::json!({ "session": self.session.as_deref(), "epoch": self.epoch });
        match self.outcome {
            None => news["recovered"] = false.into(),
            Some(Ok(recovered)) => {
                news["recovered"] = true.into();
                news["missed"] = recovered.missed.into();
                news["rooms"] = serde_json::json!(recovered.rooms);
            }
            Some(Err(reason)) => {
                news["recovered"] = false.into();
                news["reason"] = reason.as_str().into();
            }
        }
        news
    }
}

impl Hub {
    /// Starts a registered connection's recovery session: a new one, or `resume`d (rooms
    /// restored, missed events queued). `rejoin` gives, of the session's rooms, those the
    /// connection may still be in (the app's rejoin guard): the others are neither restored
    /// nor replayed. `answer` gives the frames that tell the client, which go first. Returns
    /// whether the connection recovered.
    pub(crate) async fn recover<R>(
        &self,
        ns: &Arc<NsInner>,
        conn: &Arc<Conn>,
        resume: Option<&Resume>,
        rejoin: impl FnOnce(Vec<Arc<str>>) -> R,
        answer: impl FnOnce(&SessionNews<'_>) -> Vec<Frame>,
    ) -> bool
    where
        R: std::future::Future<Output = Vec<Arc<str>>>,
    {
        let (Some(history), Some(recovery)) = (&self.inner.history, &conn.recovery) else {
            let news = SessionNews {
                session: None,
                epoch: None,
                outcome: resume.map(|_| Err(NotRecovered::Disabled)),
            };
            conn.send_all(answer(&news));
            return false;
        };
        // From here, live history events wait until the client has been told of its session,
        // and has its replay.
        recovery.hold();
        let Some(resume) = resume else {
            let epoch = history.epoch_now(self).await;
            // A new session starts with what this node delivers from now on.
            recovery.raise_since(history.current());
            history.hold_session(recovery.session(), conn);
            let news = SessionNews {
                session: Some(recovery.session()),
                epoch: epoch.as_deref(),
                outcome: None,
            };
            recovery.release(conn, answer(&news), Vec::new(), 0, 0);
            return false;
        };
        let user = conn.identity.user_key();
        let offset = resume.offset.unwrap_or(0);
        if history.local() {
            history.take_over(&resume.session, conn).await;
        }
        let outcome = match history.take_checked(self, user, &ns.name, resume).await {
            Err(e) => Err(e),
            Ok(mut saved) => {
                // Re-authorised: back only in the rooms the connection may still be in.
                let allowed = rejoin(saved.rooms.iter().map(|(r, _)| r.clone()).collect()).await;
                saved.rooms.retain(|(r, _)| allowed.contains(r));
                for (name, _) in &saved.rooms {
                    let _ = ns.join(self, conn, name);
                }
                match history.read_missed(self, &saved, offset).await {
                    Ok(missed) => Ok((saved, missed)),
                    Err(e) => {
                        for (name, _) in &saved.rooms {
                            ns.registry.leave(conn, name);
                        }
                        Err(e)
                    }
                }
            }
        };
        let recovered = outcome.is_ok();
        match outcome {
            Ok((saved, (entries, upto))) => {
                recovery.adopt(&resume.session, &saved);
                history.hold_session(recovery.session(), conn);
                let recovered = Recovered {
                    rooms: saved.rooms.iter().map(|(r, _)| r.to_string()).collect(),
                    missed: entries.len(),
                };
                let news = SessionNews {
                    session: Some(recovery.session()),
                    epoch: Some(&saved.epoch),
                    outcome: Some(Ok(&recovered)),
                };
                let replay = (entries.iter())
                    .map(|e| (e.seq, e.frame(conn.proto, &saved.ns, &saved.epoch)))
                    .collect();
                // Every event up to `upto` was delivered, held or in the replay when the replay
                // was read; in a cluster, where delivery lags behind, late copies are skipped,
                // and held copies of what the client had already.
                recovery.release(conn, answer(&news), replay, offset, upto.max(offset));
            }
            Err(e) => {
                history.hold_session(recovery.session(), conn);
                let epoch = history.known_epoch();
                let news = SessionNews {
                    session: Some(recovery.session()),
                    epoch: epoch.as_deref(),
                    outcome: Some(Err(e)),
                };
                recovery.release(conn, answer(&news), Vec::new(), 0, 0);
            }
        }
        let counters = &self.inner.counters;
        match recovered {
            true => counters.recovered.fetch_add(1, Ordering::Relaxed),
            false => counters.not_recovered.fetch_add(1, Ordering::Relaxed),
        };
        recovered
    }

    /// Keeps the session of a connection that ended, unless its ending says nobody will come
    /// back for it: the client said goodbye, or the server put it out. Once per connection:
    /// later calls do nothing.
    pub(crate) fn keep_session(&self, ns: &NsInner, conn: &Conn, reason: &DisconnectReason) {
        let (Some(history), Some(recovery)) = (&self.inner.history, &conn.recovery) else {
            return;
        };
        if recovery.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        let dropped = match reason {
            DisconnectReason::ClientClosed(code) => code.is_some_and(|c| c != close_code::NORMAL),
            DisconnectReason::ServerClosed(code, _) => [
                close_code::GOING_AWAY,
                close_code::PING_TIMEOUT,
                close_code::TRY_AGAIN_LATER,
                close_code::SESSION_TAKEN_OVER,
                close_code::HISTORY_GAP,
            ]
            .contains(code),
            DisconnectReason::TransportClosed | DisconnectReason::TransportError(_) => true,
        };
        // In a cluster, nothing is known of the history before Redis was first asked.
        let epoch = if dropped { history.known_epoch() } else { None };
        if let Some(epoch) = epoch {
            let saved = recovery.save(conn.identity.user_key(), &ns.name, &epoch, &conn.rooms());
            if history.local() {
                if !history.keep(recovery.session(), saved) {
                    tracing::debug!(conn = %conn.id, "too many sessions kept: this one is not");
                }
            } else {
                #[cfg(feature = "cluster")]
                crate::hub::cluster::keep_session(self, history, &recovery.session(), &saved);
            }
        }
        // Last: a takeover waiting for this connection finds the session kept.
        history.end_session(&recovery.session(), conn);
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::Message;

    use super::*;

    #[test]
    fn held_events_follow_the_replay_without_duplicates() {
        let r = Recovery::new(Arc::from("s"), 0, ConnectionId(1));
        r.hold();
        assert!(matches!(r.offer(5, Frame::new(Message::text("5")), 10), Offer::Held));
        assert!(matches!(r.offer(7, Frame::new(Message::text("7")), 10), Offer::Held));
        // The replay holds 3 and 5; 7 came live only.
        let replay = vec![(3, Frame::new(Message::text("3"))), (5, Frame::new(Message::text("5")))];
        let frames = merge(replay, std::mem::take(&mut *r.held.lock()));
        r.skip_upto.store(5, Ordering::Release);
        r.holding.store(false, Ordering::Release);
        assert_eq!(
            frames,
            vec![
                Frame::new(Message::text("3")),
                Frame::new(Message::text("5")),
                Frame::new(Message::text("7"))
            ]
        );
        assert!(matches!(r.offer(4, Frame::new(Message::text("4")), 10), Offer::Skip));
        assert!(matches!(r.offer(8, Frame::new(Message::text("8")), 10), Offer::Send(_)));
    }

    #[cfg(feature = "cluster")]
    fn text(n: u64) -> Frame {
        Frame::new(Message::text(n.to_string()))
    }

    #[cfg(feature = "cluster")]
    fn queued(rx: &mut crate::outbox::Receiver) -> Vec<Frame> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn events_read_back_after_a_hole_join_a_recovery_or_follow_its_replay_once() {
        let identity = crate::auth::Identity::user("u", Default::default());
        // Recovering: they are held, and merged with the replay, each offset once.
        let r = Recovery::new(Arc::from("s"), 0, ConnectionId(1));
        let (conn, mut rx) = Conn::new(ConnectionId(1), identity.clone(), 8, None, Default::default());
        assert!(!r.started());
        r.fill(&conn, vec![(2, text(2))]);
        assert!(queued(&mut rx).is_empty(), "not told of its session yet: nothing");
        r.hold();
        assert!(r.started());
        r.fill(&conn, vec![(4, text(4)), (5, text(5))]);
        assert!(queued(&mut rx).is_empty());
        r.release(&conn, Vec::new(), vec![(3, text(3)), (4, text(4))], 2, 4);
        assert_eq!(queued(&mut rx), vec![text(3), text(4), text(5)]);
        // Told: what its replay had is left out, the rest queued in order.
        r.fill(&conn, vec![(4, text(4)), (6, text(6)), (7, text(7))]);
        assert_eq!(queued(&mut rx), vec![text(6), text(7)]);
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn after_a_cut_no_history_event_past_it_is_queued() {
        let identity = crate::auth::Identity::user("u", Default::default());
        let r = Recovery::new(Arc::from("s"), 0, ConnectionId(1));
        let (conn, mut rx) = Conn::new(ConnectionId(1), identity, 8, None, Default::default());
        r.hold();
        assert!(matches!(r.offer(3, text(3), 10), Offer::Held));
        assert!(matches!(r.offer(6, text(6), 10), Offer::Held));
        r.cut_after(4);
        assert!(matches!(r.offer(5, text(5), 10), Offer::Skip));
        r.fill(&conn, vec![(4, text(4)), (5, text(5))]);
        r.release(&conn, Vec::new(), vec![(2, text(2)), (6, text(6))], 1, 6);
        assert_eq!(queued(&mut rx), vec![text(2), text(3), text(4)]);
        assert!(matches!(r.offer(7, text(7), 10), Offer::Skip));
        r.fill(&conn, vec![(8, text(8))]);
        assert!(queued(&mut rx).is_empty());
        // A later cut never moves it forward.
        r.cut_after(9);
        assert!(matches!(r.offer(9, text(9), 10), Offer::Skip));
    }
}
