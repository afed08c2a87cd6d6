//! The consistent hash ring (pure): which shard owns a key.
//!
//! * [`hash`] — the 64-bit key hash, PostgreSQL's `hashtextextended(key, 0)`
//!   (Jenkins lookup3, as in PostgreSQL's `hash_bytes_extended`), with Redis Cluster's
//!   `{hash tag}` rule; documented with test vectors in `docs/ring.md`.
//! * [`Ring`] — virtual nodes per unit of weight, binary-search lookup, built from a
//!   serialisable, versioned [`RingDescriptor`].
//! * [`diff`] — the hash ranges whose owner changes between two rings.
//!
//! A range is `(start, end]` on the 64-bit circle: it wraps past `u64::MAX` when
//! `start >= end`, and `start == end` is the whole circle.

pub mod hash;
#[cfg(test)]
mod proptests;
mod ranges;
#[allow(clippy::module_inception)] // `ring::ring`: the ring type lives in the ring module
mod ring;

pub use hash::{hash_bytes_extended, hash_tag, key_hash};
pub use ranges::{HashRange, RangeMove, diff, format_hash, parse_hash};
pub use ring::{DEFAULT_VNODES_PER_WEIGHT, Ring, RingDescriptor, RingMember};
