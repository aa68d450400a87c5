//! The tower [`Layer`] that serves a hub's WebSocket endpoint inside an
//! existing HTTP service.

pub mod future;
pub(crate) mod handshake;
mod serve;
mod service;

pub use future::{ResponseBody, ResponseFuture};
pub use service::RealtimeService;

use std::sync::Arc;

use tower_layer::Layer;

use crate::Hub;

/// Serves a [`Hub`] at one path (default `/ws`, exact match) and passes every other request
/// to the inner service untouched.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_realtime::{Hub, RealtimeLayer};
///
/// let hub = Hub::builder().build();
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(RealtimeLayer::new(hub.clone()).path("/ws"));
/// # drop(app);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct RealtimeLayer {
    hub: Hub,
    path: Arc<str>,
}

impl RealtimeLayer {
    /// A layer for `hub` at `/ws`.
    pub fn new(hub: Hub) -> Self {
        Self {
            hub,
            path: Arc::from("/ws"),
        }
    }

    /// Serves the endpoint at `path` instead (exact match: `/ws-admin` is not `/ws`).
    pub fn path(mut self, path: &str) -> Self {
        self.path = Arc::from(path);
        self
    }
}

impl<S> Layer<S> for RealtimeLayer {
    type Service = RealtimeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RealtimeService::new(inner, self.hub.clone(), self.path.clone())
    }
}

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
