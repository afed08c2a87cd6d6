//! The Shard plan and status, from the YAML fixtures of `tests/fixtures/operator/`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::objects::{AGENT_BINARY, DB_CONTAINER, INIT_CONTAINER};
use super::plan::{Observed, Plan, desired_ordinals, plan};
use super::replication::{Inputs, decide};
use super::status::status;
use crate::api::agent::{AgentStatus, DesiredRole, ReplicationReport};
use crate::api::shard::Role;
use crate::api::{Shard, ShardStatus};
use crate::operator::fixtures::{load, running};
use crate::operator::names::label;

const AGENT_IMAGE: &str = "ghcr.io/ringmaster/ringmaster:0.1.0";

fn redis_shard() -> Shard {
    load("redis-shard.yaml")
}

fn postgres_shard() -> Shard {
    load("postgres-shard.yaml")
}

fn plan_for(shard: &Shard, observed: &Observed) -> Plan {
    plan_with(shard, observed, None)
}

/// The plan after deciding with `agents`.
fn plan_with(
    shard: &Shard,
    observed: &Observed,
    agents: Option<&BTreeMap<String, AgentStatus>>,
) -> Plan {
    let decision = decide(&Inputs {
        shard,
        pods: &observed.pods,
        agents,
        agent_image: AGENT_IMAGE,
        now: now().0,
    });
    plan(shard, observed, AGENT_IMAGE, &decision.labels).unwrap()
}

/// An agent's report: `role`, server up, at epoch 0, at `position`.
pub(super) fn report(name: &str, role: Role, position: u64, streaming: bool) -> AgentStatus {
    let desired = match role {
        Role::Primary => DesiredRole::Primary,
        Role::Replica => DesiredRole::Replica,
    };
    AgentStatus {
        engine: "redis".into(),
        role: Some(role),
        desired_role: desired,
        epoch: 0,
        applied_epoch: None,
        server_up: true,
        data_dir_initialised: true,
        server_version: None,
        pid: Some(42),
        started_at: None,
        pod_name: name.into(),
        phase: "running".into(),
        restarts: 0,
        replication: Some(ReplicationReport {
            position,
            received: (role == Role::Replica).then_some(position),
            replayed: (role == Role::Replica).then_some(position),
            streaming,
            lag_seconds: (role == Role::Replica).then_some(0.0),
            ..ReplicationReport::default()
        }),
        last_error: None,
    }
}

/// The replication report of the agent of `name`.
pub(super) fn replication_of<'a>(
    agents: &'a mut BTreeMap<String, AgentStatus>,
    name: &str,
) -> &'a mut ReplicationReport {
    agents.get_mut(name).unwrap().replication.as_mut().unwrap()
}

/// Every Pod's agent healthy: the first one primary, the others streaming in sync.
fn healthy(observed: &Observed) -> BTreeMap<String, AgentStatus> {
    observed
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let role = if i == 0 { Role::Primary } else { Role::Replica };
            (p.name_any(), report(&p.name_any(), role, 1000, true))
        })
        .collect()
}

/// The status after deciding and planning with `agents`.
fn status_for(
    shard: &Shard,
    observed: &Observed,
    agents: Option<&BTreeMap<String, AgentStatus>>,
    at: &Time,
) -> ShardStatus {
    let decision = decide(&Inputs {
        shard,
        pods: &observed.pods,
        agents,
        agent_image: AGENT_IMAGE,
        now: at.0,
    });
    let plan = plan(shard, observed, AGENT_IMAGE, &decision.labels).unwrap();
    status(shard, &plan, &observed.pods, agents, &decision, at)
}

fn names<T: ResourceExt>(objects: &[T]) -> Vec<String> {
    objects.iter().map(ResourceExt::name_any).collect()
}

/// The shard's instances as they would exist after the first plan was applied,
/// each running and ready, with ordinals `ordinals`.
fn existing(shard: &Shard, ordinals: &[i32]) -> Observed {
    let mut wide = shard.clone();
    wide.spec.replicas = 9;
    let all = plan_for(&wide, &Observed::default());
    let keep = |name: &str| ordinals.iter().any(|o| name.ends_with(&format!("-{o}")));
    let pods: Vec<Pod> = all
        .create_pods
        .into_iter()
        .filter(|p| keep(&p.name_any()))
        .enumerate()
        .map(|(i, p)| running(p, &format!("127.20.0.{}", i + 10), true))
        .collect();
    let pvcs: Vec<PersistentVolumeClaim> = all
        .pvcs
        .into_iter()
        .filter(|p| keep(&p.name_any()))
        .collect();
    Observed {
        pods,
        pvcs,
        services: Vec::new(),
    }
}

