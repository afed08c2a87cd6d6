//! The saga's work on the databases: one batch of copying, a verification or one
//! batch of deleting, through `engine::redis`, reached at each shard's `-rw` Service
//! as published in the routing table.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::ShardMigration;
use crate::api::routing::{DIRTY_DB, RoutingTable};
use crate::api::shard_migration::VerificationMode;
use crate::engine::redis::{self as data, Conn, Endpoint, MigrateError, Side, SourcePlan};
use crate::ring::RangeMove;

/// Deadline of every database call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Values compared in a sampled verification, per source.
pub const SAMPLE_SIZE: usize = 1000;
/// Dirty keys re-copied per call while copying.
const DRAIN_PER_BATCH: usize = 1000;

/// Errors of the work.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// A shard has no address in the routing table yet.
    #[error("shard {0} has no -rw address in the routing table yet")]
    NoAddress(i32),
    /// The cluster's credentials are not readable.
    #[error("the cluster's credentials Secret is missing or incomplete")]
    NoCredentials,
    /// A database call failed.
    #[error(transparent)]
    Data(#[from] MigrateError),
}

/// Where the shards are and how to log in.
pub struct Shards<'a> {
    /// The published routing table.
    pub table: &'a RoutingTable,
    /// Username and password.
    pub credentials: &'a (String, String),
}

impl Shards<'_> {
    async fn connect(&self, shard: i32, db: i64) -> Result<Conn, WorkError> {
        let address = self
            .table
            .shards
            .iter()
            .find(|s| s.index == shard)
            .and_then(|s| s.rw.clone())
            .ok_or(WorkError::NoAddress(shard))?;
        let endpoint = Endpoint {
            address,
            username: self.credentials.0.clone(),
            password: self.credentials.1.clone(),
        };
        Ok(data::connect(&endpoint, db, CALL_TIMEOUT).await?)
    }

    async fn targets(&self, plan: &SourcePlan) -> Result<BTreeMap<i32, Conn>, WorkError> {
        let mut targets = BTreeMap::new();
        for target in plan.targets() {
            targets.insert(target, self.connect(target, 0).await?);
        }
        Ok(targets)
    }
}

/// What one copy batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyResult {
    /// The cursor to continue from; 0 when the source is done.
    pub next_cursor: u64,
    /// Keys copied, per target (backfill and dirty re-copies).
    pub copied: BTreeMap<i32, u64>,
    /// Bytes copied.
    pub bytes: u64,
    /// Keys in the moving ranges on the source per target, when counted now (first
    /// batch of a source).
    pub totals: Option<BTreeMap<i32, u64>>,
}

/// Copies one batch from `source` starting at `cursor`, then re-copies up to a
/// batch of its dirty keys.
pub async fn copy_batch(
    shards: &Shards<'_>,
    migration: &ShardMigration,
    moves: &[RangeMove],
    source: i32,
    cursor: u64,
    count_first: bool,
) -> Result<CopyResult, WorkError> {
    let plan = SourcePlan::new(source, moves);
    let mut src = shards.connect(source, 0).await?;
    let mut dirty = shards.connect(source, DIRTY_DB).await?;
    let mut targets = shards.targets(&plan).await?;
    let batch = usize::try_from(migration.spec.batch_size).unwrap_or(500);
    let totals = if count_first {
        let counts =
            data::count_in_moves(&mut src, plan.moves(), Side::Source(source), batch).await?;
        Some(per_target(&counts))
    } else {
        None
    };
    let outcome = data::backfill_batch(&mut src, &mut targets, &plan, cursor, batch).await?;
    let name = migration.metadata.name.clone().unwrap_or_default();
    let drained = data::drain_dirty(
        &mut src,
        &mut dirty,
        &mut targets,
        &plan,
        &name,
        DRAIN_PER_BATCH,
    )
    .await?;
    let mut copied = outcome.copied_per_target.clone();
    for (target, n) in &drained.copied_per_target {
        *copied.entry(*target).or_default() += n;
    }
    Ok(CopyResult {
        next_cursor: outcome.next_cursor,
        copied,
        bytes: outcome.bytes,
        totals,
    })
}

fn per_target(counts: &BTreeMap<(i32, i32), u64>) -> BTreeMap<i32, u64> {
    let mut totals = BTreeMap::new();
    for (&(_, target), &n) in counts {
        *totals.entry(target).or_default() += n;
    }
    totals
}

/// What a verification found over every source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyResult {
    /// Whether every source agreed with its targets.
    pub passed: bool,
    /// Keys compared.
    pub checked: u64,
    /// Keys that still differ.
    pub mismatches: u64,
    /// Keys on the sources per (source, target).
    pub totals: BTreeMap<(i32, i32), u64>,
    /// A summary.
    pub message: String,
}

