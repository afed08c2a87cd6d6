//! Node registration and heartbeats.
//!
//! Creates (or takes over) the Node object, keeps its `Ready` condition fresh through
//! the status subresource and renews the node Lease in `kube-node-lease`, like the
//! kubelet's node-status and node-lease loops.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Ctx;

/// Version the node reports as its kubelet's.
pub const KUBELET_VERSION: &str = "v1.35.4-localnode";
/// Version the node reports as its container runtime's.
pub const RUNTIME_VERSION: &str = "localnode://0.1";
/// Namespace of the node leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long the lease is valid without renewal.
const LEASE_DURATION_SECONDS: i32 = 40;
/// How often the lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How often the node status (condition heartbeats) is refreshed.
const STATUS_REFRESH: Duration = Duration::from_secs(30);
/// Delay before retrying a failed registration.
const RETRY: Duration = Duration::from_secs(3);
/// Taints the node lifecycle controller sets on nodes that are not (yet) ready.
const NOT_READY_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];
/// The node's `Hostname` address. The apiserver reaches the kubelet API at the first
/// address of its `--kubelet-preferred-address-types` (Hostname first by default), and
/// the API listens on loopback only, so the hostname must resolve to loopback.
const HOSTNAME_ADDRESS: &str = "localhost";
/// Pods the node accepts.
const MAX_PODS: u32 = 250;

/// Registers the node, then renews its lease and status heartbeats forever.
pub async fn run(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let node = Registrar {
        nodes: Api::all(ctx.client.clone()),
        leases: Api::namespaced(ctx.client.clone(), LEASE_NAMESPACE),
        name: ctx.args.node_name.clone(),
        facts: NodeFacts::gather(&ctx.args.state_dir),
        port: ctx.args.kubelet_port,
        started: Timestamp::now(),
    };
    while let Err(e) = node.register().await {
        tracing::warn!(node = %node.name, error = format!("{e:#}"), "node registration failed; retrying");
        tokio::time::sleep(RETRY).await;
    }
    tracing::info!(node = %node.name, "node registered and ready");

    let mut lease_tick = tokio::time::interval(LEASE_RENEW);
    let mut status_tick = tokio::time::interval(STATUS_REFRESH);
    status_tick.tick().await; // registration just wrote the status
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                if let Err(e) = node.renew_lease().await {
                    tracing::warn!(node = %node.name, error = format!("{e:#}"), "lease renewal failed");
                }
            }
            _ = status_tick.tick() => {
                if let Err(e) = node.heartbeat().await {
                    tracing::warn!(node = %node.name, error = format!("{e:#}"), "node status heartbeat failed");
                }
            }
        }
    }
}

/// Keeps one Node object registered and alive.
struct Registrar {
    nodes: Api<Node>,
    leases: Api<Lease>,
    name: String,
    facts: NodeFacts,
    port: u16,
    started: Timestamp,
}

impl Registrar {
    /// Creates or takes over the Node, marks it Ready, clears the not-ready taints and
    /// renews the lease.
    async fn register(&self) -> anyhow::Result<()> {
        ensure_node(&self.nodes, &self.name, &self.facts.arch).await?;
        let node = self
            .write_status()
            .await
            .context("writing the node status")?;
        remove_not_ready_taints(&self.nodes, &node).await?;
        self.renew_lease().await
    }

    /// Writes the status heartbeat; re-registers the node if it was deleted meanwhile.
    async fn heartbeat(&self) -> anyhow::Result<()> {
        match self.write_status().await {
            Err(e) if is_not_found(&e) => {
                tracing::warn!(node = %self.name, "node object disappeared; registering again");
                self.register().await
            }
            r => r.map(drop).context("writing the node status"),
        }
    }

    /// Writes the whole node status through the status subresource.
    async fn write_status(&self) -> kube::Result<Node> {
        let status = node_status(&self.facts, self.port, self.started, Timestamp::now());
        let patch = json!({ "status": status });
        self.nodes
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
    }

