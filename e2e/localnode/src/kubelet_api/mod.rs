//! The subset of the kubelet API the apiserver uses for `kubectl logs`.
//!
//! HTTPS on `127.0.0.1:<kubelet_port>` with the node's serving certificate; clients
//! must present a certificate signed by `--client-ca` (the apiserver's
//! `--kubelet-client-certificate`). Routes:
//!
//! - `GET /containerLogs/{namespace}/{pod}/{container}` with `follow`, `previous`,
//!   `tailLines` and `limitBytes` (`timestamps` and `sinceSeconds` are accepted and
//!   ignored: the log files carry no timestamps);
//! - `GET /healthz` → `ok`.

pub mod logs;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::Ctx;

/// Time a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Delay between attempts to bind the API port.
const BIND_RETRY: Duration = Duration::from_secs(2);

/// Serves the kubelet API forever. Fails only on unusable TLS material.
pub async fn run(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let args = &ctx.args;
    let tls = tls::server_config(&args.kubelet_cert, &args.kubelet_key, &args.client_ca)
        .context("kubelet API TLS setup")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], args.kubelet_port));
    let listener = bind(addr).await;
    tracing::info!(%addr, "kubelet API listening");
    let state = Arc::new(LogSource {
        state_dir: args.state_dir.clone(),
        client: Some(ctx.client.clone()),
    });
    serve(listener, Arc::new(tls), state).await;
    Ok(())
}

/// Binds the API port, retrying while it is taken.
async fn bind(addr: SocketAddr) -> TcpListener {
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot bind the kubelet API; retrying");
                tokio::time::sleep(BIND_RETRY).await;
            }
        }
    }
}

/// Where logs are found.
pub struct LogSource {
    /// The node's state directory.
    pub state_dir: PathBuf,
    /// Client to resolve pod names to uids when no by-name link exists.
    pub client: Option<kube::Client>,
}

/// The routes of the API.
pub fn router(source: Arc<LogSource>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(source)
}

/// Accepts TLS connections forever and serves the API on each.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, source: Arc<LogSource>) {
    let acceptor = TlsAcceptor::from(tls);
    let app = router(source);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kubelet API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return tracing::debug!(%peer, error = %e, "kubelet API TLS handshake failed");
                }
                Err(_) => return tracing::debug!(%peer, "kubelet API TLS handshake timed out"),
            };
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper_util::service::TowerToHyperService::new(app);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection(io, service).await {
                tracing::debug!(%peer, error = %e, "kubelet API connection ended with an error");
            }
        });
    }
}

/// Query parameters of `containerLogs` (kubelet names).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    follow: Option<String>,
    previous: Option<String>,
    tail_lines: Option<i64>,
    limit_bytes: Option<i64>,
    #[allow(dead_code)] // accepted for compatibility; the files have no timestamps
    timestamps: Option<String>,
    #[allow(dead_code)] // accepted for compatibility; the files have no timestamps
    since_seconds: Option<i64>,
}

/// An error answered as plain text.
struct Reject(StatusCode, String);

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1,
        )
            .into_response()
    }
}

/// `GET /containerLogs/{namespace}/{pod}/{container}`.
async fn container_logs(
    State(source): State<Arc<LogSource>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, Reject> {
    for name in [&namespace, &pod, &container] {
        if !is_safe_name(name) {
            return Err(Reject(
                StatusCode::BAD_REQUEST,
                format!("invalid name {name:?}"),
            ));
        }
    }
    let pod_dir = source.pod_dir(&namespace, &pod).await.ok_or_else(|| {
        Reject(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} not found"),
        )
    })?;
    let container_dir = logs::container_dir(&pod_dir, &container);
    let missing = || {
        Reject(
            StatusCode::NOT_FOUND,
            format!("container {container:?} in pod {namespace}/{pod} not found"),
        )
    };
    let restarts = logs::restarts(&container_dir).map_err(|_| missing())?;
    let previous = flag(q.previous.as_deref());
    let restart = logs::choose(restarts, previous).ok_or_else(|| {
        let which = if previous {
            "previous terminated"
        } else {
            "current"
        };
        Reject(
            StatusCode::NOT_FOUND,
            format!("{which} log of container {container:?} in pod {namespace}/{pod} not found"),
        )
    })?;
    let file = logs::log_file(&container_dir, restart);
    let start = match q.tail_lines.and_then(|n| u64::try_from(n).ok()) {
        Some(n) => tail_offset(&file, n).await.map_err(|_| missing())?,
        None => 0,
    };
    let follow = (flag(q.follow.as_deref()) && !previous).then_some(logs::Follow {
        pod_dir,
        container_dir,
        restart,
    });
    let limit = q.limit_bytes.and_then(|n| u64::try_from(n).ok());
    Ok(stream(logs::Stream {
        file,
        start,
        limit,
        follow,
    }))
}

/// Streams a log as the response body.
fn stream(s: logs::Stream) -> Response {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(logs::pump(s, tx));
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response()
}

/// The start offset of the last `lines` lines of a file.
async fn tail_offset(file: &Path, lines: u64) -> std::io::Result<u64> {
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || logs::tail_start(&mut std::fs::File::open(file)?, lines))
        .await
        .map_err(std::io::Error::other)?
}

impl LogSource {
    /// The pod's directory: by its by-name link, else by its uid from the API.
    async fn pod_dir(&self, namespace: &str, pod: &str) -> Option<PathBuf> {
        if let Some(dir) = logs::pod_dir_by_name(&self.state_dir, namespace, pod) {
            return Some(dir);
        }
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone()?, namespace);
        let uid = api.get_opt(pod).await.ok()??.metadata.uid?;
        let dir = logs::pod_dir(&self.state_dir, &uid);
        dir.is_dir().then_some(dir)
    }
}

/// A kubelet-style boolean query flag.
fn flag(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "True" | "1" | "t" | "T" | "TRUE"))
}

/// Whether a path segment is a plain object name (no traversal).
fn is_safe_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests;
