//! Commands sent to every shard primary of the routing table, replies merged:
//! PING, DBSIZE, KEYS, SCAN, INFO and (guarded) FLUSHDB.
//!
//! KEYS and SCAN list a key only on the shard that serves its reads under the routing
//! rules ([`Routing::read_owner`](super::route::Routing::read_owner)), so a key copied
//! to a migration's target is not listed twice. DBSIZE sums every shard and so counts
//! such copies twice while a migration runs.
//!
//! The SCAN cursor names the shard and that shard's cursor:
//! `shard_cursor × 1024 + ordinal`, the ordinal being the shard's position in the
//! table's shards sorted by index. Shards are iterated in order, each to its end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use redis::Value;

use super::commands::{Command, KeyError, ScatterCmd};
use super::context::{Context, Installed};
use super::dispatch::{Dispatched, Reply, TRYAGAIN_NO_TABLE, no_conns, to_cmd};
use super::metrics::Outcome;
use super::resp::{Frame, parse_int, server_error_text};
use super::table::Lease;

/// Shards a SCAN cursor can name.
pub const CURSOR_SHARDS: u64 = 1024;

/// The router cursor of `shard_cursor` on the shard at `ordinal`; `None` when it
/// does not fit in a `u64`.
pub fn encode_cursor(shard_cursor: u64, ordinal: usize) -> Option<u64> {
    let ordinal = u64::try_from(ordinal).ok().filter(|&o| o < CURSOR_SHARDS)?;
    shard_cursor
        .checked_mul(CURSOR_SHARDS)?
        .checked_add(ordinal)
}

/// `(shard cursor, ordinal)` of a router cursor.
pub fn decode_cursor(cursor: u64) -> (u64, usize) {
    // The remainder is below 1024.
    (cursor / CURSOR_SHARDS, (cursor % CURSOR_SHARDS) as usize)
}

/// The router cursor after a shard answered `next` at `ordinal` of `shards`: the same
/// shard, the next shard from its start, or 0 when every shard is done.
pub fn next_cursor(next: u64, ordinal: usize, shards: usize) -> Option<u64> {
    if next != 0 {
        encode_cursor(next, ordinal)
    } else if ordinal + 1 < shards {
        encode_cursor(0, ordinal + 1)
    } else {
        Some(0)
    }
}

/// Starts a scatter command.
pub fn run(ctx: &Arc<Context>, slot: usize, kind: ScatterCmd, command: Command) -> Dispatched {
    if let Some(spec) = command.spec
        && let Err(error) = spec.check_arity(command.args.len())
    {
        return Dispatched::ready(Reply::error(error.to_string(), Outcome::Error));
    }
    let Some(lease) = ctx.lease() else {
        return Dispatched::ready(Reply::error(TRYAGAIN_NO_TABLE, Outcome::Error));
    };
    let ctx = Arc::clone(ctx);
    let args = command.args;
    let reply = match kind {
        ScatterCmd::Ping => ping(ctx, slot, lease, args).boxed(),
        ScatterCmd::Dbsize => dbsize(ctx, slot, lease, args).boxed(),
        ScatterCmd::Keys => keys(ctx, slot, lease, args).boxed(),
        ScatterCmd::Scan => scan(ctx, slot, lease, args).boxed(),
        ScatterCmd::Info => info(ctx, slot, lease, args).boxed(),
        ScatterCmd::Flushdb => flushdb(ctx, slot, lease, args).boxed(),
    };
    Dispatched {
        reply,
        barrier: false,
    }
}