    /// Renews (or creates) the node lease.
    async fn renew_lease(&self) -> anyhow::Result<()> {
        let name = &self.name;
        let now = MicroTime(Timestamp::now());
        let patch = json!({ "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": now,
        }});
        match self
            .leases
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).context("renewing the node lease"),
        }
        let owner = self
            .nodes
            .get(name)
            .await
            .context("reading the Node for the lease owner")?;
        let lease = node_lease(name, owner.metadata.uid.as_deref(), now);
        match self.leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e).context("creating the node lease"),
        }
    }
}

/// Creates the Node, or sets our labels on an existing one.
async fn ensure_node(nodes: &Api<Node>, name: &str, arch: &str) -> anyhow::Result<()> {
    let labels = node_labels(name, arch);
    if nodes.get_opt(name).await?.is_some() {
        tracing::info!(node = %name, "taking over existing Node");
        let patch = json!({ "metadata": { "labels": labels } });
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("labelling the existing Node")?;
        return Ok(());
    }
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e).context("creating the Node"),
    }
}

/// Removes the not-ready/unreachable taints (optimistically locked on the version read).
async fn remove_not_ready_taints(nodes: &Api<Node>, node: &Node) -> anyhow::Result<()> {
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let Some(kept) = without_not_ready_taints(&taints) else {
        return Ok(());
    };
    let name = node.metadata.name.as_deref().unwrap_or_default();
    tracing::info!(node = %name, "removing not-ready taints");
    let patch = json!({
        "metadata": { "resourceVersion": node.metadata.resource_version },
        "spec": { "taints": kept },
    });
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("removing not-ready taints")?;
    Ok(())
}

/// The taints minus the not-ready ones, or `None` if there is nothing to remove.
fn without_not_ready_taints(taints: &[Taint]) -> Option<Vec<Taint>> {
    let kept: Vec<Taint> = taints
        .iter()
        .filter(|t| !NOT_READY_TAINTS.contains(&t.key.as_str()))
        .cloned()
        .collect();
    (kept.len() != taints.len()).then_some(kept)
}

/// The Lease object of the node, owned by the Node like the kubelet's.
fn node_lease(name: &str, node_uid: Option<&str>, now: MicroTime) -> Lease {
    let owner = node_uid.map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        ..OwnerReference::default()
    });
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_owned()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(now),
            ..LeaseSpec::default()
        }),
    }
}

/// Well-known labels the kubelet sets on its Node.
fn node_labels(name: &str, arch: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("node.kubernetes.io/instance-type", "localnode"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Facts about this machine that the node status reports.
#[derive(Debug, Clone)]
struct NodeFacts {
    arch: String,
    cpus: usize,
    memory_bytes: Option<u64>,
    storage_bytes: Option<u64>,
    info: NodeSystemInfo,
}

impl NodeFacts {
    /// Reads the facts from the running system.
    fn gather(state_dir: &Path) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).ok();
        let arch = go_arch(std::env::consts::ARCH).to_owned();
        let machine_id = read("/etc/machine-id").unwrap_or_else(|| "localnode".into());
        let info = NodeSystemInfo {
            architecture: arch.clone(),
            boot_id: read("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            container_runtime_version: RUNTIME_VERSION.into(),
            kernel_version: read("/proc/sys/kernel/osrelease").unwrap_or_default(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            system_uuid: read("/sys/class/dmi/id/product_uuid").unwrap_or(machine_id.clone()),
            machine_id,
            operating_system: "linux".into(),
            os_image: read("/etc/os-release")
                .and_then(|s| os_pretty_name(&s))
                .unwrap_or_else(|| "Linux".into()),
            swap: None,
        };
        Self {
            arch,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: read("/proc/meminfo").and_then(|s| mem_total_bytes(&s)),
            storage_bytes: filesystem_bytes(state_dir),
            info,
        }
    }

    /// Capacity (and allocatable) resources of the node.
    fn resources(&self) -> BTreeMap<String, Quantity> {
        let mut r = BTreeMap::new();
        r.insert("cpu".to_owned(), Quantity(self.cpus.to_string()));
        r.insert("pods".to_owned(), Quantity(MAX_PODS.to_string()));
        if let Some(m) = self.memory_bytes {
            r.insert("memory".to_owned(), Quantity(format!("{}Ki", m / 1024)));
        }
        if let Some(s) = self.storage_bytes {
            r.insert(
                "ephemeral-storage".to_owned(),
                Quantity(format!("{}Ki", s / 1024)),
            );
        }
        r
    }
}

/// Size of the filesystem holding `dir` (its parent if it doesn't exist yet).
fn filesystem_bytes(dir: &Path) -> Option<u64> {
    let probe = dir.ancestors().find(|p| p.exists())?;
    let st = nix::sys::statvfs::statvfs(probe).ok()?;
    #[allow(clippy::useless_conversion)] // the field widths differ between targets
    Some(u64::from(st.blocks()) * u64::from(st.fragment_size()))
}

/// The node status: addresses, resources, system info, endpoint and conditions.
fn node_status(facts: &NodeFacts, port: u16, started: Timestamp, now: Timestamp) -> NodeStatus {
    let resources = facts.resources();
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: "127.0.0.1".into(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: HOSTNAME_ADDRESS.into(),
            },
        ]),
        allocatable: Some(resources.clone()),
        capacity: Some(resources),
        conditions: Some(conditions(started, now)),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(port),
            }),
        }),
        node_info: Some(facts.info.clone()),
        ..NodeStatus::default()
    }
}

