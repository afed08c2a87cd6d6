//! Backfill: one `SCAN` batch of a source copied to the targets with `DUMP`/`PTTL` →
//! `RESTORE` without `REPLACE` (a key already on a target was dual-written there and
//! is newer than the source's snapshot).

use std::collections::BTreeMap;

use super::connect::Conn;
use super::error::{MigrateError, Result};
use super::keys::{self, KeyState, Write};
use super::plan::{MovingKey, SourcePlan, by_target};

/// What one [`backfill_batch`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The cursor to checkpoint and pass to the next batch; 0 when the scan is done.
    pub next_cursor: u64,
    /// Keys the `SCAN` returned (in moves or not).
    pub scanned: u64,
    /// Keys restored on a target.
    pub copied: u64,
    /// Keys already on their target (`BUSYKEY`): dual-written, newer, left alone; also
    /// keys copied by an earlier run of the same batch.
    pub skipped_existing: u64,
    /// Keys in a move that vanished (deleted or expired) before they could be read.
    pub vanished: u64,
    /// `DUMP` payload bytes of the keys restored.
    pub bytes: u64,
    /// Keys restored per target shard.
    pub copied_per_target: BTreeMap<i32, u64>,
}

/// Copies one batch: `SCAN cursor COUNT count` on `source` (database 0 of the plan's
/// source shard), then for the keys in a move of `plan` one pipeline of `DUMP` + `PTTL`
/// on the source and one pipeline of `RESTORE key ttl payload` (no `REPLACE`) per
/// target in `targets` (database 0 of each target shard, by index).
///
/// Keys keep their remaining TTL. Running a batch again from the same cursor (after a
/// crash before the checkpoint) overwrites nothing and copies nothing twice.
pub async fn backfill_batch(
    source: &mut Conn,
    targets: &mut BTreeMap<i32, Conn>,
    plan: &SourcePlan,
    cursor: u64,
    count: usize,
) -> Result<BatchOutcome> {
    check_targets(targets, plan)?;
    let (next_cursor, scanned) = keys::scan(source, cursor, count).await?;
    let mut outcome = BatchOutcome {
        next_cursor,
        scanned: scanned.len() as u64,
        ..BatchOutcome::default()
    };
    let moving = plan.moving(keys::dedup(scanned));
    if moving.is_empty() {
        return Ok(outcome);
    }
    let states = keys::read(source, &moving).await?;
    for (target, positions) in by_target(&moving) {
        let conn = target_conn(targets, plan, target)?;
        copy_to(conn, &moving, &states, &positions, target, &mut outcome).await?;
    }
    outcome.vanished = states.iter().filter(|s| **s == KeyState::Missing).count() as u64;
    Ok(outcome)
}

/// `RESTORE` (no `REPLACE`) of the present keys at `positions` on `conn`, counted in
/// `outcome`.
async fn copy_to(
    conn: &mut Conn,
    keys: &[MovingKey],
    states: &[KeyState],
    positions: &[usize],
    target: i32,
    outcome: &mut BatchOutcome,
) -> Result<()> {
    let writes: Vec<Write<'_>> = positions
        .iter()
        .filter_map(|&i| match &states[i] {
            KeyState::Present { payload, ttl_ms } => Some(Write::Restore {
                key: &keys[i].key,
                payload,
                ttl_ms: *ttl_ms,
                replace: false,
            }),
            KeyState::Missing => None,
        })
        .collect();
    let answers = keys::write(conn, &writes).await?;
    for (w, answer) in writes.iter().zip(answers) {
        match answer {
            Ok(_) => {
                outcome.copied += 1;
                *outcome.copied_per_target.entry(target).or_default() += 1;
                if let Write::Restore { payload, .. } = w {
                    outcome.bytes += payload.len() as u64;
                }
            }
            Err(e) if e.code() == "BUSYKEY" => outcome.skipped_existing += 1,
            Err(e) => return Err(conn.key_error("RESTORE", w.key(), keys::reply_text(&e))),
        }
    }
    Ok(())
}

/// The connection to target shard `target`.
pub(crate) fn target_conn<'a>(
    targets: &'a mut BTreeMap<i32, Conn>,
    plan: &SourcePlan,
    target: i32,
) -> Result<&'a mut Conn> {
    targets.get_mut(&target).ok_or(MigrateError::MissingTarget {
        target,
        source_shard: plan.source(),
    })
}

/// Fails unless `targets` has a connection to every target shard of `plan`.
pub(crate) fn check_targets(targets: &BTreeMap<i32, Conn>, plan: &SourcePlan) -> Result<()> {
    match plan
        .targets()
        .into_iter()
        .find(|t| !targets.contains_key(t))
    {
        Some(target) => Err(MigrateError::MissingTarget {
            target,
            source_shard: plan.source(),
        }),
        None => Ok(()),
    }
}
