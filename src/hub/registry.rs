//! Who is connected.
//!
//! - [`Registry`], one per namespace: connections, users → connections, rooms → connections
//!   (each connection keeps its own rooms: the reverse index).
//! - [`Slots`], one per hub: connections per user and in all, for the limits and for presence
//!   (a user is online while they have a live connection in any namespace).

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use dashmap::{mapref::entry::Entry, DashMap};

use super::{Conn, ConnectionId};

/// Why a connection could not be reserved at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReserveError {
    /// The hub is at `max_connections` (503).
    HubFull,
    /// The user is at `max_connections_per_user` (429).
    UserFull,
}

#[derive(Default)]
struct UserSlots {
    /// Live connections of the user, in every namespace.
    live: usize,
    /// Handshakes of this user that passed authentication and are not live yet.
    reserved: usize,
}

/// Connection counts per user and in all.
#[derive(Default)]
pub(crate) struct Slots {
    users: DashMap<Arc<str>, UserSlots>,
    /// Connections live or reserved, checked against `max_connections`.
    total: AtomicUsize,
}

impl Slots {
    /// Reserves a slot for a handshake that passed authentication. Undone by
    /// [`release`](Self::release) unless the connection goes [live](Self::go_live).
    pub(crate) fn reserve(
        &self,
        user: Option<&Arc<str>>,
        max_total: usize,
        max_per_user: usize,
    ) -> Result<(), ReserveError> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(ReserveError::HubFull);
        }
        if let Some(user) = user {
            let mut entry = self.users.entry(user.clone()).or_default();
            if entry.live + entry.reserved >= max_per_user {
                drop(entry);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(ReserveError::UserFull);
            }
            entry.reserved += 1;
        }
        Ok(())
    }

    /// Connections live or reserved.
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    pub(crate) fn count(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Gives back a reservation that did not become a live connection.
    pub(crate) fn release(&self, user: Option<&Arc<str>>) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(user) = user {
            self.update(user, |e| e.reserved = e.reserved.saturating_sub(1));
        }
    }

    /// Turns a reservation into a live connection. Returns `true` when the user came online.
    pub(crate) fn go_live(&self, user: Option<&Arc<str>>) -> bool {
        let Some(user) = user else { return false };
        let mut entry = self.users.entry(user.clone()).or_default();
        entry.reserved = entry.reserved.saturating_sub(1);
        entry.live += 1;
        entry.live == 1
    }

    /// Ends a live connection. Returns `true` when the user went offline.
    pub(crate) fn end(&self, user: Option<&Arc<str>>) -> bool {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let Some(user) = user else { return false };
        let mut offline = false;
        self.update(user, |e| {
            offline = e.live == 1;
            e.live = e.live.saturating_sub(1);
        });
        offline
    }

    fn update(&self, user: &Arc<str>, f: impl FnOnce(&mut UserSlots)) {
        if let Entry::Occupied(mut e) = self.users.entry(user.clone()) {
            f(e.get_mut());
            if e.get().live == 0 && e.get().reserved == 0 {
                e.remove();
            }
        }
    }

    pub(crate) fn is_online(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|e| e.live > 0)
    }

    /// Users with at least one live connection, sorted.
    pub(crate) fn online_users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .users
            .iter()
            .filter(|e| e.live > 0)
            .map(|e| e.key().to_string())
            .collect();
        users.sort_unstable();
        users
    }
}

/// Hashes a [`ConnectionId`] with one multiplication. Ids are a hub-local sequence, never
/// chosen by a peer, so SipHash's resistance to chosen keys buys nothing here; the odd
/// multiplier keeps sequential ids apart in the low bits and spreads them over the high ones.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The connections of one user or one room, by id: adding or removing one is O(1).
pub(crate) type Members = HashMap<ConnectionId, Arc<Conn>, BuildHasherDefault<IdHasher>>;

/// The connections, users and rooms of one namespace.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) conns: DashMap<ConnectionId, Arc<Conn>>,
    pub(crate) users: DashMap<Arc<str>, Members>,
    pub(crate) rooms: DashMap<Arc<str>, Members>,
}

/// Outcome of a room join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Join {
    Joined,
    AlreadyIn,
    TooManyRooms,
    /// The connection was removed (it ended).
    Gone,
}

impl Registry {
    /// Makes a connection reachable by id and by user.
    pub(crate) fn insert(&self, conn: &Arc<Conn>) {
        self.conns.insert(conn.id, conn.clone());
        if let Some(user) = conn.identity.user_key() {
            self.users
                .entry(user.clone())
                .or_default()
                .insert(conn.id, conn.clone());
        }
    }

