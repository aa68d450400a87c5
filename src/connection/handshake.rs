//! The WebSocket handshake: every check and its rejection, then the 101 and the spawn of the
//! connection task.
//!
//! The WebSocket checks come first; then the [admission](super::admission) that every
//! transport shares (its refusals rendered here as HTTP).
//!
//! | check | rejection |
//! |---|---|
//! | method is not GET | 405, `Allow: GET` |
//! | no `Connection: upgrade` / no `Upgrade: websocket` / no or bad `Sec-WebSocket-Key` / no `Sec-WebSocket-Version` | 400 |
//! | `Sec-WebSocket-Version` is not 13 | 426, `Sec-WebSocket-Version: 13` |
//! | the server did not enable HTTP/1.1 upgrades | 500 |
//! | a malformed `session`, `epoch` or `offset` query parameter or `x-realtime-session`, `x-realtime-epoch` or `x-realtime-offset` header, or a session in both (recovery) | 400 |
//! | the hub is shutting down | 503 |
//! | `Origin` not allowed | 403 |
//! | authentication fails | 401, `{"error": "..."}` |
//! | the user opens connections too fast | 429 |
//! | the client address opens connections too fast (anonymous connections, by default) | 429 |
//! | the user has `max_connections_per_user` connections | 429 |
//! | the client address has `max_connections_per_address` connections (anonymous connections, by default) | 429 |
//! | the hub has `max_connections` connections | 503 |
//! | the OS random generator fails (a recovery session id is needed) | 503 |

use futures_util::future::BoxFuture;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use bytes::Bytes;

use super::{
    admission::{self, Client, Refusal},
    deflate::{self, Agreed},
    websocket::WsStream,
};
use crate::{
    auth::{extract_token, SUBPROTOCOL},
    config::Compression,
    hub::{
        dynamic::Lease,
        history::{random_id, Ask, Recovery, Resume, MAX_RECOVERY_TOKEN},
        Conn, Hub, NsInner, RefusalCause, Transport,
    },
    util::query_param,
};
use std::sync::Arc;

/// A refused handshake: a status, what the client is told (as JSON, `{"error": ...}`, or as
/// text), and why.
pub(crate) struct HttpRefusal {
    status: StatusCode,
    message: String,
    json: bool,
    cause: RefusalCause,
}

impl HttpRefusal {
    fn bad(message: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, RefusalCause::BadRequest)
    }

    fn new(status: StatusCode, message: &str, cause: RefusalCause) -> Self {
        Self {
            status,
            message: message.to_owned(),
            json: false,
            cause,
        }
    }

    /// Reports this refusal of `client` ([`Client::report`]) and answers it. (The admission
    /// reports its own refusals: they are answered with [`into_response`](Self::into_response).)
    pub(crate) fn refuse(self, hub: &Hub, client: &Client<'_>) -> Response<Bytes> {
        client.report(hub, self.cause, &self.message, None, Some(self.status));
        self.into_response()
    }

    pub(crate) fn into_response(self) -> Response<Bytes> {
        let (body, content_type) = match self.json {
            true => (
                serde_json::json!({ "error": self.message }).to_string(),
                "application/json",
            ),
            false => (self.message, "text/plain; charset=utf-8"),
        };
        let mut res = Response::new(Bytes::from(body));
        *res.status_mut() = self.status;
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        match self.status {
            StatusCode::METHOD_NOT_ALLOWED => {
                res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            StatusCode::UPGRADE_REQUIRED => {
                res.headers_mut()
                    .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            }
            StatusCode::UNAUTHORIZED => {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        res
    }
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A `Sec-WebSocket-Key` is the base64 encoding of 16 bytes: 22 characters and `==`.
fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        // The last character before the padding carries 2 bits of data and 4 zero bits.
        && b"AQgw".contains(&key[21])
}

/// Checks the WebSocket upgrade itself: method, headers, key, and that the server can upgrade.
pub(crate) fn check_upgrade<B>(req: &Request<B>) -> Result<(), HttpRefusal> {
    if req.method() != http::Method::GET {
        return Err(HttpRefusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket handshake must be a GET request",
            RefusalCause::BadRequest,
        ));
    }
    let headers = req.headers();
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HttpRefusal::bad("missing `Connection: upgrade` header"));
    }
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err(HttpRefusal::bad("missing `Upgrade: websocket` header"));
    }
    match headers.get(header::SEC_WEBSOCKET_VERSION) {
        None => return Err(HttpRefusal::bad("missing `Sec-WebSocket-Version` header")),
        Some(v) if v != "13" => {
            return Err(HttpRefusal::new(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported WebSocket version: only 13 is supported",
                RefusalCause::BadRequest,
            ))
        }
        Some(_) => {}
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if valid_key(key.as_bytes()) => {}
        Some(_) => return Err(HttpRefusal::bad("invalid `Sec-WebSocket-Key` header")),
        None => return Err(HttpRefusal::bad("missing `Sec-WebSocket-Key` header")),
    }
    if req.extensions().get::<hyper::upgrade::OnUpgrade>().is_none() {
        tracing::error!("a WebSocket handshake reached a server without HTTP/1.1 upgrades (hyper: serve_connection(..).with_upgrades())");
        return Err(HttpRefusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this server does not support connection upgrades",
            RefusalCause::BadRequest,
        ));
    }
    Ok(())
}

