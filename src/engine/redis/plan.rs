//! Which keys move where: [`SourcePlan`] (the moves leaving one source shard, with a
//! fast hash → move lookup) and [`Side`] (which end of the moves a connection is).

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use crate::ring::{RangeMove, key_hash};

/// The shard a connection points to and its side of the moves. Functions taking a
/// `Side` only touch keys of the moves that have this shard on this side, so passing
/// every move of a migration is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The connection is to source shard `.0`: keys of moves whose `source` it is.
    Source(i32),
    /// The connection is to target shard `.0`: keys of moves whose `target` it is.
    Target(i32),
}

impl Side {
    /// The shard index.
    pub fn shard(self) -> i32 {
        match self {
            Side::Source(shard) | Side::Target(shard) => shard,
        }
    }

    /// Whether `m` has this shard on this side.
    pub fn applies_to(self, m: &RangeMove) -> bool {
        match self {
            Side::Source(shard) => m.source == shard,
            Side::Target(shard) => m.target == shard,
        }
    }

    /// The moves of `moves` that have this shard on this side, in order.
    pub fn relevant(self, moves: &[RangeMove]) -> Vec<RangeMove> {
        moves
            .iter()
            .filter(|m| self.applies_to(m) && m.source != m.target)
            .copied()
            .collect()
    }
}

/// The moves leaving one source shard, each with its target shard, and a lookup of
/// the move containing a hash (binary search when the moves are disjoint, as
/// [`crate::ring::diff`]'s are).
#[derive(Clone, Debug)]
pub struct SourcePlan {
    source: i32,
    index: MoveIndex,
}

impl SourcePlan {
    /// The plan of source shard `source`: the moves of `moves` whose source it is
    /// (others, and moves to the same shard, are left out).
    pub fn new(source: i32, moves: &[RangeMove]) -> Self {
        Self {
            source,
            index: MoveIndex::new(Side::Source(source).relevant(moves)),
        }
    }

    /// The source shard index.
    pub fn source(&self) -> i32 {
        self.source
    }

    /// The moves leaving the source.
    pub fn moves(&self) -> &[RangeMove] {
        self.index.moves()
    }

    /// Whether nothing leaves the source.
    pub fn is_empty(&self) -> bool {
        self.moves().is_empty()
    }

    /// The target shards of the moves.
    pub fn targets(&self) -> BTreeSet<i32> {
        self.moves().iter().map(|m| m.target).collect()
    }

    /// The move whose range contains `hash`.
    pub fn move_of(&self, hash: u64) -> Option<&RangeMove> {
        self.index.find(hash).map(|i| &self.moves()[i])
    }

    /// The target shard of `hash` when it is in a move of the plan.
    pub fn target_of(&self, hash: u64) -> Option<i32> {
        self.move_of(hash).map(|m| m.target)
    }

    /// The target shard of `key` (after the hash-tag rule) when it moves.
    pub fn target_of_key(&self, key: &[u8]) -> Option<i32> {
        self.target_of(key_hash(key))
    }

    /// The lookup of the plan's moves.
    pub(crate) fn index(&self) -> &MoveIndex {
        &self.index
    }

    /// The keys of `keys` that move, each with its target shard (in order).
    pub(crate) fn moving(&self, keys: impl IntoIterator<Item = Vec<u8>>) -> Vec<MovingKey> {
        keys.into_iter()
            .filter_map(|key| {
                let target = self.target_of_key(&key)?;
                Some(MovingKey { key, target })
            })
            .collect()
    }
}

/// A key in a move of a [`SourcePlan`], with the move's target shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MovingKey {
    /// The key.
    pub key: Vec<u8>,
    /// The target shard of its move.
    pub target: i32,
}

impl AsRef<[u8]> for MovingKey {
    fn as_ref(&self) -> &[u8] {
        &self.key
    }
}

/// Positions in `keys` grouped by target shard: one pipeline per target.
pub(crate) fn by_target(keys: &[MovingKey]) -> BTreeMap<i32, Vec<usize>> {
    let mut groups: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        groups.entry(key.target).or_default().push(i);
    }
    groups
}

/// Moves with a lookup of the move containing a hash.
#[derive(Clone, Debug)]
pub(crate) struct MoveIndex {
    moves: Vec<RangeMove>,
    /// `(end, position)` of the ranges that do not wrap, sorted by end.
    by_end: Vec<(u64, usize)>,
    /// Positions of the ranges that wrap past `u64::MAX` (or cover the circle).
    wrapping: Vec<usize>,
    /// The non-wrapping ranges overlap: scan every move in order.
    linear: bool,
}

