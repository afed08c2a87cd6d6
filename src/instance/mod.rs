//! `ringmaster instance`: the in-pod agent that runs one database server.
//!
//! It is PID 1 of the database container (the model is CloudNativePG's
//! instance manager):
//!
//! 1. reads its settings from the environment the operator sets
//!    ([`config`], flags in [`args`] override it);
//! 2. resolves the role it converges to: the operator's last `POST /role`
//!    command persisted in the data directory, else the environment ([`role`]);
//! 3. converges the server to it ([`converge`]): initialises the data directory
//!    crash-safely ([`init`], [`datadir`]) — `initdb` or a clone of the upstream
//!    for PostgreSQL, a working directory for Redis —, rewinds a former primary,
//!    starts, promotes, demotes or fences the server, applies replication
//!    settings live;
//! 4. supervises the server as a child ([`supervisor`]), restarting it with
//!    back-off, reaping every child as PID 1 must ([`reaper`]), killing its whole
//!    process tree when fenced ([`process_tree`]), and stopping it cleanly on
//!    SIGTERM/SIGINT ([`signals`]);
//! 5. serves `/healthz`, `/readyz`, `/startupz`, the authenticated `/status` and
//!    `POST /role` on the agent port ([`http`], [`status`]).
//!
//! What differs between PostgreSQL and Redis lives in [`engine`].

pub mod args;
pub mod config;
pub mod converge;
pub mod datadir;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod http;
pub mod init;
pub mod process_tree;
pub mod reaper;
pub mod role;
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
use self::converge::Converger;
use self::datadir::DataDir;
use self::engine::Engine;
use self::reaper::Reaper;
use self::role::{DesiredState, RoleFile};
use self::status::Shared;
use self::supervisor::Outcome;
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
    let reaper = Reaper::start()?;
    let shutdown = CancellationToken::new();
    signals::forward(shutdown.clone())?;
    let engine = Arc::new(Engine::new(Arc::clone(&config))?);
    let (desired, role_file) = desired_state(&config)?;
    tracing::info!(epoch = desired.epoch, role = ?desired.role,
        upstream = ?desired.upstream.as_ref().map(|u| u.address()), "desired state");
    let shared = Arc::new(Shared::new(Arc::clone(&config), engine, desired, role_file));

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

/// The desired state to start with (role file over environment) and the role file.
fn desired_state(config: &Config) -> anyhow::Result<(DesiredState, RoleFile)> {
    DataDir::new(&config.data_dir)
        .ensure()
        .context("creating the data directory")?;
    let file = RoleFile::new(&config.data_dir);
    let persisted = file.load().context("reading the role file")?;
    Ok((
        DesiredState::resolve(persisted, DesiredState::from_config(config)),
        file,
    ))
}

/// Converges the server to its desired state until shutdown.
async fn supervise(
    shared: &Arc<Shared>,
    reaper: Arc<Reaper>,
    shutdown: CancellationToken,
) -> anyhow::Result<Outcome> {
    let outcome = Converger::new(Arc::clone(shared), reaper, shutdown)
        .run()
        .await
        .context("supervising the server")?;
    Ok(outcome)
}
