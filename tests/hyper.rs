//! The layer under plain hyper 1 + hyper-util (no framework): pass-through and an upgrade.

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, Request, Response};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use serde_json::json;
use tower::ServiceBuilder;
use tower_realtime::{Data, Hub, JwtAuth, Socket};

async fn app(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from(format!(
        "app:{}",
        req.uri().path()
    )))))
}

#[tokio::test]
async fn works_on_plain_hyper() {
    let hub = Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .on("echo", |s: Socket, Data(v): Data<String>| async move {
            s.emit("echoed", &v);
            json!({ "ok": true })
        })
        .build();
    let service = ServiceBuilder::new().layer(hub.layer("/ws")).service_fn(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });

    let body = reqwest::get(format!("http://{addr}/ws-admin"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "app:/ws-admin");

    let mut c = connect(addr, "alice").await;
    assert_eq!(c.call("echo", json!("hi")).await["data"], json!({ "ok": true }));
    assert_eq!(c.expect_event("echoed").await, json!("hi"));
    assert!(hub.is_online("alice"));
}
