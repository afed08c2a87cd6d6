//! What a ShardedCluster's Shards, Secret and routing ConfigMap should be (pure).
//!
//! * One Shard `<C>-<i>` per index of the spec. A new Shard gets `spec.primary`
//!   (`<C>-<i>-0`) once, at creation; later applies leave that field out, so a
//!   user's switchover edit is never overwritten.
//! * The hash ring and migrations are planned by [`rebalance`]: Shards a completed
//!   migration drained are deleted, other Shards beyond the spec reported.
//! * The credentials Secret is planned only when absent or missing keys.
//! * The routing table's version moves only when its content does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::rebalance::{self, RingPlan};
use crate::api::routing::RoutingReplica;
use crate::api::routing::{RoutingShard, RoutingTable};
use crate::api::shard::Role;
use crate::api::{Shard, ShardMigration, ShardSpec, ShardedCluster};
use crate::operator::credentials::{self, SecretPlan};
use crate::operator::names::{self, ROUTING_KEY, ROUTING_VERSION_ANNOTATION};

/// Errors of planning.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The cluster has no name, namespace or uid (it was not read from the apiserver).
    #[error("the ShardedCluster has no name, namespace or uid")]
    MissingMetadata,
}

/// What exists of a cluster's objects.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The credentials Secret.
    pub secret: Option<Secret>,
    /// The cluster's Shards (labelled with the cluster's name).
    pub shards: Vec<Shard>,
    /// ClusterIPs of the cluster's Services, by Service name.
    pub service_ips: BTreeMap<String, String>,
    /// The routing ConfigMap.
    pub routing: Option<ConfigMap>,
    /// The ShardMigrations of the cluster.
    pub migrations: Vec<ShardMigration>,
}

/// The changes that bring a cluster's objects to its spec.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The credentials Secret.
    pub secret: SecretPlan,
    /// Shards to create (with `spec.primary`).
    pub create_shards: Vec<Shard>,
    /// Existing Shards to apply (without `spec.primary`).
    pub apply_shards: Vec<Shard>,
    /// Shards outside the spec and the rings that no migration drained: reported.
    pub extra_shards: Vec<String>,
    /// The ring in effect, the running migration, the next one, drained Shards.
    pub ring: RingPlan,
    /// The routing table to publish.
    pub routing: RoutingTable,
    /// The routing ConfigMap to apply.
    pub routing_config_map: ConfigMap,
}

/// Plans the objects of `cluster` given what exists.
pub fn plan(cluster: &ShardedCluster, observed: &Observed) -> Result<Plan, PlanError> {
    let name = cluster.metadata.name.as_deref();
    let namespace = cluster.metadata.namespace.as_deref();
    let (Some(name), Some(_), Some(_)) = (name, namespace, cluster.metadata.uid.as_deref()) else {
        return Err(PlanError::MissingMetadata);
    };
    let existing: BTreeMap<String, &Shard> =
        observed.shards.iter().map(|s| (s.name_any(), s)).collect();
    let mut create_shards = Vec::new();
    let mut apply_shards = Vec::new();
    for index in 0..cluster.spec.shards {
        if existing.contains_key(&names::shard_name(name, index)) {
            apply_shards.push(shard(cluster, index, false));
        } else {
            create_shards.push(shard(cluster, index, true));
        }
    }
    let ring = rebalance::plan(cluster, &observed.shards, &observed.migrations);
    let published = observed
        .routing
        .as_ref()
        .and_then(|cm| cm.data.as_ref()?.get(ROUTING_KEY))
        .and_then(|json| RoutingTable::parse(json));
    let routing = routing_table(cluster, name, observed, &ring).versioned(published.as_ref());
    Ok(Plan {
        secret: credentials::plan(observed.secret.as_ref()),
        routing_config_map: routing_config_map(cluster, name, &routing),
        create_shards,
        apply_shards,
        extra_shards: ring.extra.clone(),
        ring,
        routing,
    })
}

