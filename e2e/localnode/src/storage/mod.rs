//! A dynamic PersistentVolume provisioner, the external-provisioner way.
//!
//! Keeps the default StorageClass `local` (provisioner [`plan::PROVISIONER`]) in place,
//! and for every unbound claim of one of our classes creates a directory
//! `<state_dir>/volumes/pvc-<claim uid>` and a hostPath PersistentVolume pre-bound to
//! the claim. kube-controller-manager's persistentvolume-binder then completes the
//! binding; we never bind by hand. Volumes whose claim is gone (Released) are deleted
//! with their directory. Expansion only updates the recorded sizes: a hostPath
//! directory has no size of its own, so nothing is enforced.

pub mod plan;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use tokio::sync::Notify;

use crate::Ctx;
use crate::services::watch;

/// Quiet time after a watch event before reconciling.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Reconcile at least this often (retries of failed actions).
const RESYNC: Duration = Duration::from_secs(15);
/// PVC conditions that describe an expansion in progress.
const RESIZE_CONDITIONS: [&str; 4] = [
    "Resizing",
    "FileSystemResizePending",
    "ControllerResizeError",
    "NodeResizeError",
];

/// The provisioner's view of the cluster and its clients.
struct Provisioner {
    classes: Store<StorageClass>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    class_api: Api<StorageClass>,
    pv_api: Api<PersistentVolume>,
    client: kube::Client,
    dir: PathBuf,
}

/// Runs the provisioner forever.
pub async fn run(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let changed = Arc::new(Notify::new());
    let (classes, _c) = watch::reflect(Api::<StorageClass>::all(client.clone()), changed.clone());
    let (claims, _p) = watch::reflect(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        changed.clone(),
    );
    let (volumes, _v) = watch::reflect(
        Api::<PersistentVolume>::all(client.clone()),
        changed.clone(),
    );
    watch::ready(&classes).await?;
    watch::ready(&claims).await?;
    watch::ready(&volumes).await?;
    let p = Provisioner {
        classes,
        claims,
        volumes,
        class_api: Api::all(client.clone()),
        pv_api: Api::all(client.clone()),
        client,
        dir: ctx.args.state_dir.join("volumes"),
    };
    tracing::info!(dir = %p.dir.display(), "volume provisioner started");
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        p.reconcile().await;
        tokio::select! {
            () = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = resync.tick() => {}
        }
    }
}

impl Provisioner {
    /// One pass: the class, then provisioning, reclaiming and expansion.
    async fn reconcile(&self) {
        if !plan::class_is_current(&self.classes.state()) {
            log_err("ensuring the storage class", self.ensure_class().await);
        }
        let claims = self.claims.state();
        let volumes = self.volumes.state();
        let ours = plan::our_classes(&self.classes.state());
        for claim in claims.iter().filter(|c| plan::wants_volume(c, &ours)) {
            let exists = plan::volume_name(claim)
                .is_some_and(|n| volumes.iter().any(|v| v.metadata.name.as_ref() == Some(&n)));
            if !exists {
                log_err("provisioning a volume", self.provision(claim).await);
            }
        }
        let index = plan::claim_index(&claims);
        for pv in &volumes {
            if let Some(reason) = plan::reclaim_reason(pv, &index) {
                log_err("reclaiming a volume", self.reclaim(pv, reason).await);
            }
        }
        for claim in &claims {
            let name = claim.spec.as_ref().and_then(|s| s.volume_name.as_ref());
            let Some(pv) = volumes
                .iter()
                .find(|v| name.is_some() && v.metadata.name.as_ref() == name)
            else {
                continue;
            };
            if let Some(resize) = plan::resize(claim, pv) {
                log_err("expanding a volume", self.expand(claim, pv, &resize).await);
            }
        }
    }

