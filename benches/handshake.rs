//! The handshake: header checks and token extraction, without I/O, and a complete upgrade
//! with an HS256 token over an in-memory stream (hyper server, tungstenite client).
//!
//! ```text
//! cargo bench --bench handshake
//! ```
//!
//! - `checks/all_pass_then_500`: a valid upgrade request without hyper's `OnUpgrade`
//!   extension: it goes through every header check (method, `Connection`, `Upgrade`,
//!   version, key, `Origin`) and is then answered 500. This is the parsing and validation.
//! - `checks/rejected_400`: refused at the first header check.
//! - `checks/other_path`: a request for another path, passed to the inner service (the
//!   layer's cost on the app's own traffic).
//! - `extract_token/*`: finding the token in each of its three places.
//! - `upgrade_in_memory/hs256`: one whole handshake — HTTP parsing by hyper, checks, JWT
//!   verification, the 101, the connection task — over `tokio::io::duplex`, one at a time.

use std::{
    convert::Infallible,
    hint::black_box,
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower::{Layer, ServiceExt};
use tower_realtime::{auth::extract_token, Hub, JwtAuth};

const SECRET: &str = "tower-realtime-demo-secret-change-me-please";

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &Header::default(),
        &json!({ "sub": user, "exp": exp }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn upgrade_request(path: &str) -> Request<String> {
    Request::get(path)
        .header("host", "127.0.0.1:3000")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("origin", "http://127.0.0.1:3000")
        .header("user-agent", "bench")
        .body(String::new())
        .unwrap()
}

fn hub() -> Hub {
    Hub::builder()
        .auth(JwtAuth::hs256(SECRET))
        .configure(|c| {
            // One user opens every connection here: lift the per-user caps.
            c.max_connections_per_user = 1_000_000;
            c.connect_rate_per_user = None;
        })
        .build()
}

fn checks(c: &mut Criterion) {
    let hub = hub();
    let inner = tower::service_fn(|_req: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    let svc = hub.layer("/ws").layer(inner);
    let path = format!("/ws?token={}", token("alice"));

    let mut group = c.benchmark_group("handshake/checks");
    let status = svc
        .clone()
        .oneshot(upgrade_request(&path))
        .now_or_never()
        .unwrap()
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    group.bench_function("all_pass_then_500", |b| {
        b.iter_batched(
            || upgrade_request(&path),
            |req| svc.clone().oneshot(req).now_or_never().unwrap().unwrap(),
            BatchSize::SmallInput,
        )
    });
    let bad = || Request::get("/ws").header("host", "x").body(String::new()).unwrap();
    let status = svc.clone().oneshot(bad()).now_or_never().unwrap().unwrap().status();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    group.bench_function("rejected_400", |b| {
        b.iter_batched(
            bad,
            |req| svc.clone().oneshot(req).now_or_never().unwrap().unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("other_path", |b| {
        b.iter_batched(
            || upgrade_request("/api/posts"),
            |req| svc.clone().oneshot(req).now_or_never().unwrap().unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn tokens(c: &mut Criterion) {
    let token = token("alice");
    let parts = |req: http::request::Builder| req.body(()).unwrap().into_parts().0;
    let header = parts(Request::get("/ws").header("authorization", format!("Bearer {token}")));
    let subprotocol = parts(Request::get("/ws").header("sec-websocket-protocol", format!("realtime, bearer.{token}")));
    let query = parts(Request::get(format!("/ws?v=1&token={token}")));
    let mut group = c.benchmark_group("handshake/extract_token");
    for (name, parts) in [("header", &header), ("subprotocol", &subprotocol), ("query", &query)] {
        assert_eq!(extract_token(parts).unwrap().0, token);
        group.bench_function(name, |b| b.iter(|| extract_token(black_box(parts))));
    }
    group.finish();
}

fn upgrade_in_memory(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hub = hub();
    let app = tower::service_fn(|_req: Request<hyper::body::Incoming>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    });
    let svc = hub.layer("/ws").layer(app);
    let url = format!("ws://127.0.0.1:3000/ws?token={}", token("alice"));

    let one = || {
        let svc = TowerToHyperService::new(svc.clone());
        let req = url.as_str().into_client_request().unwrap();
        async move {
            let (client, server) = tokio::io::duplex(16 * 1024);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(server), svc)
                    .with_upgrades()
                    .await;
            });
            let (ws, res) = tokio_tungstenite::client_async(req, client).await.unwrap();
            assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
            drop(ws);
        }
    };

    let mut group = c.benchmark_group("handshake/upgrade_in_memory");
    group.bench_function("hs256", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    one().await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = checks, tokens, upgrade_in_memory
}
criterion_main!(benches);
