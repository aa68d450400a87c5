//! The histories of a node: streams, their offsets, and eviction by count, age and memory;
//! and the hub's [`HistoryState`], which holds them. Nothing here asks the cluster: what does
//! is in `recovery`.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use parking_lot::Mutex;
use smallvec::SmallVec;

use super::{
    entry::{Entry, NewEvent},
    History,
};
use crate::hub::{counters::Counter, Conn, Target};

/// What a stream holds the events of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum StreamKind {
    All,
    Room,
    User,
}

/// One history: the broadcasts, one room or one user, of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct StreamKey {
    pub(crate) ns: Arc<str>,
    pub(crate) kind: StreamKind,
    pub(crate) name: Arc<str>,
}

impl StreamKey {
    pub(crate) fn new(ns: &Arc<str>, kind: StreamKind, name: &str) -> Self {
        Self {
            ns: ns.clone(),
            kind,
            name: Arc::from(name),
        }
    }

    /// The stream's name in Redis: `<kind><length of ns>:<ns>:<name>`, kind `a` (everyone),
    /// `r` (a room) or `u` (a user), e.g. `r1:/:general`; the length keeps any two apart.
    #[cfg(feature = "cluster")]
    pub(crate) fn redis_name(&self) -> String {
        let kind = match self.kind {
            StreamKind::All => 'a',
            StreamKind::Room => 'r',
            StreamKind::User => 'u',
        };
        format!("{kind}{}:{}:{}", self.ns.len(), self.ns, self.name)
    }
}

/// Bookkeeping counted for each stream, besides its name.
const STREAM_OVERHEAD: usize = 192;

fn record_size(key: &StreamKey) -> usize {
    STREAM_OVERHEAD + key.name.len()
}

/// One stream's events, oldest first.
struct Stream {
    entries: VecDeque<Arc<Entry>>,
    /// The highest offset evicted from this stream: a client that needs anything after an
    /// earlier offset cannot recover.
    evicted_upto: u64,
    last_append: Instant,
}

/// The histories of one node.
#[derive(Default)]
struct Store {
    /// The last offset given out.
    seq: u64,
    streams: HashMap<StreamKey, Stream>,
    /// The oldest event of each non-empty stream, by offset: the memory cap evicts the oldest
    /// events anywhere first.
    fronts: BTreeSet<(u64, StreamKey)>,
    bytes: usize,
    /// The highest offset of a stream dropped whole under the memory cap: a stream no longer
    /// known may have lost anything up to here.
    lost_upto: u64,
    evicted: u64,
}

impl Store {
    fn append(&mut self, key: &StreamKey, entry: &Arc<Entry>, cfg: &History) {
        let mut size = entry.size();
        let stream = self.streams.entry(key.clone()).or_insert_with(|| {
            size += record_size(key);
            Stream {
                entries: VecDeque::new(),
                evicted_upto: 0,
                last_append: entry.at,
            }
        });
        if stream.entries.is_empty() {
            self.fronts.insert((entry.seq, key.clone()));
        }
        stream.entries.push_back(entry.clone());
        stream.last_append = entry.at;
        self.bytes += size;
        while self.streams[key].entries.len() > cfg.max_events {
            self.pop_front(key);
        }
    }

