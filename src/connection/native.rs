//! The native protocol over the [one loop](super::lifecycle): one socket per connection, JSON
//! text frames (`docs/protocol.md`), WebSocket pings for its heartbeat.

use std::{
    collections::VecDeque,
    sync::{atomic::Ordering, Arc},
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::Instrument;

use super::{
    admission,
    lifecycle::{drive, End, Heartbeat, Protocol, Step, Wire},
    websocket::{Framing, WsStream, WsWire},
};
use crate::{
    gateway::{ErrorEvent, Incoming, RateState, RawMessage, Refused, Socket},
    hub::{
        dynamic::Lease,
        history::{Ask, SessionNews},
        Conn, Hub,
    },
    outbox,
    protocol::{
        attach, close_code,
        native::{self, Inbound},
    },
};

/// The event that tells a native client about its recovery session.
pub(crate) const SESSION_EVENT: &str = "$session";

/// The native protocol's framing: every text and binary message is a unit.
pub(crate) struct NativeFraming;

impl Framing for NativeFraming {
    type In = Message;

    fn decode(msg: Message) -> Result<Message, End> {
        Ok(msg)
    }
}

/// Runs one upgraded connection: the rest of its admission here, then its loop in a task of
/// its own.
///
/// The loop is spawned rather than awaited: a task is as large as its future's largest state
/// for its whole life, and the admission's states (and this function's own) would otherwise
/// be kept beside the loop in every idle connection. `span` is the connection's, for both.
pub(crate) async fn run<S>(
    hub: Hub,
    ns: Lease,
    conn: Arc<Conn>,
    rx: outbox::Receiver,
    ws: Box<WsStream<S>>,
    ask: Option<Box<Ask>>,
    span: tracing::Span,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let wire = WsWire::<S, NativeFraming>::new(ws);
    let socket = Socket::new(hub.clone(), ns.clone(), conn.clone());
    // A client that takes part in recovery reads `$session` (and its replay) first.
    let hello = |news: Option<&SessionNews<'_>>| {
        let news = news.map(|news| news.to_json().to_string());
        (news.iter())
            .map(|data| outbox::Frame::new(Message::Text(native::encode_event_raw(SESSION_EVENT, data, None))))
            .collect()
    };
    let admitted = admission::enter(&socket, ask.as_deref(), hello)
        .instrument(span.clone())
        .await;
    if let Err(refused) = admitted {
        let end = End::Close(close_code::POLICY_VIOLATION, refused.refusal.message().into_owned());
        wire.close(&hub, &end, rx, None).instrument(span).await;
        return;
    }
    span.in_scope(|| tracing::debug!(conn = %conn.id, user = ?conn.identity.user_id(), "connected"));
    let native = Native {
        socket,
        rate: RateState::default(),
        binary: None,
        _lease: ns,
    };
    tokio::spawn(drive(hub, wire, native, rx).instrument(span));
}

/// A frame waiting for the handler before it to finish, with its attachments.
pub(crate) enum Pending {
    Raw(Message),
    Frame(Utf8Bytes, Result<Inbound, native::DecodeError>, Vec<Bytes>),
}

/// A native connection's one socket.
struct Native {
    socket: Socket,
    rate: RateState,
    /// The message whose binary frames are being read, when one is.
    binary: Option<Box<Binary>>,
    /// The hold on its namespace (a dynamic one stays while a connection is in it).
    _lease: Lease,
}

/// A message announcing `"attachments": n`, and its binary frames so far.
struct Binary {
    /// The message, or `None` when it was refused and its binary frames are skipped.
    head: Option<(Utf8Bytes, Inbound)>,
    /// Binary frames still to come.
    remaining: usize,
    attachments: Vec<Bytes>,
    /// Bytes received for it, its text included.
    size: usize,
}

