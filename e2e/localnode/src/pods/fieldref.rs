//! Downward API: values of `fieldRef` and `resourceFieldRef` selectors.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};

use super::quantity;

/// The host IP every pod reports.
pub const HOST_IP: &str = "127.0.0.1";

/// Values the downward API can expose beyond the Pod object itself.
#[derive(Debug, Clone, Copy)]
pub struct Runtime {
    /// The pod's IP.
    pub pod_ip: Ipv4Addr,
}

/// The value of a `fieldRef`. `whole_maps` allows `metadata.labels` and
/// `metadata.annotations` (volumes only), rendered like the kubelet does.
pub fn field(pod: &Pod, rt: Runtime, path: &str, whole_maps: bool) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    if let Some(key) = subscript(path, "metadata.labels") {
        return Ok(labels.get(key).cloned().unwrap_or_default());
    }
    if let Some(key) = subscript(path, "metadata.annotations") {
        return Ok(annotations.get(key).cloned().unwrap_or_default());
    }
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" if whole_maps => format_map(labels),
        "metadata.annotations" if whole_maps => format_map(annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => rt.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => HOST_IP.to_string(),
        _ => return Err(format!("unsupported fieldRef path {path:?}")),
    };
    Ok(value)
}

/// `metadata.labels['key']` → `key`.
fn subscript<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let inner = path
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    let quoted = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\''));
    quoted.or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
}

/// `key="value"` lines in key order, values quoted like Go's `%q`.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a `resourceFieldRef` for `container` (limits default to the node's allocatable).
pub fn resource(container: &Container, sel: &ResourceFieldSelector) -> Result<String, String> {
    let divisor = match &sel.divisor {
        Some(d) => quantity::parse(&d.0)?,
        None => 1_000_000_000,
    };
    let (kind, name) = sel
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", sel.resource))?;
    let res = container.resources.as_ref();
    let set = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource {:?}", sel.resource)),
    };
    let value = match set.and_then(|m| m.get(name)) {
        Some(q) => quantity::parse(&q.0)?,
        None if kind == "limits" => quantity::node_allocatable(name),
        None => 0,
    };
    quantity::divide_ceil(value, divisor)
}

/// The container named in a volume's `resourceFieldRef`.
pub fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                         "labels": {"app": "db", "role": "primary"},
                         "annotations": {"note": "say \"hi\"\n"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa",
                     "containers": [{"name": "c", "resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "250m"}}}]}
        }))
        .unwrap()
    }

    const RT: Runtime = Runtime {
        pod_ip: Ipv4Addr::new(127, 10, 0, 2),
    };

    #[test]
    fn field_paths() {
        let p = pod();
        let f = |path| field(&p, RT, path, false).unwrap();
        assert_eq!(f("metadata.name"), "p");
        assert_eq!(f("metadata.namespace"), "ns");
        assert_eq!(f("metadata.uid"), "u1");
        assert_eq!(f("metadata.labels['app']"), "db");
        assert_eq!(f("metadata.annotations['missing']"), "");
        assert_eq!(f("spec.nodeName"), "n1");
        assert_eq!(f("spec.serviceAccountName"), "sa");
        assert_eq!(f("status.podIP"), "127.10.0.2");
        assert_eq!(f("status.hostIP"), "127.0.0.1");
        assert!(field(&p, RT, "metadata.labels", false).is_err());
        assert!(field(&p, RT, "spec.bogus", false).is_err());
    }

    #[test]
    fn whole_maps_for_volumes() {
        let p = pod();
        assert_eq!(
            field(&p, RT, "metadata.labels", true).unwrap(),
            "app=\"db\"\nrole=\"primary\""
        );
        assert_eq!(
            field(&p, RT, "metadata.annotations", true).unwrap(),
            "note=\"say \\\"hi\\\"\\n\""
        );
    }

    #[test]
    fn resource_fields() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let sel = |r: &str, d: Option<&str>| ResourceFieldSelector {
            resource: r.into(),
            divisor: d.map(|d| Quantity(d.into())),
            container_name: None,
        };
        assert_eq!(
            resource(c, &sel("limits.memory", Some("1Mi"))).unwrap(),
            "1024"
        );
        assert_eq!(
            resource(c, &sel("requests.cpu", Some("1m"))).unwrap(),
            "250"
        );
        assert_eq!(resource(c, &sel("requests.cpu", None)).unwrap(), "1");
        assert_eq!(resource(c, &sel("requests.memory", None)).unwrap(), "0");
        assert_ne!(
            resource(c, &sel("limits.cpu", None)).unwrap(),
            "0",
            "node allocatable"
        );
        assert!(resource(c, &sel("bogus", None)).is_err());
    }
}
