//! Running a hub on a port of its own, apart from the app's API (like NestJS's
//! `@WebSocketGateway(3001)`).

use std::{convert::Infallible, io, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower_layer::Layer;

use crate::Hub;

/// The first pause after a failed `accept`; each failure in a row doubles it, up to
/// [`MAX_ACCEPT_BACKOFF`].
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause after a failed `accept`.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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

/// Puts the TCP peer address in each request's extensions (a [`SocketAddr`]), where the
/// per-address limits look for it.
#[derive(Clone, Debug)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> tower_service::Service<Request<B>> for WithPeer<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.peer);
        self.inner.call(req)
    }
}

impl Hub {
    /// Serves this hub alone on `listener`, at `path` (every other path is 404), until the hub
    /// [shuts down](Hub::shutdown). For apps that want the gateway on its own port:
    ///
    /// ```no_run
    /// # async fn f(hub: tower_realtime::Hub) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    /// tokio::spawn(hub.clone().serve(listener, "/ws"));
    /// # Ok(()) }
    /// ```
    ///
    /// - Each request carries its TCP peer address (a [`SocketAddr`] in its extensions), the
    ///   client address of the per-address limits
    ///   ([`Config::max_connections_per_address`](crate::Config::max_connections_per_address))
    ///   unless the builder takes it from elsewhere.
    /// - A connection whose request head (request line and headers) is not complete within
    ///   [`Config::header_read_timeout`](crate::Config::header_read_timeout) (default 10 s) is
    ///   closed: a client sending its head slowly, or not at all, does not keep a socket.
    /// - A failed `accept` (out of file descriptors: `EMFILE`, `ENFILE`; a connection reset
    ///   before it was accepted: `ECONNABORTED`; and the like) is logged at `warn` and retried
    ///   after a pause, 10 ms and doubling up to 100 ms while the failures go on: the server
    ///   keeps serving once the cause is gone. It does not return an error for it.
    pub async fn serve(self, listener: TcpListener, path: &str) -> io::Result<()> {
        let service = self.layer(path).layer(NotFound);
        let header_read_timeout = self.inner.config.header_read_timeout;
        let mut backoff = Duration::ZERO;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = self.shut_down() => return Ok(()),
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff = Duration::ZERO;
                    accepted
                }
                Err(e) => {
                    backoff = (backoff * 2).clamp(MIN_ACCEPT_BACKOFF, MAX_ACCEPT_BACKOFF);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accepting a connection failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => continue,
                        _ = self.shut_down() => return Ok(()),
                    }
                }
            };
            let service = TowerToHyperService::new(WithPeer {
                inner: service.clone(),
                peer,
            });
            tokio::spawn(async move {
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "http connection error");
                }
            });
        }
    }
}
