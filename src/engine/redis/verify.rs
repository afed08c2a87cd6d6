//! Verification of one source's moves: key counts per move on both sides, then the
//! values of every key (`Full`) or of a deterministic sample (`Sample`). A mismatch is
//! re-copied once and compared again; only a persisting one counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::compare::{Comparison, compare_contents, compare_states, read_contents};
use super::connect::Conn;
use super::copy::{check_targets, target_conn};
use super::dirty::{dirty_count, dirty_members, mirror};
use super::error::{Result, printable_key};
use super::keys::{self, fingerprint};
use super::plan::{MoveIndex, MovingKey, Side, SourcePlan, by_target, coverage};
use crate::api::shard_migration::VerificationMode;
use crate::ring::{HashRange, RangeMove, format_hash};

/// How [`verify`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Counts only, counts and a sample of values, or counts and every value.
    pub mode: VerificationMode,
    /// About how many keys `Sample` compares (per source).
    pub sample_size: usize,
    /// `SCAN … COUNT` of the scans.
    pub batch: usize,
    /// Writes are held (`frozen`) and the dirty set drained: counts must be equal and
    /// every mismatch counts. When `false` (writes may still flow), keys in the dirty
    /// set are in flux and skipped, and count differences up to the dirty set's size
    /// are tolerated (and reported).
    pub strict: bool,
}

/// Key counts of one move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveCount {
    /// Source shard index.
    pub source: i32,
    /// Target shard index.
    pub target: i32,
    /// The range.
    pub range: HashRange,
    /// Keys of the range on the source.
    pub source_keys: u64,
    /// Keys of the range on the target.
    pub target_keys: u64,
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyOutcome {
    /// Keys whose values were compared.
    pub checked: u64,
    /// Keys that still differ after a re-copy (or whose re-copy failed).
    pub mismatches: u64,
    /// Keys re-copied (or deleted on the target) because they differed.
    pub recopied: u64,
    /// Differing keys skipped because they are in the dirty set (not strict only).
    pub in_flux: u64,
    /// Size of the dirty set at the end.
    pub dirty: u64,
    /// Counts per move of the source.
    pub counts: Vec<MoveCount>,
    /// Whether the copy is good: no mismatch, and the counts agree (exactly when
    /// strict, else within the dirty set's size).
    pub passed: bool,
    /// What was found, for the ShardMigration's status.
    pub message: String,
}

/// Counts the keys of database 0 of `conn` per move, with a full `SCAN` (`COUNT`
/// `batch`), keyed by `(source, target)`. Only moves that have `side`'s shard on that
/// side are counted (every one of them has an entry, maybe 0); a key counts once even
/// when `SCAN` returns it twice.
pub async fn count_in_moves(
    conn: &mut Conn,
    moves: &[RangeMove],
    side: Side,
    batch: usize,
) -> Result<BTreeMap<(i32, i32), u64>> {
    let index = MoveIndex::new(side.relevant(moves));
    let per_move = count_per_move(conn, &index, batch).await?;
    let mut counts = BTreeMap::new();
    for (m, n) in index.moves().iter().zip(per_move) {
        *counts.entry((m.source, m.target)).or_insert(0) += n;
    }
    Ok(counts)
}

