//! [`RealtimeService`]: the middleware produced by [`RealtimeLayer`](super::RealtimeLayer).

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;

use super::future::{ResponseBody, ResponseFuture};
use crate::{connection::handshake, hub::dynamic::Lease, Hub};

/// Serves the hub's endpoint; every other request goes to `S` untouched (not boxed), and
/// `poll_ready` is the inner service's.
#[derive(Clone, Debug)]
pub struct RealtimeService<S> {
    inner: S,
    hub: Hub,
    path: Arc<str>,
}

impl<S> RealtimeService<S> {
    pub(crate) fn new(inner: S, hub: Hub, path: Arc<str>) -> Self {
        Self { inner, hub, path }
    }

    /// The namespace a path is for: the layer's path itself is the default namespace, the
    /// path followed by a namespace name (`/ws/chat`) is that namespace (a dynamic one is made
    /// here); anything else, a dynamic namespace past the limit included, is not ours.
    fn namespace_of(&self, path: &str) -> Option<Lease> {
        let rest = path.strip_prefix(&*self.path)?;
        if rest.is_empty() {
            return Some(Lease::fixed(self.hub.inner.default_ns.clone()));
        }
        let found = if self.path.ends_with('/') {
            self.hub.lease_namespace(&format!("/{rest}"))
        } else if rest.starts_with('/') && rest != "/" {
            self.hub.lease_namespace(rest)
        } else {
            return None;
        };
        found
            .inspect_err(|e| tracing::debug!(path, reason = %e, "no namespace for this path"))
            .ok()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RealtimeService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: http_body::Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        #[cfg(feature = "socketio")]
        if let Some(sio) = self.hub.socketio() {
            let path = req.uri().path();
            let prefix = sio.config.path.as_str();
            if path.starts_with(prefix) || Some(path) == prefix.strip_suffix('/') {
                return ResponseFuture::handshake(crate::socketio::handle(self.hub.clone(), req));
            }
        }
        match self.namespace_of(req.uri().path()) {
            Some(ns) => ResponseFuture::handshake(handshake::handshake(self.hub.clone(), ns, req)),
            None => ResponseFuture::inner(self.inner.call(req)),
        }
    }
}
