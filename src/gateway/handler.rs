//! Event handlers: async functions whose arguments are extractors and whose return value
//! becomes the ack.

use std::{future::Future, marker::PhantomData, sync::Arc};

use bytes::Bytes;

use futures_util::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use super::{ErrorEvent, IntoErrorEvent, Socket};
use crate::{protocol::attach, Hub};

/// What a handler call is made of: the calling socket and the payload.
pub struct EventContext {
    pub(crate) socket: Socket,
    pub(crate) event: Arc<str>,
    pub(crate) data: Value,
    /// Whether `data` is the array of several Socket.IO arguments (not one argument).
    pub(crate) many: bool,
    /// Binary attachments (Socket.IO): `{"_placeholder":true,"num":n}` in `data` is `attachments[n]`.
    pub(crate) attachments: Vec<Bytes>,
}

impl EventContext {
    /// The calling socket.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// The event name.
    pub fn event(&self) -> &str {
        &self.event
    }

    /// The payload, as received.
    pub fn data(&self) -> &Value {
        &self.data
    }
}

/// Something a handler can take as an argument: an extractor.
///
/// The extractors: [`Socket`], [`Hub`](crate::Hub), [`Data<T>`], [`Args`], [`Attachments`],
/// [`serde_json::Value`], [`State<S>`], [`SocketExt<T>`](crate::SocketExt) and (feature
/// `validate`) [`Valid<T>`](crate::Valid). Implement it for a type of your own to extract
/// something else from the [`EventContext`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an extractor: a handler's arguments must implement `FromEvent`",
    label = "not an extractor",
    note = "the extractors are Socket, Hub, Data<T>, Args, Attachments, serde_json::Value, State<S>, SocketExt<T> and Valid<T> (tower_realtime's)",
    note = "axum's `State` and `Json` are not extractors here: use `tower_realtime::State` and `tower_realtime::Data` (`tower_realtime::Json` is for replies)"
)]
pub trait FromEvent: Sized {
    /// Extracts the argument, or refuses the call with an `error` event.
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent>;
}

impl FromEvent for Socket {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        Ok(ctx.socket.clone())
    }
}

impl FromEvent for Hub {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        Ok(ctx.socket.hub().clone())
    }
}

/// The typed payload of an event, deserialized with serde from the parsed frame.
///
/// A payload that does not deserialize gets the client an `error` event saying why, and the
/// handler does not run.
///
/// Binary values the client sent (a Socket.IO `Buffer`/`ArrayBuffer`, a native attachment)
/// fill the fields that read bytes: [`Bytes`], or a field with `#[serde(with = "serde_bytes")]`.
/// Read as anything else (a `serde_json::Value`, a `String`), a binary value is refused with
/// an `error` event saying so; take the raw payload with [`Args`] and the bytes with
/// [`Attachments`] instead.
///
/// ```
/// use bytes::Bytes;
/// use tower_realtime::{Data, Json};
///
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct Upload {
///     name: String,
///     file: Bytes,
/// }
///
/// async fn upload(Data(up): Data<Upload>) -> Json<Upload> {
///     Json(up) // the ack carries the same bytes back, as binary
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Data<T>(pub T);

impl<T: DeserializeOwned> FromEvent for Data<T> {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        let value = std::mem::take(&mut ctx.data);
        match attach::from_value(value, &ctx.attachments) {
            Ok(data) => Ok(Data(data)),
            Err(e) => Err(ErrorEvent::new(format!("invalid payload: {e}"))),
        }
    }
}

/// The arguments of an event as a list: a Socket.IO client's `emit(event, a, b, c)` gives
/// `[a, b, c]`; a native frame gives `[data]` (or `[]` when it has none).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Args(pub Vec<Value>);

impl FromEvent for Args {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        Ok(Args(match std::mem::take(&mut ctx.data) {
            Value::Array(items) if ctx.many => items,
            Value::Null if ctx.many => Vec::new(),
            one => vec![one],
        }))
    }
}

/// The binary attachments of an event, in either protocol. In the payload (as [`Args`] gives
/// it) each is a placeholder `{"_placeholder":true,"num":n}` standing for `attachments[n]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachments(pub Vec<Bytes>);