/// Verifies the moves of `plan` (one source): counts per move on `source` and on the
/// `targets`, and values as `options.mode` says (`Sample`: the keys whose fingerprint
/// is a multiple of k, k chosen so that about `sample_size` keys are compared). A key
/// that differs is skipped when it is in the dirty set of `migration` (on
/// `source_db1`) and not `strict`; otherwise it is re-copied once (or deleted from the
/// target when the source lacks it) and compared again. `Full` also scans the targets
/// for keys of the moves that the source lacks.
pub async fn verify(
    source: &mut Conn,
    source_db1: &mut Conn,
    targets: &mut BTreeMap<i32, Conn>,
    plan: &SourcePlan,
    migration: &str,
    options: &VerifyOptions,
) -> Result<VerifyOutcome> {
    check_targets(targets, plan)?;
    let mut check = Check {
        source,
        source_db1,
        targets,
        plan,
        migration,
        options,
        outcome: VerifyOutcome::default(),
        examples: Vec::new(),
    };
    let source_counts = check.scan_source().await?;
    let mut counts: Vec<MoveCount> = plan
        .moves()
        .iter()
        .zip(source_counts)
        .map(|(m, n)| MoveCount {
            source: m.source,
            target: m.target,
            range: m.range,
            source_keys: n,
            target_keys: 0,
        })
        .collect();
    for target in plan.targets() {
        if options.mode == VerificationMode::Full {
            check.scan_target_extras(target).await?;
        }
        let conn = target_conn(check.targets, plan, target)?;
        let on_target = count_per_move(conn, plan.index(), options.batch).await?;
        for (count, n) in counts.iter_mut().zip(on_target) {
            if count.target == target {
                count.target_keys = n;
            }
        }
    }
    check.outcome.dirty = dirty_count(check.source_db1, migration).await?;
    check.outcome.counts = counts;
    Ok(check.conclude())
}

/// The state of one verification.
struct Check<'a> {
    source: &'a mut Conn,
    source_db1: &'a mut Conn,
    targets: &'a mut BTreeMap<i32, Conn>,
    plan: &'a SourcePlan,
    migration: &'a str,
    options: &'a VerifyOptions,
    outcome: VerifyOutcome,
    /// `key: what differs`, for the message (a few).
    examples: Vec<String>,
}

/// How many mismatching keys the message names.
const EXAMPLES: usize = 5;

