//! The Shard controller: observe → decide (replication) → record → plan → apply →
//! act → status.
//!
//! It owns the shard's instance Pods (created directly, not through a StatefulSet),
//! their PVCs and the shard's three Services, and decides which instance is primary
//! (`docs/replication.md`): [`replication`] is the pure decision, [`execute`] records
//! it before acting on it.

pub mod agent;
pub mod apply;
pub mod execute;
pub mod objects;
pub mod observe;
pub mod plan;
pub mod replication;
#[cfg(test)]
mod replication_tests;
pub mod status;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::instrument;

use super::context::Context;
use super::error::Result;
use super::kubeapi::{self, shard_resource};
use super::names;
use super::reconciler::{self, Scope};
use crate::api::Shard;
use crate::api::shard::{ChangeKind, ChangePhase, PrimaryChange};

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "shard";

/// The controller for the Shards of `scope`.
pub fn controller(ctx: &Context, scope: &Scope) -> Controller<DynamicObject> {
    let client = ctx.client.clone();
    let resource = shard_resource();
    let managed = watcher::Config::default().labels(&names::managed_selector());
    Controller::new_with(
        scope.dynamic(&client, &resource),
        watcher::Config::default(),
        resource,
    )
    .owns(scope.typed::<Pod>(&client), managed.clone())
    .owns(
        scope.typed::<PersistentVolumeClaim>(&client),
        managed.clone(),
    )
    .owns(scope.typed::<Service>(&client), managed)
}

/// Reconciles one Shard.
#[instrument(skip_all, fields(shard = %obj.name_any(), namespace = obj.namespace().unwrap_or_default()))]
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action> {
    let resource = shard_resource();
    reconciler::run(
        CONTROLLER,
        &resource,
        &obj,
        &ctx,
        reconcile_shard(&obj, &ctx),
    )
    .await
}

/// Retries a failed reconciliation with per-object exponential back-off.
pub fn error_policy(obj: Arc<DynamicObject>, error: &super::Error, ctx: Arc<Context>) -> Action {
    reconciler::error_policy(&shard_resource(), &obj, error, &ctx)
}

async fn reconcile_shard(obj: &DynamicObject, ctx: &Context) -> Result<Action> {
    let mut shard: Shard = kubeapi::parse(obj)?;
    if shard.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let observed = observe::observe(ctx, &shard).await?;
    let token = if ctx.settings.query_agents {
        agent::token(ctx, &shard).await
    } else {
        None
    };
    let agents = match &token {
        Some(token) => Some(agent::statuses(&observed.pods, token).await),
        None => None,
    };
    let now = super::conditions::now_seconds();
    let decision = replication::decide(&replication::Inputs {
        shard: &shard,
        pods: &observed.pods,
        agents: agents.as_ref(),
        agent_image: &ctx.settings.agent_image,
        now: now.0,
    });
    let recorded_before = shard.status.as_ref().and_then(|s| s.change.clone());
    execute::record(ctx, &mut shard, &decision).await?;
    if newly_recorded_failover(recorded_before.as_ref(), &decision) {
        super::failpoint::hit("failover-recorded");
    }
    let plan = plan::plan(
        &shard,
        &observed,
        &ctx.settings.agent_image,
        &decision.labels,
    )?;
    apply::apply(ctx, &shard, &observed, &plan).await?;
    if let Some(token) = &token {
        execute::act(ctx, &shard, &decision, token).await?;
    }
    let status = status::status(
        &shard,
        &plan,
        &observed.pods,
        agents.as_ref(),
        &decision,
        &now,
    );
    export_lag(ctx, &shard, &status);
    if should_write(ctx, &shard, &status) {
        let api: Api<Shard> =
            Api::namespaced(ctx.client.clone(), &shard.namespace().unwrap_or_default());
        kubeapi::apply_status(&api, &shard.name_any(), &status).await?;
        ctx.status_written(&status_key(&shard));
        tracing::debug!(ready = ?status.ready, "status updated");
    }
    let watch_health = shard.spec.replicas > 0 || status.change.is_some();
    Ok(Action::requeue(if watch_health {
        let interval = ctx.settings.health_interval;
        replication::recheck_after(&decision.state, &shard.spec, now.0, interval)
    } else {
        ctx.settings.requeue
    }))
}

/// Whether `decision` records a new failover (phase `Pending`, an epoch that `before`,
/// the change recorded until now, does not have): it is decided and not acted on.
fn newly_recorded_failover(
    before: Option<&PrimaryChange>,
    decision: &replication::Decision,
) -> bool {
    decision.state.change.as_ref().is_some_and(|c| {
        c.kind == ChangeKind::Failover
            && c.phase == ChangePhase::Pending
            && before.is_none_or(|b| b.epoch != c.epoch)
    })
}

/// How often replication figures that only drift (positions, lags) are refreshed in
/// the status; the metrics have them at every reconciliation.
pub const STATUS_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

fn status_key(shard: &Shard) -> String {
    format!(
        "Shard/{}/{}",
        shard.namespace().unwrap_or_default(),
        shard.name_any()
    )
}

/// Whether to write `status`: when it changed in substance, or when only its
/// drifting figures changed and they were last written [`STATUS_REFRESH`] ago.
fn should_write(ctx: &Context, shard: &Shard, status: &crate::api::ShardStatus) -> bool {
    let Some(previous) = &shard.status else {
        return true;
    };
    if previous == status {
        return false;
    }
    let tolerance = u64::try_from(shard.spec.failover.max_lag_bytes / 8).unwrap_or(0);
    status::changed_significantly(previous, status, tolerance)
        || ctx.status_age(&status_key(shard)) >= STATUS_REFRESH
}

/// Sets `ringmaster_replication_lag_bytes` of the shard's replicas, and removes the
/// series of instances that are gone or have no known lag.
fn export_lag(ctx: &Context, shard: &Shard, status: &crate::api::ShardStatus) {
    let namespace = shard.namespace().unwrap_or_default();
    let name = shard.name_any();
    let previous = shard.status.iter().flat_map(|s| s.instances.iter());
    for gone in previous.filter(|p| !status.instances.iter().any(|i| i.name == p.name)) {
        ctx.metrics
            .set_replication_lag(&namespace, &name, &gone.name, None);
    }
    for instance in &status.instances {
        ctx.metrics
            .set_replication_lag(&namespace, &name, &instance.name, instance.lag_bytes);
    }
}
