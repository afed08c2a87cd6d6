//! What configMap, secret, downwardAPI and projected volumes contain (pure):
//! the volume's sources turned into files, given the fetched objects.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};

use super::writer::{FileData, Files};
use crate::pods::fieldref;
use crate::sandbox::is_safe_relative;

/// Default file mode of projected files (0644).
pub const DEFAULT_MODE: i32 = 0o644;

/// Identifies a service account token: (audience, expirationSeconds).
pub type TokenKey = (String, i64);

/// One source of a projected volume.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Keys of a ConfigMap.
    ConfigMap {
        name: String,
        items: Option<Vec<KeyToPath>>,
        optional: bool,
    },
    /// Keys of a Secret.
    Secret {
        name: String,
        items: Option<Vec<KeyToPath>>,
        optional: bool,
    },
    /// Downward API files.
    Downward(Vec<DownwardAPIVolumeFile>),
    /// A bound service account token.
    Token { key: TokenKey, path: String },
}

/// A volume whose contents are written by the node.
#[derive(Debug, Clone, PartialEq)]
pub struct Projected {
    /// Mode of files without their own.
    pub default_mode: i32,
    /// Sources in order (later ones win on path conflicts).
    pub sources: Vec<Source>,
}

/// The objects a projection reads.
#[derive(Debug, Default, Clone)]
pub struct Fetched {
    /// ConfigMaps by name (`None`: not found).
    pub config_maps: HashMap<String, Option<ConfigMap>>,
    /// Secrets by name (`None`: not found).
    pub secrets: HashMap<String, Option<Secret>>,
    /// Tokens by key.
    pub tokens: HashMap<TokenKey, String>,
}

/// The projection of a configMap, secret, downwardAPI or projected volume (`None` for other kinds).
pub fn projected(vol: &Volume) -> Option<Result<Projected, String>> {
    if let Some(cm) = &vol.config_map {
        let src = Source::ConfigMap {
            name: cm.name.clone(),
            items: cm.items.clone(),
            optional: cm.optional == Some(true),
        };
        return Some(Ok(Projected {
            default_mode: cm.default_mode.unwrap_or(DEFAULT_MODE),
            sources: vec![src],
        }));
    }
    if let Some(s) = &vol.secret {
        let Some(name) = s.secret_name.clone() else {
            return Some(Err("secret volume without secretName".to_string()));
        };
        let src = Source::Secret {
            name,
            items: s.items.clone(),
            optional: s.optional == Some(true),
        };
        return Some(Ok(Projected {
            default_mode: s.default_mode.unwrap_or(DEFAULT_MODE),
            sources: vec![src],
        }));
    }
    if let Some(d) = &vol.downward_api {
        let src = Source::Downward(d.items.clone().unwrap_or_default());
        return Some(Ok(Projected {
            default_mode: d.default_mode.unwrap_or(DEFAULT_MODE),
            sources: vec![src],
        }));
    }
    let p = vol.projected.as_ref()?;
    let sources = p
        .sources
        .iter()
        .flatten()
        .map(projection_source)
        .collect::<Result<Vec<_>, _>>();
    Some(sources.map(|sources| Projected {
        default_mode: p.default_mode.unwrap_or(DEFAULT_MODE),
        sources,
    }))
}

fn projection_source(s: &k8s_openapi::api::core::v1::VolumeProjection) -> Result<Source, String> {
    if let Some(cm) = &s.config_map {
        return Ok(Source::ConfigMap {
            name: cm.name.clone(),
            items: cm.items.clone(),
            optional: cm.optional == Some(true),
        });
    }
    if let Some(sec) = &s.secret {
        return Ok(Source::Secret {
            name: sec.name.clone(),
            items: sec.items.clone(),
            optional: sec.optional == Some(true),
        });
    }
    if let Some(d) = &s.downward_api {
        return Ok(Source::Downward(d.items.clone().unwrap_or_default()));
    }
    if let Some(t) = &s.service_account_token {
        let key = (
            t.audience.clone().unwrap_or_default(),
            t.expiration_seconds.unwrap_or(3600),
        );
        return Ok(Source::Token {
            key,
            path: t.path.clone(),
        });
    }
    Err("unsupported projected volume source (clusterTrustBundle/podCertificate)".to_string())
}

/// Builds the files of a projected volume.
pub fn project(
    p: &Projected,
    pod: &Pod,
    rt: fieldref::Runtime,
    f: &Fetched,
) -> Result<Files, String> {
    let mut files = Files::new();
    for src in &p.sources {
        match src {
            Source::ConfigMap {
                name,
                items,
                optional,
            } => {
                let data = f
                    .config_maps
                    .get(name)
                    .cloned()
                    .flatten()
                    .map(|cm| config_map_data(&cm));
                keys(
                    "configmap",
                    name,
                    data,
                    items.as_deref(),
                    *optional,
                    p.default_mode,
                    &mut files,
                )?;
            }
            Source::Secret {
                name,
                items,
                optional,
            } => {
                let data = f
                    .secrets
                    .get(name)
                    .cloned()
                    .flatten()
                    .map(|s| secret_data(&s));
                keys(
                    "secret",
                    name,
                    data,
                    items.as_deref(),
                    *optional,
                    p.default_mode,
                    &mut files,
                )?;
            }
            Source::Downward(items) => downward(items, pod, rt, p.default_mode, &mut files)?,
            Source::Token { key, path } => {
                let token = f
                    .tokens
                    .get(key)
                    .ok_or("service account token not available yet")?;
                put(&mut files, path, token.as_bytes().to_vec(), p.default_mode)?;
            }
        }
    }
    Ok(files)
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    out.extend(
        cm.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone())),
    );
    out
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn keys(
    kind: &str,
    name: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: i32,
    files: &mut Files,
) -> Result<(), String> {
    let Some(data) = data else {
        return if optional {
            Ok(())
        } else {
            Err(format!("{kind} \"{name}\" not found"))
        };
    };
    match items {
        None => {
            for (k, v) in data {
                put(files, &k, v, default_mode)?;
            }
        }
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => put(files, &it.path, v.clone(), it.mode.unwrap_or(default_mode))?,
                    None if optional => {}
                    None => return Err(format!("{kind} \"{name}\" has no key {:?}", it.key)),
                }
            }
        }
    }
    Ok(())
}