impl FromEvent for Attachments {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        // Cloned (pointers to shared bytes), so that a `Data` taken after it still has them.
        Ok(Attachments(ctx.attachments.clone()))
    }
}

/// The name of the event being handled: for a catch-all
/// ([`NamespaceBuilder::on_any`](crate::NamespaceBuilder::on_any)), the name the client sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct EventName(pub String);

impl FromEvent for EventName {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        Ok(EventName(ctx.event.to_string()))
    }
}

/// The payload as raw JSON, when a handler wants it untyped. An event carrying binary values
/// is refused with an `error` event, as for [`Data<Value>`](Data).
impl FromEvent for Value {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        if ctx.attachments.is_empty() {
            return Ok(std::mem::take(&mut ctx.data));
        }
        Data::from_event(ctx).map(|Data(v)| v)
    }
}

/// App state registered with [`HubBuilder::state`](crate::HubBuilder::state).
///
/// Not axum's `State` (`axum::extract::State`), though it works the same way: a handler of
/// this crate takes `tower_realtime::State`, and the state comes from
/// [`HubBuilder::state`](crate::HubBuilder::state), not from axum's router. With axum's
/// imported by mistake the handler does not compile, with this message:
///
/// ```text
/// error[E0277]: `fn(axum::extract::State<u32>) -> impl Future<Output = String> {count}` is not an event handler
///   = note: a handler is an async fn (or closure) of at most 6 arguments, each an extractor (`FromEvent`): ...
///   = note: axum's `State` and `Json` are not extractors here: use `tower_realtime::State` and `tower_realtime::Data` (`tower_realtime::Json` for replies)
/// ```
///
/// Importing both, rename one: `use axum::extract::State as AxumState;`.
///
/// ```compile_fail
/// use axum::extract::State; // axum's, not tower_realtime's
///
/// async fn count(State(n): State<u32>) -> String { n.to_string() }
///
/// let hub = tower_realtime::Hub::builder().state(1u32).on("count", count).build();
/// ```
///
/// ```
/// use tower_realtime::State;
///
/// async fn count(State(n): State<u32>) -> String { n.to_string() }
///
/// let hub = tower_realtime::Hub::builder().state(1u32).on("count", count).build();
/// # drop(hub);
/// ```
#[derive(Debug, Clone)]
pub struct State<S>(pub S);

impl<S: Clone + Send + Sync + 'static> FromEvent for State<S> {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        match ctx.socket.hub().state::<S>() {
            Some(s) => Ok(State(s)),
            None => Err(ErrorEvent::internal(format!(
                "no state of type {} was registered with HubBuilder::state",
                std::any::type_name::<S>()
            ))),
        }
    }
}

/// A value stored on the calling connection with [`Socket::insert`] (in
/// [`on_connect`](crate::HubBuilder::on_connect), a guard, or an earlier handler), cloned.
///
/// Not axum's `Extension` (request extensions): this is per connection, and lives as long as
/// it. When the connection has no `T` the handler does not run and the client gets an
/// [internal](ErrorEvent::internal) error (the log says which type was missing): storing it is
/// the server's job. For a value that may be absent, call [`Socket::get`] instead.
///
/// ```
/// use tower_realtime::{ErrorEvent, GuardContext, Hub, SocketExt};
///
/// #[derive(Clone)]
/// struct Member { room: String }
///
/// fn member(ctx: &GuardContext<'_>) -> Result<(), ErrorEvent> {
///     let room = ctx.data()["room"].as_str().ok_or_else(|| ErrorEvent::new("no room"))?;
///     ctx.socket().insert(Member { room: room.to_owned() });
///     Ok(())
/// }
///
/// let hub = Hub::builder()
///     .on_guarded("post", member, |SocketExt(m): SocketExt<Member>| async move { m.room })
///     .build();
/// # drop(hub);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SocketExt<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromEvent for SocketExt<T> {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        match ctx.socket.get::<T>() {
            Some(value) => Ok(SocketExt(value)),
            None => Err(ErrorEvent::internal(format!(
                "no {} on this connection: store it with Socket::insert (in on_connect or a guard) before `{}` runs",
                std::any::type_name::<T>(),
                ctx.event
            ))),
        }
    }
}

