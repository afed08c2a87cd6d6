//! The naming, label and port contract of `docs/architecture.md`, in one place.
//!
//! Every object the operator creates gets its name and labels from here, so the
//! instance agents, the routers and the tests agree with the controllers.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::api::shard::Role;
use crate::api::{Engine, Shard, ShardedCluster};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "ringmaster";
/// `reportingController` of the operator's Events.
pub const REPORTER: &str = "ringmaster-operator";
/// Value of `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "ringmaster";
/// Annotation of the routing ConfigMap holding the routing table's version.
pub const ROUTING_VERSION_ANNOTATION: &str = "ringmaster.dev/routing-version";
/// Key of the routing table in the routing ConfigMap.
pub const ROUTING_KEY: &str = "routing.json";
/// Port of the instance agent's HTTP API.
pub const AGENT_PORT: i32 = 8000;
/// Name of the database port.
pub const DB_PORT_NAME: &str = "db";
/// Name of the agent port.
pub const AGENT_PORT_NAME: &str = "agent";
/// The database user replicas connect as.
pub const REPLICATION_USERNAME: &str = "ringmaster_replication";
/// Pod annotation holding the last role command an instance's agent accepted (JSON;
/// no secret in it), so an unchanged command is not sent again.
pub const ROLE_COMMAND_ANNOTATION: &str = "ringmaster.dev/role-command";
/// Annotation of an instance Pod: the hash of the template it was built from
/// (images and resources), compared by the rolling update.
pub const TEMPLATE_ANNOTATION: &str = "ringmaster.dev/template-hash";

/// Value of `app.kubernetes.io/component` on the routers' objects.
pub const ROUTER_COMPONENT: &str = "router";
/// Port of the routers' RESP listener.
pub const ROUTER_PORT: i32 = 6379;
/// Port of the routers' HTTP API (`/status`, `/metrics`, probes).
pub const ROUTER_HTTP_PORT: i32 = 9090;

/// Label keys.
pub mod label {
    /// `redis` or `postgres`.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// The cluster's name.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// Always `ringmaster`.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// `database` (Pods, PVCs) or `shard` (Services).
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// The cluster's name.
    pub const CLUSTER: &str = "ringmaster.dev/cluster";
    /// The shard index.
    pub const SHARD: &str = "ringmaster.dev/shard";
    /// The instance's Pod name.
    pub const INSTANCE_POD: &str = "ringmaster.dev/instance";
    /// `primary` or `replica` (Pods only).
    pub const ROLE: &str = "ringmaster.dev/role";
    /// `true` on a replica that streams from its primary: the `-ro` Service selects
    /// only these, so a replica never serves reads before it has the primary's data.
    pub const STREAMING: &str = "ringmaster.dev/streaming";
}

/// Keys of the credentials Secret.
pub mod secret_key {
    /// The database superuser's name.
    pub const USERNAME: &str = "username";
    /// The superuser's password.
    pub const PASSWORD: &str = "password";
    /// Bearer token of the agents' `/status`.
    pub const AGENT_TOKEN: &str = "agent-token";
    /// Password of the replication user `ringmaster_replication`.
    pub const REPLICATION_PASSWORD: &str = "replication-password";
    /// Every key the operator maintains, in order.
    pub const ALL: [&str; 4] = [USERNAME, PASSWORD, AGENT_TOKEN, REPLICATION_PASSWORD];
}

/// `<cluster>-<index>`: the Shard of index `index`.
pub fn shard_name(cluster: &str, index: i32) -> String {
    format!("{cluster}-{index}")
}

/// `<shard>-<ordinal>`: an instance Pod.
pub fn pod_name(shard: &str, ordinal: i32) -> String {
    format!("{shard}-{ordinal}")
}

/// `data-<pod>`: the PVC of an instance.
pub fn pvc_name(pod: &str) -> String {
    format!("data-{pod}")
}

/// `<shard>-rw`: the primary's Service.
pub fn rw_service(shard: &str) -> String {
    format!("{shard}-rw")
}

/// `<shard>-ro`: the replicas' Service.
pub fn ro_service(shard: &str) -> String {
    format!("{shard}-ro")
}

/// `<shard>-pods`: the headless Service of every instance.
pub fn headless_service(shard: &str) -> String {
    format!("{shard}-pods")
}

/// `<cluster>-credentials`.
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-credentials")
}

/// `<cluster>-routing`.
pub fn routing_name(cluster: &str) -> String {
    format!("{cluster}-routing")
}

/// `<cluster>-router`: the routers' Deployment, Service, ServiceAccount, Role and
/// RoleBinding.
pub fn router_name(cluster: &str) -> String {
    format!("{cluster}-router")
}

/// `<cluster>-ring-<version>`: the migration to ring `version`.
pub fn migration_name(cluster: &str, ring_version: i64) -> String {
    format!("{cluster}-ring-{ring_version}")
}

/// Labels of the routers' objects (component `router`).
pub fn router_labels(engine: Engine, cluster: &str) -> BTreeMap<String, String> {
    let mut labels = cluster_labels(engine, cluster);
    labels.insert(label::COMPONENT.to_owned(), ROUTER_COMPONENT.to_owned());
    labels
}

/// Label selector of a cluster's router Pods.
pub fn router_selector(cluster: &str) -> String {
    format!(
        "{},{}={ROUTER_COMPONENT}",
        cluster_selector(cluster),
        label::COMPONENT
    )
}