    /// Creates the StorageClass, or marks the existing one default and expandable.
    async fn ensure_class(&self) -> anyhow::Result<()> {
        let Some(existing) = self.class_api.get_opt(plan::CLASS_NAME).await? else {
            tracing::info!(
                class = plan::CLASS_NAME,
                "creating the default storage class"
            );
            return match self
                .class_api
                .create(&PostParams::default(), &plan::storage_class())
                .await
            {
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                r => r.map(drop).context("creating the storage class"),
            };
        };
        if existing.provisioner != plan::PROVISIONER {
            anyhow::bail!(
                "storage class {} exists with provisioner {}; leaving it alone",
                plan::CLASS_NAME,
                existing.provisioner
            );
        }
        let patch = json!({
            "metadata": { "annotations": { plan::DEFAULT_CLASS: "true" } },
            "allowVolumeExpansion": true,
        });
        self.class_api
            .patch(
                plan::CLASS_NAME,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .context("marking the storage class default")?;
        Ok(())
    }

    /// Creates the directory and the pre-bound volume of a claim.
    async fn provision(&self, claim: &PersistentVolumeClaim) -> anyhow::Result<()> {
        let name = plan::volume_name(claim).context("claim without uid")?;
        let dir = self.dir.join(&name);
        let Some(pv) = plan::build_volume(claim, &dir) else {
            anyhow::bail!("claim {} has no storage request", claim_key(claim));
        };
        create_dir(&dir).await?;
        match self.pv_api.create(&PostParams::default(), &pv).await {
            Ok(_) => {
                tracing::info!(claim = %claim_key(claim), volume = %name, "provisioned volume");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("creating volume {name}")),
        }
    }

    /// Deletes the directory, then the volume object.
    async fn reclaim(&self, pv: &PersistentVolume, reason: &str) -> anyhow::Result<()> {
        let name = pv.metadata.name.clone().context("volume without name")?;
        if reason == "claim gone" && self.claim_exists(pv).await? {
            return Ok(()); // the store was behind
        }
        if let Some(dir) = volume_dir(&self.dir, &name) {
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
            }
        }
        match self.pv_api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting volume {name}")),
        }
        tracing::info!(volume = %name, reason, "reclaimed volume");
        Ok(())
    }

    /// Asks the apiserver whether the volume's claim (same uid) still exists.
    async fn claim_exists(&self, pv: &PersistentVolume) -> anyhow::Result<bool> {
        let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            return Ok(false);
        };
        let (Some(ns), Some(name)) = (&r.namespace, &r.name) else {
            return Ok(false);
        };
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let claim = api
            .get_opt(name)
            .await
            .context("reading the volume's claim")?;
        Ok(claim.is_some_and(|c| c.metadata.uid == r.uid))
    }

    /// Records the new size on the volume, then on the claim's status.
    async fn expand(
        &self,
        claim: &PersistentVolumeClaim,
        pv: &PersistentVolume,
        resize: &plan::Resize,
    ) -> anyhow::Result<()> {
        let pv_name = pv.metadata.name.as_deref().unwrap_or_default();
        if resize.volume {
            let patch = json!({ "spec": { "capacity": { "storage": resize.size } } });
            self.pv_api
                .patch(pv_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("growing volume {pv_name}"))?;
        }
        if resize.claim_status {
            let ns = claim.metadata.namespace.as_deref().unwrap_or_default();
            let name = claim.metadata.name.as_deref().unwrap_or_default();
            let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
            let patch = json!({ "status": claim_status_patch(claim, resize) });
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("recording the new size of claim {ns}/{name}"))?;
        }
        tracing::info!(claim = %claim_key(claim), volume = %pv_name, size = %resize.size.0, "expanded volume");
        Ok(())
    }
}

/// The claim status after a finished expansion: new capacity, resize conditions and
/// per-resource resize statuses cleared.
fn claim_status_patch(claim: &PersistentVolumeClaim, resize: &plan::Resize) -> serde_json::Value {
    let conditions: Vec<_> = claim
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| !RESIZE_CONDITIONS.contains(&c.type_.as_str()))
        .collect();
    json!({
        "capacity": { "storage": resize.size },
        "conditions": conditions,
        "allocatedResourceStatuses": null,
    })
}

/// The directory of one of our volumes; `None` for names we would never have created.
fn volume_dir(root: &Path, name: &str) -> Option<PathBuf> {
    let safe = name.starts_with("pvc-") && !name.contains(['/', '\0']) && name != "pvc-";
    safe.then(|| root.join(name))
}

/// Creates a world-writable volume directory (containers may run as any user).
async fn create_dir(dir: &Path) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .await
        .with_context(|| format!("making {} writable", dir.display()))
}

fn claim_key(claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    )
}

fn log_err(what: &str, r: anyhow::Result<()>) {
    if let Err(e) = r {
        tracing::warn!(error = format!("{e:#}"), "{what} failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn volume_dirs_stay_under_the_root() {
        let root = Path::new("/s/volumes");
        assert_eq!(volume_dir(root, "pvc-1"), Some(root.join("pvc-1")));
        assert_eq!(volume_dir(root, "pvc-../x"), None);
        assert_eq!(volume_dir(root, "data"), None);
        assert_eq!(volume_dir(root, "pvc-"), None);
    }

    #[test]
    fn status_patch_clears_resize_state() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "status": {"phase": "Bound", "conditions": [
                {"type": "Resizing", "status": "True"},
                {"type": "Custom", "status": "True"},
            ]}
        }))
        .unwrap();
        let resize = plan::Resize {
            size: Quantity("2Gi".into()),
            volume: false,
            claim_status: true,
        };
        let patch = claim_status_patch(&claim, &resize);
        assert_eq!(patch["capacity"]["storage"], "2Gi");
        assert_eq!(patch["conditions"].as_array().unwrap().len(), 1);
        assert_eq!(patch["conditions"][0]["type"], "Custom");
        assert!(patch["allocatedResourceStatuses"].is_null());
    }

    #[tokio::test]
    async fn creates_world_writable_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("volumes/pvc-x");
        create_dir(&dir).await.unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o777);
    }
}