fn pod<'a>(pods: &'a [Pod], name: &str) -> &'a Pod {
    pods.iter()
        .find(|p| p.name_any() == name)
        .unwrap_or_else(|| panic!("no pod {name} in {:?}", names(pods)))
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

// ------------------------------------------------------------------ ordinals

#[test]
fn ordinals_are_the_primary_plus_the_lowest_others() {
    assert_eq!(desired_ordinals(2, 0), [0, 1].into());
    assert_eq!(desired_ordinals(3, 0), [0, 1, 2].into());
    assert_eq!(desired_ordinals(2, 3), [0, 3].into());
    assert_eq!(desired_ordinals(1, 3), [3].into());
    assert_eq!(desired_ordinals(4, 1), [0, 1, 2, 3].into());
}

// ------------------------------------------------------------------ a new redis shard

#[test]
fn new_redis_shard_plans_pods_pvcs_and_services() {
    let shard = redis_shard();
    let plan = plan_for(&shard, &Observed::default());
    assert_eq!(plan.primary, "cache-0-0");
    assert_eq!(names(&plan.create_pods), ["cache-0-0", "cache-0-1"]);
    assert_eq!(names(&plan.pvcs), ["data-cache-0-0", "data-cache-0-1"]);
    assert_eq!(
        names(&plan.services),
        ["cache-0-rw", "cache-0-ro", "cache-0-pods"]
    );
    assert!(plan.delete_pods.is_empty() && plan.delete_pvcs.is_empty());
    assert!(plan.relabel_pods.is_empty() && plan.update_pending.is_empty());
    let roles: Vec<&str> = plan
        .create_pods
        .iter()
        .map(|p| p.labels()[label::ROLE].as_str())
        .collect();
    assert_eq!(roles, ["primary", "replica"]);
}

#[test]
fn services_select_the_primary_streaming_replicas_and_every_instance() {
    let plan = plan_for(&redis_shard(), &Observed::default());
    let selector = |name: &str| -> Vec<(String, String)> {
        let svc = plan.services.iter().find(|s| s.name_any() == name).unwrap();
        let spec = svc.spec.as_ref().unwrap();
        spec.selector.clone().unwrap().into_iter().collect()
    };
    let shard = [
        (label::CLUSTER.to_owned(), "cache".to_owned()),
        (label::SHARD.to_owned(), "0".to_owned()),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut all: Vec<(String, String)> = shard.to_vec();
        all.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        all.sort();
        all
    };
    assert_eq!(selector("cache-0-rw"), with(&[(label::ROLE, "primary")]));
    // A replica serves reads only once it streams from the primary.
    assert_eq!(
        selector("cache-0-ro"),
        with(&[(label::ROLE, "replica"), (label::STREAMING, "true")])
    );
    assert_eq!(selector("cache-0-pods"), with(&[]));
    let headless = plan
        .services
        .iter()
        .find(|s| s.name_any() == "cache-0-pods")
        .unwrap();
    assert_eq!(
        headless.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
}

#[test]
fn redis_primary_pod_matches_the_contract() {
    let shard = redis_shard();
    let plan = plan_for(&shard, &Observed::default());
    let expected: Value = load("expected-redis-pod.yaml");
    assert_eq!(
        to_json(&plan.create_pods[0]),
        expected,
        "actual:\n{}",
        serde_yaml::to_string(&plan.create_pods[0]).unwrap()
    );
}

#[test]
fn replica_pod_is_created_as_replica() {
    let shard = redis_shard();
    let plan = plan_for(&shard, &Observed::default());
    let replica = pod(&plan.create_pods, "cache-0-1");
    let db = &replica.spec.as_ref().unwrap().containers[0];
    let role = db
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "RINGMASTER_ROLE")
        .unwrap();
    assert_eq!(role.value.as_deref(), Some("replica"));
    assert_eq!(replica.labels()[label::ROLE], "replica");
    assert_eq!(replica.labels()[label::INSTANCE_POD], "cache-0-1");
    let claim = &replica.spec.as_ref().unwrap().volumes.as_ref().unwrap()[2];
    assert_eq!(
        claim.persistent_volume_claim.as_ref().unwrap().claim_name,
        "data-cache-0-1"
    );
}

