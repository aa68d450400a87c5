//! [`Socket`]: one connection in one namespace, as handlers and hooks see it.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::{handler::Payload, ErrorEvent, IntoErrorEvent, Reply};
#[cfg(feature = "socketio")]
use crate::protocol::socketio as sio;
use crate::{
    auth::Identity,
    hub::{AckError, Asked, Conn, ConnectionId, Emit, Frames, Hub, Namespace, NsInner, Packet, Proto, Target},
    protocol::{attach, close_code, native},
};

impl Hub {
    /// A handle on one connection, in whichever namespace it is.
    pub fn socket(&self, id: ConnectionId) -> Option<Socket> {
        let (ns, conn) = self.find(id)?;
        Some(Socket::new(self.clone(), ns, conn))
    }
}

impl Namespace {
    /// A handle on one connection of this namespace, as its handlers see it.
    pub fn socket(&self, id: ConnectionId) -> Option<Socket> {
        let conn = self.inner().registry.conns.get(&id)?.clone();
        Some(Socket::new(self.hub().clone(), self.inner().clone(), conn))
    }
}

/// The calling connection, as a handler or hook sees it. Cheap to clone.
#[derive(Clone)]
pub struct Socket {
    hub: Hub,
    ns: Arc<NsInner>,
    conn: Arc<Conn>,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.conn.id)
            .field("namespace", &self.ns.name)
            .field("user_id", &self.conn.identity.user_id())
            .finish()
    }
}

/// One WebSocket data message, text or binary, for apps that want frames rather than events
/// (see [`NamespaceBuilder::on_raw`](crate::NamespaceBuilder::on_raw)). Cloning it shares the
/// payload; sending it back does not copy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage(pub(crate) Message);

impl RawMessage {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Self {
        Self(Message::text(text.into()))
    }

    /// A binary message.
    pub fn binary(data: impl Into<bytes::Bytes>) -> Self {
        Self(Message::binary(data.into()))
    }

    /// The text, for a text message.
    pub fn as_text(&self) -> Option<&str> {
        match &self.0 {
            Message::Text(t) => Some(t.as_str()),
            _ => None,
        }
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        matches!(self.0, Message::Binary(_))
    }

    /// The payload's bytes (UTF-8 for a text message).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            _ => &[],
        }
    }
}

/// An ack that did not come fails the handler that waited for it: `?` on
/// [`Socket::emit_with_ack`] works in a handler returning `Result<_, ErrorEvent>`. The client
/// sees a timeout (status `"ack_timeout"`) or a disconnect as such; a payload that did not
/// serialize is an [internal](ErrorEvent::internal) error.
///
/// ```
/// use std::time::Duration;
/// use tower_realtime::{ErrorEvent, Socket};
///
/// async fn delete(socket: Socket) -> Result<&'static str, ErrorEvent> {
///     let sure: bool = socket.emit_with_ack("confirm", "delete?", Duration::from_secs(5)).await?;
///     Ok(if sure { "deleted" } else { "kept" })
/// }
/// # let _ = tower_realtime::Hub::builder().on("delete", delete);
/// ```
impl From<AckError> for ErrorEvent {
    fn from(error: AckError) -> Self {
        match error {
            AckError::Timeout => ErrorEvent::new(error.to_string()).with_status("ack_timeout"),
            AckError::Disconnected | AckError::Deserialize(_) => ErrorEvent::new(error.to_string()),
            AckError::Serialize(_) => ErrorEvent::internal(error),
        }
    }
}

impl IntoErrorEvent for AckError {
    fn into_error_event(self) -> ErrorEvent {
        self.into()
    }
}

impl Socket {
    pub(crate) fn new(hub: Hub, ns: Arc<NsInner>, conn: Arc<Conn>) -> Self {
        Self { hub, ns, conn }
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    pub(crate) fn ns(&self) -> &Arc<NsInner> {
        &self.ns
    }

    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.conn.id
    }

    /// The namespace this connection is in (`"/"` for the default one; for a
    /// [dynamic namespace](crate::HubBuilder::dynamic_namespace), its concrete name such as
    /// `/tenant-7`).
    pub fn namespace(&self) -> &str {
        &self.ns.name
    }

    /// The value of the parameter `name` of the namespace's template (`"7"` for `id` in
    /// `/tenant-7` made from `/tenant-{id}`); `None` for a namespace not made from a template,
    /// or a name the template does not have.
    pub fn namespace_param(&self, name: &str) -> Option<&str> {
        self.ns.param(name)
    }

