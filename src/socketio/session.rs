//! One Engine.IO session: its Socket.IO sockets (one per namespace it connected), on the one
//! connection loop ([`drive`]) with the session's [wire](super::wire) under it, whichever
//! transport that is (long-polling, WebSocket, or polling upgraded to WebSocket).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use futures_util::future::BoxFuture;
use http::request::Parts;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::{
    pending::Place,
    request::{detach, recovery_ask},
    wire::{Control, EngineWire},
};
use crate::{
    auth::extract_token,
    connection::{
        admission::{self, Client},
        lifecycle::{drive, End, Heartbeat, Protocol, Step},
    },
    gateway::{Incoming, RateState, Refused, Socket},
    hub::{
        dynamic::Lease,
        history::{random_id, Ask, Recovery, SessionNews},
        Conn, DisconnectReason, Hub, Proto, RefusalCause,
    },
    outbox::{self, Frame},
    protocol::{
        close_code,
        socketio::{packet, EioPacket, PacketKind, SioDecoder, SioPacket, Transport},
    },
};

/// Where the session's transport stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TransportState {
    pub(crate) transport: Transport,
    pub(crate) upgrading: bool,
    /// The upgrade's probe came: a poll from now on waits a moment for the upgrade.
    pub(crate) probed: bool,
}

/// An Engine.IO session as its transports' HTTP requests see it.
pub(crate) struct Session {
    pub(crate) sid: Arc<str>,
    hub: Hub,
    /// The handshake request, for authentication at each CONNECT.
    parts: Parts,
    out_tx: outbox::Sender,
    /// Packets from `POST` bodies, for the session's loop (a polling session's).
    posts: Option<mpsc::Sender<Box<EioPacket>>>,
    /// Polls waiting for an answer, and an upgrade's steps, for the session's wire (a polling
    /// session's).
    control: Option<mpsc::UnboundedSender<Control>>,
    pub(crate) state: Mutex<TransportState>,
    /// A poll is pending.
    pub(crate) polling: AtomicBool,
    /// Woken when an upgrade completes (the transport is the WebSocket from then on).
    pub(crate) upgraded: tokio::sync::Notify,
    /// Why the server closes the session, as a close code and reason (the first cause wins).
    cause: Mutex<Option<(u16, String)>>,
    /// The handshake's client address (for the per-address limits at each CONNECT), if known.
    addr: Option<std::net::IpAddr>,
}

impl Session {
    fn new(hub: Hub, parts: Parts, transport: Transport) -> Option<(Arc<Self>, outbox::Receiver, EngineWire)> {
        let sid: Arc<str> = match crate::protocol::socketio::engineio::generate_sid() {
            Ok(sid) => Arc::from(sid),
            Err(e) => {
                tracing::error!(error = %e, "no session id could be made");
                return None;
            }
        };
        let (out_tx, out_rx) = outbox::channel(hub.inner.config.outbound_queue);
        let limits = (hub.socketio()).map(|sio| (sio.config.max_payload, sio.config.ping_timeout));
        // A WebSocket-only session needs neither channel: it has no polls, no POSTs and no
        // upgrade.
        let (senders, receivers) = match transport {
            Transport::Polling => {
                // Boxed packets: the channel allocates its first block of 32 slots up front.
                let (posts_tx, posts_rx) = mpsc::channel(64);
                let (control_tx, control_rx) = mpsc::unbounded_channel();
                ((Some(posts_tx), Some(control_tx)), (Some(posts_rx), Some(control_rx)))
            }
            Transport::WebSocket => ((None, None), (None, None)),
        };
        let addr = hub.inner.addresses.source.of(&parts);
        let session = Arc::new(Self {
            sid,
            hub,
            parts: detach(parts),
            out_tx,
            posts: senders.0,
            control: senders.1,
            state: Mutex::new(TransportState {
                transport,
                upgrading: false,
                probed: false,
            }),
            polling: AtomicBool::new(false),
            upgraded: tokio::sync::Notify::new(),
            cause: Mutex::new(None),
            addr,
        });
        let forget = {
            let session = Arc::downgrade(&session);
            Box::new(move || {
                if let Some(session) = session.upgrade() {
                    session.forget();
                }
            })
        };
        let wire = EngineWire::new(limits.unwrap_or_default(), forget, receivers.0, receivers.1);
        Some((session, out_rx, wire))
    }

