//! Applies a ShardedCluster's plan: Secret, Shards, routing ConfigMap, routers, the
//! next ShardMigration, drained Shards' deletion; one Event per action.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::plan::{Observed, Plan};
use super::router;
use crate::api::{Engine, Shard, ShardMigration, ShardedCluster, condition};
use crate::operator::context::Context;
use crate::operator::credentials::{self, SecretPlan};
use crate::operator::error::{self, Result};
use crate::operator::kubeapi;
use crate::operator::names;

/// Applies `plan` for `cluster`.
pub async fn apply(
    ctx: &Context,
    cluster: &ShardedCluster,
    observed: &Observed,
    plan: &Plan,
) -> Result<()> {
    secret(ctx, cluster, observed, &plan.secret).await?;
    shards(ctx, cluster, observed, plan).await?;
    routing(ctx, cluster, observed, plan).await?;
    if cluster.spec.engine == Engine::Redis {
        routers(ctx, cluster).await?;
    }
    migration(ctx, cluster, plan).await?;
    drained_shards(ctx, cluster, plan).await?;
    extra_shards(ctx, cluster, plan).await;
    Ok(())
}

/// Applies the routers' ServiceAccount, Role, RoleBinding, Service and Deployment.
async fn routers(ctx: &Context, cluster: &ShardedCluster) -> Result<()> {
    let objects = router::objects(cluster, &ctx.settings.agent_image);
    let namespace = ns(cluster);
    let client = &ctx.client;
    kubeapi::apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), &namespace),
        &objects.service_account,
    )
    .await?;
    kubeapi::apply(
        &Api::<Role>::namespaced(client.clone(), &namespace),
        &objects.role,
    )
    .await?;
    kubeapi::apply(
        &Api::<RoleBinding>::namespaced(client.clone(), &namespace),
        &objects.role_binding,
    )
    .await?;
    kubeapi::apply(
        &Api::<Service>::namespaced(client.clone(), &namespace),
        &objects.service,
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let name = objects.deployment.name_any();
    let existed = deployments
        .get_opt(&name)
        .await
        .map_err(error::api("get", "Deployment", name.clone()))?
        .is_some();
    kubeapi::apply(&deployments, &objects.deployment).await?;
    if !existed {
        tracing::info!(deployment = %name, "created the routers");
        let note = format!(
            "created router Deployment {name} ({} replica(s)) and Service {name}",
            cluster.spec.router.replicas
        );
        ctx.normal(
            &kubeapi::cluster_ref(cluster),
            "CreatedRouters",
            "Create",
            note,
        )
        .await;
    }
    Ok(())
}

/// Creates the next ShardMigration of the ring, if one is due.
async fn migration(ctx: &Context, cluster: &ShardedCluster, plan: &Plan) -> Result<()> {
    let Some(migration) = &plan.ring.create else {
        return Ok(());
    };
    let api: Api<ShardMigration> = Api::namespaced(ctx.client.clone(), &ns(cluster));
    if kubeapi::create(&api, migration).await?.is_some() {
        let name = migration.name_any();
        let spec = &migration.spec;
        tracing::info!(migration = %name, from = spec.from_ring.version, to = spec.to_ring.version, "created a migration");
        let note = format!(
            "created ShardMigration {name}: ring version {} ({} shard(s)) to {} ({} shard(s))",
            spec.from_ring.version,
            spec.from_ring.members.len(),
            spec.to_ring.version,
            spec.to_ring.members.len()
        );
        ctx.normal(
            &kubeapi::cluster_ref(cluster),
            "Rebalancing",
            "Create",
            note,
        )
        .await;
    }
    Ok(())
}

/// Deletes the Shards a completed migration drained.
async fn drained_shards(ctx: &Context, cluster: &ShardedCluster, plan: &Plan) -> Result<()> {
    let api: Api<Shard> = Api::namespaced(ctx.client.clone(), &ns(cluster));
    for name in &plan.ring.delete {
        if kubeapi::delete(&api, name).await? {
            tracing::info!(shard = %name, "deleted a drained Shard");
            let note = format!("deleted Shard {name}: a completed migration moved all its keys");
            ctx.normal(
                &kubeapi::cluster_ref(cluster),
                "DeletedShard",
                "Delete",
                note,
            )
            .await;
        }
    }
    Ok(())
}

