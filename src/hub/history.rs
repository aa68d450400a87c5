//! Missed-message recovery: a bounded history per room, per user and for broadcasts, the
//! position of every event in it, and the sessions that let a client that dropped come back
//! for what it missed.
//!
//! ## Positions
//!
//! Every event appended to a history takes the hub's next *offset*: one sequence for all the
//! streams of a hub, so a connection, which receives its history events in offset order,
//! says how far it got with one number. The *epoch* names the lifetime of the history: it
//! changes whenever the history is lost as a whole (the process restarted; in a cluster,
//! Redis lost its data). Losses within one lifetime (events evicted by count, age or the
//! memory cap) are tracked per stream, so a client is never told it recovered when something
//! it needed is gone.
//!
//! ## No gap, no duplicate
//!
//! Appending an event and queueing it for its recipients happen under one lock, so every
//! connection gets its history events in offset order. A connection that recovers is put in
//! its rooms first, with live history events *held*; then the missed events are read; then,
//! under the hold, the replay is queued, followed by the held events it does not already
//! contain. Live delivery resumes from there.
//!
//! ## In a cluster
//!
//! With the `redis` feature and a hub joined to a cluster, the history lives in Redis: the
//! offsets and the epoch are the cluster's, every node delivers history events in offset order
//! from what Redis publishes, and sessions are kept in Redis, so a client that drops on one
//! node recovers on any other (`docs/cluster.md` has the keys, scripts and bounds). The
//! memory cap and the session cap below are then this node's business no more: the streams
//! are bounded by count and age, the sessions by their time to live.
//!
//! ## Bounds
//!
//! Each stream keeps at most [`History::max_events`] events for at most [`History::max_age`];
//! all streams together at most [`History::max_bytes`] (the oldest events anywhere go first).
//! Evictions are counted ([`CounterSnapshot::history_evicted`](crate::CounterSnapshot)). A
//! replay is capped at [`History::max_replay`] events, queued as shared frames (no copy of the
//! payloads) and written at the pace the client reads, one batch per flush.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio_tungstenite::tungstenite::Message;

use super::{counters::Counter, Conn, ConnectionId, DisconnectReason, Hub, NsInner, Proto, Target};
use crate::{
    outbox::Frame,
    protocol::{close_code, native},
};

/// What a hub keeps for clients that reconnect, and for how long. History is off unless a
/// `History` is given to [`HubBuilder::history`](crate::HubBuilder::history).
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`rooms`](Self::rooms) | none | room name patterns whose events are kept (`*` matches any run of characters) |
/// | [`users`](Self::users) | off | keep events emitted to a user |
/// | [`broadcasts`](Self::broadcasts) | off | keep events emitted to everyone |
/// | [`max_events`](Self::max_events) | 100 | events kept per room, user or broadcast stream |
/// | [`max_age`](Self::max_age) | 120 s | how long an event is kept |
/// | [`max_bytes`](Self::max_bytes) | 64 MiB | all histories of the hub together (single node) |
/// | [`session_ttl`](Self::session_ttl) | 120 s | how long a dropped connection's session waits for its client |
/// | [`max_replay`](Self::max_replay) | 10,000 | most events replayed to one client; a larger gap is not recovered |
/// | [`max_sessions`](Self::max_sessions) | 100,000 | sessions waiting at once (single node); past it, no new one is kept |
///
/// In a cluster (feature `redis`, `HubBuilder::redis`), the
/// history is kept in Redis, for the whole cluster: give every node the same `History`.
/// `max_bytes` and `max_sessions` then do not apply (streams are bounded by `max_events` and
/// time, sessions by `session_ttl`).
///
/// ```
/// use std::time::Duration;
/// use tower_realtime::{History, Hub};
/// let hub = Hub::builder()
///     .history(History::new().rooms("chat:*").users().max_age(Duration::from_secs(300)))
///     .build();
/// # drop(hub);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct History {
    /// Room name patterns whose events are kept.
    pub rooms: Vec<String>,
    /// Whether events emitted to users are kept.
    pub users: bool,
    /// Whether events emitted to everyone are kept.
    pub broadcasts: bool,
    /// Events kept per stream.
    pub max_events: usize,
    /// How long an event is kept.
    pub max_age: Duration,
    /// Bytes kept by all the histories of a hub together (on a single node).
    pub max_bytes: usize,
    /// How long the session of a dropped connection is kept for its client to come back.
    pub session_ttl: Duration,
    /// Most events replayed to one client.
    pub max_replay: usize,
    /// Most sessions kept at once (on a single node).
    pub max_sessions: usize,
}

