//! [`Emitter`]: emitting to, and looking up, the connections of one namespace. Implemented by
//! [`Hub`] (its default namespace) and [`Namespace`], so that each method is written once.

use std::time::Duration;

use serde::Serialize;

use super::{AckEmit, ConnectionId, Emit, Hub, Namespace, NsInner, Target};

/// What an [`Emitter`] emits within: a hub and one of its namespaces.
mod sealed {
    use super::{Hub, NsInner};

    /// A hub and one of its namespaces.
    pub struct Scope<'a> {
        pub(crate) hub: &'a Hub,
        pub(crate) ns: &'a NsInner,
    }

    /// Only [`Hub`] and [`Namespace`](super::Namespace) are emitters.
    pub trait Sealed {
        /// The hub and the namespace emitted within.
        fn scope(&self) -> Scope<'_>;
    }
}

use sealed::{Scope, Sealed};

/// Emitting to the connections of one namespace, and finding them: by room, by user, by id,
/// or all of them.
///
/// Implemented by [`Hub`], for its default namespace (`/`), and by [`Namespace`], for the
/// namespace it stands for; no other type implements it. Bring it into scope to call its
/// methods: `use tower_realtime::Emitter;`.
///
/// ```
/// use serde_json::json;
/// use tower_realtime::{Emitter, Hub};
///
/// let hub = Hub::builder()
///     .namespace("/admin", |ns| ns.on("ping", || async { "pong" }))
///     .build();
/// // The default namespace, then `/admin`: the same methods on both.
/// assert_eq!(hub.to_room("general").emit("message", &json!({ "text": "hi" })), 0);
/// let admin = hub.of("/admin").expect("registered above");
/// assert_eq!(admin.to_user("42").emit("notice", &json!({ "text": "hi" })), 0);
/// assert!(admin.room_members("general").is_empty());
/// ```
pub trait Emitter: Sealed {
    /// Emits to every connection of the namespace. Returns how many it reached.
    fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> usize {
        self.broadcast().emit(event, data)
    }

    /// Sends a declared event ([`ServerEvent`](crate::ServerEvent), feature `typed`) to every
    /// connection of the namespace. Returns how many it reached.
    #[cfg(feature = "typed")]
    fn send<E: crate::event::ServerEvent>(&self, event: E) -> usize {
        self.broadcast().send(event)
    }

    /// Starts an emit to every connection of the namespace that waits at most `timeout` for
    /// each one's answer (Socket.IO's `io.timeout(ms).emitWithAck(..)`): the same as
    /// `broadcast().timeout(timeout)`, finished by
    /// [`emit_with_ack`](AckEmit::emit_with_ack).
    fn timeout(&self, timeout: Duration) -> AckEmit<'_> {
        self.broadcast().timeout(timeout)
    }

    /// Starts an emit to every connection of the namespace (add `.except(id)` to leave one
    /// out).
    fn broadcast(&self) -> Emit<'_> {
        let Scope { hub, ns } = self.scope();
        Emit::new(hub, ns, Target::All)
    }

    /// Starts an emit to a room's members.
    fn to_room<'a>(&'a self, room: &'a str) -> Emit<'a> {
        let Scope { hub, ns } = self.scope();
        Emit::new(hub, ns, Target::Room(room))
    }

    /// Starts an emit to several rooms (a connection in several of them gets the event once).
    fn to_rooms<'a>(&'a self, rooms: impl IntoIterator<Item = &'a str>) -> Emit<'a> {
        let Scope { hub, ns } = self.scope();
        Emit::many(hub, ns, rooms.into_iter().map(Target::Room))
    }

    /// Starts an emit to every connection of a user in the namespace (all their devices and
    /// tabs).
    fn to_user<'a>(&'a self, user: &'a str) -> Emit<'a> {
        let Scope { hub, ns } = self.scope();
        Emit::new(hub, ns, Target::User(user))
    }

    /// Starts an emit to every connection of several users.
    fn to_users<'a>(&'a self, users: impl IntoIterator<Item = &'a str>) -> Emit<'a> {
        let Scope { hub, ns } = self.scope();
        Emit::many(hub, ns, users.into_iter().map(Target::User))
    }

    /// Starts an emit to one connection of the namespace.
    fn to_connection(&self, id: ConnectionId) -> Emit<'_> {
        let Scope { hub, ns } = self.scope();
        Emit::new(hub, ns, Target::Connection(id))
    }

    /// The connections in a room of the namespace, sorted.
    fn room_members(&self, room: &str) -> Vec<ConnectionId> {
        let mut ids: Vec<_> = (self.scope().ns.registry.rooms.get(room))
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// The users with a connection in a room of the namespace, sorted and unique.
    fn room_users(&self, room: &str) -> Vec<String> {
        let mut users: Vec<String> = (self.scope().ns.registry.rooms.get(room))
            .map(|m| {
                m.values()
                    .filter_map(|c| c.identity.user_id().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// The live connections of a user in the namespace, oldest first.
    fn connections_of(&self, user: &str) -> Vec<ConnectionId> {
        let mut ids: Vec<_> = (self.scope().ns.registry.users.get(user))
            .map(|conns| conns.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }
}

impl Sealed for Hub {
    fn scope(&self) -> Scope<'_> {
        Scope {
            hub: self,
            ns: &self.inner.default_ns,
        }
    }
}

impl Emitter for Hub {}

impl Sealed for Namespace {
    fn scope(&self) -> Scope<'_> {
        Scope {
            hub: self.hub(),
            ns: self.inner(),
        }
    }
}

impl Emitter for Namespace {}
