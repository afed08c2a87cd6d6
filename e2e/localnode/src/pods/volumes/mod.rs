//! Pod volumes realised as host directories under the pod directory (or, for
//! hostPath and persistent volume claims, elsewhere on the host). Containers
//! get them through bind mounts in their sandbox.

pub mod host;
pub mod projection;
pub mod token;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Volume};
use kube::api::Api;

use super::{fieldref, layout};
use projection::{Fetched, Projected, Source};
use writer::Files;

/// Why a Pod's volumes are not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeError {
    /// Not yet (claim not bound, object missing, …): retried.
    NotReady(String),
    /// The volume can never work as specified.
    Invalid(String),
}

impl VolumeError {
    fn io(path: &Path, e: std::io::Error) -> VolumeError {
        VolumeError::NotReady(format!("{}: {e}", path.display()))
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            VolumeError::NotReady(m) | VolumeError::Invalid(m) => m,
        }
    }
}

/// Where a volume's data is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePath {
    /// Host directory (or file).
    pub host: PathBuf,
    /// The volume itself is read-only.
    pub read_only: bool,
}

/// A Pod's volumes: their host paths, and the projected ones to keep fresh.
#[derive(Debug)]
pub struct PodVolumes {
    /// Host path of every volume by name.
    pub paths: HashMap<String, VolumePath>,
    projected: Vec<(PathBuf, Projected)>,
    last: HashMap<PathBuf, Files>,
    tokens: token::TokenCache,
    fs_group: Option<u32>,
}

/// The Pod's fsGroup.
pub fn fs_group(pod: &Pod) -> Option<u32> {
    let sc = pod.spec.as_ref()?.security_context.as_ref()?;
    sc.fs_group.and_then(|g| u32::try_from(g).ok())
}

impl PodVolumes {
    /// Creates every volume of the Pod and writes the projected ones.
    pub async fn prepare(
        client: &kube::Client,
        pod: &Pod,
        pod_dir: &Path,
        rt: fieldref::Runtime,
    ) -> Result<PodVolumes, VolumeError> {
        let mut v = PodVolumes {
            paths: HashMap::new(),
            projected: Vec::new(),
            last: HashMap::new(),
            tokens: token::TokenCache::default(),
            fs_group: fs_group(pod),
        };
        for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            v.add(client, pod, pod_dir, vol).await?;
        }
        v.refresh(client, pod, rt)
            .await
            .map_err(VolumeError::NotReady)?;
        Ok(v)
    }

    async fn add(
        &mut self,
        client: &kube::Client,
        pod: &Pod,
        pod_dir: &Path,
        vol: &Volume,
    ) -> Result<(), VolumeError> {
        let dir = layout::volume_dir(pod_dir, &vol.name);
        let invalid = |m: String| VolumeError::Invalid(format!("volume \"{}\": {m}", vol.name));
        if let Some(p) = projection::projected(vol) {
            self.projected.push((dir.clone(), p.map_err(invalid)?));
            self.paths.insert(
                vol.name.clone(),
                VolumePath {
                    host: dir,
                    read_only: true,
                },
            );
            return Ok(());
        }
        let (host, read_only) = if vol.empty_dir.is_some() {
            host::empty_dir(&dir, self.fs_group)?;
            (dir, false)
        } else if let Some(hp) = &vol.host_path {
            (host::host_path(hp)?, false)
        } else if let Some(pvc) = &vol.persistent_volume_claim {
            (
                self.claim(client, pod, &pvc.claim_name).await?,
                pvc.read_only == Some(true),
            )
        } else if vol.ephemeral.is_some() {
            let claim = format!(
                "{}-{}",
                pod.metadata.name.as_deref().unwrap_or_default(),
                vol.name
            );
            (self.claim(client, pod, &claim).await?, false)
        } else {
            return Err(invalid("unsupported volume type on this node".to_string()));
        };
        self.paths
            .insert(vol.name.clone(), VolumePath { host, read_only });
        Ok(())
    }

    async fn claim(
        &self,
        client: &kube::Client,
        pod: &Pod,
        claim: &str,
    ) -> Result<PathBuf, VolumeError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let path = host::claim_path(client, ns, claim).await?;
        if let Some(gid) = self.fs_group {
            host::apply_fs_group(&path, gid).map_err(|e| VolumeError::io(&path, e))?;
        }
        Ok(path)
    }

    /// Re-projects configMap, secret, downwardAPI and projected volumes,
    /// rewriting those whose contents changed (and refreshing due tokens).
    pub async fn refresh(
        &mut self,
        client: &kube::Client,
        pod: &Pod,
        rt: fieldref::Runtime,
    ) -> Result<(), String> {
        if self.projected.is_empty() {
            return Ok(());
        }
        let fetched = self.fetch(client, pod).await?;
        for (dir, p) in &self.projected {
            let files = projection::project(p, pod, rt, &fetched).map_err(|e| {
                format!(
                    "volume {}: {e}",
                    dir.file_name().unwrap_or_default().to_string_lossy()
                )
            })?;
            if self.last.get(dir) == Some(&files) {
                continue;
            }
            writer::write(dir, &files, self.fs_group)
                .map_err(|e| format!("writing {}: {e}", dir.display()))?;
            self.last.insert(dir.clone(), files);
        }
        Ok(())
    }

    async fn fetch(&mut self, client: &kube::Client, pod: &Pod) -> Result<Fetched, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let mut f = Fetched::default();
        for src in self.projected.iter().flat_map(|(_, p)| &p.sources) {
            match src {
                Source::ConfigMap { name, .. } if !f.config_maps.contains_key(name) => {
                    let got = cms
                        .get_opt(name)
                        .await
                        .map_err(|e| format!("getting configmap \"{name}\": {e}"))?;
                    f.config_maps.insert(name.clone(), got);
                }
                Source::Secret { name, .. } if !f.secrets.contains_key(name) => {
                    let got = secrets
                        .get_opt(name)
                        .await
                        .map_err(|e| format!("getting secret \"{name}\": {e}"))?;
                    f.secrets.insert(name.clone(), got);
                }
                Source::Token { key, .. } if !f.tokens.contains_key(key) => {
                    let token = self.tokens.get(client, pod, key).await?;
                    f.tokens.insert(key.clone(), token);
                }
                _ => {}
            }
        }
        Ok(f)
    }
}
