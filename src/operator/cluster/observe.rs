//! Reads what exists of a ShardedCluster's objects.

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::DynamicObject;
use kube::{Api, ResourceExt};

use super::plan::Observed;
use crate::api::{Shard, ShardMigration, ShardedCluster};
use crate::operator::context::Context;
use crate::operator::error::{self, Result};
use crate::operator::kubeapi::{self, migration_resource, shard_resource};
use crate::operator::names::{self, label};

/// The cluster's Secret, Shards, Service addresses and routing ConfigMap.
pub async fn observe(ctx: &Context, cluster: &ShardedCluster) -> Result<Observed> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let client = &ctx.client;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret_name = names::secret_name(&name);
    let secret =
        secrets
            .get_opt(&secret_name)
            .await
            .map_err(error::api("get", "Secret", secret_name))?;

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let routing_name = names::routing_name(&name);
    let routing = config_maps
        .get_opt(&routing_name)
        .await
        .map_err(error::api("get", "ConfigMap", routing_name))?;

    let selector = names::cluster_selector(&name);
    let shards = shards(ctx, &namespace, &name, &selector).await?;

    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let service_selector = format!("{selector},{}=shard", label::COMPONENT);
    let service_ips = kubeapi::list(&services, &service_selector)
        .await?
        .into_iter()
        .filter_map(|svc| {
            let ip = svc.spec.as_ref()?.cluster_ip.clone()?;
            Some((svc.name_any(), ip))
        })
        .collect();

    let migrations = migrations(ctx, &namespace, &name).await?;

    Ok(Observed {
        secret,
        shards,
        service_ips,
        routing,
        migrations,
    })
}

/// The ShardMigrations of the cluster (by `spec.cluster`, also those created by hand).
async fn migrations(ctx: &Context, namespace: &str, cluster: &str) -> Result<Vec<ShardMigration>> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &migration_resource());
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(error::api("list", "ShardMigration", namespace))?;
    Ok(list
        .items
        .iter()
        .filter_map(|obj| match kubeapi::parse::<ShardMigration>(obj) {
            Ok(m) if m.spec.cluster == cluster => Some(m),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "skipping a ShardMigration that cannot be read");
                None
            }
        })
        .collect())
}

/// The cluster's Shards; a Shard that cannot be read is logged and skipped (its own
/// controller reports it).
pub async fn shards(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
    selector: &str,
) -> Result<Vec<Shard>> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &shard_resource());
    let params = kube::api::ListParams::default().labels(selector);
    let list = api
        .list(&params)
        .await
        .map_err(error::api("list", "Shard", selector))?;
    Ok(list
        .items
        .iter()
        .filter_map(|obj| match kubeapi::parse::<Shard>(obj) {
            Ok(shard) if shard.spec.cluster == cluster => Some(shard),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "skipping a Shard that cannot be read");
                None
            }
        })
        .collect())
}
