//! The gateway: events routed to handlers, the [`Socket`] a handler sees, replies, acks (both
//! ways), error events, guards, rate limits, and the connect/disconnect hooks.

mod error;
mod guard;
mod handler;
mod rate;
mod refresh;
mod socket;
#[cfg(feature = "typed")]
mod typed;
#[cfg(feature = "typed")]
mod typescript;
#[cfg(feature = "validate")]
mod valid;

pub use error::{ErrorEvent, IntoErrorEvent};
pub use guard::{ConnectGuard, Guard, GuardContext};
pub use handler::{
    Args, Attachments, Data, EventContext, EventName, FromEvent, Handler, IntoReply, Json, Reply, SocketExt, State,
};
pub use socket::{RawMessage, Socket};
#[cfg(feature = "typed")]
pub use typed::{EventHandler, IntoAck};
#[cfg(feature = "validate")]
pub use valid::Valid;

pub(crate) use rate::{RateState, Verdict};

use std::{collections::HashMap, fmt, future::Future, sync::Arc};

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::{
    config::RateLimit,
    hub::{DisconnectReason, NsInner},
    protocol::{REFRESH_EVENT, RESERVED_EVENTS},
};

use handler::ErasedHandler;

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

pub(crate) type RawHandler = Arc<dyn Fn(Socket, RawMessage) -> BoxFuture<'static, ()> + Send + Sync>;
type ConnectHook = Arc<dyn Fn(Socket) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;
type DisconnectHook = Arc<dyn Fn(Socket, DisconnectReason) -> BoxFuture<'static, ()> + Send + Sync>;
type RejoinGuard = Arc<dyn Fn(Socket, String) -> BoxFuture<'static, bool> + Send + Sync>;

/// What the catch-all's calls are known as in logs and metrics (not the client's event
/// names, which are anything).
static ANY_LABEL: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("*"));

/// One event's handler, with its guards and its own rate limit.
#[derive(Clone)]
struct Route {
    handler: Arc<dyn ErasedHandler>,
    guards: Vec<Arc<dyn Guard>>,
    rate: Option<RateLimit>,
}

impl NsInner {
    /// The namespace's handler table, which the builder gave the hub to keep.
    pub(crate) fn gateway(&self) -> &Gateway {
        (self.routes.downcast_ref()).expect("a namespace's routes are its Gateway: the builder sets them")
    }
}

/// The handlers, guards, limits and hooks of one namespace.
#[derive(Default, Clone)]
pub(crate) struct Gateway {
    routes: HashMap<Arc<str>, Route>,
    /// The catch-all handler, for events without a handler of their own.
    any: Option<Route>,
    guards: Vec<Arc<dyn Guard>>,
    connect_guards: Vec<Arc<dyn ConnectGuard>>,
    /// Takes every text and binary frame instead of the JSON protocol, when set.
    pub(crate) raw: Option<RawHandler>,
    pub(crate) rate: Option<RateLimit>,
    on_connect: Option<ConnectHook>,
    on_disconnect: Option<DisconnectHook>,
    rejoin: Option<RejoinGuard>,
    /// The declared events handled and sent, for their TypeScript.
    #[cfg(feature = "typed")]
    pub(crate) declared: Vec<typescript::Declare>,
}

/// One event from a client, whatever its protocol.
pub(crate) struct Incoming {
    pub(crate) event: String,
    /// The payload: the one argument, or the array of several (`many`).
    pub(crate) data: Value,
    pub(crate) many: bool,
    pub(crate) attachments: Vec<bytes::Bytes>,
    pub(crate) id: Option<u64>,
}

