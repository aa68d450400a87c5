//! [`JwtAuth`]: JSON Web Tokens on the handshake.

use std::{collections::HashSet, sync::Arc};

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{AuthError, AuthRequest, Authenticator, BoxFuture, Identity};

/// The shortest HS256 secret taken without an error in the log, in bytes.
const MIN_HS256_SECRET: usize = 32;

/// A key that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid JWT key: {0}")]
pub struct JwtError(#[from] jsonwebtoken::errors::Error);

/// Verifies a JWT found in the handshake (see [`extract_token`](crate::auth::extract_token)).
///
/// - The algorithm is fixed here, never read from the token: a token signed with another
///   algorithm (`alg: none` included) is refused.
/// - `exp` is required; `nbf` is checked when present; the leeway is 5 s unless set.
/// - Audience and issuer, when configured, must be present and match.
/// - The user id is the `sub` claim, or the claim named by [`user_claim`](Self::user_claim).
/// - The identity [expires](Identity::expires_at) at `exp` plus the leeway (as long as the
///   token itself is accepted): its
///   connections are warned and then closed unless the client refreshes its token
///   (`$refresh`, see [`Config::token_expiry_warning`](crate::Config::token_expiry_warning)).
///
/// ```
/// use tower_realtime::{Hub, JwtAuth};
///
/// let auth = JwtAuth::hs256(b"a secret of at least 32 bytes, please")
///     .audience("chat")
///     .leeway(std::time::Duration::from_secs(2));
/// let hub = Hub::builder().auth(auth).build();
/// # drop(hub);
/// ```
#[derive(Clone)]
pub struct JwtAuth {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    key: DecodingKey,
    validation: Validation,
    user_claim: String,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("algorithm", &self.inner.validation.algorithms)
            .field("leeway", &self.inner.validation.leeway)
            .field("user_claim", &self.inner.user_claim)
            .finish_non_exhaustive()
    }
}

