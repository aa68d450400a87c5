//! One Engine.IO session: its outbound queue (shared by its namespace sockets), its inbound
//! packets (from whichever transport carries them), its heartbeat, and the task that runs its
//! Socket.IO sockets.

use std::{
    collections::{HashMap, VecDeque},
    sync::{atomic::AtomicBool, Arc},
};

use futures_util::future::BoxFuture;
use http::request::Parts;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    auth::extract_token,
    connection::admission,
    gateway::{Incoming, RateState, Refused, Socket},
    hub::{
        history::{random_id, Ask, Recovery, Resume, SessionNews},
        Conn, DisconnectReason, Hub, NsInner, Proto,
    },
    outbox::{self, Frame},
    protocol::{
        close_code,
        offset::parse_socketio_offset,
        socketio::{packet, EioPacket, PacketKind, SioDecoder, SioPacket, Transport},
    },
};

/// Packets read while a handler runs: at most this many wait; then reading pauses.
const BACKLOG: usize = 32;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The client sent a close packet: a pending poll answers `6` (noop). For the namespace
    /// sockets it had not disconnected this is a dropped transport, as Socket.IO's
    /// "transport close": a deliberate goodbye is a DISCONNECT.
    ByClient,
    /// The transport went away (TCP drop, WebSocket closed).
    TransportGone,
    /// The server closed it (shutdown, slow consumer, ping timeout, protocol error): the client
    /// gets a close packet (`1`) when a transport can still carry it. The cause is kept with
    /// [`Session::close_by_server`].
    ByServer,
}

/// Where the session's transport stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TransportState {
    pub(crate) transport: Transport,
    pub(crate) upgrading: bool,
}

pub(crate) struct Session {
    pub(crate) sid: Arc<str>,
    hub: Hub,
    /// The handshake request, for authentication at each CONNECT.
    parts: Parts,
    out_tx: outbox::Sender,
    /// Taken by the transport that writes: a pending poll, or the WebSocket.
    pub(crate) out_rx: tokio::sync::Mutex<outbox::Receiver>,
    /// A message a poll took from the queue but could not fit in its body.
    pub(crate) carry: Mutex<Option<Frame>>,
    /// Boxed: the channel allocates its first block of 32 slots up front, for every session.
    in_tx: mpsc::Sender<Box<EioPacket>>,
    /// Wakes the session task when one of its sockets is asked to close.
    notify: Arc<Notify>,
    pub(crate) state: Mutex<TransportState>,
    /// A poll is pending.
    pub(crate) polling: AtomicBool,
    /// Tells the pending poll to answer `6` (noop) because an upgrade is completing.
    pub(crate) upgrade_noop: Notify,
    closed: Mutex<Option<Closed>>,
    /// Why the server closed the session, as a close code and reason (the first cause wins).
    cause: Mutex<Option<(u16, String)>>,
    closed_notify: Notify,
}

/// The request's method, URI, version and headers, in allocations of their own.
///
/// A session keeps its handshake's head for as long as it lives (each namespace's CONNECT is
/// authenticated against it). The server parsed that head in place: its URI and header values
/// are slices of the connection's read buffer (16 KiB here), and every slice, or anything in
/// the extensions holding one (a framework's copy of the URI, say), keeps the whole buffer
/// alive. A copy of the URI and headers takes a few hundred bytes. The extensions are not kept.
fn detach(parts: Parts) -> Parts {
    let Parts {
        method,
        uri,
        version,
        headers,
        ..
    } = parts;
    let (mut copy, ()) = http::Request::new(()).into_parts();
    copy.method = method;
    copy.version = version;
    copy.uri = http::Uri::try_from(uri.to_string()).unwrap_or(uri);
    copy.headers.reserve(headers.len());
    for (name, value) in &headers {
        let name = http::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut fresh = http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        fresh.set_sensitive(value.is_sensitive());
        copy.headers.append(name, fresh);
    }
    copy
}

