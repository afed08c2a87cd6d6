//! Helpers shared by the integration tests and the cluster benchmarks (each uses a
//! subset).

#![allow(dead_code)]

use std::time::Duration;

use kube::api::{Api, ListParams};
use ringmaster::api::ShardedCluster;
use ringmaster_e2e::{Cluster, wait_for};

/// Installs (or updates) the CRDs from `crds/` and waits until they are served.
pub async fn install_crds(cluster: &Cluster) {
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    let out = cluster.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crds]);
    assert!(
        out.status.success(),
        "installing the CRDs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let established = cluster.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/shardedclusters.ringmaster.dev",
        "crd/shards.ringmaster.dev",
        "crd/shardmigrations.ringmaster.dev",
    ]);
    assert!(
        established.status.success(),
        "CRDs not Established: {}",
        String::from_utf8_lossy(&established.stderr)
    );
    let api: Api<ShardedCluster> = Api::all(cluster.client().await);
    wait_for(
        "the ShardedCluster API to be served",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let api = api.clone();
            async move { Ok(api.list(&ListParams::default()).await.ok().map(drop)) }
        },
    )
    .await
    .unwrap();
}

/// `GET http://<addr><path>` over HTTP/1.0: (status code, body).
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    http_get_as(addr, path, None).await
}

/// [`http_get`] with `Authorization: Bearer <token>` when `token` is given.
pub async fn http_get_as(
    addr: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad response {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

pub mod load;
pub mod operator;
pub mod routers;
pub mod shards;

/// What a reconcile of an unchanged Shard must leave alone: its generation, spec and
/// status, without the replication figures that drift by design (positions and lags,
/// refreshed in the status every few seconds while the servers exchange heartbeats).
pub fn shard_fingerprint(shard: &ringmaster::api::Shard) -> String {
    let status = shard.status.clone().unwrap_or_default().steady();
    serde_json::json!({
        "generation": shard.metadata.generation,
        "spec": shard.spec,
        "status": status,
    })
    .to_string()
}
pub mod agent_host;
