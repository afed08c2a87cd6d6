//! kube clients from the cluster's kubeconfigs.

use std::path::Path;

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A client with the credentials of the kubeconfig at `path`.
///
/// A `kube::Client` runs on the tokio runtime it was created in: create one per
/// runtime (each `#[tokio::test]` has its own).
pub async fn from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", path.display()))?;
    kube::Client::try_from(config).context("building a kube client")
}