impl Session {
    /// Creates a session and spawns its task.
    pub(crate) fn start(hub: Hub, parts: Parts, transport: Transport) -> Option<Arc<Self>> {
        let sio = hub.socketio()?;
        let sid: Arc<str> = match crate::protocol::socketio::engineio::generate_sid() {
            Ok(sid) => Arc::from(sid),
            Err(e) => {
                tracing::error!(error = %e, "no session id could be made");
                return None;
            }
        };
        let (out_tx, out_rx) = outbox::channel(hub.inner.config.outbound_queue);
        let (in_tx, in_rx) = mpsc::channel(64);
        let session = Arc::new(Self {
            sid: sid.clone(),
            hub: hub.clone(),
            parts: detach(parts),
            out_tx,
            out_rx: tokio::sync::Mutex::new(out_rx),
            carry: Mutex::new(None),
            in_tx,
            notify: Arc::new(Notify::new()),
            state: Mutex::new(TransportState {
                transport,
                upgrading: false,
            }),
            polling: AtomicBool::new(false),
            upgrade_noop: Notify::new(),
            closed: Mutex::new(None),
            cause: Mutex::new(None),
            closed_notify: Notify::new(),
        });
        sio.sessions.insert(sid, session.clone());
        tokio::spawn(run(session.clone(), in_rx));
        Some(session)
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Hands an inbound packet to the session task. `false` once the session has ended.
    pub(crate) async fn receive(&self, packet: EioPacket) -> bool {
        self.in_tx.send(Box::new(packet)).await.is_ok()
    }

    /// Queues an Engine.IO packet for the client, without waiting.
    fn queue(&self, text: String) {
        let _ = self.out_tx.try_send(Frame::new(Message::text(text)));
    }

    /// Marks the session closed (the first reason wins) and wakes its transports and task.
    pub(crate) fn close(&self, how: Closed) {
        let mut closed = self.closed.lock();
        if closed.is_none() {
            *closed = Some(how);
            drop(closed);
            self.closed_notify.notify_waiters();
            self.notify.notify_one();
            // The WebSocket transport's loop waits on the outbound queue.
            self.out_tx.nudge();
        }
    }

    /// Closes the session on the server's side, for `code` and `reason`: what its sockets'
    /// disconnect reason says, and whether their recovery sessions are kept for the client.
    pub(crate) fn close_by_server(&self, code: u16, reason: impl Into<String>) {
        self.cause.lock().get_or_insert_with(|| (code, reason.into()));
        self.close(Closed::ByServer);
    }

    /// The disconnect reason of a socket still connected when the session ended `how`.
    fn disconnect_reason(&self, how: Closed) -> DisconnectReason {
        match how {
            Closed::ByClient | Closed::TransportGone => DisconnectReason::TransportClosed,
            Closed::ByServer => {
                let (code, reason) = self.cause();
                DisconnectReason::ServerClosed(code, reason)
            }
        }
    }

    /// Why the server closed the session (going away, when it gave no cause).
    pub(crate) fn cause(&self) -> (u16, String) {
        (self.cause.lock().clone()).unwrap_or((close_code::GOING_AWAY, "server closed the session".to_owned()))
    }

    pub(crate) fn closed(&self) -> Option<Closed> {
        *self.closed.lock()
    }

    /// Completes once the session is closed.
    pub(crate) async fn wait_closed(&self) -> Closed {
        loop {
            let notified = self.closed_notify.notified();
            if let Some(how) = self.closed() {
                return how;
            }
            notified.await;
        }
    }
}

/// The result of an async step of the session task.
enum Outcome {
    Nothing,
    Connected(Socket),
}

struct Entry {
    socket: Socket,
    rate: RateState,
}

/// The session task: decodes packets, connects and disconnects namespace sockets, runs their
/// handlers one at a time, and keeps the heartbeat.
async fn run(session: Arc<Session>, mut in_rx: mpsc::Receiver<Box<EioPacket>>) {
    let hub = session.hub.clone();
    let Some(sio) = hub.socketio() else { return };
    let (ping_interval, ping_timeout) = (sio.config.ping_interval, sio.config.ping_timeout);
    let mut sockets: HashMap<String, Entry> = HashMap::new();
    let mut decoder = SioDecoder::new(sio.config.max_attachments);
    let mut inflight: Option<BoxFuture<'static, Outcome>> = None;
    let mut backlog: VecDeque<SioPacket> = VecDeque::new();
    let mut awaiting_pong = false;
    let heartbeat = tokio::time::sleep(ping_interval);
    tokio::pin!(heartbeat);

    let how = loop {
        tokio::select! {
            biased;
            how = session.wait_closed() => break how,
            _ = session.notify.notified() => {
                // Boxed, as the steps below: they run rarely, and a task is the size of its largest
                // state for as long as it lives.
                if let Some(how) = Box::pin(close_requests(&session, &mut sockets)).await {
                    break how;
                }
            }
            outcome = async { inflight.as_mut().expect("guarded by the branch condition").await }, if inflight.is_some() => {
                inflight = None;
                if let Outcome::Connected(socket) = outcome {
                    let rate = RateState::new(socket.ns().gateway().rate);
                    sockets.insert(socket.namespace().to_owned(), Entry { socket, rate });
                }
                // Packets that arrived while it ran, in order.
                let mut failed = false;
                while inflight.is_none() && !failed {
                    let Some(p) = backlog.pop_front() else { break };
                    match on_packet(&session, &mut sockets, p) {
                        Ok(next) => inflight = next,
                        Err(()) => failed = true,
                    }
                }
                if failed {
                    session.close_by_server(close_code::PROTOCOL_ERROR, "protocol violation");
                    break Closed::ByServer;
                }
            }
            packet = in_rx.recv(), if inflight.is_none() || backlog.len() < BACKLOG => {
                let Some(packet) = packet else { break Closed::TransportGone };
                let packet = *packet;
                match packet {
                    EioPacket::Pong(_) => {
                        awaiting_pong = false;
                        heartbeat.as_mut().reset(tokio::time::Instant::now() + ping_interval);
                    }
                    EioPacket::Ping(data) => session.queue(EioPacket::Pong(data).encode()),
                    EioPacket::Close => break Closed::ByClient,
                    EioPacket::Message(_) | EioPacket::BinaryMessage(_) => {
                        let decoded = match packet {
                            EioPacket::Message(text) => decoder.decode_text(&text),
                            EioPacket::BinaryMessage(bytes) => decoder.decode_binary(bytes),
                            _ => Ok(None),
                        };
                        let p = match decoded {
                            Ok(Some(p)) => p,
                            Ok(None) => continue,
                            Err(e) => {
                                tracing::debug!(sid = %session.sid, error = %e, "malformed Socket.IO packet: closing");
                                session.close_by_server(close_code::PROTOCOL_ERROR, "malformed Socket.IO packet");
                                break Closed::ByServer;
                            }
                        };
                        // Acks are taken at once, even while a handler runs: that handler may
                        // be the one waiting for them. Anything else waits its turn.
                        if inflight.is_some() && !p.kind.is_ack() {
                            backlog.push_back(p);
                            continue;
                        }
                        match on_packet(&session, &mut sockets, p) {
                            Ok(next) => inflight = inflight.or(next),
                            Err(()) => {
                                session.close_by_server(close_code::PROTOCOL_ERROR, "protocol violation");
                                break Closed::ByServer;
                            }
                        }
                    }
                    EioPacket::Open(_) | EioPacket::Upgrade | EioPacket::Noop => {}
                }
            }
            _ = &mut heartbeat => {
                if awaiting_pong {
                    tracing::debug!(sid = %session.sid, "ping timeout");
                    session.close_by_server(close_code::PING_TIMEOUT, "ping timeout");
                    break Closed::ByServer;
                }
                session.queue(EioPacket::Ping(None).encode());
                awaiting_pong = true;
                heartbeat.as_mut().reset(tokio::time::Instant::now() + ping_timeout);
            }
        }
    };

    // The DISCONNECTs the client sent before the end, still waiting their turn or not read
    // yet (a WebSocket's close frame can overtake them): those sockets said goodbye, and
    // nothing is kept for them.
    let mut goodbyes: Vec<String> = (backlog.iter())
        .filter(|p| p.kind == PacketKind::Disconnect)
        .map(|p| p.ns.clone())
        .collect();
    in_rx.close();
    while let Ok(packet) = in_rx.try_recv() {
        let decoded = match *packet {
            EioPacket::Message(text) => decoder.decode_text(&text),
            EioPacket::BinaryMessage(bytes) => decoder.decode_binary(bytes),
            _ => continue,
        };
        match decoded {
            Ok(Some(p)) if p.kind == PacketKind::Disconnect => goodbyes.push(p.ns),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // A handler or connect still running finishes first (its side effects are not cut in half).
    if let Some(fut) = inflight.take() {
        if let Outcome::Connected(socket) = fut.await {
            let rate = RateState::new(socket.ns().gateway().rate);
            sockets.insert(socket.namespace().to_owned(), Entry { socket, rate });
        }
    }
    for ns in goodbyes {
        if let Some(entry) = sockets.remove(&ns) {
            Box::pin(admission::retire(entry.socket, DisconnectReason::ClientClosed(None))).await;
        }
    }
    let reason = session.disconnect_reason(how);
    for (_, entry) in sockets.drain() {
        // A socket the server was closing ends for that reason (a flood, a slow consumer).
        let reason = match entry.socket.conn().close_requested() {
            Some((code, why)) => DisconnectReason::ServerClosed(code, why.into()),
            None => reason.clone(),
        };
        Box::pin(admission::retire(entry.socket, reason)).await;
    }
    if how == Closed::ByServer {
        // Past the queue's capacity: a slow consumer's full queue must not swallow its close.
        let close = Frame::new(Message::text(EioPacket::Close.encode()));
        session.out_tx.push_all(vec![close]);
    }
    session.close(how);
    let timed_out = session.cause().0 == close_code::PING_TIMEOUT;
    if how == Closed::ByServer && !timed_out && session.state.lock().transport == Transport::Polling {
        // A polling client reads the close packet at its next poll, as the reference server
        // lets it (not after a ping timeout: that client is gone): the session stays findable
        // until its queue is empty, for a ping timeout at most.
        let deadline = tokio::time::Instant::now() + sio.config.ping_timeout;
        while tokio::time::Instant::now() < deadline && !session.out_tx.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    sio.sessions.remove(&session.sid);
    tracing::debug!(sid = %session.sid, ?how, "Socket.IO session ended");
}

/// Acts on sockets asked to close. Returns how the whole session ends, if it does.
async fn close_requests(session: &Arc<Session>, sockets: &mut HashMap<String, Entry>) -> Option<Closed> {
    if let Some(how) = session.closed() {
        return Some(how);
    }
    let requested: Vec<(String, u16)> = (sockets.iter())
        .filter_map(|(ns, e)| e.socket.conn().close_requested().map(|(code, _)| (ns.clone(), code)))
        .collect();
    for (ns, code) in requested {
        if code != close_code::DISCONNECTED_BY_SERVER {
            // Shutdown, slow consumer, flooding: the whole session goes; clients reconnect.
            let why = sockets[&ns].socket.conn().close_requested().map_or("", |(_, why)| why);
            session.close_by_server(code, why);
            return Some(Closed::ByServer);
        }
        // The app disconnected this socket: a DISCONNECT, as Socket.IO's `socket.disconnect()`.
        if let Some(entry) = sockets.remove(&ns) {
            session.queue(format!("4{}", packet::encode_disconnect(&ns)));
            let reason = DisconnectReason::ServerClosed(code, "disconnected by server".into());
            Box::pin(admission::retire(entry.socket, reason)).await;
        }
    }
    None
}

/// Handles one Socket.IO packet. Returns the async step to run, if any; `Err` closes the
/// session (a protocol violation).
fn on_packet(
    session: &Arc<Session>,
    sockets: &mut HashMap<String, Entry>,
    p: SioPacket,
) -> Result<Option<BoxFuture<'static, Outcome>>, ()> {
    let hub = &session.hub;
    match p.kind {
        PacketKind::Connect => {
            if sockets.contains_key(&p.ns) {
                return Ok(None);
            }
            let Some(ns) = hub.inner.namespaces.get(p.ns.as_str()).cloned() else {
                session.queue(format!("4{}", packet::encode_connect_error(&p.ns, "Invalid namespace")));
                return Ok(None);
            };
            Ok(Some(Box::pin(connect(session.clone(), ns, p.data))))
        }
        PacketKind::Disconnect => {
            if let Some(entry) = sockets.remove(&p.ns) {
                return Ok(Some(Box::pin(async move {
                    admission::retire(entry.socket, DisconnectReason::ClientClosed(None)).await;
                    Outcome::Nothing
                })));
            }
            Ok(None)
        }
        PacketKind::Event | PacketKind::BinaryEvent => {
            let Some(entry) = sockets.get_mut(&p.ns) else {
                // An event for a namespace this client has not joined: ignored, as Socket.IO does.
                return Ok(None);
            };
            let Some(event) = p.event_name().map(|e| e.into_owned()) else {
                return Err(());
            };
            let mut args: Vec<Value> = p.args().to_vec();
            let (data, many) = match args.len() {
                0 => (Value::Null, false),
                1 => (args.pop().unwrap_or_default(), false),
                _ => (Value::Array(args), true),
            };
            let incoming = Incoming {
                event,
                data,
                many,
                attachments: p.attachments,
                id: p.id,
            };
            let socket = &entry.socket;
            match socket.ns().gateway().route(socket, incoming, &mut entry.rate) {
                Ok(call) => {
                    let socket = socket.clone();
                    Ok(Some(Box::pin(async move {
                        call.run(socket).await;
                        Outcome::Nothing
                    })))
                }
                Err(Refused::Error(ack, error)) => {
                    socket.send_error(ack, error);
                    Ok(None)
                }
                Err(Refused::Flood(ack, error)) => {
                    socket.send_error(ack, error);
                    socket
                        .conn()
                        .request_close(close_code::POLICY_VIOLATION, "rate limit exceeded");
                    Ok(None)
                }
            }
        }
        PacketKind::Ack | PacketKind::BinaryAck => {
            if let (Some(entry), Some(id)) = (sockets.get(&p.ns), p.id) {
                let mut args = p.args().to_vec();
                let data = if args.len() == 1 {
                    args.pop().unwrap_or_default()
                } else {
                    Value::Array(args)
                };
                entry.socket.conn().resolve_ack(id, data);
            }
            Ok(None)
        }
        PacketKind::ConnectError => Err(()),
    }
}

/// A namespace CONNECT: the [admission](crate::connection::admission) every transport
/// shares, answered with CONNECT (with the recovery session's `pid`), CONNECT_ERROR, or, when
/// the connect hook refused after the CONNECT went out, DISCONNECT.
async fn connect(session: Arc<Session>, ns: Arc<NsInner>, auth: Option<Value>) -> Outcome {
    let hub = session.hub.clone();
    let refuse = |message: &str| session.queue(format!("4{}", packet::encode_connect_error(&ns.name, message)));
    let from_payload = auth.as_ref().and_then(|a| a.get("token")).and_then(Value::as_str);
    let from_request = extract_token(&session.parts);
    let token = from_payload.or(from_request.as_ref().map(|(t, _)| t.as_str()));
    let pass = match admission::admit(&hub, &session.parts, token, auth.as_ref()).await {
        Ok(pass) => pass,
        Err(refusal) => {
            refusal.count(&hub);
            refuse(&refusal.message());
            return Outcome::Nothing;
        }
    };
    let id = hub.next_connection_id();
    // Connection state recovery: a client that had a session presents its `pid`, and the
    // offset of the last event it received, within its CONNECT data.
    // (In a cluster the epoch is Redis's, as this node last saw it.)
    let ask = (hub.inner.history.as_ref()).map(|history| {
        let epoch = history.known_epoch();
        match recovery_ask(auth.as_ref(), epoch.as_deref()) {
            Some(resume) => Ask::Resume(resume),
            None => Ask::New,
        }
    });
    let recovery = (hub.inner.history.as_ref())
        .map(|history| Box::new(Recovery::new(Arc::from(random_id(16)), history.current(), id)));
    let conn = Conn::with_sender(
        id,
        Proto::SocketIo,
        pass.into_identity(),
        session.out_tx.clone(),
        Some(session.notify.clone()),
        auth.map(Box::new),
        recovery,
    );
    let socket = Socket::new(hub.clone(), ns.clone(), conn);
    let hello = |news: Option<&SessionNews<'_>>| {
        let pid = news.and_then(|news| news.session.as_deref());
        let connect = match pid {
            Some(pid) => packet::encode_connect_with_pid(&ns.name, &id.to_string(), pid),
            None => packet::encode_connect(&ns.name, &id.to_string()),
        };
        vec![Frame::new(Message::text(format!("4{connect}")))]
    };
    if let Err(refused) = admission::enter(&socket, ask.as_ref(), hello).await {
        if refused.after_hello {
            session.queue(format!("4{}", packet::encode_disconnect(&ns.name)));
        } else {
            refuse(&refused.refusal.message());
        }
        return Outcome::Nothing;
    }
    tracing::debug!(sid = %session.sid, conn = %id, ns = %ns.name, "Socket.IO socket connected");
    Outcome::Connected(socket)
}

/// The session a Socket.IO client asks to recover: `pid` and `offset` in its CONNECT data. An
/// offset that is not one of ours (the client keeps the last string argument of any event)
/// leaves the position unknown, which does not recover.
///
/// An offset of an earlier `epoch` is no position at all: the client keeps its last offset
/// across sessions, so a client whose session began after a restart, and that has had no
/// history event since, still presents one from before. Its session, if it is of this epoch,
/// has everything since it began; if it is not, it does not recover.
fn recovery_ask(data: Option<&Value>, epoch: Option<&str>) -> Option<Resume> {
    let pid = data?.get("pid")?.as_str()?;
    let mut resume = Resume {
        session: pid.to_owned(),
        ..Resume::default()
    };
    match data?.get("offset") {
        None | Some(Value::Null) => {}
        Some(offset) => match offset.as_str().and_then(parse_socketio_offset) {
            Some((of, _)) if epoch.is_some_and(|current| current != of) => {}
            Some((of, seq)) => {
                resume.epoch = Some(of.to_owned());
                resume.offset = Some(seq);
            }
            None => resume.unknown_offset = true,
        },
    }
    Some(resume)
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::detach;

    #[test]
    fn a_detached_head_keeps_method_uri_version_and_headers_but_not_extensions() {
        let mut secret = http::HeaderValue::from_static("Bearer abc");
        secret.set_sensitive(true);
        let req = http::Request::builder()
            .method("GET")
            .uri("/socket.io/?EIO=4&transport=websocket&token=t")
            .version(http::Version::HTTP_11)
            .header("authorization", secret)
            .header("x-custom", "1")
            .header("x-custom", "2")
            .extension(42u32)
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let copy = detach(parts.clone());
        assert_eq!(copy.method, parts.method);
        assert_eq!(copy.uri, parts.uri);
        assert_eq!(copy.version, parts.version);
        assert_eq!(copy.headers, parts.headers);
        let values: Vec<_> = copy.headers.get_all("x-custom").iter().collect();
        assert_eq!(values, ["1", "2"], "repeated headers kept, in order");
        assert!(copy.headers["authorization"].is_sensitive());
        assert_eq!(copy.extensions.get::<u32>(), None);
    }
}
