//! The status of a Shard, from its plan and its Pods (pure).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::plan::{Plan, failed, pod_ready, restarted, terminating};
use crate::api::shard::{InstanceStatus, Role};
use crate::api::{Shard, ShardStatus, condition};
use crate::operator::conditions::{Desired, name_list, settle};
use crate::operator::names;

/// Reason of `ReplicationConfigured=False` until replication exists.
pub const REPLICATION_NOT_CONFIGURED: &str = "NotConfigured";
/// Reason of `Progressing=True` while a Pod runs an image other than the spec's.
pub const UPDATE_PENDING: &str = "UpdatePending";

/// Reason of `Progressing=True` while Pods are being created or deleted.
pub const SCALING: &str = "Scaling";
/// Reason of `Progressing=True` while new instances start.
pub const INSTANCES_STARTING: &str = "InstancesStarting";
/// Reason of `Progressing=False` while instances that ran are not ready.
pub const INSTANCES_FAILING: &str = "InstancesFailing";

/// What an instance agent's `/status` said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentReport {
    /// The role the agent runs its server in.
    pub role: Option<Role>,
    /// Whether its server is up.
    pub server_up: bool,
}

/// The status of `shard` after `plan`, given its Pods (as observed before the plan
/// was applied) and the agents' reports by Pod name. `now` stamps conditions that
/// change status.
pub fn status(
    shard: &Shard,
    plan: &Plan,
    pods: &[Pod],
    agents: &BTreeMap<String, AgentReport>,
    now: &Time,
) -> ShardStatus {
    let name = shard.name_any();
    let previous = shard.status.clone().unwrap_or_default();
    let instances = instances(&name, plan, pods, agents);
    let ready_instances = count(instances.iter().filter(|i| i.ready));
    let desired = shard.spec.instances();
    let failing = failing(&name, plan, pods);
    let desired_conditions = conditions(shard, plan, &instances, &failing);
    ShardStatus {
        observed_generation: shard.metadata.generation,
        primary: Some(plan.primary.clone()),
        ready_instances,
        ready: Some(format!("{ready_instances}/{desired}")),
        max_lag_bytes: previous.max_lag_bytes,
        instances,
        last_failover: previous.last_failover,
        conditions: settle(
            desired_conditions,
            &previous.conditions,
            shard.metadata.generation,
            now,
        ),
    }
}

/// The planned instances that have a Pod (not being deleted), by ordinal.
fn instances(
    shard: &str,
    plan: &Plan,
    pods: &[Pod],
    agents: &BTreeMap<String, AgentReport>,
) -> Vec<InstanceStatus> {
    let mut found: Vec<(i32, InstanceStatus)> = pods
        .iter()
        .filter(|p| !terminating(p))
        .filter_map(|pod| {
            let pod_name = pod.name_any();
            let ordinal = names::pod_ordinal(shard, &pod_name)?;
            if !plan.ordinals.contains(&ordinal) {
                return None;
            }
            let planned = if pod_name == plan.primary {
                Role::Primary
            } else {
                Role::Replica
            };
            // What the agent reports wins; else the role the operator labelled.
            let role = agents
                .get(&pod_name)
                .and_then(|a| a.role)
                .unwrap_or(planned);
            let status = InstanceStatus {
                pod_ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
                ready: pod_ready(pod),
                role: Some(role),
                lag_bytes: None,
                name: pod_name,
            };
            Some((ordinal, status))
        })
        .collect();
    found.sort_by_key(|(ordinal, _)| *ordinal);
    found.into_iter().map(|(_, s)| s).collect()
}

fn count<T>(it: impl Iterator<Item = T>) -> i32 {
    i32::try_from(it.count()).unwrap_or(i32::MAX)
}

/// The planned instances that are not ready although their server already ran:
/// restarted containers or failed Pods (as opposed to instances still starting).
fn failing(shard: &str, plan: &Plan, pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|p| !terminating(p) && !pod_ready(p) && (restarted(p) || failed(p)))
        .map(ResourceExt::name_any)
        .filter(|n| names::pod_ordinal(shard, n).is_some_and(|o| plan.ordinals.contains(&o)))
        .collect()
}

