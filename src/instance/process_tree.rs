//! Killing a server with everything it started, at once.
//!
//! PostgreSQL's backends put themselves in their own sessions (`setsid`), so
//! killing the postmaster's process group is not enough: the tree is frozen
//! (SIGSTOP of its root: no new children), listed from `/proc`, and every process
//! and process group in it gets SIGKILL. Stopped processes die of SIGKILL too.

use std::collections::HashMap;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// SIGKILLs `root`, its process group and every descendant with theirs.
pub fn kill_tree(root: u32) -> Vec<u32> {
    let root_pid = to_pid(root);
    let _ = kill(root_pid, Signal::SIGSTOP);
    let mut victims = descendants(root, &parents());
    victims.push(root);
    for &p in &victims {
        let pid = to_pid(p);
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = kill(pid, Signal::SIGKILL);
    }
    victims
}

/// `root` and every descendant, as `/proc` lists them now.
pub fn tree(root: u32) -> Vec<u32> {
    let mut tree = vec![root];
    tree.extend(descendants(root, &parents()));
    tree
}

fn to_pid(p: u32) -> Pid {
    Pid::from_raw(i32::try_from(p).unwrap_or(i32::MAX))
}

/// Parent of every process, from `/proc/<pid>/stat`.
fn parents() -> HashMap<u32, u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parent_in_stat(&stat)?))
        })
        .collect()
}

/// The parent pid field of a `/proc/<pid>/stat` line.
fn parent_in_stat(stat: &str) -> Option<u32> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split(' ').nth(1)?.parse().ok()
}

/// Every descendant of `root` according to `parents`.
fn descendants(root: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (&child, &parent) in parents {
            if parent == p && child != root && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_are_found_transitively() {
        let parents: HashMap<u32, u32> = [(10, 1), (11, 10), (12, 11), (13, 1), (14, 10)]
            .into_iter()
            .collect();
        let mut d = descendants(10, &parents);
        d.sort_unstable();
        assert_eq!(d, vec![11, 12, 14]);
    }

    #[test]
    fn a_tree_starts_at_its_root() {
        let me = std::process::id();
        assert_eq!(tree(me).first(), Some(&me));
    }

    #[test]
    fn stat_parsing() {
        assert_eq!(parent_in_stat("42 (postgres: a) b) S 7 42 42 0"), Some(7));
        assert_eq!(parent_in_stat("garbage"), None);
    }
}
