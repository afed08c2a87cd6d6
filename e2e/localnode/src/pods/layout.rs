//! Where a Pod's files live under the state directory (a contract shared with
//! the kubelet API module, which serves `kubectl logs` from these paths).
//!
//! ```text
//! <state_dir>/pods/<pod-uid>/                      the pod directory
//! <state_dir>/pods/<pod-uid>/pod.json              {"namespace","name","uid"}
//! <state_dir>/pods/<pod-uid>/logs/<container>/<restartCount>.log
//! <state_dir>/pods/<pod-uid>/volumes/<volume>/     emptyDir, configMap, secret, projected, …
//! <state_dir>/pods/<pod-uid>/run/<container>/      sandbox scratch files (generated passwd…)
//! <state_dir>/pods/by-name/<namespace>_<pod> -> ../<pod-uid>
//! ```

use std::path::{Path, PathBuf};

/// `<state_dir>/pods`.
pub fn pods_root(state_dir: &Path) -> PathBuf {
    state_dir.join("pods")
}

/// The directory of one Pod.
pub fn pod_dir(state_dir: &Path, uid: &str) -> PathBuf {
    pods_root(state_dir).join(uid)
}

/// The log file of one run of a container (`restart` = its restartCount then).
pub fn log_file(state_dir: &Path, uid: &str, container: &str, restart: i32) -> PathBuf {
    pod_dir(state_dir, uid)
        .join("logs")
        .join(container)
        .join(format!("{restart}.log"))
}

/// The symlink that finds a Pod's directory by namespace and name.
pub fn by_name_link(state_dir: &Path, namespace: &str, name: &str) -> PathBuf {
    pods_root(state_dir)
        .join("by-name")
        .join(format!("{namespace}_{name}"))
}

/// Where a volume's data lives inside the pod directory.
pub fn volume_dir(pod_dir: &Path, volume: &str) -> PathBuf {
    pod_dir.join("volumes").join(volume)
}

/// Scratch directory of a container's sandbox.
pub fn run_dir(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("run").join(container)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_layout_contract() {
        let p = log_file(Path::new("/s"), "u-1", "db", 2);
        assert_eq!(p, PathBuf::from("/s/pods/u-1/logs/db/2.log"));
        assert_eq!(
            by_name_link(Path::new("/s"), "ns", "p"),
            PathBuf::from("/s/pods/by-name/ns_p")
        );
    }
}
