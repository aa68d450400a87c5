//! The one connection loop, for every transport.
//!
//! A connection is two halves: a [`Wire`] (the transport: how bytes become inbound units and
//! queued frames become bytes, a WebSocket or Engine.IO long-polling) and a [`Protocol`] (what
//! the units mean: the native protocol's one socket, or an Engine.IO session's Socket.IO
//! sockets). [`drive`] runs the two together and owns everything they share:
//!
//! - the outbound queue, written in batches (one flush each) when the wire can take them,
//!   each write bounded by the stall limit;
//! - reading, with handlers run one at a time in arrival order: units that arrive while a
//!   handler runs wait (at most [`BACKLOG`]; past that, reading pauses), answers to the
//!   server's own emits are taken at once;
//! - the heartbeat, in either of its two forms ([`Heartbeat`]);
//! - close requests (a flood, a slow consumer, a shutdown, the app), the drain before a
//!   goodbye, the wire's close, and the one way out (the protocol's `retire`).

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures_util::{future::BoxFuture, FutureExt};
use tokio::time::Sleep;

use crate::{
    clock::{self, Millis},
    hub::{DisconnectReason, Hub},
    outbox::{self, Frame, Next},
    protocol::close_code,
};

/// Units read while a handler runs: at most this many wait; then reading pauses.
pub(crate) const BACKLOG: usize = 32;

/// How long a closing connection waits for its last frames to be written and answered.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What ended a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// We close with this code and reason.
    Close(u16, String),
    /// The peer closed, or the transport failed.
    Gone(DisconnectReason),
}

impl End {
    /// The disconnect reason this end gives a connection.
    pub(crate) fn reason(&self) -> DisconnectReason {
        match self {
            Self::Close(code, reason) => DisconnectReason::ServerClosed(*code, reason.clone()),
            Self::Gone(reason) => reason.clone(),
        }
    }

    fn ping_timeout() -> Self {
        Self::Close(close_code::PING_TIMEOUT, "ping timeout".to_owned())
    }
}

/// What a wire read.
#[derive(Debug)]
pub(crate) enum Read<T> {
    /// A unit for the protocol.
    Unit(T),
    /// The peer pinged the transport; its answer waits in the wire for a flush.
    Pinged,
    /// Something that only shows the peer is alive (a transport-level pong).
    Alive,
}

/// A transport: its framing, nothing more.
pub(crate) trait Wire: Send {
    /// What it reads.
    type In: Send;

    /// The next inbound unit. An error ends the connection.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Read<Self::In>, End>>;

    /// Whether it can take a batch now (a WebSocket always can; a long-polling session when a
    /// poll is waiting). Registers for a wake-up when it cannot.
    fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<()>;

    /// Writes `unsent` (when set) and what else is queued, as one batch; what it needs between
    /// polls it keeps itself (a future here would be room in every connection's task). A frame
    /// leaves `unsent` or the queue only once the wire has taken it, so a batch cut short by a
    /// close loses nothing.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        unsent: &mut Option<Frame>,
        rx: &mut outbox::Receiver,
        hub: &Hub,
    ) -> Poll<Result<(), End>>;

    /// Writes what the wire itself has pending (the answer to the peer's ping).
    fn flush(&mut self) -> impl Future<Output = Result<(), End>> + Send;

    /// Sends a transport-level ping (for [`Heartbeat::WhenIdle`]).
    fn ping(&mut self) -> impl Future<Output = Result<(), End>> + Send;

    /// Closes the transport after the connection ended `end`: what is still queued goes out
    /// first when `drain` says for how long, then the transport's goodbye.
    fn close(
        self,
        hub: &Hub,
        end: &End,
        rx: outbox::Receiver,
        drain: Option<Duration>,
    ) -> impl Future<Output = ()> + Send;
}

/// How a connection's peer shows it is alive.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Heartbeat {
    /// Anything the peer sends counts; after `interval` of silence the wire pings; after
    /// `interval + timeout` of silence the connection is gone (a native WebSocket).
    WhenIdle { interval: Duration, timeout: Duration },
    /// The protocol pings every `interval`, and the peer answers within `timeout` (Engine.IO).
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    Periodic { interval: Duration, timeout: Duration },
}

impl Heartbeat {
    /// A write that makes no progress for this long means the peer reads nothing at all.
    fn stall_limit(self) -> Duration {
        let (Self::WhenIdle { interval, timeout } | Self::Periodic { interval, timeout }) = self;
        interval + timeout
    }

    /// How long the peer has to answer a ping.
    fn timeout(self) -> Duration {
        let (Self::WhenIdle { timeout, .. } | Self::Periodic { timeout, .. }) = self;
        timeout
    }
}

