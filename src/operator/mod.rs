//! `ringmaster operator`: the controllers.
//!
//! Each controller is a pipeline **observe → plan → apply → status**:
//!
//! * observe — read the object and what exists of its children;
//! * plan — a pure function from spec and observation to the desired children
//!   ([`cluster::plan`], [`shard::plan`]), unit-tested from YAML fixtures;
//! * apply — server-side apply (field manager `ringmaster`, forced); objects that
//!   must be written only once (Pods, the credentials Secret, a Shard's first
//!   `spec.primary`) are created instead;
//! * status — a pure function ([`cluster::status`], [`shard::status`]); patched only
//!   when it changed, conditions keep their `lastTransitionTime` unless their status
//!   flips.
//!
//! Modules:
//!
//! | module | concern |
//! |---|---|
//! | [`names`] | the naming, label and port contract of `docs/architecture.md` |
//! | [`cluster`] | ShardedCluster → Shards, credentials Secret, routing ConfigMap |
//! | [`shard`] | Shard → instance Pods, PVCs, Services |
//! | [`credentials`], [`routing`] | the Secret and the routing table (pure) |
//! | [`conditions`], [`quantity`] | status conditions, quantity comparison |
//! | [`kubeapi`], [`reconciler`], [`context`], [`error`] | API helpers, shared reconcile plumbing |
//! | [`controllers`], [`leadership`] | running the controllers while leading |

pub mod args;
pub mod cluster;
pub mod conditions;
pub mod context;
pub mod controllers;
pub mod credentials;
pub mod error;
pub mod failpoint;
#[cfg(test)]
mod fixtures;
pub mod kubeapi;
pub mod leadership;
pub mod migration;
pub mod names;
pub mod quantity;
pub mod reconciler;
pub mod security;
pub mod shard;

use std::time::Duration;

use anyhow::Context as _;
use kube::runtime::events::{Recorder, Reporter};

pub use self::args::OperatorArgs;
use self::context::{Context, Settings};
pub use self::error::Error;
use self::reconciler::Scope;
use crate::runtime::http::{self, HealthState};
use crate::runtime::leader::{self, LeaderElector};
use crate::runtime::metrics::Metrics;
use crate::runtime::shutdown::Shutdown;
use crate::runtime::telemetry;

/// The image the operator runs as when `--image` / `RINGMASTER_IMAGE` is not given.
pub fn default_image() -> String {
    format!(
        "ghcr.io/ringmaster/ringmaster:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Runs the operator until SIGTERM or SIGINT.
pub fn main(args: OperatorArgs) -> anyhow::Result<()> {
    telemetry::init_tracing(&args.log_level, args.log_format.is_json())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signal()?;
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let metrics = Metrics::new();
    let health = HealthState::new();
    let server = tokio::spawn(http::serve_on(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone().wait_owned(),
    ));

    let identity = identity();
    let reporter = Reporter {
        controller: names::REPORTER.to_owned(),
        instance: Some(identity.clone()),
    };
    let settings = Settings {
        agent_image: args.image.clone(),
        requeue: Duration::from_secs(args.resync_seconds.max(1)),
        query_agents: true,
        health_interval: args.health_interval,
    };
    let ctx = Context::new(
        client.clone(),
        metrics.clone(),
        Recorder::new(client.clone(), reporter),
        settings,
    );
    let scopes = Scope::from_namespaces(&args.namespaces);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        ?scopes,
        agent_image = %args.image,
        leader_election = args.leader_election,
        %identity,
        "ringmaster operator starting"
    );
    let result = if args.leader_election {
        let namespace = std::env::var(leader::NAMESPACE_ENV)
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let elector = LeaderElector::new(client, &namespace, leader::DEFAULT_LEASE_NAME, &identity)
            .with_metrics(metrics);
        leadership::run_elected(&ctx, &scopes, &health, &shutdown, elector).await
    } else {
        leadership::run_unelected(&ctx, &scopes, &health, &shutdown).await
    };
    shutdown.trigger();
    match server.await {
        Ok(Err(error)) => tracing::warn!(%error, "the HTTP server failed"),
        Err(error) => tracing::warn!(%error, "the HTTP server task failed"),
        Ok(Ok(())) => {}
    }
    tracing::info!("ringmaster operator stopped");
    result
}

/// `$POD_NAME`, or for local runs the host name with a random suffix.
fn identity() -> String {
    if let Some(name) = std::env::var(leader::IDENTITY_ENV)
        .ok()
        .filter(|n| !n.is_empty())
    {
        return name;
    }
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "ringmaster".to_owned());
    format!(
        "{host}-{}",
        credentials::random_alphanumeric(6).to_lowercase()
    )
}