    /// Evicts the oldest event of a stream.
    fn pop_front(&mut self, key: &StreamKey) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        let Some(old) = stream.entries.pop_front() else { return };
        stream.evicted_upto = stream.evicted_upto.max(old.seq);
        self.bytes -= old.size();
        self.evicted += 1;
        self.fronts.remove(&(old.seq, key.clone()));
        if let Some(next) = stream.entries.front() {
            self.fronts.insert((next.seq, key.clone()));
        }
    }

    /// Evicts what is older than `max_age`, then what is over `max_bytes`, oldest first.
    fn trim(&mut self, cfg: &History, now: Instant) {
        while let Some((_, key)) = self.fronts.first().cloned() {
            let oldest = self.streams[&key].entries.front().map(|e| e.at);
            if oldest.is_none_or(|at| now.duration_since(at) <= cfg.max_age) {
                break;
            }
            self.pop_front(&key);
        }
        while self.bytes > cfg.max_bytes {
            if let Some((_, key)) = self.fronts.first().cloned() {
                self.pop_front(&key);
                continue;
            }
            // Only the records of empty streams are left: they go, and a stream no longer
            // known counts as having lost everything any of them had lost.
            for (key, stream) in self.streams.drain() {
                self.lost_upto = self.lost_upto.max(stream.evicted_upto);
                self.bytes -= record_size(&key);
            }
            break;
        }
    }

    /// Forgets empty streams whose last event is so old that any client that was there then
    /// has seen it (run now and then, so that the records of quiet streams do not pile up).
    fn forget_quiet(&mut self, cfg: &History, now: Instant) {
        let quiet = cfg.max_age + cfg.session_ttl;
        let mut freed = 0;
        self.streams.retain(|key, s| {
            let keep = !s.entries.is_empty() || now.duration_since(s.last_append) <= quiet;
            if !keep {
                freed += record_size(key);
            }
            keep
        });
        self.bytes -= freed;
    }
}

/// Why a client did not recover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotRecovered {
    /// The hub keeps no history.
    Disabled,
    /// No such session: it expired, was used already, never existed, or is someone else's.
    UnknownSession,
    /// The history the client's position refers to is gone (a restart, or Redis lost it).
    EpochChanged,
    /// Some of the missed events were evicted.
    Evicted,
    /// More events were missed than [`History::max_replay`].
    TooMany,
    /// The client's position is not one this hub gave out (of another kind, or beyond the
    /// last offset given out).
    UnknownOffset,
    /// The history could not be read (in a cluster: Redis did not answer).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Unavailable,
}

impl NotRecovered {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "history is not enabled",
            Self::UnknownSession => "unknown or expired session",
            Self::EpochChanged => "history was lost (epoch changed)",
            Self::Evicted => "missed events were evicted",
            Self::TooMany => "too many missed events",
            Self::UnknownOffset => "unknown offset",
            Self::Unavailable => "history is unavailable",
        }
    }
}

/// A dropped connection's session, kept for its client to come back.
#[derive(Debug, Clone)]
pub(crate) struct Saved {
    pub(crate) user: Option<Arc<str>>,
    pub(crate) ns: Arc<str>,
    pub(crate) epoch: Arc<str>,
    /// Each room, with the offset at which the session joined it.
    pub(crate) rooms: Vec<(Arc<str>, u64)>,
    /// The offset at which the session began (for its user's and the broadcast streams).
    pub(crate) since: u64,
    /// The session's connection ids, newest last (an emit that left one out is not replayed).
    pub(crate) conns: SmallVec<[u64; 4]>,
    pub(crate) at: Instant,
}

impl Saved {
    /// Whether a replay to this session leaves `entry` out (the emit left out one of its
    /// connections, its user, or a room it was in).
    pub(crate) fn skips(&self, entry: &Entry) -> bool {
        entry.excludes(&self.conns, self.user.as_deref(), &self.rooms)
    }
}

/// A hub's history: the store (on this node) and the sessions waiting for their clients; in a
/// cluster, both are in Redis, and this is what the node knows of them.
pub(crate) struct HistoryState {
    pub(crate) cfg: History,
    /// The epoch of this node's history; in a cluster, the epoch proposed when Redis has none.
    pub(crate) epoch: Arc<str>,
    store: Mutex<Store>,
    /// The last offset given out (read without the store's lock, for join offsets); in a
    /// cluster, the last one delivered on this node.
    pub(crate) current: AtomicU64,
    pub(super) sessions: Mutex<HashMap<Arc<str>, Saved>>,
    /// The open connections with a session, by session id: a client back before its old
    /// connection was seen to be gone takes the session over.
    pub(super) live: Mutex<HashMap<Arc<str>, std::sync::Weak<Conn>>>,
    /// Woken when a connection lets go of its session (after keeping it, when it does).
    pub(super) kept: tokio::sync::Notify,
    /// The history is the cluster's, in Redis.
    #[cfg(feature = "cluster")]
    pub(crate) shared: bool,
    /// In a cluster: the epoch as last seen in Redis (none before the first look).
    #[cfg(feature = "cluster")]
    pub(crate) shared_epoch: Mutex<Option<Arc<str>>>,
    /// In a cluster: the offset of the last history event delivered on this node, to notice
    /// the ones that never arrived.
    #[cfg(feature = "cluster")]
    pub(crate) delivered: AtomicU64,
}

