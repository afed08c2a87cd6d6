//! Hash ranges on the 64-bit circle and the moves between two rings.

use serde::{Deserialize, Serialize};

use super::Ring;

/// The range `(start, end]` of the circle, wrapping past `u64::MAX` when
/// `start >= end`; `start == end` is the whole circle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HashRange {
    /// Exclusive start.
    #[serde(with = "hex")]
    pub start: u64,
    /// Inclusive end.
    #[serde(with = "hex")]
    pub end: u64,
}

impl HashRange {
    /// Whether `hash` lies in the range.
    pub fn contains(&self, hash: u64) -> bool {
        match self.start.cmp(&self.end) {
            std::cmp::Ordering::Less => self.start < hash && hash <= self.end,
            std::cmp::Ordering::Greater => hash > self.start || hash <= self.end,
            std::cmp::Ordering::Equal => true,
        }
    }

    /// The number of hashes in the range (`2^64` for the whole circle).
    pub fn size(&self) -> u128 {
        if self.start == self.end {
            1u128 << 64
        } else {
            u128::from(self.end.wrapping_sub(self.start))
        }
    }
}

/// A range whose owner changes from `source` to `target` (shard indexes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeMove {
    /// The range.
    #[serde(flatten)]
    pub range: HashRange,
    /// Shard index that owns the range in the first ring.
    pub source: i32,
    /// Shard index that owns it in the second ring.
    pub target: i32,
}

/// The ranges whose owner differs between `from` and `to`, ordered by `end`, adjacent
/// ranges with the same source and target merged.
///
/// Empty when either ring has no points (there is nowhere to move from or to).
/// Linear in the number of points of both rings.
pub fn diff(from: &Ring, to: &Ring) -> Vec<RangeMove> {
    let (a, b) = (from.points(), to.points());
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    // The union of both rings' points, sorted and deduplicated: between two consecutive
    // union points neither ring changes owner.
    let mut union = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(&(p, _)), Some(&(q, _))) if p <= q => {
                i += 1;
                if p == q {
                    j += 1;
                }
                p
            }
            (_, Some(&(q, _))) => {
                j += 1;
                q
            }
            (Some(&(p, _)), None) => {
                i += 1;
                p
            }
            (None, None) => unreachable!(),
        };
        union.push(next);
    }
    // The segment ending at union[k] is owned, in each ring, by its first point >= union[k].
    let (mut i, mut j) = (0, 0);
    let segments = union.iter().enumerate().map(|(k, &end)| {
        while i < a.len() && a[i].0 < end {
            i += 1;
        }
        while j < b.len() && b[j].0 < end {
            j += 1;
        }
        let source = a[if i == a.len() { 0 } else { i }].1;
        let target = b[if j == b.len() { 0 } else { j }].1;
        let start = union[if k == 0 { union.len() - 1 } else { k - 1 }];
        (start, end, (source != target).then_some((source, target)))
    });
    merge_segments(segments)
        .into_iter()
        .map(|(range, (source, target))| RangeMove {
            range,
            source,
            target,
        })
        .collect()
}

/// Merges the labelled segments of a partition of the circle into maximal runs.
///
/// `segments` are contiguous, in order of their end, starting with the one that wraps
/// (its start is the last segment's end); segments labelled `None` are dropped. Runs of
/// equal labels are merged, including the run that continues across the wrap; a run
/// covering every segment becomes the whole circle (`start == end`). The result is
/// ordered by end.
pub(crate) fn merge_segments<L: PartialEq + Copy>(
    segments: impl IntoIterator<Item = (u64, u64, Option<L>)>,
) -> Vec<(HashRange, L)> {
    // (range, label, index of the run's first segment, index of its last segment)
    let mut runs: Vec<(HashRange, L, usize, usize)> = Vec::new();
    let mut count = 0;
    for (index, (start, end, label)) in segments.into_iter().enumerate() {
        count = index + 1;
        let Some(label) = label else { continue };
        match runs.last_mut() {
            Some((range, run_label, _, last)) if *last + 1 == index && *run_label == label => {
                range.end = end;
                *last = index;
            }
            _ => runs.push((HashRange { start, end }, label, index, index)),
        }
    }
    if runs.len() >= 2 {
        let (first_range, first_label, first_index, _) = runs[0];
        let (last_range, last_label, _, last_index) = runs[runs.len() - 1];
        if first_index == 0 && last_index + 1 == count && first_label == last_label {
            runs.pop();
            runs[0].0 = HashRange {
                start: last_range.start,
                end: first_range.end,
            };
        }
    }
    runs.into_iter()
        .map(|(range, label, _, _)| (range, label))
        .collect()
}

/// `0x` and 16 lowercase hex digits: how hashes are written in resources and JSON.
pub fn format_hash(hash: u64) -> String {
    format!("0x{hash:016x}")
}