/// The `101 Switching Protocols` answering an upgrade with these headers (already checked),
/// and permessage-deflate, when `compression` is on and the client offered it.
pub(crate) fn switching_protocols(
    headers: &HeaderMap,
    compression: Option<&Compression>,
) -> (Response<Bytes>, Option<Agreed>) {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes())
        .unwrap_or_default();
    let mut res = Response::new(Bytes::new());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key)) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    let agreed = compression
        .and_then(|c| deflate::negotiate(headers, c))
        .map(|(agreed, answer)| {
            h.insert(header::SEC_WEBSOCKET_EXTENSIONS, answer);
            agreed
        });
    (res, agreed)
}

/// The WebSocket stream of an upgraded connection: messages up to `max_message`, reads of
/// `read_buffer_size` into the thread's shared buffer, permessage-deflate as agreed.
pub(crate) fn ws_stream<S>(cfg: &crate::Config, max_message: usize, deflate: Option<Agreed>, io: S) -> WsStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    WsStream::new(io, max_message, cfg.read_buffer_size, deflate)
}

impl From<Refusal> for HttpRefusal {
    fn from(refusal: Refusal) -> Self {
        let json = matches!(refusal, Refusal::Auth(_));
        Self {
            json,
            ..Self::new(refusal.status(), &refusal.message(), refusal.cause())
        }
    }
}

/// Answers a handshake request: a rejection, or a 101 with the connection task spawned.
pub(crate) fn handshake<ReqBody>(hub: Hub, ns: Lease, req: Request<ReqBody>) -> BoxFuture<'static, Response<Bytes>> {
    let (parts, body) = req.into_parts();
    let addr = hub.inner.addresses.source.of(&parts);
    let mut req = Request::from_parts(parts, body);
    let checked = check_upgrade(&req).and_then(|()| recovery_ask(req.uri().query(), req.headers()));
    let ask = match checked {
        Ok(ask) => ask,
        Err(refusal) => {
            let client = client(addr, &ns);
            return Box::pin(std::future::ready(refusal.refuse(&hub, &client)));
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _body) = req.into_parts();
    Box::pin(async move {
        let token = extract_token(&parts);
        let token = token.as_ref().map(|(t, _)| t.as_str());
        let pass = match admission::admit(&hub, &parts, &client(addr, &ns), token, None).await {
            Ok(pass) => pass,
            Err(refusal) => return HttpRefusal::from(refusal).into_response(),
        };
        // A client that takes part in recovery gets a session of its own (which a resumed
        // session replaces), its id from the OS generator: without one, no connection.
        let session_id = match (&ask, &hub.inner.history) {
            (Some(_), Some(_)) => match random_id(16) {
                Ok(id) => Some(Arc::<str>::from(id)),
                Err(e) => {
                    tracing::error!(error = %e, "the OS random generator failed: no recovery session id");
                    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
                    return HttpRefusal::new(unavailable, "no session id could be made", RefusalCause::Limit)
                        .refuse(&hub, &client(addr, &ns));
                }
            },
            _ => None,
        };
        let (mut res, deflate) = switching_protocols(&parts.headers, hub.inner.config.compression.as_ref());
        if header_has_token(&parts.headers, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL) {
            let h = res.headers_mut();
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        }
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    // The pass gives its slot back as it drops.
                    tracing::debug!(error = %e, "upgrade failed after 101");
                    return;
                }
            };
            let cfg = &hub.inner.config;
            let ws = ws_stream(cfg, cfg.max_message_size, deflate, TokioIo::new(upgraded));
            let id = hub.next_connection_id();
            let recovery = match (session_id, &hub.inner.history) {
                (Some(session), Some(history)) => Some(Box::new(Recovery::new(session, history.current(), id))),
                _ => None,
            };
            let (identity, addr) = pass.into_parts();
            let (conn, rx) = Conn::new(id, identity, hub.inner.config.outbound_queue, recovery, addr);
            let span =
                tracing::debug_span!("realtime_connection", conn = %id, user = conn.identity.user_id().unwrap_or("-"));
            super::native::run(hub, ns, conn, rx, Box::new(ws), ask.map(Box::new), span).await;
        });
        res
    })
}

