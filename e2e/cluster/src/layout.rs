//! Where a cluster keeps its files inside its directory.

use std::path::{Path, PathBuf};

/// The files and directories of one cluster, all under one root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    /// The cluster directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Certificates and keys.
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }

    /// One log file per process (`<name>.log`).
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The log of one process.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }

    /// etcd's data directory.
    pub fn etcd_data(&self) -> PathBuf {
        self.root.join("etcd")
    }

    /// The node agent's state directory (pod sandboxes, pod logs, volumes).
    pub fn node_state(&self) -> PathBuf {
        self.root.join("node")
    }

    /// Where the controller manager keeps its self-signed serving certificate.
    pub fn controller_manager_certs(&self) -> PathBuf {
        self.root.join("controller-manager")
    }

    /// Helm's cache, config and data homes.
    pub fn helm_home(&self) -> PathBuf {
        self.root.join("helm")
    }

    /// kubectl's discovery cache (`KUBECACHEDIR`).
    pub fn kube_cache(&self) -> PathBuf {
        self.root.join("kube-cache")
    }

    /// The admin kubeconfig (context `ringmaster-local`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.root.join("admin.kubeconfig")
    }

    /// The controller manager's kubeconfig.
    pub fn controller_manager_kubeconfig(&self) -> PathBuf {
        self.root.join("controller-manager.kubeconfig")
    }

    /// The node agent's kubeconfig.
    pub fn node_kubeconfig(&self) -> PathBuf {
        self.root.join("node.kubeconfig")
    }

    /// The description of the running cluster (see [`crate::ClusterInfo`]).
    pub fn cluster_json(&self) -> PathBuf {
        self.root.join("cluster.json")
    }

    /// The supervisor's pid.
    pub fn supervisor_pid(&self) -> PathBuf {
        self.root.join("supervisor.pid")
    }

    /// The daemonized supervisor's stdout and stderr (`e2e-cluster up`).
    pub fn supervisor_log(&self) -> PathBuf {
        self.root.join("supervisor.log")
    }

    /// Every entry a fresh start replaces; nothing else in the directory is touched.
    pub fn owned_entries(&self) -> Vec<PathBuf> {
        vec![
            self.pki(),
            self.logs(),
            self.etcd_data(),
            self.node_state(),
            self.controller_manager_certs(),
            self.helm_home(),
            self.kube_cache(),
            self.admin_kubeconfig(),
            self.controller_manager_kubeconfig(),
            self.node_kubeconfig(),
            self.cluster_json(),
        ]
    }
}