    /// Who is connected.
    pub fn identity(&self) -> &Identity {
        &self.conn.identity
    }

    /// The authenticated user id (`None` for an anonymous connection).
    pub fn user_id(&self) -> Option<&str> {
        self.conn.identity.user_id()
    }

    /// What a Socket.IO client sent as `auth` in its CONNECT (`io(url, { auth })`), if anything.
    pub fn auth_payload(&self) -> Option<&Value> {
        self.conn.auth.as_deref()
    }

    /// The hub this connection belongs to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Stores a value of type `T` on this connection (NestJS's `client.data.user = …`),
    /// returning the one it replaces. Every handler, guard and hook of the connection sees it
    /// from then on ([`get`](Self::get), the [`SocketExt`](crate::SocketExt) extractor); it
    /// lives as long as the connection. Set it in [`on_connect`](crate::HubBuilder::on_connect)
    /// or a guard:
    ///
    /// ```
    /// use tower_realtime::{Hub, Socket, SocketExt};
    ///
    /// #[derive(Clone)]
    /// struct Nick(String);
    ///
    /// let hub = Hub::builder()
    ///     .on_connect(|socket: Socket| async move {
    ///         socket.insert(Nick(socket.user_id().unwrap_or("guest").to_owned()));
    ///     })
    ///     .on("whoami", |SocketExt(Nick(nick)): SocketExt<Nick>| async move { nick })
    ///     .build();
    /// # drop(hub);
    /// ```
    ///
    /// A connection that stores nothing allocates nothing. A connection recovering a session
    /// (see [`HubBuilder::history`](crate::HubBuilder::history)) starts with no state: its
    /// `on_connect` and connect guards run again, and what they store is there again; what a
    /// handler stored on the old connection is not. Each value is kept by its type:
    /// use a type of your own (a newtype) rather than `String` or `u64`. Socket.IO sockets in
    /// two namespaces of one client are two connections, each with its own state.
    pub fn insert<T: Send + Sync + 'static>(&self, value: T) -> Option<T> {
        self.conn.write_state(|state| state.typed.insert(value))
    }

    /// A clone of the value of type `T` stored on this connection, if any.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.conn.read_state(|state| state.typed.get::<T>().cloned())
    }

    /// Takes the value of type `T` off this connection.
    pub fn remove<T: Send + Sync + 'static>(&self) -> Option<T> {
        self.conn.read_state(|state| state.typed.remove())
    }

    /// Runs `f` on the value of type `T` stored on this connection, in place (`None` when
    /// there is none): for a counter or a map that handlers update.
    ///
    /// `f` runs under the lock of the connection's state: it must not call the state methods
    /// of the same socket (that would deadlock), and should be quick.
    pub fn with<T: Send + Sync + 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.conn.read_state(|state| state.typed.get_mut::<T>().map(f))
    }

    /// Stores a serializable value as this connection's data (JSON), replacing the previous
    /// one. Unlike the typed values of [`insert`](Self::insert), the data is readable by
    /// connection id from anywhere: [`Hub::connection_data`] on this node and, in a cluster,
    /// `Hub::cluster_connection_data` from any node.
    ///
    /// ```
    /// # fn f(socket: tower_realtime::Socket) -> Result<(), serde_json::Error> {
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Profile { name: String, lang: String }
    ///
    /// socket.set_data(&Profile { name: "ada".into(), lang: "en".into() })?;
    /// let profile: Option<Profile> = socket.data();
    /// # Ok(()) }
    /// ```
    pub fn set_data<T: Serialize + ?Sized>(&self, data: &T) -> Result<(), serde_json::Error> {
        let value = serde_json::to_value(data)?;
        self.conn.write_state(|state| state.data = Some(value));
        Ok(())
    }

    /// This connection's data as a `T`: `None` when none was set, or when it does not
    /// deserialize into a `T` ([`data_value`](Self::data_value) gives it as it is).
    pub fn data<T: DeserializeOwned>(&self) -> Option<T> {
        T::deserialize(self.data_value()?).ok()
    }

    /// This connection's data as JSON, if any was set.
    pub fn data_value(&self) -> Option<Value> {
        self.conn.data()
    }

    /// Takes this connection's data off it.
    pub fn remove_data(&self) -> Option<Value> {
        self.conn.read_state(|state| state.data.take())
    }

    /// Joins a room of this namespace. `Ok(false)` when already in it; an error when the room
    /// name is empty or too long, or the connection is in too many rooms.
    pub fn join(&self, room: &str) -> Result<bool, ErrorEvent> {
        (self.ns.join(&self.hub, &self.conn, room)).map_err(|e| ErrorEvent::new(e.to_string()))
    }

    /// Leaves a room; `false` when the connection was not in it.
    pub fn leave(&self, room: &str) -> bool {
        self.ns.registry.leave(&self.conn, room)
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
        self.emit_to_self().emit(event, data) == 1
    }

    /// Sends a declared event ([`ServerEvent`](crate::ServerEvent), feature `typed`) to this
    /// connection. Returns whether it was queued.
    #[cfg(feature = "typed")]
    pub fn send<E: crate::event::ServerEvent>(&self, event: E) -> bool {
        self.emit_to_self().send(event) == 1
    }

    fn emit_to_self(&self) -> Emit<'_> {
        Emit::new(&self.hub, &self.ns, Target::Connection(self.conn.id))
    }

    /// Starts a volatile emit to this connection: dropped if the connection is busy (see
    /// [`Emit::volatile`]). Add [`coalesce`](Emit::coalesce) to keep only the latest value.
    ///
    /// ```no_run
    /// # fn f(socket: tower_realtime::Socket) {
    /// socket.volatile().emit("tick", &42);
    /// # }
    /// ```
    pub fn volatile(&self) -> Emit<'_> {
        self.emit_to_self().volatile()
    }

    /// Starts a coalesced emit to this connection: it replaces the message with the same key
    /// still queued for it (see [`Emit::coalesce`]).
    ///
    /// ```no_run
    /// # fn f(socket: tower_realtime::Socket) {
    /// socket.coalesce("progress").emit("progress", &0.75);
    /// # }
    /// ```
    pub fn coalesce<'a>(&'a self, key: &'a str) -> Emit<'a> {
        self.emit_to_self().coalesce(key)
    }

    /// Emits to this connection and waits for its answer (Socket.IO's `emitWithAck`): the
    /// frame carries an `id`, and the client answers `{"ack": id, "data": …}`. Binary values
    /// go both ways, as in [`emit`](Self::emit) and [`Data`](crate::Data): `R` reads the
    /// client's binary values into `Bytes` fields.
    ///
    /// ```no_run
    /// # async fn f(socket: tower_realtime::Socket) -> Result<(), tower_realtime::AckError> {
    /// use std::time::Duration;
    /// let accepted: bool = socket.emit_with_ack("confirm", &"delete?", Duration::from_secs(5)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn emit_with_ack<T, R>(&self, event: &str, data: &T, timeout: Duration) -> Result<R, AckError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let payload = attach::to_json(data).map_err(AckError::Serialize)?;
        let id = self.hub.next_ack_id();
        let mut asked = Asked::new(id);
        let packet = Packet::new(&self.ns.name, event, &payload.json).with(&payload.attachments);
        asked.ask(&self.hub, &self.conn, &packet.with_ack(id));
        let (_, answer) = (asked.collect(timeout).await.pop()).ok_or(AckError::Disconnected)?;
        answer.and_then(|(value, attachments)| attach::from_value(value, &attachments).map_err(AckError::Deserialize))
    }

    /// Emits to a room of this namespace, except this connection.
    pub fn to<'a>(&'a self, room: &'a str) -> Emit<'a> {
        Emit::new(&self.hub, &self.ns, Target::Room(room)).except(self.conn.id)
    }

    /// Emits to every connection of this namespace, except this one.
    pub fn broadcast(&self) -> Emit<'_> {
        Emit::new(&self.hub, &self.ns, Target::All).except(self.conn.id)
    }

    /// Drops this connection's transport so that the client reconnects by itself: close code
    /// `1001` for a native client, an Engine.IO close for a Socket.IO client (its reason is
    /// "transport close", after which socket.io-client reconnects).
    pub fn close_transport(&self) {
        self.conn.request_close(close_code::GOING_AWAY, "reconnect");
    }

    /// Closes this connection (close code `4000`); clients do not reconnect by themselves.
    pub fn disconnect(&self) {
        self.conn
            .request_close(close_code::DISCONNECTED_BY_SERVER, "disconnected by server");
    }

    /// Sends a raw text or binary message to this connection, outside the JSON protocol.
    /// Returns whether it was queued.
    pub fn send_raw(&self, msg: RawMessage) -> bool {
        self.send_frame(msg.0)
    }

    pub(crate) fn send_frame(&self, msg: Message) -> bool {
        self.conn.send(&self.hub, msg)
    }

    /// Sends an event with a list of arguments and binary attachments: a Socket.IO client's
    /// listener gets the arguments separately, with each placeholder
    /// `{"_placeholder":true,"num":n}` replaced by `attachments[n]` as a buffer. A native
    /// client gets the arguments as the event's data (one argument as itself, several as an
    /// array), followed by the attachments (`docs/protocol.md`).
    pub fn emit_args(&self, event: &str, args: Vec<Value>, attachments: Vec<Bytes>) -> bool {
        let frames = match self.conn.proto {
            Proto::Native => {
                let data = match <[Value; 1]>::try_from(args) {
                    Ok([one]) => one,
                    Err(args) => Value::Array(args),
                };
                let json = data.to_string();
                Frames::event(Proto::Native, &self.ns.name, event, &json, &attachments, None)
            }
            #[cfg(feature = "socketio")]
            Proto::SocketIo => {
                let mut packet = sio::SioPacket::event(&self.ns.name, event, args, None);
                packet.attachments = attachments;
                sio_frames(packet)
            }
        };
        self.conn.send_frames(&self.hub, frames)
    }

    /// Answers the client's request with the handler's reply: the ack of request `id`; for a
    /// native request without an id, the reply itself when it is a frame (a JSON object with
    /// a string `event`, as a NestJS handler returns), else nothing.
    pub(crate) fn send_reply(&self, ack: Option<u64>, reply: Reply) {
        let Some(id) = ack else {
            if self.conn.proto == Proto::Native && reply.attachments.is_empty() {
                let frame = match reply.data {
                    Payload::Value(value) => native::is_frame(&value).then(|| value.to_string()),
                    Payload::Json(json) => (serde_json::from_str::<Value>(&json).ok())
                        .filter(native::is_frame)
                        .map(|_| json),
                };
                if let Some(frame) = frame {
                    self.send_frame(Message::Text(frame.into()));
                }
            }
            return;
        };
        let frames = match self.conn.proto {
            Proto::Native => {
                let head = native::encode_ack_raw(id, &reply.json(), reply.attachments.len());
                Frames::with_attachments(Message::Text(head), &reply.attachments)
            }
            #[cfg(feature = "socketio")]
            Proto::SocketIo => match reply.data {
                Payload::Json(json) => {
                    let head = sio::packet::encode_binary_ack(&self.ns.name, id, &json, reply.attachments.len());
                    Frames::with_attachments(sio_message(head), &reply.attachments)
                }
                Payload::Value(data) => {
                    let args = match data {
                        Value::Array(args) if reply.many => args,
                        one => vec![one],
                    };
                    let mut packet = sio::SioPacket::ack(&self.ns.name, id, args);
                    packet.attachments = reply.attachments;
                    sio_frames(packet)
                }
            },
        };
        self.conn.send_frames(&self.hub, frames);
    }

    /// Sends an `error` event to this connection, answering `ack` when given: for a native
    /// client, under the name and in the body style of the hub's
    /// [`Config::error_event`](crate::Config::error_event). A Socket.IO client's ack callback
    /// gets the error object as its argument.
    pub(crate) fn send_error(&self, ack: Option<u64>, error: ErrorEvent) {
        if let Some(detail) = error.detail() {
            tracing::error!(conn = %self.conn.id, %detail, "internal error answered with an error event");
        }
        match self.conn.proto {
            Proto::Native => {
                let frame = native::encode_error_as(self.hub.config(), ack, &error.to_value());
                self.send_frame(Message::Text(frame));
            }
            #[cfg(feature = "socketio")]
            Proto::SocketIo => {
                let packet = match ack {
                    Some(id) => sio::SioPacket::ack(&self.ns.name, id, [error.to_value()]),
                    None => sio::SioPacket::event(&self.ns.name, "error", [error.to_value()], None),
                };
                self.conn.send_frames(&self.hub, sio_frames(packet));
            }
        }
    }
}

/// A Socket.IO packet as Engine.IO messages: its text (`4…`), then its attachments.
#[cfg(feature = "socketio")]
fn sio_frames(packet: sio::SioPacket) -> Frames {
    Frames::with_attachments(sio_message(packet.encode()), &packet.attachments)
}

/// A Socket.IO packet as an Engine.IO message (`4…`).
#[cfg(feature = "socketio")]
pub(crate) fn sio_message(packet: String) -> Message {
    Message::text(format!("4{packet}"))
}
