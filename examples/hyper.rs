//! tower-realtime on plain hyper 1 + hyper-util, without a framework.
//!
//! ```text
//! cargo run --example hyper          # ws://127.0.0.1:3002/ws?token=anything, anonymous
//! ```
//!
//! The app's own service answers every other path; the layer takes `/ws`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, Request, Response};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use serde_json::json;
use tower::ServiceBuilder;
use tower_realtime::{AllowAnonymous, Data, Hub, Socket};

/// The app's own service, untouched by the layer.
async fn app(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from(format!(
        "the app answers {}\n",
        req.uri().path()
    )))))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let hub = Hub::builder()
        .auth(AllowAnonymous::new())
        .on("echo", |socket: Socket, Data(text): Data<String>| async move {
            socket.emit("echo", &json!({ "text": text }));
            "echoed"
        })
        .build();

    let service = ServiceBuilder::new().layer(hub.layer("/ws")).service_fn(app);

    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3002);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://127.0.0.1:{port} (WebSocket at /ws)");
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            // `with_upgrades` is what lets the layer take over the connection after the 101.
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}