/// Sends `args` to every shard primary (by index); the replies, or the error reply
/// naming the first shard that failed.
async fn fan_out(
    ctx: &Context,
    slot: usize,
    table: &Installed,
    args: &[Bytes],
) -> Result<Vec<(i32, Value)>, Reply> {
    let cmd = to_cmd(args);
    let mut calls = Vec::new();
    for shard in table.routing.shards() {
        let Some(conns) = table.conns(shard.index) else {
            return Err(no_conns(table, shard.index));
        };
        let primary = Arc::clone(&conns.primary);
        let cmd = &cmd;
        calls.push(async move { (shard.index, primary.call(slot, cmd).await) });
    }
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let mut replies = Vec::with_capacity(calls.len());
    for (index, result) in futures::future::join_all(calls).await {
        match result {
            Ok(Value::ServerError(error)) => {
                return Err(Reply::error(
                    format!(
                        "ERR ringmaster router: {name} failed on shard {}: {}",
                        table.shard_label(index),
                        server_error_text(&error)
                    ),
                    Outcome::Error,
                ));
            }
            Ok(value) => replies.push((index, value)),
            Err(error) => {
                ctx.metrics.backend_error(index);
                return Err(Reply::error(
                    format!(
                        "ERR ringmaster router: {name} failed on shard {}: {error}",
                        table.shard_label(index)
                    ),
                    Outcome::BackendError,
                ));
            }
        }
    }
    Ok(replies)
}

async fn ping(ctx: Arc<Context>, slot: usize, lease: Lease<Installed>, args: Vec<Bytes>) -> Reply {
    if args.len() > 2 {
        return Reply::error(KeyError::Arity("ping").to_string(), Outcome::Error);
    }
    match fan_out(&ctx, slot, &lease, &args[..1]).await {
        Err(reply) => reply,
        Ok(_) => Reply::frame(match args.get(1) {
            Some(message) => Frame::Bulk(message.clone()),
            None => Frame::Simple("PONG".to_owned()),
        }),
    }
}

async fn dbsize(
    ctx: Arc<Context>,
    slot: usize,
    lease: Lease<Installed>,
    args: Vec<Bytes>,
) -> Reply {
    match fan_out(&ctx, slot, &lease, &args).await {
        Err(reply) => reply,
        Ok(replies) => {
            let total = replies
                .iter()
                .map(|(_, v)| match v {
                    Value::Int(n) => *n,
                    _ => 0,
                })
                .sum();
            Reply::frame(Frame::Integer(total))
        }
    }
}

/// The keys of a shard's reply that `shard` serves reads of.
fn owned_keys(table: &Installed, shard: i32, keys: Value) -> Vec<Frame> {
    let Value::Array(keys) = keys else {
        return Vec::new();
    };
    keys.into_iter()
        .filter_map(|key| match key {
            Value::BulkString(key) if table.routing.read_owner(&key) == Some(shard) => {
                Some(Frame::Bulk(Bytes::from(key)))
            }
            _ => None,
        })
        .collect()
}

async fn keys(ctx: Arc<Context>, slot: usize, lease: Lease<Installed>, args: Vec<Bytes>) -> Reply {
    match fan_out(&ctx, slot, &lease, &args).await {
        Err(reply) => reply,
        Ok(replies) => {
            let keys = replies
                .into_iter()
                .flat_map(|(shard, value)| owned_keys(&lease, shard, value))
                .collect();
            Reply::frame(Frame::Array(keys))
        }
    }
}

async fn scan(
    ctx: Arc<Context>,
    slot: usize,
    lease: Lease<Installed>,
    mut args: Vec<Bytes>,
) -> Reply {
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return Reply::error("ERR invalid cursor", Outcome::Error);
    };
    let shards: Vec<i32> = lease.routing.shards().map(|s| s.index).collect();
    let (shard_cursor, ordinal) = decode_cursor(cursor);
    let Some(&shard) = shards.get(ordinal) else {
        return Reply::error("ERR invalid cursor", Outcome::Error);
    };
    let Some(conns) = lease.conns(shard) else {
        return no_conns(&lease, shard);
    };
    args[1] = Bytes::from(shard_cursor.to_string());
    let result = conns.primary.call(slot, &to_cmd(&args)).await;
    let (next, keys) = match result {
        Ok(Value::Array(mut parts)) if parts.len() == 2 => {
            let keys = parts.pop().unwrap_or(Value::Nil);
            (parts.pop().and_then(|c| cursor_of(&c)), keys)
        }
        Ok(Value::ServerError(error)) => {
            return Reply::error(server_error_text(&error), Outcome::Error);
        }
        Ok(other) => {
            return Reply::error(
                format!("ERR ringmaster router: unexpected SCAN reply {other:?}"),
                Outcome::Error,
            );
        }
        Err(error) => {
            ctx.metrics.backend_error(shard);
            return Reply::error(
                format!(
                    "ERR ringmaster router: SCAN failed on shard {}: {error}",
                    lease.shard_label(shard)
                ),
                Outcome::BackendError,
            );
        }
    };
    let Some(next) = next.and_then(|n| next_cursor(n, ordinal, shards.len())) else {
        return Reply::error(
            format!(
                "ERR ringmaster router: the cursor of shard {} does not fit in the router's SCAN cursor",
                lease.shard_label(shard)
            ),
            Outcome::Error,
        );
    };
    let keys = owned_keys(&lease, shard, keys);
    Reply::frame(Frame::Array(vec![
        Frame::Bulk(Bytes::from(next.to_string())),
        Frame::Array(keys),
    ]))
}

