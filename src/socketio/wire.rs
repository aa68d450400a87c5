//! An Engine.IO session's wire: long-polling (packets from `POST` bodies in, queued frames out
//! as the answer to the pending `GET`), or a WebSocket, switching from the first to the second
//! when the client upgrades. The session's loop is the [one loop](crate::connection::lifecycle)
//! every connection runs; this is only the framing.

use std::{
    task::{Context, Poll, Waker},
    time::Duration,
};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    connection::{
        lifecycle::{End, Read, Wire, CLOSE_GRACE},
        websocket::{Framing, WsWire},
    },
    hub::Hub,
    outbox::{self, Frame},
    protocol::{
        close_code,
        socketio::{EioPacket, PayloadBuilder},
    },
};

/// A WebSocket carrying Engine.IO packets.
pub(crate) type EngineWs = WsWire<TokioIo<Upgraded>, EngineFraming>;

/// Engine.IO over a WebSocket: a text message is one packet, a binary message one binary
/// packet.
pub(crate) struct EngineFraming;

impl Framing for EngineFraming {
    type In = EioPacket;

    fn decode(msg: Message) -> Result<EioPacket, End> {
        match msg {
            Message::Binary(b) => Ok(EioPacket::BinaryMessage(b)),
            Message::Text(t) => EioPacket::decode(&t)
                .map_err(|_| End::Close(close_code::PROTOCOL_ERROR, "malformed Engine.IO packet".into())),
            _ => Ok(EioPacket::Noop),
        }
    }
}

/// What the HTTP side hands a polling session's wire.
pub(crate) enum Control {
    /// A `GET` waits for its body.
    Poll(oneshot::Sender<String>),
    /// An upgrade's probe was answered: the pending poll gets a noop, and nothing more goes
    /// out by polling.
    Probed,
    /// The upgrade failed: polling goes on.
    Aborted,
    /// The upgrade completed: the WebSocket carries the session from now on.
    Upgraded(EngineWs),
}

enum Link {
    Polling {
        /// The pending `GET`.
        waiter: Option<oneshot::Sender<String>>,
        /// An upgrade is under way.
        paused: bool,
    },
    WebSocket(EngineWs),
}

/// Forgets a session: its sid is unknown from the next request on.
pub(crate) type Forget = Box<dyn FnOnce() + Send>;

/// The wire of one Engine.IO session.
pub(crate) struct EngineWire {
    /// The largest polling body.
    max_payload: usize,
    /// How long a closed polling session waits for its client to read its close packet.
    linger: Duration,
    /// Called once the session is over for its transports.
    forget: Forget,
    /// Packets from `POST` bodies (a polling session's).
    posts: Option<mpsc::Receiver<Box<EioPacket>>>,
    control: Option<mpsc::UnboundedReceiver<Control>>,
    link: Link,
    /// The waker the loop reads with. A poll that arrives, or a new link, changes what the
    /// loop may do next; the loop polls its read side only once that side has woken.
    read_waker: Option<Waker>,
}

fn noop() -> String {
    EioPacket::Noop.encode()
}

impl EngineWire {
    /// A polling session's wire (`posts` and `control` set), or a WebSocket-only one's, which
    /// gets its WebSocket with [`EngineWire::websocket`].
    pub(crate) fn new(
        (max_payload, linger): (usize, Duration),
        forget: Forget,
        posts: Option<mpsc::Receiver<Box<EioPacket>>>,
        control: Option<mpsc::UnboundedReceiver<Control>>,
    ) -> Self {
        Self {
            max_payload,
            linger,
            forget,
            posts,
            control,
            link: Link::Polling {
                waiter: None,
                paused: false,
            },
            read_waker: None,
        }
    }

    /// This wire, carried by `ws`.
    pub(crate) fn websocket(mut self, ws: EngineWs) -> Self {
        self.link = Link::WebSocket(ws);
        self
    }

    /// Takes what the HTTP side handed over.
    fn poll_control(&mut self, cx: &mut Context<'_>) {
        let Some(control) = &mut self.control else { return };
        let mut changed = false;
        while let Poll::Ready(Some(step)) = control.poll_recv(cx) {
            changed = true;
            match (step, &mut self.link) {
                (Control::Poll(poll), Link::Polling { waiter, paused: false }) => {
                    // A poll that replaces one is the client's next: the earlier one is gone.
                    if let Some(earlier) = waiter.replace(poll) {
                        let _ = earlier.send(noop());
                    }
                }
                // Upgrading or upgraded: the client pauses polling; a poll still gets an answer.
                (Control::Poll(poll), _) => {
                    let _ = poll.send(noop());
                }
                (Control::Probed, Link::Polling { waiter, paused }) => {
                    *paused = true;
                    if let Some(poll) = waiter.take() {
                        let _ = poll.send(noop());
                    }
                }
                (Control::Aborted, Link::Polling { paused, .. }) => *paused = false,
                (Control::Upgraded(ws), link) => {
                    if let Link::Polling { waiter, .. } = link {
                        if let Some(poll) = waiter.take() {
                            let _ = poll.send(noop());
                        }
                    }
                    *link = Link::WebSocket(ws);
                }
                (Control::Probed | Control::Aborted, Link::WebSocket(_)) => {}
            }
        }
        if changed {
            // The loop looks again: at its queue (a poll is waiting), at its read side (a new
            // link).
            self.read_waker.as_ref().unwrap_or(cx.waker()).wake_by_ref();
        }
    }
}