#[test]
fn services_select_by_role_and_the_headless_one_every_instance() {
    let plan = plan_for(&redis_shard(), &Observed::default());
    let specs: Vec<Value> = plan.services.iter().map(|s| to_json(&s.spec)).collect();
    let ports = json!([
        {"name": "db", "port": 6379, "targetPort": "db", "protocol": "TCP"},
        {"name": "agent", "port": 8000, "targetPort": "agent", "protocol": "TCP"}
    ]);
    assert_eq!(
        specs[0],
        json!({"type": "ClusterIP", "ports": ports, "selector": {
            "ringmaster.dev/cluster": "cache", "ringmaster.dev/shard": "0",
            "ringmaster.dev/role": "primary"}})
    );
    assert_eq!(
        specs[1]["selector"]["ringmaster.dev/role"],
        json!("replica")
    );
    assert_eq!(
        specs[2],
        json!({"type": "ClusterIP", "clusterIP": "None", "publishNotReadyAddresses": true,
               "ports": ports, "selector": {
            "ringmaster.dev/cluster": "cache", "ringmaster.dev/shard": "0"}})
    );
    for svc in &plan.services {
        assert_eq!(svc.labels()[label::COMPONENT], "shard");
        let owner = &svc.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Shard", "cache-0")
        );
        assert_eq!(owner.controller, Some(true));
    }
}

#[test]
fn redis_pvcs_are_owned_by_the_shard() {
    let plan = plan_for(&redis_shard(), &Observed::default());
    let pvc = to_json(&plan.pvcs[0]);
    assert_eq!(
        pvc["spec"],
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}})
    );
    assert_eq!(
        pvc["metadata"]["labels"]["app.kubernetes.io/component"],
        "database"
    );
    assert_eq!(
        pvc["metadata"]["labels"]["ringmaster.dev/instance"],
        "cache-0-0"
    );
    assert!(
        pvc["metadata"]["labels"]
            .get("ringmaster.dev/role")
            .is_none()
    );
    assert_eq!(pvc["metadata"]["ownerReferences"][0]["name"], "cache-0");
    assert_eq!(
        pvc["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
        true
    );
}

// ------------------------------------------------------------------ postgres

#[test]
fn postgres_shard_uses_its_port_class_size_and_resources() {
    let shard = postgres_shard();
    let plan = plan_for(&shard, &Observed::default());
    assert_eq!(
        names(&plan.create_pods),
        ["orders-0-0", "orders-0-1", "orders-0-2"]
    );
    let primary = to_json(&plan.create_pods[0]);
    let db = &primary["spec"]["containers"][0];
    assert_eq!(db["image"], "postgres:16");
    assert_eq!(
        db["ports"][0],
        json!({"name": "db", "containerPort": 5432, "protocol": "TCP"})
    );
    assert_eq!(
        db["resources"],
        json!({"requests": {"cpu": "250m", "memory": "512Mi"}})
    );
    let env: BTreeMap<String, Value> = db["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
        .collect();
    assert_eq!(env["RINGMASTER_ENGINE"]["value"], "postgres");
    assert_eq!(env["RINGMASTER_CLUSTER"]["value"], "orders");
    assert_eq!(
        env["RINGMASTER_USERNAME"]["valueFrom"]["secretKeyRef"],
        json!({"name": "orders-credentials", "key": "username"})
    );
    // Retained volumes: no owner, so deleting the cluster keeps them.
    let pvc = to_json(&plan.pvcs[0]);
    assert!(pvc["metadata"].get("ownerReferences").is_none(), "{pvc}");
    assert_eq!(pvc["spec"]["storageClassName"], "fast");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "5Gi");
    assert_eq!(
        plan.services[0]
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()[0]
            .port,
        5432
    );
}

// ------------------------------------------------------------------ steady state