impl Call {
    /// Runs the handler and answers: the ack when the client asked for one (without an id, a
    /// native client gets a reply that is a frame of its own, NestJS's way), an `error` event
    /// when the handler failed or panicked (the panic is logged; the connection carries on).
    pub(crate) async fn run(self, socket: Socket) {
        use futures_util::FutureExt;
        let ack = self.ack;
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let outcome = std::panic::AssertUnwindSafe(self.future).catch_unwind().await;
        #[cfg(feature = "metrics")]
        crate::hub::metrics::handler_latency(&self.event, started.elapsed());
        match outcome {
            Ok(Ok(reply)) => socket.send_reply(ack, reply),
            Ok(Err(error)) => socket.send_error(ack, error),
            Err(panic) => {
                let what = (panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                tracing::error!(conn = %socket.id(), event = %self.event, panic = %what, "event handler panicked");
                let error = ErrorEvent::internal(format!("handler for `{}` panicked: {what}", self.event));
                socket.send_error(ack, error);
            }
        }
    }
}

/// A routed event, ready to run.
pub(crate) struct Call {
    pub(crate) future: BoxFuture<'static, Result<Reply, ErrorEvent>>,
    pub(crate) ack: Option<u64>,
    pub(crate) event: Arc<str>,
}

/// Why an event was not routed.
pub(crate) enum Refused {
    /// Answer with this error event.
    Error(Option<u64>, ErrorEvent),
    /// Answer with this error event, then close the connection with `1008`: it keeps flooding.
    Flood(Option<u64>, ErrorEvent),
}

impl Gateway {
    pub(crate) fn add_handler<H: Handler<Args>, Args: 'static>(
        &mut self,
        event: &str,
        handler: H,
        guards: Vec<Arc<dyn Guard>>,
    ) {
        self.add_route(event, Arc::new(handler::Erased::new(handler)), guards);
    }

    /// Handles a declared event: its name and payload from `E`, its return value `E::Ack`.
    #[cfg(feature = "typed")]
    pub(crate) fn add_event_handler<E, H, Args>(&mut self, handler: H)
    where
        E: crate::event::ClientEvent,
        H: EventHandler<E, Args>,
        Args: 'static,
    {
        self.add_route(E::NAME, Arc::new(typed::Typed::new(handler)), Vec::new());
        self.declared.push(typescript::Writer::client::<E>);
    }

    /// Declares an event the server sends, for its TypeScript.
    #[cfg(feature = "typed")]
    pub(crate) fn declare_server_event<E: crate::event::ServerEvent>(&mut self) {
        self.declared.push(typescript::Writer::server::<E>);
    }

    fn add_route(&mut self, event: &str, handler: Arc<dyn ErasedHandler>, guards: Vec<Arc<dyn Guard>>) {
        let route = Route {
            handler,
            guards,
            rate: None,
        };
        self.routes.insert(Arc::from(event), route);
    }

