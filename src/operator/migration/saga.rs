//! The migration saga as a pure state machine: from the migration's spec and status
//! and what was observed, the one thing to do next (see `docs/migration.md`).
//!
//! The controller runs one [`Decision`] per reconciliation and records its outcome
//! in status before the next, so an operator restarted at any point resumes from the
//! last checkpoint.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::shard_migration::{Checkpoint, MigrationRouting, ShardMigrationStatus};
use crate::api::{ShardMigration, routing::RoutingPhase};

/// Phase names.
pub mod phase {
    /// Created, nothing done yet.
    pub const PENDING: &str = "Pending";
    /// Dual write published; waiting for every router.
    pub const PREPARING: &str = "Preparing";
    /// Copying the moving ranges in batches.
    pub const BACKFILL: &str = "Backfill";
    /// Comparing source and target.
    pub const VERIFY: &str = "Verify";
    /// Reads switched to the targets.
    pub const SWITCH_READS: &str = "SwitchReads";
    /// Writes frozen, last keys copied, target ring published.
    pub const SWITCH_WRITES: &str = "SwitchWrites";
    /// Moved keys deleted from the sources.
    pub const CLEANUP: &str = "Cleanup";
    /// Done: the targets own the ranges.
    pub const COMPLETED: &str = "Completed";
    /// Compensations running.
    pub const ROLLING_BACK: &str = "RollingBack";
    /// Compensated: the data is on the sources, the ring unchanged.
    pub const ROLLED_BACK: &str = "RolledBack";
}

/// Step names within a phase.
pub mod step {
    /// SwitchWrites: writes to the moving ranges are being frozen.
    pub const FREEZING: &str = "Freezing";
    /// SwitchWrites: frozen; the last dirty keys are copied and everything compared.
    pub const DRAINING: &str = "Draining";
    /// SwitchWrites: the target ring is being published.
    pub const COMMITTING: &str = "Committing";
    /// RollingBack: the moves are being removed from the routing table.
    pub const UNPUBLISHING: &str = "Unpublishing";
    /// RollingBack: the copies are being deleted from the targets.
    pub const DELETING_COPIES: &str = "DeletingCopies";
}

/// Verifications that may fail (each followed by a re-copy) before rolling back.
pub const MAX_VERIFY_ATTEMPTS: i32 = 2;

/// What the routing table and the routers show of this migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingView {
    /// The published table's version.
    pub version: i64,
    /// The published ring's version.
    pub ring_version: Option<i64>,
    /// This migration's phase in the published table, if listed.
    pub phase: Option<RoutingPhase>,
    /// Routers that have not applied `version` yet: `(pod, applied version)`;
    /// `None` when they were not asked (the step waits on no barrier, see
    /// [`awaits_barrier`]).
    pub lagging_routers: Option<Vec<(String, Option<i64>)>>,
}

/// What the controller observed before deciding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// `Err(why)` when a source or target shard cannot take part now (missing, not
    /// Ready, or a failover or switchover in progress).
    pub shards: Result<(), String>,
    /// The routing table and routers; `None` before the table exists.
    pub routing: Option<RoutingView>,
    /// The latest completed change of primary (failover or switchover) of a source or
    /// target shard: the Shard's name and when the new primary took over.
    pub last_primary_change: Option<(String, Time)>,
}

/// Work on the databases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Copy one batch from this source shard, then re-copy its dirty keys.
    CopyBatch {
        /// Source shard index.
        source: i32,
    },
    /// Drain the dirty sets and compare the sides; `strict` while writes are frozen.
    Verify {
        /// Whether counts must match exactly.
        strict: bool,
    },
    /// Delete one batch of moved keys from a shard.
    DeleteBatch {
        /// Shard index.
        shard: i32,
        /// `true`: delete the moved ranges from a source (cleanup); `false`: delete
        /// the copies from a target (rollback).
        from_source: bool,
    },
}

/// A transition to record in status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The new phase.
    pub phase: &'static str,
    /// The new step within it.
    pub step: Option<&'static str>,
    /// What the routers must do from now on (`None`: nothing special).
    pub routing: Option<MigrationRouting>,
    /// Fresh checkpoints for a batched pass over these shards, when one starts.
    pub checkpoints: Option<Vec<i32>>,
    /// Why (for Events and, on rollback, status.reason).
    pub note: String,
    /// Whether this starts the current batched pass over again (after a change of
    /// primary of one of its shards).
    pub restart: bool,
}

