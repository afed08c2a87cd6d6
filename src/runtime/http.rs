//! The operator's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.
//!
//! * `GET /metrics` — [`Metrics::encode`], content type [`OPENMETRICS_CONTENT_TYPE`].
//! * `GET /healthz` — 200 `ok` while the process serves (liveness).
//! * `GET /readyz` — 200 `ok` when [`HealthState`] is ready, else 503 with the reason.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::metrics::Metrics;

/// Content type of `/metrics` (OpenMetrics text, which Prometheus negotiates).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Errors of the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// Readiness of the process, shared between the components that decide it and the
/// `/readyz` handler. Cheap to clone; starts not ready with reason `starting`.
#[derive(Clone, Debug)]
pub struct HealthState {
    inner: Arc<RwLock<Readiness>>,
}

#[derive(Debug)]
struct Readiness {
    ready: bool,
    reason: String,
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthState {
    /// Not ready, reason `starting`.
    pub fn new() -> Self {
        let readiness = Readiness {
            ready: false,
            reason: "starting".to_owned(),
        };
        Self {
            inner: Arc::new(RwLock::new(readiness)),
        }
    }

    /// Sets readiness; `reason` says why (shown by `/readyz`, logged when it changes).
    pub fn set_ready(&self, ready: bool, reason: impl Into<String>) {
        let reason = reason.into();
        let mut state = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if state.ready != ready || state.reason != reason {
            tracing::info!(ready, %reason, "readiness changed");
        }
        *state = Readiness { ready, reason };
    }

    /// `Ok(reason)` when ready, `Err(reason)` when not.
    pub fn readiness(&self) -> Result<String, String> {
        let state = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        if state.ready {
            Ok(state.reason.clone())
        } else {
            Err(state.reason.clone())
        }
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: HealthState,
}

/// The router serving the three endpoints (exposed for tests and embedding).
pub fn router(metrics: Metrics, health: HealthState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .route("/readyz", get(readyz_handler))
        .with_state(AppState { metrics, health })
}

/// Binds `addr` and serves until `shutdown` resolves (then finishes in-flight requests).
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: HealthState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    serve_on(listener, metrics, health, shutdown).await
}

/// Like [`serve`] on an already bound listener (e.g. port 0 in tests).
pub async fn serve_on(
    listener: TcpListener,
    metrics: Metrics,
    health: HealthState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    if let Ok(local) = listener.local_addr() {
        tracing::info!(addr = %local, "serving /metrics, /healthz, /readyz");
    }
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(HttpError::Serve)
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    let body = state.metrics.encode();
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response()
}

async fn healthz_handler() -> &'static str {
    "ok"
}

async fn readyz_handler(State(state): State<AppState>) -> Response {
    match state.health.readiness() {
        Ok(_) => (StatusCode::OK, "ok").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::ServiceExt;

    use super::*;

    async fn get_path(app: Router, path: &str) -> (StatusCode, String, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let metrics = Metrics::new();
        metrics.set_leader(true);
        let (status, content_type, body) =
            get_path(router(metrics, HealthState::new()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert!(body.contains("ringmaster_leader 1"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[tokio::test]
    async fn healthz_is_ok_even_when_not_ready() {
        let (status, _, body) =
            get_path(router(Metrics::new(), HealthState::new()), "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }

    #[tokio::test]
    async fn readyz_follows_health_state() {
        let health = HealthState::new();
        let app = router(Metrics::new(), health.clone());
        let (status, _, body) = get_path(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: starting");

        health.set_ready(true, "leading, caches synced");
        let (status, _, _) = get_path(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::OK);

        health.set_ready(false, "lost the lease");
        let (status, _, body) = get_path(app, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("lost the lease"), "{body}");
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let (status, _, _) = get_path(router(Metrics::new(), HealthState::new()), "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn serves_over_tcp_and_stops_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(
            listener,
            Metrics::new(),
            HealthState::new(),
            async move {
                let _ = stopped.await;
            },
        ));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve(addr, Metrics::new(), HealthState::new(), async {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
