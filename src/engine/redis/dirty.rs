//! The dirty set (`docs/migration.md`, "The dirty set"): keys written in moving ranges
//! while the migration dual-writes, kept by the routers in database 1 of each source.
//! Draining it re-copies those keys with `REPLACE` (or deletes them on the target).

use std::collections::BTreeMap;

use super::connect::Conn;
use super::copy::{check_targets, target_conn};
use super::error::{MigrateError, Result};
use super::keys::{self, Write};
use super::plan::{MovingKey, SourcePlan, by_target};
use crate::api::routing::dirty_set_key;

/// What one [`drain_dirty`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Keys popped from the dirty set.
    pub popped: u64,
    /// Keys restored (`REPLACE`) on their target.
    pub copied: u64,
    /// Keys restored per target shard.
    pub copied_per_target: BTreeMap<i32, u64>,
    /// Keys deleted on their target because they no longer exist on the source.
    pub deleted: u64,
    /// Popped keys outside the plan's moves (left alone).
    pub ignored: u64,
    /// `SCARD` of the dirty set afterwards.
    pub remaining: u64,
}

/// Pops up to `max` keys from the dirty set of `migration` (`SPOP` on `source_db1`,
/// database [`crate::api::routing::DIRTY_DB`] of the source), then reads them on
/// `source` (database 0) and makes each target equal: `RESTORE … REPLACE`, or `DEL`
/// when the key is gone on the source. The source is read *after* the `SPOP`, so a key
/// written after that read is added to the set again by its router.
///
/// When anything fails after the `SPOP`, the popped keys are added back before the
/// error is returned, so no dirty key is lost.
pub async fn drain_dirty(
    source: &mut Conn,
    source_db1: &mut Conn,
    targets: &mut BTreeMap<i32, Conn>,
    plan: &SourcePlan,
    migration: &str,
    max: usize,
) -> Result<DrainOutcome> {
    check_targets(targets, plan)?;
    let set = dirty_set_key(migration);
    let mut spop = ::redis::cmd("SPOP");
    spop.arg(&set).arg(max.max(1));
    let popped: Vec<Vec<u8>> = source_db1
        .query(|| format!("SPOP {set} {max}"), &spop)
        .await?;
    let mut outcome = DrainOutcome {
        popped: popped.len() as u64,
        ..DrainOutcome::default()
    };
    if !popped.is_empty()
        && let Err(cause) = mirror_popped(source, targets, plan, &popped, &mut outcome).await
    {
        return Err(put_back(source_db1, &set, &popped, cause).await);
    }
    outcome.remaining = dirty_count(source_db1, migration).await?;
    Ok(outcome)
}

/// Mirrors the popped keys that are in a move; a per-key error reply fails the drain.
async fn mirror_popped(
    source: &mut Conn,
    targets: &mut BTreeMap<i32, Conn>,
    plan: &SourcePlan,
    popped: &[Vec<u8>],
    outcome: &mut DrainOutcome,
) -> Result<()> {
    let moving = plan.moving(popped.iter().cloned());
    outcome.ignored = (popped.len() - moving.len()) as u64;
    let mirrored = mirror(source, targets, plan, &moving).await?;
    if let Some(failure) = mirrored.failed.into_iter().next() {
        return Err(failure.error);
    }
    outcome.copied = mirrored.copied;
    outcome.copied_per_target = mirrored.copied_per_target;
    outcome.deleted = mirrored.deleted;
    Ok(())
}

/// `SADD`s `popped` back after `cause` interrupted a drain; the error to return.
async fn put_back(
    source_db1: &mut Conn,
    set: &str,
    popped: &[Vec<u8>],
    cause: MigrateError,
) -> MigrateError {
    let mut sadd = ::redis::cmd("SADD");
    sadd.arg(set).arg(popped);
    match source_db1
        .query::<i64>(
            || format!("SADD {set} of {} popped keys", popped.len()),
            &sadd,
        )
        .await
    {
        Ok(_) => cause,
        Err(readd) => MigrateError::DirtyKeysLost {
            set: set.to_owned(),
            count: popped.len(),
            cause: Box::new(cause),
            readd: Box::new(readd),
        },
    }
}