/// Creates the Secret once, or re-adds only its missing keys.
async fn secret(
    ctx: &Context,
    cluster: &ShardedCluster,
    observed: &Observed,
    plan: &SecretPlan,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns(cluster));
    let name = names::secret_name(&cluster.name_any());
    let reference = kubeapi::cluster_ref(cluster);
    match plan {
        SecretPlan::Keep => {}
        SecretPlan::Create => {
            let data = credentials::generate(cluster.spec.engine, &names::secret_key::ALL);
            let secret = credentials::secret(cluster, data);
            if kubeapi::create(&api, &secret).await?.is_some() {
                tracing::info!(secret = %name, "created the credentials Secret");
                let note = format!(
                    "created Secret {name} with keys {}",
                    names::secret_key::ALL.join(", ")
                );
                ctx.normal(&reference, "CreatedSecret", "Create", note)
                    .await;
            }
        }
        SecretPlan::AddKeys(keys) => {
            let data = credentials::generate(cluster.spec.engine, keys);
            // Guarded by the resourceVersion read: never overwrite a concurrent change.
            let version = observed.secret.as_ref().and_then(|s| s.resource_version());
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": version },
                "data": data,
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(error::api("patch", "Secret", name.clone()))?;
            tracing::info!(secret = %name, keys = ?keys, "re-added missing keys to the credentials Secret");
            let note = format!(
                "re-added missing key(s) {} to Secret {name}",
                keys.join(", ")
            );
            ctx.normal(&reference, "UpdatedSecret", "Update", note)
                .await;
        }
    }
    Ok(())
}

/// Creates missing Shards (with their first primary) and applies the others.
async fn shards(
    ctx: &Context,
    cluster: &ShardedCluster,
    observed: &Observed,
    plan: &Plan,
) -> Result<()> {
    let api: Api<Shard> = Api::namespaced(ctx.client.clone(), &ns(cluster));
    let reference = kubeapi::cluster_ref(cluster);
    for shard in &plan.create_shards {
        if kubeapi::create(&api, shard).await?.is_some() {
            let name = shard.name_any();
            tracing::info!(shard = %name, "created Shard");
            let note = format!(
                "created Shard {name} ({} replica(s), primary {})",
                shard.spec.replicas,
                shard.spec.primary.as_deref().unwrap_or_default()
            );
            ctx.normal(&reference, "CreatedShard", "Create", note).await;
        }
    }
    // A spec change bumps the generation; status updates by the Shard controller
    // do not, so this tells our own changes apart.
    let generations: BTreeMap<String, Option<i64>> = observed
        .shards
        .iter()
        .map(|s| (s.name_any(), s.metadata.generation))
        .collect();
    for shard in &plan.apply_shards {
        let applied = kubeapi::apply(&api, shard).await?;
        let name = shard.name_any();
        if generations.get(&name).copied().flatten() != applied.metadata.generation {
            tracing::info!(shard = %name, "updated Shard");
            let note = format!(
                "updated Shard {name} from the cluster spec ({} replica(s), image {})",
                shard.spec.replicas, shard.spec.image
            );
            ctx.normal(&reference, "UpdatedShard", "Update", note).await;
        }
    }
    Ok(())
}

/// Applies the routing ConfigMap.
async fn routing(
    ctx: &Context,
    cluster: &ShardedCluster,
    observed: &Observed,
    plan: &Plan,
) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns(cluster));
    kubeapi::apply(&api, &plan.routing_config_map).await?;
    let before = observed.routing.as_ref().and_then(|cm| {
        cm.annotations()
            .get(names::ROUTING_VERSION_ANNOTATION)
            .cloned()
    });
    let version = plan.routing.version.to_string();
    if before.as_deref() != Some(version.as_str()) {
        let name = plan.routing_config_map.name_any();
        tracing::info!(configmap = %name, version = plan.routing.version, "published the routing table");
        let note = format!("published routing table version {version} in ConfigMap {name}");
        ctx.normal(
            &kubeapi::cluster_ref(cluster),
            "RoutingUpdated",
            "Update",
            note,
        )
        .await;
    }
    Ok(())
}

/// Warns once (when the condition appears) about shards beyond the spec.
async fn extra_shards(ctx: &Context, cluster: &ShardedCluster, plan: &Plan) {
    if plan.extra_shards.is_empty() {
        return;
    }
    let already = cluster.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == condition::DEGRADED && c.status == "True" && c.reason == "ShardsBeyondSpec"
        })
    });
    if !already {
        let note = format!(
            "{} exist beyond spec.shards={}; they are not deleted (that needs a migration)",
            plan.extra_shards.join(", "),
            cluster.spec.shards
        );
        tracing::warn!(shards = ?plan.extra_shards, "shards beyond the spec");
        ctx.warning(
            &kubeapi::cluster_ref(cluster),
            "ShardsBeyondSpec",
            "Reconcile",
            note,
        )
        .await;
    }
}

fn ns(cluster: &ShardedCluster) -> String {
    cluster.namespace().unwrap_or_default()
}
