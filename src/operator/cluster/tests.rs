//! The ShardedCluster plan and status, from the YAML fixtures of
//! `tests/fixtures/operator/`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::json;

use super::plan::{Observed, Plan, plan, shard};
use super::status::{PROVISIONING, phase, shard_progressing, shard_ready, status};
use crate::api::routing::RoutingTable;
use crate::api::{Shard, ShardStatus, ShardedCluster, ShardedClusterStatus};
use crate::operator::conditions::{Desired, settle};
use crate::operator::credentials::SecretPlan;
use crate::operator::fixtures::{load, yaml};
use crate::operator::names::{ROUTING_KEY, ROUTING_VERSION_ANNOTATION, label};

fn redis() -> ShardedCluster {
    load("redis-cluster.yaml")
}

fn postgres() -> ShardedCluster {
    load("postgres-cluster.yaml")
}

fn now() -> Time {
    Time("2024-05-01T12:00:00Z".parse().unwrap())
}

fn later() -> Time {
    Time("2024-05-01T12:05:00Z".parse().unwrap())
}

fn plan_for(cluster: &ShardedCluster, observed: &Observed) -> Plan {
    plan(cluster, observed).unwrap()
}

/// How a test Shard's status looks.
#[derive(Clone, Copy, PartialEq)]
enum State {
    /// Every instance ready.
    Ready,
    /// A new instance is starting (Progressing=True InstancesStarting).
    Starting,
    /// An instance restarted and is not ready (Progressing=False InstancesFailing).
    Failing,
}

/// The cluster's Shards as the apiserver returns them after creation, with a
/// status in `states`.
fn shards(cluster: &ShardedCluster, states: &[State]) -> Vec<Shard> {
    states
        .iter()
        .enumerate()
        .map(|(i, &state)| {
            let mut s = shard(cluster, i as i32, true);
            s.metadata.generation = Some(1);
            s.metadata.uid = Some(format!("uid-shard-{i}"));
            let name = s.name_any();
            let ready = state == State::Ready;
            let progressing = match state {
                State::Ready => Desired::no("Progressing", "UpToDate", ""),
                State::Starting => Desired::yes("Progressing", "InstancesStarting", ""),
                State::Failing => Desired::no("Progressing", "InstancesFailing", ""),
            };
            s.status = Some(ShardStatus {
                observed_generation: Some(1),
                primary: Some(format!("{name}-0")),
                ready_instances: if ready { 2 } else { 1 },
                ready: Some(format!("{}/2", if ready { 2 } else { 1 })),
                conditions: settle(
                    vec![
                        if ready {
                            Desired::yes("Ready", "InstancesReady", "")
                        } else {
                            Desired::no("Ready", "InstancesNotReady", "")
                        },
                        progressing,
                    ],
                    &[],
                    Some(1),
                    &now(),
                ),
                ..ShardStatus::default()
            });
            s
        })
        .collect()
}

fn complete_secret() -> Secret {
    yaml(
        r#"
metadata: { name: cache-credentials, namespace: shop, resourceVersion: "7" }
data: { username: ZGVmYXVsdA==, password: eHh4, agent-token: eXl5, replication-password: enp6 }
"#,
    )
}

