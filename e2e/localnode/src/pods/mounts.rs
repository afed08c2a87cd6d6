//! A container's bind mounts: the image map's files, its volumeMounts and the
//! pod's managed /etc/hosts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::env::EnvList;
use super::expand::expand;
use super::volumes::VolumePath;
use crate::config::ImageRule;
use crate::sandbox::{Mount, is_safe_relative};

/// The managed hosts file of a pod (like the kubelet's).
pub fn hosts_file(pod: &Pod, ip: std::net::Ipv4Addr) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file (localnode).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    s.push_str(&format!("{ip}\t{}\n", hostname(pod)));
    for alias in pod
        .spec
        .iter()
        .flat_map(|sp| sp.host_aliases.iter().flatten())
    {
        let names = alias.hostnames.clone().unwrap_or_default().join("\t");
        s.push_str(&format!(
            "\n# Entries added by HostAliases.\n{}\t{names}\n",
            alias.ip
        ));
    }
    s
}

/// The pod's hostname (spec.hostname or the pod name, at most 63 characters).
pub fn hostname(pod: &Pod) -> String {
    let h = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    h.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// The mounts of a container, in order: image files, the hosts file, volumes.
pub fn container_mounts(
    c: &Container,
    vols: &HashMap<String, VolumePath>,
    env: &EnvList,
    rule: &ImageRule,
    hosts: &Path,
) -> Result<Vec<Mount>, String> {
    let mut out: Vec<Mount> = rule
        .files
        .iter()
        .map(|(inside, host)| Mount {
            source: host.clone(),
            target: inside.clone(),
            read_only: true,
        })
        .collect();
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    if !mounts
        .iter()
        .any(|m| Path::new(&m.mount_path) == Path::new("/etc/hosts"))
    {
        out.push(Mount {
            source: hosts.to_path_buf(),
            target: "/etc/hosts".into(),
            read_only: false,
        });
    }
    for vm in &mounts {
        let vol = vols.get(&vm.name).ok_or_else(|| {
            format!(
                "volumeMount {:?}: the pod has no volume {:?}",
                vm.mount_path, vm.name
            )
        })?;
        if !vm.mount_path.starts_with('/') {
            return Err(format!(
                "volumeMount {:?}: mountPath must be absolute",
                vm.mount_path
            ));
        }
        let sub = match (&vm.sub_path, &vm.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => s.clone(),
            (_, Some(e)) if !e.is_empty() => expand(e, |n| env.get(n).map(str::to_string)),
            _ => String::new(),
        };
        let source = sub_path_source(&vol.host, &sub, vol.read_only)
            .map_err(|e| format!("volumeMount {:?}: {e}", vm.mount_path))?;
        out.push(Mount {
            source,
            target: PathBuf::from(&vm.mount_path),
            read_only: vm.read_only == Some(true) || vol.read_only,
        });
    }
    Ok(out)
}

/// The host path of a (sub)path of a volume; a missing subPath directory is
/// created in writable volumes, like the kubelet does.
fn sub_path_source(base: &Path, sub: &str, read_only: bool) -> Result<PathBuf, String> {
    if sub.is_empty() {
        return Ok(base.to_path_buf());
    }
    if !is_safe_relative(sub) {
        return Err(format!(
            "subPath {sub:?} must be a relative path without '..'"
        ));
    }
    let source = base.join(sub);
    if std::fs::symlink_metadata(&source).is_err() {
        if read_only {
            return Err(format!("subPath {sub:?} does not exist in the volume"));
        }
        std::fs::create_dir_all(&source).map_err(|e| format!("creating subPath {sub:?}: {e}"))?;
    }
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_mounts() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let vols = HashMap::from([
            (
                "data".to_string(),
                VolumePath {
                    host: data.clone(),
                    read_only: false,
                },
            ),
            (
                "cfg".to_string(),
                VolumePath {
                    host: tmp.path().join("cfg"),
                    read_only: true,
                },
            ),
        ]);
        let rule = crate::config::ImageMap::parse(
            "images: [{match: x, files: {/usr/bin/t: /opt/t}}]",
            |_| None,
        )
        .unwrap();
        let c: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/db", "subPathExpr": "$(POD)"},
            {"name": "cfg", "mountPath": "/etc/cfg"},
            {"name": "data", "mountPath": "/ro", "readOnly": true}
        ]}))
        .unwrap();
        let env = EnvList(vec![("POD".into(), "db-0".into())]);
        let m =
            container_mounts(&c, &vols, &env, rule.resolve("x").unwrap(), Path::new("/h")).unwrap();
        let targets: Vec<_> = m.iter().map(|m| m.target.display().to_string()).collect();
        assert_eq!(
            targets,
            vec!["/usr/bin/t", "/etc/hosts", "/var/lib/db", "/etc/cfg", "/ro"]
        );
        assert_eq!(m[2].source, data.join("db-0"));
        assert!(data.join("db-0").is_dir(), "subPath created");
        assert!(m[3].read_only && m[4].read_only && !m[2].read_only);
    }

    #[test]
    fn rejects_bad_mounts() {
        let vols = HashMap::from([(
            "v".to_string(),
            VolumePath {
                host: "/nonexistent".into(),
                read_only: true,
            },
        )]);
        let rule = crate::config::ImageMap::parse("images: [{match: x}]", |_| None).unwrap();
        let rule = rule.resolve("x").unwrap();
        let env = EnvList::default();
        for vm in [
            json!({"name": "nope", "mountPath": "/a"}),
            json!({"name": "v", "mountPath": "/a", "subPath": "../x"}),
            json!({"name": "v", "mountPath": "rel"}),
            json!({"name": "v", "mountPath": "/a", "subPath": "missing"}),
        ] {
            let c: Container =
                serde_json::from_value(json!({"name": "c", "volumeMounts": [vm]})).unwrap();
            assert!(
                container_mounts(&c, &vols, &env, rule, Path::new("/h")).is_err(),
                "{vm}"
            );
        }
    }

    #[test]
    fn hosts_and_hostname() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "db-0"},
            "spec": {"containers": [], "hostAliases": [{"ip": "127.0.0.9", "hostnames": ["a", "b"]}]}})).unwrap();
        let h = hosts_file(&p, "127.10.0.3".parse().unwrap());
        assert!(h.contains("127.10.0.3\tdb-0\n"));
        assert!(h.contains("127.0.0.9\ta\tb\n"));
        assert_eq!(hostname(&p), "db-0");
    }
}