/// What the protocol made of an inbound unit.
pub(crate) enum Step<H> {
    /// Dealt with at once (an ack, a ping answered, an error reported).
    Done,
    /// To be run in its turn, after the handler before it.
    Run(H),
    /// The answer to the protocol's ping.
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    Pong,
    /// The connection ends.
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    End(End),
}

/// What a protocol supplies: what inbound units mean, and what its sockets need at the end.
pub(crate) trait Protocol: Send {
    /// What it reads (the wire's units).
    type In: Send;
    /// A unit waiting for its turn.
    type Held: Send;
    /// What a finished task tells the protocol.
    type Outcome: Send + 'static;

    /// How its peer shows it is alive.
    fn heartbeat(&self) -> Heartbeat;

    /// Takes one inbound unit.
    fn take(&mut self, unit: Self::In) -> Step<Self::Held>;

    /// Starts a held unit's task, if it has one.
    fn start(&mut self, held: Self::Held) -> Result<Option<BoxFuture<'static, Self::Outcome>>, End>;

    /// A task finished.
    fn finish(&mut self, outcome: Self::Outcome);

    /// Its own ping, for [`Heartbeat::Periodic`].
    fn ping(&mut self);

    /// The outbound queue was nudged: acts on close requests. `Some` ends the connection.
    fn nudged(&mut self) -> impl Future<Output = Option<End>> + Send;

    /// Whether what is queued goes out before the connection closes with `code`.
    fn drains(&self, code: u16) -> bool;

    /// The connection ended; the wire is not closed yet (its goodbye may wait on a dead peer):
    /// what must not wait for it (a recovery session kept, a close packet queued).
    fn ending(&mut self, end: &End);

    /// The way out, once the wire is closed and the last task finished. `held` are the units
    /// that never got their turn.
    fn retire(self, end: End, held: VecDeque<Self::Held>) -> impl Future<Output = ()> + Send;
}

/// What the loop does, after an event, that may have to wait.
enum Then {
    Nothing,
    /// Act on the queue's nudge (close requests).
    Nudged,
    /// Write what is queued, `unsent` first.
    Write,
    /// Write the answer to the peer's ping.
    Flush,
    /// Ping the peer.
    Ping,
}

/// What woke the loop.
enum Event<T, O> {
    Outbound(Next),
    Finished(O),
    Read(Result<Read<T>, End>),
    Beat,
}