/// `SCARD` of the dirty set of `migration` (on database 1 of a source).
pub async fn dirty_count(source_db1: &mut Conn, migration: &str) -> Result<u64> {
    let set = dirty_set_key(migration);
    let mut scard = ::redis::cmd("SCARD");
    scard.arg(&set);
    source_db1.query(|| format!("SCARD {set}"), &scard).await
}

/// Deletes the dirty set of `migration` (on database 1 of a source): Cleanup, or the
/// end of a rollback.
pub async fn delete_dirty_set(source_db1: &mut Conn, migration: &str) -> Result<()> {
    let set = dirty_set_key(migration);
    let mut unlink = ::redis::cmd("UNLINK");
    unlink.arg(&set);
    source_db1
        .query::<i64>(|| format!("UNLINK {set}"), &unlink)
        .await
        .map(drop)
}

/// Which of `keys` are in the dirty set of `migration` (`SMISMEMBER`, Redis ≥ 6.2).
pub(crate) async fn dirty_members(
    source_db1: &mut Conn,
    migration: &str,
    keys: &[&[u8]],
) -> Result<Vec<bool>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let set = dirty_set_key(migration);
    let mut cmd = ::redis::cmd("SMISMEMBER");
    cmd.arg(&set).arg(keys);
    let flags: Vec<bool> = source_db1
        .query(|| format!("SMISMEMBER {set} of {} keys", keys.len()), &cmd)
        .await?;
    if flags.len() != keys.len() {
        return Err(source_db1.unexpected(
            || format!("SMISMEMBER {set}"),
            format!("{} answers for {} keys", flags.len(), keys.len()),
        ));
    }
    Ok(flags)
}

/// What [`mirror`] did.
#[derive(Debug, Default)]
pub(crate) struct Mirrored {
    /// Keys restored with `REPLACE`.
    pub copied: u64,
    /// Keys restored per target shard.
    pub copied_per_target: BTreeMap<i32, u64>,
    /// Keys deleted on the target (gone on the source, present on the target).
    pub deleted: u64,
    /// Keys whose write got an error reply.
    pub failed: Vec<MirrorFailure>,
}

/// A key [`mirror`] could not write.
#[derive(Debug)]
pub(crate) struct MirrorFailure {
    /// The key.
    pub key: Vec<u8>,
    /// The error reply, as an error of the target.
    pub error: MigrateError,
}

/// Makes each target's copy of `keys` (distinct keys of moves of `plan`) equal to the
/// source now: `DUMP`/`PTTL` on the source, then `RESTORE … REPLACE` or `DEL` per
/// target. Error replies for single keys are returned in [`Mirrored::failed`].
pub(crate) async fn mirror(
    source: &mut Conn,
    targets: &mut BTreeMap<i32, Conn>,
    plan: &SourcePlan,
    keys: &[MovingKey],
) -> Result<Mirrored> {
    let states = keys::read(source, keys).await?;
    let mut mirrored = Mirrored::default();
    for (target, positions) in by_target(keys) {
        let conn = target_conn(targets, plan, target)?;
        let writes: Vec<Write<'_>> = positions
            .iter()
            .map(|&i| Write::mirror(&keys[i].key, &states[i]))
            .collect();
        let answers = keys::write(conn, &writes).await?;
        for (w, answer) in writes.iter().zip(answers) {
            match (answer, w) {
                (Ok(_), Write::Restore { .. }) => {
                    mirrored.copied += 1;
                    *mirrored.copied_per_target.entry(target).or_default() += 1;
                }
                (Ok(existed), Write::Delete { .. }) => mirrored.deleted += u64::from(existed),
                (Err(e), _) => mirrored.failed.push(MirrorFailure {
                    key: w.key().to_vec(),
                    error: conn.key_error(w.command(), w.key(), keys::reply_text(&e)),
                }),
            }
        }
    }
    Ok(mirrored)
}
