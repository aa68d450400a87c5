//! Feature `metrics`: the hub's counters reach the `metrics` facade, and the demo renders them
//! at `GET /metrics` in Prometheus text format.
#![cfg(feature = "metrics")]

mod common;

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

use std::net::SocketAddr;

use axum::Router;
use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn scrape(addr: SocketAddr) -> String {
    let res = reqwest::get(format!("http://{addr}/metrics")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    res.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no `{series}` in:\n{text}"))
}

// One test in this binary: the recorder is process-wide.
#[tokio::test]
async fn counters_move_when_a_client_connects_and_sends() {
    // The recorder first, then the hub: the hub registers its series with it when built.
    let metrics = chat::with_metrics(Router::new());
    let (app, hub) = chat::app(SECRET.to_owned(), None);
    let addr = serve(metrics.merge(app)).await;

    // The first scrape, before any connection: every series of the crate docs' table (but the
    // histogram, labelled by event) is there, at zero.
    let text = scrape(addr).await;
    for series in [
        "realtime_connections",
        "realtime_connections_total",
        "realtime_messages_in_total",
        "realtime_messages_out_total",
        "realtime_bytes_out_total",
        "realtime_dropped_total",
        "realtime_slow_consumer_closes_total",
        "realtime_recovered_total",
        "realtime_not_recovered_total",
        "realtime_history_evicted_total",
        "realtime_volatile_dropped_total",
        "realtime_coalesced_replaced_total",
    ] {
        assert_eq!(value(&text, series), 0.0, "{series} before any connection");
    }
    for cause in ["bad_request", "origin", "auth", "limit", "shutting_down"] {
        let series = format!(r#"realtime_handshake_rejections_total{{cause="{cause}"}}"#);
        assert_eq!(value(&text, &series), 0.0, "{series} before any connection");
    }

    // A refused handshake: no token.
    let req = format!("ws://{addr}/ws").into_client_request().unwrap();
    assert_eq!(handshake_status(req).await.0, 401);

    let mut alice = connect(addr, "alice").await;
    alice.expect_event("onlineUsers").await;
    alice.call("joinRoom", json!("general")).await;
    alice
        .call("message", json!({ "text": "hello", "room": "general" }))
        .await;
    alice.expect_event("message").await;

    let text = scrape(addr).await;
    let counters = hub.counters();
    assert_eq!(value(&text, "realtime_connections"), 1.0);
    assert_eq!(value(&text, "realtime_connections_total"), 1.0);
    assert_eq!(value(&text, "realtime_messages_in_total"), 2.0, "joinRoom and message");
    assert_eq!(value(&text, "realtime_messages_in_total"), counters.messages_in as f64);
    // onlineUsers, presence and onlineUsers to everyone, then the room's message.
    assert!(value(&text, "realtime_messages_out_total") >= 3.0);
    assert_eq!(
        value(&text, "realtime_messages_out_total"),
        counters.messages_out as f64
    );
    assert!(value(&text, "realtime_bytes_out_total") > 0.0);
    assert_eq!(
        value(&text, r#"realtime_handshake_rejections_total{cause="auth"}"#),
        1.0
    );
    for event in ["joinRoom", "message"] {
        let count = value(
            &text,
            &format!(r#"realtime_handler_duration_seconds_count{{event="{event}"}}"#),
        );
        assert_eq!(count, 1.0, "one {event} handled");
    }
    assert!(value(&text, r#"realtime_handler_duration_seconds_sum{event="joinRoom"}"#) >= 0.0);

    alice.close().await;
    assert!(eventually(|| hub.connection_count() == 0).await);
    let text = scrape(addr).await;
    assert_eq!(
        value(&text, "realtime_connections"),
        0.0,
        "the gauge goes down on disconnect"
    );
    assert_eq!(value(&text, "realtime_connections_total"), 1.0);
}
