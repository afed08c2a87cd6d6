//! Volumes backed by host directories: emptyDir, hostPath and persistent
//! volume claims (resolved to the PersistentVolume's hostPath or local path).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{HostPathVolumeSource, PersistentVolume, PersistentVolumeClaim};
use kube::api::Api;

use super::VolumeError;

/// Creates an emptyDir (mode 0777; with an fsGroup, group-owned and setgid).
pub fn empty_dir(dir: &Path, fs_group: Option<u32>) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir).map_err(|e| VolumeError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| VolumeError::io(dir, e))?;
    if let Some(gid) = fs_group {
        apply_fs_group(dir, gid).map_err(|e| VolumeError::io(dir, e))?;
    }
    Ok(())
}

/// Gives a volume's root directory to the fsGroup: group owner, setgid, group rwx.
pub fn apply_fs_group(dir: &Path, gid: u32) -> std::io::Result<()> {
    nix::unistd::chown(dir, None, Some(nix::unistd::Gid::from_raw(gid)))?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o2070))
}

/// Checks (or creates) a hostPath according to its type.
pub fn host_path(src: &HostPathVolumeSource) -> Result<PathBuf, VolumeError> {
    let path = PathBuf::from(&src.path);
    let meta = std::fs::metadata(&path);
    let fail = |what: &str| {
        Err(VolumeError::NotReady(format!(
            "hostPath {}: {what}",
            src.path
        )))
    };
    match (src.type_.as_deref().unwrap_or(""), meta) {
        ("" | "DirectoryOrCreate", Err(_)) => {
            std::fs::create_dir_all(&path).map_err(|e| VolumeError::io(&path, e))?;
        }
        ("FileOrCreate", Err(_)) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| VolumeError::io(parent, e))?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| VolumeError::io(&path, e))?;
        }
        ("" | "DirectoryOrCreate" | "FileOrCreate", Ok(_)) => {}
        (_, Err(_)) => return fail("does not exist"),
        ("Directory", Ok(m)) if !m.is_dir() => return fail("is not a directory"),
        ("File", Ok(m)) if !m.is_file() => return fail("is not a file"),
        ("Socket", Ok(m)) if !m.file_type().is_socket() => return fail("is not a socket"),
        ("CharDevice", Ok(m)) if !m.file_type().is_char_device() => {
            return fail("is not a character device");
        }
        ("BlockDevice", Ok(m)) if !m.file_type().is_block_device() => {
            return fail("is not a block device");
        }
        ("Directory" | "File" | "Socket" | "CharDevice" | "BlockDevice", Ok(_)) => {}
        (other, _) => {
            return Err(VolumeError::Invalid(format!(
                "hostPath {}: unknown type {other:?}",
                src.path
            )));
        }
    }
    Ok(path)
}

/// The host directory of a bound claim: PVC → spec.volumeName → PV → hostPath/local path.
pub async fn claim_path(
    client: &kube::Client,
    ns: &str,
    claim: &str,
) -> Result<PathBuf, VolumeError> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let api_err =
        |e: kube::Error| VolumeError::NotReady(format!("persistentvolumeclaim \"{claim}\": {e}"));
    let pvc = pvcs.get_opt(claim).await.map_err(api_err)?.ok_or_else(|| {
        VolumeError::NotReady(format!("persistentvolumeclaim \"{claim}\" not found"))
    })?;
    let volume = bound_volume(&pvc).ok_or_else(|| {
        VolumeError::NotReady(format!(
            "persistentvolumeclaim \"{claim}\" is not bound yet"
        ))
    })?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs
        .get_opt(&volume)
        .await
        .map_err(api_err)?
        .ok_or_else(|| {
            VolumeError::NotReady(format!(
                "persistentvolume \"{volume}\" (of claim \"{claim}\") not found"
            ))
        })?;
    let path = pv_path(&pv).ok_or_else(|| {
        VolumeError::Invalid(format!(
            "persistentvolume \"{volume}\" has no hostPath or local path"
        ))
    })?;
    if !path.is_dir() {
        return Err(VolumeError::NotReady(format!(
            "directory {} of persistentvolume \"{volume}\" does not exist",
            path.display()
        )));
    }
    Ok(path)
}

/// The PV name of a bound claim.
pub fn bound_volume(pvc: &PersistentVolumeClaim) -> Option<String> {
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| !n.is_empty());
    name.filter(|_| bound)
}

/// The directory behind a PV.
pub fn pv_path(pv: &PersistentVolume) -> Option<PathBuf> {
    let spec = pv.spec.as_ref()?;
    let p = spec
        .host_path
        .as_ref()
        .map(|h| h.path.clone())
        .or_else(|| spec.local.as_ref().map(|l| l.path.clone()))?;
    Some(PathBuf::from(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_resolution() {
        let pvc: PersistentVolumeClaim = serde_json::from_value(
            json!({"spec": {"volumeName": "pv-1"}, "status": {"phase": "Bound"}}),
        )
        .unwrap();
        assert_eq!(bound_volume(&pvc).as_deref(), Some("pv-1"));
        let pending: PersistentVolumeClaim =
            serde_json::from_value(json!({"spec": {}, "status": {"phase": "Pending"}})).unwrap();
        assert_eq!(bound_volume(&pending), None);
        let pv: PersistentVolume =
            serde_json::from_value(json!({"spec": {"hostPath": {"path": "/data/pv-1"}}})).unwrap();
        assert_eq!(pv_path(&pv), Some(PathBuf::from("/data/pv-1")));
        let local: PersistentVolume =
            serde_json::from_value(json!({"spec": {"local": {"path": "/l"}}})).unwrap();
        assert_eq!(pv_path(&local), Some(PathBuf::from("/l")));
    }

    #[test]
    fn host_path_types() {
        let tmp = tempfile::tempdir().unwrap();
        let src = |p: &Path, t: &str| HostPathVolumeSource {
            path: p.display().to_string(),
            type_: Some(t.into()),
        };
        let d = tmp.path().join("a/b");
        assert!(host_path(&src(&d, "Directory")).is_err());
        assert_eq!(host_path(&src(&d, "DirectoryOrCreate")).unwrap(), d);
        assert!(d.is_dir());
        let f = tmp.path().join("f/x");
        assert!(host_path(&src(&f, "FileOrCreate")).is_ok());
        assert!(f.is_file());
        assert!(host_path(&src(&f, "Directory")).is_err());
        assert!(matches!(
            host_path(&src(&f, "Bogus")),
            Err(VolumeError::Invalid(_))
        ));
    }

    #[test]
    fn empty_dir_with_fs_group() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("e");
        empty_dir(&d, Some(4242)).unwrap();
        let m = std::fs::metadata(&d).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o2777);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(m.gid(), 4242);
    }
}