/// The Shard of `index`; `with_primary` sets `spec.primary` to its instance 0.
pub fn shard(cluster: &ShardedCluster, index: i32, with_primary: bool) -> Shard {
    let cluster_name = cluster.name_any();
    let name = names::shard_name(&cluster_name, index);
    let spec = &cluster.spec;
    let mut shard = Shard::new(
        &name,
        ShardSpec {
            cluster: cluster_name.clone(),
            index,
            engine: spec.engine,
            image: spec.image(),
            replicas: spec.replicas,
            weight: spec.weight(index),
            primary: with_primary.then(|| names::pod_name(&name, 0)),
            storage: spec.storage.clone(),
            resources: spec.resources.clone(),
            replication: spec.replication.clone(),
            failover: spec.failover.clone(),
            pvc_retention: spec.pvc_retention.clone(),
        },
    );
    shard.metadata.namespace = cluster.metadata.namespace.clone();
    shard.metadata.labels = Some(names::shard_labels(spec.engine, &cluster_name, index));
    shard.metadata.owner_references = names::cluster_ref(cluster).map(|r| vec![r]);
    shard
}

/// The routing table (version 0: see [`RoutingTable::versioned`]).
fn routing_table(
    cluster: &ShardedCluster,
    name: &str,
    observed: &Observed,
    ring: &RingPlan,
) -> RoutingTable {
    let port = cluster.spec.engine.port();
    let address = |service: String| {
        observed
            .service_ips
            .get(&service)
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .map(|ip| format!("{ip}:{port}"))
    };
    let shards = ring
        .keep
        .iter()
        .map(|&index| {
            let shard = names::shard_name(name, index);
            let existing = observed.shards.iter().find(|s| s.name_any() == shard);
            let primary = existing
                .and_then(|s| {
                    let status = s.status.as_ref().and_then(|st| st.primary.clone());
                    status.or_else(|| s.spec.primary.clone())
                })
                .unwrap_or_else(|| names::pod_name(&shard, 0));
            RoutingShard {
                index,
                weight: cluster.spec.weight(index),
                rw: address(names::rw_service(&shard)),
                ro: address(names::ro_service(&shard)),
                primary,
                name: shard,
                replicas: existing
                    .map(|s| readable_replicas(cluster, s, port))
                    .unwrap_or_default(),
            }
        })
        .collect();
    RoutingTable {
        cluster: name.to_owned(),
        engine: cluster.spec.engine,
        version: 0,
        shards,
        ring: ring.current.clone(),
        migrations: ring.routing.clone(),
    }
}

/// Replicas of `shard` that may serve reads: only with `router.readFromReplicas`,
/// streaming, Ready, with a known lag under `router.maxReplicaLagBytes`; lowest lag
/// first.
fn readable_replicas(cluster: &ShardedCluster, shard: &Shard, port: i32) -> Vec<RoutingReplica> {
    let router = &cluster.spec.router;
    if !router.read_from_replicas {
        return Vec::new();
    }
    let Some(status) = shard.status.as_ref() else {
        return Vec::new();
    };
    let mut readable: Vec<(i64, RoutingReplica)> = status
        .instances
        .iter()
        .filter(|i| i.role == Some(Role::Replica) && i.ready && i.streaming == Some(true))
        .filter_map(|i| {
            let lag = i
                .lag_bytes
                .filter(|lag| *lag <= router.max_replica_lag_bytes)?;
            let ip = i.pod_ip.clone()?;
            Some((
                lag,
                RoutingReplica {
                    name: i.name.clone(),
                    address: format!("{ip}:{port}"),
                },
            ))
        })
        .collect();
    readable.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    readable.into_iter().map(|(_, r)| r).collect()
}

/// The routing ConfigMap publishing `table`.
fn routing_config_map(cluster: &ShardedCluster, name: &str, table: &RoutingTable) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::routing_name(name)),
            namespace: cluster.metadata.namespace.clone(),
            labels: Some(names::cluster_labels(cluster.spec.engine, name)),
            annotations: Some(BTreeMap::from([(
                ROUTING_VERSION_ANNOTATION.to_owned(),
                table.version.to_string(),
            )])),
            owner_references: names::cluster_ref(cluster).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(ROUTING_KEY.to_owned(), table.to_json())])),
        ..ConfigMap::default()
    }
}