impl MoveIndex {
    /// The index of `moves`.
    pub(crate) fn new(moves: Vec<RangeMove>) -> Self {
        let mut by_end = Vec::new();
        let mut wrapping = Vec::new();
        for (i, m) in moves.iter().enumerate() {
            if m.range.start < m.range.end {
                by_end.push((m.range.end, i));
            } else {
                wrapping.push(i);
            }
        }
        by_end.sort_unstable();
        let linear = by_end
            .windows(2)
            .any(|w| moves[w[1].1].range.start < moves[w[0].1].range.end);
        Self {
            moves,
            by_end,
            wrapping,
            linear,
        }
    }

    /// The moves, in the order they were given.
    pub(crate) fn moves(&self) -> &[RangeMove] {
        &self.moves
    }

    /// Position in [`MoveIndex::moves`] of the move containing `hash`.
    pub(crate) fn find(&self, hash: u64) -> Option<usize> {
        let moves = &self.moves;
        if self.linear {
            return moves.iter().position(|m| m.range.contains(hash));
        }
        let i = self.by_end.partition_point(|&(end, _)| end < hash);
        if let Some(&(_, pos)) = self.by_end.get(i)
            && moves[pos].range.contains(hash)
        {
            return Some(pos);
        }
        self.wrapping
            .iter()
            .copied()
            .find(|&pos| moves[pos].range.contains(hash))
    }

    /// Position of the move containing `key` (after the hash-tag rule).
    pub(crate) fn find_key(&self, key: &[u8]) -> Option<usize> {
        self.find(key_hash(key))
    }
}

/// The share of the circle covered by `moves` (0 to 1; overlaps counted twice).
pub(crate) fn coverage(moves: &[RangeMove]) -> f64 {
    const CIRCLE: f64 = 18_446_744_073_709_551_616.0; // 2^64
    moves.iter().map(|m| m.range.size() as f64).sum::<f64>() / CIRCLE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::HashRange;

    fn mv(start: u64, end: u64, source: i32, target: i32) -> RangeMove {
        RangeMove {
            range: HashRange { start, end },
            source,
            target,
        }
    }

    #[test]
    fn plan_keeps_the_moves_of_its_source() {
        let moves = [
            mv(0, 10, 0, 2),
            mv(10, 20, 1, 2),
            mv(30, 40, 0, 3),
            mv(50, 60, 0, 0),
        ];
        let plan = SourcePlan::new(0, &moves);
        assert_eq!(plan.moves(), &[moves[0], moves[2]]);
        assert_eq!(plan.targets(), BTreeSet::from([2, 3]));
        assert_eq!(Side::Target(2).relevant(&moves), vec![moves[0], moves[1]]);
    }

    #[test]
    fn lookup_finds_the_containing_move() {
        let moves = [
            mv(100, 200, 0, 1),
            mv(10, 20, 0, 2),
            mv(u64::MAX - 5, 3, 0, 3),
            mv(200, 300, 0, 4),
        ];
        let plan = SourcePlan::new(0, &moves);
        let expect = |h: u64, t: Option<i32>| assert_eq!(plan.target_of(h), t, "hash {h}");
        expect(10, None);
        expect(11, Some(2));
        expect(20, Some(2));
        expect(21, None);
        expect(100, None);
        expect(101, Some(1));
        expect(200, Some(1));
        expect(201, Some(4));
        expect(300, Some(4));
        expect(301, None);
        expect(u64::MAX - 5, None);
        expect(u64::MAX, Some(3));
        expect(0, Some(3));
        expect(3, Some(3));
        expect(4, None);
    }

    #[test]
    fn lookup_of_overlapping_moves_scans() {
        let moves = [mv(0, 100, 0, 1), mv(50, 60, 0, 2)];
        let plan = SourcePlan::new(0, &moves);
        assert_eq!(plan.target_of(55), Some(1));
        assert_eq!(plan.target_of(101), None);
    }

    #[test]
    fn whole_circle() {
        let plan = SourcePlan::new(0, &[mv(0, 0, 0, 1)]);
        assert_eq!(plan.target_of(0), Some(1));
        assert_eq!(plan.target_of(u64::MAX), Some(1));
        assert!((coverage(plan.moves()) - 1.0).abs() < 1e-9);
        assert!((coverage(&[mv(0, 1 << 62, 0, 1)]) - 0.25).abs() < 1e-9);
    }
}
