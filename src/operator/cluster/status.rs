//! The status of a ShardedCluster, from its plan and its Shards' statuses (pure).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::plan::Plan;
use crate::api::{Shard, ShardedCluster, ShardedClusterStatus, condition};
use crate::operator::conditions::{Desired, is_true, name_list, settle};
use crate::operator::names;
use crate::operator::shard::status::{INSTANCES_STARTING, SCALING};

/// Phase while shards are created or their new instances start.
pub const PROVISIONING: &str = "Provisioning";
/// Phase when every shard is ready.
pub const READY: &str = "Ready";
/// Phase when every shard is ready and a ShardMigration moves ranges.
pub const REBALANCING: &str = "Rebalancing";
/// Phase when a shard is not ready and not on its way (instances failed or
/// restarted), or shards exist beyond the spec.
pub const DEGRADED: &str = "Degraded";

/// Whether `shard`'s status is current and says every instance is ready.
pub fn shard_ready(shard: &Shard) -> bool {
    shard.status.as_ref().is_some_and(|s| {
        s.observed_generation == shard.metadata.generation
            && is_true(&s.conditions, condition::READY)
            && s.ready_instances >= shard.spec.instances()
    })
}

/// Whether a shard that is not ready is on its way: its controller has not seen its
/// spec yet, or it is creating Pods or waiting for new instances to start.
pub fn shard_progressing(shard: &Shard) -> bool {
    let Some(status) = shard.status.as_ref() else {
        return true;
    };
    status.observed_generation != shard.metadata.generation
        || status.conditions.iter().any(|c| {
            c.type_ == condition::PROGRESSING
                && c.status == "True"
                && (c.reason == SCALING || c.reason == INSTANCES_STARTING)
        })
}

/// The status of `cluster` after `plan`, given its Shards as observed before the
/// plan was applied. `now` stamps conditions that change status.
pub fn status(
    cluster: &ShardedCluster,
    plan: &Plan,
    shards: &[Shard],
    now: &Time,
) -> ShardedClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let wanted = cluster.spec.shards;
    let shards = as_applied(plan, shards);
    let shards = shards.as_slice();
    let in_spec: Vec<&Shard> = shards.iter().filter(|s| s.spec.index < wanted).collect();
    let ready_shards = count(in_spec.iter().filter(|s| shard_ready(s)));
    let not_ready = not_ready(cluster, &in_spec);
    let broken: Vec<String> = in_spec
        .iter()
        .filter(|s| !shard_ready(s) && !shard_progressing(s))
        .map(|s| s.name_any())
        .collect();
    let all_ready = ready_shards >= wanted && plan.create_shards.is_empty();
    let degraded_ring = plan.ring.waiting.as_ref().is_some_and(|w| w.2);
    let mut phase = phase(
        all_ready,
        !plan.extra_shards.is_empty() || degraded_ring,
        !broken.is_empty(),
    );
    if phase == READY && plan.ring.active.is_some() {
        phase = REBALANCING;
    }
    let desired = vec![
        ready_condition(all_ready, ready_shards, wanted, &not_ready),
        progressing_condition(plan, &not_ready, &broken),
        degraded_condition(plan, wanted, &broken),
    ];
    ShardedClusterStatus {
        phase: Some(phase.to_owned()),
        observed_generation: cluster.metadata.generation,
        shards: count(shards.iter()) + count(plan.create_shards.iter()),
        ready_shards,
        routing_version: Some(plan.routing.version),
        ring_version: plan.ring.current.as_ref().map(|r| r.version),
        ring: plan.ring.current.clone(),
        migration: plan.ring.active.clone(),
        primaries: primaries(shards),
        credentials_secret: Some(names::secret_name(&cluster.name_any())),
        conditions: settle(
            desired,
            &previous.conditions,
            cluster.metadata.generation,
            now,
        ),
    }
}

/// `shards` as the apply left them: a Shard whose spec the plan changed has a new
/// generation its controller has not seen yet, so it is not ready but on its way
/// (else a cluster read before the apply would look Ready for the new spec).
fn as_applied(plan: &Plan, shards: &[Shard]) -> Vec<Shard> {
    shards
        .iter()
        .map(|observed| {
            let mut shard = observed.clone();
            let planned = plan
                .apply_shards
                .iter()
                .find(|p| p.name_any() == observed.name_any());
            if let Some(planned) = planned {
                let mut seen = observed.spec.clone();
                seen.primary = None;
                if seen != planned.spec {
                    shard.metadata.generation = observed.metadata.generation.map(|g| g + 1);
                }
            }
            shard
        })
        .collect()
}

