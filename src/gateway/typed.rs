//! Handlers of declared events (feature `typed`): the payload is the event's type, the
//! return value its ack type, both checked at compile time.

use std::{future::Future, marker::PhantomData};

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::{
    handler::{ErasedHandler, EventContext},
    Data, ErrorEvent, FromEvent, Handler, IntoErrorEvent, IntoReply, Json, Reply,
};
use crate::event::ClientEvent;

/// What the handler of a declared event returns: its ack type `A`, or a `Result` of it and
/// an error the client gets as an `error` event.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not this event's ack: the handler must return `{A}` or a `Result<{A}, _>`",
    label = "not the declared ack",
    note = "the ack type is the one named in `#[event(ack = ..)]`"
)]
pub trait IntoAck<A> {
    /// The ack, or the error the client gets.
    fn into_ack(self) -> Result<A, ErrorEvent>;
}

impl<A> IntoAck<A> for A {
    fn into_ack(self) -> Result<A, ErrorEvent> {
        Ok(self)
    }
}

impl<A, E: IntoErrorEvent> IntoAck<A> for Result<A, E> {
    fn into_ack(self) -> Result<A, ErrorEvent> {
        self.map_err(IntoErrorEvent::into_error_event)
    }
}

/// An async function handling a declared event `E`: up to five [extractors](FromEvent), then
/// the payload `E` as its last argument, returning `E::Ack` (or a `Result` of it, see
/// [`IntoAck`]). Register it with [`HubBuilder::on_event`](crate::HubBuilder::on_event).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler of a declared event",
    label = "not a handler of a declared event",
    note = "a handler of a declared event is an async fn (or closure) of at most 5 extractors then the event's payload type, as its last argument, annotated (`JoinRoom(room): JoinRoom`)",
    note = "it returns the event's ack type (`#[event(ack = ..)]`), or a Result of it and an `IntoErrorEvent`"
)]
pub trait EventHandler<E, Args>: Clone + Send + Sync + 'static {
    /// Calls the handler.
    fn call(&self, ctx: EventContext) -> BoxFuture<'static, Result<Reply, ErrorEvent>>;
}

/// The payload of a declared event, as an extractor: deserialized as [`Data`] does, or the
/// unit value of an event without one, whatever the client sent with it.
struct Payload<E>(E);

impl<E: ClientEvent> FromEvent for Payload<E> {
    fn from_event(ctx: &mut EventContext) -> Result<Self, ErrorEvent> {
        if E::PAYLOAD {
            return Data::<E>::from_event(ctx).map(|Data(e)| Payload(e));
        }
        serde_json::from_value(Value::Null)
            .map(Payload)
            .map_err(ErrorEvent::internal)
    }
}

/// The ack as a reply: serialized once, binary values as attachments (as [`Json`]).
fn reply<E: ClientEvent>(ack: impl IntoAck<E::Ack>) -> Result<Reply, ErrorEvent> {
    ack.into_ack().and_then(|ack| Json(ack).into_reply())
}

/// A handler of a declared event is called as a [`Handler`] whose last extractor is the
/// payload and whose reply is the ack.
macro_rules! impl_event_handler {
    ($($arg:ident),*) => {
        #[allow(non_snake_case)]
        impl<F, Fut, R, E, $($arg,)*> EventHandler<E, ($($arg,)*)> for F
        where
            F: Fn($($arg,)* E) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoAck<E::Ack>,
            E: ClientEvent,
            $($arg: FromEvent + Send + 'static,)*
        {
            fn call(&self, ctx: EventContext) -> BoxFuture<'static, Result<Reply, ErrorEvent>> {
                let f = self.clone();
                let typed = move |$($arg: $arg,)* Payload(event): Payload<E>| {
                    let fut = f($($arg,)* event);
                    async move { reply::<E>(fut.await) }
                };
                Handler::call(&typed, ctx)
            }
        }
    };
}

/// Every number of extractors, from five down to none.
macro_rules! impl_event_handlers {
    () => {
        impl_event_handler!();
    };
    ($head:ident $(, $tail:ident)*) => {
        impl_event_handler!($head $(, $tail)*);
        impl_event_handlers!($($tail),*);
    };
}

impl_event_handlers!(A1, A2, A3, A4, A5);

/// A handler of a declared event with its types erased, as the gateway stores it.
pub(crate) struct Typed<H, E, Args> {
    handler: H,
    _types: PhantomData<fn() -> (E, Args)>,
}

impl<H, E, Args> Typed<H, E, Args> {
    pub(crate) fn new(handler: H) -> Self {
        Self {
            handler,
            _types: PhantomData,
        }
    }
}

impl<H: EventHandler<E, Args>, E: 'static, Args: 'static> ErasedHandler for Typed<H, E, Args> {
    fn call(&self, ctx: EventContext) -> BoxFuture<'static, Result<Reply, ErrorEvent>> {
        self.handler.call(ctx)
    }
}
