//! The status of a Shard, from its plan, its Pods, its agents' reports and the
//! replication decision (pure).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::plan::{Plan, failed, pod_ready, restarted, terminating};
use super::replication::{Decision, format_position, primary_position};
use crate::api::agent::AgentStatus;
use crate::api::shard::{ChangeKind, ChangePhase, InstanceStatus, Role};
use crate::api::{Shard, ShardStatus, condition};
use crate::operator::conditions::{Desired, name_list, settle};
use crate::operator::names;

/// Reason of `ReplicationConfigured=True`: every ready replica streams.
pub const STREAMING: &str = "Streaming";
/// Reason of `ReplicationConfigured=True` for a shard without replicas.
pub const NO_REPLICAS: &str = "NoReplicas";
/// Reason of `ReplicationConfigured=False` and `Degraded=True`: replicas that do
/// not stream.
pub const REPLICAS_NOT_STREAMING: &str = "ReplicasNotStreaming";
/// Reason of `ReplicationConfigured=False` when the agents cannot be asked.
pub const AGENTS_UNAVAILABLE: &str = "AgentsUnavailable";
/// Reason of `Progressing=True` while a Pod runs an image other than the spec's.
pub const UPDATE_PENDING: &str = "UpdatePending";
/// Reason of `Degraded=True` while the primary is unhealthy.
pub const PRIMARY_UNHEALTHY: &str = "PrimaryUnhealthy";

/// Reason of `Progressing=True` while Pods are being created or deleted.
pub const SCALING: &str = "Scaling";
/// Reason of `Progressing=True` while new instances start.
pub const INSTANCES_STARTING: &str = "InstancesStarting";
/// Reason of `Progressing=False` while instances that ran are not ready.
pub const INSTANCES_FAILING: &str = "InstancesFailing";

/// What the agents said, by Pod name (`None`: they could not be asked).
pub type Agents<'a> = Option<&'a BTreeMap<String, AgentStatus>>;

/// The status of `shard` after `plan` and the replication `decision`, given its
/// Pods (as observed before the plan was applied) and the agents' reports. `now`
/// stamps conditions that change status.
pub fn status(
    shard: &Shard,
    plan: &Plan,
    pods: &[Pod],
    agents: Agents<'_>,
    decision: &Decision,
    now: &Time,
) -> ShardStatus {
    let name = shard.name_any();
    let previous = shard.status.clone().unwrap_or_default();
    let instances = instances(shard, plan, pods, agents, decision);
    let ready_instances = count(instances.iter().filter(|i| i.ready));
    let desired = shard.spec.instances();
    let failing = failing(&name, plan, pods);
    let desired_conditions = conditions(shard, plan, &instances, &failing, agents, decision);
    let mut status = ShardStatus {
        observed_generation: shard.metadata.generation,
        ready_instances,
        ready: Some(format!("{ready_instances}/{desired}")),
        max_lag_bytes: instances.iter().filter_map(|i| i.lag_bytes).max(),
        instances,
        conditions: settle(
            desired_conditions,
            &previous.conditions,
            shard.metadata.generation,
            now,
        ),
        ..ShardStatus::default()
    };
    decision.state.write_to(&mut status);
    status
}

/// The planned instances that have a Pod (not being deleted), by ordinal.
fn instances(
    shard: &Shard,
    plan: &Plan,
    pods: &[Pod],
    agents: Agents<'_>,
    decision: &Decision,
) -> Vec<InstanceStatus> {
    let name = shard.name_any();
    let engine = shard.spec.engine;
    let previous = shard.status.clone().unwrap_or_default();
    let agent = |pod: &str| agents.and_then(|a| a.get(pod));
    let primary = &decision.state.primary;
    let primary_position = primary_position(shard, primary, agent(primary));
    let mut found: Vec<(i32, InstanceStatus)> = pods
        .iter()
        .filter(|p| !terminating(p))
        .filter_map(|pod| {
            let pod_name = pod.name_any();
            let ordinal = names::pod_ordinal(&name, &pod_name)?;
            if !plan.ordinals.contains(&ordinal) {
                return None;
            }
            let before = previous.instances.iter().find(|i| i.name == pod_name);
            let mut status = InstanceStatus {
                pod_ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
                ready: pod_ready(pod),
                role: decision.labels.role(&pod_name),
                lag_bytes: None,
                lag_seconds: None,
                streaming: None,
                // An agent that does not answer keeps its last known position: a
                // failover measures the candidates' lag against it.
                position: before.and_then(|b| b.position.clone()),
                timeline: before.and_then(|b| b.timeline),
                name: pod_name.clone(),
            };
            if let Some(report) = agent(&pod_name) {
                replication(&mut status, report, engine, primary_position);
            }
            Some((ordinal, status))
        })
        .collect();
    found.sort_by_key(|(ordinal, _)| *ordinal);
    found.into_iter().map(|(_, s)| s).collect()
}

