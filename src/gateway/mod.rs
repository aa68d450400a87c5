//! The gateway: events routed to handlers, the [`Socket`] a handler sees, replies, acks,
//! error events, and the connect/disconnect/presence hooks.

mod error;
mod handler;

pub use error::{ErrorEvent, IntoErrorEvent};
pub use handler::{Data, EventContext, FromEvent, Handler, IntoReply, Json, State};

use std::{collections::HashMap, fmt, future::Future, sync::Arc};

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    auth::Identity,
    connection::Conn,
    hub::{ConnectionId, Emit, Hub, Target},
    protocol::{
        close_code,
        native::{self, Inbound},
    },
};

use handler::ErasedHandler;

/// Event names a client may not send: they are the server's own.
pub const RESERVED_EVENTS: &[&str] = &["error", "connect", "connect_error", "disconnect", "disconnecting"];

/// The calling connection, as a handler or hook sees it. Cheap to clone.
#[derive(Clone)]
pub struct Socket {
    hub: Hub,
    conn: Arc<Conn>,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.conn.id)
            .field("user_id", &self.conn.identity.user_id())
            .finish()
    }
}

impl Socket {
    pub(crate) fn new(hub: Hub, conn: Arc<Conn>) -> Self {
        Self { hub, conn }
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.conn.id
    }

    /// Who is connected.
    pub fn identity(&self) -> &Identity {
        &self.conn.identity
    }

    /// The authenticated user id (`None` for an anonymous connection).
    pub fn user_id(&self) -> Option<&str> {
        self.conn.identity.user_id()
    }

    /// The hub this connection belongs to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Joins a room. `Ok(false)` when already in it; an error when the room name is empty or
    /// too long, or the connection is in too many rooms.
    pub fn join(&self, room: &str) -> Result<bool, ErrorEvent> {
        crate::connection::join(self, room)
    }

    /// Leaves a room; `false` when the connection was not in it.
    pub fn leave(&self, room: &str) -> bool {
        self.hub.inner.registry.leave(&self.conn, room)
    }

    /// The rooms this connection is in.
    pub fn rooms(&self) -> Vec<String> {
        self.conn.rooms()
    }

    /// Whether this connection is in `room`.
    pub fn in_room(&self, room: &str) -> bool {
        self.conn.in_room(room)
    }

    /// Sends an event to this connection only. Returns whether it was queued.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> bool {
        self.hub.to_connection(self.conn.id).emit(event, data) == 1
    }

    /// Emits to a room, except this connection.
    pub fn to<'a>(&'a self, room: &'a str) -> Emit<'a> {
        self.hub.to_room(room).except(self.conn.id)
    }

    /// Emits to every connection, except this one.
    pub fn broadcast(&self) -> Emit<'_> {
        Emit::new(&self.hub, Target::All).except(self.conn.id)
    }

    /// Closes this connection (close code `4000`).
    pub fn disconnect(&self) {
        self.conn
            .request_close(close_code::DISCONNECTED_BY_SERVER, "disconnected by server");
    }

    pub(crate) fn send_frame(&self, msg: Message) -> bool {
        self.conn.send(&self.hub, msg)
    }

    /// Sends an `error` event to this connection, answering `ack` when given.
    pub(crate) fn send_error(&self, ack: Option<u64>, error: ErrorEvent) {
        if let Some(detail) = error.detail() {
            tracing::error!(conn = %self.conn.id, %detail, "internal error answered with an error event");
        }
        self.send_frame(Message::Text(native::encode_error(ack, &error.to_value())));
    }
}

/// Why a connection ended, as the disconnect hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client sent a close frame (with its code, if any).
    ClientClosed(Option<u16>),
    /// The server closed, with this code and reason.
    ServerClosed(u16, String),
    /// The transport ended without a close frame (a TCP drop or reset).
    TransportClosed,
    /// Reading or writing failed.
    TransportError(String),
}

/// A user came online (first connection) or went offline (last connection closed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presence {
    /// The user.
    #[serde(rename = "userId")]
    pub user_id: String,
    /// `true` when the user came online.
    pub online: bool,
}

