//! `ringmaster operator` against the real local cluster: run out of cluster as a
//! child process scoped to the test's namespace, it turns a Redis ShardedCluster
//! into Shards, a credentials Secret, a routing ConfigMap, instance Pods, PVCs and
//! Services with the contract's names, labels and owners; the Pods' agents start
//! real redis-servers and the cluster becomes Ready; a second pass changes nothing;
//! scaling, self-healing and deletion work.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

mod common;
use common::install_crds;
use common::operator::Operator;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use ringmaster::api::{Shard, ShardedCluster};
use ringmaster_e2e::{Cluster, wait_for};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const READY_WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

// ------------------------------------------------------------------ harness

fn redis_cluster(name: &str, shards: i32, replicas: i32) -> ShardedCluster {
    serde_json::from_value(json!({
        "apiVersion": "ringmaster.dev/v1alpha1",
        "kind": "ShardedCluster",
        "metadata": { "name": name },
        "spec": { "engine": "redis", "version": "7.0", "shards": shards, "replicas": replicas }
    }))
    .unwrap()
}

struct Apis {
    clusters: Api<ShardedCluster>,
    shards: Api<Shard>,
    pods: Api<Pod>,
    pvcs: Api<PersistentVolumeClaim>,
    services: Api<Service>,
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    events: Api<Event>,
}

impl Apis {
    fn new(client: &Client, ns: &str) -> Self {
        Self {
            clusters: Api::namespaced(client.clone(), ns),
            shards: Api::namespaced(client.clone(), ns),
            pods: Api::namespaced(client.clone(), ns),
            pvcs: Api::namespaced(client.clone(), ns),
            services: Api::namespaced(client.clone(), ns),
            secrets: Api::namespaced(client.clone(), ns),
            config_maps: Api::namespaced(client.clone(), ns),
            events: Api::namespaced(client.clone(), ns),
        }
    }
}

async fn names<K>(api: &Api<K>, selector: &str) -> anyhow::Result<Vec<String>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = ListParams::default().labels(selector);
    let mut names: Vec<String> = api
        .list(&params)
        .await?
        .items
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .collect();
    names.sort();
    Ok(names)
}

/// Waits until `api` lists exactly `expected` (sorted) for `selector`.
async fn wait_names<K>(what: &str, api: &Api<K>, selector: &str, expected: &[&str], op: &Operator)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    let result = wait_for(what, WAIT, POLL, || {
        let expected = expected.clone();
        async move {
            let found = names(api, selector).await?;
            if found == expected {
                Ok(Some(()))
            } else {
                Err(anyhow!("found {found:?}, want {expected:?}"))
            }
        }
    })
    .await;
    if let Err(e) = result {
        panic!("{e:#}\n{}", op.log_tail());
    }
}

fn assert_controlled_by(obj: &impl Resource, kind: &str, name: &str, uid: &str) {
    let owner = obj
        .meta()
        .owner_references
        .as_ref()
        .and_then(|o| o.first())
        .unwrap_or_else(|| panic!("{:?} has no owner", obj.meta().name));
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        (kind, name, uid),
        "owner of {:?}",
        obj.meta().name
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));
}

fn label<'a>(obj: &'a impl Resource, key: &str) -> &'a str {
    obj.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
        .unwrap_or_default()
}

async fn wait_cluster_ready(apis: &Apis, name: &str, op: &Operator) -> ShardedCluster {
    let result = wait_for(
        &format!("ShardedCluster {name} to be Ready"),
        READY_WAIT,
        POLL,
        || async {
            let sc = apis.clusters.get(name).await?;
            let status = sc.status.clone().unwrap_or_default();
            let ready = status.phase.as_deref() == Some("Ready")
                && status.observed_generation == sc.metadata.generation;
            if ready {
                Ok(Some(sc))
            } else {
                Err(anyhow!(
                    "phase {:?}, readyShards {}, conditions {:?}",
                    status.phase,
                    status.ready_shards,
                    status
                        .conditions
                        .iter()
                        .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
                        .collect::<Vec<_>>()
                ))
            }
        },
    )
    .await;
    result.unwrap_or_else(|e| panic!("{e:#}\n{}", op.log_tail()))
}

