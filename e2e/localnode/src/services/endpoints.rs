//! Which listeners the proxy needs and where they forward to.
//!
//! The apiserver rejects loopback addresses in Endpoints and EndpointSlices, so the
//! endpointslice controller cannot publish our pods' 127.x IPs. This module therefore
//! selects endpoints itself, the way that controller would: Pods of the Service's
//! namespace matching its selector, not terminal, not terminating, with an IP, and Ready
//! (any such Pod if `publishNotReadyAddresses`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY_SECONDS: u64 = 10_800;
/// Label linking an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Where one listener forwards its connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backends {
    /// Upstream addresses (`ip:port` or `host:port`), sorted.
    pub endpoints: Vec<String>,
    /// Stick a client IP to its endpoint for this long (`sessionAffinity: ClientIP`).
    pub affinity: Option<Duration>,
    /// `namespace/name:port` of the Service, for logs.
    pub service: String,
}

/// Everything the proxy forwards: listen address → backends.
pub type Desired = BTreeMap<SocketAddr, Backends>;

/// The objects endpoints are computed from.
pub struct World<'a> {
    /// Every Service.
    pub services: &'a [Arc<Service>],
    /// Every Pod.
    pub pods: &'a [Arc<Pod>],
    /// Every EndpointSlice (used for Services without a selector).
    pub slices: &'a [Arc<EndpointSlice>],
    /// `host:port` the `default/kubernetes` Service forwards to.
    pub apiserver: &'a str,
}

/// Computes every listener the proxy should have and its backends.
pub fn desired(world: &World<'_>) -> Desired {
    let mut out = Desired::new();
    for svc in world.services {
        if !is_proxied(svc) {
            continue;
        }
        let ips = cluster_ips(svc);
        for port in tcp_ports(svc) {
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let backends = backends(world, svc, port);
            for ip in &ips {
                out.insert(SocketAddr::new(*ip, number), backends.clone());
            }
        }
    }
    out
}

/// Whether the proxy serves this Service type.
fn is_proxied(svc: &Service) -> bool {
    let type_ = svc
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP");
    matches!(type_, "ClusterIP" | "NodePort" | "LoadBalancer")
}

/// The Service's virtual IPs (none for headless Services).
fn cluster_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let ips = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.clone(),
        _ => spec.cluster_ip.iter().cloned().collect(),
    };
    ips.iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// The Service's TCP ports; other protocols are logged and skipped.
fn tcp_ports(svc: &Service) -> impl Iterator<Item = &ServicePort> {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    ports.iter().filter(move |p| {
        let tcp = is_tcp(p.protocol.as_deref());
        if !tcp {
            tracing::debug!(service = %key(svc), port = p.port, protocol = ?p.protocol, "only TCP is proxied; skipping port");
        }
        tcp
    })
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p == "TCP")
}

fn key(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        svc.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The backends of one Service port.
fn backends(world: &World<'_>, svc: &Service, port: &ServicePort) -> Backends {
    let spec = svc.spec.as_ref();
    let mut endpoints = if is_default_kubernetes(svc) {
        vec![world.apiserver.to_owned()]
    } else if let Some(selector) = spec
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    {
        pod_endpoints(svc, selector, port, world.pods)
    } else {
        slice_endpoints(svc, port, world.slices)
    };
    endpoints.sort();
    endpoints.dedup();
    Backends {
        endpoints,
        affinity: affinity(svc),
        service: format!("{}:{}", key(svc), port.port),
    }
}

/// `default/kubernetes`: the apiserver (its endpoints are not reconciled in this cluster).
fn is_default_kubernetes(svc: &Service) -> bool {
    svc.metadata.namespace.as_deref() == Some("default")
        && svc.metadata.name.as_deref() == Some("kubernetes")
}

/// The session-affinity timeout, if `sessionAffinity: ClientIP`.
fn affinity(svc: &Service) -> Option<Duration> {
    let spec = svc.spec.as_ref()?;
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let seconds = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(DEFAULT_AFFINITY_SECONDS);
    Some(Duration::from_secs(seconds))
}

/// Endpoints of a Service with a selector, from its Pods.
fn pod_endpoints(
    svc: &Service,
    selector: &BTreeMap<String, String>,
    port: &ServicePort,
    pods: &[Arc<Pod>],
) -> Vec<String> {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    pods.iter()
        .filter(|pod| pod.metadata.namespace == svc.metadata.namespace)
        .filter(|pod| matches_selector(pod, selector))
        .filter(|pod| is_serving(pod, publish_not_ready))
        .filter_map(|pod| {
            let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
            let target = target_port(port, pod)?;
            Some(SocketAddr::new(ip, target).to_string())
        })
        .collect()
}

/// Whether every selector label is on the Pod.
fn matches_selector(pod: &Pod, selector: &BTreeMap<String, String>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether the Pod is a ready endpoint: not terminal, not terminating, has an IP and is
/// Ready (or merely running when the Service publishes not-ready addresses).
pub fn is_serving(pod: &Pod, publish_not_ready: bool) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    let terminal = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    let has_ip = status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty());
    if terminal || !has_ip || pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    publish_not_ready
        || status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The Pod port a Service port targets: a number, or a named container port of the same
/// protocol (regular containers first, then sidecar init containers). Defaults to `port`.
pub fn target_port(port: &ServicePort, pod: &Pod) -> Option<u16> {
    let number = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => named_port(pod, name, port.protocol.as_deref())?,
    };
    u16::try_from(number).ok().filter(|n| *n != 0)
}