#[test]
fn an_unchanged_shard_plans_no_change() {
    let shard = redis_shard();
    let observed = existing(&shard, &[0, 1]);
    let plan = plan_for(&shard, &observed);
    assert!(
        plan.create_pods.is_empty(),
        "{:?}",
        names(&plan.create_pods)
    );
    assert!(plan.delete_pods.is_empty() && plan.replace_pods.is_empty());
    assert!(plan.relabel_pods.is_empty() && plan.delete_pvcs.is_empty());
    assert!(plan.update_pending.is_empty());
    assert_eq!(
        plan.pvcs,
        existing(&shard, &[0, 1]).pvcs,
        "PVCs re-applied unchanged"
    );
}

#[test]
fn a_missing_pod_is_recreated_with_the_same_name_and_volume() {
    let shard = redis_shard();
    let mut observed = existing(&shard, &[0, 1]);
    observed.pods.retain(|p| p.name_any() != "cache-0-1");
    let plan = plan_for(&shard, &observed);
    assert_eq!(names(&plan.create_pods), ["cache-0-1"]);
    assert!(names(&plan.pvcs).contains(&"data-cache-0-1".to_owned()));
    assert!(plan.delete_pvcs.is_empty());
}

#[test]
fn terminating_pods_are_neither_recreated_nor_deleted_again() {
    let shard = redis_shard();
    let mut observed = existing(&shard, &[0, 1, 2]);
    for pod in &mut observed.pods {
        if pod.name_any() != "cache-0-0" {
            pod.metadata.deletion_timestamp = Some(Time("2024-01-01T00:00:00Z".parse().unwrap()));
        }
    }
    let plan = plan_for(&shard, &observed);
    assert!(plan.create_pods.is_empty());
    assert!(plan.delete_pods.is_empty(), "{:?}", plan.delete_pods);
}

#[test]
fn failed_pods_are_replaced() {
    let shard = redis_shard();
    let mut observed = existing(&shard, &[0, 1]);
    observed.pods[1].status.as_mut().unwrap().phase = Some("Failed".into());
    let plan = plan_for(&shard, &observed);
    assert_eq!(plan.replace_pods, ["cache-0-1"]);
    assert!(plan.create_pods.is_empty());
}

// ------------------------------------------------------------------ scaling

#[test]
fn scaling_up_creates_the_next_ordinals() {
    let mut shard = redis_shard();
    shard.spec.replicas = 3;
    let plan = plan_for(&shard, &existing(&shard, &[0, 1]));
    assert_eq!(names(&plan.create_pods), ["cache-0-2", "cache-0-3"]);
    assert!(
        plan.create_pods
            .iter()
            .all(|p| p.labels()[label::ROLE] == "replica")
    );
    assert!(plan.delete_pods.is_empty());
    assert!(plan.scales());
}

#[test]
fn scaling_down_removes_the_highest_replicas_and_their_volumes() {
    let mut shard = redis_shard();
    let observed = existing(&shard, &[0, 1, 2, 3]);
    shard.spec.replicas = 1;
    let plan = plan_for(&shard, &observed);
    assert_eq!(plan.delete_pods, ["cache-0-2", "cache-0-3"]);
    assert_eq!(plan.delete_pvcs, ["data-cache-0-2", "data-cache-0-3"]);
    assert!(plan.create_pods.is_empty());
}

#[test]
fn scaling_down_keeps_volumes_when_retained() {
    let mut shard = redis_shard();
    let observed = existing(&shard, &[0, 1, 2]);
    shard.spec.replicas = 0;
    shard.spec.pvc_retention.when_scaled = crate::api::PvcRetention::Retain;
    let plan = plan_for(&shard, &observed);
    assert_eq!(plan.delete_pods, ["cache-0-1", "cache-0-2"]);
    assert!(plan.delete_pvcs.is_empty());
}

#[test]
fn scaling_down_never_removes_a_high_ordinal_primary() {
    let mut shard = redis_shard();
    shard.spec.primary = Some("cache-0-3".into());
    let observed = existing(&shard, &[0, 1, 2, 3]);
    shard.spec.replicas = 1;
    let plan = plan_for(&shard, &observed);
    assert_eq!(plan.primary, "cache-0-3");
    assert_eq!(plan.delete_pods, ["cache-0-1", "cache-0-2"]);
    shard.spec.replicas = 0;
    let plan = plan_for(&shard, &observed);
    assert_eq!(plan.delete_pods, ["cache-0-0", "cache-0-1", "cache-0-2"]);
    assert!(!plan.delete_pvcs.contains(&"data-cache-0-3".to_owned()));
}