    /// Creates a long-polling session, holding `place` until it connects a namespace, and
    /// spawns its loop.
    pub(crate) fn start_polling(hub: Hub, parts: Parts, place: Place) -> Option<Arc<Self>> {
        let sio = hub.socketio()?;
        let (session, rx, wire) = Self::new(hub.clone(), parts, Transport::Polling)?;
        sio.sessions.insert(session.sid.clone(), session.clone());
        Self::spawn(session.clone(), wire, rx, place);
        Some(session)
    }

    /// Creates a WebSocket-only session: `open` writes its handshake on the WebSocket (the
    /// session id known), and the session's loop is spawned once it has.
    pub(crate) async fn run_websocket<F, Fut>(hub: Hub, parts: Parts, place: Place, open: F)
    where
        F: FnOnce(Arc<Self>, EngineWire) -> Fut,
        Fut: std::future::Future<Output = Option<EngineWire>>,
    {
        let Some(sio) = hub.socketio() else { return };
        let Some((session, rx, wire)) = Self::new(hub.clone(), parts, Transport::WebSocket) else {
            return;
        };
        let Some(wire) = open(session.clone(), wire).await else {
            return;
        };
        sio.sessions.insert(session.sid.clone(), session.clone());
        Self::spawn(session, wire, rx, place);
    }

    /// Spawns the session's loop as a task of its own: a task is as large as its future's
    /// largest state for its whole life, so it holds the loop and nothing of what came before
    /// it (the upgrade, the open packet's write).
    fn spawn(session: Arc<Self>, wire: EngineWire, rx: outbox::Receiver, mut place: Place) {
        let hub = session.hub.clone();
        let Some(sio) = hub.socketio() else { return };
        let weak = Arc::downgrade(&session);
        place.arm(sio.config.connect_timeout, move || {
            if let Some(session) = weak.upgrade() {
                tracing::debug!(sid = %session.sid, "no namespace connected in time: closing the session");
                session.close_by_server(close_code::POLICY_VIOLATION, "connect timeout");
            }
        });
        let engine = Engine {
            decoder: SioDecoder::new(sio.config.max_attachments),
            session,
            sockets: HashMap::new(),
            pending: Some(Box::new(place)),
        };
        tokio::spawn(drive(hub, wire, engine, rx));
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Hands the packets of a `POST` to the session's loop. `false` once the session has ended.
    pub(crate) async fn receive(&self, packet: EioPacket) -> bool {
        match &self.posts {
            Some(posts) => posts.send(Box::new(packet)).await.is_ok(),
            None => false,
        }
    }

    /// Hands a step to the session's wire. `false` once the session has ended.
    pub(crate) fn control(&self, step: Control) -> bool {
        (self.control.as_ref()).is_some_and(|control| control.send(step).is_ok())
    }

    /// A long poll: waits for what the session has to send (or its end).
    pub(crate) async fn poll(&self) -> String {
        let (tx, rx) = oneshot::channel();
        if !self.control(Control::Poll(tx)) {
            return EioPacket::Close.encode();
        }
        // Unanswered, the session ended without a word for this poll.
        rx.await.unwrap_or_else(|_| EioPacket::Close.encode())
    }

    /// Queues an Engine.IO packet for the client, without waiting.
    fn queue(&self, text: String) {
        let _ = self.out_tx.try_send(Frame::new(Message::text(text)));
    }

    /// Closes the session on the server's side, for `code` and `reason`: what its sockets'
    /// disconnect reason says, and whether their recovery sessions are kept for the client.
    pub(crate) fn close_by_server(&self, code: u16, reason: impl Into<String>) {
        self.cause.lock().get_or_insert_with(|| (code, reason.into()));
        self.out_tx.nudge();
    }

    /// Forgets the session: its sid is unknown from the next request on.
    pub(crate) fn forget(&self) {
        if let Some(sio) = self.hub.socketio() {
            sio.sessions.remove(&self.sid);
        }
    }

    /// Whether a poll is pending; marks one pending when not.
    pub(crate) fn start_poll(&self) -> bool {
        !self.polling.swap(true, Ordering::AcqRel)
    }
}

/// The result of an async step of the session task.
pub(crate) enum Outcome {
    Nothing,
    Connected(Socket, Lease),
}

/// One connected namespace of the session.
struct Entry {
    socket: Socket,
    rate: RateState,
    /// Keeps a dynamic namespace while the socket is in it.
    lease: Lease,
}

impl Entry {
    /// Ends the socket ([`admission::retire`]), then lets its namespace go.
    async fn retire(self, reason: DisconnectReason) {
        admission::retire(self.socket, reason).await;
        drop(self.lease);
    }
}

/// An Engine.IO session's protocol: Engine.IO packets (heartbeat, close) and the Socket.IO
/// packets of its sockets.
struct Engine {
    session: Arc<Session>,
    sockets: HashMap<String, Entry>,
    decoder: SioDecoder,
    /// The session's place among those that have not connected a namespace (its connect
    /// timeout with it), until its first CONNECT is let in. Boxed: it goes early.
    pending: Option<Box<Place>>,
}

/// The code a session ends with when its client sent a close packet: nothing more is sent.
const CLIENT_CLOSED: u16 = close_code::NORMAL;

impl Protocol for Engine {
    type In = EioPacket;
    type Held = SioPacket;
    type Outcome = Outcome;

