//! The pipelined primitives of every step: `SCAN`, reading keys (`DUMP` + `PTTL`) and
//! writing them (`RESTORE`, `DEL`), a batch per round trip.

use ::redis::{ServerError, Value};

use super::connect::{Conn, pipeline};
use super::error::Result;
use crate::ring::hash_bytes_extended;

/// A key's state on one server, as `DUMP` and `PTTL` see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyState {
    /// The key does not exist (or expired, or vanished between the two reads).
    Missing,
    /// The key exists.
    Present {
        /// `DUMP`'s serialised value.
        payload: Vec<u8>,
        /// Remaining time to live in ms, `None` without expiry; at least 1 (a `PTTL`
        /// of 0 means "expiring now", and `RESTORE` would read 0 as "no expiry").
        ttl_ms: Option<u64>,
    },
}

/// A write of one key on a target.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Write<'a> {
    /// `RESTORE key ttl payload [REPLACE]`.
    Restore {
        key: &'a [u8],
        payload: &'a [u8],
        ttl_ms: Option<u64>,
        replace: bool,
    },
    /// `DEL key`.
    Delete { key: &'a [u8] },
}

impl<'a> Write<'a> {
    /// The write that makes a target's `key` equal to `state` (`REPLACE` or `DEL`).
    pub(crate) fn mirror(key: &'a [u8], state: &'a KeyState) -> Self {
        match state {
            KeyState::Missing => Write::Delete { key },
            KeyState::Present { payload, ttl_ms } => Write::Restore {
                key,
                payload,
                ttl_ms: *ttl_ms,
                replace: true,
            },
        }
    }

    /// The key written.
    pub(crate) fn key(&self) -> &'a [u8] {
        match *self {
            Write::Restore { key, .. } | Write::Delete { key } => key,
        }
    }

    /// The command's name, for errors.
    pub(crate) fn command(&self) -> &'static str {
        match self {
            Write::Restore { .. } => "RESTORE",
            Write::Delete { .. } => "DEL",
        }
    }
}

/// `SCAN cursor COUNT count`: the next cursor (0 at the end) and the keys returned
/// (possibly repeating keys of earlier calls).
pub(crate) async fn scan(
    conn: &mut Conn,
    cursor: u64,
    count: usize,
) -> Result<(u64, Vec<Vec<u8>>)> {
    let mut cmd = ::redis::cmd("SCAN");
    cmd.arg(cursor).arg("COUNT").arg(count.max(1));
    conn.query(|| format!("SCAN {cursor} COUNT {count}"), &cmd)
        .await
}

/// Reads every key of `keys` with one pipeline of `DUMP` + `PTTL` per key.
pub(crate) async fn read(conn: &mut Conn, keys: &[impl AsRef<[u8]>]) -> Result<Vec<KeyState>> {
    let mut pipe = pipeline();
    for key in keys {
        let key = key.as_ref();
        pipe.cmd("DUMP").arg(key).cmd("PTTL").arg(key);
    }
    let replies = conn
        .pipeline(|| format!("DUMP + PTTL of {} keys", keys.len()), &pipe)
        .await?;
    let mut replies = replies.into_iter();
    let mut states = Vec::with_capacity(keys.len());
    for key in keys {
        let key = key.as_ref();
        let (dump, pttl) = (replies.next(), replies.next());
        let payload = match dump {
            Some(Value::Nil) => None,
            Some(Value::BulkString(payload)) => Some(payload),
            other => return Err(bad_reply(conn, "DUMP", key, other)),
        };
        let ttl = match pttl {
            Some(Value::Int(ttl)) => ttl,
            other => return Err(bad_reply(conn, "PTTL", key, other)),
        };
        states.push(match (payload, ttl) {
            (None, _) | (_, -2) => KeyState::Missing,
            (Some(payload), ttl) => KeyState::Present {
                payload,
                ttl_ms: u64::try_from(ttl).ok().map(|ms| ms.max(1)),
            },
        });
    }
    Ok(states)
}

/// Whether each key of `keys` exists, with one pipeline of `EXISTS`.
pub(crate) async fn exist(conn: &mut Conn, keys: &[Vec<u8>]) -> Result<Vec<bool>> {
    let mut pipe = pipeline();
    for key in keys {
        pipe.cmd("EXISTS").arg(key);
    }
    let replies = conn
        .pipeline(|| format!("EXISTS of {} keys", keys.len()), &pipe)
        .await?;
    keys.iter()
        .zip(replies)
        .map(|(key, reply)| match reply {
            Value::Int(n) => Ok(n > 0),
            other => Err(bad_reply(conn, "EXISTS", key, Some(other))),
        })
        .collect()
}

/// Applies `writes` with one pipeline: the server's answer to each, in order: whether
/// it changed the key (`DEL` of a missing key did not), or an error reply such as
/// `BUSYKEY`. Connection failures are the outer `Err`.
pub(crate) async fn write(
    conn: &mut Conn,
    writes: &[Write<'_>],
) -> Result<Vec<Result<bool, ServerError>>> {
    let mut pipe = pipeline();
    for w in writes {
        match *w {
            Write::Restore {
                key,
                payload,
                ttl_ms,
                replace,
            } => {
                pipe.cmd("RESTORE")
                    .arg(key)
                    .arg(ttl_ms.unwrap_or(0))
                    .arg(payload);
                if replace {
                    pipe.arg("REPLACE");
                }
            }
            Write::Delete { key } => {
                pipe.cmd("DEL").arg(key);
            }
        }
    }
    let replies = conn
        .pipeline(|| format!("RESTORE/DEL of {} keys", writes.len()), &pipe)
        .await?;
    Ok(replies
        .into_iter()
        .map(|reply| match reply {
            Value::ServerError(e) => Err(e),
            Value::Int(n) => Ok(n > 0),
            _ => Ok(true),
        })
        .collect())
}

/// An error reply as the server sent it: `CODE detail` (e.g. `BUSYKEY Target key
/// name already exists.`).
pub(crate) fn reply_text(error: &ServerError) -> String {
    match error.details() {
        Some(detail) => format!("{} {detail}", error.code()),
        None => error.code().to_owned(),
    }
}

/// A reply of the wrong shape (or an error reply) to `command` of `key`.
fn bad_reply(
    conn: &Conn,
    command: &'static str,
    key: &[u8],
    reply: Option<Value>,
) -> super::error::MigrateError {
    match reply {
        Some(Value::ServerError(e)) => conn.key_error(command, key, reply_text(&e)),
        other => conn.key_error(
            command,
            key,
            format!("unexpected reply {}", abridged(&other)),
        ),
    }
}

/// A 128-bit fingerprint of a key, to de-duplicate `SCAN` results without keeping
/// the keys (a collision among a billion keys has a probability under 10⁻²⁰).
pub(crate) fn fingerprint(key: &[u8]) -> u128 {
    (u128::from(hash_bytes_extended(key, 0x5ca1_ab1e)) << 64)
        | u128::from(hash_bytes_extended(key, 0x0dd_ba11))
}

/// `keys` without repeats, first occurrence kept.
pub(crate) fn dedup<K: AsRef<[u8]>>(keys: Vec<K>) -> Vec<K> {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    let first: Vec<bool> = keys.iter().map(|k| seen.insert(k.as_ref())).collect();
    drop(seen);
    keys.into_iter()
        .zip(first)
        .filter_map(|(k, first)| first.then_some(k))
        .collect()
}

/// `reply` for a message, abridged to 200 characters.
pub(crate) fn abridged(reply: &impl std::fmt::Debug) -> String {
    let text = format!("{reply:?}");
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