/// The one thing to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do until something changes: `reason` (CamelCase) and a message.
    Wait(&'static str, String),
    /// Record a transition.
    Transition(Transition),
    /// Do this work and record its outcome.
    Work(Work),
    /// The migration has ended (Completed or RolledBack): nothing more to do.
    Done,
}

/// The next decision for `migration`.
pub fn decide(migration: &ShardMigration, obs: &Observation) -> Decision {
    let default = ShardMigrationStatus::default();
    let status = migration.status.as_ref().unwrap_or(&default);
    let phase = status.phase.as_deref().unwrap_or(phase::PENDING);
    if matches!(phase, phase::COMPLETED | phase::ROLLED_BACK) {
        return Decision::Done;
    }
    if migration.spec.rollback && phase != phase::ROLLING_BACK {
        return start_rollback(phase, status);
    }
    match phase {
        phase::PENDING => pending(migration, obs),
        phase::PREPARING => preparing(migration, status, obs),
        phase::BACKFILL => backfill(migration, status, obs),
        phase::VERIFY => verify(migration, status, obs),
        phase::SWITCH_READS => switch_reads(migration, status, obs),
        phase::SWITCH_WRITES => switch_writes(migration, status, obs),
        phase::CLEANUP => cleanup(migration, status, obs),
        phase::ROLLING_BACK => rolling_back(migration, status, obs),
        other => Decision::Wait("UnknownPhase", format!("unknown phase {other}")),
    }
}

/// Every shard a migration's moves leave or reach, sorted.
pub fn involved(migration: &ShardMigration) -> Vec<i32> {
    shards_of(migration, |m| [m.source, m.target])
}

/// The source shards of a migration's moves, sorted.
pub fn sources(migration: &ShardMigration) -> Vec<i32> {
    shards_of(migration, |m| [m.source])
}

/// The target shards of a migration's moves, sorted.
pub fn targets(migration: &ShardMigration) -> Vec<i32> {
    shards_of(migration, |m| [m.target])
}

fn shards_of<const N: usize>(
    migration: &ShardMigration,
    pick: impl Fn(&crate::ring::RangeMove) -> [i32; N],
) -> Vec<i32> {
    let mut shards: Vec<i32> = moves(migration).iter().flat_map(pick).collect();
    shards.sort_unstable();
    shards.dedup();
    shards
}

/// The ranges whose owner differs between the migration's two rings.
pub fn moves(migration: &ShardMigration) -> Vec<crate::ring::RangeMove> {
    let from = crate::ring::Ring::build(migration.spec.from_ring.clone());
    let to = crate::ring::Ring::build(migration.spec.to_ring.clone());
    crate::ring::diff(&from, &to)
}

/// The routing-table phase that corresponds to `routing` (`None` for Committed and
/// for no routing: the migration is not listed then).
pub fn routing_phase(routing: Option<MigrationRouting>) -> Option<RoutingPhase> {
    match routing? {
        MigrationRouting::DualWrite => Some(RoutingPhase::DualWrite),
        MigrationRouting::SwitchReads => Some(RoutingPhase::SwitchReads),
        MigrationRouting::Frozen => Some(RoutingPhase::Frozen),
        MigrationRouting::Committed => None,
    }
}

/// Whether the next step of a migration in `status` waits for every router to
/// apply the routing table (a barrier): only then are the routers asked for their
/// versions, not on every batch of a copy.
pub fn awaits_barrier(status: &ShardMigrationStatus) -> bool {
    let step = status.step.as_deref();
    match status.phase.as_deref().unwrap_or(phase::PENDING) {
        phase::PREPARING | phase::SWITCH_READS => true,
        phase::SWITCH_WRITES => step != Some(step::DRAINING),
        phase::ROLLING_BACK => step != Some(step::DELETING_COPIES),
        _ => false,
    }
}

