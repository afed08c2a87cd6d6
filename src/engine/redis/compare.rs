//! Comparing a key on the source with its copy on the target. `DUMP` payloads of equal
//! values are usually equal, but not always: a set or hash stored as a hash table is
//! dumped in its table's order, which depends on the server's random hash seed and on
//! the key's history. Keys whose payloads differ are therefore compared by content
//! (type, members, scores, fields, elements) before they count as mismatched.

use ::redis::{FromRedisValue, Value};

use super::connect::{Conn, pipeline};
use super::error::Result;
use super::keys::{KeyState, reply_text};

/// How a target's copy of a key compares with the source's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Comparison {
    /// Same value and both with or both without a TTL (or missing on both).
    Equal,
    /// On the source, not on the target.
    MissingOnTarget,
    /// On the target, not on the source.
    ExtraOnTarget,
    /// One has a TTL, the other has none.
    TtlDiffers,
    /// The values differ.
    ValueDiffers,
}

impl Comparison {
    /// Whether the copy is good.
    pub(crate) fn is_equal(self) -> bool {
        self == Comparison::Equal
    }
}

/// The comparison of two `DUMP`/`PTTL` readings; `None` when both exist with a TTL
/// on both or neither but different payloads: compare their [`Content`] then.
pub(crate) fn compare_states(source: &KeyState, target: &KeyState) -> Option<Comparison> {
    use KeyState::{Missing, Present};
    Some(match (source, target) {
        (Missing, Missing) => Comparison::Equal,
        (Present { .. }, Missing) => Comparison::MissingOnTarget,
        (Missing, Present { .. }) => Comparison::ExtraOnTarget,
        (
            Present {
                payload: a,
                ttl_ms: ta,
            },
            Present {
                payload: b,
                ttl_ms: tb,
            },
        ) => {
            if ta.is_some() != tb.is_some() {
                Comparison::TtlDiffers
            } else if a == b {
                Comparison::Equal
            } else {
                return None;
            }
        }
    })
}

/// The comparison of two contents read after [`compare_states`] was undecided.
pub(crate) fn compare_contents(source: &Content, target: &Content) -> Comparison {
    match (source, target) {
        (Content::Missing, Content::Missing) => Comparison::Equal,
        (_, Content::Missing) => Comparison::MissingOnTarget,
        (Content::Missing, _) => Comparison::ExtraOnTarget,
        (a, b) if a.comparable() && a == b => Comparison::Equal,
        _ => Comparison::ValueDiffers,
    }
}

/// A key's value in a form that does not depend on its encoding.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Content {
    /// No such key.
    Missing,
    /// `GET`.
    String(Vec<u8>),
    /// `LRANGE 0 -1`.
    List(Vec<Vec<u8>>),
    /// `SMEMBERS`, sorted.
    Set(Vec<Vec<u8>>),
    /// `HGETALL`, sorted by field.
    Hash(Pairs),
    /// `ZRANGE 0 -1 WITHSCORES` (ordered by score, then member), scores as text.
    ZSet(Pairs),
    /// `XRANGE - +` (entries only: consumer groups are not compared).
    Stream(Value),
    /// A type without a content comparison (modules): never equal.
    Other(String),
    /// The read failed (e.g. the type changed in between): never equal.
    Unreadable(String),
}

impl Content {
    /// Whether equality of this content means equality of the values.
    fn comparable(&self) -> bool {
        !matches!(self, Content::Other(_) | Content::Unreadable(_))
    }
}

/// Reads the content of `keys` with two pipelines: `TYPE`, then a read per type.
pub(crate) async fn read_contents(
    conn: &mut Conn,
    keys: &[impl AsRef<[u8]>],
) -> Result<Vec<Content>> {
    let mut types = pipeline();
    for key in keys {
        types.cmd("TYPE").arg(key.as_ref());
    }
    let kinds: Vec<String> = conn
        .pipeline(|| format!("TYPE of {} keys", keys.len()), &types)
        .await?
        .into_iter()
        .map(|v| String::from_redis_value(v).unwrap_or_else(|e| format!("unreadable: {e}")))
        .collect();
    let mut reads = pipeline();
    for (key, kind) in keys.iter().zip(&kinds) {
        let key = key.as_ref();
        match kind.as_str() {
            "string" => reads.cmd("GET").arg(key),
            "list" => reads.cmd("LRANGE").arg(key).arg(0).arg(-1),
            "set" => reads.cmd("SMEMBERS").arg(key),
            "hash" => reads.cmd("HGETALL").arg(key),
            "zset" => reads
                .cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"),
            "stream" => reads.cmd("XRANGE").arg(key).arg("-").arg("+"),
            _ => reads.cmd("EXISTS").arg(key),
        };
    }
    let values = conn
        .pipeline(
            || format!("reading the values of {} keys", keys.len()),
            &reads,
        )
        .await?;
    Ok(kinds
        .into_iter()
        .zip(values)
        .map(|(kind, value)| content(&kind, value))
        .collect())
}

