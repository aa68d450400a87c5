//! Event handlers: async functions whose arguments are extractors and whose return value
//! becomes the ack.

use std::{future::Future, marker::PhantomData, sync::Arc};

use futures_util::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use super::{ErrorEvent, IntoErrorEvent, Socket};
use crate::Hub;

/// What a handler call is made of: the calling socket and the payload.
pub struct EventContext {
    pub(crate) socket: Socket,
    pub(crate) event: Arc<str>,
    pub(crate) data: Value,
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

/// Something a handler can take as an argument.
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Data<T>(pub T);

impl<T: DeserializeOwned> FromEvent for Data<T> {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        let value = std::mem::take(&mut ctx.data);
        match T::deserialize(value) {
            Ok(data) => Ok(Data(data)),
            Err(e) => Err(ErrorEvent::new(format!("invalid payload: {e}"))),
        }
    }
}

/// The payload as raw JSON, when a handler wants it untyped.
impl FromEvent for Value {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        Ok(std::mem::take(&mut ctx.data))
    }
}

/// App state registered with [`HubBuilder::state`](crate::HubBuilder::state).
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

/// A reply serialized with serde: return `Json(value)` from a handler to ack with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Json<T>(pub T);

/// What a handler returns: the ack's data, or an error event.
pub trait IntoReply {
    /// The ack's data, or the error the client gets.
    fn into_reply(self) -> Result<Value, ErrorEvent>;
}

impl IntoReply for () {
    fn into_reply(self) -> Result<Value, ErrorEvent> {
        Ok(Value::Null)
    }
}

impl IntoReply for Value {
    fn into_reply(self) -> Result<Value, ErrorEvent> {
        Ok(self)
    }
}

impl IntoReply for String {
    fn into_reply(self) -> Result<Value, ErrorEvent> {
        Ok(Value::String(self))
    }
}

impl IntoReply for &'static str {
    fn into_reply(self) -> Result<Value, ErrorEvent> {
        Ok(Value::String(self.to_owned()))
    }
}

impl<T: Serialize> IntoReply for Json<T> {
    fn into_reply(self) -> Result<Value, ErrorEvent> {
        serde_json::to_value(self.0).map_err(ErrorEvent::internal)
    }
}

impl<T: IntoReply, E: IntoErrorEvent> IntoReply for Result<T, E> {
    fn into_reply(self) -> Result<Value, ErrorEvent> {
        match self {
            Ok(v) => v.into_reply(),
            Err(e) => Err(e.into_error_event()),
        }
    }
}

/// An async function usable as an event handler: up to six [`FromEvent`] arguments,
/// returning anything that is [`IntoReply`].
pub trait Handler<Args>: Clone + Send + Sync + 'static {
    /// Calls the handler.
    fn call(&self, ctx: EventContext) -> BoxFuture<'static, Result<Value, ErrorEvent>>;
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
            fn call(&self, mut ctx: EventContext) -> BoxFuture<'static, Result<Value, ErrorEvent>> {
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
    fn call(&self, ctx: EventContext) -> BoxFuture<'static, Result<Value, ErrorEvent>>;
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
    fn call(&self, ctx: EventContext) -> BoxFuture<'static, Result<Value, ErrorEvent>> {
        self.handler.call(ctx)
    }
}
