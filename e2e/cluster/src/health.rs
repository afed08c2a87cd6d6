//! Readiness probes of the cluster, in the shape [`crate::wait_for`] polls.

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Node, ServiceAccount};
use kube::{Api, Client};

/// `Some(())` once the apiserver's `/readyz` answers `ok`; otherwise an error
/// carrying the failing checks.
pub async fn apiserver_ready(client: &Client) -> Result<Option<()>> {
    let request = http::Request::get("/readyz").body(Vec::new())?;
    let body = client.request_text(request).await?;
    Ok((body.trim() == "ok").then_some(()))
}

/// `Some(())` once Node `name` has condition Ready=True; otherwise an error that
/// describes the node's state.
pub async fn node_ready(client: &Client, name: &str) -> Result<Option<()>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let Some(node) = nodes.get_opt(name).await? else {
        bail!("Node {name} is not registered yet");
    };
    let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
    match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "True" => Ok(Some(())),
        Some(c) => bail!(
            "Node {name} is Ready={} ({}: {})",
            c.status,
            c.reason.as_deref().unwrap_or("-"),
            c.message.as_deref().unwrap_or("-")
        ),
        None => bail!("Node {name} has no Ready condition yet"),
    }
}

/// `Some(())` once namespace `ns` has its `default` ServiceAccount and the
/// `kube-root-ca.crt` ConfigMap (Pods are rejected or cannot start before).
pub async fn namespace_ready(client: &Client, ns: &str) -> Result<Option<()>> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    if accounts.get_opt("default").await?.is_none() {
        bail!("namespace {ns} has no default ServiceAccount yet");
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    if config_maps.get_opt("kube-root-ca.crt").await?.is_none() {
        bail!("namespace {ns} has no kube-root-ca.crt ConfigMap yet");
    }
    Ok(Some(()))
}