fn service_ips() -> BTreeMap<String, String> {
    [
        ("cache-0-rw", "127.21.0.10"),
        ("cache-0-ro", "127.21.0.11"),
        ("cache-0-pods", "None"),
        ("cache-1-rw", "127.21.0.20"),
        ("cache-1-ro", "127.21.0.21"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

// ------------------------------------------------------------------ a new cluster

#[test]
fn new_redis_cluster_plans_secret_shards_and_routing() {
    let cluster = redis();
    let plan = plan_for(&cluster, &Observed::default());
    assert_eq!(plan.secret, SecretPlan::Create);
    let created: Vec<String> = plan.create_shards.iter().map(|s| s.name_any()).collect();
    assert_eq!(created, ["cache-0", "cache-1"]);
    assert!(plan.apply_shards.is_empty() && plan.extra_shards.is_empty());
    assert_eq!(plan.routing.version, 1);
    assert!(
        plan.routing
            .shards
            .iter()
            .all(|s| s.rw.is_none() && s.ro.is_none())
    );
}

#[test]
fn shards_inherit_the_cluster_spec_and_first_primary() {
    let cluster = redis();
    let plan = plan_for(&cluster, &Observed::default());
    let shard1 = serde_json::to_value(&plan.create_shards[1]).unwrap();
    let expected: serde_json::Value = yaml(
        r#"
apiVersion: ringmaster.dev/v1alpha1
kind: Shard
metadata:
  name: cache-1
  namespace: shop
  labels:
    app.kubernetes.io/name: redis
    app.kubernetes.io/instance: cache
    app.kubernetes.io/managed-by: ringmaster
    app.kubernetes.io/component: shard
    ringmaster.dev/cluster: cache
    ringmaster.dev/shard: "1"
  ownerReferences:
    - apiVersion: ringmaster.dev/v1alpha1
      kind: ShardedCluster
      name: cache
      uid: 6f1c1d1e-0000-4000-8000-000000000001
      controller: true
      blockOwnerDeletion: true
spec:
  cluster: cache
  index: 1
  engine: redis
  image: redis:7.0
  replicas: 1
  weight: 3
  primary: cache-1-0
  storage: { size: 1Gi }
  replication: { mode: async }
  failover: { enabled: true, unhealthyAfter: 5s, maxLagBytes: 16777216, allowDataLoss: false }
  pvcRetention: { whenScaled: Delete, whenDeleted: Delete }
"#,
    );
    assert_eq!(shard1, expected);
}

#[test]
fn postgres_shards_carry_every_knob() {
    let cluster = postgres();
    let plan = plan_for(&cluster, &Observed::default());
    let spec = &plan.create_shards[0].spec;
    assert_eq!(spec.image, "postgres:16");
    assert_eq!(spec.replicas, 2);
    assert_eq!(spec.storage.size, "5Gi");
    assert_eq!(spec.storage.storage_class_name.as_deref(), Some("fast"));
    assert!(spec.resources.is_some());
    assert!(!spec.failover.enabled);
    assert_eq!(spec.replication.mode, crate::api::ReplicationMode::Sync);
    assert_eq!(
        spec.pvc_retention.when_deleted,
        crate::api::PvcRetention::Retain
    );
    assert_eq!(plan.routing.engine, crate::api::Engine::Postgres);
}

// ------------------------------------------------------------------ existing objects

#[test]
fn existing_shards_are_applied_without_primary() {
    let cluster = redis();
    let mut existing = shards(&cluster, &[State::Ready; 2]);
    // The user switched shard 0 over: the apply must not touch that field.
    existing[0].spec.primary = Some("cache-0-1".into());
    let observed = Observed {
        shards: existing,
        ..Observed::default()
    };
    let plan = plan_for(&cluster, &observed);
    assert!(plan.create_shards.is_empty());
    assert_eq!(plan.apply_shards.len(), 2);
    for shard in &plan.apply_shards {
        let body = serde_json::to_value(shard).unwrap();
        assert!(body["spec"].get("primary").is_none(), "{body}");
        assert!(body.get("status").is_none(), "{body}");
    }
}

#[test]
fn an_existing_secret_is_never_planned_again() {
    let cluster = redis();
    let observed = Observed {
        secret: Some(complete_secret()),
        ..Observed::default()
    };
    assert_eq!(plan_for(&cluster, &observed).secret, SecretPlan::Keep);
    let mut partial = complete_secret();
    partial.data.as_mut().unwrap().remove("agent-token");
    let observed = Observed {
        secret: Some(partial),
        ..Observed::default()
    };
    assert_eq!(
        plan_for(&cluster, &observed).secret,
        SecretPlan::AddKeys(vec!["agent-token"])
    );
}

#[test]
fn the_secret_is_owned_and_labelled() {
    let cluster = redis();
    let data = BTreeMap::from([("password".to_owned(), ByteString(b"p".to_vec()))]);
    let secret = crate::operator::credentials::secret(&cluster, data);
    assert_eq!(secret.name_any(), "cache-credentials");
    assert_eq!(secret.labels()[label::MANAGED_BY], "ringmaster");
    assert_eq!(secret.owner_references()[0].name, "cache");
    assert_eq!(secret.owner_references()[0].controller, Some(true));
}

#[test]
fn shards_beyond_the_spec_are_reported_not_deleted() {
    let cluster = redis();
    let observed = Observed {
        shards: shards(&cluster, &[State::Ready; 4]),
        ..Observed::default()
    };
    let plan = plan_for(&cluster, &observed);
    assert_eq!(plan.extra_shards, ["cache-2", "cache-3"]);
    assert_eq!(
        plan.apply_shards.len(),
        2,
        "only the spec's shards are applied"
    );
    assert_eq!(plan.routing.shards.len(), 2, "nor routed");
}

// ------------------------------------------------------------------ routing

fn published(plan: &Plan) -> ConfigMap {
    plan.routing_config_map.clone()
}

#[test]
fn routing_lists_service_addresses_and_primaries() {
    let cluster = redis();
    let mut existing = shards(&cluster, &[State::Ready; 2]);
    existing[1].status.as_mut().unwrap().primary = Some("cache-1-1".into());
    let observed = Observed {
        shards: existing,
        service_ips: service_ips(),
        ..Observed::default()
    };
    let plan = plan_for(&cluster, &observed);
    let cm = &plan.routing_config_map;
    assert_eq!(cm.name_any(), "cache-routing");
    assert_eq!(cm.annotations()[ROUTING_VERSION_ANNOTATION], "1");
    assert_eq!(cm.owner_references()[0].name, "cache");
    let doc: serde_json::Value =
        serde_json::from_str(&cm.data.as_ref().unwrap()[ROUTING_KEY]).unwrap();
    assert_eq!(
        doc,
        json!({"cluster": "cache", "engine": "redis", "version": 1, "shards": [
            {"index": 0, "name": "cache-0", "weight": 1,
             "rw": "127.21.0.10:6379", "ro": "127.21.0.11:6379", "primary": "cache-0-0"},
            {"index": 1, "name": "cache-1", "weight": 3,
             "rw": "127.21.0.20:6379", "ro": "127.21.0.21:6379", "primary": "cache-1-1"}
        ], "ring": {"version": 1, "vnodesPerWeight": 128, "members": [
            {"shard": 0, "weight": 1}, {"shard": 1, "weight": 3}
        ]}})
    );
}

#[test]
fn routing_version_bumps_only_when_content_changes() {
    let cluster = redis();
    let first = plan_for(&cluster, &Observed::default());
    assert_eq!(first.routing.version, 1);
    // Same inputs, table already published: same version, same ConfigMap.
    let observed = Observed {
        routing: Some(published(&first)),
        ..Observed::default()
    };
    let again = plan_for(&cluster, &observed);
    assert_eq!(again.routing.version, 1);
    assert_eq!(again.routing_config_map, first.routing_config_map);
    // The Services got addresses: version 2.
    let observed = Observed {
        routing: Some(published(&first)),
        service_ips: service_ips(),
        ..Observed::default()
    };
    let second = plan_for(&cluster, &observed);
    assert_eq!(second.routing.version, 2);
    assert_eq!(
        second.routing_config_map.annotations()[ROUTING_VERSION_ANNOTATION],
        "2"
    );
    let observed = Observed {
        routing: Some(published(&second)),
        service_ips: service_ips(),
        ..Observed::default()
    };
    assert_eq!(plan_for(&cluster, &observed).routing.version, 2);
}

#[test]
fn an_unreadable_published_table_starts_over_at_one() {
    let cluster = redis();
    let mut cm = published(&plan_for(&cluster, &Observed::default()));
    cm.data
        .as_mut()
        .unwrap()
        .insert(ROUTING_KEY.into(), "garbage".into());
    let observed = Observed {
        routing: Some(cm),
        ..Observed::default()
    };
    assert_eq!(plan_for(&cluster, &observed).routing.version, 1);
    assert!(RoutingTable::parse("garbage").is_none());
}

// ------------------------------------------------------------------ status

fn condition<'a>(status: &'a ShardedClusterStatus, type_: &str) -> &'a crate::api::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {:?}", status.conditions))
}

fn status_of(cluster: &ShardedCluster, existing: Vec<Shard>, at: &Time) -> ShardedClusterStatus {
    let observed = Observed {
        shards: existing,
        ..Observed::default()
    };
    let plan = plan_for(cluster, &observed);
    status(cluster, &plan, &observed.shards, at)
}

#[test]
fn a_new_cluster_is_provisioning() {
    let cluster = redis();
    let status = status_of(&cluster, vec![], &now());
    assert_eq!(status.phase.as_deref(), Some(PROVISIONING));
    assert_eq!(status.shards, 2, "the shards being created count");
    assert_eq!(status.ready_shards, 0);
    assert_eq!(
        status.credentials_secret.as_deref(),
        Some("cache-credentials")
    );
    assert_eq!(status.routing_version, Some(1));
    assert_eq!(condition(&status, "Ready").status, "False");
    assert_eq!(condition(&status, "Progressing").reason, "CreatingShards");
    assert_eq!(condition(&status, "Degraded").status, "False");
}

#[test]
fn all_shards_ready_make_the_cluster_ready() {
    let cluster = redis();
    let status = status_of(&cluster, shards(&cluster, &[State::Ready; 2]), &now());
    assert_eq!(status.phase.as_deref(), Some("Ready"));
    assert_eq!(status.ready_shards, 2);
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        status.primaries,
        BTreeMap::from([
            ("cache-0".to_owned(), "cache-0-0".to_owned()),
            ("cache-1".to_owned(), "cache-1-0".to_owned())
        ])
    );
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "ShardsReady")
    );
    assert_eq!(condition(&status, "Progressing").status, "False");
    assert_eq!(condition(&status, "Degraded").status, "False");
}