    fn heartbeat(&self) -> Heartbeat {
        let cfg = (self.session.hub.socketio()).map(|sio| &sio.config);
        let (interval, timeout) = cfg.map_or(Default::default(), |cfg| (cfg.ping_interval, cfg.ping_timeout));
        Heartbeat::Periodic { interval, timeout }
    }

    fn take(&mut self, packet: EioPacket) -> Step<SioPacket> {
        let decoded = match packet {
            EioPacket::Pong(_) => return Step::Pong,
            EioPacket::Ping(_) => {
                // A bare pong: an Engine.IO v4 client sends no payload, and echoing one would
                // have the server write, and queue, whatever a peer that never reads sends.
                self.session.queue(EioPacket::Pong(None).encode());
                return Step::Done;
            }
            EioPacket::Close => return Step::End(End::Close(CLIENT_CLOSED, "client closed the session".into())),
            EioPacket::Message(text) => self.decoder.decode_text(&text),
            EioPacket::BinaryMessage(bytes) => self.decoder.decode_binary(bytes),
            EioPacket::Open(_) | EioPacket::Upgrade | EioPacket::Noop => return Step::Done,
        };
        let hub = &self.session.hub;
        hub.inner.counters.messages_in.fetch_add(1, Ordering::Relaxed);
        match decoded {
            Ok(Some(p)) if p.kind.is_ack() => {
                // Acks are taken at once, even while a handler runs: that handler may be the
                // one waiting for them.
                match on_packet(&self.session, &mut self.sockets, p) {
                    Ok(_) => Step::Done,
                    Err(()) => Step::End(violation()),
                }
            }
            Ok(Some(p)) => Step::Run(p),
            Ok(None) => Step::Done,
            Err(e) => {
                tracing::debug!(sid = %self.session.sid, error = %e, "malformed Socket.IO packet: closing");
                Step::End(End::Close(
                    close_code::PROTOCOL_ERROR,
                    "malformed Socket.IO packet".into(),
                ))
            }
        }
    }