/// Resolves a named container port of the given protocol.
fn named_port(pod: &Pod, name: &str, protocol: Option<&str>) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let protocol = protocol.unwrap_or("TCP");
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .map(|p| p.container_port)
}

/// Endpoints of a Service without a selector, from its EndpointSlices. Loopback
/// addresses are skipped (the apiserver never accepts them there anyway).
fn slice_endpoints(
    svc: &Service,
    port: &ServicePort,
    slices: &[Arc<EndpointSlice>],
) -> Vec<String> {
    let name = svc.metadata.name.as_deref();
    let mut out = Vec::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        if slice.metadata.namespace != svc.metadata.namespace
            || labels
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                != name
        {
            continue;
        }
        let Some(number) = slice_port(slice, port) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            out.extend(
                endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .filter(|ip| !ip.is_loopback())
                    .map(|ip| SocketAddr::new(ip, number).to_string()),
            );
        }
    }
    out
}

/// The slice's port matching the Service port by name and protocol.
fn slice_port(slice: &EndpointSlice, port: &ServicePort) -> Option<u16> {
    let want = port.name.as_deref().unwrap_or_default();
    slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref().unwrap_or_default() == want && is_tcp(p.protocol.as_deref()))
        .and_then(|p| p.port)
        .and_then(|n| u16::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(v: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn pod(name: &str, ip: &str, ready: bool, labels: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "labels": labels},
                "spec": {"containers": [{"name": "c", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
                ]}]},
                "status": {"phase": "Running", "podIP": ip, "conditions": [
                    {"type": "Ready", "status": if ready { "True" } else { "False" }}
                ]},
            }))
            .unwrap(),
        )
    }

    fn web() -> Arc<Service> {
        service(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"clusterIP": "127.11.0.5", "selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "raw", "port": 81, "targetPort": 9000},
                {"name": "same", "port": 82},
                {"name": "udp", "port": 53, "protocol": "UDP"},
            ]},
        }))
    }

    fn desired_of(
        services: &[Arc<Service>],
        pods: &[Arc<Pod>],
        slices: &[Arc<EndpointSlice>],
    ) -> Desired {
        desired(&World {
            services,
            pods,
            slices,
            apiserver: "127.0.0.1:6443",
        })
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn selects_ready_pods_and_resolves_ports() {
        let app = json!({"app": "web"});
        let mut terminating = (*pod("t", "127.10.0.9", true, app.clone())).clone();
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let pods = vec![
            pod("a", "127.10.0.2", true, app.clone()),
            pod("b", "127.10.0.1", true, app.clone()),
            pod("c", "127.10.0.3", false, app.clone()),
            pod("d", "127.10.0.4", true, json!({"app": "other"})),
            Arc::new(terminating),
        ];
        let d = desired_of(&[web()], &pods, &[]);
        assert_eq!(d.len(), 3, "UDP port skipped: {d:?}");
        assert_eq!(
            d[&addr("127.11.0.5:80")].endpoints,
            ["127.10.0.1:8080", "127.10.0.2:8080"]
        );
        assert_eq!(
            d[&addr("127.11.0.5:81")].endpoints,
            ["127.10.0.1:9000", "127.10.0.2:9000"]
        );
        assert_eq!(
            d[&addr("127.11.0.5:82")].endpoints,
            ["127.10.0.1:82", "127.10.0.2:82"]
        );
        assert_eq!(d[&addr("127.11.0.5:80")].service, "ns/web:80");
    }

    #[test]
    fn publish_not_ready_includes_unready_pods() {
        let mut svc = (*web()).clone();
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let pods = vec![pod("c", "127.10.0.3", false, json!({"app": "web"}))];
        let d = desired_of(&[Arc::new(svc)], &pods, &[]);
        assert_eq!(d[&addr("127.11.0.5:80")].endpoints, ["127.10.0.3:8080"]);
    }

    #[test]
    fn other_namespace_terminal_and_ipless_pods_are_excluded() {
        let app = json!({"app": "web"});
        let mut elsewhere = (*pod("e", "127.10.0.7", true, app.clone())).clone();
        elsewhere.metadata.namespace = Some("other".into());
        let mut done = (*pod("f", "127.10.0.8", true, app.clone())).clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut no_ip = (*pod("g", "", true, app)).clone();
        no_ip.status.as_mut().unwrap().pod_ip = None;
        let pods = [elsewhere, done, no_ip].map(Arc::new);
        let d = desired_of(&[web()], &pods, &[]);
        assert!(d.values().all(|b| b.endpoints.is_empty()), "{d:?}");
    }

    #[test]
    fn named_target_port_must_match_protocol() {
        let p = pod("a", "127.10.0.2", true, json!({}));
        let port = |target: &str, protocol: &str| ServicePort {
            port: 53,
            protocol: Some(protocol.into()),
            target_port: Some(IntOrString::String(target.into())),
            ..ServicePort::default()
        };
        assert_eq!(target_port(&port("dns", "UDP"), &p), Some(5353));
        assert_eq!(target_port(&port("dns", "TCP"), &p), None);
        assert_eq!(target_port(&port("http", "TCP"), &p), Some(8080));
        assert_eq!(target_port(&port("nope", "TCP"), &p), None);
        let sidecar: Pod = serde_json::from_value(json!({"spec": {"containers": [], "initContainers": [
            {"name": "s", "restartPolicy": "Always", "ports": [{"name": "m", "containerPort": 9090}]},
            {"name": "i", "ports": [{"name": "x", "containerPort": 9091}]},
        ]}}))
        .unwrap();
        assert_eq!(target_port(&port("m", "TCP"), &sidecar), Some(9090));
        assert_eq!(target_port(&port("x", "TCP"), &sidecar), None);
    }

    #[test]
    fn kubernetes_service_goes_to_the_apiserver() {
        let svc = service(json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "127.11.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]},
        }));
        let d = desired_of(&[svc], &[], &[]);
        assert_eq!(d[&addr("127.11.0.1:443")].endpoints, ["127.0.0.1:6443"]);
    }

    #[test]
    fn headless_external_name_and_selectorless_services() {
        let headless = service(json!({
            "metadata": {"name": "h", "namespace": "ns"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]},
        }));
        let external = service(json!({
            "metadata": {"name": "x", "namespace": "ns"},
            "spec": {"type": "ExternalName", "externalName": "example.org", "ports": [{"port": 80}]},
        }));
        let manual = service(json!({
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"type": "NodePort", "clusterIP": "127.11.0.9", "sessionAffinity": "ClientIP",
                     "ports": [{"name": "p", "port": 80}]},
        }));
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "m-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "m"}},
            "addressType": "IPv4",
            "ports": [{"name": "p", "port": 8000, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.1.2.3"]},
                {"addresses": ["10.1.2.4"], "conditions": {"ready": false}},
                {"addresses": ["127.0.0.5"]},
            ],
        }))
        .unwrap();
        let d = desired_of(&[headless, external, manual], &[], &[Arc::new(slice)]);
        assert_eq!(d.len(), 1, "{d:?}");
        let b = &d[&addr("127.11.0.9:80")];
        assert_eq!(b.endpoints, ["10.1.2.3:8000"]);
        assert_eq!(b.affinity, Some(Duration::from_secs(10_800)));
    }
}
