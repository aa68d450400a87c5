//! The HTTP side of Socket.IO: handshakes, long-polling `GET`/`POST`, and the WebSocket
//! transport (direct, or upgraded from polling with the probe exchange).

use std::{
    net::IpAddr,
    sync::{atomic::Ordering, Arc},
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;

use super::{
    pending::Place,
    session::Session,
    wire::{Control, EngineWire, EngineWs},
};
use crate::{
    connection::{
        admission::{self, Client, Refusal},
        handshake::{check_upgrade, switching_protocols, ws_stream},
        websocket::close_websocket,
    },
    hub::{Hub, RefusalCause},
    protocol::{
        close_code,
        socketio::{
            engineio::{self, POLLING_CONTENT_TYPE, POST_OK_BODY},
            EioPacket, EngineError, OpenPacket, RequestKind, Transport,
        },
    },
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the CORS headers of an answer need: the request's origin, and whether the hub's
/// origin policy allows it.
struct Reply {
    origin: Option<HeaderValue>,
    allowed: bool,
    /// The client address, if known, for the report of a refusal.
    addr: Option<IpAddr>,
}

impl Reply {
    fn respond(
        &self,
        hub: &Hub,
        status: StatusCode,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Response<Bytes> {
        let mut res = Response::new(body.into());
        *res.status_mut() = status;
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        // Only where the origin is allowed: a refused one gets none.
        if let (Some(sio), true) = (hub.socketio(), self.allowed) {
            let origin = self.origin.as_ref().and_then(|o| o.to_str().ok());
            (hub.inner.origins).cors_headers(origin, sio.config.cors_credentials, res.headers_mut());
        }
        res
    }

    /// Who the refusals of this request are reported of (no namespace yet).
    fn client(&self) -> Client<'static> {
        Client {
            addr: self.addr,
            transport: crate::hub::Transport::SocketIo,
            namespace: None,
        }
    }

    fn error(&self, hub: &Hub, error: EngineError) -> Response<Bytes> {
        let cause = match error {
            EngineError::Forbidden => RefusalCause::Origin,
            _ => RefusalCause::BadRequest,
        };
        let status = error.status();
        self.client().report(hub, cause, error.message(), None, Some(status));
        self.respond(hub, status, "application/json", error.json_body())
    }

    /// A request refused by the admission's rules before any namespace (the hub shutting down,
    /// the caps on sessions not connected yet): its status, with Engine.IO's JSON body.
    fn refuse(&self, hub: &Hub, refusal: Refusal) -> Response<Bytes> {
        let (status, message) = (refusal.status(), refusal.message());
        refusal.report(hub, &self.client(), None, Some(status));
        let body = engineio::error_body(EngineError::Forbidden, &message);
        self.respond(hub, status, "application/json", body)
    }

    fn text(&self, hub: &Hub, body: String) -> Response<Bytes> {
        self.respond(hub, StatusCode::OK, POLLING_CONTENT_TYPE, body)
    }
}

fn ready(res: Response<Bytes>) -> BoxFuture<'static, Response<Bytes>> {
    Box::pin(std::future::ready(res))
}

/// Answers one request under the Socket.IO path.
pub(crate) fn handle<ReqBody>(hub: Hub, req: Request<ReqBody>) -> BoxFuture<'static, Response<Bytes>>
where
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let reply = Reply {
        origin: parts.headers.get(header::ORIGIN).cloned(),
        allowed: admission::origin_allowed(&hub, &parts),
        addr: hub.inner.addresses.source.of(&parts),
    };
    let req = Request::from_parts(parts, body);
    let Some(sio) = hub.socketio() else {
        return ready(reply.error(&hub, EngineError::BadRequest));
    };
    if !reply.allowed {
        return ready(reply.error(&hub, EngineError::Forbidden));
    }
    if req.method() == Method::OPTIONS {
        let mut res = reply.respond(&hub, StatusCode::NO_CONTENT, POLLING_CONTENT_TYPE, Bytes::new());
        let h = res.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        return ready(res);
    }
    if hub.is_shutting_down() {
        return ready(reply.refuse(&hub, Refusal::ShuttingDown));
    }
    let query = match engineio::parse_query(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return ready(reply.error(&hub, e)),
    };
    let is_upgrade = (req.headers().get(header::UPGRADE))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let kind = match query.classify(req.method(), is_upgrade) {
        Ok(kind) => kind,
        Err(e) => return ready(reply.error(&hub, e)),
    };
    let cfg = &sio.config;
    match kind {
        RequestKind::Handshake(Transport::Polling) => {
            let (parts, _) = req.into_parts();
            let place = match Place::take(&hub, reply.addr) {
                Ok(place) => place,
                Err(refusal) => return ready(reply.refuse(&hub, refusal)),
            };
            let Some(session) = Session::start_polling(hub.clone(), parts, place) else {
                return ready(reply.error(&hub, EngineError::BadRequest));
            };
            let open = OpenPacket::new(
                &*session.sid,
                Transport::Polling,
                cfg.ping_interval,
                cfg.ping_timeout,
                cfg.max_payload,
            );
            ready(reply.text(&hub, EioPacket::Open(open).encode()))
        }
        RequestKind::Handshake(Transport::WebSocket) => {
            let (parts, body) = req.into_parts();
            let place = match Place::take(&hub, reply.addr) {
                Ok(place) => place,
                Err(refusal) => return ready(reply.refuse(&hub, refusal)),
            };
            upgrade(hub, &reply, Request::from_parts(parts, body), Upgrade::New(place))
        }
        RequestKind::Upgrade { sid } => {
            let Some(session) = sio.sessions.get(sid.as_str()).map(|s| s.clone()) else {
                return ready(reply.error(&hub, EngineError::UnknownSid));
            };
            upgrade(hub, &reply, req, Upgrade::Of(session))
        }
        RequestKind::Poll { sid } => {
            let Some(session) = sio.sessions.get(sid.as_str()).map(|s| s.clone()) else {
                return ready(reply.error(&hub, EngineError::UnknownSid));
            };
            Box::pin(async move {
                match poll(&session).await {
                    Ok(body) => reply.text(&hub, body),
                    Err(e) => reply.error(&hub, e),
                }
            })
        }
        RequestKind::Post { sid } => {
            let Some(session) = sio.sessions.get(sid.as_str()).map(|s| s.clone()) else {
                return ready(reply.error(&hub, EngineError::UnknownSid));
            };
            let max = cfg.max_payload;
            Box::pin(async move {
                if session.state.lock().transport != Transport::Polling {
                    return reply.error(&hub, EngineError::BadRequest);
                }
                let body = match Limited::new(req.into_body(), max).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => {
                        session.close_by_server(close_code::MESSAGE_TOO_BIG, "payload too large");
                        return reply.respond(&hub, StatusCode::PAYLOAD_TOO_LARGE, "text/plain", "payload too large");
                    }
                };
                let packets = match engineio::decode_payload_bytes(&body, max) {
                    Ok(packets) => packets,
                    Err(_) => {
                        session.close_by_server(close_code::PROTOCOL_ERROR, "malformed payload");
                        return reply.error(&hub, EngineError::BadRequest);
                    }
                };
                for packet in packets {
                    if !session.receive(packet).await {
                        return reply.error(&hub, EngineError::BadRequest);
                    }
                }
                reply.text(&hub, POST_OK_BODY.to_owned())
            })
        }
    }
}

