//! The metrics and health server: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::controllers::Shutdown;

/// Whether the operator is ready to serve: set once, when its controllers are running.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct ServerState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// The routes, separate from the listener so tests can call them directly.
pub fn router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(ServerState {
            registry,
            readiness,
        })
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(state): State<ServerState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::upstream::UpstreamMetrics;

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn registry() -> Arc<Registry> {
        let mut registry = Registry::default();
        let upstream = UpstreamMetrics::default();
        upstream.register(&mut registry);
        upstream.observe_request(
            "serval",
            "verify",
            "200".into(),
            std::time::Duration::from_millis(3),
        );
        Arc::new(registry)
    }

    #[tokio::test]
    async fn healthz_is_ok() {
        let router = router(registry(), Readiness::default());
        assert_eq!(
            get(&router, "/healthz").await,
            (StatusCode::OK, "ok".into())
        );
    }

    #[tokio::test]
    async fn readyz_flips_when_ready() {
        let readiness = Readiness::default();
        let router = router(registry(), readiness.clone());
        assert_eq!(
            get(&router, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set_ready();
        assert_eq!(get(&router, "/readyz").await, (StatusCode::OK, "ok".into()));
    }

    #[tokio::test]
    async fn metrics_exposes_the_registry() {
        let (status, body) = get(&router(registry(), Readiness::default()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("# HELP accessplane_upstream_requests Upstream HTTP request"),
            "{body}"
        );
        assert!(
            body.contains("accessplane_upstream_requests_total{"),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}
