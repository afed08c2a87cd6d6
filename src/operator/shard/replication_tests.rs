//! The replication planner, step by step, from constructed Pods and agent reports.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use super::objects::template_hash;
use super::plan::{Observed, plan};
use super::replication::{
    Decision, FAILOVER_BLOCKED, Inputs, Labels, SWITCHOVER_BLOCKED, State, command_annotation,
    decide, hold_seconds, parse_duration, recheck_after,
};
use super::tests::{replication_of, report};
use crate::api::agent::{AgentStatus, DesiredRole, ReplicationReport, StopMode};
use crate::api::shard::{ChangeKind, ChangePhase, InstanceStatus, Role};
use crate::api::{Shard, ShardStatus, condition};
use crate::operator::conditions::Desired;
use crate::operator::fixtures::{load, running};
use crate::operator::names::{ROLE_COMMAND_ANNOTATION, TEMPLATE_ANNOTATION};

const IMAGE: &str = "ghcr.io/ringmaster/ringmaster:0.1.0";

/// A redis shard `cache-0` with `replicas` replicas, each instance running, its
/// agent answering, and the operator and agents agreeing at epoch 0.
struct World {
    shard: Shard,
    pods: Vec<Pod>,
    agents: BTreeMap<String, AgentStatus>,
    now: Timestamp,
}

fn ip(ordinal: usize) -> String {
    format!("127.20.0.{}", ordinal + 10)
}

impl World {
    fn new(replicas: i32) -> World {
        let mut shard: Shard = load("redis-shard.yaml");
        shard.spec.replicas = replicas;
        let created = plan(&shard, &Observed::default(), IMAGE, &Labels::default()).unwrap();
        let pods: Vec<Pod> = created
            .create_pods
            .into_iter()
            .enumerate()
            .map(|(i, p)| running(p, &ip(i), true))
            .collect();
        let agents = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let role = if i == 0 { Role::Primary } else { Role::Replica };
                (
                    p.name_any(),
                    report(&p.name_any(), role, 1000, role == Role::Replica),
                )
            })
            .collect();
        shard.status = Some(ShardStatus {
            primary: Some("cache-0-0".into()),
            instances: pods
                .iter()
                .map(|p| InstanceStatus {
                    name: p.name_any(),
                    role: None,
                    ready: true,
                    pod_ip: None,
                    lag_bytes: None,
                    lag_seconds: None,
                    streaming: None,
                    position: Some("1000".into()),
                    timeline: None,
                })
                .collect(),
            ..ShardStatus::default()
        });
        let mut world = World {
            shard,
            pods,
            agents,
            now: "2024-05-01T12:00:00Z".parse().unwrap(),
        };
        world.step();
        assert!(world.decide().commands.is_empty(), "converged");
        world
    }

    fn decide(&self) -> Decision {
        decide(&Inputs {
            shard: &self.shard,
            pods: &self.pods,
            agents: Some(&self.agents),
            agent_image: IMAGE,
            now: self.now,
        })
    }

    /// One reconciliation: decide, record, and let every agent take its command
    /// (the server's actual role is left to the test).
    fn step(&mut self) -> Decision {
        let d = self.decide();
        if let Some(p) = &d.spec_primary {
            self.shard.spec.primary = Some(p.clone());
        }
        let status = self.shard.status.get_or_insert_with(ShardStatus::default);
        d.state.write_to(status);
        let previous = std::mem::take(&mut status.conditions);
        status.conditions = crate::operator::conditions::settle(
            d.blocked
                .iter()
                .map(|b| Desired::yes(condition::DEGRADED, b.reason, b.message.clone()))
                .collect(),
            &previous,
            None,
            &Time(self.now),
        );
        for c in &d.commands {
            if let Some(a) = self.agents.get_mut(&c.pod) {
                a.epoch = c.command.epoch;
                a.desired_role = c.command.role;
                if c.command.role == DesiredRole::Fenced {
                    a.phase = "fenced".into();
                    a.pid = None;
                }
            }
            let pod = self.pod_mut(&c.pod);
            pod.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(
                    ROLE_COMMAND_ANNOTATION.into(),
                    command_annotation(&c.command),
                );
        }
        d
    }

    /// The Pod `name` as recreated from the current spec (template annotation).
    fn recreate_from_spec(&mut self, name: &str) {
        let template = template_hash(&self.shard.spec, IMAGE);
        self.pod_mut(name)
            .annotations_mut()
            .insert(TEMPLATE_ANNOTATION.into(), template);
    }

    fn pod_mut(&mut self, name: &str) -> &mut Pod {
        self.pods.iter_mut().find(|p| p.name_any() == name).unwrap()
    }

    fn agent(&mut self, name: &str) -> &mut AgentStatus {
        self.agents.get_mut(name).unwrap()
    }

    fn replication(&mut self, name: &str) -> &mut ReplicationReport {
        replication_of(&mut self.agents, name)
    }

    fn wait(&mut self, seconds: i64) {
        self.now += SignedDuration::from_secs(seconds);
    }

    fn state(&self) -> State {
        State::of(&self.shard)
    }

    /// The primary's server dies: its agent answers, server down.
    fn crash_primary(&mut self) {
        self.agent("cache-0-0").server_up = false;
        self.agent("cache-0-0").phase = "held".into();
        self.agent("cache-0-0").pid = None;
    }

    /// The primary's server hangs: it runs but answers nothing.
    fn hang_primary(&mut self) {
        self.agent("cache-0-0").server_up = false;
    }

    fn received(&mut self, name: &str, received: u64, replayed: u64) {
        let r = self.replication(name);
        r.received = Some(received);
        r.replayed = Some(replayed);
        r.position = received;
    }

    /// The primary crashes and stays down past `unhealthyAfter` (5 s).
    fn fail_primary_until_failover(&mut self) -> Decision {
        self.crash_primary();
        let first = self.step();
        assert!(first.state.change.is_none());
        self.wait(6);
        self.step()
    }
}

