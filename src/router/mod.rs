//! `ringmaster router`: the Redis data path, a RESP2 proxy that routes each command
//! by key through the hash ring and the migrations of the routing table (see
//! `docs/router.md` and `docs/migration.md`).
//!
//! * [`args`] — flags.
//! * [`resp`] — the RESP2 request parser and reply encoder.
//! * [`commands`] — the command table: kinds, arity, key positions.
//! * [`route`] — routing decisions (pure).
//! * [`table`] — the table in effect and the version barrier.
//! * [`source`] — where tables come from (file or ConfigMap).
//! * [`backend`] — pooled, pipelined shard connections with deadlines.
//! * [`context`] — state shared by the sessions.
//! * [`dispatch`] — single-shard commands, dual writes, held writes, transactions.
//! * [`scatter`] — PING, DBSIZE, KEYS, SCAN, INFO, FLUSHDB over every shard.
//! * [`session`] — one client connection.
//! * [`metrics`] — the router's Prometheus series.

pub mod args;
pub mod backend;
pub mod commands;
pub mod context;
pub mod dispatch;
pub mod metrics;
pub mod resp;
pub mod route;
pub mod scatter;
pub mod session;
pub mod source;
pub mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::routing::get;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub use self::args::RouterArgs;
use self::backend::{BackendConfig, Backends};
use self::context::{Context, Settings};
use self::metrics::RouterMetrics;
use self::source::{SourceError, TableSource};
use crate::runtime::http::{self, HealthState};
use crate::runtime::metrics::Metrics;
use crate::runtime::shutdown::{Shutdown, ShutdownError};
use crate::runtime::telemetry::{self, TelemetryError};

/// How long clients get to finish their commands at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Errors that stop the router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// Logging could not be set up.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The async runtime could not start.
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error(transparent)]
    Shutdown(#[from] ShutdownError),
    /// The table source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The HTTP server failed.
    #[error("serving HTTP: {0}")]
    Http(#[source] std::io::Error),
}

/// Runs the router until SIGTERM or SIGINT.
pub fn main(args: RouterArgs) -> anyhow::Result<()> {
    telemetry::init_tracing(&args.log_level, args.log_format.is_json())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RouterError::Runtime)?;
    runtime.block_on(run(args))?;
    Ok(())
}

/// The router's life: listen, follow the routing table, serve clients, drain.
pub async fn run(args: RouterArgs) -> Result<(), RouterError> {
    tracing::info!(?args, "ringmaster router starting");
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signal()?;
    let metrics = Metrics::new();
    let health = HealthState::new();
    let ctx = Arc::new(Context::new(
        Backends::new(backend_config(&args)),
        RouterMetrics::register(&metrics),
        settings(&args),
        health.clone(),
    ));
    let listener = bind(args.listen).await?;
    let http_listener = bind(args.http_addr).await?;

    let source = spawn_source(table_source(&args), &ctx, &shutdown);
    let app = http::router(metrics, health).route("/status", {
        let ctx = Arc::clone(&ctx);
        get(move || status(Arc::clone(&ctx)))
    });
    let http_stop = shutdown.clone().wait_owned();
    let http_server = tokio::spawn(async move {
        axum::serve(http_listener, app)
            .with_graceful_shutdown(http_stop)
            .await
    });
    tracing::info!(listen = %args.listen, http = %args.http_addr, "serving clients");

    accept_clients(&ctx, listener, args.max_clients, &shutdown).await;
    shutdown.trigger();
    let source_result = source.await.unwrap_or(Ok(()));
    match http_server.await {
        Ok(Err(error)) => return Err(RouterError::Http(error)),
        Err(error) => tracing::warn!(%error, "the HTTP server task failed"),
        Ok(Ok(())) => {}
    }
    source_result?;
    tracing::info!("ringmaster router stopped");
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RouterError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RouterError::Listen { addr, source })
}

fn backend_config(args: &RouterArgs) -> BackendConfig {
    BackendConfig {
        username: args.username.clone(),
        password: args.password.clone(),
        timeout: args.backend_timeout,
        connections: args.backend_connections,
    }
}

fn settings(args: &RouterArgs) -> Settings {
    Settings {
        username: args.username.clone(),
        password: args.password.clone(),
        hold_timeout: args.hold_timeout,
        allow_flush: args.allow_flush,
    }
}

/// The source named by the flags (clap requires exactly one).
fn table_source(args: &RouterArgs) -> TableSource {
    match (&args.routing_file, &args.routing_configmap) {
        (Some(path), _) => TableSource::File(path.clone()),
        (None, name) => TableSource::ConfigMap {
            name: name.clone().unwrap_or_default(),
            namespace: args.namespace.clone(),
        },
    }
}

/// Runs the table source; its failure stops the router.
fn spawn_source(
    source: TableSource,
    ctx: &Arc<Context>,
    shutdown: &Shutdown,
) -> tokio::task::JoinHandle<Result<(), SourceError>> {
    let ctx = Arc::clone(ctx);
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let result = source
            .run(|document| ctx.accept_document(document), shutdown.clone())
            .await;
        if let Err(error) = &result {
            tracing::error!(%error, "the routing table source failed; stopping");
            shutdown.trigger();
        }
        result
    })
}

/// `GET /status`: the applied version (the migration barrier) and the table in effect.
async fn status(ctx: Arc<Context>) -> Json<serde_json::Value> {
    let applied = ctx.table.applied_version();
    let installed = ctx.table.installed_version();
    let lease = ctx.lease();
    let table = lease.as_ref().map(|l| l.routing.table());
    Json(serde_json::json!({
        "cluster": table.map(|t| t.cluster.as_str()).unwrap_or_default(),
        "appliedVersion": applied,
        "version": installed,
        "ringVersion": table.and_then(|t| t.ring.as_ref()).map_or(0, |r| r.version),
        "migrations": table
            .map(|t| t.migrations.iter().map(|m| m.name.clone()).collect::<Vec<_>>())
            .unwrap_or_default(),
    }))
}

/// Accepts clients until shutdown, then waits (bounded) for their sessions to end.
async fn accept_clients(
    ctx: &Arc<Context>,
    listener: TcpListener,
    max_clients: u32,
    shutdown: &Shutdown,
) {
    let slots = Arc::new(Semaphore::new(max_clients as usize));
    loop {
        let accepted = tokio::select! {
            () = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a client");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, max_clients, "refusing a client: too many clients");
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = Arc::clone(ctx);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _connected = ClientGauge::new(&ctx.metrics);
            session::serve(Arc::clone(&ctx), stream, shutdown).await;
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("no longer accepting clients; waiting for sessions to finish");
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(max_clients)).await;
    if drained.is_err() {
        tracing::warn!(
            "sessions still running after {}s; stopping anyway",
            DRAIN_TIMEOUT.as_secs()
        );
    }
}

/// Answers a client over the limit the way Redis does, and closes.
async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
    let _ = stream.shutdown().await;
}

/// Counts a connected client in `ringmaster_router_clients` while alive.
struct ClientGauge<'a> {
    metrics: &'a RouterMetrics,
}

impl<'a> ClientGauge<'a> {
    fn new(metrics: &'a RouterMetrics) -> Self {
        metrics.clients_changed(1);
        Self { metrics }
    }
}

impl Drop for ClientGauge<'_> {
    fn drop(&mut self) {
        self.metrics.clients_changed(-1);
    }
}