// ------------------------------------------------------------------ roles, images, volumes

#[test]
fn a_primary_edit_is_a_switchover_request_not_a_relabel() {
    let mut shard = redis_shard();
    let observed = existing(&shard, &[0, 1]);
    shard.status = Some(ShardStatus {
        primary: Some("cache-0-0".into()),
        ..ShardStatus::default()
    });
    shard.spec.primary = Some("cache-0-1".into());
    let plan = plan_for(&shard, &observed);
    assert_eq!(plan.primary, "cache-0-0");
    assert!(plan.relabel_pods.is_empty(), "{:?}", plan.relabel_pods);
}

#[test]
fn a_new_primary_in_the_status_relabels_both_pods_only() {
    let mut shard = redis_shard();
    let observed = existing(&shard, &[0, 1]);
    shard.status = Some(ShardStatus {
        primary: Some("cache-0-1".into()),
        ..ShardStatus::default()
    });
    let plan = plan_for(&shard, &observed);
    assert_eq!(plan.primary, "cache-0-1");
    let roles: Vec<(String, Option<String>)> = plan
        .relabel_pods
        .iter()
        .map(|p| (p.pod.clone(), p.labels[label::ROLE].clone()))
        .collect();
    assert_eq!(
        roles,
        [
            ("cache-0-0".to_owned(), Some("replica".to_owned())),
            ("cache-0-1".to_owned(), Some("primary".to_owned()))
        ]
    );
    // Only the labels that change, nothing else of the Pod.
    assert_eq!(plan.relabel_pods[0].labels.len(), 1);
    assert!(plan.create_pods.is_empty() && plan.delete_pods.is_empty());
}

#[test]
fn an_invalid_primary_keeps_the_current_one() {
    let mut shard = redis_shard();
    shard.spec.primary = Some("someone-else".into());
    shard.status = Some(ShardStatus {
        primary: Some("cache-0-1".into()),
        ..ShardStatus::default()
    });
    let plan = plan_for(&shard, &existing(&shard, &[0, 1]));
    assert_eq!(plan.primary, "cache-0-1");
}

#[test]
fn pods_created_during_a_change_start_around_its_target_at_its_epoch() {
    use crate::api::shard::{ChangeKind, ChangePhase, PrimaryChange};
    let mut shard = redis_shard();
    let mut observed = existing(&shard, &[0, 1]);
    observed.pods.retain(|p| p.name_any() == "cache-0-1");
    shard.status = Some(ShardStatus {
        primary: Some("cache-0-0".into()),
        epoch: 3,
        change: Some(PrimaryChange {
            kind: ChangeKind::Failover,
            phase: ChangePhase::Promoting,
            from: "cache-0-0".into(),
            to: "cache-0-1".into(),
            reason: "PrimaryUnhealthy".into(),
            started_at: now(),
            epoch: 3,
            phase_since: None,
        }),
        ..ShardStatus::default()
    });
    let plan = plan_for(&shard, &observed);
    assert_eq!(names(&plan.create_pods), ["cache-0-0"]);
    let env = &plan.create_pods[0].spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(value("RINGMASTER_ROLE").as_deref(), Some("replica"));
    assert_eq!(value("RINGMASTER_EPOCH").as_deref(), Some("3"));
    assert_eq!(plan.create_pods[0].labels()[label::ROLE], "replica");
}

#[test]
fn a_new_image_is_an_update_pending_not_an_in_place_change() {
    let mut shard = redis_shard();
    let observed = existing(&shard, &[0, 1]);
    shard.spec.image = "redis:7.2".into();
    let plan = plan_for(&shard, &observed);
    assert_eq!(plan.update_pending, ["cache-0-0", "cache-0-1"]);
    assert!(plan.create_pods.is_empty() && plan.relabel_pods.is_empty());
}

