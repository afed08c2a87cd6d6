//! A container's environment, built like the kubelet does: `envFrom`, then
//! `env` (with `$(VAR)` expansion against what came before and the service
//! variables), then Kubernetes service links; on top of a clean base of
//! `HOSTNAME`, `PATH` and the image's own variables.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret, Service};
use kube::api::{Api, ListParams};

use super::{expand::expand, fieldref};

/// The Secrets, ConfigMaps and Services an environment is built from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// ConfigMaps by name (`None`: not found).
    pub config_maps: HashMap<String, Option<ConfigMap>>,
    /// Secrets by name (`None`: not found).
    pub secrets: HashMap<String, Option<Secret>>,
    /// Services whose link variables the container gets.
    pub services: Vec<Service>,
}

/// What besides the Pod goes into the environment.
#[derive(Debug, Clone)]
pub struct Base<'a> {
    /// The container's `PATH`.
    pub path: String,
    /// The image's variables.
    pub image_env: &'a BTreeMap<String, String>,
    /// Pod IP etc.
    pub rt: fieldref::Runtime,
}

/// Names of the ConfigMaps and Secrets a container's environment refers to.
pub fn referenced(c: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut cms, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for ef in c.env_from.iter().flatten() {
        cms.extend(ef.config_map_ref.as_ref().map(|r| r.name.clone()));
        secrets.extend(ef.secret_ref.as_ref().map(|r| r.name.clone()));
    }
    for vf in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
        cms.extend(vf.config_map_key_ref.as_ref().map(|r| r.name.clone()));
        secrets.extend(vf.secret_key_ref.as_ref().map(|r| r.name.clone()));
    }
    (cms, secrets)
}

/// Fetches everything [`build`] needs from the API.
pub async fn fetch(client: &kube::Client, pod: &Pod, c: &Container) -> Result<Sources, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (cm_names, secret_names) = referenced(c);
    let mut src = Sources::default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in cm_names {
        let got = cms
            .get_opt(&name)
            .await
            .map_err(|e| format!("getting configmap {name:?}: {e}"))?;
        src.config_maps.insert(name, got);
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in secret_names {
        let got = secrets
            .get_opt(&name)
            .await
            .map_err(|e| format!("getting secret {name:?}: {e}"))?;
        src.secrets.insert(name, got);
    }
    src.services = fetch_services(client, pod).await?;
    Ok(src)
}

async fn fetch_services(client: &kube::Client, pod: &Pod) -> Result<Vec<Service>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut out = Vec::new();
    if links {
        let api: Api<Service> = Api::namespaced(client.clone(), ns);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing services: {e}"))?;
        out.extend(list.items);
    }
    if !links || ns != "default" {
        let api: Api<Service> = Api::namespaced(client.clone(), "default");
        let k = api
            .get_opt("kubernetes")
            .await
            .map_err(|e| format!("getting service kubernetes: {e}"))?;
        out.extend(k);
    }
    Ok(out)
}

/// An ordered environment where setting an existing name replaces it in place.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EnvList(pub Vec<(String, String)>);

