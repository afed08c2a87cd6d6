//! The process-backed node against the real control plane: Pods run as local
//! processes with loopback IPs, probes drive readiness, Services forward on
//! their virtual IPs, restarts, deletion, garbage collection, persistent
//! volumes, Secret/ConfigMap injection, `kubectl` and `helm`.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use ringmaster_e2e::{Cluster, wait_for};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("fixture matches the API type")
}

/// A Deployment whose Pod serves HTTP on `$POD_IP:8080` with an httpGet
/// readiness probe, and a Service in front of it.
fn web_deployment(name: &str) -> (Deployment, Service) {
    let deployment = from_json(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "web",
                        "image": "python:3.11",
                        "command": ["python3", "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
                        "env": [{ "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } }],
                        "ports": [{ "name": "http", "containerPort": 8080 }],
                        "readinessProbe": { "httpGet": { "path": "/", "port": "http" }, "periodSeconds": 1 }
                    }]
                }
            }
        }
    }));
    let service = from_json(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name },
        "spec": {
            "selector": { "app": name },
            "ports": [{ "name": "http", "port": 80, "targetPort": "http" }]
        }
    }));
    (deployment, service)
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

fn restart_count(pod: &Pod) -> i32 {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    statuses
        .and_then(|cs| cs.first())
        .map_or(0, |c| c.restart_count)
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Waits for exactly one ready, non-terminating Pod matching `selector`,
/// other than the one with `not_uid`.
async fn ready_pod(pods: &Api<Pod>, selector: &str, not_uid: &str) -> Pod {
    let what = format!("one Ready pod with labels {selector}");
    wait_for(&what, WAIT, POLL, || async {
        let list = pods.list(&ListParams::default().labels(selector)).await?;
        let live: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && uid(p) != not_uid)
            .collect();
        Ok(match live.as_slice() {
            [pod] if is_ready(pod) => Some(pod.clone()),
            _ => None,
        })
    })
    .await
    .expect("pod becomes ready")
}

/// Pids of live processes whose command line contains every one of `needles`.
fn pids_matching(needles: &[&str]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            needles.iter().all(|n| cmdline.contains(n))
        })
        .collect()
}

/// Sends `GET /` to `addr` and returns the whole response.
async fn http_get(addr: &str) -> std::io::Result<String> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other(format!("connect to {addr} timed out")))??;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .map_err(|_| std::io::Error::other(format!("reading from {addr} timed out")))??;
    Ok(response)
}

