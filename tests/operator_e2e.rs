//! The operator as users run it: installed by its own Helm chart and running as a
//! Pod on the local cluster, with the example clusters applied as written.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::load::{self, Writer};
use common::shards::ShardUnderTest;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerState, ContainerStatus, PersistentVolumeClaim, Pod, Secret, Service,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use nix::sys::signal::Signal;
use ringmaster::api::shard::{ChangeKind, ChangePhase};
use ringmaster::api::{Shard, ShardedCluster};
use ringmaster_e2e::{Cluster, TestNamespace, wait_for};
use serde_json::json;

const READY_WAIT: Duration = Duration::from_secs(300);
const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn ok(output: std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Installs the chart as release `release` in `op_ns`, watching `watched`.
fn install_operator(cluster: &Cluster, release: &str, op_ns: &str, watched: &str, replicas: u32) {
    install_operator_with(cluster, release, op_ns, watched, replicas, &[]);
}

/// [`install_operator`] with more `helm install` arguments.
fn install_operator_with(
    cluster: &Cluster,
    release: &str,
    op_ns: &str,
    watched: &str,
    replicas: u32,
    extra: &[&str],
) {
    let chart = repo("charts/ringmaster");
    let watch = format!("watchNamespaces={{{watched}}}");
    let replicas = format!("replicas={replicas}");
    let mut args = vec![
        "install",
        release,
        &chart,
        "-n",
        op_ns,
        // The local process-backed node runs every Pod in one network namespace (the
        // host's): the chart's default 0.0.0.0:8080 would make the operator Pods (and
        // anything else on 8080) collide, so each listens on its own Pod IP.
        "--set-string",
        "httpAddress=$(POD_IP):8080",
        "--set",
        &watch,
        "--set",
        &replicas,
        "--set",
        "logFormat=text",
        "--wait",
        "--timeout",
        "120s",
    ];
    args.extend_from_slice(extra);
    ok(cluster.helm(&args), &format!("helm install {release}"));
}

fn apply(cluster: &Cluster, ns: &str, file: &str) {
    ok(
        cluster.kubectl(&["apply", "-n", ns, "-f", &repo(file)]),
        &format!("kubectl apply {file}"),
    );
}

fn condition_true(conditions: &[ringmaster::api::Condition], kind: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == kind && c.status == "True")
}

async fn ready_cluster(api: &Api<ShardedCluster>, name: &str) -> ShardedCluster {
    wait_for(
        &format!("ShardedCluster {name} to be Ready"),
        READY_WAIT,
        POLL,
        || async {
            let sc = api.get(name).await?;
            let status = sc.status.clone().unwrap_or_default();
            let ready = status.phase.as_deref() == Some("Ready")
                && status.ready_shards == sc.spec.shards
                && status.observed_generation == sc.metadata.generation
                && condition_true(&status.conditions, "Ready");
            Ok(ready.then_some(sc))
        },
    )
    .await
    .unwrap()
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn selector(cluster_name: &str) -> ListParams {
    ListParams::default().labels(&format!("ringmaster.dev/cluster={cluster_name}"))
}

async fn cluster_pods(pods: &Api<Pod>, cluster_name: &str) -> Vec<Pod> {
    pods.list(&selector(cluster_name)).await.unwrap().items
}

/// The cluster's database instances (not its routers).
async fn instance_pods(pods: &Api<Pod>, cluster_name: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!(
        "ringmaster.dev/cluster={cluster_name},app.kubernetes.io/component=database"
    ));
    pods.list(&lp).await.unwrap().items
}

async fn secret_value(client: &kube::Client, ns: &str, name: &str, key: &str) -> String {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let bytes = secret
        .data
        .unwrap_or_default()
        .remove(key)
        .expect("key present")
        .0;
    String::from_utf8(bytes).unwrap()
}

async fn cluster_ip(client: &kube::Client, ns: &str, service: &str) -> String {
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get(service)
        .await
        .unwrap();
    svc.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP")
}

fn pod_ip(pods: &[Pod], name: &str) -> String {
    let pod = pods
        .iter()
        .find(|p| p.name_any() == name)
        .unwrap_or_else(|| panic!("pod {name} exists"));
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP")
}

