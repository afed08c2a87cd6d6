//! Command lines of the cluster's processes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::layout::Layout;
use crate::pki::PkiFiles;
use crate::ports::Ports;
use crate::process::ProcSpec;

/// ServiceAccount token issuer (and API audience).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The controllers kube-controller-manager runs (names valid in v1.35, see
/// `cmd/kube-controller-manager/names`). Left out on purpose: node-lifecycle and
/// taint-eviction (one node that reports its own health); endpoints,
/// endpointslice and endpointslice-mirroring (the apiserver rejects loopback
/// addresses in Endpoints and EndpointSlices, so every Service with ready Pods
/// would get `FailedToUpdateEndpointSlices` warnings and endless retries; the
/// node's proxy selects endpoints itself); CSR signing, cloud and IPAM controllers.
pub const CONTROLLERS: &[&str] = &[
    "garbage-collector-controller",
    "namespace-controller",
    "deployment-controller",
    "replicaset-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "persistentvolume-binder-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "job-controller",
    "cronjob-controller",
    "statefulset-controller",
    "ttl-after-finished-controller",
    "disruption-controller",
    "clusterrole-aggregation-controller",
    "pod-garbage-collector-controller",
];

/// Everything the command lines depend on.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The cluster's files.
    pub layout: Layout,
    /// The certificates.
    pub pki: PkiFiles,
    /// The ports.
    pub ports: Ports,
    /// Pod IP range.
    pub pod_cidr: Ipv4Net,
    /// Service ClusterIP range.
    pub service_cidr: Ipv4Net,
    /// Control-plane binaries.
    pub bin_dir: PathBuf,
}