fn cursor_of(value: &Value) -> Option<u64> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

async fn info(ctx: Arc<Context>, slot: usize, lease: Lease<Installed>, args: Vec<Bytes>) -> Reply {
    match fan_out(&ctx, slot, &lease, &args).await {
        Err(reply) => reply,
        Ok(replies) => {
            let sections: Vec<(String, String)> = replies
                .into_iter()
                .map(|(shard, value)| (lease.shard_label(shard), info_text(&value)))
                .collect();
            Reply::frame(Frame::Bulk(Bytes::from(merge_info(&sections))))
        }
    }
}

fn info_text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::SimpleString(text) => text.clone(),
        _ => String::new(),
    }
}

/// Key counts of one `dbN` line of a `# Keyspace` section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct DbStats {
    keys: i64,
    expires: i64,
    /// Sum of `avg_ttl × expires`, for the weighted mean.
    ttl_weight: i128,
}

/// Each shard's INFO text under `# Shard <index> (<name>)`, then a `# Keyspace`
/// section with the keys and expires of every database summed (when any shard had
/// a keyspace section).
pub fn merge_info(sections: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut keyspace: BTreeMap<String, DbStats> = BTreeMap::new();
    let mut has_keyspace = false;
    for (label, text) in sections {
        let _ = write!(out, "# Shard {label}\r\n");
        out.push_str(text.trim_end());
        out.push_str("\r\n\r\n");
        has_keyspace |= text.lines().any(|l| l.trim_end() == "# Keyspace");
        for line in text.lines() {
            if let Some((db, stats)) = parse_keyspace_line(line.trim_end()) {
                let total = keyspace.entry(db).or_default();
                total.keys += stats.keys;
                total.expires += stats.expires;
                total.ttl_weight += stats.ttl_weight;
            }
        }
    }
    if has_keyspace {
        out.push_str("# Keyspace\r\n");
        for (db, stats) in &keyspace {
            let avg_ttl = if stats.expires > 0 {
                stats.ttl_weight / i128::from(stats.expires)
            } else {
                0
            };
            let _ = write!(
                out,
                "{db}:keys={},expires={},avg_ttl={avg_ttl}\r\n",
                stats.keys, stats.expires
            );
        }
    }
    out
}

/// `db0:keys=3,expires=1,avg_ttl=5` → (`db0`, stats).
fn parse_keyspace_line(line: &str) -> Option<(String, DbStats)> {
    let (db, fields) = line.split_once(':')?;
    if !db.starts_with("db") || !db[2..].bytes().all(|b| b.is_ascii_digit()) || db.len() < 3 {
        return None;
    }
    let mut stats = DbStats::default();
    let mut avg_ttl = 0i64;
    for field in fields.split(',') {
        let (name, value) = field.split_once('=')?;
        let value = parse_int(value.as_bytes());
        match name {
            "keys" => stats.keys = value?,
            "expires" => stats.expires = value?,
            "avg_ttl" => avg_ttl = value.unwrap_or(0),
            _ => {}
        }
    }
    stats.ttl_weight = i128::from(avg_ttl) * i128::from(stats.expires);
    Some((db.to_owned(), stats))
}

