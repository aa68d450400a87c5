//! tower-realtime under warp 0.4.
//!
//! ```text
//! cargo run --example warp           # ws://127.0.0.1:3003/ws, anonymous
//! curl -X POST localhost:3003/notify -H 'content-type: application/json' -d '{"message":"hi"}'
//! ```
//!
//! warp's own server takes filters, not tower services, so the filters become a tower
//! `Service` with `warp::service`, the hub's layer wraps it, and hyper-util serves the result,
//! upgrades enabled.

use hyper::server::conn::http1;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tower::Layer;
use tower_realtime::{AllowAnonymous, Data, Emitter, Hub, Socket};
use warp::Filter;

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

/// The app's own routes: `GET /hello/{name}`, and `POST /notify`, which emits its JSON body to
/// every connection as a `notification`.
pub fn routes(hub: Hub) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone + Send + Sync {
    let hello = warp::path!("hello" / String)
        .and(warp::get())
        .map(|name: String| format!("hello, {name}\n"));
    let notify = warp::path!("notify")
        .and(warp::post())
        .and(warp::body::json())
        .map(move |body: Value| {
            let delivered = hub.emit("notification", &body);
            warp::reply::json(&json!({ "delivered": delivered }))
        });
    hello.or(notify)
}

/// Serves the routes on `listener`, with the hub's layer on `/ws`.
pub async fn serve(listener: TcpListener, hub: Hub) -> std::io::Result<()> {
    let service = hub.layer("/ws").layer(warp::service(routes(hub.clone())));
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
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3003);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://127.0.0.1:{port} (WebSocket at /ws)");
    serve(listener, hub()).await
}