fn reasons(d: &Decision) -> Vec<&str> {
    d.events.iter().map(|e| e.reason).collect()
}

// ------------------------------------------------------------------ steady state

#[test]
fn the_first_pass_configures_every_instance_then_nothing_is_sent() {
    let world = World::new(2);
    // What the first pass sent (World::new ran it): recorded on the Pods.
    let annotation = |name: &str| {
        let pod = world.pods.iter().find(|p| p.name_any() == name).unwrap();
        let text = &pod.annotations()[ROLE_COMMAND_ANNOTATION];
        serde_json::from_str::<crate::api::agent::RoleCommand>(text).unwrap()
    };
    let primary = annotation("cache-0-0");
    assert_eq!(primary.role, DesiredRole::Primary);
    assert_eq!(primary.replicas, ["cache-0-1", "cache-0-2"]);
    assert_eq!(primary.hold_crashed_primary_seconds, 35);
    let replica = annotation("cache-0-2");
    assert_eq!(replica.role, DesiredRole::Replica);
    let upstream = replica.upstream.unwrap();
    assert_eq!(
        (upstream.name.as_str(), upstream.address()),
        ("cache-0-0", "127.20.0.10:6379".to_owned())
    );
    // Steady state: nothing to send, record or report.
    let d = world.decide();
    assert!(d.commands.is_empty() && d.events.is_empty() && d.delete_pods.is_empty());
    assert_eq!(d.state, world.state());
    assert_eq!(d.blocked, None);
    assert_eq!(d.labels.primary.as_deref(), Some("cache-0-0"));
    let streaming: Vec<&String> = d.labels.streaming.as_ref().unwrap().iter().collect();
    assert_eq!(streaming, ["cache-0-1", "cache-0-2"]);
}

#[test]
fn an_agent_that_lost_its_command_gets_it_again() {
    let mut world = World::new(1);
    world.agent("cache-0-1").desired_role = DesiredRole::Fenced;
    let d = world.decide();
    assert_eq!(d.commands.len(), 1);
    assert_eq!(d.commands[0].pod, "cache-0-1");
    assert_eq!(d.commands[0].host, "127.20.0.11");
}

#[test]
fn a_higher_epoch_held_by_an_agent_is_adopted() {
    let mut world = World::new(1);
    world.agent("cache-0-1").epoch = 4;
    let d = world.decide();
    assert_eq!(d.state.epoch, 4);
    assert!(d.commands.iter().all(|c| c.command.epoch == 4));
}

#[test]
fn without_agents_nothing_is_decided() {
    let world = World::new(1);
    let d = decide(&Inputs {
        shard: &world.shard,
        pods: &world.pods,
        agents: None,
        agent_image: IMAGE,
        now: world.now,
    });
    assert!(d.commands.is_empty());
    assert_eq!(d.state, world.state());
    assert_eq!(d.labels.streaming, None, "streaming labels are left alone");
}

