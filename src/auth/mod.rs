//! Authentication of the handshake: the [`Authenticator`] trait, the [`Identity`] it
//! produces, and where a token is looked for.
//!
//! # Token sources
//!
//! [`extract_token`] looks, in this order, at:
//!
//! 1. the `Authorization: Bearer <token>` header;
//! 2. a WebSocket subprotocol `bearer.<token>`, offered beside the fixed protocol name
//!    [`SUBPROTOCOL`] (`realtime`): the 101 answer selects `realtime`, never the token;
//! 3. the `token` query parameter.
//!
//! The token is never logged nor put in a tracing span.

#[cfg(feature = "jwt")]
mod jwt;

#[cfg(feature = "jwt")]
pub use jwt::{JwtAuth, JwtError};

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
};

use http::{request::Parts, HeaderMap};
use serde_json::{Map, Value};

/// The protocol name a client offers beside `bearer.<token>`, and that the server selects.
pub const SUBPROTOCOL: &str = "realtime";

/// Who is on the other end of a connection: a user id and the claims that came with it.
#[derive(Clone)]
pub struct Identity {
    user_id: Option<Arc<str>>,
    /// The claims as JSON text: every connection keeps its identity for its whole life, and
    /// most never look at their claims after the handshake, so they keep a few dozen bytes
    /// rather than a map. Parsed into `claims` on first use.
    claims_json: Option<Box<str>>,
    claims: OnceLock<Map<String, Value>>,
}

impl Identity {
    /// An authenticated user, with the claims of their token (or any other attributes).
    pub fn user(user_id: impl Into<Arc<str>>, claims: Map<String, Value>) -> Self {
        let (claims_json, claims) = match claims.is_empty() {
            true => (None, OnceLock::new()),
            false => match serde_json::to_string(&claims) {
                Ok(json) => (Some(json.into_boxed_str()), OnceLock::new()),
                // Not expected (a map of JSON values serializes); keep the map itself then.
                Err(_) => (None, OnceLock::from(claims)),
            },
        };
        Self {
            user_id: Some(user_id.into()),
            claims_json,
            claims,
        }
    }

    /// An anonymous peer, with no user id and no claims.
    pub fn anonymous() -> Self {
        Self {
            user_id: None,
            claims_json: None,
            claims: OnceLock::new(),
        }
    }

    /// The user id, or `None` for an anonymous peer.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    pub(crate) fn user_key(&self) -> Option<&Arc<str>> {
        self.user_id.as_ref()
    }

    /// All the claims.
    pub fn claims(&self) -> &Map<String, Value> {
        self.claims.get_or_init(|| {
            (self.claims_json.as_deref())
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default()
        })
    }

    /// One claim by name.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims().get(name)
    }

    /// Whether the claim `name` is the string `value`, or an array holding it
    /// (handy for `role` and `roles` claims).
    pub fn has_claim_value(&self, name: &str, value: &str) -> bool {
        match self.claims().get(name) {
            Some(Value::String(s)) => s == value,
            Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(value)),
            _ => false,
        }
    }
}

impl fmt::Debug for Identity {
    // Claims may hold personal data: the debug form shows the user id and the claim names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user_id", &self.user_id)
            .field("claims", &self.claims().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.user_id == other.user_id && self.claims() == other.claims()
    }
}

/// Why a handshake was not authenticated. Answered with HTTP 401 and `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    message: String,
}

impl AuthError {
    /// A rejection with the message the client gets.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message the client gets.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What an [`Authenticator`] sees: the request's parts and the token found in them.
#[derive(Debug)]
pub struct AuthRequest<'a> {
    parts: &'a Parts,
    token: Option<&'a str>,
    payload: Option<&'a Value>,
}

impl<'a> AuthRequest<'a> {
    pub(crate) fn new(parts: &'a Parts, token: Option<&'a str>) -> Self {
        Self {
            parts,
            token,
            payload: None,
        }
    }

    /// With the `auth` payload of a Socket.IO CONNECT.
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    pub(crate) fn with_payload(mut self, payload: Option<&'a Value>) -> Self {
        self.payload = payload;
        self
    }

