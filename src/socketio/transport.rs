//! The HTTP side of Socket.IO: handshakes, long-polling `GET`/`POST`, and the WebSocket
//! transport (direct, or upgraded from polling with the probe exchange).

use std::sync::{atomic::Ordering, Arc};

use bytes::Bytes;
use futures_util::{future::BoxFuture, SinkExt, StreamExt};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    tungstenite::{protocol::Role, Message},
    WebSocketStream,
};

use super::session::{Closed, Session};
use crate::{
    connection::{
        admission,
        coalesce::CoalescingIo,
        handshake::{check_upgrade, switching_protocols, ws_config},
    },
    hub::{Hub, Rejection},
    outbox::{self, Next},
    protocol::{
        close_code,
        socketio::{
            engineio::{self, POLLING_CONTENT_TYPE, POST_OK_BODY},
            EioPacket, EngineError, OpenPacket, PayloadBuilder, RequestKind, Transport,
        },
    },
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the CORS headers of an answer need: the request's origin, and whether the hub's
/// origin policy allows it.
struct Reply {
    origin: Option<HeaderValue>,
    allowed: bool,
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

    fn error(&self, hub: &Hub, error: EngineError) -> Response<Bytes> {
        let cause = match error {
            EngineError::Forbidden => Rejection::Origin,
            _ => Rejection::BadRequest,
        };
        hub.inner.counters.rejected(cause);
        self.respond(hub, error.status(), "application/json", error.json_body())
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
        hub.inner.counters.rejected(Rejection::ShuttingDown);
        return ready(reply.respond(
            &hub,
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "server is shutting down",
        ));
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
            let Some(session) = Session::start(hub.clone(), parts, Transport::Polling) else {
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
        RequestKind::Handshake(Transport::WebSocket) => upgrade(hub, req, reply, None),
        RequestKind::Upgrade { sid } => {
            let Some(session) = sio.sessions.get(sid.as_str()).map(|s| s.clone()) else {
                return ready(reply.error(&hub, EngineError::UnknownSid));
            };
            upgrade(hub, req, reply, Some(session))
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

/// A long poll: waits for something to send (or the session's end), then sends all it can.
async fn poll(session: &Arc<Session>) -> Result<String, EngineError> {
    if session.state.lock().transport != Transport::Polling {
        return Err(EngineError::BadRequest);
    }
    if session.polling.swap(true, Ordering::AcqRel) {
        // A second concurrent poll: refused, as the reference server does.
        return Err(EngineError::BadRequest);
    }
    struct Pending<'a>(&'a Session);
    impl Drop for Pending<'_> {
        fn drop(&mut self) {
            self.0.polling.store(false, Ordering::Release);
        }
    }
    let _pending = Pending(session);
    let Ok(mut rx) = session.out_rx.try_lock() else {
        return Err(EngineError::BadRequest);
    };
    let max = (session.hub().socketio()).map_or(1_000_000, |s| s.config.max_payload);
    let carried = session.carry.lock().take();
    let first = match carried {
        Some(m) => Some(m),
        None => tokio::select! {
            m = rx.recv() => m,
            how = session.wait_closed() => {
                // Whatever is still queued (a close packet, say) goes first.
                match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(_) => {
                        forget_when_read(session, &rx);
                        return Ok(if how == Closed::ByServer { EioPacket::Close } else { EioPacket::Noop }.encode());
                    }
                }
            }
            _ = session.upgrade_noop.notified() => return Ok(EioPacket::Noop.encode()),
        },
    };
    let Some(first) = first else {
        return Ok(EioPacket::Noop.encode());
    };
    let mut body = PayloadBuilder::new(max);
    push(&mut body, &first);
    while let Ok(m) = rx.try_recv() {
        if !push(&mut body, &m) {
            *session.carry.lock() = Some(m);
            break;
        }
    }
    forget_when_read(session, &rx);
    Ok(body.finish())
}

/// A closed session whose client has now read everything queued for it (its close packet
/// last) is forgotten: its sid is unknown from the next request on.
fn forget_when_read(session: &Session, rx: &outbox::Receiver) {
    if session.closed().is_some() && rx.is_empty() {
        if let Some(sio) = session.hub().socketio() {
            sio.sessions.remove(&session.sid);
        }
    }
}

/// Adds a queued frame to a polling body; `false` when it does not fit.
fn push(body: &mut PayloadBuilder, m: &Message) -> bool {
    match m {
        Message::Text(t) => body.push_encoded(t.as_str()),
        Message::Binary(b) => body.push(&EioPacket::BinaryMessage(b.clone())),
        _ => true,
    }
}

/// A WebSocket handshake: a new WebSocket-only session, or the upgrade of a polling one.
fn upgrade<ReqBody>(
    hub: Hub,
    mut req: Request<ReqBody>,
    reply: Reply,
    existing: Option<Arc<Session>>,
) -> BoxFuture<'static, Response<Bytes>> {
    if let Err(refusal) = check_upgrade(&req) {
        return ready(refusal.into_response(&hub));
    }
    if let Some(session) = &existing {
        let mut state = session.state.lock();
        if state.transport != Transport::Polling || state.upgrading {
            drop(state);
            return ready(reply.error(&hub, EngineError::BadRequest));
        }
        state.upgrading = true;
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let res = switching_protocols(&parts.headers);
    let session = match existing {
        Some(session) => session,
        None => match Session::start(hub.clone(), parts, Transport::WebSocket) {
            Some(session) => session,
            None => return ready(reply.error(&hub, EngineError::BadRequest)),
        },
    };
    let upgrading = session.state.lock().upgrading;
    let Some(sio) = hub.socketio() else {
        return ready(res);
    };
    let config = ws_config(&hub.inner.config, sio.config.max_payload);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(sid = %session.sid, error = %e, "upgrade failed after 101");
                if upgrading {
                    session.state.lock().upgrading = false;
                } else {
                    session.close(Closed::TransportGone);
                }
                return;
            }
        };
        let ws =
            WebSocketStream::from_raw_socket(CoalescingIo::new(TokioIo::new(upgraded)), Role::Server, Some(config))
                .await;
        run_websocket(session, ws, upgrading).await;
    });
    ready(res)
}