impl Default for History {
    fn default() -> Self {
        Self {
            rooms: Vec::new(),
            users: false,
            broadcasts: false,
            max_events: 100,
            max_age: Duration::from_secs(120),
            max_bytes: 64 << 20,
            session_ttl: Duration::from_secs(120),
            max_replay: 10_000,
            max_sessions: 100_000,
        }
    }
}

impl History {
    /// Keeps nothing yet: add [`rooms`](Self::rooms), [`users`](Self::users) or
    /// [`broadcasts`](Self::broadcasts).
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the events of every room, of every user and of broadcasts.
    pub fn all() -> Self {
        Self::new().rooms("*").users().broadcasts()
    }

    /// Keeps the events of the rooms whose name matches `pattern` (`*` matches any run of
    /// characters: `"chat:*"`, `"*"`).
    pub fn rooms(mut self, pattern: impl Into<String>) -> Self {
        self.rooms.push(pattern.into());
        self
    }

    /// Keeps the events emitted to users (all their connections).
    pub fn users(mut self) -> Self {
        self.users = true;
        self
    }

    /// Keeps the events emitted to everyone.
    pub fn broadcasts(mut self) -> Self {
        self.broadcasts = true;
        self
    }

    /// Events kept per stream (room, user or broadcasts).
    pub fn max_events(mut self, n: usize) -> Self {
        self.max_events = n.max(1);
        self
    }

    /// How long an event is kept.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// Bytes kept by all histories of the hub together.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How long a dropped connection's session waits for its client.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Most events replayed to one client; a larger gap is reported as not recovered.
    pub fn max_replay(mut self, n: usize) -> Self {
        self.max_replay = n;
        self
    }

    fn keeps_room(&self, room: &str) -> bool {
        self.rooms.iter().any(|p| glob(p, room))
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and the name position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

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
    #[cfg(feature = "redis")]
    pub(crate) fn redis_name(&self) -> String {
        let kind = match self.kind {
            StreamKind::All => 'a',
            StreamKind::Room => 'r',
            StreamKind::User => 'u',
        };
        format!("{kind}{}:{}:{}", self.ns.len(), self.ns, self.name)
    }
}

/// Bookkeeping counted for each event kept, besides its strings.
const ENTRY_OVERHEAD: usize = 160;
/// Bookkeeping counted for each stream, besides its name.
const STREAM_OVERHEAD: usize = 192;

fn record_size(key: &StreamKey) -> usize {
    STREAM_OVERHEAD + key.name.len()
}

/// One event in a history, with its position. Its frames are encoded once, on first use, and
/// shared by every live recipient and every replay.
pub(crate) struct Entry {
    pub(crate) seq: u64,
    at: Instant,
    /// The namespace and epoch, for the Socket.IO frame.
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    ns: Arc<str>,
    event: Box<str>,
    data: Box<str>,
    /// Connections the emit left out: a replay leaves them out too.
    except: SmallVec<[u64; 2]>,
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    epoch: Arc<str>,
    native: OnceLock<Frame>,
    #[cfg(feature = "socketio")]
    socketio: OnceLock<Frame>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("seq", &self.seq)
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

impl Entry {
    pub(crate) fn new(
        seq: u64,
        epoch: &Arc<str>,
        ns: &Arc<str>,
        event: &str,
        data: &str,
        except: impl IntoIterator<Item = u64>,
    ) -> Self {
        Self {
            seq,
            at: Instant::now(),
            ns: ns.clone(),
            event: event.into(),
            data: data.into(),
            except: except.into_iter().collect(),
            epoch: epoch.clone(),
            native: OnceLock::new(),
            #[cfg(feature = "socketio")]
            socketio: OnceLock::new(),
        }
    }

    /// Bytes counted against [`History::max_bytes`]: the strings, once more for the frames
    /// encoded from them, and the bookkeeping.
    fn size(&self) -> usize {
        ENTRY_OVERHEAD + 2 * (self.event.len() + self.data.len())
    }