fn arg(name: &str, value: impl AsRef<std::ffi::OsStr>) -> String {
    format!("--{name}={}", value.as_ref().to_string_lossy())
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

impl Plan {
    /// The apiserver's URL.
    pub fn apiserver_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }

    /// etcd: plain HTTP on loopback, data under the cluster directory, no fsync.
    pub fn etcd(&self) -> ProcSpec {
        let client = format!("http://127.0.0.1:{}", self.ports.etcd_client);
        let peer = format!("http://127.0.0.1:{}", self.ports.etcd_peer);
        ProcSpec {
            name: "etcd",
            program: self.bin_dir.join("etcd"),
            args: vec![
                arg("name", "ringmaster"),
                arg("data-dir", self.layout.etcd_data()),
                arg("listen-client-urls", &client),
                arg("advertise-client-urls", &client),
                arg("listen-peer-urls", &peer),
                arg("initial-advertise-peer-urls", &peer),
                arg("initial-cluster", format!("ringmaster={peer}")),
                arg("initial-cluster-state", "new"),
                "--unsafe-no-fsync".into(),
                arg("quota-backend-bytes", (2u64 << 30).to_string()),
                arg("auto-compaction-mode", "periodic"),
                arg("auto-compaction-retention", "5m"),
                arg("log-level", "warn"),
            ],
            env: vec![],
        }
    }

    /// kube-apiserver on 127.0.0.1 with RBAC, advertising 127.0.0.1 without endpoint
    /// reconciliation (Endpoints cannot hold loopback addresses).
    pub fn apiserver(&self) -> ProcSpec {
        let pki = &self.pki;
        ProcSpec {
            name: "kube-apiserver",
            program: self.bin_dir.join("kube-apiserver"),
            args: vec![
                arg(
                    "etcd-servers",
                    format!("http://127.0.0.1:{}", self.ports.etcd_client),
                ),
                arg("bind-address", "127.0.0.1"),
                arg("secure-port", self.ports.apiserver.to_string()),
                arg("advertise-address", "127.0.0.1"),
                arg("endpoint-reconciler-type", "none"),
                arg("service-cluster-ip-range", self.service_cidr.to_string()),
                arg("authorization-mode", "RBAC"),
                arg("client-ca-file", &pki.ca.cert),
                arg("tls-cert-file", &pki.apiserver.cert),
                arg("tls-private-key-file", &pki.apiserver.key),
                arg("service-account-issuer", SERVICE_ACCOUNT_ISSUER),
                arg("service-account-key-file", &pki.service_account_pub),
                arg("service-account-signing-key-file", &pki.service_account_key),
                arg("api-audiences", SERVICE_ACCOUNT_ISSUER),
                arg(
                    "kubelet-client-certificate",
                    &pki.apiserver_kubelet_client.cert,
                ),
                arg("kubelet-client-key", &pki.apiserver_kubelet_client.key),
                arg("kubelet-certificate-authority", &pki.ca.cert),
                arg("kubelet-preferred-address-types", "InternalIP"),
                arg("allow-privileged", "true"),
                arg("profiling", "false"),
                arg("cert-dir", self.layout.pki().join("apiserver-generated")),
                // Request-header authentication of the aggregation layer, as kubeadm sets it.
                arg("requestheader-client-ca-file", &pki.front_proxy_ca.cert),
                arg(
                    "requestheader-allowed-names",
                    crate::pki::FRONT_PROXY_CLIENT,
                ),
                arg("requestheader-username-headers", "X-Remote-User"),
                arg("requestheader-group-headers", "X-Remote-Group"),
                arg("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
                arg("proxy-client-cert-file", &pki.front_proxy_client.cert),
                arg("proxy-client-key-file", &pki.front_proxy_client.key),
            ],
            env: vec![],
        }
    }

    /// kube-controller-manager with the controllers of [`CONTROLLERS`].
    pub fn controller_manager(&self) -> ProcSpec {
        let kubeconfig = path(&self.layout.controller_manager_kubeconfig());
        ProcSpec {
            name: "kube-controller-manager",
            program: self.bin_dir.join("kube-controller-manager"),
            args: vec![
                arg("kubeconfig", &kubeconfig),
                arg("authentication-kubeconfig", &kubeconfig),
                arg("authorization-kubeconfig", &kubeconfig),
                arg("controllers", CONTROLLERS.join(",")),
                arg("use-service-account-credentials", "true"),
                arg(
                    "service-account-private-key-file",
                    &self.pki.service_account_key,
                ),
                arg("root-ca-file", &self.pki.ca.cert),
                arg("leader-elect", "false"),
                arg("bind-address", "127.0.0.1"),
                arg("secure-port", self.ports.controller_manager.to_string()),
                arg("cert-dir", self.layout.controller_manager_certs()),
                arg("profiling", "false"),
            ],
            env: vec![],
        }
    }

    /// The node agent.
    pub fn localnode(&self, node: &NodeBins, node_name: &str) -> ProcSpec {
        let pki = &self.pki;
        ProcSpec {
            name: "localnode",
            program: node.localnode.clone(),
            args: vec![
                arg("kubeconfig", self.layout.node_kubeconfig()),
                arg("node-name", node_name),
                arg("state-dir", self.layout.node_state()),
                arg("pod-cidr", self.pod_cidr.to_string()),
                arg("images", &node.images),
                arg("kubelet-port", self.ports.kubelet.to_string()),
                arg("kubelet-cert", &pki.node_serving.cert),
                arg("kubelet-key", &pki.node_serving.key),
                arg("client-ca", &pki.ca.cert),
                arg("apiserver", format!("127.0.0.1:{}", self.ports.apiserver)),
            ],
            env: vec![(
                crate::bins::RINGMASTER_ENV.to_string(),
                OsString::from(&node.ringmaster),
            )],
        }
    }
}

/// What the node agent needs besides the plan.
#[derive(Debug, Clone)]
pub struct NodeBins {
    /// The `localnode` executable.
    pub localnode: PathBuf,
    /// The image map (`e2e/images.yaml`).
    pub images: PathBuf,
    /// The `ringmaster` binary the image map points at (may not exist yet).
    pub ringmaster: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let layout = Layout::new("/c");
        Plan {
            pki: PkiFiles::at(&layout.pki()),
            layout,
            ports: Ports {
                etcd_client: 1001,
                etcd_peer: 1002,
                apiserver: 1003,
                controller_manager: 1004,
                kubelet: 1005,
            },
            pod_cidr: crate::slot::pod_cidr(1),
            service_cidr: crate::slot::service_cidr(1),
            bin_dir: "/bin/k8s".into(),
        }
    }

    #[test]
    fn apiserver_advertises_loopback_without_endpoint_reconciler() {
        let spec = plan().apiserver();
        assert_eq!(spec.program, PathBuf::from("/bin/k8s/kube-apiserver"));
        for expected in [
            "--etcd-servers=http://127.0.0.1:1001",
            "--secure-port=1003",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            "--service-cluster-ip-range=127.23.0.0/16",
            "--authorization-mode=RBAC",
            "--client-ca-file=/c/pki/ca.crt",
        ] {
            assert!(
                spec.args.iter().any(|a| a == expected),
                "{expected} missing"
            );
        }
    }

    #[test]
    fn controller_manager_runs_the_listed_controllers() {
        let spec = plan().controller_manager();
        let controllers = spec
            .args
            .iter()
            .find(|a| a.starts_with("--controllers="))
            .unwrap();
        assert!(controllers.contains("garbage-collector-controller,namespace-controller"));
        assert!(!controllers.contains('*'));
        assert!(spec.args.contains(&"--leader-elect=false".to_string()));
    }

    #[test]
    fn localnode_gets_its_ranges_and_credentials() {
        let bins = NodeBins {
            localnode: "/t/localnode".into(),
            images: "/w/e2e/images.yaml".into(),
            ringmaster: "/t/ringmaster".into(),
        };
        let spec = plan().localnode(&bins, "n1");
        for expected in [
            "--pod-cidr=127.22.0.0/16",
            "--apiserver=127.0.0.1:1003",
            "--kubelet-port=1005",
            "--node-name=n1",
            "--kubeconfig=/c/node.kubeconfig",
        ] {
            assert!(
                spec.args.iter().any(|a| a == expected),
                "{expected} missing"
            );
        }
        assert_eq!(spec.env[0].0, "RINGMASTER_BIN");
    }
}