/// The WebSocket transport of a session.
async fn run_websocket<S>(session: Arc<Session>, ws: WebSocketStream<CoalescingIo<S>>, upgrading: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let hub = session.hub().clone();
    let Some(sio) = hub.socketio() else { return };
    let out = ws.get_ref().outgoing();
    let (mut sink, mut stream) = ws.split();
    if upgrading {
        if !probe(&session, &mut sink, &mut stream, sio.config.ping_timeout).await {
            session.state.lock().upgrading = false;
            let _ = sink.close().await;
            return;
        }
    } else {
        let cfg = &sio.config;
        let open = OpenPacket::new(
            &*session.sid,
            Transport::WebSocket,
            cfg.ping_interval,
            cfg.ping_timeout,
            cfg.max_payload,
        );
        if sink.send(Message::text(EioPacket::Open(open).encode())).await.is_err() {
            session.close(Closed::TransportGone);
            return;
        }
    }
    // The pending poll (if any) has been told to answer; its lock on the queue is ours next.
    let mut rx = session.out_rx.lock().await;
    let carried = session.carry.lock().take();
    if let Some(m) = carried {
        // Sent now: under the write coalescing, a frame only leaves on a flush.
        let _ = sink.send(std::sync::Arc::unwrap_or_clone(m)).await;
    }
    // As a native connection's loop (`connection::run`): the read side is polled only once
    // it has woken, and a close wakes the loop through the queue.
    let wakes = rx.wakes();
    // A write that makes no progress for a whole ping window means the peer reads nothing.
    let stall_limit = sio.config.ping_interval + sio.config.ping_timeout;
    let how = loop {
        tokio::select! {
            biased;
            next = rx.next() => {
                let first = match next {
                    Next::Message(first) => first,
                    Next::Nudged => match session.closed() {
                        Some(how) => break how,
                        None => continue,
                    },
                };
                let mut unsent = Some(first);
                let write = crate::connection::write_batch(&mut sink, &out, &mut unsent, &mut rx, &hub);
                match tokio::time::timeout(stall_limit, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        session.close(Closed::TransportGone);
                        break Closed::TransportGone;
                    }
                    Err(_) => {
                        session.close_by_server(close_code::PING_TIMEOUT, "ping timeout");
                        break Closed::ByServer;
                    }
                }
            }
            frame = std::future::poll_fn(|cx| wakes.poll_gated(outbox::READ, cx, |cx| stream.poll_next_unpin(cx))) => {
                let packet = match frame {
                    Some(Ok(Message::Text(t))) => match EioPacket::decode(&t) {
                        Ok(p) => p,
                        Err(_) => {
                            session.close_by_server(close_code::PROTOCOL_ERROR, "malformed Engine.IO packet");
                            continue;
                        }
                    },
                    Some(Ok(Message::Binary(b))) => EioPacket::BinaryMessage(b),
                    Some(Ok(Message::Ping(_))) => {
                        // tungstenite queued the pong; write it now, within the stall limit.
                        if !matches!(tokio::time::timeout(stall_limit, sink.flush()).await, Ok(Ok(()))) {
                            session.close(Closed::TransportGone);
                        }
                        continue;
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Err(e)) => {
                        // A message over the limit, bad UTF-8, a protocol error: closed with its
                        // code, as a native connection is.
                        match crate::connection::classify(e) {
                            crate::connection::End::Close(code, reason) => session.close_by_server(code, reason),
                            crate::connection::End::Gone(_) => session.close(Closed::TransportGone),
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None => {
                        session.close(Closed::TransportGone);
                        continue;
                    }
                };
                hub.inner.counters.messages_in.fetch_add(1, Ordering::Relaxed);
                if !session.receive(packet).await {
                    session.close(Closed::TransportGone);
                }
            }
        }
    };
    if how == Closed::TransportGone {
        return;
    }
    // What is queued goes first (a close packet among it), within a second; then the
    // WebSocket is closed as every transport closes one.
    let mut unsent = None;
    let drain = crate::connection::drain(&mut sink, &out, &mut unsent, &mut rx, &hub);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
    if let Ok(mut ws) = sink.reunite(stream) {
        let (code, reason) = session.cause();
        crate::connection::close_websocket(&mut ws, Some(crate::connection::close_frame(code, reason))).await;
    }
}

/// The upgrade's probe: `2probe` → `3probe`, the pending poll answered with a noop, then `5`.
async fn probe<Si, St>(session: &Session, sink: &mut Si, stream: &mut St, timeout: std::time::Duration) -> bool
where
    Si: futures_util::Sink<Message> + Unpin,
    St: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let exchange = async {
        loop {
            let Some(Ok(Message::Text(text))) = stream.next().await else {
                return false;
            };
            match EioPacket::decode(&text) {
                Ok(p) if p.is_probe_ping() => {
                    if sink
                        .send(Message::text(EioPacket::probe_pong().encode()))
                        .await
                        .is_err()
                    {
                        return false;
                    }
                    // The client pauses polling: answer its pending poll now.
                    session.upgrade_noop.notify_one();
                }
                Ok(EioPacket::Upgrade) => {
                    let mut state = session.state.lock();
                    state.transport = Transport::WebSocket;
                    state.upgrading = false;
                    return true;
                }
                _ => return false,
            }
        }
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or(false)
}
