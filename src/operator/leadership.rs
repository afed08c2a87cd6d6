//! Running the controllers only while leading: start them when the Lease is won,
//! abort them the moment it is lost, stop them gracefully on shutdown.
//!
//! Readiness (`/readyz`): ready while a healthy standby, not ready while a new
//! leader's caches fill, ready once they are synced.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use super::context::Context;
use super::controllers::Running;
use super::reconciler::Scope;
use crate::runtime::http::HealthState;
use crate::runtime::leader::LeaderElector;
use crate::runtime::shutdown::Shutdown;

/// How long in-flight reconciliations may take to finish on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the controllers stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The process is shutting down.
    Shutdown,
    /// Leadership was lost.
    LostLease,
    /// A controller ended on its own.
    ControllerEnded(&'static str),
}

/// Runs the controllers until shutdown, without leader election.
pub async fn run_unelected(
    ctx: &Context,
    scopes: &[Scope],
    health: &HealthState,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    tracing::info!("leader election disabled: running the controllers");
    let stop = async {
        shutdown.wait().await;
        Stop::Shutdown
    };
    match lead(ctx, scopes, health, stop).await {
        Stop::ControllerEnded(name) => anyhow::bail!("the {name} controller stopped unexpectedly"),
        _ => Ok(()),
    }
}

/// Competes for the Lease with `elector` and runs the controllers while leading.
/// On shutdown, stops them and lets the elector release the Lease.
pub async fn run_elected(
    ctx: &Context,
    scopes: &[Scope],
    health: &HealthState,
    shutdown: &Shutdown,
    elector: LeaderElector,
) -> anyhow::Result<()> {
    let (leading_tx, mut leading) = watch::channel(false);
    let election = tokio::spawn(elector.run(leading_tx, shutdown.clone()));
    health.set_ready(true, "standby: waiting for the leader Lease");
    let mut failure = None;
    loop {
        let won = tokio::select! {
            () = shutdown.wait() => false,
            won = leading.wait_for(|l| *l) => won.is_ok(),
        };
        if !won {
            break;
        }
        tracing::info!("leading: starting the controllers");
        let stop = async {
            tokio::select! {
                () = shutdown.wait() => Stop::Shutdown,
                _ = leading.wait_for(|l| !*l) => Stop::LostLease,
            }
        };
        match lead(ctx, scopes, health, stop).await {
            Stop::Shutdown => break,
            Stop::LostLease => {
                tracing::warn!("lost the leader Lease: controllers stopped, back to standby");
                health.set_ready(true, "standby: lost the leader Lease");
            }
            Stop::ControllerEnded(name) => {
                failure = Some(name);
                shutdown.trigger();
                break;
            }
        }
    }
    health.set_ready(false, "shutting down");
    // Dropping our receiver tells the elector the controllers have stopped, so it
    // releases the Lease.
    drop(leading);
    election
        .await
        .context("the leader election task panicked")?
        .context("leader election")?;
    match failure {
        Some(name) => anyhow::bail!("the {name} controller stopped unexpectedly"),
        None => Ok(()),
    }
}

/// Starts the controllers, marks the process ready once their caches are synced,
/// and stops them when `stop` resolves (aborting them unless shutting down).
async fn lead(
    ctx: &Context,
    scopes: &[Scope],
    health: &HealthState,
    stop: impl Future<Output = Stop>,
) -> Stop {
    let mut running = Running::start(ctx, scopes);
    health.set_ready(false, "leading: caches syncing");
    let synced = running.synced();
    tokio::pin!(stop, synced);
    let mut is_synced = false;
    let outcome = loop {
        tokio::select! {
            reason = &mut stop => break reason,
            name = running.stopped() => break Stop::ControllerEnded(name),
            () = &mut synced, if !is_synced => {
                is_synced = true;
                tracing::info!("controller caches synced");
                health.set_ready(true, "leading: caches synced");
            }
        }
    };
    match outcome {
        Stop::Shutdown => running.shutdown(SHUTDOWN_GRACE).await,
        _ => running.abort().await,
    }
    outcome
}