/// `Ok(())` once the routing table reflects `status.routing` and every router has
/// applied it; else why not.
pub fn routing_settled(
    migration: &ShardMigration,
    status: &ShardMigrationStatus,
    obs: &Observation,
) -> Result<(), (&'static str, String)> {
    let Some(view) = &obs.routing else {
        return Err((
            "WaitingForRouting",
            "the routing table is not published yet".to_owned(),
        ));
    };
    let published = match status.routing {
        Some(MigrationRouting::Committed) => {
            view.phase.is_none() && view.ring_version == Some(migration.spec.to_ring.version)
        }
        routing => view.phase == routing_phase(routing),
    };
    if !published {
        let wanted = match status.routing {
            Some(r) => format!("{r:?}"),
            None => "no special routing".to_owned(),
        };
        return Err((
            "WaitingForRouting",
            format!("waiting for the routing table to show {wanted} for this migration"),
        ));
    }
    let Some(lagging) = &view.lagging_routers else {
        return Err((
            "WaitingForRouters",
            "the routers' versions were not read".to_owned(),
        ));
    };
    if !lagging.is_empty() {
        let lagging: Vec<String> = lagging
            .iter()
            .map(|(pod, applied)| match applied {
                Some(v) => format!("{pod} (at {v})"),
                None => format!("{pod} (not answering)"),
            })
            .collect();
        return Err((
            "WaitingForRouters",
            format!(
                "waiting for every router to apply routing version {}: {}",
                view.version,
                lagging.join(", ")
            ),
        ));
    }
    Ok(())
}

fn transition(
    phase: &'static str,
    step: Option<&'static str>,
    routing: Option<MigrationRouting>,
    checkpoints: Option<Vec<i32>>,
    note: impl Into<String>,
) -> Decision {
    Decision::Transition(Transition {
        phase,
        step,
        routing,
        checkpoints,
        note: note.into(),
        restart: false,
    })
}

/// Waits while paused or while a shard is unavailable.
fn held(migration: &ShardMigration, obs: &Observation) -> Option<Decision> {
    if let Err(why) = &obs.shards {
        return Some(Decision::Wait("ShardUnavailable", why.clone()));
    }
    if migration.spec.paused {
        return Some(Decision::Wait(
            "Paused",
            "spec.paused is true; set it to false to go on".to_owned(),
        ));
    }
    None
}

fn settled_or_wait(
    migration: &ShardMigration,
    status: &ShardMigrationStatus,
    obs: &Observation,
) -> Option<Decision> {
    routing_settled(migration, status, obs)
        .err()
        .map(|(reason, message)| Decision::Wait(reason, message))
}

fn pending(migration: &ShardMigration, obs: &Observation) -> Decision {
    if let Some(wait) = held(migration, obs) {
        return wait;
    }
    transition(
        phase::PREPARING,
        None,
        Some(MigrationRouting::DualWrite),
        None,
        "publishing dual write of the moving ranges",
    )
}

fn preparing(
    migration: &ShardMigration,
    status: &ShardMigrationStatus,
    obs: &Observation,
) -> Decision {
    if let Some(wait) = settled_or_wait(migration, status, obs) {
        return wait;
    }
    transition(
        phase::BACKFILL,
        None,
        Some(MigrationRouting::DualWrite),
        Some(sources(migration)),
        "every router dual-writes the moving ranges; copying",
    )
}

fn next_unfinished(status: &ShardMigrationStatus) -> Option<i32> {
    status.checkpoints.iter().find(|c| !c.done).map(|c| c.shard)
}

/// Starts a batched pass over the shards again when one of the migration's shards
/// changed its primary since the pass (its phase, or its step of RollingBack)
/// started. A `SCAN` cursor is only valid on the server that returned it: a new
/// primary hashes its keys into other buckets, so resuming there skips keys — keys
/// not copied (Backfill), moved keys left on a source (Cleanup) or copies left on a
/// target (RollingBack). A new target primary may also lack copies its predecessor
/// acknowledged, so a change during Verify copies again too. Passes are idempotent:
/// keys already on a target are kept (`RESTORE` without `REPLACE`), deleted keys stay
/// deleted.
fn restart_after_primary_change(
    migration: &ShardMigration,
    status: &ShardMigrationStatus,
    obs: &Observation,
) -> Option<Decision> {
    let (shard, when) = obs.last_primary_change.as_ref()?;
    let started = status.phase_started_at.as_ref()?;
    // seconds precision on both sides: a change in the second the pass started
    // counts (a restart costs a re-scan, a missed one leaves keys behind)
    if when < started {
        return None;
    }
    let phase = status.phase.as_deref().unwrap_or(phase::PENDING);
    let progressed = status.checkpoints.iter().any(|c| c.done || c.cursor != "0");
    let why = format!("Shard {shard} changed its primary at {}", when.0);
    let (phase, step, routing, shards, what) = match phase {
        phase::BACKFILL if progressed => copy_again(migration),
        phase::VERIFY => copy_again(migration),
        phase::CLEANUP if progressed => (
            phase::CLEANUP,
            None,
            Some(MigrationRouting::Committed),
            sources(migration),
            "deleting the moved keys from the sources again from the start",
        ),
        phase::ROLLING_BACK
            if progressed && status.step.as_deref() == Some(step::DELETING_COPIES) =>
        {
            (
                phase::ROLLING_BACK,
                Some(step::DELETING_COPIES),
                None,
                targets(migration),
                "deleting the copies from the targets again from the start",
            )
        }
        _ => return None,
    };
    Some(Decision::Transition(Transition {
        phase,
        step,
        routing,
        checkpoints: Some(shards),
        note: format!("{why}; {what}"),
        restart: true,
    }))
}