    /// Removes a connection from the namespace, its rooms and its user.
    ///
    /// Unregistered first: a [`join`](Self::join) racing with this one either added its room
    /// before the rooms were taken (and this removes it from the room), or sees the connection
    /// unregistered when it is done, and undoes itself. Either way no room keeps a connection
    /// that is gone (and its queue). Each map's lock orders the two: if the join finds the
    /// connection still registered, its room was in place before this unregistered it.
    pub(crate) fn remove(&self, conn: &Arc<Conn>) {
        self.conns.remove(&conn.id);
        for room in conn.take_rooms() {
            self.remove_from_room(&room, conn.id);
        }
        if let Some(user) = conn.identity.user_key() {
            if let Entry::Occupied(mut e) = self.users.entry(user.clone()) {
                e.get_mut().remove(&conn.id);
                if e.get().is_empty() {
                    e.remove();
                }
            }
        }
    }

    pub(crate) fn join(&self, conn: &Arc<Conn>, room: &str, max_rooms: usize) -> Join {
        // The room's name, shared with the registry's key when the room exists: one copy for
        // all its members rather than one in each.
        let key = self
            .rooms
            .get(room)
            .map_or_else(|| Arc::from(room), |r| r.key().clone());
        match conn.add_room(&key, max_rooms) {
            Join::Joined => {}
            other => return other,
        }
        self.rooms.entry(key).or_default().insert(conn.id, conn.clone());
        // Removed meanwhile (see `remove`): its rooms may have been taken before this one was
        // added, so nothing else would take it out again.
        if !self.conns.contains_key(&conn.id) {
            conn.remove_room(room);
            self.remove_from_room(room, conn.id);
            return Join::Gone;
        }
        Join::Joined
    }

    pub(crate) fn leave(&self, conn: &Arc<Conn>, room: &str) -> bool {
        if conn.remove_room(room) {
            if let Some(recovery) = &conn.recovery {
                recovery.left(room);
            }
            self.remove_from_room(room, conn.id);
            true
        } else {
            false
        }
    }

    fn remove_from_room(&self, room: &str, id: ConnectionId) {
        if let Some(mut members) = self.rooms.get_mut(room) {
            members.remove(&id);
            if members.is_empty() {
                drop(members);
                self.rooms.remove_if(room, |_, m| m.is_empty());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::auth::Identity;

    /// Waits (spinning) until `n` parties have arrived, so that they start together.
    fn start_together(arrived: &AtomicUsize, n: usize) {
        arrived.fetch_add(1, Ordering::AcqRel);
        while arrived.load(Ordering::Acquire) < n {
            std::hint::spin_loop();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_join_racing_with_the_removal_leaves_no_dead_connection_in_a_room() {
        let registry = Arc::new(Registry::default());
        // A connection that stays: joins of live connections are kept.
        let identity = Identity::user("control", Default::default());
        let (control, _control_rx) = Conn::new(ConnectionId(u64::MAX), identity, 8, None, Default::default());
        registry.insert(&control);
        for round in 0..1000u64 {
            let identity = Identity::user(format!("u{}", round % 7), Default::default());
            let (conn, _rx) = Conn::new(ConnectionId(round), identity, 8, None, Default::default());
            registry.insert(&conn);
            let arrived = Arc::new(AtomicUsize::new(0));
            let joiner = {
                let (registry, conn, arrived) = (registry.clone(), conn.clone(), arrived.clone());
                tokio::spawn(async move {
                    start_together(&arrived, 2);
                    for room in ["a", "b", "c", "d"] {
                        registry.join(&conn, room, 16);
                    }
                })
            };
            let remover = {
                let (registry, conn) = (registry.clone(), conn.clone());
                tokio::spawn(async move {
                    start_together(&arrived, 2);
                    registry.remove(&conn);
                })
            };
            joiner.await.unwrap();
            remover.await.unwrap();
            assert_eq!(
                registry.join(&control, "a", 16),
                if round == 0 { Join::Joined } else { Join::AlreadyIn }
            );
        }
        // No room holds a connection that is no longer registered (nor its queue).
        for room in registry.rooms.iter() {
            for id in room.value().keys() {
                assert!(
                    registry.conns.contains_key(id),
                    "room {} holds removed connection {id}",
                    room.key()
                );
            }
        }
        assert_eq!(registry.conns.len(), 1);
        let members: Vec<_> = registry
            .rooms
            .iter()
            .map(|r| (r.key().to_string(), r.value().len()))
            .collect();
        assert_eq!(members, [("a".to_owned(), 1)], "the control alone, in its room");
        assert_eq!(registry.users.len(), 1);
    }
}
