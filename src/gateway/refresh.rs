//! `$refresh`: a client's new token on an open connection, which moves its identity's expiry.

use std::{sync::Arc, time::SystemTime};

use serde_json::{json, Value};

use super::{Call, ErrorEvent, Reply, Socket};
use crate::{auth::AuthRequest, config::RateLimit, protocol::REFRESH_EVENT};

/// How often one connection may refresh: each one runs the authenticator (a signature check).
pub(crate) const REFRESH_RATE: RateLimit = RateLimit::per_second_const(1, 5);

/// The call that answers a `$refresh` (with an ack when the client asked for one).
pub(crate) fn call(socket: &Socket, data: Value, ack: Option<u64>) -> Call {
    let socket = socket.clone();
    Call {
        future: Box::pin(async move { refresh(&socket, data).await.map(Reply::new) }),
        ack,
        event: Arc::from(REFRESH_EVENT),
    }
}

/// Verifies the new token with the hub's authenticator: it must be valid and for the same
/// user. Then the connection's deadline is the new identity's expiry (none if it has none).
/// Refused, the connection keeps its old deadline.
async fn refresh(socket: &Socket, data: Value) -> Result<Value, ErrorEvent> {
    let unauthorized = |message: &str| ErrorEvent::new(message).with_status("unauthorized");
    let Some(token) = data.get("token").and_then(Value::as_str) else {
        return Err(unauthorized("`$refresh` takes {\"token\": \"...\"}"));
    };
    let hub = socket.hub();
    let Some(auth) = hub.inner.auth.clone() else {
        return Err(unauthorized("no authenticator configured"));
    };
    // The connection's request is long gone: the authenticator sees the token, and the
    // event's data as the payload, on an empty request.
    let (parts, ()) = http::Request::new(()).into_parts();
    let request = AuthRequest::new(&parts, Some(token)).with_payload(Some(&data));
    let identity = (auth.authenticate(&request).await).map_err(|e| unauthorized(e.message()))?;
    if identity.user_id().is_none() || identity.user_id() != socket.user_id() {
        tracing::debug!(conn = %socket.id(), "`$refresh` with a token for another user: refused");
        return Err(ErrorEvent::forbidden("the new token is for another user"));
    }
    let at = identity.expires_at();
    // A connection on its way out keeps no deadline.
    if socket.conn().close_requested().is_none() {
        hub.inner.expiry.set(hub, socket.ns(), socket.conn(), at);
    }
    let at = at.map(|at| at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    Ok(json!({ "status": "ok", "expires_at": at }))
}