/// The node conditions: Ready, and no pressure of any kind.
fn conditions(started: Timestamp, now: Timestamp) -> Vec<NodeCondition> {
    let cond = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(started)),
    };
    vec![
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        cond(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        cond(
            "Ready",
            "True",
            "KubeletReady",
            "localnode is posting ready status",
        ),
    ]
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | Some("KB") => Some(value * 1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// `PRETTY_NAME` of an os-release file.
fn os_pretty_name(os_release: &str) -> Option<String> {
    let value = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(value.trim().trim_matches('"').to_owned()).filter(|s| !s.is_empty())
}

/// Go's name (`GOARCH`) of a Rust target architecture.
fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        }
    }

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       24563844 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_bytes(text), Some(24_563_844 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn parses_os_release() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n";
        assert_eq!(
            os_pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 13 (trixie)")
        );
        assert_eq!(os_pretty_name("NAME=x\n"), None);
    }

    #[test]
    fn strips_only_not_ready_taints() {
        assert_eq!(without_not_ready_taints(&[taint("a")]), None);
        assert_eq!(without_not_ready_taints(&[]), None);
        let kept = without_not_ready_taints(&[
            taint("node.kubernetes.io/not-ready"),
            taint("a"),
            taint("node.kubernetes.io/unreachable"),
        ]);
        assert_eq!(kept, Some(vec![taint("a")]));
    }

    #[test]
    fn status_is_ready_with_endpoint_and_resources() {
        let facts = NodeFacts {
            arch: "amd64".into(),
            cpus: 2,
            memory_bytes: Some(4096 * 1024),
            storage_bytes: Some(1 << 30),
            info: NodeSystemInfo::default(),
        };
        let t0 = Timestamp::UNIX_EPOCH;
        let status = node_status(&facts, 10250, t0, Timestamp::now());
        let cap = status.capacity.unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4096Ki");
        assert_eq!(cap["pods"].0, "250");
        assert_eq!(cap["ephemeral-storage"].0, "1048576Ki");
        let port = status
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port;
        assert_eq!(port, 10250);
        let conds = status.conditions.unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("True", Some("KubeletReady"))
        );
        assert!(
            conds
                .iter()
                .filter(|c| c.type_ != "Ready")
                .all(|c| c.status == "False")
        );
        let addrs = status.addresses.unwrap();
        assert_eq!(addrs[0].address, "127.0.0.1");
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(
            (addrs[1].type_.as_str(), addrs[1].address.as_str()),
            ("Hostname", "localhost")
        );
    }

    #[test]
    fn labels_and_lease() {
        let labels = node_labels("n1", "arm64");
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/arch"], "arm64");
        assert_eq!(labels["node.kubernetes.io/instance-type"], "localnode");
        let lease = node_lease("n1", Some("uid-1"), MicroTime(Timestamp::UNIX_EPOCH));
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(lease.metadata.owner_references.unwrap()[0].uid, "uid-1");
        assert_eq!(go_arch("x86_64"), "amd64");
    }
}