/// Drains the dirty sets and compares every source with its targets. With `strict`
/// (writes are frozen) it only drains the dirty sets to empty: routers mark every
/// key they write in a moving range after writing it on both sides, so empty dirty
/// sets under held writes leave the targets exact (`docs/migration.md`), and the
/// freeze lasts as long as the last dirty keys take to copy, not a full comparison.
pub async fn verify(
    shards: &Shards<'_>,
    migration: &ShardMigration,
    moves: &[RangeMove],
    sources: &[i32],
    strict: bool,
) -> Result<VerifyResult, WorkError> {
    let name = migration.metadata.name.clone().unwrap_or_default();
    let batch = usize::try_from(migration.spec.batch_size).unwrap_or(500);
    let mode = migration.spec.verification;
    let mut result = VerifyResult {
        passed: true,
        ..VerifyResult::default()
    };
    let mut messages = Vec::new();
    for &source in sources {
        let plan = SourcePlan::new(source, moves);
        let mut src = shards.connect(source, 0).await?;
        let mut dirty = shards.connect(source, DIRTY_DB).await?;
        let mut targets = shards.targets(&plan).await?;
        let (recopied, remaining) =
            drain_all(&mut src, &mut dirty, &mut targets, &plan, &name, strict).await?;
        if strict {
            result.passed &= remaining == 0;
            messages.push(format!(
                "shard {source}: {recopied} dirty key(s) re-copied with writes held, {remaining} left"
            ));
            continue;
        }
        let options = data::VerifyOptions {
            mode,
            sample_size: sample_size(mode),
            batch,
            strict,
        };
        let outcome =
            data::verify(&mut src, &mut dirty, &mut targets, &plan, &name, &options).await?;
        result.passed &= outcome.passed;
        result.checked += outcome.checked;
        result.mismatches += outcome.mismatches;
        for count in &outcome.counts {
            *result
                .totals
                .entry((count.source, count.target))
                .or_default() += count.source_keys;
        }
        messages.push(format!("shard {source}: {}", outcome.message));
    }
    result.message = messages.join("; ");
    Ok(result)
}

fn sample_size(mode: VerificationMode) -> usize {
    match mode {
        VerificationMode::Sample => SAMPLE_SIZE,
        VerificationMode::Counts | VerificationMode::Full => 0,
    }
}

/// Re-copies dirty keys until the set is empty (strict) or for a bounded number of
/// rounds (writes still flowing); returns the keys re-copied or deleted and the
/// set's size at the end.
async fn drain_all(
    src: &mut Conn,
    dirty: &mut Conn,
    targets: &mut BTreeMap<i32, Conn>,
    plan: &SourcePlan,
    name: &str,
    strict: bool,
) -> Result<(u64, u64), WorkError> {
    let rounds = if strict { 10_000 } else { 20 };
    let mut recopied = 0;
    let mut remaining = 0;
    for _ in 0..rounds {
        let drained = data::drain_dirty(src, dirty, targets, plan, name, DRAIN_PER_BATCH).await?;
        recopied += drained.copied + drained.deleted;
        remaining = drained.remaining;
        if remaining == 0 {
            break;
        }
    }
    Ok((recopied, remaining))
}

/// Deletes one batch of the moved ranges' keys from `shard`: from a source after the
/// switch (`from_source`), or the copies from a target on rollback. Returns the next
/// cursor (0 when done) and the keys deleted. At the end of the pass over a source,
/// its dirty set is deleted too.
pub async fn delete_batch(
    shards: &Shards<'_>,
    migration: &ShardMigration,
    moves: &[RangeMove],
    shard: i32,
    from_source: bool,
    cursor: u64,
) -> Result<(u64, u64), WorkError> {
    let side = if from_source {
        Side::Source(shard)
    } else {
        Side::Target(shard)
    };
    let relevant = side.relevant(moves);
    let mut conn = shards.connect(shard, 0).await?;
    let batch = usize::try_from(migration.spec.batch_size).unwrap_or(500);
    let outcome = data::delete_batch(&mut conn, &relevant, side, cursor, batch).await?;
    if outcome.next_cursor == 0 {
        let name = migration.metadata.name.clone().unwrap_or_default();
        for source in relevant.iter().map(|m| m.source) {
            let mut dirty = shards.connect(source, DIRTY_DB).await?;
            data::delete_dirty_set(&mut dirty, &name).await?;
        }
    }
    Ok((outcome.next_cursor, outcome.deleted))
}