/// The content of a key of type `kind` from its read's reply.
fn content(kind: &str, value: Value) -> Content {
    if let Value::ServerError(e) = value {
        return Content::Unreadable(reply_text(&e));
    }
    let parsed = match kind {
        "none" => Ok(Content::Missing),
        "string" => Vec::<u8>::from_redis_value(value).map(Content::String),
        "list" => Vec::<Vec<u8>>::from_redis_value(value).map(Content::List),
        "set" => Vec::<Vec<u8>>::from_redis_value(value).map(|mut members| {
            members.sort_unstable();
            Content::Set(members)
        }),
        "hash" => pairs(value).map(|mut fields| {
            fields.sort_unstable();
            Content::Hash(fields)
        }),
        "zset" => pairs(value).map(Content::ZSet),
        "stream" => Ok(Content::Stream(value)),
        other => Ok(Content::Other(other.to_owned())),
    };
    parsed.unwrap_or_else(|e| Content::Unreadable(e.to_string()))
}

/// Field/value or member/score pairs.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A flat `[a1, b1, a2, b2, …]` reply (or a RESP3 map) as pairs.
fn pairs(value: Value) -> Result<Pairs, ::redis::ParsingError> {
    if let Value::Map(entries) = value {
        return entries
            .into_iter()
            .map(|(a, b)| Ok((Vec::from_redis_value(a)?, Vec::from_redis_value(b)?)))
            .collect();
    }
    let flat = Vec::<Vec<u8>>::from_redis_value(value)?;
    let mut items = flat.into_iter();
    let mut out = Vec::with_capacity(items.len() / 2);
    while let (Some(a), Some(b)) = (items.next(), items.next()) {
        out.push((a, b));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(payload: &[u8], ttl: Option<u64>) -> KeyState {
        KeyState::Present {
            payload: payload.to_vec(),
            ttl_ms: ttl,
        }
    }

    #[test]
    fn states() {
        let m = KeyState::Missing;
        assert_eq!(compare_states(&m, &m), Some(Comparison::Equal));
        assert_eq!(
            compare_states(&present(b"a", None), &m),
            Some(Comparison::MissingOnTarget)
        );
        assert_eq!(
            compare_states(&m, &present(b"a", None)),
            Some(Comparison::ExtraOnTarget)
        );
        assert_eq!(
            compare_states(&present(b"a", Some(5)), &present(b"a", None)),
            Some(Comparison::TtlDiffers)
        );
        assert_eq!(
            compare_states(&present(b"a", Some(5)), &present(b"a", Some(900))),
            Some(Comparison::Equal),
            "TTLs are compared by presence only"
        );
        assert_eq!(
            compare_states(&present(b"a", None), &present(b"b", None)),
            None
        );
    }

    #[test]
    fn contents() {
        let set = |m: &[&[u8]]| {
            content(
                "set",
                Value::Array(m.iter().map(|b| Value::BulkString(b.to_vec())).collect()),
            )
        };
        assert_eq!(
            compare_contents(&set(&[b"a", b"b"]), &set(&[b"b", b"a"])),
            Comparison::Equal
        );
        assert_eq!(
            compare_contents(&set(&[b"a"]), &set(&[b"b"])),
            Comparison::ValueDiffers
        );
        assert_eq!(
            compare_contents(&set(&[b"a"]), &Content::Missing),
            Comparison::MissingOnTarget
        );
        let other = Content::Other("MBbloom--".into());
        assert_eq!(compare_contents(&other, &other), Comparison::ValueDiffers);
        let hash = |v: Vec<&[u8]>| {
            content(
                "hash",
                Value::Array(
                    v.into_iter()
                        .map(|b| Value::BulkString(b.to_vec()))
                        .collect(),
                ),
            )
        };
        assert_eq!(
            compare_contents(
                &hash(vec![b"f", b"1", b"g", b"2"]),
                &hash(vec![b"g", b"2", b"f", b"1"])
            ),
            Comparison::Equal
        );
        assert_eq!(
            compare_contents(&hash(vec![b"f", b"1"]), &hash(vec![b"f", b"2"])),
            Comparison::ValueDiffers
        );
    }
}
