//! Process groups the node has started (so none is left behind at shutdown).

use std::collections::HashSet;
use std::sync::Mutex;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The live process groups (each container run and exec probe is one).
#[derive(Debug, Default)]
pub struct Procs {
    groups: Mutex<HashSet<i32>>,
}

impl Procs {
    /// Records a new process group.
    pub fn add(&self, pgid: i32) {
        self.lock().insert(pgid);
    }

    /// Forgets a process group whose leader has been reaped, killing what is left of it.
    pub fn finish(&self, pgid: i32) {
        signal_group(pgid, Signal::SIGKILL);
        self.lock().remove(&pgid);
    }

    /// Signals every known group.
    pub fn signal_all(&self, sig: Signal) {
        for pgid in self.lock().iter() {
            signal_group(*pgid, sig);
        }
    }

    /// Number of known groups.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sends `sig` to the process group `pgid` (ignoring groups that are gone).
pub fn signal_group(pgid: i32, sig: Signal) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), sig);
    }
}