/// How long a poll that comes during an upgrade waits for it.
const UPGRADE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// A long poll: waits for something to send (or the session's end), then sends all it can.
async fn poll(session: &Arc<Session>) -> Result<String, EngineError> {
    // Between the upgrade's probe and its upgrade packet: the client pauses polling, but a poll
    // it sent before it read the probe's answer may come now, and so may one sent right after
    // the upgrade packet, which this server may read a moment later than the poll (the
    // reference server reads them in order). The poll waits a moment for the upgrade: refused
    // once it completed, answered (a noop) if it did not.
    let upgraded = session.upgraded.notified();
    let probed = {
        let state = session.state.lock();
        state.probed && state.transport == Transport::Polling
    };
    if probed {
        let _ = tokio::time::timeout(UPGRADE_WAIT, upgraded).await;
    }
    if session.state.lock().transport != Transport::Polling || !session.start_poll() {
        // Upgraded, or a second concurrent poll: refused, as the reference server does.
        return Err(EngineError::BadRequest);
    }
    struct Pending<'a>(&'a Session);
    impl Drop for Pending<'_> {
        fn drop(&mut self) {
            self.0.polling.store(false, Ordering::Release);
        }
    }
    let _pending = Pending(session);
    Ok(session.poll().await)
}

/// What a WebSocket handshake is for.
enum Upgrade {
    /// A new WebSocket-only session, with its place.
    New(Place),
    /// The upgrade of a session.
    Of(Arc<Session>),
}

