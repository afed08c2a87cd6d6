//! Pod start-up latency on the local cluster, against the same server process
//! started directly in the same run.
//!
//! For each trial it measures, from the moment the Pod is created:
//! * `serving`: the pod's process answers HTTP on its pod IP;
//! * `ready`:   the Pod's Ready condition is True, once with an httpGet
//!   readiness probe (`periodSeconds: 1`; like the kubelet, a first probe that
//!   runs before the server listens costs one period) and once without one.
//!
//! The baseline is `python3 -m http.server` spawned by this process on a
//! loopback address until it answers HTTP. Run with `make bench`.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use ringmaster_e2e::{Cluster, wait_for};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TRIALS: usize = 10;
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(10);

#[tokio::main]
async fn main() {
    let baseline = measure_direct_spawn().await;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("bench-startup").await;
    let pods: Api<Pod> = Api::namespaced(cluster.client().await, ns.name());
    let mut serving = Vec::new();
    let mut ready = Vec::new();
    let mut ready_unprobed = Vec::new();
    for trial in 0..TRIALS {
        let (to_serving, to_ready) = measure_pod(&pods, trial, true).await;
        serving.push(to_serving);
        ready.push(to_ready);
        ready_unprobed.push(measure_pod(&pods, trial, false).await.1);
    }
    let base = summary(&baseline);
    println!("\npod start-up, {TRIALS} trials each (ms)");
    println!(
        "{:<44} {:>8} {:>8} {:>10}",
        "scenario", "p50", "max", "p50 ratio"
    );
    print_row(
        "direct spawn until HTTP answers (baseline)",
        &baseline,
        base.0,
    );
    print_row("pod created -> process answers on pod IP", &serving, base.0);
    print_row(
        "pod created -> Ready (httpGet probe, 1s period)",
        &ready,
        base.0,
    );
    print_row(
        "pod created -> Ready (no readiness probe)",
        &ready_unprobed,
        base.0,
    );
}

fn print_row(name: &str, samples: &[Duration], baseline_p50: f64) {
    let (p50, max) = summary(samples);
    println!(
        "{name:<44} {p50:>8.1} {max:>8.1} {:>9.1}x",
        p50 / baseline_p50
    );
}

/// p50 and max in milliseconds.
fn summary(samples: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() - 1])
}

async fn measure_direct_spawn() -> Vec<Duration> {
    let mut samples = Vec::new();
    for trial in 0..TRIALS {
        let addr = format!("127.0.9.{}:18080", trial + 1);
        let ip = addr.split(':').next().unwrap().to_string();
        let start = Instant::now();
        // The PATH the node gives containers, so both run the same interpreter.
        let mut child = tokio::process::Command::new("python3")
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .args(["-m", "http.server", "18080", "--bind", &ip])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 starts");
        wait_for(
            "the directly spawned server to answer",
            WAIT,
            POLL,
            || async { Ok(answers(&addr).await.then_some(())) },
        )
        .await
        .unwrap();
        samples.push(start.elapsed());
        child.kill().await.expect("server stops");
    }
    samples
}

async fn measure_pod(pods: &Api<Pod>, trial: usize, probed: bool) -> (Duration, Duration) {
    let name = format!(
        "startup-{trial}-{}",
        if probed { "probed" } else { "unprobed" }
    );
    let probe = json!({ "httpGet": { "path": "/", "port": 8080 }, "periodSeconds": 1 });
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web",
                "image": "python:3.11",
                "command": ["python3", "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
                "env": [{ "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } }],
            }]
        }
    });
    if probed {
        pod["spec"]["containers"][0]["readinessProbe"] = probe;
    }
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let start = Instant::now();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let serving = std::sync::Mutex::new(None);
    let (serving_ref, name_ref) = (&serving, &name);
    let ready = wait_for("the pod to be Ready", WAIT, POLL, || async move {
        let pod = pods.get(name_ref).await?;
        let status = pod.status.unwrap_or_default();
        let not_yet_serving = serving_ref.lock().unwrap().is_none();
        if let (true, Some(ip)) = (not_yet_serving, status.pod_ip.as_deref())
            && answers(&format!("{ip}:8080")).await
        {
            *serving_ref.lock().unwrap() = Some(start.elapsed());
        }
        let conditions = status.conditions.unwrap_or_default();
        let is_ready = conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        Ok(is_ready.then(|| start.elapsed()))
    })
    .await
    .unwrap();
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    let serving = serving.into_inner().unwrap();
    (serving.unwrap_or(ready), ready)
}

async fn answers(addr: &str) -> bool {
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        Duration::from_millis(200),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    else {
        return false;
    };
    if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut head)).await,
        Ok(Ok(_))
    ) && head.starts_with(b"HTTP/1.0 200")
}
