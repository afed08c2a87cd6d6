//! The key hash: PostgreSQL's `hashtextextended(key, 0)` reinterpreted as `u64`.

/// lookup3's golden-ratio start value plus PostgreSQL's extra constant.
const INIT: u32 = 0x9e37_79b9_u32.wrapping_add(3_923_095);

/// lookup3 `mix`: reversibly mixes three 32-bit words.
#[inline(always)]
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// lookup3 `final`: the last mixing of (a, b, c) into c (and b).
#[inline(always)]
fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

#[inline(always)]
fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// PostgreSQL's `hash_bytes_extended(k, len, seed)` (Jenkins lookup3, 64-bit result):
/// `hashtextextended(text, seed)` for a text of these bytes under a deterministic
/// collation, as a `u64` (PostgreSQL returns the same 64 bits as `bigint`).
///
/// Words are read little-endian (PostgreSQL's result on little-endian hosts, which is
/// what every x86-64 and arm64 server computes).
pub fn hash_bytes_extended(bytes: &[u8], seed: u64) -> u64 {
    // PostgreSQL keeps the length in a uint32 (from an int): truncation is its behaviour.
    let len = bytes.len() as u32;
    let mut a = INIT.wrapping_add(len);
    let mut b = a;
    let mut c = a;

    if seed != 0 {
        // The seed acts as a 12-byte chunk: high word, low word, four zero bytes.
        a = a.wrapping_add((seed >> 32) as u32);
        b = b.wrapping_add(seed as u32);
        mix(&mut a, &mut b, &mut c);
    }

    let mut blocks = bytes.chunks_exact(12);
    for block in &mut blocks {
        a = a.wrapping_add(le32(&block[0..4]));
        b = b.wrapping_add(le32(&block[4..8]));
        c = c.wrapping_add(le32(&block[8..12]));
        mix(&mut a, &mut b, &mut c);
    }

    // The last 0..=11 bytes, zero-padded to 12: bytes 0..4 and 4..8 are added to a and
    // b as little-endian words; bytes 8..11 go to c shifted up by one byte (c's lowest
    // byte is "reserved for the length" in PostgreSQL's fall-through switch), i.e.
    // c += tail[8] << 8 | tail[9] << 16 | tail[10] << 24.
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut padded = [0u8; 12];
        padded[..tail.len()].copy_from_slice(tail);
        a = a.wrapping_add(le32(&padded[0..4]));
        b = b.wrapping_add(le32(&padded[4..8]));
        c = c.wrapping_add(le32(&padded[8..12]) << 8);
    }

    final_mix(&mut a, &mut b, &mut c);
    ((b as u64) << 32) | c as u64
}

/// The part of a Redis key that is hashed: the bytes between the first `{` and the
/// next `}` when that is non-empty (Redis Cluster's hash-tag rule), else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.iter().position(|&b| b == b'}')
            && close > 0
        {
            return &rest[..close];
        }
    }
    key
}

/// The ring position of a key: `hash_bytes_extended(hash_tag(key), 0)`.
pub fn key_hash(key: &[u8]) -> u64 {
    hash_bytes_extended(hash_tag(key), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from PostgreSQL 15: `select hashtextextended(k, 0)` (more in
    /// `tests/ring_vectors.rs`).
    #[test]
    fn matches_postgres() {
        let cases: &[(&str, i64)] = &[
            ("", -6939563903564495251),
            ("a", 3591986179850072241),
            ("hello", 3449563369152288809),
            ("hello world", 6947366892317592103),
            ("hello world!", -2866487628948787489),
            ("hello, world!", 3799359542181020837),
            ("abcdefghijklmnopqrstuvwxy", 5649064133428767341),
            ("héllo wörld ☃", -36145998458369313),
        ];
        for &(key, expected) in cases {
            assert_eq!(
                hash_bytes_extended(key.as_bytes(), 0) as i64,
                expected,
                "{key:?}"
            );
        }
    }

    #[test]
    fn seeded_matches_postgres() {
        // select hashtextextended('hello', 1), hashtextextended('hello', 4294967303)
        assert_eq!(
            hash_bytes_extended(b"hello", 1) as i64,
            -5096709970498108131
        );
        assert_eq!(
            hash_bytes_extended(b"hello", (1 << 32) + 7) as i64,
            5637632248398556659
        );
    }

    #[test]
    fn hash_tags() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"{user1000}.following", b"user1000"),
            (b"foo{bar}zap", b"bar"),
            (b"foo{}bar", b"foo{}bar"),
            (b"{}{x}", b"{}{x}"),
            (b"foo{{bar}}zap", b"{bar"),
            (b"foo{bar}{zap}", b"bar"),
            (b"no tag", b"no tag"),
            (b"open{only", b"open{only"),
            (b"}x{y}", b"y"),
            (b"", b""),
        ];
        for &(key, tag) in cases {
            assert_eq!(hash_tag(key), tag, "{}", String::from_utf8_lossy(key));
        }
        assert_eq!(key_hash(b"{user1000}.following"), key_hash(b"user1000"));
        assert_eq!(key_hash(b"{user1000}.followers"), key_hash(b"user1000"));
    }
}