/// What a connect hook returns: `()` or `Ok(())` accepts, `Err(reason)` refuses the
/// connection with close code `1008` and the reason.
pub trait IntoConnectResult {
    /// `Err(reason)` refuses the connection.
    fn into_connect_result(self) -> Result<(), String>;
}

impl IntoConnectResult for () {
    fn into_connect_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> IntoConnectResult for Result<(), E> {
    fn into_connect_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

type ConnectHook = Arc<dyn Fn(Socket) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;
type DisconnectHook = Arc<dyn Fn(Socket, DisconnectReason) -> BoxFuture<'static, ()> + Send + Sync>;
type PresenceHook = Arc<dyn Fn(Hub, Presence) -> BoxFuture<'static, ()> + Send + Sync>;

/// The handlers and hooks of a hub.
#[derive(Default, Clone)]
pub(crate) struct Gateway {
    handlers: HashMap<Arc<str>, Arc<dyn ErasedHandler>>,
    on_connect: Option<ConnectHook>,
    on_disconnect: Option<DisconnectHook>,
    on_presence: Option<PresenceHook>,
}

/// A routed event, ready to run.
pub(crate) struct Call {
    pub(crate) future: BoxFuture<'static, Result<Value, ErrorEvent>>,
    pub(crate) ack: Option<u64>,
    pub(crate) event: Arc<str>,
}

impl Gateway {
    pub(crate) fn add_handler<H: Handler<Args>, Args: 'static>(&mut self, event: &str, handler: H) {
        self.handlers
            .insert(Arc::from(event), Arc::new(handler::Erased::new(handler)));
    }

    pub(crate) fn set_on_connect<F, Fut, R>(&mut self, hook: F)
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoConnectResult,
    {
        self.on_connect = Some(Arc::new(move |s| {
            let fut = hook(s);
            Box::pin(async move { fut.await.into_connect_result() })
        }));
    }

    pub(crate) fn set_on_disconnect<F, Fut>(&mut self, hook: F)
    where
        F: Fn(Socket, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnect = Some(Arc::new(move |s, r| Box::pin(hook(s, r))));
    }

    pub(crate) fn set_on_presence<F, Fut>(&mut self, hook: F)
    where
        F: Fn(Hub, Presence) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_presence = Some(Arc::new(move |h, p| Box::pin(hook(h, p))));
    }

    pub(crate) async fn on_connect(&self, socket: Socket) -> Result<(), String> {
        match &self.on_connect {
            Some(hook) => hook(socket).await,
            None => Ok(()),
        }
    }

    pub(crate) async fn on_disconnect(&self, socket: Socket, reason: DisconnectReason) {
        if let Some(hook) = &self.on_disconnect {
            hook(socket, reason).await;
        }
    }

    pub(crate) async fn presence(&self, hub: &Hub, user: &str, online: bool) {
        if let Some(hook) = &self.on_presence {
            let presence = Presence {
                user_id: user.to_owned(),
                online,
            };
            hook(hub.clone(), presence).await;
        }
    }

    /// Finds the handler of a frame. An error names the ack id it answers.
    pub(crate) fn route(&self, socket: &Socket, frame: Inbound) -> Result<Call, (Option<u64>, ErrorEvent)> {
        let Inbound { event, data, id } = frame;
        let max = socket.hub.inner.config.max_event_name_len;
        if event.len() > max {
            return Err((id, ErrorEvent::new(format!("event name longer than {max} bytes"))));
        }
        if RESERVED_EVENTS.contains(&event.as_str()) {
            return Err((id, ErrorEvent::new(format!("`{event}` is a reserved event name"))));
        }
        let Some((name, handler)) = self.handlers.get_key_value(event.as_str()) else {
            return Err((id, ErrorEvent::new(format!("unknown event: {event}"))));
        };
        let ctx = EventContext {
            socket: socket.clone(),
            event: name.clone(),
            data,
        };
        Ok(Call {
            future: handler.call(ctx),
            ack: id,
            event: name.clone(),
        })
    }
}
