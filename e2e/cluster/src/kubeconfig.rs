//! Kubeconfig files with embedded credentials.

use std::path::Path;

use anyhow::Result;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::pki::write_file;

/// Cluster and context name of every kubeconfig.
pub const CLUSTER_NAME: &str = "ringmaster-local";

/// Client credentials of one user, as PEM.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// Name of the user entry.
    pub user: &'a str,
    /// PEM client certificate.
    pub cert: &'a str,
    /// PEM client key.
    pub key: &'a str,
}

/// The YAML of a kubeconfig for `server`, trusting `ca_pem`, as `creds`.
pub fn render(server: &str, ca_pem: &str, creds: Credentials<'_>) -> Result<String> {
    let b64 = |s: &str| STANDARD.encode(s.as_bytes());
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": CLUSTER_NAME,
            "cluster": { "server": server, "certificate-authority-data": b64(ca_pem) },
        }],
        "users": [{
            "name": creds.user,
            "user": {
                "client-certificate-data": b64(creds.cert),
                "client-key-data": b64(creds.key),
            },
        }],
        "contexts": [{
            "name": CLUSTER_NAME,
            "context": { "cluster": CLUSTER_NAME, "user": creds.user, "namespace": "default" },
        }],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    });
    Ok(serde_yaml::to_string(&config)?)
}

/// Writes a kubeconfig (mode 0600: it holds a private key).
pub fn write(path: &Path, server: &str, ca_pem: &str, creds: Credentials<'_>) -> Result<()> {
    write_file(path, &render(server, ca_pem, creds)?, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_rs_reads_the_rendered_kubeconfig() {
        let yaml = render(
            "https://127.0.0.1:6443",
            "CA",
            Credentials {
                user: "admin",
                cert: "CERT",
                key: "KEY",
            },
        )
        .unwrap();
        let config = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(config.current_context.as_deref(), Some(CLUSTER_NAME));
        let cluster = config.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        assert_eq!(config.contexts[0].name, CLUSTER_NAME);
        assert_eq!(config.auth_infos[0].name, "admin");
    }
}
