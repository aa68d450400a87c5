//! Running a hub on a port of its own, apart from the app's API (like NestJS's
//! `@WebSocketGateway(3001)`).

use std::{convert::Infallible, io};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::net::TcpListener;
use tower_layer::Layer;

use crate::Hub;

/// What answers requests that are not for the hub: 404.
#[derive(Clone, Copy, Debug)]
struct NotFound;

impl tower_service::Service<Request<Incoming>> for NotFound {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Incoming>) -> Self::Future {
        let mut res = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *res.status_mut() = StatusCode::NOT_FOUND;
        std::future::ready(Ok(res))
    }
}

impl Hub {
    /// Serves this hub alone on `listener`, at `path` (every other path is 404), until the hub
    /// [shuts down](Hub::shutdown). Each request carries its peer's address as a
    /// [`SocketAddr`](std::net::SocketAddr) extension (the limits per client address read it).
    /// For apps that want the gateway on its own port:
    ///
    /// ```no_run
    /// # async fn f(hub: tower_realtime::Hub) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    /// tokio::spawn(hub.clone().serve(listener, "/ws"));
    /// # Ok(()) }
    /// ```
    pub async fn serve(self, listener: TcpListener, path: &str) -> io::Result<()> {
        let service = self.layer(path).layer(NotFound);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = self.shut_down() => return Ok(()),
            };
            // Each request carries its peer's address (a `SocketAddr` extension), for the
            // limits per client address.
            let service = TowerToHyperService::new(service.clone());
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer);
                hyper::service::Service::call(&service, req)
            });
            tokio::spawn(async move {
                let conn = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "http connection error");
                }
            });
        }
    }
}