/// Answers a poll with `first` and what else is queued and fits in one body. What the poll
/// could not take (it went away) goes back to the front of the queue.
fn answer(poll: oneshot::Sender<String>, first: Option<Frame>, rx: &mut outbox::Receiver, max: usize, hub: &Hub) {
    let mut body = PayloadBuilder::new(max);
    let mut taken = Vec::new();
    let mut bytes = 0;
    let mut next = first;
    while let Some(frame) = next.take().or_else(|| rx.try_recv().ok()) {
        let fits = match &*frame {
            Message::Text(t) => body.push_encoded(t.as_str()),
            Message::Binary(b) => body.push(&EioPacket::BinaryMessage(b.clone())),
            _ => true,
        };
        if !fits {
            rx.unread(vec![frame]);
            break;
        }
        bytes += frame.len();
        taken.push(frame);
    }
    if body.is_empty() {
        let _ = poll.send(noop());
    } else if poll.send(body.finish()).is_err() {
        rx.unread(taken);
    } else {
        let counters = &hub.inner.counters;
        counters
            .bytes_out
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Wire for EngineWire {
    type In = EioPacket;

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Read<EioPacket>, End>> {
        if !(self.read_waker.as_ref()).is_some_and(|w| w.will_wake(cx.waker())) {
            self.read_waker = Some(cx.waker().clone());
        }
        self.poll_control(cx);
        // What a `POST` brought, before anything the WebSocket reads after an upgrade.
        if let Some(posts) = &mut self.posts {
            if let Poll::Ready(Some(packet)) = posts.poll_recv(cx) {
                return Poll::Ready(Ok(Read::Unit(*packet)));
            }
        }
        match &mut self.link {
            Link::WebSocket(ws) => ws.poll_read(cx),
            Link::Polling { .. } => Poll::Pending,
        }
    }

    fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_control(cx);
        match &self.link {
            Link::Polling {
                waiter: Some(_),
                paused: false,
            }
            | Link::WebSocket(_) => Poll::Ready(()),
            Link::Polling { .. } => Poll::Pending,
        }
    }

    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        unsent: &mut Option<Frame>,
        rx: &mut outbox::Receiver,
        hub: &Hub,
    ) -> Poll<Result<(), End>> {
        let max = self.max_payload;
        match &mut self.link {
            Link::WebSocket(ws) => ws.poll_write(cx, unsent, rx, hub),
            Link::Polling { waiter, .. } => {
                match waiter.take() {
                    Some(poll) => answer(poll, unsent.take(), rx, max, hub),
                    None => {
                        if let Some(frame) = unsent.take() {
                            rx.unread(vec![frame]);
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        match &mut self.link {
            Link::WebSocket(ws) => ws.flush().await,
            Link::Polling { .. } => Ok(()),
        }
    }

    async fn ping(&mut self) -> Result<(), End> {
        // Engine.IO's heartbeat is its own packets, in the queue.
        Ok(())
    }

    async fn close(self, hub: &Hub, end: &End, rx: outbox::Receiver, drain: Option<Duration>) {
        let Self {
            max_payload,
            linger,
            forget,
            mut control,
            link,
            ..
        } = self;
        match link {
            Link::WebSocket(ws) => {
                forget();
                ws.close(hub, end, rx, drain).await;
            }
            Link::Polling { waiter, .. } => match drain {
                // A polling client reads the close packet at its next poll, as the reference
                // server lets it: the session stays findable until its queue is read, for a
                // ping timeout at most.
                Some(_) => {
                    let hub = hub.clone();
                    tokio::spawn(async move {
                        let polls = last_polls(&hub, max_payload, waiter, control, rx);
                        let _ = tokio::time::timeout(linger, polls).await;
                        forget();
                    });
                }
                None => match waiter {
                    Some(poll) => {
                        forget();
                        let _ = poll.send(noop());
                    }
                    // The client's close packet overtook its own poll (sent at the same time,
                    // on another connection): that poll still gets its noop, for a moment.
                    None if matches!(end, End::Close(code, _) if *code == close_code::NORMAL) => {
                        tokio::spawn(async move {
                            let poll = async {
                                while let Some(step) = control.as_mut()?.recv().await {
                                    if let Control::Poll(poll) = step {
                                        return poll.send(noop()).ok();
                                    }
                                }
                                None
                            };
                            let _ = tokio::time::timeout(CLOSE_GRACE, poll).await;
                            forget();
                        });
                    }
                    None => forget(),
                },
            },
        }
    }
}

/// Answers the last polls of a closed polling session, until its client has read everything
/// queued (its close packet last).
async fn last_polls(
    hub: &Hub,
    max_payload: usize,
    waiter: Option<oneshot::Sender<String>>,
    mut control: Option<mpsc::UnboundedReceiver<Control>>,
    mut rx: outbox::Receiver,
) {
    if let Some(poll) = waiter {
        answer(poll, None, &mut rx, max_payload, hub);
    }
    while !rx.is_empty() {
        let Some(control) = &mut control else { break };
        match control.recv().await {
            Some(Control::Poll(poll)) => answer(poll, None, &mut rx, max_payload, hub),
            Some(_) => {}
            None => break,
        }
    }
}
