//! Fan-out: the cost of one emit to a room of 1, 100 and 10,000 connections — encoding the
//! event once and queueing it for every member. No sockets: the connections are registered
//! with `unstable::attach` (feature `unstable`), and their queues are drained between iterations (outside the
//! measured time) so that they never fill.
//!
//! ```text
//! cargo bench --features unstable --bench fanout
//! ```
//!
//! Throughput is reported in recipients, so `elem/s` is deliveries queued per second and the
//! time per element is the cost per recipient.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde::Serialize;
use tower_realtime::{
    unstable::{self, Receiver},
    Emitter, History, Hub,
};

/// A chat message as the demo sends it: about 100 bytes once encoded.
#[derive(Serialize)]
struct ChatMessage<'a> {
    text: &'a str,
    sender: &'a str,
    timestamp: &'a str,
    room: &'a str,
}

const MESSAGE: ChatMessage<'static> = ChatMessage {
    text: "hello, everyone",
    sender: "alice",
    timestamp: "2025-01-01T12:00:00.123456789Z",
    room: "general",
};

/// A hub with `n` connections (each its own user) in `room`.
fn hub_with_room(n: usize, room: &str) -> (Hub, Vec<Receiver>) {
    hub_with_room_on(Hub::builder().build(), n, room)
}

/// `hub` with `n` connections (each its own user) in `room`.
fn hub_with_room_on(hub: Hub, n: usize, room: &str) -> (Hub, Vec<Receiver>) {
    let mut queues = Vec::with_capacity(n);
    for i in 0..n {
        let (id, rx) = unstable::attach(&hub, &format!("user-{i}"));
        assert!(hub.join(id, room));
        queues.push(rx);
    }
    (hub, queues)
}

/// Empties every queue; returns how many frames were taken.
fn drain(queues: &mut [Receiver]) -> usize {
    let mut n = 0;
    for rx in queues {
        while rx.try_recv().is_ok() {
            n += 1;
        }
    }
    n
}

/// Times `emit` only; the queues are drained after each call, outside the timing.
fn time_emits(iters: u64, queues: &mut [Receiver], mut emit: impl FnMut() -> usize) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let reached = black_box(emit());
        total += start.elapsed();
        let drained = drain(queues);
        debug_assert_eq!(reached, drained);
    }
    total
}

fn room_emit(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout/room");
    for n in [1usize, 100, 10_000] {
        let (hub, mut queues) = hub_with_room(n, "general");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| time_emits(iters, &mut queues, || hub.to_room("general").emit("message", &MESSAGE)))
        });
    }
    group.finish();
}

/// The cost of keeping a history: the same room emit with the room's history off and on (each
/// emit then also takes an offset, is appended to the room's stream — evicting the oldest of
/// its 100 events — and is encoded with its offset).
fn room_emit_with_history(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout/history");
    for n in [1usize, 1_000] {
        for (label, history) in [("off", None), ("on", Some(History::new().rooms("*")))] {
            let builder = Hub::builder();
            let builder = match history {
                Some(h) => builder.history(h),
                None => builder,
            };
            let (hub, mut queues) = hub_with_room_on(builder.build(), n, "general");
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(label, n), |b| {
                b.iter_custom(|iters| {
                    time_emits(iters, &mut queues, || hub.to_room("general").emit("message", &MESSAGE))
                })
            });
        }
    }
    group.finish();
}

/// 10,000 recipients through the other targets: everyone (the whole registry), and two
/// overlapping rooms (several targets: each recipient is de-duplicated through a set).
fn everyone_and_two_rooms(c: &mut Criterion) {
    let n = 10_000usize;
    let hub = Hub::builder().build();
    let mut queues = Vec::with_capacity(n);
    for i in 0..n {
        let (id, rx) = unstable::attach(&hub, &format!("user-{i}"));
        // Two overlapping rooms: everyone in `a`, every other connection also in `b`.
        assert!(hub.join(id, "a"));
        if i % 2 == 0 {
            assert!(hub.join(id, "b"));
        }
        queues.push(rx);
    }
    let mut group = c.benchmark_group("fanout/10000");
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("everyone", |b| {
        b.iter_custom(|iters| time_emits(iters, &mut queues, || hub.emit("message", &MESSAGE)))
    });
    // Several targets: each recipient is de-duplicated through a set.
    group.bench_function("two_overlapping_rooms", |b| {
        b.iter_custom(|iters| {
            time_emits(iters, &mut queues, || {
                hub.to_room("a").to_room("b").emit("message", &MESSAGE)
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = room_emit, room_emit_with_history, everyone_and_two_rooms
}
criterion_main!(benches);
