//! The local cluster's control plane: the apiserver is ready, the node is
//! registered and Ready, kubectl is the pinned version, namespaces come and go,
//! Service ClusterIPs are loopback addresses, and a stopped cluster leaves no
//! process and no listening port behind.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Api;
use ringmaster_e2e::health::node_ready;
use ringmaster_e2e::ports::is_listening;
use ringmaster_e2e::process::pid_alive;
use ringmaster_e2e::{Cluster, ClusterOptions, wait_for};

const VERSION: &str = "v1.35.4";

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn apiserver_readyz_passes() {
    let client = Cluster::shared().client().await;
    let request = http::Request::get("/readyz?verbose")
        .body(Vec::new())
        .unwrap();
    let body = client.request_text(request).await.unwrap();
    assert!(body.contains("readyz check passed"), "/readyz:\n{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_is_ready_and_listed() {
    let cluster = Cluster::shared();
    let node = cluster.node_name();
    if node.is_empty() {
        eprintln!("skipped: the cluster runs without a node (RINGMASTER_E2E_NO_NODE)");
        return;
    }
    let client = cluster.client().await;
    let poll = Duration::from_millis(200);
    wait_for(
        "the node to be Ready",
        Duration::from_secs(30),
        poll,
        || node_ready(&client, node),
    )
    .await
    .unwrap();
    let wide = stdout(&cluster.kubectl(&["get", "nodes", "-o", "wide"]));
    let line = wide.lines().find(|l| l.starts_with(node));
    let line = line.unwrap_or_else(|| panic!("node {node} not listed:\n{wide}"));
    assert!(line.contains(" Ready "), "node not Ready:\n{wide}");
    assert!(
        line.contains("127.0.0.1"),
        "node has no loopback InternalIP:\n{wide}"
    );
}

#[test]
fn kubectl_and_apiserver_are_the_pinned_version() {
    let cluster = Cluster::shared();
    let out = stdout(&cluster.kubectl(&["version", "-o", "json"]));
    let version: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(version["clientVersion"]["gitVersion"], VERSION, "{out}");
    assert_eq!(version["serverVersion"]["gitVersion"], VERSION, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_service_has_a_loopback_cluster_ip() {
    let cluster = Cluster::shared();
    let services: Api<Service> = Api::namespaced(cluster.client().await, "default");
    let service = services.get("kubernetes").await.unwrap();
    let ip = service.spec.and_then(|s| s.cluster_ip).unwrap();
    let cidr: ipnet::Ipv4Net = cluster.info().service_cidr.parse().unwrap();
    let first = ringmaster_e2e::slot::first_ip(cidr);
    assert_eq!(
        ip,
        first.to_string(),
        "the kubernetes Service takes the first IP of {cidr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_is_created_and_deleted_on_drop() {
    let cluster = Cluster::shared();
    let namespaces: Api<Namespace> = Api::all(cluster.client().await);
    let ns = cluster.namespace("control-plane").await;
    let name = ns.name().to_string();
    assert!(name.starts_with("control-plane-"), "{name}");
    let listed = stdout(&cluster.kubectl(&["get", "namespace", &name, "-o", "name"]));
    assert_eq!(listed.trim(), format!("namespace/{name}"));
    assert!(namespaces.get_opt(&name).await.unwrap().is_some());
    drop(ns);
    assert!(
        namespaces.get_opt(&name).await.unwrap().is_none(),
        "namespace {name} still exists after its drop"
    );
}

#[test]
fn a_stopped_cluster_leaves_no_process_and_no_port() {
    let cluster = Cluster::start(ClusterOptions::default()).expect("a second cluster starts");
    let info = cluster.info().clone();
    assert_ne!(
        info.slot,
        Cluster::shared().info().slot,
        "clusters share a slot"
    );
    let ports: Vec<_> = info
        .ports
        .all()
        .into_iter()
        .filter(|(name, _)| *name != "kubelet" || info.node_name.is_some())
        .collect();
    for (name, port) in &ports {
        assert!(is_listening(*port), "{name} does not listen on {port}");
    }
    let mut pids: Vec<_> = info.pids.clone().into_iter().collect();
    pids.push(("e2e-cluster".into(), info.supervisor_pid));
    assert!(pids.iter().all(|(_, pid)| pid_alive(*pid)));

    cluster.stop().expect("the cluster stops cleanly");

    let alive: Vec<_> = pids.iter().filter(|(_, pid)| pid_alive(*pid)).collect();
    assert!(
        alive.is_empty(),
        "processes outlived the cluster: {alive:?}"
    );
    let open: Vec<_> = ports
        .iter()
        .filter(|(_, port)| is_listening(*port))
        .collect();
    assert!(open.is_empty(), "ports still accept connections: {open:?}");
    assert!(!info.dir.join("cluster.json").exists());
}