impl fmt::Debug for HistoryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryState")
            .field("epoch", &self.epoch)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// A random id: 128 bits, hex.
pub(crate) fn random_id(bytes: usize) -> Result<String, getrandom::Error> {
    // From the OS generator only: a session id is the credential that resumes a session, so
    // when the system source fails this fails too, and no weaker generator stands in.
    let mut buf = [0u8; 16];
    let buf = &mut buf[..bytes.min(16)];
    getrandom::fill(buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A new epoch: random, or (when the OS generator fails) the time, which names a history's
/// lifetime as well. An epoch is public (every kept event carries it), not a credential.
fn new_epoch() -> String {
    random_id(8).unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{:016x}", nanos as u64)
    })
}

impl HistoryState {
    /// A history of this node only, or (`shared`) of the cluster, kept in Redis.
    #[cfg_attr(not(feature = "cluster"), allow(unused_variables))]
    pub(crate) fn new(cfg: History, shared: bool) -> Self {
        Self {
            cfg,
            epoch: Arc::from(new_epoch()),
            store: Mutex::default(),
            current: AtomicU64::new(0),
            sessions: Mutex::default(),
            live: Mutex::default(),
            kept: tokio::sync::Notify::new(),
            #[cfg(feature = "cluster")]
            shared,
            #[cfg(feature = "cluster")]
            shared_epoch: Mutex::new(None),
            #[cfg(feature = "cluster")]
            delivered: AtomicU64::new(0),
        }
    }

    /// The epoch as this node knows it (in a cluster, none until Redis was asked or an event
    /// came).
    pub(crate) fn known_epoch(&self) -> Option<Arc<str>> {
        #[cfg(feature = "cluster")]
        if self.shared {
            return self.shared_epoch.lock().clone();
        }
        Some(self.epoch.clone())
    }

    /// The streams a session takes part in, each with the offset from which it was there.
    pub(crate) fn wanted(&self, saved: &Saved) -> Vec<(StreamKey, u64)> {
        let mut wanted: Vec<(StreamKey, u64)> = saved
            .rooms
            .iter()
            .filter(|(room, _)| self.cfg.keeps_room(room))
            .map(|(room, joined)| (StreamKey::new(&saved.ns, StreamKind::Room, room), *joined))
            .collect();
        if self.cfg.broadcasts {
            wanted.push((StreamKey::new(&saved.ns, StreamKind::All, ""), saved.since));
        }
        if let (true, Some(user)) = (self.cfg.users, &saved.user) {
            wanted.push((StreamKey::new(&saved.ns, StreamKind::User, user), saved.since));
        }
        wanted
    }

