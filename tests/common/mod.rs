//! Helpers shared by the integration tests.

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