/// A WebSocket handshake: a new WebSocket-only session, or the upgrade of a polling one.
fn upgrade<ReqBody>(
    hub: Hub,
    reply: &Reply,
    mut req: Request<ReqBody>,
    upgrade: Upgrade,
) -> BoxFuture<'static, Response<Bytes>> {
    if let Err(refusal) = check_upgrade(&req) {
        return ready(refusal.refuse(&hub, &reply.client()));
    }
    // A session already upgraded, or upgrading: the WebSocket is accepted, then closed at
    // once, as the reference server does; the session goes on over its own transport.
    let superfluous = matches!(&upgrade, Upgrade::Of(session) if {
        let mut state = session.state.lock();
        let busy = state.transport != Transport::Polling || state.upgrading;
        state.upgrading |= !busy;
        busy
    });
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let (res, deflate) = switching_protocols(&parts.headers, hub.inner.config.compression.as_ref());
    let Some(sio) = hub.socketio() else {
        return ready(res);
    };
    let max_payload = sio.config.max_payload;
    if superfluous {
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else { return };
            let mut ws = ws_stream(&hub.inner.config, max_payload, deflate, TokioIo::new(upgraded));
            close_websocket(&mut ws, None).await;
        });
        return ready(res);
    }
    // Every write before the loop is bounded as the loop's are.
    let stall_limit = sio.config.ping_interval + sio.config.ping_timeout;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed after 101");
                if let Upgrade::Of(session) = upgrade {
                    session.state.lock().upgrading = false;
                }
                return;
            }
        };
        let ws = ws_stream(&hub.inner.config, max_payload, deflate, TokioIo::new(upgraded));
        let mut ws = EngineWs::new(Box::new(ws));
        match upgrade {
            Upgrade::Of(session) => {
                let Some(sio) = hub.socketio() else { return };
                if probe(&session, &mut ws, sio.config.ping_timeout).await {
                    session.control(Control::Upgraded(ws));
                } else {
                    let mut state = session.state.lock();
                    (state.upgrading, state.probed) = (false, false);
                    drop(state);
                    session.control(Control::Aborted);
                }
            }
            Upgrade::New(place) => {
                let open = |session: Arc<Session>, wire: EngineWire| async move {
                    let cfg = &session.hub().socketio()?.config;
                    let open = OpenPacket::new(
                        &*session.sid,
                        Transport::WebSocket,
                        cfg.ping_interval,
                        cfg.ping_timeout,
                        cfg.max_payload,
                    );
                    let sent =
                        tokio::time::timeout(stall_limit, ws.send(Message::text(EioPacket::Open(open).encode())));
                    sent.await.ok()?.ok()?;
                    Some(wire.websocket(ws))
                };
                Session::run_websocket(hub, parts, place, open).await;
            }
        }
    });
    ready(res)
}

/// The upgrade's probe: `2probe` → `3probe`, the pending poll answered with a noop, then `5`.
async fn probe(session: &Session, ws: &mut EngineWs, timeout: std::time::Duration) -> bool {
    let exchange = async {
        loop {
            let Some(Message::Text(text)) = ws.next_message().await else {
                return false;
            };
            match EioPacket::decode(&text) {
                Ok(p) if p.is_probe_ping() => {
                    session.state.lock().probed = true;
                    if ws.send(Message::text(EioPacket::probe_pong().encode())).await.is_err() {
                        return false;
                    }
                    // The client pauses polling: its pending poll is answered now.
                    session.control(Control::Probed);
                }
                Ok(EioPacket::Upgrade) => {
                    let mut state = session.state.lock();
                    state.transport = Transport::WebSocket;
                    state.upgrading = false;
                    drop(state);
                    session.upgraded.notify_waiters();
                    return true;
                }
                _ => return false,
            }
        }
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or(false)
}