/// Runs a connection to its end: the loop, then the wire's close and the protocol's way out.
///
/// This future is what an idle connection is made of, for its whole life (a task is the size
/// of its future's largest state): it owns what it is handed and keeps as few locals as it can.
/// Not an `async fn`: that would copy its arguments into the future's locals and keep both
/// for the connection's whole life; the block uses them where they were captured.
#[allow(clippy::manual_async_fn, reason = "an `async fn` would keep its arguments twice")]
pub(crate) fn drive<W, P>(hub: Hub, mut wire: W, mut proto: P, mut rx: outbox::Receiver) -> impl Future<Output = ()>
where
    W: Wire,
    P: Protocol<In = W::In>,
{
    async move {
        // Most wake-ups are for the outbound queue: the read side and the heartbeat are polled
        // only once they have woken (gates, see `outbox`). A close request nudges the queue.
        let wakes = rx.wakes();
        let mut heart = Heart::new(proto.heartbeat(), &wakes.waker());
        let mut inflight: Option<BoxFuture<'static, P::Outcome>> = None;
        // Units that arrived while a handler ran; boxed, as most connections never have any.
        let mut backlog: Option<Box<VecDeque<P::Held>>> = None;
        // A frame taken from the queue but not yet accepted by the wire: a write cancelled by a
        // close keeps it here, so the drain before a goodbye still delivers it.
        let mut unsent: Option<Frame> = None;

        let end = loop {
            // What woke the loop is dealt with first, without waiting; what has to wait comes
            // after, once the event is gone (a local kept across an await is kept in the task).
            let then = {
                let event = std::future::poll_fn(|cx| {
                    if let Poll::Ready(next) = rx.poll_next(cx, |cx| wire.poll_writable(cx)) {
                        return Poll::Ready(Event::Outbound(next));
                    }
                    if let Some(task) = inflight.as_mut() {
                        if let Poll::Ready(outcome) = task.poll_unpin(cx) {
                            return Poll::Ready(Event::Finished(outcome));
                        }
                    }
                    if inflight.is_none() || backlog.as_ref().is_none_or(|b| b.len() < BACKLOG) {
                        if let Poll::Ready(read) = wakes.poll_gated(outbox::READ, cx, |cx| wire.poll_read(cx)) {
                            return Poll::Ready(Event::Read(read));
                        }
                    }
                    wakes
                        .poll_gated(outbox::PING, cx, |_| heart.poll())
                        .map(|()| Event::Beat)
                })
                .await;
                match event {
                    Event::Outbound(Next::Nudged) => Then::Nudged,
                    Event::Outbound(Next::Message(first)) => {
                        // `unsent` is empty here: a batch is only cut short on the way to closing.
                        unsent = Some(first);
                        Then::Write
                    }
                    Event::Finished(outcome) => {
                        inflight = None;
                        proto.finish(outcome);
                        // Units that arrived while it ran, in order.
                        let mut failed = None;
                        while inflight.is_none() && failed.is_none() {
                            let Some(held) = backlog.as_mut().and_then(|b| b.pop_front()) else {
                                break;
                            };
                            match proto.start(held) {
                                Ok(task) => inflight = task,
                                Err(end) => failed = Some(end),
                            }
                        }
                        if let Some(end) = failed {
                            break end;
                        }
                        Then::Nothing
                    }
                    Event::Read(Err(end)) => break end,
                    Event::Read(Ok(Read::Alive)) => {
                        heart.seen(proto.heartbeat());
                        Then::Nothing
                    }
                    Event::Read(Ok(Read::Pinged)) => {
                        heart.seen(proto.heartbeat());
                        Then::Flush
                    }
                    Event::Read(Ok(Read::Unit(unit))) => {
                        heart.seen(proto.heartbeat());
                        match proto.take(unit) {
                            Step::Done => {}
                            Step::Pong => heart.ponged(proto.heartbeat(), &wakes.waker()),
                            Step::End(end) => break end,
                            Step::Run(held) if inflight.is_some() => backlog.get_or_insert_default().push_back(held),
                            Step::Run(held) => match proto.start(held) {
                                Ok(task) => inflight = task,
                                Err(end) => break end,
                            },
                        }
                        Then::Nothing
                    }
                    Event::Beat => match heart.beat(proto.heartbeat(), &wakes.waker()) {
                        Beat::Nothing => Then::Nothing,
                        Beat::Dead => break End::ping_timeout(),
                        Beat::Ping if matches!(proto.heartbeat(), Heartbeat::Periodic { .. }) => {
                            proto.ping();
                            Then::Nothing
                        }
                        Beat::Ping => Then::Ping,
                    },
                }
            };
            match then {
                Then::Nothing => {}
                Then::Nudged => {
                    if let Some(end) = proto.nudged().await {
                        break end;
                    }
                }
                Then::Write => {
                    // While a write is blocked nothing is read and no ping goes out: a peer that
                    // accepts nothing for the whole ping window is dead all the same. The stall
                    // timer is made (boxed, off the task) only when a write has to wait: most
                    // complete at once, and the timer is never registered with the wheel for them.
                    let mut stall: Option<Pin<Box<Sleep>>> = None;
                    let written = std::future::poll_fn(|cx| {
                        if let Poll::Ready(r) = wire.poll_write(cx, &mut unsent, &mut rx, &hub) {
                            return Poll::Ready(r.map(|()| true));
                        }
                        // Taken at the top of the loop, where the close is handled.
                        if wakes.poll_nudged(cx).is_ready() {
                            return Poll::Ready(Ok(true));
                        }
                        let timer =
                            stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(proto.heartbeat().stall_limit())));
                        timer.as_mut().poll(cx).map(|()| Ok(false))
                    })
                    .await;
                    match written {
                        Ok(true) => {}
                        Ok(false) => break End::ping_timeout(),
                        Err(end) => break end,
                    }
                }
                Then::Flush => {
                    // Boxed: rare, and a timer inline would grow every connection's task.
                    match Box::pin(tokio::time::timeout(proto.heartbeat().stall_limit(), wire.flush())).await {
                        Ok(Ok(())) => {}
                        Ok(Err(end)) => break end,
                        Err(_) => break End::ping_timeout(),
                    }
                }
                Then::Ping => {
                    let ping = tokio::time::timeout(proto.heartbeat().timeout(), wire.ping());
                    match Box::pin(ping).await {
                        Ok(Ok(())) => {}
                        Ok(Err(end)) => break end,
                        // The peer accepts nothing, not even a ping.
                        Err(_) => break End::ping_timeout(),
                    }
                }
            }
        };

        // The ending steps run once, in a future of their own (boxed): kept inline, their
        // locals would be room in every connection's task for its whole life.
        let ending = Ending {
            end,
            unsent,
            inflight,
            backlog: backlog.map(|b| *b).unwrap_or_default(),
        };
        Box::pin(ending.run(hub, wire, proto, rx)).await;
    }
}