async fn service_address(services: &Api<Service>, name: &str, port: u16) -> String {
    let service = services.get(name).await.expect("service exists");
    let ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("service has a cluster IP");
    assert!(
        ip.starts_with("127."),
        "service VIP {ip} is in the loopback service range"
    );
    format!("{ip}:{port}")
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_pod_runs_restarts_is_replaced_and_collected() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("web").await;
    let client = cluster.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let (deployment, service) = web_deployment("web");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    // The Pod becomes Ready with a loopback pod IP, through its own probe.
    let pod = ready_pod(&pods, "app=web", "").await;
    let ip = pod_ip(&pod);
    assert!(ip.starts_with("127."), "pod IP {ip} is a loopback address");
    assert_eq!(
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .as_deref(),
        Some(cluster.node_name())
    );

    // Reachable directly and through the Service's virtual IP.
    let direct = http_get(&format!("{ip}:8080"))
        .await
        .expect("pod answers on its IP");
    assert!(
        direct.starts_with("HTTP/1.0 200"),
        "direct answer: {direct}"
    );
    let vip = service_address(&services, "web", 80).await;
    let proxied = wait_for("the Service VIP to answer 200", WAIT, POLL, || async {
        Ok(http_get(&vip)
            .await
            .ok()
            .filter(|r| r.starts_with("HTTP/1.0 200")))
    })
    .await
    .unwrap();
    assert!(
        proxied.contains("Directory listing"),
        "proxied answer: {proxied}"
    );

    // `kubectl get pods -o wide` shows the pod with its IP and node.
    let wide = cluster.kubectl(&["get", "pods", "-o", "wide", "-n", ns.name()]);
    assert!(
        wide.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&wide.stderr)
    );
    let wide = String::from_utf8_lossy(&wide.stdout).to_string();
    assert!(
        wide.contains(&ip) && wide.contains(cluster.node_name()),
        "kubectl get pods -o wide:\n{wide}"
    );

    // Killing the process restarts the container and counts the restart.
    let pids = pids_matching(&["http.server", &ip]);
    assert_eq!(
        pids.len(),
        1,
        "exactly one server process for {ip}: {pids:?}"
    );
    nix_kill(pids[0], 9);
    let pod_uid = uid(&pod);
    let restarted = wait_for(
        "the killed container to restart and become Ready",
        WAIT,
        POLL,
        || async {
            let pod = pods.get(pod.metadata.name.as_deref().unwrap()).await?;
            Ok((restart_count(&pod) >= 1 && is_ready(&pod)).then_some(pod))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        uid(&restarted),
        pod_uid,
        "the same pod was restarted in place"
    );
    let new_pids = pids_matching(&["http.server", &ip]);
    assert_eq!(new_pids.len(), 1, "one server process after the restart");
    assert_ne!(new_pids[0], pids[0], "a new process runs");

    // Deleting the Pod stops its process; the ReplicaSet's replacement runs.
    let name = pod.metadata.name.clone().unwrap();
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    let replacement = ready_pod(&pods, "app=web", &pod_uid).await;
    wait_for("the deleted pod's process to exit", WAIT, POLL, || async {
        Ok(pids_matching(&["http.server", &ip])
            .is_empty()
            .then_some(()))
    })
    .await
    .unwrap();
    wait_for(
        "the deleted pod object to disappear",
        WAIT,
        POLL,
        || async { Ok(pods.get_opt(&name).await?.is_none().then_some(())) },
    )
    .await
    .unwrap();
    let new_ip = pod_ip(&replacement);
    assert_eq!(
        pids_matching(&["http.server", &new_ip]).len(),
        1,
        "the replacement's process runs"
    );

    // Deleting the Deployment lets the garbage collector remove its Pods.
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    wait_for(
        "the garbage collector to delete the Deployment's pods",
        WAIT,
        POLL,
        || async {
            Ok(pods
                .list(&ListParams::default().labels("app=web"))
                .await?
                .items
                .is_empty()
                .then_some(()))
        },
    )
    .await
    .unwrap();
    assert!(
        pids_matching(&["http.server", &new_ip]).is_empty(),
        "no process is left behind"
    );
}

fn nix_kill(pid: i32, signal: i32) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A Pod that runs `script` in `sh` once, with the given volumes and mounts.
fn one_shot_pod(name: &str, script: &str, extra: serde_json::Value) -> Pod {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [{ "name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script] }]
        }
    });
    merge(&mut pod["spec"], &extra);
    from_json(pod)
}