// ------------------------------------------------------------------ health and failover

#[test]
fn an_unhealthy_primary_is_waited_for_unhealthy_after() {
    let mut world = World::new(2);
    world.crash_primary();
    let d = world.step();
    assert_eq!(
        d.unhealthy.as_deref(),
        Some("its server is not up (phase held)")
    );
    assert_eq!(d.state.primary_unhealthy_since, Some(Time(world.now)));
    assert!(d.state.change.is_none());
    world.wait(3);
    let d = world.step();
    assert!(d.state.change.is_none(), "3s < unhealthyAfter 5s");
    // Recovering clears the clock.
    world.agent("cache-0-0").server_up = true;
    let d = world.step();
    assert_eq!(d.state.primary_unhealthy_since, None);
    assert_eq!(d.unhealthy, None);
}

#[test]
fn a_primary_that_never_was_ready_is_starting_not_failing() {
    let mut world = World::new(1);
    for i in &mut world.shard.status.as_mut().unwrap().instances {
        i.ready = false;
    }
    world.crash_primary();
    let d = world.step();
    assert_eq!(d.state.primary_unhealthy_since, None);
    world.wait(60);
    assert!(world.step().state.change.is_none());
}

#[test]
fn failover_picks_the_most_advanced_replica() {
    let mut world = World::new(3);
    world.received("cache-0-1", 990, 990);
    world.received("cache-0-2", 995, 900);
    world.received("cache-0-3", 995, 950);
    let d = world.fail_primary_until_failover();
    let change = d.state.change.clone().expect("a failover");
    assert_eq!(
        (
            change.kind,
            change.phase,
            change.from.as_str(),
            change.to.as_str()
        ),
        (
            ChangeKind::Failover,
            ChangePhase::Pending,
            "cache-0-0",
            "cache-0-3"
        )
    );
    assert_eq!((change.epoch, d.state.epoch), (1, 1));
    assert!(
        change.reason.starts_with("PrimaryUnhealthy: "),
        "{}",
        change.reason
    );
    assert_eq!(reasons(&d), ["FailoverStarted"]);
    // Equal positions: the lowest name.
    let mut world = World::new(2);
    let d = world.fail_primary_until_failover();
    assert_eq!(d.state.change.unwrap().to, "cache-0-1");
}

#[test]
fn failed_candidates_and_unanswering_replicas_are_skipped() {
    let mut world = World::new(2);
    world.received("cache-0-1", 1000, 1000);
    world.received("cache-0-2", 999, 999);
    world.agents.remove("cache-0-1");
    let d = world.fail_primary_until_failover();
    assert_eq!(d.state.change.unwrap().to, "cache-0-2");
}

#[test]
fn a_lagging_candidate_blocks_the_failover_with_a_message() {
    let mut world = World::new(1);
    let status = world.shard.status.as_mut().unwrap();
    status.instances[0].position = Some("100000000".into());
    let d = world.fail_primary_until_failover();
    assert!(d.state.change.is_none());
    let blocked = d.blocked.clone().expect("blocked");
    assert_eq!(blocked.reason, FAILOVER_BLOCKED);
    assert!(
        blocked
            .message
            .contains("cache-0-1 is 99999000 bytes behind")
            && blocked.message.contains("maxLagBytes")
            && blocked.message.contains("allowDataLoss"),
        "{}",
        blocked.message
    );
    assert_eq!(reasons(&d), ["FailoverBlocked"]);
    // Already reported: no second Event.
    world.wait(1);
    let again = world.step();
    assert_eq!(again.blocked, d.blocked);
    assert!(again.events.is_empty(), "{:?}", again.events);
}

#[test]
fn allow_data_loss_promotes_a_lagging_candidate() {
    let mut world = World::new(1);
    world.shard.spec.failover.allow_data_loss = true;
    world.shard.status.as_mut().unwrap().instances[0].position = Some("100000000".into());
    let d = world.fail_primary_until_failover();
    assert_eq!(d.state.change.unwrap().to, "cache-0-1");
}

#[test]
fn disabled_failover_only_reports() {
    let mut world = World::new(1);
    world.shard.spec.failover.enabled = false;
    let d = world.fail_primary_until_failover();
    assert!(d.state.change.is_none());
    assert!(d.unhealthy.is_some());
}

