//! Guards: checks that run before a handler (or at connect time) and may refuse it.

use serde_json::Value;

use super::{ErrorEvent, Socket};
use crate::auth::Identity;

/// What a guard sees: the calling socket (and its [`Identity`]), the event and its payload.
#[derive(Debug)]
pub struct GuardContext<'a> {
    pub(crate) socket: &'a Socket,
    pub(crate) event: &'a str,
    pub(crate) data: &'a Value,
}

impl<'a> GuardContext<'a> {
    /// The calling socket.
    pub fn socket(&self) -> &'a Socket {
        self.socket
    }

    /// Who is calling.
    pub fn identity(&self) -> &'a Identity {
        self.socket.identity()
    }

    /// The event name.
    pub fn event(&self) -> &'a str {
        self.event
    }

    /// The payload, before it is deserialized for the handler.
    pub fn data(&self) -> &'a Value {
        self.data
    }
}

/// A check before a handler runs. `Err` refuses the call: the client gets the error as its
/// `error` event (with the ack id when there was one) and the handler does not run.
///
/// Implemented for closures `Fn(&GuardContext) -> Result<(), ErrorEvent>`. A role check on a
/// JWT claim:
///
/// ```
/// use tower_realtime::{ErrorEvent, GuardContext, Hub};
///
/// fn admin_only(ctx: &GuardContext<'_>) -> Result<(), ErrorEvent> {
///     if ctx.identity().has_claim_value("role", "admin") {
///         Ok(())
///     } else {
///         Err(ErrorEvent::forbidden("admin role required"))
///     }
/// }
///
/// let hub = Hub::builder()
///     .on("ping", || async { "pong" })
///     .group(|admin| admin.guard(admin_only).on("ban", || async { "banned" }))
///     .build();
/// # drop(hub);
/// ```
pub trait Guard: Send + Sync + 'static {
    /// Checks one call.
    fn check(&self, ctx: &GuardContext<'_>) -> Result<(), ErrorEvent>;
}

impl<F> Guard for F
where
    F: Fn(&GuardContext<'_>) -> Result<(), ErrorEvent> + Send + Sync + 'static,
{
    fn check(&self, ctx: &GuardContext<'_>) -> Result<(), ErrorEvent> {
        self(ctx)
    }
}

/// A check when a connection arrives. `Err(reason)` closes it with code `1008` and the reason.
pub trait ConnectGuard: Send + Sync + 'static {
    /// Checks one connection.
    fn check(&self, socket: &Socket) -> Result<(), String>;
}

impl<F, E> ConnectGuard for F
where
    F: Fn(&Socket) -> Result<(), E> + Send + Sync + 'static,
    E: std::fmt::Display,
{
    fn check(&self, socket: &Socket) -> Result<(), String> {
        self(socket).map_err(|e| e.to_string())
    }
}