impl JwtAuth {
    fn with(key: DecodingKey, alg: Algorithm) -> Self {
        let mut validation = Validation::new(alg);
        validation.leeway = 5;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
        Self {
            inner: Arc::new(Inner {
                key,
                validation,
                user_claim: "sub".to_owned(),
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// HMAC with SHA-256 and a shared secret of at least 32 random bytes (RFC 7518, 3.2).
    ///
    /// A shorter secret can be found by trying guesses against one token offline: it is
    /// logged as an error (at `error` level, target `tower_realtime::auth`) when the
    /// authenticator is made, once per call. Use a secret of 32 bytes or more (e.g.
    /// `openssl rand -base64 48`).
    pub fn hs256(secret: impl AsRef<[u8]>) -> Self {
        let secret = secret.as_ref();
        if secret.len() < MIN_HS256_SECRET {
            tracing::error!(
                target: "tower_realtime::auth",
                len = secret.len(),
                min = MIN_HS256_SECRET,
                "JwtAuth::hs256 with a secret shorter than 32 bytes: tokens can be forged by guessing it; use a random secret of at least 32 bytes"
            );
        }
        Self::with(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// HMAC with SHA-384 and a shared secret.
    pub fn hs384(secret: impl AsRef<[u8]>) -> Self {
        Self::with(DecodingKey::from_secret(secret.as_ref()), Algorithm::HS384)
    }

    /// HMAC with SHA-512 and a shared secret.
    pub fn hs512(secret: impl AsRef<[u8]>) -> Self {
        Self::with(DecodingKey::from_secret(secret.as_ref()), Algorithm::HS512)
    }

    /// RSA PKCS#1 v1.5 with SHA-256, from a PEM public key.
    pub fn rs256_pem(public_key_pem: impl AsRef<[u8]>) -> Result<Self, JwtError> {
        Ok(Self::with(
            DecodingKey::from_rsa_pem(public_key_pem.as_ref())?,
            Algorithm::RS256,
        ))
    }

    /// ECDSA P-256 with SHA-256, from a PEM public key.
    pub fn es256_pem(public_key_pem: impl AsRef<[u8]>) -> Result<Self, JwtError> {
        Ok(Self::with(
            DecodingKey::from_ec_pem(public_key_pem.as_ref())?,
            Algorithm::ES256,
        ))
    }

    /// The clock skew allowed on `exp` and `nbf` (default 5 s; whole seconds).
    pub fn leeway(mut self, leeway: std::time::Duration) -> Self {
        self.inner_mut().validation.leeway = leeway.as_secs();
        self
    }

    /// Requires the `aud` claim to be present and to hold `audience`.
    pub fn audience(mut self, audience: &str) -> Self {
        let inner = self.inner_mut();
        inner.validation.set_audience(&[audience]);
        inner.validation.validate_aud = true;
        inner.validation.required_spec_claims.insert("aud".to_owned());
        self
    }

    /// Requires the `iss` claim to be present and equal to `issuer`.
    pub fn issuer(mut self, issuer: &str) -> Self {
        let inner = self.inner_mut();
        inner.validation.set_issuer(&[issuer]);
        inner.validation.required_spec_claims.insert("iss".to_owned());
        self
    }

    /// The claim that holds the user id (default `sub`). A string or an integer.
    pub fn user_claim(mut self, claim: impl Into<String>) -> Self {
        self.inner_mut().user_claim = claim.into();
        self
    }

    /// Verifies a token and returns its identity. This is what the handshake calls.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.inner.key, &self.inner.validation)
            .map_err(|e| AuthError::new(describe(e.kind())))?;
        let claims = data.claims;
        let user = match claims.get(&self.inner.user_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            _ => {
                return Err(AuthError::new(format!(
                    "token has no `{}` claim",
                    self.inner.user_claim
                )))
            }
        };
        let exp = (claims.get("exp")).and_then(|exp| {
            exp.as_u64()
                .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        });
        let identity = Identity::user(user, claims);
        // The token is accepted until `exp` plus the leeway: so is the connection.
        let leeway = self.inner.validation.leeway;
        let at = exp.and_then(|exp| {
            (std::time::SystemTime::UNIX_EPOCH).checked_add(std::time::Duration::from_secs(exp.saturating_add(leeway)))
        });
        Ok(match at {
            Some(at) => identity.with_expiry(at),
            None => identity,
        })
    }
}

/// A short, safe description of why a token was refused (never the token itself).
fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid",
        ErrorKind::InvalidSignature => "invalid token signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "token algorithm not accepted",
        ErrorKind::InvalidAudience => "token audience not accepted",
        ErrorKind::InvalidIssuer => "token issuer not accepted",
        ErrorKind::MissingRequiredClaim(_) => "token misses a required claim",
        ErrorKind::InvalidClaimFormat(_) => "token has a malformed claim",
        _ => "invalid token",
    }
}

impl Authenticator for JwtAuth {
    fn authenticate<'a>(&'a self, req: &'a AuthRequest<'a>) -> BoxFuture<'a, Result<Identity, AuthError>> {
        let result = match req.token() {
            Some(token) => self.verify(token),
            None => Err(AuthError::new("missing token")),
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_expires_at_the_tokens_exp() {
        let secret = b"a secret of at least 32 bytes, please";
        let exp = 4_000_000_000u64;
        let claims = serde_json::json!({ "sub": "42", "exp": exp });
        let header = jsonwebtoken::Header::default();
        let token = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap();
        let at = |secs| std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let identity = JwtAuth::hs256(secret).verify(&token).unwrap();
        assert_eq!(identity.expires_at(), Some(at(exp + 5)), "the default leeway, 5 s");
        let strict = JwtAuth::hs256(secret).leeway(std::time::Duration::ZERO);
        let identity = strict.verify(&token).unwrap();
        assert_eq!(identity.expires_at(), Some(at(exp)));
        assert_eq!(identity.user_id(), Some("42"));
        // An `exp` past what the clock can hold: accepted, with no expiry rather than a panic.
        let far = serde_json::json!({ "sub": "42", "exp": u64::MAX });
        let token = jsonwebtoken::encode(&header, &far, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap();
        let identity = JwtAuth::hs256(secret).verify(&token).unwrap();
        assert_eq!(identity.user_id(), Some("42"));
    }
}