#[test]
fn a_failover_fences_promotes_repoints_and_finishes() {
    let mut world = World::new(2);
    let d = world.fail_primary_until_failover();
    // Pending: the old primary loses its role label and is fenced.
    assert_eq!(d.labels.primary, None);
    assert_eq!(d.labels.unlabelled.as_deref(), Some("cache-0-0"));
    assert_eq!(d.labels.role("cache-0-0"), None);
    assert_eq!(d.commands.len(), 1, "{:?}", d.commands);
    let fence = &d.commands[0];
    assert_eq!(fence.pod, "cache-0-0");
    assert!(fence.fence);
    assert_eq!(fence.command.role, DesiredRole::Fenced);
    assert_eq!(fence.command.stop, StopMode::Immediate);
    assert_eq!(fence.command.epoch, 1);

    // The fence took effect (the agent answered and its server is down).
    world.wait(1);
    let d = world.step();
    let change = d.state.change.clone().unwrap();
    assert_eq!(change.phase, ChangePhase::Promoting);
    assert_eq!(reasons(&d), ["Fenced"]);
    // Recorded first, then sent in the same pass.
    assert_eq!(d.commands.len(), 1);
    let promote = &d.commands[0];
    assert_eq!(
        (
            promote.pod.as_str(),
            promote.command.role,
            promote.command.epoch
        ),
        ("cache-0-1", DesiredRole::Primary, 1)
    );
    assert_eq!(promote.command.replicas, ["cache-0-0", "cache-0-2"]);

    // Promoting waits for the target to report being primary.
    world.wait(2);
    let d = world.step();
    assert!(d.state.change.is_some() && d.commands.is_empty() && d.events.is_empty());

    world.agent("cache-0-1").role = Some(Role::Primary);
    world.wait(1);
    let d = world.step();
    assert_eq!(d.state.primary, "cache-0-1");
    assert!(d.state.change.is_none());
    assert_eq!(d.spec_primary.as_deref(), Some("cache-0-1"));
    let record = d.state.last_failover.clone().unwrap();
    assert_eq!(
        (
            record.from.as_str(),
            record.to.as_str(),
            record.reason.as_str()
        ),
        ("cache-0-0", "cache-0-1", "PrimaryUnhealthy")
    );
    assert_eq!(
        record.duration_seconds, 10.0,
        "from the first unhealthy sight"
    );
    assert_eq!(reasons(&d), ["Promoted", "FailoverCompleted"]);
    assert_eq!(d.completed.as_ref().unwrap().kind, ChangeKind::Failover);
    assert_eq!(d.labels.primary.as_deref(), Some("cache-0-1"));
    // Re-point: every other instance follows the new primary at the new epoch.
    let repointed: Vec<(&str, DesiredRole, String)> = d
        .commands
        .iter()
        .map(|c| {
            let up = c.command.upstream.as_ref().map(|u| u.address());
            (c.pod.as_str(), c.command.role, up.unwrap_or_default())
        })
        .collect();
    assert_eq!(
        repointed,
        [
            (
                "cache-0-0",
                DesiredRole::Replica,
                "127.20.0.11:6379".to_owned()
            ),
            (
                "cache-0-2",
                DesiredRole::Replica,
                "127.20.0.11:6379".to_owned()
            ),
        ]
    );
    assert!(d.state.primary_unhealthy_since.is_none() && d.state.failed_candidates.is_empty());
}

#[test]
fn an_old_primary_whose_agent_does_not_answer_is_deleted() {
    let mut world = World::new(1);
    world.crash_primary();
    world.step();
    world.agents.remove("cache-0-0");
    world.wait(6);
    let d = world.step();
    assert!(d.state.change.is_some());
    assert!(d.commands.is_empty());
    assert_eq!(d.delete_pods.len(), 1);
    assert_eq!(d.delete_pods[0].pod, "cache-0-0");
    // Being deleted counts as fenced.
    world.pod_mut("cache-0-0").metadata.deletion_timestamp = Some(Time(world.now));
    let d = world.step();
    assert_eq!(d.state.change.unwrap().phase, ChangePhase::Promoting);
    assert!(d.delete_pods.is_empty());
}