/// What the loop leaves when it ends.
struct Ending<H, O> {
    end: End,
    unsent: Option<Frame>,
    inflight: Option<BoxFuture<'static, O>>,
    backlog: VecDeque<H>,
}

impl<H, O> Ending<H, O> {
    /// The wire's close and the protocol's way out.
    async fn run<W, P>(self, hub: Hub, wire: W, mut proto: P, mut rx: outbox::Receiver)
    where
        W: Wire,
        P: Protocol<In = W::In, Held = H, Outcome = O>,
    {
        let Self {
            end,
            unsent,
            inflight,
            backlog,
        } = self;
        proto.ending(&end);
        if let Some(frame) = unsent {
            rx.unread(vec![frame]);
        }
        let drain = match &end {
            End::Close(code, _) if proto.drains(*code) => Some(if hub.is_shutting_down() {
                // A shutdown allows its whole deadline for what is queued.
                hub.inner.config.shutdown_timeout
            } else {
                CLOSE_GRACE
            }),
            _ => None,
        };
        wire.close(&hub, &end, rx, drain).await;
        // A task still running when the connection ended is finished first: its replies are
        // dropped, but its side effects (joins, emits to others) are not cut in half.
        if let Some(task) = inflight {
            proto.finish(task.await);
        }
        proto.retire(end, backlog).await;
    }
}

/// What the heartbeat asks for.
enum Beat {
    Nothing,
    Ping,
    Dead,
}

/// The heartbeat's state. It has no timer of its own: the [clock](crate::clock) wakes the
/// connection when it is next due, through the gate of the heartbeat (`outbox::PING`). Its
/// times are milliseconds of that clock, and its settings the protocol's ([`Heartbeat`],
/// given to each call): it is kept in every connection's task.
struct Heart {
    /// When the heartbeat is next looked at.
    due: Millis,
    /// When the peer was last heard from (`WhenIdle`).
    last_seen: Millis,
    /// A ping went out and is not answered yet (`WhenIdle`: since the peer was last heard
    /// from).
    pinged: bool,
}

/// A duration in whole milliseconds, rounded up: one under a millisecond is not made zero.
fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

impl Heart {
    /// Starts the heartbeat; the clock wakes `waker` when it is first due.
    fn new(kind: Heartbeat, waker: &Waker) -> Self {
        let now = clock::now();
        let first = match kind {
            Heartbeat::WhenIdle { .. } => Self::check_every(kind),
            Heartbeat::Periodic { interval, .. } => interval,
        };
        let mut heart = Self {
            due: now,
            last_seen: now,
            pinged: false,
        };
        heart.due_in(now, first, waker);
        heart
    }

    /// Next due `after` from `now`: the clock is asked to wake the connection then (a wake
    /// asked for earlier finds the heartbeat not due yet, and does nothing).
    fn due_in(&mut self, now: Millis, after: Duration, waker: &Waker) {
        self.due = now.saturating_add(millis(after));
        clock::wake_at(self.due, waker);
    }

    fn check_every(kind: Heartbeat) -> Duration {
        match kind {
            Heartbeat::WhenIdle { interval, timeout } => interval.min(timeout).max(Duration::from_millis(10)),
            Heartbeat::Periodic { interval, .. } => interval,
        }
    }

    /// Whether the heartbeat is due (its gate was opened: by the clock, or by another
    /// source's wake).
    fn poll(&mut self) -> Poll<()> {
        if clock::now() >= self.due {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The peer sent something.
    fn seen(&mut self, kind: Heartbeat) {
        if let Heartbeat::WhenIdle { .. } = kind {
            self.last_seen = clock::now();
            self.pinged = false;
        }
    }

    /// The peer answered the protocol's ping.
    fn ponged(&mut self, kind: Heartbeat, waker: &Waker) {
        if let Heartbeat::Periodic { interval, .. } = kind {
            self.pinged = false;
            self.due_in(clock::now(), interval, waker);
        }
    }

    /// The heartbeat is due.
    fn beat(&mut self, kind: Heartbeat, waker: &Waker) -> Beat {
        let now = clock::now();
        match kind {
            Heartbeat::WhenIdle { interval, timeout } => {
                self.due_in(now, Self::check_every(kind), waker);
                let quiet = Duration::from_millis(now.saturating_sub(self.last_seen));
                if quiet >= interval + timeout {
                    Beat::Dead
                } else if quiet >= interval && !self.pinged {
                    self.pinged = true;
                    Beat::Ping
                } else {
                    Beat::Nothing
                }
            }
            Heartbeat::Periodic { timeout, .. } => {
                if self.pinged {
                    return Beat::Dead;
                }
                self.pinged = true;
                self.due_in(now, timeout, waker);
                Beat::Ping
            }
        }
    }
}
