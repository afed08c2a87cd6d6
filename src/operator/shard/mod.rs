//! The Shard controller: observe → plan → apply → status.
//!
//! It owns the shard's instance Pods (created directly, not through a StatefulSet),
//! their PVCs and the shard's three Services.

pub mod agent;
pub mod apply;
pub mod objects;
pub mod observe;
pub mod plan;
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
    let shard: Shard = kubeapi::parse(obj)?;
    if shard.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let observed = observe::observe(ctx, &shard).await?;
    let plan = plan::plan(&shard, &observed, &ctx.settings.agent_image)?;
    apply::apply(ctx, &shard, &observed, &plan).await?;
    let agents = if ctx.settings.query_agents {
        agent::reports(ctx, &shard, &observed.pods).await
    } else {
        Default::default()
    };
    let now = super::conditions::now_seconds();
    let status = status::status(&shard, &plan, &observed.pods, &agents, &now);
    if shard.status.as_ref() != Some(&status) {
        let api: Api<Shard> =
            Api::namespaced(ctx.client.clone(), &shard.namespace().unwrap_or_default());
        kubeapi::apply_status(&api, &shard.name_any(), &status).await?;
        tracing::debug!(ready = ?status.ready, "status updated");
    }
    Ok(Action::requeue(ctx.settings.requeue))
}
