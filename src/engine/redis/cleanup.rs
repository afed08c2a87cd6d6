//! Deleting the keys of moves: on the sources after the switch (Cleanup), on the
//! targets when a migration rolls back (the compensation of Backfill and Verify).

use super::connect::Conn;
use super::error::Result;
use super::keys;
use super::plan::{MoveIndex, Side};
use crate::ring::RangeMove;

/// What one [`delete_batch`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// The cursor to checkpoint and pass to the next batch; 0 when done.
    pub next_cursor: u64,
    /// Keys the `SCAN` returned.
    pub scanned: u64,
    /// Keys removed.
    pub deleted: u64,
}

/// One batch of deleting: `SCAN cursor COUNT count` on `conn` (database 0 of `side`'s
/// shard), then one `UNLINK` of the returned keys that are in a move having that shard
/// on that side (`Side::Source(s)`: moves leaving `s`; `Side::Target(t)`: moves
/// arriving at `t`). Other moves in `moves` are ignored.
pub async fn delete_batch(
    conn: &mut Conn,
    moves: &[RangeMove],
    side: Side,
    cursor: u64,
    count: usize,
) -> Result<DeleteOutcome> {
    let index = MoveIndex::new(side.relevant(moves));
    let (next_cursor, scanned) = keys::scan(conn, cursor, count).await?;
    let mut outcome = DeleteOutcome {
        next_cursor,
        scanned: scanned.len() as u64,
        deleted: 0,
    };
    let doomed: Vec<Vec<u8>> = keys::dedup(scanned)
        .into_iter()
        .filter(|k| index.find_key(k).is_some())
        .collect();
    if doomed.is_empty() {
        return Ok(outcome);
    }
    let mut unlink = ::redis::cmd("UNLINK");
    unlink.arg(&doomed);
    outcome.deleted = conn
        .query(
            || format!("UNLINK of {} keys in moves ({side:?})", doomed.len()),
            &unlink,
        )
        .await?;
    Ok(outcome)
}
