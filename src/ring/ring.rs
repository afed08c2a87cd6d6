//! The ring: virtual nodes per unit of weight, binary-search lookup.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::HashRange;
use super::hash::hash_bytes_extended;
use super::ranges::merge_segments;

/// Virtual nodes per unit of weight unless a descriptor says otherwise.
pub const DEFAULT_VNODES_PER_WEIGHT: u32 = 128;

/// A shard on the ring and its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingMember {
    /// The shard's index.
    pub shard: i32,
    /// Its weight: it gets `weight × vnodesPerWeight` virtual nodes.
    pub weight: u32,
}

/// Everything a ring is built from; serialised in resources and the routing table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingDescriptor {
    /// Increases by one with every change of the members or weights.
    pub version: i64,
    /// Virtual nodes per unit of weight.
    pub vnodes_per_weight: u32,
    /// The shards on the ring, by index.
    pub members: Vec<RingMember>,
}

/// A built ring: sorted virtual-node points, each owned by a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    descriptor: RingDescriptor,
    /// `(point, shard)` sorted by point; a point owns `(previous point, point]`.
    points: Vec<(u64, i32)>,
}

impl Ring {
    /// Builds the ring of `descriptor`. Virtual node `v` of shard `s` sits at
    /// `hash_bytes_extended("shard-{s}-vnode-{v}", 0)`; equal points keep the lower
    /// shard index.
    pub fn build(descriptor: RingDescriptor) -> Self {
        let per_weight = u64::from(descriptor.vnodes_per_weight);
        let total: u64 = descriptor
            .members
            .iter()
            .map(|m| u64::from(m.weight) * per_weight)
            .sum();
        let mut points = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for member in &descriptor.members {
            let vnodes = u64::from(member.weight) * per_weight;
            for v in 0..vnodes {
                let name = format!("shard-{}-vnode-{v}", member.shard);
                points.push((hash_bytes_extended(name.as_bytes(), 0), member.shard));
            }
        }
        Self {
            descriptor,
            points: sort_points(points),
        }
    }

    /// The descriptor the ring was built from.
    pub fn descriptor(&self) -> &RingDescriptor {
        &self.descriptor
    }

    /// The ring's version.
    pub fn version(&self) -> i64 {
        self.descriptor.version
    }

    /// The shard owning `hash`; `None` for a ring without members.
    pub fn owner(&self, hash: u64) -> Option<i32> {
        let index = self.points.partition_point(|&(point, _)| point < hash);
        self.points
            .get(index)
            .or_else(|| self.points.first())
            .map(|&(_, shard)| shard)
    }

    /// The shard owning `key` (after the hash-tag rule).
    pub fn owner_of_key(&self, key: &[u8]) -> Option<i32> {
        self.owner(super::key_hash(key))
    }

    /// Every range of the ring with its owner, ordered by `end`, adjacent ranges of
    /// one owner merged.
    ///
    /// A ring with a single owner yields one range with `start == end` (the whole
    /// circle, written at its last point); a ring without points yields none.
    pub fn ranges(&self) -> Vec<(HashRange, i32)> {
        let Some(&(last, _)) = self.points.last() else {
            return Vec::new();
        };
        let segments = self.points.iter().enumerate().map(|(i, &(end, shard))| {
            let start = if i == 0 { last } else { self.points[i - 1].0 };
            (start, end, Some(shard))
        });
        merge_segments(segments)
    }

    /// The virtual-node points, sorted.
    pub fn points(&self) -> &[(u64, i32)] {
        &self.points
    }
}