/// A native client of the namespace `ns`, from `addr`.
fn client(addr: Option<std::net::IpAddr>, ns: &NsInner) -> Client<'_> {
    Client {
        addr,
        transport: Transport::Native,
        namespace: Some(&ns.name),
    }
}

/// The headers that carry a session to resume, out of the URL (and so out of access logs).
const SESSION_HEADER: &str = "x-realtime-session";
const EPOCH_HEADER: &str = "x-realtime-epoch";
const OFFSET_HEADER: &str = "x-realtime-offset";

/// What the handshake asks of recovery: nothing; a session (`recover=1`); or to resume one
/// (`session`, with the `epoch` and `offset` of the last event received when there was one),
/// given in the query or in the headers `x-realtime-session`, `x-realtime-epoch` and
/// `x-realtime-offset` (one place or the other, not both).
fn recovery_ask(query: Option<&str>, headers: &HeaderMap) -> Result<Option<Ask>, HttpRefusal> {
    // An empty header is no session: `recover` is then read from the query, as without it.
    let in_headers = headers.get(SESSION_HEADER).is_some_and(|v| !v.is_empty());
    let get = |name: &str, header: &str| -> Result<Option<String>, HttpRefusal> {
        let value = match in_headers {
            false => query_param(query, name).map(|v| v.map_err(|_| ())),
            true => (headers.get(header)).map(|v| v.to_str().map(str::to_owned).map_err(|_| ())),
        };
        let place = match in_headers {
            false => format!("`{name}` query parameter"),
            true => format!("`{header}` header"),
        };
        match value {
            None => Ok(None),
            Some(Ok(v)) if v.len() <= MAX_RECOVERY_TOKEN => Ok(Some(v)),
            Some(_) => Err(HttpRefusal::bad(&format!("malformed {place}"))),
        }
    };
    if in_headers
        && ["session", "epoch", "offset"]
            .iter()
            .any(|p| query_param(query, p).is_some())
    {
        return Err(HttpRefusal::bad(
            "the session is given both in the query and in the `x-realtime-session` header",
        ));
    }
    let Some(session) = get("session", SESSION_HEADER)?.filter(|s| !s.is_empty()) else {
        return Ok(get("recover", SESSION_HEADER)?
            .is_some_and(|v| v != "0" && v != "false")
            .then_some(Ask::New));
    };
    let epoch = get("epoch", EPOCH_HEADER)?.filter(|e| !e.is_empty());
    let offset = match get("offset", OFFSET_HEADER)?.filter(|o| !o.is_empty()) {
        None => None,
        Some(o) => Some(o.parse::<u64>().map_err(|_| match in_headers {
            false => HttpRefusal::bad("the `offset` query parameter must be a number"),
            true => HttpRefusal::bad("the `x-realtime-offset` header must be a number"),
        })?),
    };
    Ok(Some(Ask::Resume(Resume {
        session,
        epoch,
        offset,
        unknown_offset: false,
    })))
}

#[cfg(test)]
mod tests {
    use super::valid_key;

    #[test]
    fn keys() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZR=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25j!Q=="));
        assert!(!valid_key(b""));
    }
}