/// A reply serialized with serde: return `Json(value)` from a handler to ack with it.
///
/// Not axum's `Json`, and a reply only: a handler takes its payload as [`Data<T>`]. axum's
/// `Json` as an argument or as the return value does not compile (the message says the
/// function is not an event handler, with a note on axum's types).
///
/// ```compile_fail
/// async fn echo(axum::Json(v): axum::Json<serde_json::Value>) -> axum::Json<serde_json::Value> {
///     axum::Json(v)
/// }
///
/// let hub = tower_realtime::Hub::builder().on("echo", echo).build();
/// ```
///
/// ```
/// use tower_realtime::{Data, Json};
///
/// async fn echo(Data(v): Data<serde_json::Value>) -> Json<serde_json::Value> {
///     Json(v)
/// }
///
/// let hub = tower_realtime::Hub::builder().on("echo", echo).build();
/// # drop(hub);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Json<T>(pub T);

/// An ack's content: one value (the usual case), or several Socket.IO arguments, with binary
/// attachments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reply {
    pub(crate) data: Payload,
    pub(crate) many: bool,
    pub(crate) attachments: Vec<Bytes>,
}

/// An ack's payload: a value, or JSON serialized already (a [`Json`] reply).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    Value(Value),
    Json(String),
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Value(Value::Null)
    }
}

impl Reply {
    /// An ack with one value.
    pub fn new(data: Value) -> Self {
        Self {
            data: Payload::Value(data),
            many: false,
            attachments: Vec::new(),
        }
    }

    /// An ack with several arguments (a Socket.IO client's callback gets them as separate
    /// arguments; a native client gets them as an array).
    pub fn args(args: Vec<Value>) -> Self {
        Self {
            data: Payload::Value(Value::Array(args)),
            many: true,
            attachments: Vec::new(),
        }
    }

    /// Binary attachments for the placeholders `{"_placeholder":true,"num":n}` in the data
    /// (a [`Json`] reply makes its own from its [`Bytes`] fields).
    pub fn with_attachments(mut self, attachments: Vec<Bytes>) -> Self {
        self.attachments = attachments;
        self
    }

    /// The data as JSON text.
    pub(crate) fn json(&self) -> std::borrow::Cow<'_, str> {
        match &self.data {
            Payload::Json(json) => json.into(),
            Payload::Value(value) => value.to_string().into(),
        }
    }
}

/// What a handler returns: the ack's data, or an error event.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler's return value: it does not implement `IntoReply`",
    note = "a handler returns (), String, &'static str, serde_json::Value, Json<T>, Reply, or a Result of one of them and an error implementing IntoErrorEvent",
    note = "axum's `Json` is not a reply here: use `tower_realtime::Json`"
)]
pub trait IntoReply {
    /// The ack, or the error the client gets.
    fn into_reply(self) -> Result<Reply, ErrorEvent>;
}

impl IntoReply for Reply {
    fn into_reply(self) -> Result<Reply, ErrorEvent> {
        Ok(self)
    }
}

impl IntoReply for () {
    fn into_reply(self) -> Result<Reply, ErrorEvent> {
        Ok(Reply::new(Value::Null))
    }
}

impl IntoReply for Value {
    fn into_reply(self) -> Result<Reply, ErrorEvent> {
        Ok(Reply::new(self))
    }
}

impl IntoReply for String {
    fn into_reply(self) -> Result<Reply, ErrorEvent> {
        Ok(Reply::new(Value::String(self)))
    }
}

impl IntoReply for &'static str {
    fn into_reply(self) -> Result<Reply, ErrorEvent> {
        Ok(Reply::new(Value::String(self.to_owned())))
    }
}

/// Serialized once; its binary values ([`Bytes`] fields, `serde_bytes`) go out as attachments.
impl<T: Serialize> IntoReply for Json<T> {
    fn into_reply(self) -> Result<Reply, ErrorEvent> {
        let payload = attach::to_json(&self.0).map_err(ErrorEvent::internal)?;
        Ok(Reply {
            data: Payload::Json(payload.json),
            many: false,
            attachments: payload.attachments,
        })
    }
}

