//! permessage-deflate of one outgoing message, as the hub does it (each message compressed on
//! its own, no context kept, so one copy serves every recipient), and inflating it back: the
//! time per message and, printed once per case, the bytes saved, at levels 1, 2 and 6.
//!
//! ```text
//! cargo bench --features unstable --bench compression
//! ```

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::json;
use tower_realtime::unstable::{deflate, native};

/// The messages measured: a short chat line (under the default threshold of 256 bytes, which
/// the hub sends as it is), a paragraph, and a list of 40 records.
fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    let line = json!({
        "text": "hello, everyone",
        "sender": "alice",
        "timestamp": "2025-01-01T12:00:00.123456789Z",
        "room": "general",
    });
    let paragraph = json!({
        "text": "The deploy went out at noon and the error rate stayed flat for the first hour; \
                 after that the queue in the billing worker started to grow, and by two it was \
                 holding about four thousand jobs. We rolled the worker back at half past two, \
                 the queue drained within ten minutes, and nothing was lost. The cause was a \
                 retry loop that did not back off when the payment provider answered slowly.",
        "sender": "alice",
        "timestamp": "2025-01-01T12:00:00.123456789Z",
        "room": "general",
    });
    let records: Vec<_> = (0..40)
        .map(|i| {
            json!({
                "id": 1000 + i,
                "user": format!("user-{i}"),
                "status": if i % 3 == 0 { "away" } else { "online" },
                "joined": format!("2025-01-01T12:{:02}:00Z", i % 60),
            })
        })
        .collect();
    let event = |data: &serde_json::Value| {
        native::encode_event("message", data)
            .unwrap()
            .as_str()
            .as_bytes()
            .to_vec()
    };
    vec![
        ("chat line", event(&line)),
        ("paragraph", event(&paragraph)),
        ("40 records", event(&json!(records))),
    ]
}

const LEVELS: [u8; 3] = [1, 2, 6];
const WINDOW_BITS: u8 = 15;

fn compress(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate/compress");
    for (name, payload) in payloads() {
        group.throughput(Throughput::Bytes(payload.len() as u64));
        for level in LEVELS {
            let compressed = deflate::compress(&payload, level, WINDOW_BITS);
            let out = compressed.as_ref().map_or(payload.len(), Vec::len);
            eprintln!(
                "{name} ({} bytes), level {level}: {out} bytes out, {:.0}% saved",
                payload.len(),
                100.0 * (1.0 - out as f64 / payload.len() as f64)
            );
            let id = BenchmarkId::new(name, format!("level {level}"));
            group.bench_with_input(id, &payload, |b, p| {
                b.iter(|| deflate::compress(black_box(p), level, WINDOW_BITS))
            });
        }
    }
    group.finish();
}

fn inflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate/inflate");
    for (name, payload) in payloads() {
        let Some(compressed) = deflate::compress(&payload, 1, WINDOW_BITS) else {
            continue;
        };
        assert_eq!(
            deflate::inflate(&compressed, WINDOW_BITS, 1 << 20).as_deref(),
            Some(&payload[..])
        );
        group.throughput(Throughput::Bytes(payload.len() as u64));
        group.bench_with_input(BenchmarkId::new(name, "level 1"), &compressed, |b, z| {
            b.iter(|| deflate::inflate(black_box(z), WINDOW_BITS, 1 << 20))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = compress, inflate
}
criterion_main!(benches);