async fn flushdb(
    ctx: Arc<Context>,
    slot: usize,
    lease: Lease<Installed>,
    args: Vec<Bytes>,
) -> Reply {
    if !ctx.settings.allow_flush {
        return Reply::error(
            "ERR FLUSHDB through ringmaster router is disabled; start the router with --allow-flush",
            Outcome::Error,
        );
    }
    if !lease.routing.table().migrations.is_empty() {
        return Reply::error(
            "ERR FLUSHDB through ringmaster router is refused while a migration is in progress",
            Outcome::Error,
        );
    }
    match fan_out(&ctx, slot, &lease, &args).await {
        Err(reply) => reply,
        Ok(_) => Reply::frame(Frame::ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        for (shard_cursor, ordinal) in [(0, 0), (0, 3), (17, 2), (u64::MAX / 1024, 1023)] {
            let cursor = encode_cursor(shard_cursor, ordinal).unwrap();
            assert_eq!(decode_cursor(cursor), (shard_cursor, ordinal));
        }
        assert_eq!(encode_cursor(0, 0), Some(0));
        assert_eq!(encode_cursor(5, 2), Some(5 * 1024 + 2));
    }

    #[test]
    fn cursor_overflow_and_ordinal_limit() {
        assert_eq!(encode_cursor(u64::MAX / 1024 + 1, 0), None);
        assert_eq!(encode_cursor(u64::MAX / 1024, 1023), Some(u64::MAX));
        assert_eq!(encode_cursor(0, 1024), None);
    }

    #[test]
    fn iteration_moves_shard_by_shard_and_ends_at_zero() {
        // Shard 0 not done: stay on it.
        assert_eq!(next_cursor(40, 0, 3), Some(40 * 1024));
        // Shard 0 done: shard 1 from its start.
        assert_eq!(next_cursor(0, 0, 3), Some(1));
        assert_eq!(next_cursor(0, 1, 3), Some(2));
        // Last shard done: iteration over.
        assert_eq!(next_cursor(0, 2, 3), Some(0));
        assert_eq!(next_cursor(9, 2, 3), Some(9 * 1024 + 2));
        assert_eq!(next_cursor(u64::MAX, 1, 3), None);
    }

    #[test]
    fn keyspace_lines_parse() {
        assert_eq!(
            parse_keyspace_line("db0:keys=3,expires=1,avg_ttl=500"),
            Some((
                "db0".to_owned(),
                DbStats {
                    keys: 3,
                    expires: 1,
                    ttl_weight: 500
                }
            ))
        );
        assert_eq!(parse_keyspace_line("redis_version:7.0.15"), None);
        assert_eq!(parse_keyspace_line("db:keys=1"), None);
        assert_eq!(parse_keyspace_line("dbx:keys=1"), None);
    }

    #[test]
    fn info_is_merged_per_shard_with_a_summed_keyspace() {
        let sections = vec![
            (
                "0 (c-0)".to_owned(),
                "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=100\r\n".to_owned(),
            ),
            (
                "1 (c-1)".to_owned(),
                "# Keyspace\r\ndb0:keys=4,expires=1,avg_ttl=300\r\ndb1:keys=2,expires=0,avg_ttl=0\r\n"
                    .to_owned(),
            ),
        ];
        let merged = merge_info(&sections);
        assert!(
            merged.starts_with("# Shard 0 (c-0)\r\n# Keyspace\r\ndb0:keys=3"),
            "{merged}"
        );
        assert!(merged.contains("# Shard 1 (c-1)\r\n"), "{merged}");
        assert!(
            merged.ends_with(
                "# Keyspace\r\ndb0:keys=7,expires=2,avg_ttl=200\r\ndb1:keys=2,expires=0,avg_ttl=0\r\n"
            ),
            "{merged}"
        );
        let no_keyspace = merge_info(&[(
            "0 (c-0)".to_owned(),
            "# Memory\r\nused_memory:1\r\n".to_owned(),
        )]);
        assert!(!no_keyspace.contains("# Keyspace"), "{no_keyspace}");
    }
}
