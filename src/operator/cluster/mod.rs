//! The ShardedCluster controller: observe → plan → apply → status.
//!
//! It owns the cluster's Shards, its credentials Secret, its routing ConfigMap, its
//! routers and its ShardMigrations (created when the ring changes), and watches the
//! Shards' Services (for the routing table's addresses).

pub mod apply;
pub mod observe;
pub mod plan;
pub mod rebalance;
pub mod router;
pub mod status;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::instrument;

use super::context::Context;
use super::error::Result;
use super::kubeapi::{self, cluster_resource, migration_resource, shard_resource};
use super::names::{self, label};
use super::reconciler::{self, Scope};
use crate::api::ShardedCluster;

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "shardedcluster";

/// The controller for the ShardedClusters of `scope`.
pub fn controller(ctx: &Context, scope: &Scope) -> Controller<DynamicObject> {
    let client = ctx.client.clone();
    let resource = cluster_resource();
    let managed = watcher::Config::default().labels(&names::managed_selector());
    let services = watcher::Config::default().labels(&format!(
        "{},{}=shard",
        names::managed_selector(),
        label::COMPONENT
    ));
    let owner = resource.clone();
    Controller::new_with(
        scope.dynamic(&client, &resource),
        watcher::Config::default(),
        resource.clone(),
    )
    .owns_with(
        scope.dynamic(&client, &shard_resource()),
        shard_resource(),
        managed.clone(),
    )
    .owns_with(
        scope.dynamic(&client, &migration_resource()),
        migration_resource(),
        watcher::Config::default(),
    )
    .owns(scope.typed::<Deployment>(&client), managed.clone())
    .owns(scope.typed::<Secret>(&client), managed.clone())
    .owns(scope.typed::<ConfigMap>(&client), managed)
    .watches_with(
        scope.typed::<Service>(&client),
        (),
        services,
        move |svc: Service| {
            let cluster = svc.labels().get(label::CLUSTER)?.clone();
            let namespace = svc.namespace()?;
            Some(ObjectRef::new_with(&cluster, owner.clone()).within(&namespace))
        },
    )
}

/// Reconciles one ShardedCluster.
#[instrument(skip_all, fields(cluster = %obj.name_any(), namespace = obj.namespace().unwrap_or_default()))]
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action> {
    let resource = cluster_resource();
    reconciler::run(
        CONTROLLER,
        &resource,
        &obj,
        &ctx,
        reconcile_cluster(&obj, &ctx),
    )
    .await
}

/// Retries a failed reconciliation with per-object exponential back-off.
pub fn error_policy(obj: Arc<DynamicObject>, error: &super::Error, ctx: Arc<Context>) -> Action {
    reconciler::error_policy(&cluster_resource(), &obj, error, &ctx)
}

async fn reconcile_cluster(obj: &DynamicObject, ctx: &Context) -> Result<Action> {
    let cluster: ShardedCluster = kubeapi::parse(obj)?;
    if cluster.metadata.deletion_timestamp.is_some() {
        // Owned objects are garbage-collected.
        return Ok(Action::await_change());
    }
    let observed = observe::observe(ctx, &cluster).await?;
    let plan = plan::plan(&cluster, &observed)?;
    apply::apply(ctx, &cluster, &observed, &plan).await?;
    let now = super::conditions::now_seconds();
    let status = status::status(&cluster, &plan, &observed.shards, &now);
    if cluster.status.as_ref() != Some(&status) {
        let api: Api<ShardedCluster> =
            Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
        kubeapi::apply_status(&api, &cluster.name_any(), &status).await?;
        tracing::debug!(phase = ?status.phase, ready_shards = status.ready_shards, "status updated");
    }
    Ok(Action::requeue(ctx.settings.requeue))
}