    /// The frame for a connection speaking `proto`, carrying the event's position.
    pub(crate) fn frame(&self, proto: Proto) -> Frame {
        match proto {
            Proto::Native => (self.native)
                .get_or_init(|| {
                    Frame::new(Message::Text(native::encode_event_at(
                        &self.event,
                        &self.data,
                        self.seq,
                    )))
                })
                .clone(),
            #[cfg(feature = "socketio")]
            Proto::SocketIo => (self.socketio)
                .get_or_init(|| {
                    let offset = socketio_offset(&self.epoch, self.seq);
                    let packet = crate::protocol::socketio::packet::encode_event_offset(
                        &self.ns,
                        &self.event,
                        &self.data,
                        &offset,
                    );
                    Frame::new(Message::text(format!("4{packet}")))
                })
                .clone(),
        }
    }

    fn excludes(&self, conns: &[u64]) -> bool {
        self.except.iter().any(|id| conns.contains(id))
    }
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

/// An event being emitted, before it has a position.
pub(crate) struct NewEvent<'a> {
    pub(crate) ns: &'a Arc<str>,
    pub(crate) event: &'a str,
    /// The payload, serialized.
    pub(crate) data: &'a str,
    pub(crate) except: &'a [ConnectionId],
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
    /// No such session: it expired, was used already, or never existed.
    UnknownSession,
    /// The history the client's position refers to is gone (a restart, or Redis lost it).
    EpochChanged,
    /// Some of the missed events were evicted.
    Evicted,
    /// More events were missed than [`History::max_replay`].
    TooMany,
    /// The session belongs to someone else.
    WrongUser,
    /// The client's position is not one this hub gave out.
    UnknownOffset,
    /// The history could not be read (in a cluster: Redis did not answer).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
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
            Self::WrongUser => "session belongs to another user",
            Self::UnknownOffset => "unknown position",
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

/// Marks a connection whose live history events are held while it recovers.
const HOLD: u64 = u64::MAX;

/// The recovery side of a connection: its session, and the hold while it recovers.
pub(crate) struct Recovery {
    session: Mutex<Arc<str>>,
    /// [`HOLD`] while recovering; afterwards the highest offset replayed (live history events
    /// at or below it were in the replay and are skipped).
    skip_upto: AtomicU64,
    held: Mutex<Vec<(u64, Frame)>>,
    /// The offset at which the connection joined each room.
    joined: Mutex<HashMap<Arc<str>, u64>>,
    since: AtomicU64,
    conns: Mutex<SmallVec<[u64; 4]>>,
    /// Set once the connection ended and its session was kept (or let go): a transport that
    /// keeps it early, before a slow close handshake, is not kept again at retirement.
    ended: std::sync::atomic::AtomicBool,
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
            skip_upto: AtomicU64::new(0),
            held: Mutex::default(),
            joined: Mutex::default(),
            since: AtomicU64::new(since),
            conns: Mutex::new(SmallVec::from_elem(conn.0, 1)),
            ended: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn session(&self) -> Arc<str> {
        self.session.lock().clone()
    }

    /// A live history event for this connection.
    pub(crate) fn offer(&self, seq: u64, msg: Frame, cap: usize) -> Offer {
        let skip = self.skip_upto.load(Ordering::Acquire);
        if skip == HOLD {
            let mut held = self.held.lock();
            // The recovery may have finished meanwhile.
            if self.skip_upto.load(Ordering::Acquire) == HOLD {
                if held.len() >= cap {
                    return Offer::Full;
                }
                held.push((seq, msg));
                return Offer::Held;
            }
            drop(held);
            return self.offer(seq, msg, cap);
        }
        if seq <= skip {
            Offer::Skip
        } else {
            Offer::Send(msg)
        }
    }

    fn hold(&self) {
        self.skip_upto.store(HOLD, Ordering::Release);
    }

    /// Ends the hold: queues `first` (what tells the client), then the replay merged with the
    /// live events held meanwhile that come after `after`; from then on, live history events
    /// go through, except those at or below `skip` (in the replay already, or older).
    fn release(&self, conn: &Conn, first: Vec<Frame>, replay: Vec<(u64, Frame)>, after: u64, skip: u64) {
        let mut held = self.held.lock();
        let live: Vec<(u64, Frame)> = (std::mem::take(&mut *held).into_iter())
            .filter(|(seq, _)| *seq > after)
            .collect();
        let mut all = first;
        all.extend(merge(replay, live));
        conn.send_all(all);
        self.skip_upto.store(skip, Ordering::Release);
    }

