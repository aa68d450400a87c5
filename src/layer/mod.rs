//! The tower [`Layer`] that serves a hub's WebSocket endpoint inside an
//! existing HTTP service.

mod future;
mod serve;
mod service;

pub use future::{ResponseBody, ResponseFuture};
pub use service::RealtimeService;

use std::sync::Arc;

use tower_layer::Layer;

use crate::Hub;

impl Hub {
    /// A layer serving this hub's WebSocket endpoint at `path` (exact match, e.g. `"/ws"`).
    pub fn layer(&self, path: &str) -> RealtimeLayer {
        RealtimeLayer::new(self.clone()).path(path)
    }
}

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