#[test]
fn new_resources_or_a_new_agent_image_are_an_update_pending() {
    let mut shard = redis_shard();
    let observed = existing(&shard, &[0, 1]);
    let same = plan_for(&shard, &observed);
    assert!(same.update_pending.is_empty(), "the same template");

    shard.spec.resources = serde_json::from_value(serde_json::json!({
        "requests": { "cpu": "250m", "memory": "128Mi" }
    }))
    .unwrap();
    let resized = plan_for(&shard, &observed);
    assert_eq!(resized.update_pending, ["cache-0-0", "cache-0-1"]);
    assert!(resized.create_pods.is_empty() && resized.relabel_pods.is_empty());

    let shard = redis_shard();
    let decision = decide(&Inputs {
        shard: &shard,
        pods: &observed.pods,
        agents: None,
        agent_image: "ghcr.io/ringmaster/ringmaster:0.2.0",
        now: now().0,
    });
    let upgraded = plan(
        &shard,
        &observed,
        "ghcr.io/ringmaster/ringmaster:0.2.0",
        &decision.labels,
    )
    .unwrap();
    assert_eq!(upgraded.update_pending, ["cache-0-0", "cache-0-1"]);
}

#[test]
fn a_pod_without_a_template_hash_is_an_update_pending() {
    let shard = redis_shard();
    let mut observed = existing(&shard, &[0, 1]);
    observed.pods[1].metadata.annotations = None;
    let planned = plan_for(&shard, &observed);
    assert_eq!(planned.update_pending, ["cache-0-1"]);
}

#[test]
fn volumes_grow_with_the_spec_and_never_shrink() {
    let mut shard = redis_shard();
    let observed = existing(&shard, &[0, 1]);
    shard.spec.storage.size = "2Gi".into();
    let plan = plan_for(&shard, &observed);
    let sizes: Vec<&str> = plan
        .pvcs
        .iter()
        .map(|p| super::plan::requested_storage(p).unwrap())
        .collect();
    assert_eq!(sizes, ["2Gi", "2Gi"]);
    // A claim already larger than the spec (e.g. a retained one) keeps its size.
    let mut observed = existing(&shard, &[0, 1]);
    observed.pvcs[0]
        .spec
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .requests
        .as_mut()
        .unwrap()
        .insert(
            "storage".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("5Gi".into()),
        );
    let plan = plan_for(&shard, &observed);
    assert_eq!(super::plan::requested_storage(&plan.pvcs[0]), Some("5Gi"));
    assert_eq!(super::plan::requested_storage(&plan.pvcs[1]), Some("2Gi"));
}

// ------------------------------------------------------------------ status

fn now() -> Time {
    Time("2024-05-01T12:00:00Z".parse().unwrap())
}

fn later() -> Time {
    Time("2024-05-01T12:05:00Z".parse().unwrap())
}

fn condition<'a>(status: &'a ShardStatus, type_: &str) -> &'a crate::api::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {:?}", status.conditions))
}

#[test]
fn all_ready_streaming_shard_is_ready_and_replicating() {
    let shard = redis_shard();
    let observed = existing(&shard, &[0, 1]);
    let mut agents = healthy(&observed);
    replication_of(&mut agents, "cache-0-0").position = 1500;
    let status = status_for(&shard, &observed, Some(&agents), &now());
    assert_eq!(status.ready_instances, 2);
    assert_eq!(status.ready.as_deref(), Some("2/2"));
    assert_eq!(status.primary.as_deref(), Some("cache-0-0"));
    assert_eq!(status.observed_generation, Some(1));
    let instances: Vec<(&str, Option<Role>, bool, Option<&str>)> = status
        .instances
        .iter()
        .map(|i| (i.name.as_str(), i.role, i.ready, i.pod_ip.as_deref()))
        .collect();
    assert_eq!(
        instances,
        [
            ("cache-0-0", Some(Role::Primary), true, Some("127.20.0.10")),
            ("cache-0-1", Some(Role::Replica), true, Some("127.20.0.11"))
        ]
    );
    let replica = &status.instances[1];
    assert_eq!(replica.streaming, Some(true));
    assert_eq!(replica.lag_bytes, Some(500));
    assert_eq!(replica.position.as_deref(), Some("1000"));
    assert_eq!(status.instances[0].position.as_deref(), Some("1500"));
    assert_eq!(status.instances[0].streaming, None);
    assert_eq!(status.max_lag_bytes, Some(500));
    assert_eq!(condition(&status, "Ready").status, "True");
    assert_eq!(condition(&status, "Progressing").status, "False");
    assert_eq!(condition(&status, "Degraded").status, "False");
    let replication = condition(&status, "ReplicationConfigured");
    assert_eq!(
        (replication.status.as_str(), replication.reason.as_str()),
        ("True", "Streaming")
    );
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1))
    );
}

