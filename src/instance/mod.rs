//! `ringmaster instance`: the in-pod agent that runs one database server.
//!
//! It is PID 1 of the database container (the model is CloudNativePG's
//! instance manager):
//!
//! 1. reads its settings from the environment the operator sets
//!    ([`config`], flags in [`args`] override it);
//! 2. initialises the data directory on first start, crash-safely
//!    ([`init`], [`datadir`]): `initdb` for PostgreSQL, a working directory for
//!    Redis; every start re-renders the server configuration;
//! 3. supervises the server as a child ([`supervisor`]), restarting it with
//!    back-off, reaping every child as PID 1 must ([`reaper`]), and stopping it
//!    cleanly on SIGTERM/SIGINT ([`signals`]);
//! 4. serves `/healthz`, `/readyz`, `/startupz` and the authenticated `/status`
//!    on the agent port ([`http`], [`status`]).
//!
//! What differs between PostgreSQL and Redis lives in [`engine`].

pub mod args;
pub mod config;
pub mod datadir;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod http;
pub mod init;
pub mod reaper;
pub mod secret;
pub mod signals;
pub mod status;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use self::args::InstanceArgs;
use self::config::{Config, ProcessEnv};
use self::engine::Engine;
use self::reaper::Reaper;
use self::status::Shared;
use self::supervisor::{Outcome, Supervisor};
use crate::runtime::telemetry;

/// How long the HTTP server may take to finish its requests at exit.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// Runs the agent until it is asked to stop and its server has stopped.
pub fn main(args: InstanceArgs) -> anyhow::Result<()> {
    let config = Arc::new(Config::resolve(&args, &ProcessEnv)?);
    telemetry::init_tracing(&config.log_level, config.log_format.is_json())?;
    // One thread: children are spawned from the main thread, so their
    // parent-death signal fires only when the agent itself dies.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(run(config))?;
    match outcome {
        Outcome::Stopped { forced: true, .. } => tracing::warn!("{outcome}; exiting"),
        _ => tracing::info!("{outcome}; exiting"),
    }
    Ok(())
}

/// The agent's life: listen, initialise, supervise, stop.
async fn run(config: Arc<Config>) -> anyhow::Result<Outcome> {
    tracing::info!(
        engine = %config.engine,
        role = config.role.as_str(),
        pod = %config.pod_name,
        bind = %config.bind,
        db_port = config.db_port,
        agent_port = config.agent_port,
        data_dir = %config.data_dir.display(),
        pid = std::process::id(),
        "ringmaster instance agent starting"
    );
    if config.role == config::Role::Replica {
        tracing::warn!(
            "replication is not implemented yet: the replica runs as a standalone server"
        );
    }
    let reaper = Reaper::start()?;
    let shutdown = CancellationToken::new();
    signals::forward(shutdown.clone())?;
    let engine = Arc::new(Engine::new(Arc::clone(&config))?);
    let shared = Arc::new(Shared::new(Arc::clone(&config), engine));

    let addr = (config.bind, config.agent_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {}:{}", addr.0, addr.1))?;
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(http::serve(
        listener,
        Arc::clone(&shared),
        http_stop.clone(),
    ));

    let result = supervise(&shared, reaper, shutdown).await;
    http_stop.cancel();
    match tokio::time::timeout(HTTP_DRAIN, http).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the HTTP server failed"),
        Err(_) => tracing::warn!("the HTTP server did not finish in time"),
        _ => {}
    }
    result
}

/// Initialises the data directory, then supervises the server.
async fn supervise(
    shared: &Arc<Shared>,
    reaper: Arc<Reaper>,
    shutdown: CancellationToken,
) -> anyhow::Result<Outcome> {
    init::prepare(shared, &reaper)
        .await
        .context("initialising the data directory")?;
    let outcome = Supervisor::new(Arc::clone(shared), reaper, shutdown)
        .run()
        .await
        .context("supervising the server")?;
    Ok(outcome)
}