#[test]
fn a_restarted_operator_continues_a_recorded_change() {
    let mut world = World::new(1);
    world.fail_primary_until_failover();
    // A fresh operator: the fence was never sent (the agent still holds epoch 0).
    world.agent("cache-0-0").epoch = 0;
    world.agent("cache-0-0").desired_role = DesiredRole::Primary;
    let d = world.decide();
    let change = d.state.change.clone().unwrap();
    assert_eq!(
        (change.phase, change.epoch, d.state.epoch),
        (ChangePhase::Pending, 1, 1)
    );
    assert!(d.events.is_empty(), "the same change, not a new one");
    assert_eq!(d.commands[0].command.role, DesiredRole::Fenced);
}

#[test]
fn a_candidate_that_does_not_take_over_is_replaced_by_the_next() {
    let mut world = World::new(2);
    world.received("cache-0-2", 999, 999);
    world.fail_primary_until_failover();
    world.step(); // fenced -> Promoting, promote cache-0-1
    world.wait(31);
    let d = world.step();
    assert_eq!(reasons(&d), ["CandidateFailed", "FailoverStarted"]);
    assert_eq!(d.state.failed_candidates, ["cache-0-1"]);
    let change = d.state.change.clone().unwrap();
    assert_eq!(
        (
            change.to.as_str(),
            change.phase,
            change.epoch,
            d.state.epoch
        ),
        ("cache-0-2", ChangePhase::Pending, 2, 2)
    );
    // Without another candidate the failover is blocked.
    let mut world = World::new(1);
    world.fail_primary_until_failover();
    world.step();
    world.wait(31);
    let d = world.step();
    assert!(d.state.change.is_none());
    assert_eq!(d.blocked.unwrap().reason, FAILOVER_BLOCKED);
}

#[test]
fn a_failed_promotion_is_given_up_at_once() {
    let mut world = World::new(2);
    world.fail_primary_until_failover();
    world.step();
    world.agent("cache-0-1").phase = "failed".into();
    world.agent("cache-0-1").last_error = Some("pg_promote timed out".into());
    let d = world.step();
    assert_eq!(d.state.failed_candidates, ["cache-0-1"]);
    assert!(
        d.events[0].note.contains("pg_promote timed out"),
        "{:?}",
        d.events
    );
}

// ------------------------------------------------------------------ switchover

#[test]
fn a_switchover_stops_the_primary_cleanly_then_promotes() {
    let mut world = World::new(2);
    world.shard.spec.primary = Some("cache-0-2".into());
    let d = world.step();
    let change = d.state.change.clone().unwrap();
    assert_eq!(
        (
            change.kind,
            change.from.as_str(),
            change.to.as_str(),
            change.epoch
        ),
        (ChangeKind::Switchover, "cache-0-0", "cache-0-2", 1)
    );
    assert_eq!(reasons(&d), ["SwitchoverStarted"]);
    assert_eq!(d.labels.role("cache-0-0"), None);
    let demote = &d.commands[0];
    assert_eq!(
        (
            demote.pod.as_str(),
            demote.command.role,
            demote.command.stop
        ),
        ("cache-0-0", DesiredRole::Replica, StopMode::Clean)
    );
    assert_eq!(
        demote.command.upstream.as_ref().unwrap().address(),
        "127.20.0.12:6379"
    );
    assert!(!demote.fence);

    // Not yet a replica: wait.
    let d = world.step();
    assert_eq!(d.state.change.as_ref().unwrap().phase, ChangePhase::Pending);
    world.agent("cache-0-0").role = Some(Role::Replica);
    let d = world.step();
    assert_eq!(
        d.state.change.as_ref().unwrap().phase,
        ChangePhase::Promoting
    );
    assert_eq!(reasons(&d), ["Demoted"]);
    assert_eq!(d.commands[0].pod, "cache-0-2");
    assert_eq!(d.commands[0].command.role, DesiredRole::Primary);

    world.agent("cache-0-2").role = Some(Role::Primary);
    world.wait(2);
    let d = world.step();
    assert_eq!(d.state.primary, "cache-0-2");
    assert_eq!(d.state.last_failover.as_ref().unwrap().reason, "Switchover");
    assert_eq!(d.spec_primary, None, "spec.primary already names it");
    assert_eq!(reasons(&d), ["Promoted", "SwitchoverCompleted"]);
    assert_eq!(d.completed.unwrap().kind, ChangeKind::Switchover);
}