#[test]
fn a_starting_shard_keeps_the_cluster_provisioning() {
    let mut cluster = redis();
    cluster.status = Some(status_of(
        &cluster,
        shards(&cluster, &[State::Ready; 2]),
        &now(),
    ));
    // E.g. a replica added by a scale-up: on its way, not degraded.
    let status = status_of(
        &cluster,
        shards(&cluster, &[State::Ready, State::Starting]),
        &later(),
    );
    assert_eq!(status.phase.as_deref(), Some(PROVISIONING));
    assert_eq!(status.ready_shards, 1);
    assert!(condition(&status, "Ready").message.contains("cache-1"));
    let progressing = condition(&status, "Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("True", "WaitingForShards")
    );
    assert_eq!(condition(&status, "Degraded").status, "False");
}

#[test]
fn a_failing_shard_degrades_the_cluster() {
    let mut cluster = redis();
    cluster.status = Some(status_of(
        &cluster,
        shards(&cluster, &[State::Ready; 2]),
        &now(),
    ));
    let degraded = status_of(
        &cluster,
        shards(&cluster, &[State::Ready, State::Failing]),
        &later(),
    );
    assert_eq!(degraded.phase.as_deref(), Some("Degraded"));
    let c = condition(&degraded, "Degraded");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "ShardsNotReady")
    );
    assert!(c.message.contains("cache-1"), "{}", c.message);
    assert_eq!(c.last_transition_time, later());
    assert_eq!(condition(&degraded, "Progressing").status, "False");
    // Recovered: Ready again.
    cluster.status = Some(degraded);
    let ready = status_of(&cluster, shards(&cluster, &[State::Ready; 2]), &later());
    assert_eq!(ready.phase.as_deref(), Some("Ready"));
}