    pub(crate) fn set_any<H: Handler<Args>, Args: 'static>(&mut self, handler: H) {
        self.any = Some(Route {
            handler: Arc::new(handler::Erased::new(handler)),
            guards: Vec::new(),
            rate: None,
        });
    }

    /// Adds a group's handlers (its catch-all too), each behind the group's guards.
    pub(crate) fn merge_group(&mut self, group: Gateway) {
        let behind = |mut route: Route| {
            let mut guards = group.guards.clone();
            guards.append(&mut route.guards);
            route.guards = guards;
            route
        };
        if let Some(any) = group.any {
            self.any = Some(behind(any));
        }
        for (event, route) in group.routes {
            self.routes.insert(event, behind(route));
        }
        #[cfg(feature = "typed")]
        self.declared.extend(group.declared);
    }

    pub(crate) fn add_guard(&mut self, guard: Arc<dyn Guard>) {
        self.guards.push(guard);
    }

    pub(crate) fn add_connect_guard(&mut self, guard: Arc<dyn ConnectGuard>) {
        self.connect_guards.push(guard);
    }

    pub(crate) fn set_event_rate(&mut self, event: &str, rate: RateLimit) -> bool {
        match self.routes.get_mut(event) {
            Some(route) => {
                route.rate = Some(rate);
                true
            }
            None => false,
        }
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

    pub(crate) fn set_rejoin_guard<F, Fut>(&mut self, guard: F)
    where
        F: Fn(Socket, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.rejoin = Some(Arc::new(move |s, room| Box::pin(guard(s, room))));
    }

    /// The rooms of a restored session that the rejoin guard lets the socket back in (all of
    /// them without a guard), each asked in turn.
    pub(crate) async fn rejoinable(&self, socket: &Socket, rooms: Vec<Arc<str>>) -> Vec<Arc<str>> {
        let Some(guard) = &self.rejoin else { return rooms };
        let mut allowed = Vec::with_capacity(rooms.len());
        for room in rooms {
            if guard(socket.clone(), room.to_string()).await {
                allowed.push(room);
            } else {
                tracing::debug!(conn = %socket.id(), %room, "recovery: the rejoin guard kept the connection out of a room");
            }
        }
        allowed
    }

    /// Runs the connect guards.
    pub(crate) fn check_connect(&self, socket: &Socket) -> Result<(), String> {
        self.connect_guards.iter().try_for_each(|guard| guard.check(socket))
    }

    /// Runs the connect hook.
    pub(crate) async fn connect_hook(&self, socket: Socket) -> Result<(), String> {
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

    /// Finds the handler of an event and checks its limits and guards.
    pub(crate) fn route(&self, socket: &Socket, incoming: Incoming, rate: &mut RateState) -> Result<Call, Refused> {
        let Incoming {
            event,
            data,
            many,
            attachments,
            id,
        } = incoming;
        let cfg = socket.hub().config();
        let max = cfg.max_event_name_len;
        if event.len() > max {
            let error = ErrorEvent::new(format!("event name longer than {max} bytes"));
            return Err(Refused::Error(id, error));
        }
        if event == REFRESH_EVENT {
            let limited = || ErrorEvent::new("too many refreshes").with_status("rate_limited");
            let name = Arc::from(REFRESH_EVENT);
            return match rate.check(
                &name,
                Some(refresh::REFRESH_RATE),
                self.rate,
                cfg.rate_limit_flood_threshold,
            ) {
                Verdict::Allowed => Ok(refresh::call(socket, data, id)),
                Verdict::Limited => Err(Refused::Error(id, limited())),
                Verdict::Flooding => Err(Refused::Flood(id, limited())),
            };
        }
        if RESERVED_EVENTS.contains(&event.as_str()) {
            return Err(Refused::Error(
                id,
                ErrorEvent::new(format!("`{event}` is a reserved event name")),
            ));
        }
        let caught: Arc<str>;
        let (name, label, route) = match (self.routes.get_key_value(event.as_str()), &self.any) {
            (Some((name, route)), _) => (name, name, route),
            (None, Some(any)) => {
                caught = Arc::from(event);
                (&caught, &*ANY_LABEL, any)
            }
            (None, None) => return Err(Refused::Error(id, ErrorEvent::new(format!("unknown event: {event}")))),
        };
        if self.rate.is_some() || route.rate.is_some() {
            let limited = || {
                ErrorEvent::new("rate limit exceeded")
                    .with_status("rate_limited")
                    .with_field("code", "rate_limited")
            };
            match rate.check(name, route.rate, self.rate, cfg.rate_limit_flood_threshold) {
                Verdict::Allowed => {}
                Verdict::Limited => return Err(Refused::Error(id, limited())),
                Verdict::Flooding => return Err(Refused::Flood(id, limited())),
            }
        }
        let ctx = GuardContext {
            socket,
            event: name,
            data: &data,
        };
        for guard in self.guards.iter().chain(&route.guards) {
            if let Err(error) = guard.check(&ctx) {
                return Err(Refused::Error(id, error));
            }
        }
        let ctx = EventContext {
            socket: socket.clone(),
            event: name.clone(),
            data,
            many,
            attachments,
        };
        Ok(Call {
            future: route.handler.call(ctx),
            ack: id,
            event: label.clone(),
        })
    }
}