    /// The `auth` payload a Socket.IO client sent with its CONNECT (`io(url, { auth })`);
    /// `None` for the native protocol. Its `token` field, when a string, is [`token`](Self::token).
    pub fn payload(&self) -> Option<&'a Value> {
        self.payload
    }

    /// The token found in the request (see the [module docs](self) for where it is looked for).
    pub fn token(&self) -> Option<&'a str> {
        self.token
    }

    /// The request's method, URI, headers and extensions.
    ///
    /// For a Socket.IO CONNECT, these are the Engine.IO handshake's method, URI and headers,
    /// copied when the session started; its extensions are not kept (they may hold on to the
    /// server's read buffer, 16 KiB for every session, for as long as the session lives).
    pub fn parts(&self) -> &'a Parts {
        self.parts
    }

    /// The request's headers.
    pub fn headers(&self) -> &'a HeaderMap {
        &self.parts.headers
    }
}

/// A boxed future, as returned by [`Authenticator::authenticate`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Decides who a handshake belongs to.
///
/// Implemented by [`JwtAuth`], by [`AllowAnonymous`], and by any
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

/// Where a token was found; see [`extract_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    AuthorizationHeader,
    /// The subprotocol `bearer.<token>`.
    Subprotocol,
    /// The `token` query parameter.
    QueryParameter,
}

/// Finds the token of a handshake, in the documented order (see the [module docs](self)).
///
/// Returns the token and where it came from. A query-parameter token is percent-decoded.
pub fn extract_token(parts: &Parts) -> Option<(String, TokenSource)> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        if let Ok(value) = value.to_str() {
            let value = value.trim();
            if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") {
                let token = value[7..].trim();
                if !token.is_empty() {
                    return Some((token.to_owned(), TokenSource::AuthorizationHeader));
                }
            }
        }
    }
    for value in parts.headers.get_all(http::header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        for proto in value.split(',') {
            if let Some(token) = proto.trim().strip_prefix("bearer.") {
                if !token.is_empty() {
                    return Some((token.to_owned(), TokenSource::Subprotocol));
                }
            }
        }
    }
    let query = parts.uri.query()?;
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        let token = crate::util::percent_decode(value)?;
        (!token.is_empty()).then_some((token, TokenSource::QueryParameter))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn claims_are_kept_as_given() {
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "sub": "42", "exp": 1_900_000_000u64, "roles": ["admin", "user"], "ratio": 0.5, "nested": {"a": [1, null]}
        }))
        .unwrap();
        let identity = Identity::user("42", claims.clone());
        assert_eq!(identity.claims(), &claims);
        assert_eq!(identity.claim("ratio"), Some(&serde_json::json!(0.5)));
        assert!(identity.has_claim_value("roles", "admin"));
        assert_eq!(identity.clone(), identity);
        assert_ne!(identity, Identity::user("42", Map::new()));
        assert!(Identity::anonymous().claims().is_empty());
    }

    #[test]
    fn header_comes_first() {
        let p = parts(
            http::Request::get("/ws?token=q")
                .header("authorization", "Bearer h")
                .header("sec-websocket-protocol", "realtime, bearer.s"),
        );
        assert_eq!(extract_token(&p), Some(("h".into(), TokenSource::AuthorizationHeader)));
    }

    #[test]
    fn subprotocol_before_query() {
        let p = parts(http::Request::get("/ws?token=q").header("sec-websocket-protocol", "realtime, bearer.s"));
        assert_eq!(extract_token(&p), Some(("s".into(), TokenSource::Subprotocol)));
    }

    #[test]
    fn query_is_decoded() {
        let p = parts(http::Request::get("/ws?a=1&token=a%2Eb"));
        assert_eq!(extract_token(&p), Some(("a.b".into(), TokenSource::QueryParameter)));
        let p = parts(http::Request::get("/ws?token=%zz"));
        assert_eq!(extract_token(&p), None);
        let p = parts(http::Request::get("/ws?token=%4"));
        assert_eq!(extract_token(&p), None, "a malformed escape is no token");
    }

    #[test]
    fn none_without_token() {
        let p = parts(http::Request::get("/ws").header("authorization", "Basic abc"));
        assert_eq!(extract_token(&p), None);
    }
}