#[test]
fn shards_without_status_or_with_a_stale_one_are_on_their_way() {
    let cluster = redis();
    let mut existing = shards(&cluster, &[State::Failing, State::Ready]);
    existing[0].metadata.generation = Some(2);
    assert!(
        shard_progressing(&existing[0]),
        "spec not yet seen by its controller"
    );
    existing[1].status = None;
    assert!(shard_progressing(&existing[1]));
}

#[test]
fn a_stale_shard_status_is_not_ready() {
    let cluster = redis();
    let mut existing = shards(&cluster, &[State::Ready; 2]);
    existing[0].metadata.generation = Some(2);
    assert!(!shard_ready(&existing[0]));
    assert!(shard_ready(&existing[1]));
    let status = status_of(&cluster, existing, &now());
    assert_eq!(status.ready_shards, 1);
}

#[test]
fn extra_shards_degrade_the_cluster_with_a_clear_reason() {
    let cluster = redis();
    let status = status_of(&cluster, shards(&cluster, &[State::Ready; 3]), &now());
    assert_eq!(status.phase.as_deref(), Some("Degraded"));
    assert_eq!(status.shards, 3);
    assert_eq!(status.ready_shards, 2);
    let c = condition(&status, "Degraded");
    assert_eq!(c.reason, "ShardsBeyondSpec");
    assert!(
        c.message.contains("cache-2") && c.message.contains("migration"),
        "{}",
        c.message
    );
}

#[test]
fn status_is_stable_across_passes() {
    let mut cluster = redis();
    let first = status_of(&cluster, shards(&cluster, &[State::Ready; 2]), &now());
    cluster.status = Some(first.clone());
    let second = status_of(&cluster, shards(&cluster, &[State::Ready; 2]), &later());
    assert_eq!(first, second);
}

