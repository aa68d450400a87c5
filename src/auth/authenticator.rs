//! The [`Authenticator`] trait, and [`AllowAnonymous`].

use std::future::Future;

use super::{AuthError, AuthRequest, BoxFuture, Identity};

/// Decides who a handshake belongs to.
///
/// Implemented by [`JwtAuth`](crate::JwtAuth) (feature `jwt`), by [`AllowAnonymous`], and by any
/// `Fn(&AuthRequest) -> impl Future<Output = Result<Identity, AuthError>>` closure:
///
/// ```
/// use tower_realtime::{AuthError, AuthRequest, Identity, Hub};
///
/// let hub = Hub::builder()
///     .auth(|req: &AuthRequest<'_>| {
///         let ok = req.token() == Some("let-me-in");
///         async move {
///             if ok { Ok(Identity::user("42", Default::default())) }
///             else { Err(AuthError::new("bad token")) }
///         }
///     })
///     .build();
/// # drop(hub);
/// ```
pub trait Authenticator: Send + Sync + 'static {
    /// Returns the identity of the request, or the reason it is refused.
    fn authenticate<'a>(&'a self, req: &'a AuthRequest<'a>) -> BoxFuture<'a, Result<Identity, AuthError>>;
}

impl<F, Fut> Authenticator for F
where
    F: Fn(&AuthRequest<'_>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Identity, AuthError>> + Send + 'static,
{
    fn authenticate<'a>(&'a self, req: &'a AuthRequest<'a>) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(self(req))
    }
}

/// Lets every connection in: with a token, it is still checked by the inner authenticator;
/// without one, the peer is [anonymous](Identity::anonymous). Anonymous access is always opt-in.
#[derive(Debug, Clone, Default)]
pub struct AllowAnonymous<A = ()> {
    inner: A,
}

impl AllowAnonymous {
    /// Everyone is anonymous; tokens are ignored.
    pub fn new() -> Self {
        Self { inner: () }
    }
}

impl<A: Authenticator> AllowAnonymous<A> {
    /// A request with a token goes through `inner`; one without a token is anonymous.
    pub fn or(inner: A) -> Self {
        Self { inner }
    }
}

impl Authenticator for AllowAnonymous<()> {
    fn authenticate<'a>(&'a self, _req: &'a AuthRequest<'a>) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(std::future::ready(Ok(Identity::anonymous())))
    }
}

impl<A: Authenticator> Authenticator for AllowAnonymous<A> {
    fn authenticate<'a>(&'a self, req: &'a AuthRequest<'a>) -> BoxFuture<'a, Result<Identity, AuthError>> {
        if req.token().is_some() {
            self.inner.authenticate(req)
        } else {
            Box::pin(std::future::ready(Ok(Identity::anonymous())))
        }
    }
}