    fn start(&mut self, p: SioPacket) -> Result<Option<BoxFuture<'static, Outcome>>, End> {
        on_packet(&self.session, &mut self.sockets, p).map_err(|()| violation())
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Outcome::Connected(socket, lease) = outcome {
            // The connection counts in the session's stead from now on.
            self.pending = None;
            let rate = RateState::default();
            let entry = Entry { socket, rate, lease };
            self.sockets.insert(entry.socket.namespace().to_owned(), entry);
        }
    }

    fn ping(&mut self) {
        self.session.queue(EioPacket::Ping(None).encode());
    }

    async fn nudged(&mut self) -> Option<End> {
        // Boxed: it runs rarely, and a task is the size of its largest state for as long as
        // it lives.
        Box::pin(close_requests(&self.session, &mut self.sockets)).await
    }

    fn drains(&self, code: u16) -> bool {
        // The close packet is queued last: it goes out with what is before it, unless the
        // client is gone (a ping timeout) or closed the session itself.
        code != close_code::PING_TIMEOUT && code != CLIENT_CLOSED
    }

    fn ending(&mut self, end: &End) {
        if let End::Close(code, reason) = end {
            self.session.cause.lock().get_or_insert_with(|| (*code, reason.clone()));
            if *code != CLIENT_CLOSED {
                // Past the queue's capacity: a slow consumer's full queue must not swallow its
                // close.
                let close = Frame::new(Message::text(EioPacket::Close.encode()));
                self.session.out_tx.push_all(vec![close]);
            }
        }
    }

    async fn retire(mut self, end: End, held: VecDeque<SioPacket>) {
        // The DISCONNECTs the client sent before the end, still waiting their turn: those
        // sockets said goodbye, and nothing is kept for them.
        for p in held.iter().filter(|p| p.kind == PacketKind::Disconnect) {
            if let Some(entry) = self.sockets.remove(&p.ns) {
                Box::pin(entry.retire(DisconnectReason::ClientClosed(None))).await;
            }
        }
        let reason = match end {
            // Socket.IO's "transport close": the client's close packet, or a transport gone.
            End::Close(CLIENT_CLOSED, _) | End::Gone(_) => DisconnectReason::TransportClosed,
            End::Close(code, reason) => DisconnectReason::ServerClosed(code, reason),
        };
        for (_, entry) in self.sockets.drain() {
            // A socket the server was closing ends for that reason (a flood, a slow consumer).
            let reason = match entry.socket.conn().close_requested() {
                Some((code, why)) => DisconnectReason::ServerClosed(code, why.into()),
                None => reason.clone(),
            };
            Box::pin(entry.retire(reason)).await;
        }
        tracing::debug!(sid = %self.session.sid, "Socket.IO session ended");
    }
}

fn violation() -> End {
    End::Close(close_code::PROTOCOL_ERROR, "protocol violation".into())
}

