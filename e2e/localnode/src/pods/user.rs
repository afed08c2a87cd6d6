//! The user a container runs as, from the pod and container security contexts.

use k8s_openapi::api::core::v1::{Container, Pod};

/// uid, primary gid and supplementary groups of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// runAsUser (`None`: root).
    pub uid: Option<u32>,
    /// runAsGroup.
    pub gid: Option<u32>,
    /// fsGroup and supplementalGroups.
    pub groups: Vec<u32>,
}

fn id(v: Option<i64>, what: &str) -> Result<Option<u32>, String> {
    v.map(|n| u32::try_from(n).map_err(|_| format!("invalid {what} {n}")))
        .transpose()
}

/// Resolves the container's user; container settings override the pod's.
pub fn resolve(pod: &Pod, c: &Container) -> Result<User, String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let uid = id(
        csc.and_then(|s| s.run_as_user)
            .or(psc.and_then(|s| s.run_as_user)),
        "runAsUser",
    )?;
    let gid = id(
        csc.and_then(|s| s.run_as_group)
            .or(psc.and_then(|s| s.run_as_group)),
        "runAsGroup",
    )?;
    let non_root = csc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|s| s.run_as_non_root))
        == Some(true);
    if non_root && uid.unwrap_or(0) == 0 {
        return Err(format!(
            "container {:?} has runAsNonRoot and image will run as root (set runAsUser)",
            c.name
        ));
    }
    let mut groups = Vec::new();
    for g in psc.and_then(|s| s.fs_group).into_iter().chain(
        psc.and_then(|s| s.supplemental_groups.clone())
            .into_iter()
            .flatten(),
    ) {
        let g = id(Some(g), "group")?.unwrap_or_default();
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    Ok(User { uid, gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(psc: serde_json::Value, csc: serde_json::Value) -> (Pod, Container) {
        let p: Pod = serde_json::from_value(json!({"spec": {"securityContext": psc,
            "containers": [{"name": "c", "securityContext": csc}]}}))
        .unwrap();
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        (p, c)
    }

    #[test]
    fn container_overrides_pod() {
        let (p, c) = pod(
            json!({"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000, "supplementalGroups": [3000, 2000]}),
            json!({"runAsUser": 999}),
        );
        assert_eq!(
            resolve(&p, &c).unwrap(),
            User {
                uid: Some(999),
                gid: Some(1000),
                groups: vec![2000, 3000]
            }
        );
    }

    #[test]
    fn run_as_non_root() {
        let (p, c) = pod(json!({"runAsNonRoot": true}), json!({}));
        assert!(resolve(&p, &c).is_err());
        let (p, c) = pod(json!({"runAsNonRoot": true}), json!({"runAsUser": 70}));
        assert_eq!(resolve(&p, &c).unwrap().uid, Some(70));
        let (p, c) = pod(json!({}), json!({}));
        assert_eq!(resolve(&p, &c).unwrap(), User::default());
    }
}