/// resourceVersions of every object of the test, by `Kind/name`.
async fn resource_versions(
    apis: &Apis,
    selector: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let params = ListParams::default();
    let by_label = ListParams::default().labels(selector);
    for o in apis.shards.list(&params).await?.items {
        out.insert(
            format!("Shard/{}", o.name_any()),
            common::shard_fingerprint(&o),
        );
    }
    versions_of(&mut out, "ShardedCluster", &apis.clusters, &params).await?;
    versions_of(&mut out, "Pod", &apis.pods, &by_label).await?;
    versions_of(&mut out, "PVC", &apis.pvcs, &by_label).await?;
    versions_of(&mut out, "Service", &apis.services, &by_label).await?;
    versions_of(&mut out, "Secret", &apis.secrets, &by_label).await?;
    versions_of(&mut out, "ConfigMap", &apis.config_maps, &by_label).await?;
    Ok(out)
}

/// Adds `<kind>/<name>` → resourceVersion of every object `api` lists with `params`.
async fn versions_of<K>(
    out: &mut BTreeMap<String, String>,
    kind: &str,
    api: &Api<K>,
    params: &ListParams,
) -> anyhow::Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for o in api.list(params).await?.items {
        out.insert(
            format!("{kind}/{}", o.name_any()),
            o.resource_version().unwrap_or_default(),
        );
    }
    Ok(())
}

