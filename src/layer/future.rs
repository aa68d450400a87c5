//! The response future and body of [`RealtimeService`](super::RealtimeService).

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response: the inner service's body, untouched, or a short body of our own
    /// (a handshake rejection, or the empty body of a 101).
    pub struct ResponseBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyProj]
    enum BodyKind<B> {
        Inner { #[pin] body: B },
        Realtime { #[pin] body: Full<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn realtime(body: impl Into<Bytes>) -> Self {
        Self {
            kind: BodyKind::Realtime {
                body: Full::new(body.into()),
            },
        }
    }

    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: BodyKind::Inner { body },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            BodyProj::Inner { body } => body.poll_frame(cx),
            BodyProj::Realtime { body } => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner { body } => body.is_end_stream(),
            BodyKind::Realtime { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner { body } => body.size_hint(),
            BodyKind::Realtime { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// The response future of [`RealtimeService`](super::RealtimeService): the inner
    /// service's future for requests that pass through (not boxed), or the handshake's.
    #[project = KindProj]
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F>,
        body: PhantomData<fn() -> B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Handshake { future: BoxFuture<'static, Response<Bytes>> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
            body: PhantomData,
        }
    }

    /// A transport's answer: a refusal, a 101, or a Socket.IO polling response.
    pub(crate) fn handshake(future: BoxFuture<'static, Response<Bytes>>) -> Self {
        Self {
            kind: Kind::Handshake { future },
            body: PhantomData,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            InnerProj::Inner { future } => future.poll(cx).map(|r| r.map(|res| res.map(ResponseBody::inner))),
            InnerProj::Handshake { future } => {
                (future.as_mut().poll(cx)).map(|res| Ok(res.map(ResponseBody::realtime)))
            }
        }
    }
}
