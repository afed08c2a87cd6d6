//! Ring benchmarks: key lookup (hash + binary search), `Ring::build`, `diff`; and, before
//! criterion runs, the load-imbalance table of docs/ring.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use ringmaster::ring::{Ring, RingDescriptor, RingMember, diff, key_hash};

fn ring(shards: i32, vnodes: u32) -> Ring {
    Ring::build(descriptor(shards, vnodes))
}

fn descriptor(shards: i32, vnodes: u32) -> RingDescriptor {
    RingDescriptor {
        version: 1,
        vnodes_per_weight: vnodes,
        members: (0..shards)
            .map(|shard| RingMember { shard, weight: 1 })
            .collect(),
    }
}

/// 1024 pseudo-random 16-byte alphanumeric keys (fixed seed).
fn keys() -> Vec<[u8; 16]> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:";
    let mut state = 0x6265_6e63_685f_7269_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..1024)
        .map(|_| std::array::from_fn(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]))
        .collect()
}

/// Keys per shard for 1,000,000 keys `key:{i}`: max/mean and min/mean, per vnode count
/// and shard count; also the largest share of the circle (from `ranges()`) / ideal.
fn print_imbalance() {
    let hashes: Vec<u64> = (0..1_000_000)
        .map(|i| key_hash(format!("key:{i}").as_bytes()))
        .collect();
    println!("load imbalance, 1,000,000 keys \"key:{{i}}\", shards 0..n of weight 1");
    println!("| vnodes/weight | shards | max/mean keys | min/mean keys | max/ideal circle share |");
    println!("|---:|---:|---:|---:|---:|");
    for vnodes in [64, 128, 256] {
        for shards in [3, 8, 16] {
            let ring = ring(shards, vnodes);
            let mut counts = vec![0u64; shards as usize];
            for &hash in &hashes {
                counts[ring.owner(hash).expect("members") as usize] += 1;
            }
            let mean = hashes.len() as f64 / f64::from(shards);
            let max = *counts.iter().max().unwrap() as f64;
            let min = *counts.iter().min().unwrap() as f64;
            let mut share = vec![0u128; shards as usize];
            for (range, owner) in ring.ranges() {
                share[owner as usize] += range.size();
            }
            let max_share = *share.iter().max().unwrap() as f64 / (1u128 << 64) as f64;
            println!(
                "| {vnodes} | {shards} | {:.3} | {:.3} | {:.3} |",
                max / mean,
                min / mean,
                max_share * f64::from(shards)
            );
        }
    }
    println!();
}

fn lookup(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("lookup");
    let mut i = 0usize;
    group.bench_function("key_hash (16-byte key)", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            key_hash(black_box(&keys[i]))
        })
    });
    let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
    for shards in [3, 16, 64] {
        let ring = ring(shards, 128);
        group.bench_function(format!("owner (search only)/{shards} shards"), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                ring.owner(black_box(hashes[i]))
            })
        });
        group.bench_function(format!("owner_of_key/{shards} shards"), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                ring.owner_of_key(black_box(&keys[i]))
            })
        });
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    for shards in [3, 16, 64] {
        let descriptor = descriptor(shards, 128);
        group.bench_function(format!("{shards} shards x 128 vnodes"), |b| {
            b.iter(|| Ring::build(black_box(descriptor.clone())))
        });
    }
    group.finish();
}

fn diffs(c: &mut Criterion) {
    let (from, to) = (ring(16, 128), ring(17, 128));
    c.bench_function("diff/16 -> 17 shards x 128 vnodes", |b| {
        b.iter(|| diff(black_box(&from), black_box(&to)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    targets = lookup, build, diffs
}

fn main() {
    print_imbalance();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
