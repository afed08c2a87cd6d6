//! How each decision and its outcome change a migration's status (pure).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::saga::{self, Transition, phase};
use super::work::{CopyResult, VerifyResult};
use crate::api::ShardMigration;
use crate::api::condition;
use crate::api::shard_migration::{
    Checkpoint, MoveProgress, ShardMigrationStatus, VerificationResult,
};
use crate::operator::conditions::{Desired, settle};
use crate::ring::{HashRange, RangeMove};

/// The status to start from: the current one, or a fresh one with the moves listed.
pub fn base(migration: &ShardMigration, moves: &[RangeMove], now: &Time) -> ShardMigrationStatus {
    let mut status = migration.status.clone().unwrap_or_default();
    if status.moves.is_empty() {
        status.moves = move_progress(moves);
    }
    if status.started_at.is_none() {
        status.started_at = Some(now.clone());
        status.phase_started_at = Some(now.clone());
        status.phase = Some(phase::PENDING.to_owned());
    }
    status.observed_generation = migration.metadata.generation;
    status
}

/// One entry per (source, target) with the number of ranges and their ring share.
pub fn move_progress(moves: &[RangeMove]) -> Vec<MoveProgress> {
    let mut groups: BTreeMap<(i32, i32), (i32, u128)> = BTreeMap::new();
    for m in moves {
        let entry = groups.entry((m.source, m.target)).or_default();
        entry.0 += 1;
        entry.1 += range_size(&m.range);
    }
    groups
        .into_iter()
        .map(|((source, target), (ranges, size))| MoveProgress {
            source,
            target,
            ranges,
            share: share(size),
            copied: 0,
            total: None,
        })
        .collect()
}

/// How many hashes a range holds (2^64 for the whole circle).
fn range_size(range: &HashRange) -> u128 {
    let circle = 1u128 << 64;
    let (start, end) = (u128::from(range.start), u128::from(range.end));
    if start < end {
        end - start
    } else {
        circle - start + end
    }
}

fn share(size: u128) -> String {
    // Lossy only beyond 2^53, far below a display's precision.
    #[allow(clippy::cast_precision_loss)]
    let percent = size as f64 / (1u128 << 64) as f64 * 100.0;
    format!("{percent:.1}%")
}

/// Records `transition`.
pub fn transition(
    status: &mut ShardMigrationStatus,
    transition: &Transition,
    migration_generation: Option<i64>,
    now: &Time,
) {
    let changed_phase = status.phase.as_deref() != Some(transition.phase);
    status.phase = Some(transition.phase.to_owned());
    status.step = transition.step.map(str::to_owned);
    status.routing = transition.routing;
    // a new batched pass (the copy, the cleanup or the rollback's deletion, also when
    // started over after a change of primary) restarts the clock: a later change of
    // primary is told apart from the ones before
    if changed_phase || transition.checkpoints.is_some() {
        status.phase_started_at = Some(now.clone());
    }
    if let Some(shards) = &transition.checkpoints {
        status.checkpoints = saga::fresh_checkpoints(shards);
    } else if changed_phase {
        status.checkpoints.clear();
    }
    if transition.phase == phase::ROLLING_BACK && status.reason.is_none() {
        status.reason = Some(transition.note.clone());
    }
    if matches!(transition.phase, phase::COMPLETED | phase::ROLLED_BACK) {
        status.finished_at = Some(now.clone());
        status.step = None;
    }
    status.observed_generation = migration_generation;
    status.progress = Some(progress(status));
}

/// Records a copy batch of `source`.
pub fn copied(status: &mut ShardMigrationStatus, source: i32, result: &CopyResult) {
    set_checkpoint(status, source, result.next_cursor);
    for entry in status.moves.iter_mut().filter(|m| m.source == source) {
        if let Some(n) = result.copied.get(&entry.target) {
            entry.copied += i64::try_from(*n).unwrap_or(i64::MAX);
        }
        if let Some(total) = result.totals.as_ref().and_then(|t| t.get(&entry.target)) {
            entry.total = Some(i64::try_from(*total).unwrap_or(i64::MAX));
        }
    }
    let keys: u64 = result.copied.values().sum();
    status.keys_copied += i64::try_from(keys).unwrap_or(i64::MAX);
    status.bytes_copied += i64::try_from(result.bytes).unwrap_or(i64::MAX);
    status.progress = Some(progress(status));
}

/// Records a delete batch of `shard`.
pub fn deleted(status: &mut ShardMigrationStatus, shard: i32, next_cursor: u64) {
    set_checkpoint(status, shard, next_cursor);
    status.progress = Some(progress(status));
}