#[test]
fn phases() {
    assert_eq!(phase(true, false, false), "Ready");
    assert_eq!(phase(false, false, false), "Provisioning");
    assert_eq!(phase(false, false, true), "Degraded");
    assert_eq!(phase(true, true, false), "Degraded");
}

mod rebalancing {
    use super::*;
    use crate::api::ShardMigration;
    use crate::api::routing::RoutingPhase;
    use crate::api::shard_migration::{MigrationRouting, ShardMigrationStatus};
    use crate::operator::cluster::rebalance::{self, desired_members};
    use crate::ring::RingDescriptor;

    fn with_ring(mut cluster: ShardedCluster, ring: RingDescriptor) -> ShardedCluster {
        cluster.status = Some(ShardedClusterStatus {
            ring: Some(ring),
            ..ShardedClusterStatus::default()
        });
        cluster
    }

    fn ring_of(cluster: &ShardedCluster, version: i64) -> RingDescriptor {
        RingDescriptor {
            version,
            vnodes_per_weight: 128,
            members: desired_members(cluster),
        }
    }

    fn scaled(shards: i32) -> ShardedCluster {
        let mut cluster = redis();
        cluster.spec.shards = shards;
        cluster
    }

    fn with_phase(
        mut m: ShardMigration,
        phase: &str,
        routing: Option<MigrationRouting>,
    ) -> ShardMigration {
        m.status = Some(ShardMigrationStatus {
            phase: Some(phase.into()),
            routing,
            ..ShardMigrationStatus::default()
        });
        m
    }

