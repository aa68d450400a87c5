//! The native codec: encoding an event frame and decoding a client frame.
//!
//! ```text
//! cargo bench --features unstable --bench codec
//! ```

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::Serialize;
use serde_json::json;
use tower_realtime::unstable::native;

#[derive(Serialize)]
struct ChatMessage<'a> {
    text: &'a str,
    sender: &'a str,
    timestamp: &'a str,
    room: &'a str,
}

/// A client's `message` request with an ack id, as the chat demo receives it (~80 bytes).
const INBOUND: &str = r#"{"event":"message","data":{"text":"hello, everyone","room":"general"},"id":42}"#;

fn encode(c: &mut Criterion) {
    let typed = ChatMessage {
        text: "hello, everyone",
        sender: "alice",
        timestamp: "2025-01-01T12:00:00.123456789Z",
        room: "general",
    };
    let value = json!({
        "text": "hello, everyone",
        "sender": "alice",
        "timestamp": "2025-01-01T12:00:00.123456789Z",
        "room": "general",
    });
    let len = native::encode_event("message", &typed).unwrap().len();
    let mut group = c.benchmark_group("codec/encode_event");
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function("struct", |b| {
        b.iter(|| native::encode_event(black_box("message"), black_box(&typed)).unwrap())
    });
    group.bench_function("json_value", |b| {
        b.iter(|| native::encode_event(black_box("message"), black_box(&value)).unwrap())
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec/decode");
    group.throughput(Throughput::Bytes(INBOUND.len() as u64));
    group.bench_function("message_with_ack", |b| {
        b.iter(|| native::decode(black_box(INBOUND)).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = encode, decode
}
criterion_main!(benches);
