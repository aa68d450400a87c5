//! tower-realtime on plain hyper 1 + hyper-util, without a framework.
//!
//! ```text
//! cargo run --example hyper          # ws://127.0.0.1:3002/ws, anonymous
//! ```
//!
//! The app's own service answers every other path; the layer takes `/ws`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, Request, Response};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_realtime::{AllowAnonymous, Data, Hub, Socket};

/// The app's own service, untouched by the layer.
async fn app(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from(format!(
        "the app answers {}\n",
        req.uri().path()
    )))))
}

/// The hub: anonymous connections and one `echo` handler.
pub fn hub() -> Hub {
    Hub::builder()
        .auth(AllowAnonymous::new())
        .on("echo", |socket: Socket, Data(text): Data<String>| async move {
            socket.emit("echo", &json!({ "text": text }));
            "echoed"
        })
        .build()
}

/// Serves the app on `listener`, with the hub's layer on `/ws`.
pub async fn serve(listener: TcpListener, hub: Hub) -> std::io::Result<()> {
    let service = ServiceBuilder::new().layer(hub.layer("/ws")).service_fn(app);
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

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3002);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://127.0.0.1:{port} (WebSocket at /ws)");
    serve(listener, hub()).await
}
