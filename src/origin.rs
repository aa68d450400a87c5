//! Which browser origins may connect: one policy for every transport, set on the hub's
//! builder ([`allow_origin`](crate::HubBuilder::allow_origin),
//! [`allow_any_origin`](crate::HubBuilder::allow_any_origin)). The native handshake refuses a
//! disallowed origin with `403`; Socket.IO's endpoint with its `Forbidden` error, and it sends
//! CORS headers only to allowed origins.

/// Which `Origin` headers a handshake may carry.
#[derive(Debug, Clone)]
pub(crate) enum OriginPolicy {
    /// No `Origin`, the request's own host, or one of these exact origins.
    SameHostOr(Vec<String>),
    /// Anything.
    Any,
}

impl Default for OriginPolicy {
    fn default() -> Self {
        Self::SameHostOr(Vec::new())
    }
}

impl OriginPolicy {
    pub(crate) fn allow(&mut self, origin: String) {
        match self {
            Self::SameHostOr(list) => list.push(origin.trim_end_matches('/').to_owned()),
            Self::Any => {}
        }
    }

    /// The CORS headers for a request from `origin`, which the policy permits: the origin
    /// itself, or `*` when any origin is allowed and no credentials are.
    #[cfg_attr(not(feature = "socketio"), allow(dead_code))]
    pub(crate) fn cors_headers(&self, origin: Option<&str>, credentials: bool, headers: &mut http::HeaderMap) {
        use http::{header, HeaderValue};
        let Some(origin) = origin else { return };
        let allow = match (self, credentials) {
            (Self::Any, false) => HeaderValue::from_static("*"),
            _ => match HeaderValue::from_str(origin) {
                Ok(v) => v,
                Err(_) => return,
            },
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        if credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// Whether a request with this `Origin` (and `Host`) may upgrade.
    pub(crate) fn permits(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        match self {
            Self::Any => true,
            Self::SameHostOr(list) => {
                if list.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                    return true;
                }
                // The origin's authority (after the scheme) must be the request's Host.
                let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
                match host {
                    Some(host) => !authority.is_empty() && authority.eq_ignore_ascii_case(host),
                    None => false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OriginPolicy;

    #[test]
    fn same_host_by_default() {
        let p = OriginPolicy::default();
        assert!(p.permits(None, Some("a:1")));
        assert!(p.permits(Some("http://a:1"), Some("a:1")));
        assert!(!p.permits(Some("http://evil:1"), Some("a:1")));
        assert!(!p.permits(Some("null"), Some("a:1")));
        assert!(!p.permits(Some("http://a:1"), None));
    }

    #[test]
    fn list_and_any() {
        let mut p = OriginPolicy::default();
        p.allow("https://app.example/".into());
        assert!(p.permits(Some("https://app.example"), Some("api.example")));
        assert!(!p.permits(Some("https://other.example"), Some("api.example")));
        assert!(OriginPolicy::Any.permits(Some("http://whatever"), None));
    }
}