/// The address the Redis server behind `vip` is bound to.
async fn redis_bind_through(vip: &str, password: &str) -> String {
    let url = format!("redis://:{password}@{vip}:6379/");
    let client = redis::Client::open(url).unwrap();
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("connect within 5s")
    .expect("authenticated connection through the -rw Service");
    let _: () = redis::cmd("SET")
        .arg("e2e-key")
        .arg("e2e-value")
        .query_async(&mut conn)
        .await
        .unwrap();
    let bind: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("bind")
        .query_async(&mut conn)
        .await
        .unwrap();
    bind[1].clone()
}

/// The address of the PostgreSQL server behind `vip`.
async fn postgres_address_through(vip: &str, user: &str, password: &str) -> String {
    let config = format!(
        "host={vip} port=5432 user={user} password={password} dbname=postgres connect_timeout=5"
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .expect("connect to -rw");
    let task = tokio::spawn(connection);
    let row = client
        .query_one("SELECT host(inet_server_addr())", &[])
        .await
        .unwrap();
    let address: String = row.get(0);
    drop(client);
    task.abort();
    address
}

/// resourceVersion of every object the operator manages for `cluster_name`.
async fn resource_versions(
    client: &kube::Client,
    ns: &str,
    cluster_name: &str,
) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    let lp = selector(cluster_name);
    macro_rules! collect {
        ($kind:ty, $label:expr) => {
            for o in Api::<$kind>::namespaced(client.clone(), ns)
                .list(&lp)
                .await
                .unwrap()
            {
                versions.insert(
                    format!("{}/{}", $label, o.name_any()),
                    o.resource_version().unwrap_or_default(),
                );
            }
        };
    }
    for o in Api::<Shard>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
    {
        versions.insert(
            format!("shard/{}", o.name_any()),
            common::shard_fingerprint(&o),
        );
    }
    collect!(Pod, "pod");
    collect!(PersistentVolumeClaim, "pvc");
    collect!(Service, "service");
    for (kind, name) in [
        ("secret", format!("{cluster_name}-credentials")),
        ("configmap", format!("{cluster_name}-routing")),
    ] {
        let rv = if kind == "secret" {
            Api::<Secret>::namespaced(client.clone(), ns)
                .get(&name)
                .await
                .unwrap()
                .resource_version()
        } else {
            Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get(&name)
                .await
                .unwrap()
                .resource_version()
        };
        versions.insert(format!("{kind}/{name}"), rv.unwrap_or_default());
    }
    let sc = Api::<ShardedCluster>::namespaced(client.clone(), ns)
        .get(cluster_name)
        .await
        .unwrap();
    versions.insert(
        format!("sc/{cluster_name}/status"),
        serde_json::to_string(&sc.status).unwrap(),
    );
    versions
}

/// How long a scrape of an operator Pod's `/metrics` is retried before the test fails.
const SCRAPE_WAIT: Duration = Duration::from_secs(30);

/// What one operator Pod's `/metrics` says.
#[derive(Debug, Default)]
struct Scrape {
    /// `ringmaster_reconciles_total` by `controller` (a controller that has not
    /// reconciled yet has no series).
    reconciles: BTreeMap<String, f64>,
    /// `ringmaster_leader`: 1 while the Pod holds the Lease.
    leader: f64,
}

impl Scrape {
    /// Parses an HTTP response to `GET /metrics`; it must be a 200 with the
    /// operator's `ringmaster_leader` gauge (an empty or foreign body is an error,
    /// never "no reconciles").
    fn parse(response: &str) -> Result<Self, String> {
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(format!("status line {status:?}"));
        }
        let mut scrape = Scrape::default();
        let mut leader = None;
        for line in body.lines() {
            let value = |rest: &str| -> Result<f64, String> {
                rest.split_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("unparsable sample {line:?}"))
            };
            if let Some(rest) = line.strip_prefix("ringmaster_reconciles_total{") {
                let (labels, rest) = rest
                    .split_once('}')
                    .ok_or_else(|| format!("unparsable sample {line:?}"))?;
                let controller = labels
                    .split(',')
                    .find_map(|l| l.strip_prefix("controller=\""))
                    .and_then(|v| v.strip_suffix('"'))
                    .ok_or_else(|| format!("no controller label in {line:?}"))?;
                *scrape.reconciles.entry(controller.to_owned()).or_default() += value(rest)?;
            } else if let Some(rest) = line.strip_prefix("ringmaster_leader ") {
                leader = Some(value(rest)?);
            }
        }
        scrape.leader = leader.ok_or("no ringmaster_leader sample in /metrics")?;
        Ok(scrape)
    }

    /// Reconciliations of `controller`.
    fn of(&self, controller: &str) -> f64 {
        self.reconciles.get(controller).copied().unwrap_or_default()
    }

    /// Reconciliations of every controller.
    fn total(&self) -> f64 {
        self.reconciles.values().sum()
    }
}