    /// The last offset given out.
    pub(crate) fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// The streams an emit to `targets` is kept in.
    pub(crate) fn streams(&self, ns: &Arc<str>, targets: &[Target<'_>]) -> SmallVec<[StreamKey; 2]> {
        let mut keys: SmallVec<[StreamKey; 2]> = SmallVec::new();
        for target in targets {
            let key = match *target {
                Target::All if self.cfg.broadcasts => StreamKey::new(ns, StreamKind::All, ""),
                Target::Room(room) if self.cfg.keeps_room(room) => StreamKey::new(ns, StreamKind::Room, room),
                Target::User(user) if self.cfg.users => StreamKey::new(ns, StreamKind::User, user),
                _ => continue,
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }

    /// Appends an event to `keys` with the next offset, and hands it to `deliver` (with the
    /// history's epoch, for its frames) under the same lock, so that every connection gets its
    /// history events in offset order.
    pub(crate) fn append<R>(
        &self,
        keys: &[StreamKey],
        event: &NewEvent<'_>,
        evictions: &Counter,
        deliver: impl FnOnce(&Arc<Entry>, &Arc<str>) -> R,
    ) -> R {
        let mut store = self.store.lock();
        let evicted_before = store.evicted;
        store.seq += 1;
        let except = event.except.iter().map(|c| c.0);
        let entry = Arc::new(
            Entry::new(store.seq, event.event, event.data, except)
                .leaving_out(event.except_rooms.iter().copied(), event.except_users.iter().copied()),
        );
        for key in keys {
            store.append(key, &entry, &self.cfg);
        }
        store.trim(&self.cfg, entry.at);
        if entry.seq % 4096 == 0 {
            store.forget_quiet(&self.cfg, entry.at);
        }
        self.current.store(entry.seq, Ordering::Release);
        evictions.fetch_add(store.evicted - evicted_before, Ordering::Relaxed);
        deliver(&entry, &self.epoch)
    }

    /// Events evicted so far.
    #[cfg(test)]
    fn evicted(&self) -> u64 {
        self.store.lock().evicted
    }

    /// The events a session missed after `offset`, in offset order, one each, and the last
    /// offset given out when they were read (every event up to it has been delivered or held).
    pub(super) fn missed(&self, saved: &Saved, offset: u64) -> Result<(Vec<Arc<Entry>>, u64), NotRecovered> {
        let wanted = self.wanted(saved);
        let store = self.store.lock();
        // A position past the last offset given out was never given out.
        if offset > store.seq {
            return Err(NotRecovered::UnknownOffset);
        }
        let now = Instant::now();
        let mut out: Vec<Arc<Entry>> = Vec::new();
        for (key, joined) in wanted {
            let from = offset.max(joined);
            let Some(stream) = store.streams.get(&key) else {
                if store.lost_upto > from {
                    return Err(NotRecovered::Evicted);
                }
                continue;
            };
            if stream.evicted_upto > from {
                return Err(NotRecovered::Evicted);
            }
            let start = stream.entries.partition_point(|e| e.seq <= from);
            for entry in stream.entries.range(start..) {
                if now.duration_since(entry.at) > self.cfg.max_age {
                    return Err(NotRecovered::Evicted);
                }
                if !saved.skips(entry) {
                    out.push(entry.clone());
                }
            }
            if out.len() > self.cfg.max_replay.saturating_mul(2) {
                return Err(NotRecovered::TooMany);
            }
        }
        out.sort_unstable_by_key(|e| e.seq);
        out.dedup_by_key(|e| e.seq);
        if out.len() > self.cfg.max_replay {
            return Err(NotRecovered::TooMany);
        }
        Ok((out, store.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::{super::entry::ENTRY_OVERHEAD, *};
    use crate::hub::ConnectionId;

    fn key(name: &str) -> StreamKey {
        StreamKey::new(&Arc::from("/"), StreamKind::Room, name)
    }

    fn seqs(entries: &[Arc<Entry>]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    fn state(cfg: History) -> HistoryState {
        HistoryState::new(cfg.rooms("*"), false)
    }

    fn emit(h: &HistoryState, room: &str, data: &str) -> u64 {
        let event = NewEvent {
            event: "e",
            data,
            except: &[],
            except_rooms: &[],
            except_users: &[],
        };
        h.append(&[key(room)], &event, &Counter::monotonic("t"), |e, _| e.seq)
    }

    fn saved(h: &HistoryState, rooms: &[(&str, u64)]) -> Saved {
        Saved {
            user: None,
            ns: Arc::from("/"),
            epoch: h.epoch.clone(),
            rooms: rooms.iter().map(|(r, s)| (Arc::from(*r), *s)).collect(),
            since: 0,
            conns: SmallVec::new(),
            at: Instant::now(),
        }
    }

    #[test]
    fn missed_events_across_rooms_in_offset_order() {
        let h = state(History::new());
        emit(&h, "a", "1");
        emit(&h, "b", "2");
        emit(&h, "c", "3");
        emit(&h, "a", "4");
        let (entries, upto) = h.missed(&saved(&h, &[("a", 0), ("b", 0)]), 1).unwrap();
        assert_eq!(seqs(&entries), vec![2, 4]);
        assert_eq!(upto, 4);
        // Joined `b` after its event: not missed.
        let (entries, _) = h.missed(&saved(&h, &[("a", 0), ("b", 2)]), 0).unwrap();
        assert_eq!(seqs(&entries), vec![1, 4]);
    }

    #[test]
    fn eviction_by_count_is_detected_and_counted() {
        let h = state(History::new().max_events(2));
        for i in 0..5 {
            emit(&h, "a", &i.to_string());
        }
        assert_eq!(h.evicted(), 3);
        assert_eq!(h.missed(&saved(&h, &[("a", 0)]), 2).unwrap_err(), NotRecovered::Evicted);
        assert_eq!(seqs(&h.missed(&saved(&h, &[("a", 0)]), 3).unwrap().0), vec![4, 5]);
    }

    #[test]
    fn memory_cap_evicts_the_oldest_anywhere() {
        let per = ENTRY_OVERHEAD + 1 + 10;
        let h = state(History::new().max_bytes(per * 3 + 2 * (STREAM_OVERHEAD + 1)));
        emit(&h, "a", "0123456789");
        emit(&h, "b", "0123456789");
        emit(&h, "a", "0123456789");
        emit(&h, "b", "0123456789");
        assert_eq!(h.evicted(), 1);
        assert!(h.store.lock().bytes <= per * 3 + 2 * (STREAM_OVERHEAD + 1));
        assert_eq!(h.missed(&saved(&h, &[("a", 0)]), 0).unwrap_err(), NotRecovered::Evicted);
        assert_eq!(h.missed(&saved(&h, &[("b", 0)]), 0).unwrap().0.len(), 2);
    }

    #[test]
    fn an_offset_beyond_the_last_one_given_out_is_unknown() {
        let h = state(History::new());
        emit(&h, "a", "1");
        assert_eq!(
            seqs(&h.missed(&saved(&h, &[("a", 0)]), 1).unwrap().0),
            Vec::<u64>::new()
        );
        for offset in [2, u64::MAX] {
            assert_eq!(
                h.missed(&saved(&h, &[("a", 0)]), offset).unwrap_err(),
                NotRecovered::UnknownOffset
            );
        }
    }

    #[test]
    fn a_replay_leaves_out_what_the_emit_left_out() {
        let h = state(History::new());
        emit(&h, "a", "0");
        let event = NewEvent {
            event: "e",
            data: "1",
            except: &[ConnectionId(7)],
            except_rooms: &["c"],
            except_users: &["42"],
        };
        h.append(&[key("a")], &event, &Counter::monotonic("t"), |e, _| e.seq);
        let missed = |saved: Saved| seqs(&h.missed(&saved, 0).unwrap().0);
        assert_eq!(missed(saved(&h, &[("a", 0)])), [1, 2]);
        assert_eq!(missed(saved(&h, &[("a", 0), ("c", 0)])), [1], "in room c");
        assert_eq!(missed(saved(&h, &[("a", 0), ("c", 2)])), [1, 2], "joined c after it");
        let of_42 = Saved {
            user: Some(Arc::from("42")),
            ..saved(&h, &[("a", 0)])
        };
        assert_eq!(missed(of_42), [1], "of user 42");
        let conn_7 = Saved {
            conns: SmallVec::from_slice(&[7]),
            ..saved(&h, &[("a", 0)])
        };
        assert_eq!(missed(conn_7), [1], "connection 7");
    }

    #[test]
    fn too_many_missed() {
        let h = state(History::new().max_replay(2));
        for i in 0..3 {
            emit(&h, "a", &i.to_string());
        }
        assert_eq!(h.missed(&saved(&h, &[("a", 0)]), 0).unwrap_err(), NotRecovered::TooMany);
        assert_eq!(h.missed(&saved(&h, &[("a", 0)]), 1).unwrap().0.len(), 2);
    }
}
