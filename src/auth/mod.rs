//! Where the handshake's token is looked for, and what an [`Authenticator`] returns. The
//! authentication types themselves ([`Authenticator`], [`Identity`], [`AuthRequest`],
//! [`AuthError`], [`AllowAnonymous`](crate::AllowAnonymous), `JwtAuth`) are at the crate root.
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

pub(crate) mod authenticator;
pub(crate) mod identity;
#[cfg(feature = "jwt")]
pub(crate) mod jwt;

pub(crate) use authenticator::Authenticator;
pub(crate) use identity::{AuthError, AuthRequest, Identity};

use std::{future::Future, pin::Pin};

use http::request::Parts;

/// The protocol name a client offers beside `bearer.<token>`, and that the server selects.
pub const SUBPROTOCOL: &str = "realtime";

/// A boxed future, as returned by [`Authenticator::authenticate`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