impl Check<'_> {
    /// Scans the source: counts per move of the plan, and compares the values of the
    /// keys the mode selects, batch by batch.
    async fn scan_source(&mut self) -> Result<Vec<u64>> {
        let modulus = self.sample_modulus().await?;
        let plan = self.plan;
        let moves = plan.moves();
        let mut counter = Counter::new(moves.len());
        let mut cursor = 0;
        loop {
            let (next, keys) = keys::scan(self.source, cursor, self.options.batch).await?;
            let mut selected = Vec::new();
            for key in keys {
                let Some(i) = plan.index().find_key(&key) else {
                    continue;
                };
                let print = fingerprint(&key);
                counter.add(i, print);
                if modulus.is_some_and(|k| (print as u64).is_multiple_of(k)) {
                    let target = moves[i].target;
                    selected.push(MovingKey { key, target });
                }
            }
            self.check_values(keys::dedup(selected)).await?;
            if next == 0 {
                return Ok(counter.finish());
            }
            cursor = next;
        }
    }

    /// `Full` only: finds the keys of the moves on `target` that the source lacks and
    /// treats them like any differing key (in flux, or deleted and compared again), so
    /// that the counts taken afterwards are not off by keys only the target has.
    async fn scan_target_extras(&mut self, target: i32) -> Result<()> {
        let plan = self.plan;
        let index = plan.index();
        let mut cursor = 0;
        loop {
            let conn = target_conn(self.targets, plan, target)?;
            let (next, keys) = keys::scan(conn, cursor, self.options.batch).await?;
            let ours: Vec<Vec<u8>> = keys::dedup(keys)
                .into_iter()
                .filter(|k| {
                    index
                        .find_key(k)
                        .is_some_and(|i| index.moves()[i].target == target)
                })
                .collect();
            let on_source = keys::exist(self.source, &ours).await?;
            let extras: Vec<MovingKey> = ours
                .into_iter()
                .zip(on_source)
                .filter_map(|(key, exists)| (!exists).then_some(MovingKey { key, target }))
                .collect();
            self.check_values(extras).await?;
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// k of the sample (compare keys whose fingerprint is a multiple of k); `None`
    /// when no value is compared.
    async fn sample_modulus(&mut self) -> Result<Option<u64>> {
        match self.options.mode {
            VerificationMode::Counts => Ok(None),
            VerificationMode::Full => Ok(Some(1)),
            VerificationMode::Sample if self.options.sample_size == 0 => Ok(None),
            VerificationMode::Sample => {
                let keys: u64 = self
                    .source
                    .query(|| "DBSIZE".to_owned(), &::redis::cmd("DBSIZE"))
                    .await?;
                let moving = keys as f64 * coverage(self.plan.moves()).min(1.0);
                Ok(Some(
                    ((moving / self.options.sample_size as f64) as u64).max(1),
                ))
            }
        }
    }

    /// Compares `keys` (distinct, in moves); re-copies the ones that differ and are
    /// not in flux, then compares those again.
    async fn check_values(&mut self, keys: Vec<MovingKey>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.outcome.checked += keys.len() as u64;
        let differing = self.differing(&keys).await?;
        let differing = self.settled(differing).await?;
        if differing.is_empty() {
            return Ok(());
        }
        let keys: Vec<MovingKey> = differing.into_iter().map(|(k, _)| k).collect();
        let mirrored = mirror(self.source, self.targets, self.plan, &keys).await?;
        self.outcome.recopied += mirrored.copied + mirrored.deleted;
        let mut failed = Vec::new();
        for failure in mirrored.failed {
            self.note(&failure.key, &format!("re-copy failed: {}", failure.error));
            failed.push(failure.key);
        }
        self.outcome.mismatches += failed.len() as u64;
        let again: Vec<MovingKey> = keys
            .into_iter()
            .filter(|k| !failed.contains(&k.key))
            .collect();
        let still = self.differing(&again).await?;
        let still = self.settled(still).await?;
        self.outcome.mismatches += still.len() as u64;
        for (key, how) in still {
            self.note(&key.key, &format!("{how:?} after a re-copy"));
        }
        Ok(())
    }

    /// The keys of `keys` whose copy differs, and how.
    async fn differing(&mut self, keys: &[MovingKey]) -> Result<Vec<(MovingKey, Comparison)>> {
        let sources = keys::read(self.source, keys).await?;
        let mut differing = Vec::new();
        for (target, positions) in by_target(keys) {
            let conn = target_conn(self.targets, self.plan, target)?;
            let group: Vec<&[u8]> = positions.iter().map(|&i| keys[i].as_ref()).collect();
            let copies = keys::read(conn, &group).await?;
            let mut undecided = Vec::new();
            for (&i, copy) in positions.iter().zip(&copies) {
                match compare_states(&sources[i], copy) {
                    Some(Comparison::Equal) => {}
                    Some(how) => differing.push((keys[i].clone(), how)),
                    None => undecided.push(&keys[i]),
                }
            }
            if undecided.is_empty() {
                continue;
            }
            let on_target = read_contents(conn, &undecided).await?;
            let on_source = read_contents(self.source, &undecided).await?;
            for ((key, a), b) in undecided.into_iter().zip(&on_source).zip(&on_target) {
                let how = compare_contents(a, b);
                if !how.is_equal() {
                    differing.push((key.clone(), how));
                }
            }
        }
        Ok(differing)
    }

    /// `differing` without the keys in flux (in the dirty set, when not strict).
    async fn settled(
        &mut self,
        differing: Vec<(MovingKey, Comparison)>,
    ) -> Result<Vec<(MovingKey, Comparison)>> {
        if self.options.strict || differing.is_empty() {
            return Ok(differing);
        }
        let keys: Vec<&[u8]> = differing.iter().map(|(k, _)| k.as_ref()).collect();
        let dirty = dirty_members(self.source_db1, self.migration, &keys).await?;
        let mut settled = Vec::new();
        for (entry, in_flux) in differing.into_iter().zip(dirty) {
            if in_flux {
                self.outcome.in_flux += 1;
            } else {
                settled.push(entry);
            }
        }
        Ok(settled)
    }

    /// Keeps an example of a mismatch for the message.
    fn note(&mut self, key: &[u8], what: &str) {
        if self.examples.len() < EXAMPLES {
            self.examples
                .push(format!("{}: {what}", printable_key(key)));
        }
    }

    /// The outcome with `passed` and `message` set.
    fn conclude(mut self) -> VerifyOutcome {
        let o = &mut self.outcome;
        let differ: Vec<&MoveCount> = o
            .counts
            .iter()
            .filter(|c| c.source_keys != c.target_keys)
            .collect();
        let difference: u64 = differ
            .iter()
            .map(|c| c.source_keys.abs_diff(c.target_keys))
            .sum();
        let counts_ok = difference == 0 || (!self.options.strict && difference <= o.dirty);
        o.passed = o.mismatches == 0 && counts_ok;
        let source_keys: u64 = o.counts.iter().map(|c| c.source_keys).sum();
        let target_keys: u64 = o.counts.iter().map(|c| c.target_keys).sum();
        let mut m = format!(
            "{} from shard {}: {source_keys} keys in {} moves on the source, {target_keys} on \
             the targets; {} values compared, {} mismatched, {} re-copied",
            if o.passed { "passed" } else { "failed" },
            self.plan.source(),
            o.counts.len(),
            o.checked,
            o.mismatches,
            o.recopied,
        );
        if o.in_flux > 0 {
            let _ = write!(m, ", {} in flux (dirty) skipped", o.in_flux);
        }
        if difference > 0 {
            let _ = write!(
                m,
                "; counts differ by {difference} in {} moves{} (e.g. {})",
                differ.len(),
                if counts_ok {
                    format!(", tolerated: {} keys are dirty", o.dirty)
                } else {
                    format!(" ({} keys dirty)", o.dirty)
                },
                differ
                    .iter()
                    .take(3)
                    .map(|c| describe(c))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        if !self.examples.is_empty() {
            let _ = write!(m, "; mismatches: {}", self.examples.join("; "));
        }
        o.message = m;
        self.outcome
    }
}

/// `shard 0 → 2 (0x…, 0x…]: 10 vs 9`.
fn describe(c: &MoveCount) -> String {
    format!(
        "shard {} → {} ({}, {}]: {} vs {}",
        c.source,
        c.target,
        format_hash(c.range.start),
        format_hash(c.range.end),
        c.source_keys,
        c.target_keys
    )
}

/// Keys of database 0 of `conn` per move of `index` (same order), each key once.
async fn count_per_move(conn: &mut Conn, index: &MoveIndex, batch: usize) -> Result<Vec<u64>> {
    let mut counter = Counter::new(index.moves().len());
    let mut cursor = 0;
    loop {
        let (next, keys) = keys::scan(conn, cursor, batch).await?;
        for key in keys {
            if let Some(i) = index.find_key(&key) {
                counter.add(i, fingerprint(&key));
            }
        }
        if next == 0 {
            return Ok(counter.finish());
        }
        cursor = next;
    }
}

/// Distinct keys per move, by fingerprint (16 bytes per key seen, until `finish`).
struct Counter {
    seen: Vec<Vec<u128>>,
}

impl Counter {
    /// A counter of `moves` moves.
    fn new(moves: usize) -> Self {
        Self {
            seen: vec![Vec::new(); moves],
        }
    }

    /// Records a key of move `i`.
    fn add(&mut self, i: usize, fingerprint: u128) {
        self.seen[i].push(fingerprint);
    }

    /// Distinct keys per move.
    fn finish(self) -> Vec<u64> {
        self.seen
            .into_iter()
            .map(|mut prints| {
                prints.sort_unstable();
                prints.dedup();
                prints.len() as u64
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_counts_each_key_once() {
        let mut c = Counter::new(2);
        for print in [1, 2, 1, 3] {
            c.add(0, print);
        }
        c.add(1, 9);
        assert_eq!(c.finish(), vec![3, 1]);
    }
}