impl Native {
    /// Takes a text frame: an answer to a server emit, a message that is complete, or one
    /// whose binary frames follow.
    fn text(&mut self, text: Utf8Bytes) -> Step<Pending> {
        let socket = &self.socket;
        if let Some(binary) = self.binary.take() {
            if let Some((_, inbound)) = &binary.head {
                let error = format!(
                    "a text frame arrived while {} more attachments were awaited; the message they belonged to was dropped",
                    binary.remaining
                );
                socket.send_error(request_id(inbound), ErrorEvent::new(error));
            }
        }
        match native::decode(&text) {
            Ok(inbound) if attachments_of(&inbound) > 0 => {
                self.expect(text, inbound);
                Step::Done
            }
            Ok(Inbound::Ack { ack, data, .. }) => {
                // Answers to the server's emits are taken at once, even while a handler
                // runs: that handler may be the one waiting for them.
                answered(socket, ack, data, Vec::new());
                Step::Done
            }
            frame => Step::Run(Pending::Frame(text, frame, Vec::new())),
        }
    }

    /// Starts reading the `attachments` binary frames of a message (skipping them when there
    /// are too many).
    fn expect(&mut self, text: Utf8Bytes, inbound: Inbound) {
        let attachments = attachments_of(&inbound);
        let max = self.socket.hub().config().max_attachments;
        let head = if attachments > max {
            let error = format!(
                "too many attachments: {attachments} (at most {max}); the binary frames that follow are skipped"
            );
            self.socket.send_error(request_id(&inbound), ErrorEvent::new(error));
            None
        } else if !attach::placeholders_valid(data_of(&inbound), attachments) {
            let error = format!("a placeholder refers to no attachment (the message has {attachments}); the binary frames that follow are skipped");
            self.socket.send_error(request_id(&inbound), ErrorEvent::new(error));
            None
        } else {
            Some((text.clone(), inbound))
        };
        self.binary = Some(Box::new(Binary {
            head,
            remaining: attachments,
            attachments: Vec::new(),
            size: text.len(),
        }));
    }

    /// Takes a binary frame: the next attachment of the message being read.
    fn binary(&mut self, bytes: Bytes) -> Step<Pending> {
        let socket = &self.socket;
        let Some(binary) = self.binary.as_mut() else {
            let error = "a binary frame arrived with no message awaiting attachments; send a text frame with \"attachments\": n first";
            socket.send_error(None, ErrorEvent::new(error));
            return Step::Done;
        };
        binary.remaining -= 1;
        binary.size = binary.size.saturating_add(bytes.len());
        let max = socket.hub().config().max_message_size;
        if binary.size > max {
            if let Some((_, inbound)) = binary.head.take() {
                let error =
                    format!("a message and its attachments are larger than {max} bytes; its binary frames are skipped");
                socket.send_error(request_id(&inbound), ErrorEvent::new(error));
                binary.attachments = Vec::new();
            }
        }
        if binary.head.is_some() {
            binary.attachments.push(bytes);
        }
        if binary.remaining > 0 {
            return Step::Done;
        }
        let Some(binary) = self.binary.take() else {
            return Step::Done;
        };
        match binary.head {
            Some((_, Inbound::Ack { ack, data, .. })) => {
                answered(socket, ack, data, binary.attachments);
                Step::Done
            }
            Some((text, inbound)) => Step::Run(Pending::Frame(text, Ok(inbound), binary.attachments)),
            None => Step::Done,
        }
    }
}

/// Hands the client's answer to the server emit waiting for it.
fn answered(socket: &Socket, ack: u64, data: serde_json::Value, attachments: Vec<Bytes>) {
    if !socket.conn().resolve_ack(ack, (data, attachments)) {
        tracing::debug!(conn = %socket.id(), ack, "an ack nobody waits for (late, or unknown id)");
    }
}

/// How many binary frames follow a client frame.
fn attachments_of(inbound: &Inbound) -> usize {
    match inbound {
        Inbound::Event { attachments, .. } | Inbound::Ack { attachments, .. } => *attachments,
    }
}

/// The payload of a client frame.
fn data_of(inbound: &Inbound) -> &serde_json::Value {
    match inbound {
        Inbound::Event { data, .. } | Inbound::Ack { data, .. } => data,
    }
}