/// The checkpointed cursor of `shard`'s pass (0: from the start).
pub fn cursor(status: &ShardMigrationStatus, shard: i32) -> u64 {
    status
        .checkpoints
        .iter()
        .find(|c| c.shard == shard)
        .and_then(|c| c.cursor.parse().ok())
        .unwrap_or(0)
}

fn set_checkpoint(status: &mut ShardMigrationStatus, shard: i32, next_cursor: u64) {
    if let Some(c) = status.checkpoints.iter_mut().find(|c| c.shard == shard) {
        *c = Checkpoint {
            shard,
            cursor: next_cursor.to_string(),
            done: next_cursor == 0,
        };
    }
}

/// Records a verification; failures count as attempts.
pub fn verified(status: &mut ShardMigrationStatus, result: &VerifyResult) {
    for entry in status.moves.iter_mut() {
        if let Some(total) = result.totals.get(&(entry.source, entry.target)) {
            entry.total = Some(i64::try_from(*total).unwrap_or(i64::MAX));
        }
    }
    status.verification = Some(VerificationResult {
        passed: result.passed,
        checked: i64::try_from(result.checked).unwrap_or(i64::MAX),
        mismatches: i64::try_from(result.mismatches).unwrap_or(i64::MAX),
        message: result.message.clone(),
    });
    if !result.passed {
        status.verify_attempts += 1;
    }
}

/// The Progress column: the copied share during the copy, then the phase's place.
pub fn progress(status: &ShardMigrationStatus) -> String {
    let phase = status.phase.as_deref().unwrap_or(phase::PENDING);
    match phase {
        phase::PENDING | phase::PREPARING => "0%".to_owned(),
        phase::BACKFILL => {
            let copied: i64 = status.moves.iter().map(|m| m.copied).sum();
            let total: Option<i64> = status.moves.iter().map(|m| m.total).sum();
            match total {
                Some(total) if total > 0 => {
                    format!("{}%", (copied.min(total) * 90 / total).min(90))
                }
                _ => format!("{copied} keys"),
            }
        }
        phase::VERIFY => "90%".to_owned(),
        phase::SWITCH_READS => "93%".to_owned(),
        phase::SWITCH_WRITES => "95%".to_owned(),
        phase::CLEANUP => "98%".to_owned(),
        phase::COMPLETED => "100%".to_owned(),
        _ => "-".to_owned(),
    }
}

/// The conditions for a status: Ready once Completed, Progressing while running
/// (with the wait's reason, if any), Degraded after a rollback or while refused.
pub fn conditions(
    status: &mut ShardMigrationStatus,
    generation: Option<i64>,
    waiting: Option<(&'static str, &str)>,
    now: &Time,
) {
    let phase = status
        .phase
        .clone()
        .unwrap_or_else(|| phase::PENDING.to_owned());
    let done = phase == phase::COMPLETED;
    let rolled_back = phase == phase::ROLLED_BACK;
    let ready = if done {
        Desired::yes(
            condition::READY,
            "Completed",
            "the targets own the moved ranges",
        )
    } else {
        Desired::no(
            condition::READY,
            if rolled_back {
                "RolledBack"
            } else {
                "InProgress"
            },
            format!("phase {phase}"),
        )
    };
    let progressing = match (done || rolled_back, waiting) {
        (true, _) => Desired::no(condition::PROGRESSING, "Finished", format!("phase {phase}")),
        (false, Some((reason, message))) => {
            Desired::no(condition::PROGRESSING, reason, message.to_owned())
        }
        (false, None) => Desired::yes(
            condition::PROGRESSING,
            "Running",
            format!("phase {phase}{}", step_suffix(status)),
        ),
    };
    let refused = waiting.filter(|(reason, _)| *reason == "RollbackRefused");
    let degraded = if rolled_back || phase == phase::ROLLING_BACK {
        Desired::yes(
            condition::DEGRADED,
            "RolledBack",
            status.reason.clone().unwrap_or_default(),
        )
    } else if let Some((reason, message)) = refused {
        Desired::yes(condition::DEGRADED, reason, message.to_owned())
    } else {
        Desired::no(condition::DEGRADED, "Healthy", "no failure")
    };
    status.conditions = settle(
        vec![ready, progressing, degraded],
        &status.conditions,
        generation,
        now,
    );
}

fn step_suffix(status: &ShardMigrationStatus) -> String {
    status
        .step
        .as_deref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default()
}