#[test]
fn postgres_positions_are_lsns() {
    let shard = postgres_shard();
    let observed = existing(&shard, &[0, 1, 2]);
    let mut agents = healthy(&observed);
    for a in agents.values_mut() {
        let r = a.replication.as_mut().unwrap();
        r.position = 0x1_0000_0100;
        r.received = r.received.map(|_| r.position);
        r.timeline = Some(2);
    }
    let status = status_for(&shard, &observed, Some(&agents), &now());
    assert_eq!(status.instances[0].position.as_deref(), Some("1/100"));
    assert_eq!(status.instances[1].timeline, Some(2));
    assert_eq!(status.instances[1].lag_bytes, Some(0));
}

#[test]
fn a_replica_that_does_not_stream_is_reported_and_not_labelled() {
    let shard = redis_shard();
    let observed = existing(&shard, &[0, 1]);
    let mut agents = healthy(&observed);
    replication_of(&mut agents, "cache-0-1").streaming = false;
    let status = status_for(&shard, &observed, Some(&agents), &now());
    let replication = condition(&status, "ReplicationConfigured");
    assert_eq!(
        (replication.status.as_str(), replication.reason.as_str()),
        ("False", "ReplicasNotStreaming")
    );
    assert!(
        replication.message.contains("cache-0-1"),
        "{}",
        replication.message
    );
    assert_eq!(
        condition(&status, "Degraded").reason,
        "ReplicasNotStreaming"
    );
    // Labels: streaming only on replicas that stream.
    let quiet = plan_with(&shard, &observed, Some(&agents));
    assert!(quiet.relabel_pods.is_empty(), "{:?}", quiet.relabel_pods);
    let labelled = plan_with(&shard, &observed, Some(&healthy(&observed)));
    assert_eq!(labelled.relabel_pods.len(), 1);
    assert_eq!(labelled.relabel_pods[0].pod, "cache-0-1");
    assert_eq!(
        labelled.relabel_pods[0].labels[label::STREAMING].as_deref(),
        Some("true")
    );
}

#[test]
fn a_shard_without_replicas_is_replication_configured() {
    let mut shard = redis_shard();
    shard.spec.replicas = 0;
    let observed = existing(&shard, &[0]);
    let status = status_for(&shard, &observed, Some(&healthy(&observed)), &now());
    let replication = condition(&status, "ReplicationConfigured");
    assert_eq!(
        (replication.status.as_str(), replication.reason.as_str()),
        ("True", "NoReplicas")
    );
}

#[test]
fn a_replica_not_ready_degrades_the_shard() {
    let shard = redis_shard();
    let mut observed = existing(&shard, &[0, 1]);
    observed.pods[1] = running(observed.pods[1].clone(), "127.20.0.11", false);
    let status = status_for(&shard, &observed, Some(&healthy(&observed)), &now());
    assert_eq!(status.ready.as_deref(), Some("1/2"));
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "InstancesNotReady")
    );
    assert!(ready.message.contains("cache-0-1"), "{}", ready.message);
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "ReplicasNotReady")
    );
    assert_eq!(
        condition(&status, "Progressing").reason,
        "InstancesStarting"
    );
}

#[test]
fn a_new_shard_reports_scaling_and_no_instances() {
    let shard = redis_shard();
    let status = status_for(&shard, &Observed::default(), Some(&BTreeMap::new()), &now());
    assert_eq!(status.ready.as_deref(), Some("0/2"));
    assert!(status.instances.is_empty());
    let progressing = condition(&status, "Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("True", "Scaling")
    );
    assert!(progressing.message.contains("cache-0-0, cache-0-1"));
    assert_eq!(condition(&status, "Degraded").reason, "PrimaryNotReady");
    assert!(
        status.primary_unhealthy_since.is_none(),
        "a starting primary is not failing"
    );
}