#[test]
fn a_switchover_whose_primary_keeps_serving_is_cancelled_after_the_timeout() {
    let mut world = World::new(2);
    world.shard.spec.primary = Some("cache-0-2".into());
    world.step();
    world.agent("cache-0-0").last_error = Some("FAILOVER timed out".into());
    world.wait(30);
    let d = world.step();
    assert_eq!(d.state.change.as_ref().unwrap().phase, ChangePhase::Pending);
    assert!(reasons(&d).is_empty(), "still waiting: {:?}", reasons(&d));

    // its agent is still in the switchover step it started for epoch 1
    world.agent("cache-0-0").applied_epoch = Some(0);
    world.wait(31);
    let d = world.step();
    assert_eq!(d.state.change, None, "cancelled");
    assert_eq!((d.state.primary.as_str(), d.state.epoch), ("cache-0-0", 2));
    assert_eq!(d.spec_primary.as_deref(), Some("cache-0-0"));
    assert_eq!(reasons(&d), ["SwitchoverFailed"]);
    assert!(
        d.events[0].note.contains("FAILOVER timed out"),
        "{}",
        d.events[0].note
    );
    let primary = d.commands.iter().find(|c| c.pod == "cache-0-0").unwrap();
    assert_eq!(
        (primary.command.role, primary.command.epoch),
        (DesiredRole::Primary, 2)
    );
    assert_eq!(d.labels.role("cache-0-0"), Some(Role::Primary));
    assert_eq!(
        d.commands.len(),
        1,
        "no replica command before the primary applied epoch 2"
    );
    let d = world.step();
    assert!(
        d.state.change.is_none(),
        "no new switchover: {:?}",
        d.state.change
    );
    assert!(
        d.commands.iter().all(|c| c.pod == "cache-0-0"),
        "{:?}",
        d.commands
    );

    // once it has applied epoch 2, the replicas follow it at epoch 2 (a target
    // that the Redis FAILOVER made primary meanwhile is turned back into a replica)
    world.agent("cache-0-0").applied_epoch = Some(2);
    let d = world.step();
    let replicas: Vec<(&str, DesiredRole, u64)> = d
        .commands
        .iter()
        .map(|c| (c.pod.as_str(), c.command.role, c.command.epoch))
        .collect();
    assert_eq!(
        replicas,
        [
            ("cache-0-1", DesiredRole::Replica, 2),
            ("cache-0-2", DesiredRole::Replica, 2)
        ]
    );
}

#[test]
fn a_rolling_update_waits_before_retrying_a_failed_switchover() {
    let mut world = World::new(1);
    world.shard.spec.image = "redis:7.2".into();
    world.step();
    world.recreate_from_spec("cache-0-1");
    let d = world.step();
    assert_eq!(d.state.change.unwrap().kind, ChangeKind::Switchover);
    world.wait(61);
    let d = world.step();
    assert_eq!(reasons(&d), ["SwitchoverFailed"]);
    assert_eq!(d.blocked.unwrap().reason, "SwitchoverFailed");

    world.wait(300);
    let d = world.step();
    assert!(d.state.change.is_none(), "no retry within 10 min");
    assert!(reasons(&d).is_empty(), "no new Event: {:?}", reasons(&d));
    assert_eq!(
        d.blocked.unwrap().reason,
        "SwitchoverFailed",
        "still Degraded"
    );

    world.wait(301);
    let d = world.step();
    assert_eq!(
        d.state.change.unwrap().kind,
        ChangeKind::Switchover,
        "retried"
    );
}

#[test]
fn a_switchover_whose_primary_stops_answering_becomes_a_failover() {
    let mut world = World::new(2);
    world.shard.spec.primary = Some("cache-0-2".into());
    world.step();
    world.agents.remove("cache-0-0");
    world.received("cache-0-1", 1000, 1000);
    world.received("cache-0-2", 990, 990);
    world.wait(61);
    let d = world.step();
    let change = d.state.change.clone().unwrap();
    assert_eq!(change.kind, ChangeKind::Switchover, "unhealthy just now");
    assert!(d.state.primary_unhealthy_since.is_some());
    world.wait(6);
    let d = world.step();
    let change = d.state.change.clone().expect("a failover");
    assert_eq!(
        (
            change.kind,
            change.from.as_str(),
            change.to.as_str(),
            change.epoch
        ),
        (ChangeKind::Failover, "cache-0-0", "cache-0-1", 2),
        "the most advanced replica, at a new epoch"
    );
    assert!(
        change.reason.starts_with("PrimaryUnhealthy"),
        "{}",
        change.reason
    );
    assert_eq!(reasons(&d), ["FailoverStarted"]);
    assert_eq!(
        d.delete_pods[0].pod, "cache-0-0",
        "fenced by deleting its Pod"
    );
}