type Pass = (
    &'static str,
    Option<&'static str>,
    Option<MigrationRouting>,
    Vec<i32>,
    &'static str,
);

fn copy_again(migration: &ShardMigration) -> Pass {
    (
        phase::BACKFILL,
        None,
        Some(MigrationRouting::DualWrite),
        sources(migration),
        "copying again from the start (copies already on the targets are kept)",
    )
}

fn backfill(
    migration: &ShardMigration,
    status: &ShardMigrationStatus,
    obs: &Observation,
) -> Decision {
    if let Some(restart) = restart_after_primary_change(migration, status, obs) {
        return restart;
    }
    if let Some(wait) = held(migration, obs) {
        return wait;
    }
    match next_unfinished(status) {
        Some(source) => Decision::Work(Work::CopyBatch { source }),
        None => transition(
            phase::VERIFY,
            None,
            Some(MigrationRouting::DualWrite),
            None,
            "every moving key copied; verifying",
        ),
    }
}

fn verify(
    migration: &ShardMigration,
    status: &ShardMigrationStatus,
    obs: &Observation,
) -> Decision {
    if let Some(restart) = restart_after_primary_change(migration, status, obs) {
        return restart;
    }
    if let Some(wait) = held(migration, obs) {
        return wait;
    }
    if status.verify_attempts >= MAX_VERIFY_ATTEMPTS {
        let message = status
            .verification
            .as_ref()
            .map(|v| v.message.clone())
            .unwrap_or_default();
        return rollback_transition(format!(
            "verification failed {} times: {message}",
            status.verify_attempts
        ));
    }
    Decision::Work(Work::Verify { strict: false })
}

/// What follows a verification: on to the switch, back to a second copy of the
/// moving ranges (a failure that left attempts: the copy skips keys already there
/// and fills missing ones), or rollback. `None` is never returned today; it stays
/// for a verification that only needs repeating.
pub fn after_verify(
    strict: bool,
    passed: bool,
    attempts: i32,
    message: &str,
    sources: &[i32],
) -> Option<Transition> {
    let next = |phase, step, routing, note: String| Transition {
        phase,
        step,
        routing,
        checkpoints: None,
        note,
        restart: false,
    };
    match (strict, passed) {
        (false, true) => Some(next(
            phase::SWITCH_READS,
            None,
            Some(MigrationRouting::SwitchReads),
            format!("verified ({message}); switching reads to the targets"),
        )),
        (true, true) => Some(next(
            phase::SWITCH_WRITES,
            Some(step::COMMITTING),
            Some(MigrationRouting::Committed),
            format!(
                "writes frozen, every key copied and verified ({message}); publishing the target ring"
            ),
        )),
        (false, false) if attempts < MAX_VERIFY_ATTEMPTS => Some(Transition {
            checkpoints: Some(sources.to_vec()),
            ..next(
                phase::BACKFILL,
                None,
                Some(MigrationRouting::DualWrite),
                format!("verification failed ({message}); copying the moving ranges again"),
            )
        }),
        (false, false) => Some(next(
            phase::ROLLING_BACK,
            Some(step::UNPUBLISHING),
            None,
            format!("verification failed {attempts} times: {message}"),
        )),
        (true, false) => Some(next(
            phase::ROLLING_BACK,
            Some(step::UNPUBLISHING),
            None,
            format!("verification with writes frozen failed: {message}"),
        )),
    }
}

