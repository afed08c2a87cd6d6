//! Slots keep parallel clusters apart: a slot is held by an exclusive `flock` for
//! the life of a cluster and determines its loopback ranges.

use std::fs::{self, File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};

/// How many clusters can run at once on one machine.
pub const SLOTS: u8 = 32;

/// A held slot; dropping it releases the lock.
#[derive(Debug)]
pub struct SlotLock {
    slot: u8,
    _lock: Flock<File>,
}

impl SlotLock {
    /// The slot number.
    pub fn slot(&self) -> u8 {
        self.slot
    }
}

/// Takes the first free slot (`<cache>/slots/<N>.lock`).
pub fn acquire_any(cache: &Path) -> Result<SlotLock> {
    for slot in 0..SLOTS {
        if let Some(lock) = try_acquire(cache, slot)? {
            return Ok(lock);
        }
    }
    bail!(
        "all {SLOTS} cluster slots under {} are taken: too many local clusters running",
        cache.join("slots").display()
    )
}

/// Takes slot `slot`, failing if another cluster holds it.
pub fn acquire(cache: &Path, slot: u8) -> Result<SlotLock> {
    if slot >= SLOTS {
        bail!("slot {slot} is out of range 0..{SLOTS}");
    }
    try_acquire(cache, slot)?.with_context(|| format!("slot {slot} is held by another cluster"))
}

fn try_acquire(cache: &Path, slot: u8) -> Result<Option<SlotLock>> {
    let dir = cache.join("slots");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{slot}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(SlotLock { slot, _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(errno).with_context(|| format!("locking {}", path.display())),
    }
}

/// Pod IP range of slot `slot`: 127.(20+2N).0.0/16.
pub fn pod_cidr(slot: u8) -> Ipv4Net {
    loopback_16(20 + 2 * slot)
}

/// Service ClusterIP range of slot `slot`: 127.(21+2N).0.0/16.
pub fn service_cidr(slot: u8) -> Ipv4Net {
    loopback_16(21 + 2 * slot)
}

/// The first usable address of a range (the `kubernetes` Service's ClusterIP).
pub fn first_ip(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

fn loopback_16(second: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(127, second, 0, 0), 16).expect("/16 is a valid prefix")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_get_disjoint_loopback_ranges() {
        assert_eq!(pod_cidr(0).to_string(), "127.20.0.0/16");
        assert_eq!(service_cidr(0).to_string(), "127.21.0.0/16");
        assert_eq!(pod_cidr(31).to_string(), "127.82.0.0/16");
        assert_eq!(service_cidr(31).to_string(), "127.83.0.0/16");
        let mut seen = std::collections::HashSet::new();
        for slot in 0..SLOTS {
            assert!(seen.insert(pod_cidr(slot)));
            assert!(seen.insert(service_cidr(slot)));
        }
        assert_eq!(first_ip(service_cidr(1)), Ipv4Addr::new(127, 23, 0, 1));
    }

    #[test]
    fn a_held_slot_is_skipped_and_released_on_drop() {
        let cache =
            std::env::temp_dir().join(format!("ringmaster-slot-test-{}", std::process::id()));
        let first = acquire_any(&cache).unwrap();
        let second = acquire_any(&cache).unwrap();
        assert_ne!(first.slot(), second.slot());
        assert!(acquire(&cache, first.slot()).is_err());
        let slot = first.slot();
        drop(first);
        assert_eq!(acquire(&cache, slot).unwrap().slot(), slot);
        assert!(acquire(&cache, SLOTS).is_err());
        fs::remove_dir_all(cache).unwrap();
    }
}