fn secret_value(secret: &Secret, key: &str) -> String {
    let bytes = &secret.data.as_ref().unwrap()[key].0;
    String::from_utf8(bytes.clone()).unwrap()
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_is_provisioned_ready_idempotent_and_collected() {
    let cluster = Cluster::shared();
    install_crds(cluster).await;
    let ns = cluster.namespace("op-reconcile").await;
    let client = cluster.client().await;
    let apis = Apis::new(&client, ns.name());
    let mut operator = Operator::start(cluster, ns.name());
    let selector = "app.kubernetes.io/managed-by=ringmaster,ringmaster.dev/cluster=cache";

    let started = Instant::now();
    let sc = apis
        .clusters
        .create(&PostParams::default(), &redis_cluster("cache", 2, 1))
        .await
        .unwrap();
    let uid = sc.uid().unwrap();

    // --- the objects, with the contract's names, labels and owners
    wait_names(
        "the Shards",
        &apis.shards,
        selector,
        &["cache-0", "cache-1"],
        &operator,
    )
    .await;
    let created_objects = started.elapsed();
    for (i, shard) in apis
        .shards
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .enumerate()
    {
        assert_controlled_by(shard, "ShardedCluster", "cache", &uid);
        assert_eq!(shard.spec.index, i as i32);
        assert_eq!(shard.spec.image, "redis:7.0");
        assert_eq!(shard.spec.replicas, 1);
        assert_eq!(
            shard.spec.primary.as_deref(),
            Some(format!("cache-{i}-0").as_str())
        );
        assert_eq!(label(shard, "ringmaster.dev/shard"), i.to_string());
    }
    let secret = apis.secrets.get("cache-credentials").await.unwrap();
    assert_controlled_by(&secret, "ShardedCluster", "cache", &uid);
    assert_eq!(secret_value(&secret, "username"), "default");
    let password = secret_value(&secret, "password");
    let token = secret_value(&secret, "agent-token");
    for value in [&password, &token] {
        assert_eq!(value.len(), 32);
        assert!(value.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    let pods = [["cache-0-0", "cache-0-1"], ["cache-1-0", "cache-1-1"]].concat();
    // Instances only: the cluster's routers are Pods of its Deployment.
    let instances = format!("{selector},app.kubernetes.io/component=database");
    wait_names("the Pods", &apis.pods, &instances, &pods, &operator).await;
    let pvcs: Vec<String> = pods.iter().map(|p| format!("data-{p}")).collect();
    let pvcs: Vec<&str> = pvcs.iter().map(String::as_str).collect();
    wait_names("the PVCs", &apis.pvcs, selector, &pvcs, &operator).await;
    let services = [
        "cache-0-rw",
        "cache-0-ro",
        "cache-0-pods",
        "cache-1-rw",
        "cache-1-ro",
        "cache-1-pods",
        "cache-router",
    ];
    wait_names(
        "the Services",
        &apis.services,
        selector,
        &services,
        &operator,
    )
    .await;

    let shard_uids: BTreeMap<String, String> = apis
        .shards
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| (s.name_any(), s.uid().unwrap()))
        .collect();
    for pod in apis
        .pods
        .list(&ListParams::default().labels(&instances))
        .await
        .unwrap()
        .items
    {
        let name = pod.name_any();
        let shard = &name[..name.rfind('-').unwrap()];
        assert_controlled_by(&pod, "Shard", shard, &shard_uids[shard]);
        assert_eq!(label(&pod, "app.kubernetes.io/name"), "redis");
        assert_eq!(label(&pod, "app.kubernetes.io/component"), "database");
        assert_eq!(label(&pod, "ringmaster.dev/instance"), name);
        let role = if name.ends_with("-0") {
            "primary"
        } else {
            "replica"
        };
        assert_eq!(label(&pod, "ringmaster.dev/role"), role, "{name}");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.init_containers.as_ref().unwrap()[0].name,
            "install-agent"
        );
        assert_eq!(spec.containers[0].image.as_deref(), Some("redis:7.0"));
    }
    for pvc in apis
        .pvcs
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
    {
        let pod = pvc.name_any().trim_start_matches("data-").to_owned();
        let shard = &pod[..pod.rfind('-').unwrap()];
        assert_controlled_by(&pvc, "Shard", shard, &shard_uids[shard]);
    }
    let headless = apis.services.get("cache-0-pods").await.unwrap();
    let spec = headless.spec.as_ref().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    let rw = apis.services.get("cache-0-rw").await.unwrap();
    assert_eq!(
        rw.spec.as_ref().unwrap().selector.as_ref().unwrap()["ringmaster.dev/role"],
        "primary"
    );

    // --- Ready: the agents run redis-server and pass their probes
    let sc = wait_cluster_ready(&apis, "cache", &operator).await;
    let ready_after = started.elapsed();
    let status = sc.status.clone().unwrap();
    assert_eq!((status.shards, status.ready_shards), (2, 2));
    assert_eq!(
        status.credentials_secret.as_deref(),
        Some("cache-credentials")
    );
    assert_eq!(
        status.primaries,
        BTreeMap::from([
            ("cache-0".to_owned(), "cache-0-0".to_owned()),
            ("cache-1".to_owned(), "cache-1-0".to_owned())
        ])
    );
    for shard in apis
        .shards
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let s = shard.status.clone().unwrap();
        assert_eq!(s.ready.as_deref(), Some("2/2"), "{}", shard.name_any());
        assert!(s.instances.iter().all(|i| i.ready && i.pod_ip.is_some()));
    }
    // --- replication: each replica streams from its primary and serves reads
    for name in ["cache-0", "cache-1"] {
        wait_for(
            &format!("{name} to replicate"),
            READY_WAIT,
            POLL,
            || async {
                let shard = apis.shards.get(name).await?;
                let s = shard.status.clone().unwrap_or_default();
                let c = s
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "ReplicationConfigured")
                    .ok_or_else(|| anyhow!("no ReplicationConfigured"))?;
                if (c.status.as_str(), c.reason.as_str()) == ("True", "Streaming") {
                    Ok(Some(()))
                } else {
                    Err(anyhow!(
                        "{}={} {}: {}",
                        c.type_,
                        c.status,
                        c.reason,
                        c.message
                    ))
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", operator.log_tail()));
        let replica = apis.pods.get(&format!("{name}-1")).await.unwrap();
        assert_eq!(label(&replica, "ringmaster.dev/streaming"), "true");
    }

    // --- the routing table points at the Services' ClusterIPs
    let cm = wait_for("the routing table with addresses", WAIT, POLL, || async {
        let cm = apis.config_maps.get("cache-routing").await?;
        let doc: Value = serde_json::from_str(&cm.data.as_ref().unwrap()["routing.json"])?;
        let addressed = doc["shards"].as_array().is_some_and(|s| {
            s.iter()
                .all(|s| s.get("rw").is_some() && s.get("ro").is_some())
        });
        Ok(addressed.then_some((cm, doc)))
    })
    .await
    .unwrap();
    let (cm, doc) = cm;
    assert_controlled_by(&cm, "ShardedCluster", "cache", &uid);
    let rw_ip = rw.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    assert_eq!(doc["shards"][0]["rw"], format!("{rw_ip}:6379"));
    assert_eq!(doc["shards"][1]["primary"], "cache-1-0");
    let version = doc["version"].as_i64().unwrap();
    assert_eq!(
        cm.annotations()["ringmaster.dev/routing-version"],
        version.to_string()
    );
    let sc = apis.clusters.get("cache").await.unwrap();
    assert_eq!(sc.status.unwrap().routing_version, Some(version));

    // --- operator health and metrics
    let (code, body) = operator.get("/readyz").await.unwrap();
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (_, metrics) = operator.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("ringmaster_managed_objects{controller=\"shard\"} 2"),
        "{metrics}"
    );

    // --- Events: every creation, as ringmaster-operator, never a secret value
    let events = apis
        .events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let ours: Vec<&Event> = events
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("ringmaster-operator"))
        .collect();
    for reason in [
        "CreatedSecret",
        "CreatedShard",
        "CreatedPod",
        "CreatedPVC",
        "RoutingUpdated",
    ] {
        assert!(
            ours.iter().any(|e| e.reason.as_deref() == Some(reason)),
            "no {reason} Event among {:?}",
            ours.iter().map(|e| e.reason.clone()).collect::<Vec<_>>()
        );
    }
    for event in &events {
        let note = event.note.clone().unwrap_or_default();
        assert!(
            !note.contains(&password) && !note.contains(&token),
            "secret in Event {note}"
        );
    }
    let log = operator.log();
    assert!(
        !log.contains(&password) && !log.contains(&token),
        "secret in the operator log"
    );

    // --- a second pass changes nothing: a fresh operator reconciles everything again
    let before = resource_versions(&apis, selector).await.unwrap();
    assert!(
        operator.terminate(),
        "the operator did not exit 0 on SIGTERM"
    );
    operator = Operator::start(cluster, ns.name());
    wait_for(
        "the restarted operator to reconcile everything",
        WAIT,
        POLL,
        || async {
            let clusters = operator.reconciles("shardedcluster").await?;
            let shards = operator.reconciles("shard").await?;
            Ok((clusters >= 1 && shards >= 2).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", operator.log_tail()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = resource_versions(&apis, selector).await.unwrap();
    assert_eq!(
        before,
        after,
        "a second pass changed objects\n{}",
        operator.log_tail()
    );

    // --- deleting the cluster garbage-collects everything it owns
    apis.clusters
        .delete("cache", &DeleteParams::background())
        .await
        .unwrap();
    let gone = wait_for(
        "the owned objects to be garbage-collected",
        READY_WAIT,
        POLL,
        || async {
            let left = resource_versions(&apis, selector).await?;
            if left.is_empty() {
                Ok(Some(()))
            } else {
                Err(anyhow!("left: {:?}", left.keys().collect::<Vec<_>>()))
            }
        },
    )
    .await;
    if let Err(e) = gone {
        panic!("{e:#}\n{}", operator.log_tail());
    }
    eprintln!(
        "timings: objects created {created_objects:.1?} after apply, cluster Ready {ready_after:.1?} after apply"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_self_healing_and_shards_beyond_the_spec() {
    let cluster = Cluster::shared();
    install_crds(cluster).await;
    let ns = cluster.namespace("op-scale").await;
    let client = cluster.client().await;
    let apis = Apis::new(&client, ns.name());
    let operator = Operator::start(cluster, ns.name());
    let selector = "app.kubernetes.io/managed-by=ringmaster,ringmaster.dev/cluster=kv";
    // Instances only: the cluster's routers are Pods of its Deployment.
    let instances = format!("{selector},app.kubernetes.io/component=database");

    apis.clusters
        .create(&PostParams::default(), &redis_cluster("kv", 1, 1))
        .await
        .unwrap();
    wait_cluster_ready(&apis, "kv", &operator).await;

    // --- scale up: the next ordinal
    let patch = |replicas: i32| Patch::Merge(json!({ "spec": { "replicas": replicas } }));
    apis.clusters
        .patch("kv", &PatchParams::default(), &patch(2))
        .await
        .unwrap();
    wait_names(
        "three instances",
        &apis.pods,
        &instances,
        &["kv-0-0", "kv-0-1", "kv-0-2"],
        &operator,
    )
    .await;
    let sc = wait_cluster_ready(&apis, "kv", &operator).await;
    assert_eq!(sc.status.unwrap().ready_shards, 1);
    let shard = apis.shards.get("kv-0").await.unwrap();
    assert_eq!(shard.status.unwrap().ready.as_deref(), Some("3/3"));

    // --- spec.primary is a switchover request: one naming no instance is not acted
    // on, and Degraded says why (the switchover itself: tests/failover_e2e.rs)
    let primary = |p: &str| Patch::Merge(json!({ "spec": { "primary": p } }));
    apis.shards
        .patch("kv-0", &PatchParams::default(), &primary("kv-0-9"))
        .await
        .expect("spec.primary can change");
    wait_for("the switchover to be blocked", WAIT, POLL, || async {
        let shard = apis.shards.get("kv-0").await?;
        let s = shard.status.unwrap_or_default();
        let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded");
        let blocked = degraded.is_some_and(|c| {
            c.reason == "SwitchoverBlocked" && c.message.contains("not an instance")
        });
        Ok((blocked && s.primary.as_deref() == Some("kv-0-0")).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", operator.log_tail()));
    apis.shards
        .patch("kv-0", &PatchParams::default(), &primary("kv-0-0"))
        .await
        .unwrap();

    // --- scale down: the highest replicas go, never the primary (kv-0-0)
    apis.clusters
        .patch("kv", &PatchParams::default(), &patch(0))
        .await
        .unwrap();
    wait_names(
        "only the primary",
        &apis.pods,
        &instances,
        &["kv-0-0"],
        &operator,
    )
    .await;
    wait_names(
        "only the primary's PVC",
        &apis.pvcs,
        selector,
        &["data-kv-0-0"],
        &operator,
    )
    .await;

    // --- a deleted Pod is recreated with the same name and volume
    let before = apis.pods.get("kv-0-0").await.unwrap().uid();
    apis.pods
        .delete("kv-0-0", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("kv-0-0 to be recreated", READY_WAIT, POLL, || async {
        let pod = apis.pods.get("kv-0-0").await?;
        Ok((pod.uid() != before && pod.metadata.deletion_timestamp.is_none()).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", operator.log_tail()));
    wait_cluster_ready(&apis, "kv", &operator).await;

    // --- a deleted Secret key is re-added, the others untouched
    let secret = apis.secrets.get("kv-credentials").await.unwrap();
    let token = secret_value(&secret, "agent-token");
    apis.secrets
        .patch(
            "kv-credentials",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{ "op": "remove", "path": "/data/password" }]))
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    let secret = wait_for("the password to be re-added", WAIT, POLL, || async {
        let secret = apis.secrets.get("kv-credentials").await?;
        Ok(secret
            .data
            .as_ref()
            .unwrap()
            .contains_key("password")
            .then_some(secret))
    })
    .await
    .unwrap();
    assert_eq!(
        secret_value(&secret, "agent-token"),
        token,
        "existing keys are never regenerated"
    );

    // --- volumes grow with the spec
    apis.clusters
        .patch(
            "kv",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "storage": { "size": "2Gi" } } })),
        )
        .await
        .unwrap();
    wait_for("the PVC to request 2Gi", WAIT, POLL, || async {
        let pvc = apis.pvcs.get("data-kv-0-0").await?;
        let size = pvc
            .spec
            .and_then(|s| s.resources?.requests?.get("storage").cloned());
        Ok((size.map(|q| q.0).as_deref() == Some("2Gi")).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", operator.log_tail()));

    // --- a Shard beyond spec.shards degrades the cluster and is left alone
    let mut extra = apis.shards.get("kv-0").await.unwrap();
    extra.metadata = kube::api::ObjectMeta {
        name: Some("kv-1".into()),
        labels: extra.metadata.labels.clone().map(|mut l| {
            l.insert("ringmaster.dev/shard".into(), "1".into());
            l
        }),
        ..Default::default()
    };
    extra.spec.index = 1;
    extra.spec.primary = None;
    extra.status = None;
    apis.shards
        .create(&PostParams::default(), &extra)
        .await
        .unwrap();
    let degraded = wait_for(
        "the cluster to report ShardsBeyondSpec",
        WAIT,
        POLL,
        || async {
            let sc = apis.clusters.get("kv").await?;
            let status = sc.status.unwrap_or_default();
            let found = status
                .conditions
                .iter()
                .find(|c| {
                    c.type_ == "Degraded" && c.status == "True" && c.reason == "ShardsBeyondSpec"
                })
                .cloned();
            Ok(found.filter(|_| status.phase.as_deref() == Some("Degraded")))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", operator.log_tail()));
    assert!(degraded.message.contains("kv-1"), "{}", degraded.message);
    assert!(
        apis.shards.get_opt("kv-1").await.unwrap().is_some(),
        "never deleted"
    );

    let events = apis
        .events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for reason in [
        "ScalingDown",
        "UpdatedSecret",
        "ShardsBeyondSpec",
        "DeletedPVC",
    ] {
        assert!(
            events.iter().any(|e| e.reason.as_deref() == Some(reason)),
            "no {reason} Event"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let cluster = Cluster::shared();
    install_crds(cluster).await;
    let ns = cluster.namespace("op-leader").await;
    let client = cluster.client().await;
    let apis = Apis::new(&client, ns.name());
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());
    let a = Operator::elected(cluster, ns.name(), "operator-a");
    let b = Operator::elected(cluster, ns.name(), "operator-b");

    let holder = |leases: Api<Lease>| async move {
        let lease = leases.get_opt("ringmaster-operator").await?;
        Ok(lease
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty()))
    };
    let first = wait_for("a leader", WAIT, POLL, || holder(leases.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", a.log_tail(), b.log_tail()));
    let (leader, standby) = if first == "operator-a" {
        (a, b)
    } else {
        (b, a)
    };

    apis.clusters
        .create(&PostParams::default(), &redis_cluster("ha", 1, 0))
        .await
        .unwrap();
    wait_cluster_ready(&apis, "ha", &leader).await;
    for op in [&leader, &standby] {
        let (code, _) = op.get("/readyz").await.unwrap();
        assert_eq!(code, 200, "leader and healthy standby are both ready");
    }
    assert!(leader.reconciles("shardedcluster").await.unwrap() >= 1);
    assert_eq!(
        standby.reconciles("shardedcluster").await.unwrap()
            + standby.reconciles("shard").await.unwrap(),
        0,
        "the standby must not reconcile"
    );
    let (_, metrics) = standby.get("/metrics").await.unwrap();
    assert!(metrics.contains("ringmaster_leader 0"), "{metrics}");

    // The leader stops: it releases the Lease and the standby takes over at once.
    let stopped = Instant::now();
    assert!(leader.terminate(), "the leader did not exit 0 on SIGTERM");
    let next = wait_for("the standby to take the Lease", WAIT, POLL, || async {
        Ok(holder(leases.clone()).await?.filter(|h| h != &first))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", standby.log_tail()));
    let takeover = stopped.elapsed();
    assert_ne!(next, first);
    wait_for("the new leader to reconcile", WAIT, POLL, || async {
        Ok((standby.reconciles("shardedcluster").await? >= 1).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", standby.log_tail()));
    eprintln!("timings: Lease taken over {takeover:.1?} after the leader's SIGTERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_cluster_becomes_ready_on_its_port() {
    let cluster = Cluster::shared();
    install_crds(cluster).await;
    let ns = cluster.namespace("op-postgres").await;
    let client = cluster.client().await;
    let apis = Apis::new(&client, ns.name());
    let operator = Operator::start(cluster, ns.name());
    let sc: ShardedCluster = serde_json::from_value(json!({
        "apiVersion": "ringmaster.dev/v1alpha1",
        "kind": "ShardedCluster",
        "metadata": { "name": "orders" },
        "spec": { "engine": "postgres", "shards": 1, "replicas": 0 }
    }))
    .unwrap();
    let started = Instant::now();
    apis.clusters
        .create(&PostParams::default(), &sc)
        .await
        .unwrap();
    let sc = wait_cluster_ready(&apis, "orders", &operator).await;
    let ready_after = started.elapsed();
    assert_eq!(sc.status.unwrap().ready_shards, 1);
    let pod = apis.pods.get("orders-0-0").await.unwrap();
    assert_eq!(label(&pod, "app.kubernetes.io/name"), "postgres");
    let db = &pod.spec.unwrap().containers[0];
    assert_eq!(db.image.as_deref(), Some("postgres:15"));
    let secret = apis.secrets.get("orders-credentials").await.unwrap();
    assert_eq!(secret_value(&secret, "username"), "postgres");
    let rw = apis.services.get("orders-0-rw").await.unwrap();
    let ip = rw.spec.unwrap().cluster_ip.unwrap();
    wait_for(
        "the routing table to name the -rw address",
        WAIT,
        POLL,
        || async {
            let cm = apis.config_maps.get("orders-routing").await?;
            let doc: Value = serde_json::from_str(&cm.data.unwrap()["routing.json"])?;
            Ok(
                (doc["engine"] == "postgres" && doc["shards"][0]["rw"] == format!("{ip}:5432"))
                    .then_some(()),
            )
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", operator.log_tail()));
    eprintln!("timings: postgres cluster Ready {ready_after:.1?} after apply");
}