#[test]
fn a_stalled_switchover_is_not_failed_over_when_failover_is_disabled() {
    let mut world = World::new(2);
    world.shard.spec.failover.enabled = false;
    world.shard.spec.primary = Some("cache-0-2".into());
    world.step();
    world.agents.remove("cache-0-0");
    world.wait(61);
    world.step();
    world.wait(60);
    let d = world.step();
    assert_eq!(
        d.state.change.as_ref().unwrap().kind,
        ChangeKind::Switchover
    );
    let blocked = d.blocked.expect("blocked");
    assert_eq!(blocked.reason, FAILOVER_BLOCKED);
    assert!(
        blocked.message.contains("automatic failover is disabled"),
        "{}",
        blocked.message
    );
    assert!(d.delete_pods.is_empty() && d.commands.is_empty());
}

#[test]
fn a_switchover_to_an_unqualified_instance_is_blocked_and_says_why() {
    type Setup = fn(&mut World);
    let cases: [(&str, Setup, &str); 4] = [
        ("cache-0-7", |_| {}, "not an instance of this shard"),
        (
            "cache-0-1",
            |w| {
                let pod = w.pod_mut("cache-0-1").clone();
                *w.pod_mut("cache-0-1") = running(pod, "127.20.0.11", false);
            },
            "not ready",
        ),
        (
            "cache-0-1",
            |w| {
                w.replication("cache-0-1").streaming = false;
            },
            "does not stream",
        ),
        (
            "cache-0-1",
            |w| w.received("cache-0-1", 1, 1),
            "bytes behind",
        ),
    ];
    for (target, setup, expected) in cases {
        let mut world = World::new(1);
        world.shard.spec.failover.max_lag_bytes = 10;
        setup(&mut world);
        world.shard.spec.primary = Some(target.into());
        let d = world.decide();
        assert!(d.state.change.is_none(), "{target}");
        assert!(d.commands.is_empty(), "no action: {:?}", d.commands);
        let blocked = d.blocked.clone().expect("blocked");
        assert_eq!(blocked.reason, SWITCHOVER_BLOCKED);
        assert!(blocked.message.contains(expected), "{}", blocked.message);
        assert_eq!(reasons(&d), ["SwitchoverBlocked"]);
    }
}

#[test]
fn an_unhealthy_primary_is_looked_at_again_when_its_failover_is_due() {
    let second = std::time::Duration::from_secs(1);
    let mut world = World::new(2);
    let d = world.step();
    let spec = world.shard.spec.clone();
    assert_eq!(recheck_after(&d.state, &spec, world.now, second), second);

    world.crash_primary();
    let d = world.step();
    assert!(d.state.primary_unhealthy_since.is_some());
    world.wait(4);
    // unhealthyAfter is 5 s: due in 1 s, the interval
    assert_eq!(recheck_after(&d.state, &spec, world.now, second), second);
    world.now += SignedDuration::from_millis(700);
    let due = recheck_after(&d.state, &spec, world.now, second);
    assert_eq!(
        due,
        std::time::Duration::from_millis(300),
        "sooner than the interval"
    );
    world.now += SignedDuration::from_millis(300);
    assert_eq!(
        recheck_after(&d.state, &spec, world.now, second),
        second,
        "due now"
    );
}

// ------------------------------------------------------------------ rolling update

