//! Who is connected: connections, users → connections, rooms → connections, and each
//! connection's rooms (the reverse index, kept on the connection itself).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use dashmap::{mapref::entry::Entry, DashMap};

use crate::connection::Conn;

use super::ConnectionId;

/// Why a connection could not be reserved at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReserveError {
    /// The hub is at `max_connections` (503).
    HubFull,
    /// The user is at `max_connections_per_user` (429).
    UserFull,
}

#[derive(Default)]
pub(crate) struct UserEntry {
    /// The user's live connections (three tabs are three connections).
    pub(crate) conns: Vec<Arc<Conn>>,
    /// Handshakes of this user that passed authentication and are not live yet.
    reserved: usize,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) conns: DashMap<ConnectionId, Arc<Conn>>,
    pub(crate) users: DashMap<Arc<str>, UserEntry>,
    pub(crate) rooms: DashMap<Arc<str>, HashMap<ConnectionId, Arc<Conn>>>,
    /// Connections live or reserved, checked against `max_connections`.
    slots: AtomicUsize,
}

/// Outcome of a room join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Join {
    Joined,
    AlreadyIn,
    TooManyRooms,
}

impl Registry {
    /// Reserves a slot for a handshake that passed authentication. Undone by
    /// [`release`](Self::release) unless the connection goes live.
    pub(crate) fn reserve(
        &self,
        user: Option<&Arc<str>>,
        max_total: usize,
        max_per_user: usize,
    ) -> Result<(), ReserveError> {
        if self.slots.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.slots.fetch_sub(1, Ordering::AcqRel);
            return Err(ReserveError::HubFull);
        }
        if let Some(user) = user {
            let mut entry = self.users.entry(user.clone()).or_default();
            if entry.conns.len() + entry.reserved >= max_per_user {
                drop(entry);
                self.release(Some(user));
                return Err(ReserveError::UserFull);
            }
            entry.reserved += 1;
        }
        Ok(())
    }

    /// Gives back a reservation that did not become a live connection.
    pub(crate) fn release(&self, user: Option<&Arc<str>>) {
        self.slots.fetch_sub(1, Ordering::AcqRel);
        if let Some(user) = user {
            if let Entry::Occupied(mut e) = self.users.entry(user.clone()) {
                let entry = e.get_mut();
                entry.reserved = entry.reserved.saturating_sub(1);
                if entry.reserved == 0 && entry.conns.is_empty() {
                    e.remove();
                }
            }
        }
    }

    /// Makes an upgraded connection reachable by id and by user, turning its user's
    /// reservation into a live connection. Returns `true` when this is the user's first live
    /// connection (the user came online).
    pub(crate) fn insert(&self, conn: &Arc<Conn>) -> bool {
        self.conns.insert(conn.id, conn.clone());
        let Some(user) = conn.identity.user_key() else {
            return false;
        };
        let mut entry = self.users.entry(user.clone()).or_default();
        entry.reserved = entry.reserved.saturating_sub(1);
        entry.conns.push(conn.clone());
        entry.conns.len() == 1
    }

    /// Removes a connection from everything. Returns `true` when it was its user's last
    /// live connection (the user went offline).
    pub(crate) fn remove(&self, conn: &Arc<Conn>) -> bool {
        for room in conn.take_rooms() {
            self.remove_from_room(&room, conn.id);
        }
        self.conns.remove(&conn.id);
        let mut went_offline = false;
        if let Some(user) = conn.identity.user_key() {
            if let Entry::Occupied(mut e) = self.users.entry(user.clone()) {
                let entry = e.get_mut();
                let before = entry.conns.len();
                entry.conns.retain(|c| c.id != conn.id);
                went_offline = before > 0 && entry.conns.is_empty();
                if entry.conns.is_empty() && entry.reserved == 0 {
                    e.remove();
                }
            }
        }
        self.slots.fetch_sub(1, Ordering::AcqRel);
        went_offline
    }

    pub(crate) fn join(&self, conn: &Arc<Conn>, room: &str, max_rooms: usize) -> Join {
        match conn.add_room(room, max_rooms) {
            Join::Joined => {}
            other => return other,
        }
        let key: Arc<str> = Arc::from(room);
        self.rooms.entry(key).or_default().insert(conn.id, conn.clone());
        Join::Joined
    }

    pub(crate) fn leave(&self, conn: &Arc<Conn>, room: &str) -> bool {
        if conn.remove_room(room) {
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

    /// Users with at least one live connection, sorted.
    pub(crate) fn online_users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .users
            .iter()
            .filter(|e| !e.conns.is_empty())
            .map(|e| e.key().to_string())
            .collect();
        users.sort_unstable();
        users
    }
}