impl EnvList {
    /// Sets `name` (replacing an earlier value).
    pub fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Builds the environment (errors are CreateContainerConfigError messages).
pub fn build(pod: &Pod, c: &Container, base: &Base<'_>, src: &Sources) -> Result<EnvList, String> {
    let service_env = service_env(pod, &src.services);
    let mut own = EnvList::default();
    for ef in c.env_from.iter().flatten() {
        env_from(ef, src, &mut own)?;
    }
    for var in c.env.iter().flatten() {
        let value = env_value(pod, c, var, base, src, &own, &service_env)?;
        if let Some(v) = value {
            own.set(&var.name, v);
        }
    }
    let hostname = pod.metadata.name.clone().unwrap_or_default();
    let mut out = EnvList::default();
    out.set("HOSTNAME", hostname);
    out.set("PATH", base.path.clone());
    for (k, v) in base.image_env {
        out.set(k, v.clone());
    }
    for (k, v) in &own.0 {
        out.set(k, v.clone());
    }
    for (k, v) in &service_env.0 {
        if !own.contains(k) {
            out.set(k, v.clone());
        }
    }
    Ok(out)
}

fn env_from(
    ef: &k8s_openapi::api::core::v1::EnvFromSource,
    src: &Sources,
    out: &mut EnvList,
) -> Result<(), String> {
    let prefix = ef.prefix.as_deref().unwrap_or("");
    let mut put = |k: &str, v: String| {
        if !k.is_empty() && !k.contains('=') {
            out.set(&format!("{prefix}{k}"), v);
        }
    };
    if let Some(r) = &ef.config_map_ref {
        match src.config_maps.get(&r.name).cloned().flatten() {
            Some(cm) => cm
                .data
                .iter()
                .flatten()
                .for_each(|(k, v)| put(k, v.clone())),
            None if r.optional == Some(true) => {}
            None => return Err(format!("configmap \"{}\" not found", r.name)),
        }
    }
    if let Some(r) = &ef.secret_ref {
        match src.secrets.get(&r.name).cloned().flatten() {
            Some(s) => secret_data(&s).into_iter().for_each(|(k, v)| put(&k, v)),
            None if r.optional == Some(true) => {}
            None => return Err(format!("secret \"{}\" not found", r.name)),
        }
    }
    Ok(())
}

fn secret_data(s: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The value of one `env` entry (`None`: optional and absent).
fn env_value(
    pod: &Pod,
    c: &Container,
    var: &EnvVar,
    base: &Base<'_>,
    src: &Sources,
    own: &EnvList,
    service_env: &EnvList,
) -> Result<Option<String>, String> {
    let Some(from) = &var.value_from else {
        let raw = var.value.as_deref().unwrap_or("");
        let lookup = |n: &str| {
            own.get(n)
                .or_else(|| service_env.get(n))
                .map(str::to_string)
        };
        return Ok(Some(expand(raw, lookup)));
    };
    if let Some(f) = &from.field_ref {
        return fieldref::field(pod, base.rt, &f.field_path, false).map(Some);
    }
    if let Some(r) = &from.resource_field_ref {
        let target = match r.container_name.as_deref() {
            Some(name) if name != c.name => fieldref::find_container(pod, name)
                .ok_or_else(|| format!("resourceFieldRef: no container {name:?}"))?,
            _ => c,
        };
        return fieldref::resource(target, r).map(Some);
    }
    if let Some(r) = &from.config_map_key_ref {
        let cm = src.config_maps.get(&r.name).cloned().flatten();
        let data = cm.and_then(|cm| cm.data);
        return key_value(data.as_ref(), &r.name, &r.key, r.optional, "configmap");
    }
    if let Some(r) = &from.secret_key_ref {
        let data = src
            .secrets
            .get(&r.name)
            .cloned()
            .flatten()
            .map(|s| secret_data(&s));
        return key_value(data.as_ref(), &r.name, &r.key, r.optional, "secret");
    }
    Err(format!("env {:?}: unsupported valueFrom", var.name))
}

fn key_value(
    data: Option<&BTreeMap<String, String>>,
    name: &str,
    key: &str,
    optional: Option<bool>,
    kind: &str,
) -> Result<Option<String>, String> {
    let optional = optional == Some(true);
    match data {
        None if optional => Ok(None),
        None => Err(format!("{kind} \"{name}\" not found")),
        Some(d) => match d.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(format!("couldn't find key {key} in {kind} \"{name}\"")),
        },
    }
}

/// Service link variables (the kubelet's `getServiceEnvVarMap` + `FromServices`).
pub fn service_env(pod: &Pod, services: &[Service]) -> EnvList {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for svc in services.iter().filter(|s| cluster_ip(s).is_some()) {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let svc_ns = svc.metadata.namespace.as_deref().unwrap_or("");
        if svc_ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(svc);
        } else if svc_ns == ns && links {
            chosen.insert(name, svc);
        }
    }
    let mut out = EnvList::default();
    for (name, svc) in chosen {
        service_vars(&name, svc, &mut out);
    }
    out
}

fn cluster_ip(s: &Service) -> Option<&str> {
    let ip = s.spec.as_ref()?.cluster_ip.as_deref()?;
    (!ip.is_empty() && ip != "None").then_some(ip)
}

fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