fn conditions(
    shard: &Shard,
    plan: &Plan,
    instances: &[InstanceStatus],
    failing: &[String],
) -> Vec<Desired> {
    vec![
        ready(shard, plan, instances),
        progressing(plan, instances, failing),
        degraded(shard, plan, instances),
        Desired::no(
            condition::REPLICATION_CONFIGURED,
            REPLICATION_NOT_CONFIGURED,
            "streaming replication is not set up yet: replicas run as standalone servers \
             and do not follow the primary",
        ),
    ]
}

fn not_ready_names(plan: &Plan, instances: &[InstanceStatus], shard: &str) -> Vec<String> {
    plan.ordinals
        .iter()
        .map(|&o| names::pod_name(shard, o))
        .filter(|pod| !instances.iter().any(|i| &i.name == pod && i.ready))
        .collect()
}

fn ready(shard: &Shard, plan: &Plan, instances: &[InstanceStatus]) -> Desired {
    let desired = shard.spec.instances();
    let ready = count(instances.iter().filter(|i| i.ready));
    if ready >= desired {
        return Desired::yes(
            condition::READY,
            "InstancesReady",
            format!("all {desired} instances are ready"),
        );
    }
    let missing = not_ready_names(plan, instances, &shard.name_any());
    Desired::no(
        condition::READY,
        "InstancesNotReady",
        format!(
            "{ready}/{desired} instances are ready; not ready: {}",
            name_list(&missing, 5)
        ),
    )
}

fn progressing(plan: &Plan, instances: &[InstanceStatus], failing: &[String]) -> Desired {
    if plan.scales() || !plan.replace_pods.is_empty() {
        let mut parts = Vec::new();
        let created: Vec<String> = plan.create_pods.iter().map(|p| p.name_any()).collect();
        if !created.is_empty() {
            parts.push(format!("creating {}", name_list(&created, 5)));
        }
        if !plan.delete_pods.is_empty() {
            parts.push(format!("removing {}", name_list(&plan.delete_pods, 5)));
        }
        if !plan.replace_pods.is_empty() {
            parts.push(format!("replacing {}", name_list(&plan.replace_pods, 5)));
        }
        return Desired::yes(condition::PROGRESSING, SCALING, parts.join("; "));
    }
    if !plan.update_pending.is_empty() {
        return Desired::yes(
            condition::PROGRESSING,
            UPDATE_PENDING,
            format!(
                "{} run(s) an image other than the spec's; rolling updates are not \
                 implemented yet, so the Pods keep their image until they are recreated",
                name_list(&plan.update_pending, 5)
            ),
        );
    }
    if !failing.is_empty() {
        return Desired::no(
            condition::PROGRESSING,
            INSTANCES_FAILING,
            format!(
                "{} restarted or failed and is not ready; waiting for it to recover",
                name_list(failing, 5)
            ),
        );
    }
    if instances.len() < plan.ordinals.len() || instances.iter().any(|i| !i.ready) {
        return Desired::yes(
            condition::PROGRESSING,
            INSTANCES_STARTING,
            "waiting for new instances to become ready",
        );
    }
    Desired::no(
        condition::PROGRESSING,
        "UpToDate",
        "every instance is as specified",
    )
}

fn degraded(shard: &Shard, plan: &Plan, instances: &[InstanceStatus]) -> Desired {
    if let Some(p) = &plan.invalid_primary {
        return Desired::yes(
            condition::DEGRADED,
            "InvalidPrimary",
            format!(
                "spec.primary {p:?} is not an instance of this shard (expected {}-<ordinal>); \
                 keeping {} as primary",
                shard.name_any(),
                plan.primary
            ),
        );
    }
    let primary_ready = instances.iter().any(|i| i.name == plan.primary && i.ready);
    if !primary_ready {
        return Desired::yes(
            condition::DEGRADED,
            "PrimaryNotReady",
            format!("the primary {} is not ready", plan.primary),
        );
    }
    let wanted = shard.spec.replicas;
    let ready_replicas = count(
        instances
            .iter()
            .filter(|i| i.ready && i.name != plan.primary),
    );
    if ready_replicas < wanted {
        return Desired::yes(
            condition::DEGRADED,
            "ReplicasNotReady",
            format!("{ready_replicas}/{wanted} replicas are ready"),
        );
    }
    Desired::no(
        condition::DEGRADED,
        "AsExpected",
        format!("the primary and {wanted} replica(s) are ready"),
    )
}
