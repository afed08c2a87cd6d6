//! What a migration's next step depends on: its cluster, the health of its shards,
//! the published routing table and the version every router has applied.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use kube::{Api, ResourceExt};
use serde::Deserialize;

use super::saga::{self, Observation, RoutingView};
use crate::api::routing::RoutingTable;
use crate::api::{Shard, ShardMigration, ShardedCluster};
use crate::operator::cluster::observe as cluster_observe;
use crate::operator::cluster::status::shard_ready;
use crate::operator::context::Context;
use crate::operator::error::{self, Result};
use crate::operator::kubeapi::{self, cluster_resource};
use crate::operator::names::{self, ROUTER_HTTP_PORT, ROUTING_KEY, secret_key};
use crate::operator::shard::agent::{http_exchange, split_response};

/// Deadline of one router `/status` request.
const ROUTER_DEADLINE: Duration = Duration::from_secs(2);

/// Everything read for one reconciliation.
pub struct Observed {
    /// The cluster the migration belongs to.
    pub cluster: ShardedCluster,
    /// The published routing table.
    pub table: Option<RoutingTable>,
    /// The username and password of the cluster's databases.
    pub credentials: Option<(String, String)>,
    /// The pure view the saga decides on.
    pub observation: Observation,
}

/// Reads the cluster, its Shards, routing ConfigMap, Secret and routers; `None`
/// when the cluster does not exist.
pub async fn observe(ctx: &Context, migration: &ShardMigration) -> Result<Option<Observed>> {
    let namespace = migration.namespace().unwrap_or_default();
    let name = &migration.spec.cluster;
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &cluster_resource());
    let Some(obj) =
        clusters
            .get_opt(name)
            .await
            .map_err(error::api("get", "ShardedCluster", name.clone()))?
    else {
        return Ok(None);
    };
    let cluster: ShardedCluster = kubeapi::parse(&obj)?;
    let selector = names::cluster_selector(name);
    let shards = cluster_observe::shards(ctx, &namespace, name, &selector).await?;
    let table = routing_table(ctx, &namespace, name).await?;
    let credentials = credentials(ctx, &namespace, name).await?;
    let routing = match &table {
        Some(table) => Some(routing_view(ctx, &namespace, name, migration, table).await?),
        None => None,
    };
    let involved = saga::involved(migration);
    let observation = Observation {
        shards: shards_health(&involved, name, &shards),
        routing,
        last_primary_change: last_primary_change(&involved, name, &shards),
    };
    Ok(Some(Observed {
        cluster,
        table,
        credentials,
        observation,
    }))
}

/// `Err(why)` when a shard of the migration (`involved`) is missing, not Ready, or
/// changing its primary.
pub fn shards_health(
    involved: &[i32],
    cluster: &str,
    shards: &[Shard],
) -> std::result::Result<(), String> {
    let by_name: BTreeMap<String, &Shard> = shards.iter().map(|s| (s.name_any(), s)).collect();
    for &index in involved {
        let name = names::shard_name(cluster, index);
        let Some(shard) = by_name.get(&name) else {
            return Err(format!("Shard {name} does not exist"));
        };
        if let Some(change) = shard.status.as_ref().and_then(|s| s.change.as_ref()) {
            return Err(format!(
                "Shard {name} is changing its primary ({:?} to {}); the migration goes on \
                 once it has finished",
                change.kind, change.to
            ));
        }
        if !shard_ready(shard) {
            return Err(format!("Shard {name} is not Ready"));
        }
    }
    Ok(())
}

/// The latest completed change of primary of a shard of the migration (`involved`).
pub fn last_primary_change(
    involved: &[i32],
    cluster: &str,
    shards: &[Shard],
) -> Option<(String, Time)> {
    let names: Vec<String> = involved
        .iter()
        .map(|&index| names::shard_name(cluster, index))
        .collect();
    shards
        .iter()
        .filter(|s| names.contains(&s.name_any()))
        .filter_map(|s| {
            let record = s.status.as_ref()?.last_failover.as_ref()?;
            Some((s.name_any(), record.time.clone()))
        })
        .max_by(|a, b| a.1.cmp(&b.1))
}

async fn routing_table(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<Option<RoutingTable>> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let name = names::routing_name(cluster);
    let cm = api
        .get_opt(&name)
        .await
        .map_err(error::api("get", "ConfigMap", name))?;
    Ok(cm
        .and_then(|cm| cm.data?.remove(ROUTING_KEY))
        .and_then(|json| RoutingTable::parse(&json)))
}

async fn credentials(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
) -> Result<Option<(String, String)>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = names::secret_name(cluster);
    let secret = api
        .get_opt(&name)
        .await
        .map_err(error::api("get", "Secret", name))?;
    let Some(mut data) = secret.and_then(|s| s.data) else {
        return Ok(None);
    };
    let text = |bytes: Option<k8s_openapi::ByteString>| String::from_utf8(bytes?.0).ok();
    let user = text(data.remove(secret_key::USERNAME));
    let password = text(data.remove(secret_key::PASSWORD));
    Ok(user.zip(password))
}

async fn routing_view(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
    migration: &ShardMigration,
    table: &RoutingTable,
) -> Result<RoutingView> {
    let lagging_routers = if migration.status.as_ref().is_some_and(saga::awaits_barrier) {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
        let pods = kubeapi::list(&api, &names::router_selector(cluster)).await?;
        let applied = router_versions(&pods).await;
        Some(
            applied
                .into_iter()
                .filter(|(_, version)| version.is_none_or(|v| v < table.version))
                .collect(),
        )
    } else {
        None
    };
    let name = migration.name_any();
    Ok(RoutingView {
        version: table.version,
        ring_version: table.ring.as_ref().map(|r| r.version),
        phase: table
            .migrations
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.phase),
        lagging_routers,
    })
}

/// The routing version each running router reports; `None` for one that does not
/// answer. Pods without an IP have not started: they read the newest table first.
pub async fn router_versions(pods: &[Pod]) -> Vec<(String, Option<i64>)> {
    let asks = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            if status.phase.as_deref() != Some("Running") {
                return None;
            }
            let ip = status.pod_ip.clone()?;
            let name = pod.name_any();
            Some(async move { (name, applied_version(&ip).await) })
        });
    join_all(asks).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouterStatus {
    applied_version: Option<i64>,
}

/// `GET http://<ip>:9090/status` → `appliedVersion`.
async fn applied_version(ip: &str) -> Option<i64> {
    let port = u16::try_from(ROUTER_HTTP_PORT).ok()?;
    let request = format!("GET /status HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n");
    let response = http_exchange(ip, port, &request, ROUTER_DEADLINE)
        .await
        .ok()?;
    let (code, body) = split_response(&response).ok()?;
    if code != 200 {
        return None;
    }
    serde_json::from_str::<RouterStatus>(&body)
        .ok()?
        .applied_version
}