/// The id a client frame asks an answer under, if any.
fn request_id(inbound: &Inbound) -> Option<u64> {
    match inbound {
        Inbound::Event { id, .. } => *id,
        Inbound::Ack { .. } => None,
    }
}

impl Protocol for Native {
    type In = Message;
    type Held = Pending;
    type Outcome = ();

    fn heartbeat(&self) -> Heartbeat {
        let cfg = &self.socket.hub().inner.config;
        Heartbeat::WhenIdle {
            interval: cfg.ping_interval,
            timeout: cfg.ping_timeout,
        }
    }

    fn take(&mut self, msg: Message) -> Step<Pending> {
        let socket = &self.socket;
        socket.hub().inner.counters.messages_in.fetch_add(1, Ordering::Relaxed);
        if socket.ns().gateway().raw.is_some() {
            return Step::Run(Pending::Raw(msg));
        }
        match msg {
            Message::Text(text) => self.text(text),
            Message::Binary(bytes) => self.binary(bytes),
            _ => Step::Done,
        }
    }

    fn start(&mut self, held: Pending) -> Result<Option<BoxFuture<'static, ()>>, End> {
        Ok(match held {
            Pending::Raw(msg) => {
                (self.socket.ns().gateway().raw.as_ref()).map(|raw| raw(self.socket.clone(), RawMessage(msg)))
            }
            Pending::Frame(text, frame, attachments) => {
                dispatch(&self.socket, &text, frame, attachments, &mut self.rate)
            }
        })
    }

    fn finish(&mut self, (): ()) {}

    fn ping(&mut self) {}

    async fn nudged(&mut self) -> Option<End> {
        let (code, reason) = self.socket.conn().close_requested()?;
        Some(End::Close(code, reason.to_owned()))
    }

    fn drains(&self, code: u16) -> bool {
        // Deliver what is already queued before saying goodbye.
        // The `error` event that tells why an expired token ends it goes out too, and the
        // history events before a gap.
        code == close_code::GOING_AWAY
            || code == close_code::HISTORY_GAP
            || code == close_code::DISCONNECTED_BY_SERVER
            || code == close_code::TOKEN_EXPIRED
    }

    fn ending(&mut self, end: &End) {
        // The session is kept as the end found it, before the close handshake (which may wait
        // on a dead peer) and before the hook can change its rooms: a client that is already
        // back can resume it at once.
        let socket = &self.socket;
        socket.hub().keep_session(socket.ns(), socket.conn(), &end.reason());
    }

    async fn retire(self, end: End, _: VecDeque<Pending>) {
        admission::retire(self.socket, end.reason()).await;
    }
}

/// Decodes one text frame and returns the handler future to run, if any. Errors are answered
/// right away with an `error` event.
fn dispatch(
    socket: &Socket,
    text: &str,
    frame: Result<Inbound, native::DecodeError>,
    attachments: Vec<Bytes>,
    rate: &mut RateState,
) -> Option<BoxFuture<'static, ()>> {
    let (event, data, id) = match frame {
        Ok(Inbound::Event { event, data, id, .. }) => (event, data, id),
        Ok(Inbound::Ack { ack, data, .. }) => {
            answered(socket, ack, data, Vec::new());
            return None;
        }
        Err(e) => {
            socket.send_error(native::DecodeError::ack_hint(text), ErrorEvent::new(e.to_string()));
            return None;
        }
    };
    let incoming = Incoming {
        event,
        data,
        many: false,
        attachments,
        id,
    };
    let call = match socket.ns().gateway().route(socket, incoming, rate) {
        Ok(call) => call,
        Err(Refused::Error(ack, error)) => {
            socket.send_error(ack, error);
            return None;
        }
        Err(Refused::Flood(ack, error)) => {
            socket.send_error(ack, error);
            socket
                .conn()
                .request_close(close_code::POLICY_VIOLATION, "rate limit exceeded");
            return None;
        }
    };
    Some(Box::pin(call.run(socket.clone())))
}