fn switch_reads(
    migration: &ShardMigration,
    status: &ShardMigrationStatus,
    obs: &Observation,
) -> Decision {
    if let Some(wait) = settled_or_wait(migration, status, obs) {
        return wait;
    }
    if let Some(wait) = held(migration, obs) {
        return wait;
    }
    transition(
        phase::SWITCH_WRITES,
        Some(step::FREEZING),
        Some(MigrationRouting::Frozen),
        None,
        "reads served by the targets; freezing writes to the moving ranges",
    )
}

fn switch_writes(
    migration: &ShardMigration,
    status: &ShardMigrationStatus,
    obs: &Observation,
) -> Decision {
    let step = status.step.as_deref().unwrap_or(step::FREEZING);
    if step != step::COMMITTING
        && let Err(why) = &obs.shards
    {
        // Never stay frozen through a failover: writes would be held for its duration.
        return transition(
            phase::SWITCH_READS,
            None,
            Some(MigrationRouting::SwitchReads),
            None,
            format!("unfreezing writes until the shards are healthy again: {why}"),
        );
    }
    if step != step::DRAINING
        && let Some(wait) = settled_or_wait(migration, status, obs)
    {
        return wait;
    }
    match step {
        step::FREEZING => transition(
            phase::SWITCH_WRITES,
            Some(step::DRAINING),
            Some(MigrationRouting::Frozen),
            None,
            "writes to the moving ranges are held on every router; copying the last keys",
        ),
        step::DRAINING => Decision::Work(Work::Verify { strict: true }),
        _ => transition(
            phase::CLEANUP,
            None,
            Some(MigrationRouting::Committed),
            Some(sources(migration)),
            "the target ring is in effect on every router; deleting moved keys from the sources",
        ),
    }
}

fn cleanup(
    migration: &ShardMigration,
    status: &ShardMigrationStatus,
    obs: &Observation,
) -> Decision {
    if let Some(restart) = restart_after_primary_change(migration, status, obs) {
        return restart;
    }
    match next_unfinished(status) {
        Some(shard) => Decision::Work(Work::DeleteBatch {
            shard,
            from_source: true,
        }),
        None => transition(
            phase::COMPLETED,
            None,
            Some(MigrationRouting::Committed),
            None,
            "moved keys deleted from the sources",
        ),
    }
}

fn rollback_transition(note: String) -> Decision {
    transition(
        phase::ROLLING_BACK,
        Some(step::UNPUBLISHING),
        None,
        None,
        note,
    )
}

fn start_rollback(phase: &str, status: &ShardMigrationStatus) -> Decision {
    let committed = status.routing == Some(MigrationRouting::Committed)
        || matches!(phase, phase::CLEANUP | phase::COMPLETED);
    if committed {
        return Decision::Wait(
            "RollbackRefused",
            "rollback is not possible: writes already go to the targets (the target ring is \
             published); to move the ranges back, change the ShardedCluster's shards or weights \
             back, which creates a new migration"
                .to_owned(),
        );
    }
    rollback_transition("rollback requested (spec.rollback)".to_owned())
}

fn rolling_back(
    migration: &ShardMigration,
    status: &ShardMigrationStatus,
    obs: &Observation,
) -> Decision {
    if let Some(restart) = restart_after_primary_change(migration, status, obs) {
        return restart;
    }
    match status.step.as_deref() {
        Some(step::DELETING_COPIES) => match next_unfinished(status) {
            Some(shard) => Decision::Work(Work::DeleteBatch {
                shard,
                from_source: false,
            }),
            None => transition(
                phase::ROLLED_BACK,
                None,
                None,
                None,
                "copies deleted from the targets; the data is on the sources",
            ),
        },
        _ => {
            if let Some(wait) = settled_or_wait(migration, status, obs) {
                return wait;
            }
            transition(
                phase::ROLLING_BACK,
                Some(step::DELETING_COPIES),
                None,
                Some(targets(migration)),
                "dual write stopped on every router; deleting the copies from the targets",
            )
        }
    }
}

/// Fresh checkpoints for a pass over `shards`.
pub fn fresh_checkpoints(shards: &[i32]) -> Vec<Checkpoint> {
    shards
        .iter()
        .map(|&shard| Checkpoint {
            shard,
            cursor: "0".to_owned(),
            done: false,
        })
        .collect()
}
