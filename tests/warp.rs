//! `examples/warp.rs`, served as it is: warp filters turned into a tower service, the hub's
//! layer on `/ws`, and a warp route that emits through the hub.

mod common;

#[allow(dead_code)]
#[path = "../examples/warp.rs"]
mod warp_example;

use common::*;
use serde_json::json;

#[tokio::test]
async fn the_warp_example_serves_its_routes_and_the_hub() {
    let hub = warp_example::hub();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp_example::serve(listener, hub.clone()));

    let res = reqwest::get(format!("http://{addr}/hello/warp")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "hello, warp\n");
    let res = reqwest::get(format!("http://{addr}/nowhere")).await.unwrap();
    assert_eq!(res.status(), 404, "warp's own rejection for an unknown path");

    // A plain GET on `/ws` is the layer's, not warp's: a malformed handshake.
    let res = reqwest::get(format!("http://{addr}/ws")).await.unwrap();
    assert_eq!(res.status(), 400);

    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let mut c = Client::new(ws);
    assert_eq!(c.call("echo", json!("hi")).await["data"], json!("echoed"));
    assert_eq!(c.expect_event("echo").await, json!({ "text": "hi" }));
    assert_eq!(hub.connection_count(), 1);

    // HTTP → realtime: a warp route emits through the hub.
    let res = post_json(addr, "/notify", json!({ "message": "from warp" })).await;
    assert_eq!(res, json!({ "delivered": 1 }));
    assert_eq!(c.expect_event("notification").await, json!({ "message": "from warp" }));
}