/// Sorts by `(point, shard)` and keeps the first (lowest shard) of equal points.
fn sort_points(mut points: Vec<(u64, i32)>) -> Vec<(u64, i32)> {
    points.sort_unstable();
    points.dedup_by_key(|&mut (point, _)| point);
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(members: &[(i32, u32)], vnodes: u32) -> RingDescriptor {
        RingDescriptor {
            version: 3,
            vnodes_per_weight: vnodes,
            members: members
                .iter()
                .map(|&(shard, weight)| RingMember { shard, weight })
                .collect(),
        }
    }

    #[test]
    fn build_places_vnodes() {
        let ring = Ring::build(descriptor(&[(0, 1), (1, 2), (2, 0)], 128));
        assert_eq!(ring.version(), 3);
        assert_eq!(ring.points().len(), 3 * 128);
        assert!(ring.points().windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(ring.points().iter().filter(|p| p.1 == 1).count(), 256);
        assert!(ring.points().iter().all(|p| p.1 != 2));
        // select hashtextextended('shard-0-vnode-0', 0) = -1992007171990688807
        assert!(ring.points().contains(&(0xe45a_f807_fb76_ebd9, 0)));
    }

    #[test]
    fn equal_points_keep_the_lowest_shard() {
        // A shard listed twice collides with itself point for point.
        let ring = Ring::build(descriptor(&[(1, 1), (1, 1)], 8));
        assert_eq!(ring.points().len(), 8);
        assert_eq!(
            sort_points(vec![(9, 3), (5, 2), (9, 1), (5, 7), (1, 4), (9, 2)]),
            vec![(1, 4), (5, 2), (9, 1)]
        );
    }

    #[test]
    fn owner_is_the_first_point_at_or_after() {
        let ring = Ring::build(descriptor(&[(0, 1), (1, 1), (2, 1)], 16));
        let points = ring.points();
        for (i, &(p, s)) in points.iter().enumerate() {
            assert_eq!(ring.owner(p), Some(s));
            let previous = if i == 0 {
                points[points.len() - 1].0
            } else {
                points[i - 1].0
            };
            assert_eq!(ring.owner(previous.wrapping_add(1)), Some(s));
        }
        let (last, first) = (points[points.len() - 1].0, points[0]);
        assert_eq!(ring.owner(last.wrapping_add(1)), Some(first.1));
        assert_eq!(ring.owner(u64::MAX), Some(first.1));
        assert_eq!(ring.owner(0), Some(first.1));
        assert_eq!(Ring::build(descriptor(&[], 16)).owner(42), None);
        assert_eq!(Ring::build(descriptor(&[(0, 0)], 16)).owner(42), None);
    }

    #[test]
    fn ranges_partition_the_circle() {
        let ring = Ring::build(descriptor(&[(0, 1), (1, 1), (2, 1)], 32));
        let ranges = ring.ranges();
        let total: u128 = ranges.iter().map(|(r, _)| r.size()).sum();
        assert_eq!(total, 1 << 64);
        for w in ranges.windows(2) {
            assert!(w[0].0.end < w[1].0.end);
            assert_eq!(w[0].0.end, w[1].0.start);
            assert_ne!(w[0].1, w[1].1);
        }
        let (first, last) = (ranges[0], ranges[ranges.len() - 1]);
        assert_eq!(last.0.end, first.0.start);
        assert_ne!(first.1, last.1);
        for (range, owner) in &ranges {
            assert_eq!(ring.owner(range.end), Some(*owner));
            assert_eq!(ring.owner(range.start.wrapping_add(1)), Some(*owner));
        }
    }

    #[test]
    fn single_owner_is_the_whole_circle() {
        let ring = Ring::build(descriptor(&[(5, 2)], 4));
        let ranges = ring.ranges();
        assert_eq!(ranges.len(), 1);
        assert_eq!(ranges[0].0.start, ranges[0].0.end);
        assert_eq!(ranges[0].1, 5);
        assert!(Ring::build(descriptor(&[], 4)).ranges().is_empty());
    }

    #[test]
    fn descriptor_json_shape() {
        let d = descriptor(&[(0, 1), (3, 2)], 128);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"version": 3, "vnodesPerWeight": 128,
                "members": [{"shard": 0, "weight": 1}, {"shard": 3, "weight": 2}]})
        );
        assert_eq!(serde_json::from_value::<RingDescriptor>(json).unwrap(), d);
    }
}
