//! [`MigrateError`]: what failed, on which server. Messages never contain a password.

use std::time::Duration;

/// A failure of a migration step on one Redis server.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Connecting, authenticating or selecting the database failed.
    #[error("connecting to Redis at {address} (database {db}) as user {username:?}: {source}")]
    Connect {
        /// `host:port`.
        address: String,
        /// The database selected after authenticating.
        db: i64,
        /// The user authenticated as.
        username: String,
        /// The client's error (it never holds the password).
        #[source]
        source: ::redis::RedisError,
    },
    /// Connecting did not finish within the deadline.
    #[error("connecting to Redis at {address} (database {db}): no answer within {timeout:?}")]
    ConnectTimeout {
        /// `host:port`.
        address: String,
        /// The database to select.
        db: i64,
        /// The deadline.
        timeout: Duration,
    },
    /// A command or pipeline failed (connection error or an error reply).
    #[error("Redis at {address} (database {db}): {operation}: {source}")]
    Command {
        /// `host:port`.
        address: String,
        /// The connection's database.
        db: i64,
        /// What was being done, e.g. `SCAN 0 COUNT 500`.
        operation: String,
        /// The client's error.
        #[source]
        source: ::redis::RedisError,
    },
    /// A command or pipeline got no answer within the connection's deadline.
    #[error("Redis at {address} (database {db}): {operation}: no answer within {timeout:?}")]
    Timeout {
        /// `host:port`.
        address: String,
        /// The connection's database.
        db: i64,
        /// What was being done.
        operation: String,
        /// The deadline.
        timeout: Duration,
    },
    /// One key's command got an error reply that the step cannot tolerate.
    #[error("Redis at {address} (database {db}): {operation} of key {key}: {reply}")]
    Key {
        /// `host:port`.
        address: String,
        /// The connection's database.
        db: i64,
        /// The command, e.g. `RESTORE`.
        operation: &'static str,
        /// The key, printable (see [`printable_key`]).
        key: String,
        /// The server's error reply.
        reply: String,
    },
    /// A reply did not have the expected shape.
    #[error("Redis at {address} (database {db}): {operation}: unexpected reply {reply}")]
    Unexpected {
        /// `host:port`.
        address: String,
        /// The connection's database.
        db: i64,
        /// What was being done.
        operation: String,
        /// The reply, abridged.
        reply: String,
    },
    /// A key maps to a target shard that the caller passed no connection for.
    #[error(
        "no connection to target shard {target} (it receives keys of moves from source shard {source_shard})"
    )]
    MissingTarget {
        /// The target shard index.
        target: i32,
        /// The source shard index.
        source_shard: i32,
    },
    /// Draining the dirty set failed after keys were popped, and putting them back
    /// failed too: those keys must be re-copied by another means (e.g. a new backfill).
    #[error("{cause}; putting {count} popped keys back into dirty set {set} also failed: {readd}")]
    DirtyKeysLost {
        /// The dirty set's key.
        set: String,
        /// How many popped keys could not be put back.
        count: usize,
        /// The failure that interrupted the drain.
        cause: Box<MigrateError>,
        /// The failure of putting the keys back.
        readd: Box<MigrateError>,
    },
}

/// Result of the Redis migration steps.
pub type Result<T, E = MigrateError> = std::result::Result<T, E>;

/// A key for messages: printable ASCII as is, other bytes escaped (`\xNN`), abridged
/// to its first 100 bytes.
pub fn printable_key(key: &[u8]) -> String {
    const MAX: usize = 100;
    let shown = &key[..key.len().min(MAX)];
    let mut text: String = shown.escape_ascii().to_string();
    if key.len() > MAX {
        text.push_str(&format!("… ({} bytes)", key.len()));
    }
    text
}
