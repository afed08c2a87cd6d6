//! The saga's decisions, phase by phase, without an API server.

use super::saga::{Decision, Observation, RoutingView, Work, after_verify, decide, phase, step};
use crate::api::ShardMigration;
use crate::api::routing::RoutingPhase;
use crate::api::shard_migration::{
    Checkpoint, MigrationRouting, ShardMigrationSpec, ShardMigrationStatus, VerificationMode,
};
use crate::ring::{RingDescriptor, RingMember};

fn ring(version: i64, shards: i32) -> RingDescriptor {
    RingDescriptor {
        version,
        vnodes_per_weight: 16,
        members: (0..shards)
            .map(|shard| RingMember { shard, weight: 1 })
            .collect(),
    }
}

fn migration(phase: &str, step: Option<&str>, routing: Option<MigrationRouting>) -> ShardMigration {
    let mut m = ShardMigration::new(
        "c-ring-2",
        ShardMigrationSpec {
            cluster: "c".into(),
            from_ring: ring(1, 3),
            to_ring: ring(2, 4),
            batch_size: 100,
            verification: VerificationMode::Sample,
            paused: false,
            rollback: false,
        },
    );
    m.status = Some(ShardMigrationStatus {
        phase: Some(phase.into()),
        step: step.map(Into::into),
        routing,
        ..ShardMigrationStatus::default()
    });
    m
}

fn healthy(phase: Option<RoutingPhase>, ring_version: i64) -> Observation {
    Observation {
        shards: Ok(()),
        routing: Some(RoutingView {
            version: 7,
            ring_version: Some(ring_version),
            phase,
            lagging_routers: Some(Vec::new()),
        }),
        last_primary_change: None,
    }
}

fn transition_to(
    decision: &Decision,
) -> (&'static str, Option<&'static str>, Option<MigrationRouting>) {
    match decision {
        Decision::Transition(t) => (t.phase, t.step, t.routing),
        other => panic!("expected a transition, got {other:?}"),
    }
}

#[test]
fn pending_publishes_dual_write() {
    let m = migration(phase::PENDING, None, None);
    let d = decide(&m, &healthy(None, 1));
    assert_eq!(
        transition_to(&d),
        (phase::PREPARING, None, Some(MigrationRouting::DualWrite))
    );
}

#[test]
fn nothing_starts_while_a_shard_fails_over_or_paused() {
    let m = migration(phase::PENDING, None, None);
    let mut obs = healthy(None, 1);
    obs.shards = Err("Shard c-1 is changing its primary".into());
    assert!(matches!(
        decide(&m, &obs),
        Decision::Wait("ShardUnavailable", _)
    ));
    let mut paused = migration(phase::BACKFILL, None, Some(MigrationRouting::DualWrite));
    paused.spec.paused = true;
    assert!(matches!(
        decide(&paused, &healthy(Some(RoutingPhase::DualWrite), 1)),
        Decision::Wait("Paused", _)
    ));
}