    #[test]
    fn a_new_cluster_starts_at_ring_version_one_with_nothing_to_move() {
        let cluster = redis();
        let plan = rebalance::plan(&cluster, &shards(&cluster, &[State::Ready; 2]), &[]);
        assert_eq!(plan.current, Some(ring_of(&cluster, 1)));
        assert!(plan.create.is_none() && plan.active.is_none() && plan.waiting.is_none());
        assert_eq!(plan.keep.iter().copied().collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn more_shards_wait_for_the_new_shard_then_create_one_migration() {
        let before = redis();
        let cluster = with_ring(scaled(3), ring_of(&before, 4));
        let mut states = vec![State::Ready, State::Ready, State::Starting];
        let plan = rebalance::plan(&cluster, &shards(&cluster, &states), &[]);
        assert!(plan.create.is_none(), "not before the new shard is Ready");
        let (reason, message, degraded) = plan.waiting.clone().unwrap();
        assert_eq!(reason, "WaitingForShards");
        assert!(message.contains("cache-2") && !degraded, "{message}");
        assert_eq!(plan.current.as_ref().unwrap().version, 4, "the ring stays");

        states[2] = State::Ready;
        let plan = rebalance::plan(&cluster, &shards(&cluster, &states), &[]);
        let created = plan.create.expect("a migration");
        assert_eq!(created.name_any(), "cache-ring-5");
        assert_eq!(created.spec.from_ring, ring_of(&before, 4));
        assert_eq!(created.spec.to_ring.version, 5);
        assert_eq!(created.spec.to_ring.members.len(), 3);
        assert_eq!(created.owner_references()[0].name, "cache");
    }

    #[test]
    fn a_running_migration_is_published_and_a_committed_one_advances_the_ring() {
        let before = redis();
        let cluster = with_ring(scaled(3), ring_of(&before, 1));
        let all = shards(&cluster, &[State::Ready; 3]);
        let target = ring_of(&cluster, 2);
        let m = rebalance::migration(
            &cluster,
            "cache-ring-2",
            ring_of(&before, 1),
            target.clone(),
        );

        let running = with_phase(m.clone(), "Backfill", Some(MigrationRouting::DualWrite));
        let plan = rebalance::plan(&cluster, &all, std::slice::from_ref(&running));
        assert_eq!(plan.active.as_deref(), Some("cache-ring-2"));
        assert!(plan.create.is_none(), "one migration at a time");
        assert_eq!(plan.current.as_ref().unwrap().version, 1);
        assert_eq!(plan.routing.len(), 1);
        assert_eq!(plan.routing[0].phase, RoutingPhase::DualWrite);
        assert!(plan.routing[0].moves.iter().all(|mv| mv.target == 2));

        let committed = with_phase(m.clone(), "SwitchWrites", Some(MigrationRouting::Committed));
        let plan = rebalance::plan(&cluster, &all, &[committed]);
        assert_eq!(plan.current, Some(target.clone()));
        assert!(plan.routing.is_empty(), "the targets own the ranges now");

        let done = with_phase(m, "Completed", Some(MigrationRouting::Committed));
        let plan = rebalance::plan(&with_ring(scaled(3), target), &all, &[done]);
        assert!(plan.active.is_none() && plan.create.is_none() && plan.delete.is_empty());
    }

    #[test]
    fn a_drained_shard_is_deleted_only_after_its_migration_completed() {
        let wide = scaled(3);
        let cluster = with_ring(scaled(2), ring_of(&wide, 2));
        let all = shards(&cluster, &[State::Ready; 3]);
        let plan = rebalance::plan(&cluster, &all, &[]);
        let drain = plan.create.clone().expect("a draining migration");
        assert_eq!(drain.spec.to_ring.members.len(), 2);
        assert!(
            plan.keep.contains(&2),
            "the leaving shard stays while it holds keys"
        );
        assert!(plan.delete.is_empty() && plan.extra.is_empty());

        let running = with_phase(drain.clone(), "Cleanup", Some(MigrationRouting::Committed));
        let plan = rebalance::plan(&cluster, &all, std::slice::from_ref(&running));
        assert!(plan.delete.is_empty(), "still cleaning up");
        assert_eq!(plan.current.as_ref().unwrap().members.len(), 2);

        let done = with_phase(drain, "Completed", Some(MigrationRouting::Committed));
        let committed_ring = with_ring(scaled(2), ring_of(&scaled(2), 3));
        let plan = rebalance::plan(&committed_ring, &all, &[done]);
        assert_eq!(plan.delete, ["cache-2"]);
    }

    #[test]
    fn a_rolled_back_migration_blocks_the_same_change_and_says_how_to_go_on() {
        let before = redis();
        let cluster = with_ring(scaled(3), ring_of(&before, 1));
        let all = shards(&cluster, &[State::Ready; 3]);
        let m = rebalance::migration(
            &cluster,
            "cache-ring-2",
            ring_of(&before, 1),
            ring_of(&cluster, 2),
        );
        let rolled_back = with_phase(m, "RolledBack", None);
        let plan = rebalance::plan(&cluster, &all, &[rolled_back]);
        assert!(plan.create.is_none());
        let (reason, message, degraded) = plan.waiting.unwrap();
        assert_eq!(reason, "RebalanceRolledBack");
        assert!(degraded);
        assert!(
            message.contains("cache-ring-2") && message.contains("delete"),
            "{message}"
        );
        let status = status_of_plan(&cluster, &all);
        assert_eq!(condition(&status, "Degraded").reason, "RebalanceRolledBack");
    }

    #[test]
    fn the_target_of_a_rolled_back_migration_is_deleted_once_the_spec_drops_it() {
        let before = redis();
        let grown = scaled(3);
        let m = rebalance::migration(
            &grown,
            "cache-ring-2",
            ring_of(&before, 1),
            ring_of(&grown, 2),
        );
        let rolled_back = with_phase(m, "RolledBack", None);
        let reverted = with_ring(redis(), ring_of(&before, 1));
        let all = shards(&grown, &[State::Ready; 3]);
        let plan = rebalance::plan(&reverted, &all, std::slice::from_ref(&rolled_back));
        assert_eq!(
            plan.delete,
            ["cache-2"],
            "its copies were deleted by the rollback"
        );
        assert!(plan.extra.is_empty() && plan.waiting.is_none());
        let plan = rebalance::plan(&reverted, &all, &[]);
        assert_eq!(
            plan.extra,
            ["cache-2"],
            "a shard no migration emptied is only reported"
        );
    }

    fn status_of_plan(cluster: &ShardedCluster, all: &[Shard]) -> ShardedClusterStatus {
        let m = rebalance::migration(
            cluster,
            "cache-ring-2",
            ring_of(&redis(), 1),
            ring_of(cluster, 2),
        );
        let observed = Observed {
            shards: all.to_vec(),
            migrations: vec![with_phase(m, "RolledBack", None)],
            ..Observed::default()
        };
        let plan = plan_for(cluster, &observed);
        status(cluster, &plan, all, &now())
    }
}