fn count<T>(it: impl Iterator<Item = T>) -> i32 {
    i32::try_from(it.count()).unwrap_or(i32::MAX)
}

/// Names of the spec's shards that are missing or not ready.
fn not_ready(cluster: &ShardedCluster, in_spec: &[&Shard]) -> Vec<String> {
    let name = cluster.name_any();
    (0..cluster.spec.shards)
        .map(|i| names::shard_name(&name, i))
        .filter(|shard| {
            !in_spec
                .iter()
                .any(|s| &s.name_any() == shard && shard_ready(s))
        })
        .collect()
}

/// The phase: Degraded with extra shards or a shard that is not ready and not on its
/// way; Ready when every shard is; Provisioning while shards are created or start.
pub fn phase(all_ready: bool, extra_shards: bool, broken_shards: bool) -> &'static str {
    if extra_shards || broken_shards {
        DEGRADED
    } else if all_ready {
        READY
    } else {
        PROVISIONING
    }
}

fn primaries(shards: &[Shard]) -> BTreeMap<String, String> {
    shards
        .iter()
        .filter_map(|s| {
            let primary = s.status.as_ref()?.primary.clone()?;
            Some((s.name_any(), primary))
        })
        .collect()
}

fn ready_condition(all_ready: bool, ready: i32, wanted: i32, not_ready: &[String]) -> Desired {
    if all_ready {
        Desired::yes(
            condition::READY,
            "ShardsReady",
            format!("all {wanted} shards are ready"),
        )
    } else {
        Desired::no(
            condition::READY,
            "ShardsNotReady",
            format!(
                "{ready}/{wanted} shards are ready; not ready: {}",
                name_list(not_ready, 5)
            ),
        )
    }
}

fn progressing_condition(plan: &Plan, not_ready: &[String], broken: &[String]) -> Desired {
    let starting: Vec<String> = not_ready
        .iter()
        .filter(|n| !broken.contains(n))
        .cloned()
        .collect();
    if let Some(active) = &plan.ring.active {
        Desired::yes(
            condition::PROGRESSING,
            "Rebalancing",
            format!("ShardMigration {active} is moving hash ranges between shards"),
        )
    } else if let Some((reason, message, false)) = &plan.ring.waiting {
        Desired::yes(condition::PROGRESSING, reason, message.clone())
    } else if !plan.create_shards.is_empty() {
        let created: Vec<String> = plan.create_shards.iter().map(|s| s.name_any()).collect();
        Desired::yes(
            condition::PROGRESSING,
            "CreatingShards",
            format!("creating {}", name_list(&created, 5)),
        )
    } else if !starting.is_empty() {
        Desired::yes(
            condition::PROGRESSING,
            "WaitingForShards",
            format!("waiting for {} to become ready", name_list(&starting, 5)),
        )
    } else {
        Desired::no(
            condition::PROGRESSING,
            "UpToDate",
            "every shard is as specified",
        )
    }
}

fn degraded_condition(plan: &Plan, wanted: i32, broken: &[String]) -> Desired {
    if let Some((reason, message, true)) = &plan.ring.waiting {
        Desired::yes(condition::DEGRADED, reason, message.clone())
    } else if !plan.extra_shards.is_empty() {
        Desired::yes(
            condition::DEGRADED,
            "ShardsBeyondSpec",
            format!(
                "{} exist beyond spec.shards={wanted} and outside the hash ring, and no \
                 migration drained them, so they are not deleted (they may hold keys written \
                 to them directly); delete them yourself once they are empty",
                name_list(&plan.extra_shards, 5)
            ),
        )
    } else if !broken.is_empty() {
        Desired::yes(
            condition::DEGRADED,
            "ShardsNotReady",
            format!(
                "{} not ready (instances failed or restarted); see their status",
                name_list(broken, 5)
            ),
        )
    } else {
        Desired::no(condition::DEGRADED, "AsExpected", "no shard is degraded")
    }
}
