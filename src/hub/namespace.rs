//! Namespaces: several gateways on one hub, each with its own handlers, guards, hooks, rooms
//! and connections (like NestJS's `@WebSocketGateway({ namespace })`).
//!
//! With the native protocol, the namespace `/chat` of a hub served at `/ws` is reached at
//! `/ws/chat`; the default namespace `/` at `/ws` itself.

use std::{any::Any, fmt, sync::Arc};

use super::{
    conn::Conn,
    dynamic::Origin,
    registry::{Join, Registry},
    Hub,
};

/// One namespace: its name, its registry, and what the layers above the hub keep for it (its
/// handler table), which the hub holds without looking inside.
pub(crate) struct NsInner {
    pub(crate) name: Arc<str>,
    pub(crate) registry: Registry,
    pub(crate) routes: Arc<dyn Any + Send + Sync>,
    /// For a namespace made from a pattern: its parameters, and what removes it.
    pub(crate) origin: Option<Origin>,
}

/// Why a connection could not join a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinError {
    EmptyName,
    NameTooLong(usize),
    TooManyRooms(usize),
    Gone,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyName => f.write_str("room name must not be empty"),
            Self::NameTooLong(max) => write!(f, "room name longer than {max} bytes"),
            Self::TooManyRooms(max) => write!(f, "too many rooms: at most {max} per connection"),
            Self::Gone => f.write_str("the connection has ended"),
        }
    }
}

impl NsInner {
    pub(crate) fn new(name: &str, routes: Arc<dyn Any + Send + Sync>) -> Self {
        Self {
            name: Arc::from(name),
            registry: Registry::default(),
            routes,
            origin: None,
        }
    }

    /// A namespace made from a pattern ([`dynamic`](super::dynamic)).
    pub(crate) fn made(name: &str, routes: Arc<dyn Any + Send + Sync>, origin: Origin) -> Self {
        Self {
            origin: Some(origin),
            ..Self::new(name, routes)
        }
    }

    /// The value of a template parameter, for a namespace made from a template.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        let origin = self.origin.as_ref()?;
        (origin.params.iter()).find_map(|(k, v)| (&**k == name).then_some(&**v))
    }

    /// Joins `conn` to `room`, within the hub's limits. `Ok(false)` when it was in it already.
    pub(crate) fn join(&self, hub: &Hub, conn: &Arc<Conn>, room: &str) -> Result<bool, JoinError> {
        let cfg = hub.config();
        if room.is_empty() {
            return Err(JoinError::EmptyName);
        }
        if room.len() > cfg.max_room_name_len {
            return Err(JoinError::NameTooLong(cfg.max_room_name_len));
        }
        match self.registry.join(conn, room, cfg.max_rooms_per_connection) {
            Join::Joined => {
                if let (Some(recovery), Some(history)) = (&conn.recovery, &hub.inner.history) {
                    recovery.joined(room, history.current());
                }
                Ok(true)
            }
            Join::AlreadyIn => Ok(false),
            Join::TooManyRooms => Err(JoinError::TooManyRooms(cfg.max_rooms_per_connection)),
            Join::Gone => Err(JoinError::Gone),
        }
    }
}

/// A handle on one namespace, for emitting to its connections only. Cheap to clone.
///
/// It emits and finds connections through [`Emitter`](crate::Emitter), as [`Hub`] does for
/// the default namespace.
///
/// ```
/// # use tower_realtime::{Emitter, Hub};
/// # use serde_json::json;
/// let hub = Hub::builder()
///     .namespace("/notifications", |ns| ns.on("ping", || async { "pong" }))
///     .build();
/// let notifications = hub.of("/notifications").expect("registered above");
/// assert_eq!(notifications.to_user("42").emit("notification", &json!({ "message": "hi" })), 0);
/// ```
#[derive(Clone)]
pub struct Namespace {
    hub: Hub,
    ns: Arc<NsInner>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.ns.name).finish()
    }
}

impl Namespace {
    pub(crate) fn new(hub: Hub, ns: Arc<NsInner>) -> Self {
        Self { hub, ns }
    }

    pub(crate) fn inner(&self) -> &Arc<NsInner> {
        &self.ns
    }

    /// The namespace's name (`"/"` for the default one).
    pub fn name(&self) -> &str {
        &self.ns.name
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The number of connections in this namespace.
    pub fn connection_count(&self) -> usize {
        self.ns.registry.conns.len()
    }
}