fn service_vars(name: &str, svc: &Service, out: &mut EnvList) {
    let (Some(ip), Some(ports)) = (
        cluster_ip(svc),
        svc.spec.as_ref().and_then(|s| s.ports.as_ref()),
    ) else {
        return;
    };
    let Some(first) = ports.first() else { return };
    let prefix = env_name(name);
    out.set(&format!("{prefix}_SERVICE_HOST"), ip.to_string());
    out.set(&format!("{prefix}_SERVICE_PORT"), first.port.to_string());
    for p in ports {
        if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.set(
                &format!("{prefix}_SERVICE_PORT_{}", env_name(pn)),
                p.port.to_string(),
            );
        }
    }
    for (i, p) in ports.iter().enumerate() {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        let lower = proto.to_lowercase();
        let url = format!("{lower}://{ip}:{}", p.port);
        if i == 0 {
            out.set(&format!("{prefix}_PORT"), url.clone());
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.set(&pp, url);
        out.set(&format!("{pp}_PROTO"), lower);
        out.set(&format!("{pp}_PORT"), p.port.to_string());
        out.set(&format!("{pp}_ADDR"), ip.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::Ipv4Addr;

    fn pod(links: Option<bool>, container: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "ns", "uid": "u", "labels": {"app": "web"}},
            "spec": {"enableServiceLinks": links, "containers": [container]}
        }))
        .unwrap()
    }

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .unwrap()
    }

    fn services() -> Vec<Service> {
        vec![
            svc(
                "default",
                "kubernetes",
                "127.11.0.1",
                json!([{"name": "https", "port": 443}]),
            ),
            svc(
                "ns",
                "my-db",
                "127.11.0.7",
                json!([{"name": "pg", "port": 5432}, {"name": "metrics", "port": 9187, "protocol": "TCP"}]),
            ),
            svc("ns", "headless", "None", json!([{"port": 80}])),
            svc("other", "x", "127.11.0.9", json!([{"port": 80}])),
        ]
    }

    fn sources() -> Sources {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "cfg"}, "data": {"MODE": "fast", "bad=key": "x"}}),
        )
        .unwrap();
        let secret: Secret = serde_json::from_value(
            json!({"metadata": {"name": "creds"}, "data": {"password": "czNjcjN0"}}),
        )
        .unwrap();
        Sources {
            config_maps: [("cfg".to_string(), Some(cm)), ("gone".to_string(), None)].into(),
            secrets: [("creds".to_string(), Some(secret))].into(),
            services: services(),
        }
    }

    fn base(env: &BTreeMap<String, String>) -> Base<'_> {
        Base {
            path: "/img/bin:/usr/bin".into(),
            image_env: env,
            rt: fieldref::Runtime {
                pod_ip: Ipv4Addr::new(127, 10, 0, 5),
            },
        }
    }

    #[test]
    fn builds_kubernetes_environment() {
        let image_env = BTreeMap::from([("LANG".to_string(), "C.UTF-8".to_string())]);
        let c = json!({"name": "c",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"configMapRef": {"name": "gone", "optional": true}}],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "URL", "value": "http://$(POD_IP):$(MY_DB_SERVICE_PORT)/$(NOPE)/$$(POD_IP)"},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nokey", "optional": true}}},
            {"name": "LANG", "value": "en"},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}
        ]});
        let p = pod(None, c);
        let env = build(
            &p,
            &p.spec.as_ref().unwrap().containers[0],
            &base(&image_env),
            &sources(),
        )
        .unwrap();
        let get = |k| {
            env.get(k)
                .unwrap_or_else(|| panic!("{k} missing in {env:?}"))
        };
        assert_eq!(get("HOSTNAME"), "web-0");
        assert_eq!(get("PATH"), "/img/bin:/usr/bin");
        assert_eq!(get("CFG_MODE"), "fast");
        assert!(env.get("CFG_bad=key").is_none());
        assert_eq!(get("URL"), "http://127.10.0.5:5432/$(NOPE)/$(POD_IP)");
        assert_eq!(get("PASS"), "s3cr3t");
        assert!(env.get("OPT").is_none());
        assert_eq!(get("LANG"), "en");
        assert_eq!(get("APP"), "web");
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), "127.11.0.1");
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), "443");
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), "443");
        assert_eq!(get("KUBERNETES_PORT"), "tcp://127.11.0.1:443");
        assert_eq!(get("MY_DB_SERVICE_PORT_METRICS"), "9187");
        assert_eq!(get("MY_DB_PORT_9187_TCP_ADDR"), "127.11.0.7");
        assert_eq!(get("MY_DB_PORT_5432_TCP"), "tcp://127.11.0.7:5432");
        assert_eq!(get("MY_DB_PORT_5432_TCP_PROTO"), "tcp");
        assert!(env.get("HEADLESS_SERVICE_HOST").is_none());
        assert!(env.get("X_SERVICE_HOST").is_none());
    }

    #[test]
    fn service_links_can_be_disabled_but_kubernetes_stays() {
        let p = pod(Some(false), json!({"name": "c"}));
        let env = service_env(&p, &services());
        assert!(env.get("KUBERNETES_SERVICE_HOST").is_some());
        assert!(env.get("MY_DB_SERVICE_HOST").is_none());
    }

    #[test]
    fn missing_references_are_config_errors() {
        let img = BTreeMap::new();
        let cases = [
            (
                json!({"name": "c", "envFrom": [{"secretRef": {"name": "nope"}}]}),
                "secret \"nope\" not found",
            ),
            (
                json!({"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]}),
                "couldn't find key k in configmap \"cfg\"",
            ),
            (
                json!({"name": "c", "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}]}),
                "unsupported fieldRef path \"spec.nope\"",
            ),
        ];
        for (c, want) in cases {
            let p = pod(None, c);
            let err = build(
                &p,
                &p.spec.as_ref().unwrap().containers[0],
                &base(&img),
                &sources(),
            )
            .unwrap_err();
            assert_eq!(err, want);
        }
    }
}