impl<T: IntoReply, E: IntoErrorEvent> IntoReply for Result<T, E> {
    fn into_reply(self) -> Result<Reply, ErrorEvent> {
        match self {
            Ok(v) => v.into_reply(),
            Err(e) => Err(e.into_error_event()),
        }
    }
}

/// An async function usable as an event handler: up to six [`FromEvent`] arguments,
/// returning anything that is [`IntoReply`].
///
/// A function with an argument that is not an extractor is not a handler:
///
/// ```compile_fail
/// // `u32` is not an extractor: the payload is taken as `Data<u32>`.
/// async fn double(n: u32) -> String { (n * 2).to_string() }
///
/// let hub = tower_realtime::Hub::builder().on("double", double).build();
/// ```
///
/// The compiler says so, and lists the extractors and the return types (it names the
/// function, not the argument: check each argument against the list):
///
/// ```text
/// error[E0277]: `fn(u32) -> impl Future<Output = String> {double}` is not an event handler
///   = note: a handler is an async fn (or closure) of at most 6 arguments, each an extractor (`FromEvent`): Socket, Hub, Data<T>, Args, Attachments, serde_json::Value, State<S>, SocketExt<T>, Valid<T>
///   = note: it returns something `IntoReply`: (), String, &'static str, serde_json::Value, Json<T>, Reply, or a Result of one and an `IntoErrorEvent`
///   = note: axum's `State` and `Json` are not extractors here: ...
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event handler",
    label = "not an event handler",
    note = "a handler is an async fn (or closure) of at most 6 arguments, each an extractor (`FromEvent`): Socket, Hub, Data<T>, Args, Attachments, serde_json::Value, State<S>, SocketExt<T>, Valid<T>",
    note = "it returns something `IntoReply`: (), String, &'static str, serde_json::Value, Json<T>, Reply, or a Result of one and an `IntoErrorEvent`",
    note = "axum's `State` and `Json` are not extractors here: use `tower_realtime::State` and `tower_realtime::Data` (`tower_realtime::Json` for replies)"
)]
pub trait Handler<Args>: Clone + Send + Sync + 'static {
    /// Calls the handler.
    fn call(&self, ctx: EventContext) -> BoxFuture<'static, Result<Reply, ErrorEvent>>;
}

macro_rules! impl_handler {
    ($($arg:ident),*) => {
        #[allow(non_snake_case, unused_variables, unused_mut)]
        impl<F, Fut, R, $($arg,)*> Handler<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoReply,
            $($arg: FromEvent + Send + 'static,)*
        {
            fn call(&self, mut ctx: EventContext) -> BoxFuture<'static, Result<Reply, ErrorEvent>> {
                $(
                    let $arg = match $arg::from_event(&mut ctx) {
                        Ok(v) => v,
                        Err(e) => return Box::pin(std::future::ready(Err(e))),
                    };
                )*
                let fut = (self)($($arg),*);
                Box::pin(async move { fut.await.into_reply() })
            }
        }
    };
}

impl_handler!();
impl_handler!(A1);
impl_handler!(A1, A2);
impl_handler!(A1, A2, A3);
impl_handler!(A1, A2, A3, A4);
impl_handler!(A1, A2, A3, A4, A5);
impl_handler!(A1, A2, A3, A4, A5, A6);

/// A handler with its argument types erased, as stored by the gateway.
pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn call(&self, ctx: EventContext) -> BoxFuture<'static, Result<Reply, ErrorEvent>>;
}

pub(crate) struct Erased<H, Args> {
    handler: H,
    _args: PhantomData<fn() -> Args>,
}

impl<H, Args> Erased<H, Args> {
    pub(crate) fn new(handler: H) -> Self {
        Self {
            handler,
            _args: PhantomData,
        }
    }
}

impl<H: Handler<Args>, Args: 'static> ErasedHandler for Erased<H, Args> {
    fn call(&self, ctx: EventContext) -> BoxFuture<'static, Result<Reply, ErrorEvent>> {
        self.handler.call(ctx)
    }
}