#[test]
fn a_rolling_update_recreates_replicas_one_at_a_time_then_switches_over() {
    let mut world = World::new(2);
    world.shard.spec.image = "redis:7.2".into();
    let d = world.step();
    assert_eq!(d.delete_pods.len(), 1);
    assert_eq!(d.delete_pods[0].pod, "cache-0-1");
    assert_eq!(d.delete_pods[0].reason, "RollingUpdate");

    // cache-0-1 recreated with the new image but not streaming yet: wait.
    let set_image = |w: &mut World, name: &str| w.recreate_from_spec(name);
    set_image(&mut world, "cache-0-1");
    world.replication("cache-0-1").streaming = false;
    let d = world.step();
    assert!(d.delete_pods.is_empty() && d.state.change.is_none());
    world.replication("cache-0-1").streaming = true;
    let d = world.step();
    assert_eq!(d.delete_pods[0].pod, "cache-0-2");

    // Only the primary is outdated: switch over to the most advanced updated replica.
    set_image(&mut world, "cache-0-2");
    world.received("cache-0-1", 1000, 1000);
    world.received("cache-0-2", 998, 998);
    let d = world.step();
    let change = d.state.change.expect("a switchover");
    assert_eq!(
        (change.kind, change.to.as_str()),
        (ChangeKind::Switchover, "cache-0-1")
    );
    assert!(
        change.reason.starts_with("RollingUpdate"),
        "{}",
        change.reason
    );
}

#[test]
fn a_resources_change_rolls_replicas_first_and_the_primary_after_its_switchover() {
    let mut world = World::new(1);
    world.shard.spec.resources = serde_json::from_value(serde_json::json!({
        "limits": { "memory": "512Mi" }
    }))
    .unwrap();
    let d = world.step();
    assert_eq!(names_of(&d), ["cache-0-1"], "the replica first");
    world.recreate_from_spec("cache-0-1");
    let d = world.step();
    assert!(
        d.delete_pods.is_empty(),
        "the primary is never deleted first"
    );
    let change = d.state.change.expect("a switchover to the updated replica");
    assert_eq!(
        (change.kind, change.from.as_str(), change.to.as_str()),
        (ChangeKind::Switchover, "cache-0-0", "cache-0-1")
    );
}

#[test]
fn nothing_is_rolled_while_an_instance_is_not_ready() {
    let mut world = World::new(2);
    world.shard.spec.image = "redis:7.2".into();
    world
        .pod_mut("cache-0-2")
        .status
        .as_mut()
        .unwrap()
        .conditions = None;
    let d = world.step();
    assert!(d.delete_pods.is_empty(), "{:?}", d.delete_pods);
}

fn names_of(d: &Decision) -> Vec<&str> {
    d.delete_pods.iter().map(|p| p.pod.as_str()).collect()
}

#[test]
fn a_lone_outdated_primary_is_recreated() {
    let mut world = World::new(0);
    world.shard.spec.image = "redis:7.2".into();
    let d = world.step();
    assert_eq!(d.delete_pods[0].pod, "cache-0-0");
}

// ------------------------------------------------------------------ settings

#[test]
fn durations_and_the_crashed_primary_hold() {
    assert_eq!(
        parse_duration("500ms"),
        Some(std::time::Duration::from_millis(500))
    );
    assert_eq!(
        parse_duration("5s"),
        Some(std::time::Duration::from_secs(5))
    );
    assert_eq!(
        parse_duration("2m"),
        Some(std::time::Duration::from_secs(120))
    );
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration("s"), None);
    let mut shard: Shard = load("redis-shard.yaml");
    assert_eq!(hold_seconds(&shard.spec), 35);
    shard.spec.failover.unhealthy_after = "1m".into();
    assert_eq!(hold_seconds(&shard.spec), 90);
    shard.spec.failover.enabled = false;
    assert_eq!(hold_seconds(&shard.spec), 0);
    shard.spec.failover.enabled = true;
    shard.spec.replicas = 0;
    assert_eq!(hold_seconds(&shard.spec), 0);
}

#[test]
fn a_hung_primary_counts_as_fenced_only_once_its_agent_killed_it() {
    let mut world = World::new(2);
    world.hang_primary();
    world.step();
    world.wait(6);
    let d = world.step();
    assert_eq!(d.state.change.as_ref().unwrap().phase, ChangePhase::Pending);
    // the agent took the command but has not killed the server yet
    world.agent("cache-0-0").phase = "stopping".into();
    world.agent("cache-0-0").pid = Some(42);
    world.wait(1);
    let d = world.step();
    assert_eq!(
        d.state.change.as_ref().unwrap().phase,
        ChangePhase::Pending,
        "a server that still runs is not fenced, even if it does not answer"
    );
    world.agent("cache-0-0").phase = "fenced".into();
    world.agent("cache-0-0").pid = None;
    let d = world.step();
    assert_eq!(
        d.state.change.as_ref().unwrap().phase,
        ChangePhase::Promoting
    );
}