#[test]
fn update_pending_is_reported_as_progressing() {
    let mut shard = redis_shard();
    let observed = existing(&shard, &[0, 1]);
    shard.spec.image = "redis:7.2".into();
    let status = status_for(&shard, &observed, Some(&healthy(&observed)), &now());
    let progressing = condition(&status, "Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("True", "UpdatePending")
    );
    assert!(
        progressing.message.contains("rolling update"),
        "{}",
        progressing.message
    );
}

#[test]
fn the_agents_report_wins_over_the_label() {
    let shard = redis_shard();
    let observed = existing(&shard, &[0, 1]);
    let mut agents = healthy(&observed);
    agents.insert(
        "cache-0-1".to_owned(),
        report("cache-0-1", Role::Primary, 1000, false),
    );
    let status = status_for(&shard, &observed, Some(&agents), &now());
    assert_eq!(status.instances[1].role, Some(Role::Primary));
}

#[test]
fn status_is_stable_and_times_move_only_on_transitions() {
    let mut shard = redis_shard();
    let observed = existing(&shard, &[0, 1]);
    let agents = healthy(&observed);
    let first = status_for(&shard, &observed, Some(&agents), &now());
    shard.status = Some(first.clone());
    let second = status_for(&shard, &observed, Some(&agents), &later());
    assert_eq!(
        first, second,
        "an unchanged shard gets the identical status"
    );

    let mut lagging = agents.clone();
    replication_of(&mut lagging, "cache-0-1").streaming = false;
    let third = status_for(&shard, &observed, Some(&lagging), &later());
    assert_eq!(
        condition(&third, "ReplicationConfigured").last_transition_time,
        later()
    );
    assert_eq!(condition(&third, "Degraded").last_transition_time, later());
    assert_eq!(
        condition(&third, "Ready").last_transition_time,
        now(),
        "unchanged conditions keep their time"
    );
}

#[test]
fn pod_spec_details_follow_the_contract() {
    let plan = plan_for(&redis_shard(), &Observed::default());
    let spec = plan.create_pods[0].spec.as_ref().unwrap();
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, INIT_CONTAINER);
    assert_eq!(init.image.as_deref(), Some(AGENT_IMAGE));
    let db = &spec.containers[0];
    assert_eq!(db.name, DB_CONTAINER);
    assert_eq!(db.command.as_ref().unwrap(), &[AGENT_BINARY, "instance"]);
}

#[test]
fn a_restarted_instance_is_failing_not_starting() {
    let shard = redis_shard();
    let mut observed = existing(&shard, &[0, 1]);
    let mut replica = running(observed.pods[1].clone(), "127.20.0.11", false);
    replica.status.as_mut().unwrap().container_statuses =
        Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
            name: DB_CONTAINER.into(),
            restart_count: 3,
            ..Default::default()
        }]);
    observed.pods[1] = replica;
    let status = status_for(&shard, &observed, Some(&healthy(&observed)), &now());
    let progressing = condition(&status, "Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "InstancesFailing")
    );
    assert!(progressing.message.contains("cache-0-1"));
    assert_eq!(condition(&status, "Degraded").reason, "ReplicasNotReady");
}

#[test]
fn drifting_positions_are_not_a_significant_change() {
    use super::status::changed_significantly;
    let shard = redis_shard();
    let observed = existing(&shard, &[0, 1]);
    let agents = healthy(&observed);
    let first = status_for(&shard, &observed, Some(&agents), &now());
    let mut drifted = agents.clone();
    for a in drifted.values_mut() {
        let r = a.replication.as_mut().unwrap();
        r.position += 14;
        r.received = r.received.map(|p| p + 14);
        r.lag_seconds = r.lag_seconds.map(|_| 7.0);
    }
    let second = status_for(&shard, &observed, Some(&drifted), &now());
    assert_ne!(first, second);
    assert!(!changed_significantly(&first, &second, 1024));
    assert!(
        changed_significantly(&first, &second, 10),
        "beyond the tolerance"
    );
    let mut not_streaming = drifted.clone();
    replication_of(&mut not_streaming, "cache-0-1").streaming = false;
    let third = status_for(&shard, &observed, Some(&not_streaming), &now());
    assert!(changed_significantly(&first, &third, 1024));
}