/// The ordinal of `pod` if it is named `<shard>-<ordinal>`.
pub fn pod_ordinal(shard: &str, pod: &str) -> Option<i32> {
    let digits = pod.strip_prefix(shard)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The ordinal of a PVC named `data-<shard>-<ordinal>`.
pub fn pvc_ordinal(shard: &str, pvc: &str) -> Option<i32> {
    pod_ordinal(shard, pvc.strip_prefix("data-")?)
}

/// The database superuser of `engine`.
pub fn superuser(engine: Engine) -> &'static str {
    match engine {
        Engine::Redis => "default",
        Engine::Postgres => "postgres",
    }
}

/// Labels of every object of cluster `cluster`: name, instance, managed-by, cluster.
pub fn cluster_labels(engine: Engine, cluster: &str) -> BTreeMap<String, String> {
    [
        (label::NAME, engine.as_str()),
        (label::INSTANCE, cluster),
        (label::MANAGED_BY, MANAGED_BY),
        (label::CLUSTER, cluster),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Labels of a Shard and of its Services (component `shard`).
pub fn shard_labels(engine: Engine, cluster: &str, index: i32) -> BTreeMap<String, String> {
    let mut labels = cluster_labels(engine, cluster);
    labels.insert(label::SHARD.to_owned(), index.to_string());
    labels.insert(label::COMPONENT.to_owned(), "shard".to_owned());
    labels
}

/// Labels of an instance's PVC (component `database`, instance = the Pod name).
pub fn pvc_labels(
    engine: Engine,
    cluster: &str,
    index: i32,
    pod: &str,
) -> BTreeMap<String, String> {
    let mut labels = cluster_labels(engine, cluster);
    labels.insert(label::SHARD.to_owned(), index.to_string());
    labels.insert(label::COMPONENT.to_owned(), "database".to_owned());
    labels.insert(label::INSTANCE_POD.to_owned(), pod.to_owned());
    labels
}

/// Labels of an instance Pod: the PVC's labels plus its role.
pub fn pod_labels(
    engine: Engine,
    cluster: &str,
    index: i32,
    pod: &str,
    role: Role,
) -> BTreeMap<String, String> {
    let mut labels = pvc_labels(engine, cluster, index, pod);
    labels.insert(label::ROLE.to_owned(), role.as_str().to_owned());
    labels
}

/// Label selector (`k=v,...`) of the instances of one shard.
pub fn shard_instances_selector(cluster: &str, index: i32) -> String {
    format!(
        "{}={MANAGED_BY},{}={cluster},{}={index},{}=database",
        label::MANAGED_BY,
        label::CLUSTER,
        label::SHARD,
        label::COMPONENT
    )
}

/// Label selector of every object the operator manages for `cluster`.
pub fn cluster_selector(cluster: &str) -> String {
    format!(
        "{}={MANAGED_BY},{}={cluster}",
        label::MANAGED_BY,
        label::CLUSTER
    )
}

/// Label selector of everything the operator manages.
pub fn managed_selector() -> String {
    format!("{}={MANAGED_BY}", label::MANAGED_BY)
}

/// A controller owner reference to `owner` with `blockOwnerDeletion`.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    let mut reference = owner.controller_owner_ref(&())?;
    reference.block_owner_deletion = Some(true);
    Some(reference)
}

/// The owner reference of a Shard to its cluster.
pub fn cluster_ref(cluster: &ShardedCluster) -> Option<OwnerReference> {
    controller_ref(cluster)
}

/// The owner reference of an instance object to its Shard.
pub fn shard_ref(shard: &Shard) -> Option<OwnerReference> {
    controller_ref(shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let shard = shard_name("c", 2);
        assert_eq!(shard, "c-2");
        let pod = pod_name(&shard, 1);
        assert_eq!(pod, "c-2-1");
        assert_eq!(pvc_name(&pod), "data-c-2-1");
        assert_eq!(rw_service(&shard), "c-2-rw");
        assert_eq!(ro_service(&shard), "c-2-ro");
        assert_eq!(headless_service(&shard), "c-2-pods");
        assert_eq!(secret_name("c"), "c-credentials");
        assert_eq!(routing_name("c"), "c-routing");
    }

    #[test]
    fn ordinals_parse_only_for_the_right_shard() {
        assert_eq!(pod_ordinal("c-1", "c-1-0"), Some(0));
        assert_eq!(pod_ordinal("c-1", "c-1-12"), Some(12));
        assert_eq!(pod_ordinal("c-1", "c-10-0"), None);
        assert_eq!(pod_ordinal("c-1", "c-1-"), None);
        assert_eq!(pod_ordinal("c-1", "c-1-01"), None);
        assert_eq!(pod_ordinal("c-1", "c-1-x"), None);
        assert_eq!(pvc_ordinal("c-1", "data-c-1-3"), Some(3));
        assert_eq!(pvc_ordinal("c-1", "c-1-3"), None);
    }

    #[test]
    fn pod_labels_carry_role_and_instance() {
        let labels = pod_labels(Engine::Redis, "c", 0, "c-0-1", Role::Replica);
        assert_eq!(labels[label::NAME], "redis");
        assert_eq!(labels[label::INSTANCE], "c");
        assert_eq!(labels[label::MANAGED_BY], "ringmaster");
        assert_eq!(labels[label::COMPONENT], "database");
        assert_eq!(labels[label::CLUSTER], "c");
        assert_eq!(labels[label::SHARD], "0");
        assert_eq!(labels[label::INSTANCE_POD], "c-0-1");
        assert_eq!(labels[label::ROLE], "replica");
    }
}