/// Fills the replication fields of `status` from its agent's `report`.
fn replication(
    status: &mut InstanceStatus,
    report: &AgentStatus,
    engine: crate::api::Engine,
    primary_position: Option<u64>,
) {
    if report.role.is_some() {
        status.role = report.role;
    }
    let Some(r) = &report.replication else {
        return;
    };
    status.position = Some(format_position(engine, r.position));
    status.timeline = r.timeline.or(status.timeline);
    if status.role == Some(Role::Primary) {
        return;
    }
    status.streaming = Some(r.streaming);
    status.lag_seconds = r.lag_seconds;
    let received = r.received.unwrap_or(r.position);
    status.lag_bytes =
        primary_position.map(|p| i64::try_from(p.saturating_sub(received)).unwrap_or(i64::MAX));
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
    agents: Agents<'_>,
    decision: &Decision,
) -> Vec<Desired> {
    vec![
        ready(shard, plan, instances),
        progressing(plan, instances, failing, decision),
        degraded(shard, instances, decision),
        replication_configured(shard, instances, agents, decision),
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

fn progressing(
    plan: &Plan,
    instances: &[InstanceStatus],
    failing: &[String],
    decision: &Decision,
) -> Desired {
    if let Some(change) = &decision.state.change {
        let (reason, what) = match change.kind {
            ChangeKind::Failover => ("Failover", "failing over"),
            ChangeKind::Switchover => ("Switchover", "switching over"),
        };
        let step = match (change.phase, change.kind) {
            (ChangePhase::Pending, ChangeKind::Failover) => format!("fencing {}", change.from),
            (ChangePhase::Pending, ChangeKind::Switchover) => {
                format!("stopping {} as a replica of {}", change.from, change.to)
            }
            (ChangePhase::Promoting, _) => format!("promoting {}", change.to),
        };
        return Desired::yes(
            condition::PROGRESSING,
            reason,
            format!(
                "{what} from {} to {} at epoch {}: {step} ({})",
                change.from, change.to, change.epoch, change.reason
            ),
        );
    }
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
                "rolling update: {} run(s) an older Pod template (image, resources or agent \
                 image) than the spec's; the replicas are recreated one at a time, then the \
                 primary is switched over and updated last",
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

fn degraded(shard: &Shard, instances: &[InstanceStatus], decision: &Decision) -> Desired {
    if let Some(blocked) = &decision.blocked {
        return Desired::yes(condition::DEGRADED, blocked.reason, blocked.message.clone());
    }
    let primary = &decision.state.primary;
    if let Some(why) = &decision.unhealthy {
        return Desired::yes(
            condition::DEGRADED,
            PRIMARY_UNHEALTHY,
            format!("the primary {primary} is unhealthy: {why}"),
        );
    }
    if let Some(change) = &decision.state.change {
        return Desired::yes(
            condition::DEGRADED,
            "ChangingPrimary",
            format!(
                "no primary accepts writes while {} replaces {}",
                change.to, change.from
            ),
        );
    }
    if !instances.iter().any(|i| &i.name == primary && i.ready) {
        return Desired::yes(
            condition::DEGRADED,
            "PrimaryNotReady",
            format!("the primary {primary} is not ready"),
        );
    }
    let wanted = shard.spec.replicas;
    let replicas = || instances.iter().filter(|i| &i.name != primary);
    let ready = count(replicas().filter(|i| i.ready));
    if ready < wanted {
        return Desired::yes(
            condition::DEGRADED,
            "ReplicasNotReady",
            format!("{ready}/{wanted} replicas are ready"),
        );
    }
    let streaming = count(replicas().filter(|i| i.ready && i.streaming == Some(true)));
    if streaming < wanted {
        return Desired::yes(
            condition::DEGRADED,
            REPLICAS_NOT_STREAMING,
            format!("{streaming}/{wanted} replicas stream from the primary {primary}"),
        );
    }
    Desired::no(
        condition::DEGRADED,
        "AsExpected",
        format!("the primary and {wanted} replica(s) are ready and streaming"),
    )
}

fn replication_configured(
    shard: &Shard,
    instances: &[InstanceStatus],
    agents: Agents<'_>,
    decision: &Decision,
) -> Desired {
    let type_ = condition::REPLICATION_CONFIGURED;
    if shard.spec.replicas == 0 {
        return Desired::yes(type_, NO_REPLICAS, "the shard has no replicas");
    }
    if agents.is_none() {
        return Desired::no(
            type_,
            AGENTS_UNAVAILABLE,
            "the instance agents cannot be asked (no agent token in the credentials Secret)",
        );
    }
    let primary = &decision.state.primary;
    let replicas: Vec<&InstanceStatus> = instances
        .iter()
        .filter(|i| &i.name != primary && i.ready)
        .collect();
    let not_streaming: Vec<&str> = replicas
        .iter()
        .filter(|i| i.streaming != Some(true))
        .map(|i| i.name.as_str())
        .collect();
    if replicas.is_empty() {
        return Desired::no(
            type_,
            REPLICAS_NOT_STREAMING,
            format!("no replica of {primary} is ready yet"),
        );
    }
    if not_streaming.is_empty() {
        return Desired::yes(
            type_,
            STREAMING,
            format!(
                "{} ready replica(s) stream from the primary {primary}",
                replicas.len()
            ),
        );
    }
    Desired::no(
        type_,
        REPLICAS_NOT_STREAMING,
        format!(
            "{} do(es) not stream from the primary {primary}",
            name_list(&not_streaming, 5)
        ),
    )
}

/// Whether `new` differs from `previous` in more than the replication figures that
/// move all the time (positions, lags). Positions that moved more than `tolerance`
/// bytes count as a change: a failover measures data loss against the recorded
/// primary position.
pub fn changed_significantly(previous: &ShardStatus, new: &ShardStatus, tolerance: u64) -> bool {
    if previous.steady() != new.steady() {
        return true;
    }
    let position = |s: &ShardStatus, name: &str| {
        s.instances
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.position.clone())
    };
    new.instances.iter().any(|i| {
        let before = position(previous, &i.name);
        match (before.as_deref(), i.position.as_deref()) {
            (Some(a), Some(b)) => distance(a, b).is_none_or(|d| d > tolerance),
            (a, b) => a != b,
        }
    })
}

/// Bytes between two positions as the status writes them (LSN or decimal).
fn distance(a: &str, b: &str) -> Option<u64> {
    let parse = |p: &str| crate::api::agent::parse_lsn(p).or_else(|| p.parse::<u64>().ok());
    Some(parse(a)?.abs_diff(parse(b)?))
}
