//! [`RealtimeService`]: the middleware produced by [`RealtimeLayer`](super::RealtimeLayer).

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;

use super::{
    future::{ResponseBody, ResponseFuture},
    handshake,
};
use crate::Hub;

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

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RealtimeService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if req.uri().path() == &*self.path {
            ResponseFuture::handshake(handshake::handshake(self.hub.clone(), req))
        } else {
            ResponseFuture::inner(self.inner.call(req))
        }
    }
}