    /// Forgets which offsets the replay covered: they belonged to another epoch.
    #[cfg(feature = "redis")]
    pub(crate) fn forget_replay(&self) {
        let _ = (self.skip_upto).fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| (s != HOLD).then_some(0));
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
    sessions: Mutex<HashMap<Arc<str>, Saved>>,
    /// The open connections with a session, by session id: a client back before its old
    /// connection was seen to be gone takes the session over.
    live: Mutex<HashMap<Arc<str>, std::sync::Weak<Conn>>>,
    /// Woken when a connection lets go of its session (after keeping it, when it does).
    kept: tokio::sync::Notify,
    /// The history is the cluster's, in Redis.
    #[cfg(feature = "redis")]
    pub(crate) shared: bool,
    /// In a cluster: the epoch as last seen in Redis (none before the first look).
    #[cfg(feature = "redis")]
    pub(crate) shared_epoch: Mutex<Option<Arc<str>>>,
    /// In a cluster: the offset of the last history event delivered on this node, to notice
    /// the ones that never arrived.
    #[cfg(feature = "redis")]
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
pub(crate) fn random_id(bytes: usize) -> String {
    let mut buf = [0u8; 16];
    let buf = &mut buf[..bytes.min(16)];
    if getrandom::fill(buf).is_err() {
        // No OS randomness: fall back on std's randomly keyed hasher.
        use std::hash::{BuildHasher, Hasher};
        for chunk in buf.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(Instant::now().elapsed().as_nanos());
            let n = h.finish().to_le_bytes();
            chunk.copy_from_slice(&n[..chunk.len()]);
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl HistoryState {
    /// A history of this node only, or (`shared`) of the cluster, kept in Redis.
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub(crate) fn new(cfg: History, shared: bool) -> Self {
        Self {
            cfg,
            epoch: Arc::from(random_id(8)),
            store: Mutex::default(),
            current: AtomicU64::new(0),
            sessions: Mutex::default(),
            live: Mutex::default(),
            kept: tokio::sync::Notify::new(),
            #[cfg(feature = "redis")]
            shared,
            #[cfg(feature = "redis")]
            shared_epoch: Mutex::new(None),
            #[cfg(feature = "redis")]
            delivered: AtomicU64::new(0),
        }
    }

    /// The epoch as this node knows it (in a cluster, none until Redis was asked or an event
    /// came).
    pub(crate) fn known_epoch(&self) -> Option<Arc<str>> {
        #[cfg(feature = "redis")]
        if self.shared {
            return self.shared_epoch.lock().clone();
        }
        Some(self.epoch.clone())
    }

    /// The epoch, from Redis in a cluster (as known when Redis does not answer).
    async fn epoch_now(&self, hub: &Hub) -> Option<Arc<str>> {
        #[cfg(feature = "redis")]
        if self.shared {
            return super::cluster::epoch_now(hub, self).await;
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
        #[cfg(feature = "redis")]
        if self.shared {
            return super::cluster::take_session(hub, user, ns, resume).await;
        }
        let _ = hub;
        self.check(user, ns, resume)
    }

    /// What a session missed after `offset` (see [`missed`](Self::missed)).
    async fn read_missed(&self, hub: &Hub, saved: &Saved, offset: u64) -> Result<(Vec<Arc<Entry>>, u64), NotRecovered> {
        #[cfg(feature = "redis")]
        if self.shared {
            return super::cluster::read_missed(hub, self, saved, offset).await;
        }
        let _ = hub;
        self.missed(saved, offset)
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

    /// Appends an event to `keys` with the next offset, and hands it to `deliver` under the
    /// same lock, so that every connection gets its history events in offset order.
    pub(crate) fn append<R>(
        &self,
        keys: &[StreamKey],
        event: &NewEvent<'_>,
        evictions: &Counter,
        deliver: impl FnOnce(&Arc<Entry>) -> R,
    ) -> R {
        let mut store = self.store.lock();
        let evicted_before = store.evicted;
        store.seq += 1;
        let except = event.except.iter().map(|c| c.0);
        let entry = Arc::new(Entry::new(
            store.seq,
            &self.epoch,
            event.ns,
            event.event,
            event.data,
            except,
        ));
        for key in keys {
            store.append(key, &entry, &self.cfg);
        }
        store.trim(&self.cfg, entry.at);
        if entry.seq % 4096 == 0 {
            store.forget_quiet(&self.cfg, entry.at);
        }
        self.current.store(entry.seq, Ordering::Release);
        evictions.fetch_add(store.evicted - evicted_before, Ordering::Relaxed);
        deliver(&entry)
    }

    /// Events evicted so far.
    #[cfg(test)]
    fn evicted(&self) -> u64 {
        self.store.lock().evicted
    }

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

    /// Whether this node's sessions are kept here (not in a cluster's Redis).
    fn local(&self) -> bool {
        #[cfg(feature = "redis")]
        if self.shared {
            return false;
        }
        true
    }

    /// `conn` holds session `id` from now on.
    fn hold_session(&self, id: Arc<str>, conn: &Arc<Conn>) {
        self.live.lock().insert(id, Arc::downgrade(conn));
    }

    /// `conn` ended: it holds its session no more.
    fn end_session(&self, id: &str, conn: &Conn) {
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
    async fn take_over(&self, id: &str, conn: &Conn) {
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

    /// Takes a kept session (once), unless it expired.
    pub(crate) fn take(&self, id: &str) -> Option<Saved> {
        let saved = self.sessions.lock().remove(id)?;
        (saved.at.elapsed() <= self.cfg.session_ttl).then_some(saved)
    }

    /// The events a session missed after `offset`, in offset order, one each, and the last
    /// offset given out when they were read (every event up to it has been delivered or held).
    fn missed(&self, saved: &Saved, offset: u64) -> Result<(Vec<Arc<Entry>>, u64), NotRecovered> {
        let wanted = self.wanted(saved);
        let store = self.store.lock();
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
                if !entry.excludes(&saved.conns) {
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

    fn check(&self, user: Option<&Arc<str>>, ns: &Arc<str>, resume: &Resume) -> Result<Saved, NotRecovered> {
        if resume.epoch.as_deref().is_some_and(|e| e != &*self.epoch) {
            return Err(NotRecovered::EpochChanged);
        }
        let saved = self.take(&resume.session).ok_or(NotRecovered::UnknownSession)?;
        if saved.epoch != self.epoch {
            return Err(NotRecovered::EpochChanged);
        }
        if saved.user.as_deref() != user.map(|u| &**u) || saved.ns != *ns {
            return Err(NotRecovered::WrongUser);
        }
        Ok(saved)
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
    /// restored, missed events queued). `answer` gives the frames that tell the client, which
    /// go first. Returns whether the connection recovered.
    pub(crate) async fn recover(
        &self,
        ns: &Arc<NsInner>,
        conn: &Arc<Conn>,
        resume: Option<&Resume>,
        answer: impl FnOnce(&SessionNews<'_>) -> Vec<Frame>,
    ) -> bool {
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
            Ok(saved) => {
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
                let replay = entries.iter().map(|e| (e.seq, e.frame(conn.proto))).collect();
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
                #[cfg(feature = "redis")]
                super::cluster::keep_session(self, history, &recovery.session(), &saved);
            }
        }
        // Last: a takeover waiting for this connection finds the session kept.
        history.end_session(&recovery.session(), conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(glob("*", "general"));
        assert!(glob("*", ""));
        assert!(glob("chat:*", "chat:general"));
        assert!(!glob("chat:*", "news:general"));
        assert!(glob("*:vip", "chat:vip"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("general", "general"));
        assert!(!glob("general", "generals"));
    }

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
            ns: &Arc::from("/"),
            event: "e",
            data,
            except: &[],
        };
        h.append(&[key(room)], &event, &Counter::monotonic("t"), |e| e.seq)
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
        let per = ENTRY_OVERHEAD + 2 * (1 + 10);
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
    fn too_many_missed() {
        let h = state(History::new().max_replay(2));
        for i in 0..3 {
            emit(&h, "a", &i.to_string());
        }
        assert_eq!(h.missed(&saved(&h, &[("a", 0)]), 0).unwrap_err(), NotRecovered::TooMany);
        assert_eq!(h.missed(&saved(&h, &[("a", 0)]), 1).unwrap().0.len(), 2);
    }

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

    #[test]
    fn socketio_offsets_round_trip() {
        assert_eq!(parse_socketio_offset("ab12-42"), Some(("ab12", 42)));
        assert_eq!(parse_socketio_offset("nothing"), None);
        assert_eq!(parse_socketio_offset("ab-x"), None);
    }
}
