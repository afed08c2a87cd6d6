//! Engine-specific data movement used by the operator's migration saga
//! (`docs/migration.md`): copying the keys of moving hash ranges from source shards to
//! target shards, draining the dirty set, verifying the copy and deleting the moved
//! keys afterwards.
//!
//! * [`redis`] — the Redis side: `SCAN` + pipelined `DUMP`/`PTTL` → `RESTORE`.

pub mod redis;
