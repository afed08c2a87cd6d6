//! The Redis data plane of a `ShardMigration` (`docs/migration.md`): the operator's
//! saga calls these functions for each source shard of a migration; each call is one
//! bounded step (a batch, a drain, a verification) that is safe to run again.
//!
//! # Connections
//!
//! * [`connect`]`(&Endpoint, db, timeout) -> Conn`: authenticates and selects `db`;
//!   every later call on the [`Conn`] has `timeout` as its deadline. A source needs
//!   database 0 (the data) and [`DIRTY_DB`] (the dirty set); a target database 0.
//! * [`SourcePlan::new`]`(source, &moves)`: the moves leaving one source shard (it
//!   keeps only the moves whose `source` it is), with
//!   [`SourcePlan::target_of`]`(hash)` and [`SourcePlan::target_of_key`]`(key)`.
//! * `targets: &mut BTreeMap<i32, Conn>`: database 0 of every target shard of the plan,
//!   by shard index (a missing one is [`MigrateError::MissingTarget`]).
//!
//! # Steps, by saga phase
//!
//! | phase | call |
//! |---|---|
//! | Backfill | [`backfill_batch`]`(source, targets, plan, cursor, count)` until `next_cursor == 0`, checkpointing `next_cursor`; [`drain_dirty`] between batches |
//! | Verify | [`drain_dirty`], then [`verify`]`(…, VerifyOptions { strict: false, … })` |
//! | SwitchWrites | (writes frozen) [`drain_dirty`] until `remaining == 0`, then [`verify`] with `strict: true` |
//! | Cleanup | [`delete_batch`]`(source, moves, Side::Source(s), cursor, count)` until `next_cursor == 0`, then [`delete_dirty_set`] |
//! | rollback of Backfill / Verify | [`delete_batch`]`(target, moves, Side::Target(t), …)` on each target, then [`delete_dirty_set`] |
//!
//! [`count_in_moves`] counts keys per `(source, target)` on either side.
//!
//! # Guarantees
//!
//! * Backfill `RESTORE`s without `REPLACE`: a key already on the target (`BUSYKEY`)
//!   was dual-written and is newer, so it is skipped. Re-running a batch from a
//!   checkpointed cursor overwrites nothing; `SCAN` repeating a key is harmless.
//! * Keys keep their remaining TTL (`PTTL` → `RESTORE key ttl`).
//! * [`drain_dirty`] reads the source after its `SPOP`, `RESTORE … REPLACE`s (or
//!   `DEL`s) on the target, and puts the popped keys back when anything fails.
//! * Routers mark a key dirty after both their source and target writes, so a drain
//!   to empty while writes are held (`frozen`) leaves the target exact; [`verify`]
//!   with `strict` checks it (and re-copies what differs).
//! * Values are compared by `DUMP` payload, then — when payloads differ — by content
//!   (hash-table encoded sets and hashes dump in a per-process order), and TTL
//!   presence; `Full` also looks for keys only the target has. Counts de-duplicate
//!   `SCAN`'s repeats (16 bytes of memory per key in the moves while counting).
//! * Each batch costs a few round trips: `SCAN`, one pipeline of reads on the source,
//!   one pipeline of writes per target.
//!
//! Errors ([`MigrateError`]) name the server, database and operation (and the key
//! when one key's command failed), never a password.

mod cleanup;
mod compare;
mod connect;
mod copy;
mod dirty;
mod error;
mod keys;
mod plan;
mod verify;

pub use self::cleanup::{DeleteOutcome, delete_batch};
pub use self::connect::{Conn, Endpoint, connect};
pub use self::copy::{BatchOutcome, backfill_batch};
pub use self::dirty::{DrainOutcome, delete_dirty_set, dirty_count, drain_dirty};
pub use self::error::{MigrateError, Result, printable_key};
pub use self::plan::{Side, SourcePlan};
pub use self::verify::{MoveCount, VerifyOptions, VerifyOutcome, count_in_moves, verify};
pub use crate::api::routing::DIRTY_DB;
pub use crate::api::shard_migration::VerificationMode;