#[test]
fn preparing_waits_for_the_table_and_every_router() {
    let m = migration(phase::PREPARING, None, Some(MigrationRouting::DualWrite));
    assert!(matches!(
        decide(&m, &healthy(None, 1)),
        Decision::Wait("WaitingForRouting", _)
    ));
    let mut lagging = healthy(Some(RoutingPhase::DualWrite), 1);
    lagging.routing.as_mut().unwrap().lagging_routers = Some(vec![("c-router-x".into(), Some(6))]);
    match decide(&m, &lagging) {
        Decision::Wait("WaitingForRouters", message) => {
            assert!(message.contains("c-router-x (at 6)"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let d = decide(&m, &healthy(Some(RoutingPhase::DualWrite), 1));
    match d {
        Decision::Transition(t) => {
            assert_eq!(t.phase, phase::BACKFILL);
            assert_eq!(
                t.checkpoints,
                Some(vec![0, 1, 2]),
                "every source shard copies"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn backfill_copies_each_unfinished_source_then_verifies() {
    let mut m = migration(phase::BACKFILL, None, Some(MigrationRouting::DualWrite));
    let status = m.status.as_mut().unwrap();
    status.checkpoints = vec![
        Checkpoint {
            shard: 0,
            cursor: "0".into(),
            done: true,
        },
        Checkpoint {
            shard: 1,
            cursor: "1234".into(),
            done: false,
        },
    ];
    let obs = healthy(Some(RoutingPhase::DualWrite), 1);
    assert_eq!(
        decide(&m, &obs),
        Decision::Work(Work::CopyBatch { source: 1 })
    );
    m.status.as_mut().unwrap().checkpoints[1].done = true;
    assert_eq!(transition_to(&decide(&m, &obs)).0, phase::VERIFY);
}

fn at(second: i64) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::from_second(second).unwrap(),
    )
}

#[test]
fn a_change_of_primary_during_the_copy_starts_it_over() {
    let mut m = migration(phase::BACKFILL, None, Some(MigrationRouting::DualWrite));
    let status = m.status.as_mut().unwrap();
    status.phase_started_at = Some(at(1000));
    status.checkpoints = vec![Checkpoint {
        shard: 0,
        cursor: "8976".into(),
        done: false,
    }];
    let mut obs = healthy(Some(RoutingPhase::DualWrite), 1);
    obs.last_primary_change = Some(("c-0".into(), at(999)));
    assert_eq!(
        decide(&m, &obs),
        Decision::Work(Work::CopyBatch { source: 0 }),
        "a change before the copy started changes nothing"
    );
    obs.last_primary_change = Some(("c-0".into(), at(1005)));
    match decide(&m, &obs) {
        Decision::Transition(t) => {
            assert_eq!(t.phase, phase::BACKFILL);
            assert_eq!(t.checkpoints, Some(vec![0, 1, 2]), "every source again");
            assert!(t.note.contains("c-0"), "{}", t.note);
            assert!(t.restart);
        }
        other => panic!("{other:?}"),
    }
    // once started over (nothing copied yet), the copy goes on
    m.status.as_mut().unwrap().checkpoints[0].cursor = "0".into();
    assert_eq!(
        decide(&m, &obs),
        Decision::Work(Work::CopyBatch { source: 0 })
    );
    // a target that failed over while verifying: copy again, then verify again
    let mut v = migration(phase::VERIFY, None, Some(MigrationRouting::DualWrite));
    v.status.as_mut().unwrap().phase_started_at = Some(at(1000));
    obs.last_primary_change = Some(("c-3".into(), at(1001)));
    assert_eq!(transition_to(&decide(&v, &obs)).0, phase::BACKFILL);
    obs.last_primary_change = Some(("c-3".into(), at(900)));
    assert_eq!(
        decide(&v, &obs),
        Decision::Work(Work::Verify { strict: false })
    );
}

#[test]
fn a_change_of_primary_during_a_deletion_pass_starts_it_over() {
    let mut obs = healthy(None, 2);
    obs.last_primary_change = Some(("c-1".into(), at(1001)));
    let progressed = vec![Checkpoint {
        shard: 0,
        cursor: "0".into(),
        done: true,
    }];
    // Cleanup: the moved keys left on a source would stay there
    let mut cleanup = migration(phase::CLEANUP, None, Some(MigrationRouting::Committed));
    let status = cleanup.status.as_mut().unwrap();
    status.phase_started_at = Some(at(1000));
    status.checkpoints = progressed.clone();
    match decide(&cleanup, &obs) {
        Decision::Transition(t) => {
            assert_eq!((t.phase, t.restart), (phase::CLEANUP, true));
            assert_eq!(t.routing, Some(MigrationRouting::Committed));
            assert_eq!(t.checkpoints, Some(vec![0, 1, 2]));
        }
        other => panic!("{other:?}"),
    }
    // RollingBack: copies left on a target would be taken for newer writes later
    let mut rolling = migration(phase::ROLLING_BACK, Some(step::DELETING_COPIES), None);
    let status = rolling.status.as_mut().unwrap();
    status.phase_started_at = Some(at(1000));
    status.checkpoints = progressed;
    match decide(&rolling, &obs) {
        Decision::Transition(t) => {
            assert_eq!(
                (t.phase, t.step, t.restart),
                (phase::ROLLING_BACK, Some(step::DELETING_COPIES), true)
            );
            assert_eq!(t.checkpoints, Some(vec![3]));
        }
        other => panic!("{other:?}"),
    }
    // a change before the pass started changes nothing: the pass is over
    obs.last_primary_change = Some(("c-1".into(), at(999)));
    assert_eq!(transition_to(&decide(&rolling, &obs)).0, phase::ROLLED_BACK);
}

#[test]
fn verification_outcomes_lead_on_or_roll_back() {
    let m = migration(phase::VERIFY, None, Some(MigrationRouting::DualWrite));
    let obs = healthy(Some(RoutingPhase::DualWrite), 1);
    assert_eq!(
        decide(&m, &obs),
        Decision::Work(Work::Verify { strict: false })
    );
    let passed = after_verify(false, true, 0, "ok", &[0, 1]).unwrap();
    assert_eq!(passed.phase, phase::SWITCH_READS);
    assert_eq!(passed.routing, Some(MigrationRouting::SwitchReads));
    let again = after_verify(false, false, 1, "1 differs", &[0, 1]).unwrap();
    assert_eq!(
        (again.phase, again.checkpoints),
        (phase::BACKFILL, Some(vec![0, 1])),
        "a first failure copies the ranges again"
    );
    let failed = after_verify(false, false, 2, "1 differs", &[0, 1]).unwrap();
    assert_eq!(failed.phase, phase::ROLLING_BACK);
    let strict = after_verify(true, true, 0, "ok", &[0, 1]).unwrap();
    assert_eq!(
        (strict.phase, strict.step, strict.routing),
        (
            phase::SWITCH_WRITES,
            Some(step::COMMITTING),
            Some(MigrationRouting::Committed)
        )
    );
    assert_eq!(
        after_verify(true, false, 0, "x", &[0, 1]).unwrap().phase,
        phase::ROLLING_BACK
    );
}

#[test]
fn switch_writes_freezes_drains_and_commits() {
    let reads = migration(
        phase::SWITCH_READS,
        None,
        Some(MigrationRouting::SwitchReads),
    );
    let d = decide(&reads, &healthy(Some(RoutingPhase::SwitchReads), 1));
    assert_eq!(
        transition_to(&d),
        (
            phase::SWITCH_WRITES,
            Some(step::FREEZING),
            Some(MigrationRouting::Frozen)
        )
    );
    let freezing = migration(
        phase::SWITCH_WRITES,
        Some(step::FREEZING),
        Some(MigrationRouting::Frozen),
    );
    assert!(
        matches!(
            decide(&freezing, &healthy(Some(RoutingPhase::SwitchReads), 1)),
            Decision::Wait(..)
        ),
        "not before every router holds writes"
    );
    let d = decide(&freezing, &healthy(Some(RoutingPhase::Frozen), 1));
    assert_eq!(transition_to(&d).1, Some(step::DRAINING));
    let draining = migration(
        phase::SWITCH_WRITES,
        Some(step::DRAINING),
        Some(MigrationRouting::Frozen),
    );
    assert_eq!(
        decide(&draining, &healthy(Some(RoutingPhase::Frozen), 1)),
        Decision::Work(Work::Verify { strict: true })
    );
    let committing = migration(
        phase::SWITCH_WRITES,
        Some(step::COMMITTING),
        Some(MigrationRouting::Committed),
    );
    assert!(
        matches!(decide(&committing, &healthy(None, 1)), Decision::Wait(..)),
        "the old ring is still published"
    );
    let d = decide(&committing, &healthy(None, 2));
    match d {
        Decision::Transition(t) => {
            assert_eq!(t.phase, phase::CLEANUP);
            assert_eq!(t.routing, Some(MigrationRouting::Committed));
            assert_eq!(t.checkpoints, Some(vec![0, 1, 2]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failover_while_frozen_unfreezes() {
    let draining = migration(
        phase::SWITCH_WRITES,
        Some(step::DRAINING),
        Some(MigrationRouting::Frozen),
    );
    let mut obs = healthy(Some(RoutingPhase::Frozen), 1);
    obs.shards = Err("Shard c-3 is not Ready".into());
    assert_eq!(
        transition_to(&decide(&draining, &obs)),
        (
            phase::SWITCH_READS,
            None,
            Some(MigrationRouting::SwitchReads)
        )
    );
}

#[test]
fn cleanup_deletes_from_each_source_then_completes() {
    let mut m = migration(phase::CLEANUP, None, Some(MigrationRouting::Committed));
    m.status.as_mut().unwrap().checkpoints = vec![Checkpoint {
        shard: 2,
        cursor: "0".into(),
        done: false,
    }];
    let obs = healthy(None, 2);
    assert_eq!(
        decide(&m, &obs),
        Decision::Work(Work::DeleteBatch {
            shard: 2,
            from_source: true
        })
    );
    m.status.as_mut().unwrap().checkpoints[0].done = true;
    assert_eq!(transition_to(&decide(&m, &obs)).0, phase::COMPLETED);
    m.status.as_mut().unwrap().phase = Some(phase::COMPLETED.into());
    assert_eq!(decide(&m, &obs), Decision::Done);
}

#[test]
fn rollback_unpublishes_then_deletes_the_copies() {
    let mut m = migration(phase::BACKFILL, None, Some(MigrationRouting::DualWrite));
    m.spec.rollback = true;
    let obs = healthy(Some(RoutingPhase::DualWrite), 1);
    assert_eq!(
        transition_to(&decide(&m, &obs)),
        (phase::ROLLING_BACK, Some(step::UNPUBLISHING), None)
    );
    m.status.as_mut().unwrap().phase = Some(phase::ROLLING_BACK.into());
    m.status.as_mut().unwrap().step = Some(step::UNPUBLISHING.into());
    m.status.as_mut().unwrap().routing = None;
    assert!(
        matches!(decide(&m, &obs), Decision::Wait("WaitingForRouting", _)),
        "routers still dual-write"
    );
    match decide(&m, &healthy(None, 1)) {
        Decision::Transition(t) => {
            assert_eq!(t.step, Some(step::DELETING_COPIES));
            assert_eq!(
                t.checkpoints,
                Some(vec![3]),
                "the copies are on the new shard"
            );
        }
        other => panic!("{other:?}"),
    }
    m.status.as_mut().unwrap().step = Some(step::DELETING_COPIES.into());
    m.status.as_mut().unwrap().checkpoints = vec![Checkpoint {
        shard: 3,
        cursor: "0".into(),
        done: false,
    }];
    assert_eq!(
        decide(&m, &healthy(None, 1)),
        Decision::Work(Work::DeleteBatch {
            shard: 3,
            from_source: false
        })
    );
    m.status.as_mut().unwrap().checkpoints[0].done = true;
    assert_eq!(
        transition_to(&decide(&m, &healthy(None, 1))).0,
        phase::ROLLED_BACK
    );
}

#[test]
fn rollback_after_the_switch_is_refused() {
    let mut m = migration(phase::CLEANUP, None, Some(MigrationRouting::Committed));
    m.spec.rollback = true;
    match decide(&m, &healthy(None, 2)) {
        Decision::Wait("RollbackRefused", message) => {
            assert!(message.contains("change the ShardedCluster"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn routers_are_asked_only_where_a_barrier_is_awaited() {
    let steps: &[(&str, Option<&str>, Option<MigrationRouting>)] = &[
        (phase::PENDING, None, None),
        (phase::PREPARING, None, Some(MigrationRouting::DualWrite)),
        (phase::BACKFILL, None, Some(MigrationRouting::DualWrite)),
        (phase::VERIFY, None, Some(MigrationRouting::DualWrite)),
        (
            phase::SWITCH_READS,
            None,
            Some(MigrationRouting::SwitchReads),
        ),
        (
            phase::SWITCH_WRITES,
            Some(step::FREEZING),
            Some(MigrationRouting::Frozen),
        ),
        (
            phase::SWITCH_WRITES,
            Some(step::DRAINING),
            Some(MigrationRouting::Frozen),
        ),
        (
            phase::SWITCH_WRITES,
            Some(step::COMMITTING),
            Some(MigrationRouting::Committed),
        ),
        (phase::CLEANUP, None, Some(MigrationRouting::Committed)),
        (phase::ROLLING_BACK, Some(step::UNPUBLISHING), None),
        (phase::ROLLING_BACK, Some(step::DELETING_COPIES), None),
    ];
    for &(phase, step, routing) in steps {
        let m = migration(phase, step, routing);
        let shown = super::saga::routing_phase(routing);
        let ring = if routing == Some(MigrationRouting::Committed) {
            2
        } else {
            1
        };
        let mut asked = healthy(shown, ring);
        let mut not_asked = asked.clone();
        not_asked.routing.as_mut().unwrap().lagging_routers = None;
        asked.routing.as_mut().unwrap().lagging_routers = Some(vec![("r".into(), Some(1))]);
        let awaits = super::saga::awaits_barrier(m.status.as_ref().unwrap());
        let differs = decide(&m, &asked) != decide(&m, &not_asked)
            || decide(&m, &healthy(shown, ring)) != decide(&m, &not_asked);
        assert_eq!(
            awaits, differs,
            "{phase} {step:?}: the decision depends on the routers exactly when a barrier is awaited"
        );
    }
}