/// Acts on sockets asked to close. Returns how the whole session ends, if it does.
async fn close_requests(session: &Arc<Session>, sockets: &mut HashMap<String, Entry>) -> Option<End> {
    if let Some((code, reason)) = session.cause.lock().clone() {
        return Some(End::Close(code, reason));
    }
    let requested: Vec<(String, u16)> = (sockets.iter())
        .filter_map(|(ns, e)| e.socket.conn().close_requested().map(|(code, _)| (ns.clone(), code)))
        .collect();
    for (ns, code) in requested {
        if code != close_code::DISCONNECTED_BY_SERVER && code != close_code::TOKEN_EXPIRED {
            // Shutdown, slow consumer, flooding: the whole session goes; clients reconnect.
            let why = sockets[&ns].socket.conn().close_requested().map_or("", |(_, why)| why);
            return Some(End::Close(code, why.to_owned()));
        }
        // The app disconnected this socket, or its token expired: a DISCONNECT, as Socket.IO's
        // `socket.disconnect()`; the session's other sockets carry on.
        if let Some(entry) = sockets.remove(&ns) {
            session.queue(format!("4{}", packet::encode_disconnect(&ns)));
            let why = match code {
                close_code::TOKEN_EXPIRED => "token expired",
                _ => "disconnected by server",
            };
            let reason = DisconnectReason::ServerClosed(code, why.into());
            Box::pin(entry.retire(reason)).await;
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
            let ns = match hub.lease_namespace(&p.ns) {
                Ok(ns) => ns,
                Err(unknown) => {
                    tracing::debug!(ns = %p.ns, reason = %unknown, "Socket.IO CONNECT to no namespace");
                    let client = Client {
                        addr: session.addr,
                        transport: crate::hub::Transport::SocketIo,
                        namespace: Some(&p.ns),
                    };
                    client.report(hub, RefusalCause::BadRequest, "Invalid namespace", None, None);
                    session.queue(format!("4{}", packet::encode_connect_error(&p.ns, "Invalid namespace")));
                    return Ok(None);
                }
            };
            Ok(Some(Box::pin(connect(session.clone(), ns, p.data))))
        }
        PacketKind::Disconnect => {
            if let Some(entry) = sockets.remove(&p.ns) {
                return Ok(Some(Box::pin(async move {
                    entry.retire(DisconnectReason::ClientClosed(None)).await;
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
                entry.socket.conn().resolve_ack(id, (data, p.attachments));
            }
            Ok(None)
        }
        PacketKind::ConnectError => Err(()),
    }
}

/// A namespace CONNECT: the [admission](crate::connection::admission) every transport
/// shares, answered with CONNECT (with the recovery session's `pid`), CONNECT_ERROR, or, when
/// the connect hook refused after the CONNECT went out, DISCONNECT.
async fn connect(session: Arc<Session>, ns: Lease, auth: Option<Value>) -> Outcome {
    let hub = session.hub.clone();
    let refuse = |message: &str| session.queue(format!("4{}", packet::encode_connect_error(&ns.name, message)));
    let from_payload = auth.as_ref().and_then(|a| a.get("token")).and_then(Value::as_str);
    let from_request = extract_token(&session.parts);
    let token = from_payload.or(from_request.as_ref().map(|(t, _)| t.as_str()));
    let client = Client {
        addr: session.addr,
        transport: crate::hub::Transport::SocketIo,
        namespace: Some(&ns.name),
    };
    let pass = match admission::admit(&hub, &session.parts, &client, token, auth.as_ref()).await {
        Ok(pass) => pass,
        Err(refusal) => {
            refuse(&refusal.message());
            return Outcome::Nothing;
        }
    };
    // The socket's public id (Socket.IO's `socket.id`) and its recovery session's id come from
    // the OS generator; the connection id stays internal (it is a sequence).
    let public_id = crate::protocol::socketio::engineio::generate_sid();
    let session_id = (hub.inner.history.as_ref()).map(|_| random_id(16));
    let (public_id, session_id) = match (public_id, session_id.transpose()) {
        (Ok(public_id), Ok(session_id)) => (public_id, session_id),
        _ => {
            tracing::error!("the OS random generator failed: no socket id");
            refuse("no socket id could be made");
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
        .zip(session_id)
        .map(|(history, session)| Box::new(Recovery::new(Arc::from(session), history.current(), id)));
    let (identity, addr) = pass.into_parts();
    let conn = Conn::with_sender(
        id,
        Proto::SocketIo,
        identity,
        session.out_tx.clone(),
        auth.map(Box::new),
        recovery,
        addr,
    );
    let socket = Socket::new(hub.clone(), ns.clone(), conn);
    let hello = |news: Option<&SessionNews<'_>>| {
        let pid = news.and_then(|news| news.session.as_deref());
        let connect = match pid {
            Some(pid) => packet::encode_connect_with_pid(&ns.name, &public_id, pid),
            None => packet::encode_connect(&ns.name, &public_id),
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
    Outcome::Connected(socket, ns)
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}
