//! Fault injection for tests of crash recovery: with `RINGMASTER_FAILPOINT=<name>` in
//! its environment the operator aborts (no clean-up, like `kill -9`) when it reaches
//! the point `<name>`. Unset in production; every point is a no-op then.
//!
//! | point | where |
//! |---|---|
//! | `failover-recorded` | right after this process wrote a new failover decision (phase `Pending`) to the Shard's status, before the old primary is fenced; an operator that finds the decision already recorded goes on, so a restarted one finishes it |
//! | `migration-backfill` | after a ShardMigration copied a batch (not its first), before the batch's checkpoint is written |
//! | `migration-verify` | after a ShardMigration's verification (writes not frozen), before its outcome is written |

/// The variable that arms a fail point.
pub const VARIABLE: &str = "RINGMASTER_FAILPOINT";

/// Aborts the process when `name` is the armed fail point.
pub fn hit(name: &str) {
    if std::env::var(VARIABLE).is_ok_and(|armed| armed == name) {
        tracing::error!(failpoint = name, "fail point reached: aborting");
        std::process::abort();
    }
}
