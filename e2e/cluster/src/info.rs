//! `cluster.json`: what a running cluster tells its users.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::ports::Ports;
use crate::process::pid_alive;

/// The description of a running cluster, written by its supervisor once it is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster and context name in the kubeconfig (`ringmaster-local`).
    pub name: String,
    /// The cluster directory.
    pub dir: PathBuf,
    /// The slot the cluster holds (see [`crate::slot`]).
    pub slot: u8,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The cluster CA certificate.
    pub ca_cert: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub apiserver_url: String,
    /// Every port the cluster listens on.
    pub ports: Ports,
    /// Pod IP range.
    pub pod_cidr: String,
    /// Service ClusterIP range.
    pub service_cidr: String,
    /// Control-plane binaries (etcd, kube-apiserver, kubectl, helm, ...).
    pub bin_dir: PathBuf,
    /// The Node's name, if a node runs.
    pub node_name: Option<String>,
    /// The node agent's state directory.
    pub node_state_dir: PathBuf,
    /// One log file per process.
    pub logs_dir: PathBuf,
    /// The supervisor's pid (`e2e-cluster run`).
    pub supervisor_pid: u32,
    /// Pid of each process the supervisor runs, by name.
    pub pids: BTreeMap<String, u32>,
}

impl ClusterInfo {
    /// Reads a `cluster.json`.
    pub fn load(path: &Path) -> Result<ClusterInfo> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `cluster.json` atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)?;
        fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    }

    /// Whether the supervisor still runs.
    pub fn is_running(&self) -> bool {
        pid_alive(self.supervisor_pid)
    }

    /// Pids (by name) of the cluster's processes that are still alive.
    pub fn live_pids(&self) -> Vec<(String, u32)> {
        let supervisor = ("e2e-cluster".to_string(), self.supervisor_pid);
        let all = self.pids.iter().map(|(n, p)| (n.clone(), *p));
        std::iter::once(supervisor)
            .chain(all)
            .filter(|(_, pid)| pid_alive(*pid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> ClusterInfo {
        ClusterInfo {
            name: "ringmaster-local".into(),
            dir: "/tmp/ringmaster-e2e/3-42".into(),
            slot: 3,
            kubeconfig: "/tmp/ringmaster-e2e/3-42/admin.kubeconfig".into(),
            ca_cert: "/tmp/ringmaster-e2e/3-42/pki/ca.crt".into(),
            apiserver_url: "https://127.0.0.1:40001".into(),
            ports: Ports {
                etcd_client: 40002,
                etcd_peer: 40003,
                apiserver: 40001,
                controller_manager: 40004,
                kubelet: 40005,
            },
            pod_cidr: "127.26.0.0/16".into(),
            service_cidr: "127.27.0.0/16".into(),
            bin_dir: "/root/.cache/ringmaster/k8s/x/bin".into(),
            node_name: Some("localnode".into()),
            node_state_dir: "/tmp/ringmaster-e2e/3-42/node".into(),
            logs_dir: "/tmp/ringmaster-e2e/3-42/logs".into(),
            supervisor_pid: 42,
            pids: [("etcd".to_string(), 43), ("kube-apiserver".to_string(), 44)].into(),
        }
    }

    #[test]
    fn round_trips_through_json() {
        let dir = std::env::temp_dir().join(format!("ringmaster-info-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.json");
        let info = sample();
        info.save(&path).unwrap();
        assert_eq!(ClusterInfo::load(&path).unwrap(), info);
        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["ports"]["apiserver"], 40001);
        assert_eq!(json["pids"]["etcd"], 43);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_dead_supervisor_is_not_running() {
        let mut info = sample();
        info.supervisor_pid = u32::MAX / 2;
        assert!(!info.is_running());
        info.supervisor_pid = std::process::id();
        assert!(info.is_running());
    }
}
