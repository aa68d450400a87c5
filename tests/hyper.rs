//! `examples/hyper.rs`, served as it is: the app's own service answers other paths, and `/ws`
//! upgrades under plain hyper 1 + hyper-util.

mod common;

#[allow(dead_code)]
#[path = "../examples/hyper.rs"]
mod hyper_example;

use common::*;
use serde_json::json;

#[tokio::test]
async fn the_hyper_example_serves_the_app_and_the_hub() {
    let hub = hyper_example::hub();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hyper_example::serve(listener, hub.clone()));

    let body = reqwest::get(format!("http://{addr}/ws-admin"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "the app answers /ws-admin\n");

    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let mut c = Client::new(ws);
    assert_eq!(c.call("echo", json!("hi")).await["data"], json!("echoed"));
    assert_eq!(c.expect_event("echo").await, json!({ "text": "hi" }));
    assert_eq!(hub.connection_count(), 1);
}