/// The running (not terminating) operator Pods of `release`.
async fn operator_pods(client: &kube::Client, op_ns: &str, release: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    Api::<Pod>::namespaced(client.clone(), op_ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Scrapes `/metrics` of the operator Pod `name`, retrying for [`SCRAPE_WAIT`]; a Pod
/// that cannot be scraped fails the test (an unreachable Pod must never count as one
/// that did not reconcile).
async fn scrape(client: &kube::Client, op_ns: &str, name: &str) -> Scrape {
    let pods = Api::<Pod>::namespaced(client.clone(), op_ns);
    let deadline = tokio::time::Instant::now() + SCRAPE_WAIT;
    loop {
        let attempt = match pods.get(name).await {
            Err(e) => Err(format!("reading the Pod: {e}")),
            Ok(pod) => match pod.status.and_then(|s| s.pod_ip) {
                None => Err("the Pod has no IP".to_owned()),
                Some(ip) => match http_get(&format!("{ip}:8080"), "/metrics").await {
                    Err(e) => Err(format!("GET http://{ip}:8080/metrics: {e}")),
                    Ok(response) => Scrape::parse(&response)
                        .map_err(|e| format!("GET http://{ip}:8080/metrics: {e}")),
                },
            },
        };
        match attempt {
            Ok(scrape) => return scrape,
            Err(error) if tokio::time::Instant::now() >= deadline => panic!(
                "cannot scrape /metrics of operator Pod {op_ns}/{name} within {SCRAPE_WAIT:?}: {error}"
            ),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Scrapes every running operator Pod of `release`, by Pod name.
async fn scrape_all(client: &kube::Client, op_ns: &str, release: &str) -> BTreeMap<String, Scrape> {
    let mut scrapes = BTreeMap::new();
    for pod in operator_pods(client, op_ns, release).await {
        let name = pod.name_any();
        let scrape = scrape(client, op_ns, &name).await;
        scrapes.insert(name, scrape);
    }
    scrapes
}

async fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_string(&mut body))
        .await
        .map_err(|_| std::io::Error::other("read timed out"))??;
    Ok(body)
}

async fn scale_replicas(api: &Api<ShardedCluster>, name: &str, replicas: i32) {
    let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
    api.patch(name, &PatchParams::default(), &patch)
        .await
        .unwrap();
}

async fn wait_for_instances(
    pods: &Api<Pod>,
    cluster_name: &str,
    shards: usize,
    per_shard: usize,
) -> Vec<Pod> {
    let what =
        format!("{cluster_name}: {shards} shards × {per_shard} Ready instances and nothing else");
    wait_for(&what, READY_WAIT, POLL, || async {
        let all = instance_pods(pods, cluster_name).await;
        let done = all.len() == shards * per_shard && all.iter().all(is_ready);
        Ok(done.then_some(all))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_from_helm_runs_the_examples() {
    let cluster = Cluster::shared();
    let op_ns: TestNamespace = cluster.namespace("rm-operator").await;
    let ns = cluster.namespace("rm-apps").await;
    let client = cluster.client().await;
    install_operator(cluster, "rm", op_ns.name(), ns.name(), 1);

    apply(cluster, ns.name(), "examples/redis.yaml");
    apply(cluster, ns.name(), "examples/postgres.yaml");
    let clusters: Api<ShardedCluster> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());

    // Every instance Ready with a real server; status with the right counts.
    let cache = ready_cluster(&clusters, "cache").await;
    let orders = ready_cluster(&clusters, "orders").await;
    assert_eq!(cache.status.as_ref().unwrap().ready_shards, 3);
    assert_eq!(orders.status.as_ref().unwrap().ready_shards, 2);
    let cache_pods = wait_for_instances(&pods, "cache", 3, 2).await;
    let orders_pods = wait_for_instances(&pods, "orders", 2, 2).await;
    // The Redis cluster gets its routers (the operator from the chart may create their
    // ServiceAccount, Role and RoleBinding); the PostgreSQL one does not.
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns.name());
    wait_for(
        "cache's 2 routers to be ready",
        READY_WAIT,
        POLL,
        || async {
            let ready = deployments
                .get_opt("cache-router")
                .await?
                .and_then(|d| d.status?.ready_replicas);
            Ok((ready == Some(2)).then_some(()))
        },
    )
    .await
    .unwrap();
    assert!(
        deployments
            .get_opt("orders-router")
            .await
            .unwrap()
            .is_none(),
        "no routers for PostgreSQL"
    );
    for pod in cache_pods.iter().chain(&orders_pods) {
        let owner = pod
            .owner_references()
            .first()
            .map(|o| (o.kind.clone(), o.name.clone()));
        assert_eq!(
            owner.as_ref().map(|o| o.0.as_str()),
            Some("Shard"),
            "{} is owned by its Shard",
            pod.name_any()
        );
    }

    // Each shard has its three Services: -rw (checked below), -ro, and the headless
    // -pods. (-ro is not checked for endpoints: replicas are published there only once
    // replication exists.)
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    for shard in 0..3 {
        let ro = format!("cache-{shard}-ro");
        assert!(
            services.get_opt(&ro).await.unwrap().is_some(),
            "Service {ro} exists"
        );
        let headless = format!("cache-{shard}-pods");
        let svc = services
            .get_opt(&headless)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("Service {headless} exists"));
        assert_eq!(
            svc.spec.and_then(|s| s.cluster_ip).as_deref(),
            Some("None"),
            "{headless} is headless"
        );
    }

    // The -rw Services select the primaries: a write through them lands on ordinal 0.
    let password = secret_value(&client, ns.name(), "cache-credentials", "password").await;
    for shard in 0..3 {
        let vip = cluster_ip(&client, ns.name(), &format!("cache-{shard}-rw")).await;
        let bound = redis_bind_through(&vip, &password).await;
        assert!(
            bound.contains(&pod_ip(&cache_pods, &format!("cache-{shard}-0"))),
            "cache-{shard}-rw reaches {bound}"
        );
    }
    let user = secret_value(&client, ns.name(), "orders-credentials", "username").await;
    let password = secret_value(&client, ns.name(), "orders-credentials", "password").await;
    for shard in 0..2 {
        let vip = cluster_ip(&client, ns.name(), &format!("orders-{shard}-rw")).await;
        let address = postgres_address_through(&vip, &user, &password).await;
        assert_eq!(
            address,
            pod_ip(&orders_pods, &format!("orders-{shard}-0")),
            "orders-{shard}-rw"
        );
    }

    // A reconcile of an unchanged cluster changes nothing.
    let operators = operator_pods(&client, op_ns.name(), "rm").await;
    assert_eq!(operators.len(), 1, "one operator Pod");
    let operator = operators[0].name_any();
    let before = resource_versions(&client, ns.name(), "cache").await;
    let reconciled_before = scrape(&client, op_ns.name(), &operator)
        .await
        .of("shardedcluster");
    let poke =
        Patch::Merge(json!({ "metadata": { "annotations": { "e2e.ringmaster.dev/poke": "1" } } }));
    clusters
        .patch("cache", &PatchParams::default(), &poke)
        .await
        .unwrap();
    wait_for(
        "the shardedcluster controller to reconcile the poked cluster",
        WAIT,
        POLL,
        || async {
            let now = scrape(&client, op_ns.name(), &operator)
                .await
                .of("shardedcluster");
            Ok((now > reconciled_before).then_some(()))
        },
    )
    .await
    .unwrap();
    let after = resource_versions(&client, ns.name(), "cache").await;
    assert_eq!(
        before, after,
        "a reconcile of an unchanged cluster must not change any object"
    );

    // Scale replicas 1 → 2 → 1.
    scale_replicas(&clusters, "cache", 2).await;
    wait_for_instances(&pods, "cache", 3, 3).await;
    ready_cluster(&clusters, "cache").await;
    scale_replicas(&clusters, "cache", 1).await;
    let scaled_down = wait_for_instances(&pods, "cache", 3, 2).await;
    let names: Vec<String> = scaled_down.iter().map(|p| p.name_any()).collect();
    assert!(
        names.iter().all(|n| !n.ends_with("-2")),
        "the added replicas were removed: {names:?}"
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns.name());
    wait_for(
        "the removed replicas' claims to be deleted",
        WAIT,
        POLL,
        || async {
            let left: Vec<String> = claims
                .list(&selector("cache"))
                .await?
                .iter()
                .map(|c| c.name_any())
                .collect();
            Ok((left.len() == 6 && left.iter().all(|n| !n.ends_with("-2"))).then_some(()))
        },
    )
    .await
    .unwrap();
    ready_cluster(&clusters, "cache").await;

    // Deleting a ShardedCluster removes everything it owns.
    clusters
        .delete("cache", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for(
        "everything of cache to be garbage-collected",
        WAIT,
        POLL,
        || async {
            let shards = Api::<Shard>::namespaced(client.clone(), ns.name())
                .list(&selector("cache"))
                .await?
                .items
                .len();
            let pods = cluster_pods(&pods, "cache").await.len();
            let claims = claims.list(&selector("cache")).await?.items.len();
            let services = Api::<Service>::namespaced(client.clone(), ns.name())
                .list(&selector("cache"))
                .await?
                .items
                .len();
            let secret = Api::<Secret>::namespaced(client.clone(), ns.name())
                .get_opt("cache-credentials")
                .await?;
            let routing = Api::<ConfigMap>::namespaced(client.clone(), ns.name())
                .get_opt("cache-routing")
                .await?;
            let left = shards
                + pods
                + claims
                + services
                + usize::from(secret.is_some())
                + usize::from(routing.is_some());
            Ok((left == 0).then_some(()))
        },
    )
    .await
    .unwrap();
    clusters
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_lease_holder_reconciles() {
    let cluster = Cluster::shared();
    let op_ns = cluster.namespace("rm-ha").await;
    let ns = cluster.namespace("rm-ha-apps").await;
    let client = cluster.client().await;
    install_operator(cluster, "rmha", op_ns.name(), ns.name(), 2);
    let leases: Api<Lease> = Api::namespaced(client.clone(), op_ns.name());
    let holder = wait_for("a Lease holder", WAIT, POLL, || async {
        let lease = leases.get_opt("ringmaster-operator").await?;
        Ok(lease
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty()))
    })
    .await
    .unwrap();

    let sc: ShardedCluster = serde_json::from_value(json!({
        "apiVersion": "ringmaster.dev/v1alpha1", "kind": "ShardedCluster",
        "metadata": { "name": "solo" },
        "spec": { "engine": "redis", "shards": 1, "replicas": 0 }
    }))
    .unwrap();
    let clusters: Api<ShardedCluster> = Api::namespaced(client.clone(), ns.name());
    clusters.create(&PostParams::default(), &sc).await.unwrap();
    ready_cluster(&clusters, "solo").await;
    // Every Pod must answer (`scrape_all` fails on one that does not): an unreachable
    // standby must not pass for one that never reconciles.
    let scrapes = scrape_all(&client, op_ns.name(), "rmha").await;
    assert_eq!(scrapes.len(), 2, "two operator Pods: {scrapes:?}");
    assert!(
        scrapes.contains_key(&holder),
        "{holder} is one of {scrapes:?}"
    );
    for (pod, scrape) in &scrapes {
        if *pod == holder {
            assert_eq!(scrape.leader, 1.0, "the leader {pod}: {scrape:?}");
            assert!(
                scrape.of("shardedcluster") > 0.0 && scrape.of("shard") > 0.0,
                "the leader {pod} reconciled: {scrape:?}"
            );
        } else {
            assert_eq!(scrape.leader, 0.0, "the standby {pod}: {scrape:?}");
            assert_eq!(
                scrape.total(),
                0.0,
                "the standby {pod} never reconciles: {scrape:?}"
            );
        }
    }

    // The leader goes away: the standby takes over and reconciles.
    Api::<Pod>::namespaced(client.clone(), op_ns.name())
        .delete(&holder, &DeleteParams::default())
        .await
        .unwrap();
    let new_holder = wait_for("another Pod to hold the Lease", WAIT, POLL, || async {
        let lease = leases.get("ringmaster-operator").await?;
        Ok(lease
            .spec
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty() && *h != holder))
    })
    .await
    .unwrap();
    scale_replicas(&clusters, "solo", 1).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    wait_for_instances(&pods, "solo", 1, 2).await;
    let scrape = scrape(&client, op_ns.name(), &new_holder).await;
    assert_eq!(
        scrape.leader, 1.0,
        "the new leader {new_holder}: {scrape:?}"
    );
    assert!(
        scrape.of("shardedcluster") > 0.0 && scrape.of("shard") > 0.0,
        "the new leader {new_holder} reconciles: {scrape:?}"
    );
    clusters
        .delete("solo", &DeleteParams::default())
        .await
        .unwrap();
}

/// The Helm-installed operator dies right after it recorded a failover decision (the
/// fail point `failover-recorded`, armed through the chart's `extraEnv`) and its Pod
/// is then deleted: the operator that comes next finishes that same failover (the
/// recorded target at the recorded epoch) and the shard ends with one primary.
#[tokio::test(flavor = "multi_thread")]
async fn operator_pod_killed_between_failover_phases() {
    let cluster = Cluster::shared();
    let op_ns = cluster.namespace("rm-fp").await;
    let ns = cluster.namespace("rm-fp-apps").await;
    let client = cluster.client().await;
    let armed = [
        "--set",
        "extraEnv[0].name=RINGMASTER_FAILPOINT",
        "--set",
        "extraEnv[0].value=failover-recorded",
    ];
    install_operator_with(cluster, "rmfp", op_ns.name(), ns.name(), 1, &armed);
    let shard = ShardUnderTest::create(&client, ns.name(), "fp", "redis", false, 2, "2s")
        .await
        .unwrap();
    let old = shard.wait_healthy(READY_WAIT).await.unwrap();
    let target = shard.rw_target().await.unwrap();
    load::prepare(&target, WAIT).await.unwrap();
    let writer = Writer::start(target, 1, 100_000, Duration::from_secs(240));
    writer
        .wait_acked(20, "the writer to start", WAIT)
        .await
        .unwrap();
    let operator = operator_pods(&client, op_ns.name(), "rmfp").await;
    let operator = operator.first().expect("an operator Pod").name_any();

    shard.signal_server(&old, Signal::SIGKILL).await.unwrap();
    let recorded = wait_for("the failover to be recorded", WAIT, POLL, || async {
        let status = shard.shard().await?.status.unwrap_or_default();
        Ok(status
            .change
            .filter(|c| c.kind == ChangeKind::Failover && c.phase == ChangePhase::Pending))
    })
    .await
    .unwrap();
    let operator_pods_api: Api<Pod> = Api::namespaced(client.clone(), op_ns.name());
    wait_for(
        "the operator to die at the fail point",
        WAIT,
        POLL,
        || async {
            let pod = operator_pods_api.get(&operator).await?;
            let statuses = pod.status.and_then(|s| s.container_statuses);
            Ok(statuses.unwrap_or_default().iter().any(died).then_some(()))
        },
    )
    .await
    .unwrap();
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    operator_pods_api.delete(&operator, &now).await.unwrap();

    let record = shard.wait_primary_change(&old, WAIT).await.unwrap();
    assert_eq!(
        record.to, recorded.to,
        "the next operator promoted another instance"
    );
    let status = shard.shard().await.unwrap().status.unwrap();
    assert_eq!(status.epoch, recorded.epoch, "one failover, one epoch");
    let after = writer.acked() + 20;
    writer
        .wait_acked(after, "writes on the new primary", WAIT)
        .await
        .unwrap();
    let report = writer.finish().await;
    let missing = load::missing(&shard.rw_target().await.unwrap(), &report.ids())
        .await
        .unwrap();
    println!(
        "operator Pod killed mid-failover: {old} → {}, {} acknowledged, {} errors, {} \
         acknowledged writes missing (async)",
        record.to,
        report.acks.len(),
        report.errors,
        missing.len()
    );
    shard.wait_healthy(READY_WAIT).await.unwrap();
    let (labelled, serving) = shard.primaries().await.unwrap();
    assert_eq!(labelled, [record.to.as_str()], "labelled primaries");
    assert_eq!(serving, [record.to.as_str()], "serving primaries");
    let replacement = operator_pods(&client, op_ns.name(), "rmfp").await;
    assert!(
        replacement.iter().all(|p| p.name_any() != operator),
        "the killed operator Pod was replaced: {:?}",
        replacement
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>()
    );
}

/// Whether a container has exited at least once.
fn died(status: &ContainerStatus) -> bool {
    let terminated =
        |s: &Option<ContainerState>| s.as_ref().is_some_and(|s| s.terminated.is_some());
    status.restart_count > 0 || terminated(&status.state) || terminated(&status.last_state)
}