fn downward(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    rt: fieldref::Runtime,
    default_mode: i32,
    files: &mut Files,
) -> Result<(), String> {
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            fieldref::field(pod, rt, &f.field_path, true)?
        } else if let Some(r) = &it.resource_field_ref {
            let name = r.container_name.as_deref().unwrap_or_default();
            let c = fieldref::find_container(pod, name)
                .ok_or_else(|| format!("downwardAPI {:?}: no container {name:?}", it.path))?;
            fieldref::resource(c, r)?
        } else {
            return Err(format!(
                "downwardAPI {:?}: no fieldRef or resourceFieldRef",
                it.path
            ));
        };
        put(
            files,
            &it.path,
            value.into_bytes(),
            it.mode.unwrap_or(default_mode),
        )?;
    }
    Ok(())
}

fn put(files: &mut Files, path: &str, data: Vec<u8>, mode: i32) -> Result<(), String> {
    if path.is_empty() || path.starts_with("..") || !is_safe_relative(path) {
        return Err(format!("invalid path {path:?} in volume"));
    }
    files.insert(
        path.to_string(),
        FileData {
            data,
            mode: mode as u32,
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}
        }))
        .unwrap()
    }

    fn vol(v: serde_json::Value) -> Volume {
        serde_json::from_value(v).unwrap()
    }

    fn fetched() -> Fetched {
        let cm: ConfigMap =
            serde_json::from_value(json!({"data": {"ca.crt": "CA", "other": "x"}})).unwrap();
        let s: Secret =
            serde_json::from_value(json!({"data": {"user": "YWRtaW4=", "pass": "cHc="}})).unwrap();
        Fetched {
            config_maps: [("kube-root-ca.crt".into(), Some(cm))].into(),
            secrets: [("creds".into(), Some(s)), ("gone".into(), None)].into(),
            tokens: [(("".to_string(), 3607), "TOKEN".to_string())].into(),
        }
    }

    const RT: fieldref::Runtime = fieldref::Runtime {
        pod_ip: std::net::Ipv4Addr::new(127, 10, 0, 9),
    };

    fn text(files: &Files, k: &str) -> (String, u32) {
        let f = files
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing in {files:?}"));
        (String::from_utf8(f.data.clone()).unwrap(), f.mode)
    }

    #[test]
    fn kube_api_access_volume() {
        let v = vol(
            json!({"name": "kube-api-access-x", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}}),
        );
        let p = projected(&v).unwrap().unwrap();
        let files = project(&p, &pod(), RT, &fetched()).unwrap();
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            vec!["ca.crt", "namespace", "token"]
        );
        assert_eq!(text(&files, "token"), ("TOKEN".into(), 0o644));
        assert_eq!(text(&files, "ca.crt").0, "CA");
        assert_eq!(text(&files, "namespace").0, "ns");
    }

    #[test]
    fn secret_items_and_modes() {
        let v = vol(
            json!({"name": "s", "secret": {"secretName": "creds", "defaultMode": 0o400,
            "items": [{"key": "pass", "path": "dir/password", "mode": 0o600}]}}),
        );
        let files = project(&projected(&v).unwrap().unwrap(), &pod(), RT, &fetched()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(text(&files, "dir/password"), ("pw".into(), 0o600));
        let all =
            vol(json!({"name": "s", "secret": {"secretName": "creds", "defaultMode": 0o400}}));
        let files = project(&projected(&all).unwrap().unwrap(), &pod(), RT, &fetched()).unwrap();
        assert_eq!(text(&files, "user"), ("admin".into(), 0o400));
    }

    #[test]
    fn missing_sources() {
        let f = fetched();
        let gone = vol(json!({"name": "s", "secret": {"secretName": "gone"}}));
        assert_eq!(
            project(&projected(&gone).unwrap().unwrap(), &pod(), RT, &f).unwrap_err(),
            "secret \"gone\" not found"
        );
        let opt = vol(json!({"name": "s", "secret": {"secretName": "gone", "optional": true}}));
        assert!(
            project(&projected(&opt).unwrap().unwrap(), &pod(), RT, &f)
                .unwrap()
                .is_empty()
        );
        let badkey = vol(
            json!({"name": "s", "secret": {"secretName": "creds", "items": [{"key": "nokey", "path": "x"}]}}),
        );
        assert!(project(&projected(&badkey).unwrap().unwrap(), &pod(), RT, &f).is_err());
        let escape = vol(
            json!({"name": "s", "secret": {"secretName": "creds", "items": [{"key": "user", "path": "../x"}]}}),
        );
        assert!(project(&projected(&escape).unwrap().unwrap(), &pod(), RT, &f).is_err());
        assert!(projected(&vol(json!({"name": "e", "emptyDir": {}}))).is_none());
    }

    #[test]
    fn downward_api_volume() {
        let v = vol(json!({"name": "d", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}
        ]}}));
        let files = project(
            &projected(&v).unwrap().unwrap(),
            &pod(),
            RT,
            &Fetched::default(),
        )
        .unwrap();
        assert_eq!(text(&files, "labels").0, "a=\"1\"");
        assert_eq!(text(&files, "mem").0, "64");
    }
}