/// Parses [`format_hash`]'s form.
pub fn parse_hash(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("0x")?;
    if digits.len() != 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Serde of a hash as [`format_hash`]'s string.
mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hash: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_hash(*hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_hash(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("not a 0x-prefixed 16-digit hash: {text}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{RingDescriptor, RingMember};

    fn ring(shards: &[i32], vnodes: u32) -> Ring {
        Ring::build(RingDescriptor {
            version: 1,
            vnodes_per_weight: vnodes,
            members: shards
                .iter()
                .map(|&shard| RingMember { shard, weight: 1 })
                .collect(),
        })
    }

    #[test]
    fn contains_with_wrap() {
        let r = HashRange { start: 10, end: 20 };
        assert!(!r.contains(10) && r.contains(11) && r.contains(20) && !r.contains(21));
        let w = HashRange {
            start: u64::MAX - 1,
            end: 5,
        };
        assert!(w.contains(u64::MAX) && w.contains(0) && w.contains(5));
        assert!(!w.contains(u64::MAX - 1) && !w.contains(6));
        let all = HashRange { start: 7, end: 7 };
        assert!(all.contains(7) && all.contains(0) && all.contains(u64::MAX));
        assert_eq!(all.size(), 1 << 64);
        assert_eq!(w.size(), 7);
        assert_eq!(r.size(), 10);
    }

    #[test]
    fn serde_shape() {
        let m = RangeMove {
            range: HashRange {
                start: 1,
                end: u64::MAX,
            },
            source: 0,
            target: 3,
        };
        let json = serde_json::to_value(m).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"start": "0x0000000000000001", "end": "0xffffffffffffffff",
                               "source": 0, "target": 3})
        );
        assert_eq!(serde_json::from_value::<RangeMove>(json).unwrap(), m);
        assert!(serde_json::from_str::<HashRange>(r#"{"start":"1","end":"0x0"}"#).is_err());
    }

    #[test]
    fn parse_format_roundtrip() {
        for h in [0, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(parse_hash(&format_hash(h)), Some(h));
        }
        assert_eq!(parse_hash("0x1"), None);
        assert_eq!(parse_hash("ffffffffffffffff"), None);
    }

    #[test]
    fn diff_of_empty_rings_is_empty() {
        let empty = ring(&[], 128);
        let one = ring(&[0], 128);
        assert!(diff(&empty, &one).is_empty());
        assert!(diff(&one, &empty).is_empty());
        assert!(diff(&empty, &empty).is_empty());
        assert!(diff(&one, &one).is_empty());
    }

    #[test]
    fn diff_between_single_owners_is_the_whole_circle() {
        let moves = diff(&ring(&[0], 4), &ring(&[1], 4));
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].range.start, moves[0].range.end);
        assert_eq!((moves[0].source, moves[0].target), (0, 1));
    }

    #[test]
    fn diff_adding_a_shard_moves_to_it() {
        let (a, b) = (ring(&[0, 1], 16), ring(&[0, 1, 2], 16));
        let moves = diff(&a, &b);
        assert!(!moves.is_empty());
        for m in &moves {
            assert_eq!(m.target, 2);
            assert_eq!(a.owner(m.range.end), Some(m.source));
            assert_eq!(b.owner(m.range.end), Some(2));
        }
        // Ordered by end (a range wrapping past u64::MAX has the smallest end: first).
        for w in moves.windows(2) {
            assert!(w[0].range.end < w[1].range.end);
        }
        // Each of the new shard's own ranges is a move.
        let owned: u128 = b
            .ranges()
            .iter()
            .filter(|(_, s)| *s == 2)
            .map(|(r, _)| r.size())
            .sum();
        assert_eq!(moves.iter().map(|m| m.range.size()).sum::<u128>(), owned);
    }

    #[test]
    fn merge_segments_wraps() {
        // Segments (30, 10], (10, 20], (20, 30] labelled x, y, x: the x runs merge.
        let merged = merge_segments([
            (30, 10, Some('x')),
            (10, 20, Some('y')),
            (20, 30, Some('x')),
        ]);
        assert_eq!(
            merged,
            vec![
                (HashRange { start: 20, end: 10 }, 'x'),
                (HashRange { start: 10, end: 20 }, 'y')
            ]
        );
        // Dropped segments break runs.
        let merged = merge_segments([(30, 10, Some('x')), (10, 20, None), (20, 30, Some('x'))]);
        assert_eq!(merged, vec![(HashRange { start: 20, end: 10 }, 'x')]);
        let merged = merge_segments([(30, 10, Some('x')), (10, 20, Some('x')), (20, 30, None)]);
        assert_eq!(merged, vec![(HashRange { start: 30, end: 20 }, 'x')]);
        // One label everywhere: the whole circle.
        let merged = merge_segments([
            (30, 10, Some('x')),
            (10, 20, Some('x')),
            (20, 30, Some('x')),
        ]);
        assert_eq!(merged, vec![(HashRange { start: 30, end: 30 }, 'x')]);
        assert!(merge_segments::<char>([]).is_empty());
    }
}