fn merge(target: &mut serde_json::Value, extra: &serde_json::Value) {
    if let (Some(target), Some(extra)) = (target.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            if key == "containers" {
                merge(&mut target["containers"][0], &value[0]);
            } else if target.get(key).is_some_and(|v| v.is_object()) {
                merge(target.get_mut(key).unwrap(), value);
            } else {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

async fn finished_phase(pods: &Api<Pod>, name: &str) -> String {
    let what = format!("pod {name} to finish");
    wait_for(&what, WAIT, POLL, || async {
        let pod = pods.get(name).await?;
        let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
        Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
    })
    .await
    .unwrap()
}

fn logs(cluster: &Cluster, ns: &str, pod: &str) -> String {
    let out = cluster.kubectl(&["logs", "-n", ns, pod]);
    assert!(
        out.status.success(),
        "kubectl logs {pod}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_volume_claim_outlives_its_pod() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("pvc").await;
    let client = cluster.client().await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let claim: PersistentVolumeClaim = from_json(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": { "name": "data" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } }
    }));
    claims.create(&PostParams::default(), &claim).await.unwrap();
    wait_for("the claim to be Bound", WAIT, POLL, || async {
        let claim = claims.get("data").await?;
        Ok((claim.status.and_then(|s| s.phase).as_deref() == Some("Bound")).then_some(()))
    })
    .await
    .unwrap();

    let token = format!("written-by-{}", ns.name());
    let volume = json!({
        "volumes": [{ "name": "data", "persistentVolumeClaim": { "claimName": "data" } }],
        "containers": [{ "volumeMounts": [{ "name": "data", "mountPath": "/data" }] }]
    });
    let writer = one_shot_pod(
        "writer",
        &format!("echo {token} > /data/file && echo wrote"),
        volume.clone(),
    );
    pods.create(&PostParams::default(), &writer).await.unwrap();
    assert_eq!(finished_phase(&pods, "writer").await, "Succeeded");
    pods.delete("writer", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the writer pod to be gone", WAIT, POLL, || async {
        Ok(pods.get_opt("writer").await?.is_none().then_some(()))
    })
    .await
    .unwrap();

    let reader = one_shot_pod("reader", "cat /data/file", volume);
    pods.create(&PostParams::default(), &reader).await.unwrap();
    assert_eq!(finished_phase(&pods, "reader").await, "Succeeded");
    assert_eq!(logs(cluster, ns.name(), "reader").trim(), token);
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_env_and_config_map_volume_reach_the_process() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("inject").await;
    let client = cluster.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let secret: Secret = from_json(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "creds" },
        "stringData": { "password": "s3cret-value" }
    }));
    let config_map: ConfigMap = from_json(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings" },
        "data": { "greeting.txt": "hello from a config map" }
    }));
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    config_maps
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();

    let pod = one_shot_pod(
        "show",
        "echo \"password=$PASSWORD\"; cat /etc/settings/greeting.txt; echo; ls /var/run/secrets/kubernetes.io/serviceaccount",
        json!({
            "volumes": [{ "name": "settings", "configMap": { "name": "settings" } }],
            "containers": [{
                "env": [{ "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "password" } } }],
                "volumeMounts": [{ "name": "settings", "mountPath": "/etc/settings", "readOnly": true }]
            }]
        }),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(finished_phase(&pods, "show").await, "Succeeded");
    let output = logs(cluster, ns.name(), "show");
    assert!(
        output.contains("password=s3cret-value"),
        "secret env missing:\n{output}"
    );
    assert!(
        output.contains("hello from a config map"),
        "config map file missing:\n{output}"
    );
    assert!(
        output.contains("token") && output.contains("ca.crt"),
        "service account volume missing:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_installs_a_chart_that_serves() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("helm").await;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/charts/tiny");
    let lint = cluster.helm(&["lint", chart]);
    assert!(
        lint.status.success(),
        "helm lint: {}",
        String::from_utf8_lossy(&lint.stdout)
    );
    let install = cluster.helm(&[
        "install",
        "tiny",
        chart,
        "-n",
        ns.name(),
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert!(
        install.status.success(),
        "helm install failed:\n{}\n{}",
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr)
    );
    let list = cluster.helm(&["list", "-n", ns.name()]);
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        list.contains("tiny") && list.contains("deployed"),
        "helm list:\n{list}"
    );

    let services: Api<Service> = Api::namespaced(cluster.client().await, ns.name());
    let vip = service_address(&services, "tiny-web", 80).await;
    let body = wait_for(
        "the chart's Service to serve its ConfigMap",
        WAIT,
        POLL,
        || async {
            Ok(http_get(&vip)
                .await
                .ok()
                .filter(|r| r.starts_with("HTTP/1.0 200")))
        },
    )
    .await
    .unwrap();
    assert!(
        body.ends_with("hello from tiny"),
        "the chart's page is served from its ConfigMap volume:\n{body}"
    );

    let uninstall = cluster.helm(&["uninstall", "tiny", "-n", ns.name(), "--wait"]);
    assert!(
        uninstall.status.success(),
        "helm uninstall: {}",
        String::from_utf8_lossy(&uninstall.stderr)
    );
}
