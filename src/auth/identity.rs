//! Who a connection is ([`Identity`]), what an authenticator sees ([`AuthRequest`]), and why
//! it refuses ([`AuthError`]).

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use http::{request::Parts, HeaderMap};
use serde_json::{Map, Value};

/// Who is on the other end of a connection: a user id, the claims that came with it, and
/// when its credentials expire, if they do.
///
/// An identity with an [expiry](Self::expires_at) ends its connections when it passes (close
/// `4003` for a native connection, a `DISCONNECT` of its namespace for Socket.IO), unless the
/// client sends a new token first (the reserved event `$refresh`, see `docs/protocol.md` and
/// [`Config::token_expiry_warning`](crate::Config::token_expiry_warning)).
#[derive(Clone)]
pub struct Identity {
    user_id: Option<Arc<str>>,
    /// The claims and the expiry, when there are any: one pointer for an identity that has
    /// neither (an anonymous peer, a user with no claims).
    extra: Option<Box<Extra>>,
    claims: OnceLock<Map<String, Value>>,
}

#[derive(Clone, Default)]
struct Extra {
    /// The claims as JSON text: every connection keeps its identity for its whole life, and
    /// most never look at their claims after the handshake, so they keep a few dozen bytes
    /// rather than a map. Parsed into `claims` on first use.
    claims_json: Option<Box<str>>,
    expires_at: Option<SystemTime>,
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
            extra: claims_json.map(|claims_json| {
                Box::new(Extra {
                    claims_json: Some(claims_json),
                    expires_at: None,
                })
            }),
            claims,
        }
    }

    /// The same identity, valid until `at`: its connections are warned before and closed
    /// then, unless the client refreshes its token ([`JwtAuth`](crate::JwtAuth) sets it from
    /// the token's `exp` and its leeway).
    pub fn with_expiry(mut self, at: SystemTime) -> Self {
        self.extra.get_or_insert_with(Box::default).expires_at = Some(at);
        self
    }

    /// When the identity's credentials expire, if they do.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.extra.as_ref().and_then(|extra| extra.expires_at)
    }

    /// An anonymous peer, with no user id and no claims.
    pub fn anonymous() -> Self {
        Self {
            user_id: None,
            extra: None,
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
            (self.extra.as_ref().and_then(|extra| extra.claims_json.as_deref()))
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
            .field("expires_at", &self.expires_at())
            .finish()
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.user_id == other.user_id && self.claims() == other.claims() && self.expires_at() == other.expires_at()
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

/// What an [`Authenticator`](crate::Authenticator) sees: the request's parts and the token found in them.
///
/// Its `Debug` form shows the method, the path, the header names and whether a token and a
/// payload came, never their values: the token, the `Authorization` header, a `bearer.`
/// subprotocol, the query and the Socket.IO `auth` payload may all hold credentials.
pub struct AuthRequest<'a> {
    parts: &'a Parts,
    token: Option<&'a str>,
    payload: Option<&'a Value>,
}

impl fmt::Debug for AuthRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |present: bool| if present { "<redacted>" } else { "<none>" };
        f.debug_struct("AuthRequest")
            .field("method", &self.parts.method)
            .field("path", &self.parts.uri.path())
            .field("headers", &self.parts.headers.keys().collect::<Vec<_>>())
            .field("token", &redacted(self.token.is_some()))
            .field("payload", &redacted(self.payload.is_some()))
            .finish()
    }
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

    /// The token found in the request (see [`auth`](crate::auth) for where it is looked for).
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(identity.expires_at(), None);
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_900_000_000);
        let expiring = identity.clone().with_expiry(at);
        assert_eq!(expiring.expires_at(), Some(at));
        assert_eq!(expiring.claims(), &claims);
        assert_eq!(Identity::anonymous().with_expiry(at).expires_at(), Some(at));
    }

    #[test]
    fn an_identity_without_claims_or_expiry_is_no_larger_than_before() {
        // A user id, one pointer for claims and expiry, the parsed claims' cell.
        assert!(std::mem::size_of::<Identity>() <= 64);
    }
}
