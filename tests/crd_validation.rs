//! The CRDs on the real apiserver: they install, `kubectl explain` explains them,
//! valid resources are accepted with their defaults, and invalid ones — on create and
//! on update — are rejected with a message that says what to change.

mod common;
use common::install_crds;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use ringmaster_e2e::{Cluster, wait_for};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ringmaster.dev", "v1alpha1", kind),
        plural,
    )
}

async fn api(cluster: &Cluster, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let client = cluster.client().await;
    let api = Api::namespaced_with(client, ns, &resource(kind, plural));
    // Discovery of a fresh CRD takes a moment; wait until the API serves the kind.
    let probe = api.clone();
    wait_for(
        &format!("the {kind} API to be served"),
        WAIT,
        Duration::from_millis(200),
        || async { Ok(probe.list(&Default::default()).await.ok().map(|_| ())) },
    )
    .await
    .unwrap();
    api
}

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "ringmaster.dev/v1alpha1",
        "kind": kind,
        "metadata": { "name": name },
        "spec": spec
    }))
    .unwrap()
}

/// Creates `spec` and returns the apiserver's rejection message (panics if accepted).
async fn rejected_create(api: &Api<DynamicObject>, kind: &str, name: &str, spec: Value) -> String {
    match api
        .create(&PostParams::default(), &object(kind, name, spec.clone()))
        .await
    {
        Ok(_) => panic!("{kind} {name} with spec {spec} was accepted"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                status.code, 422,
                "{name}: expected 422 Invalid, got {status:?}"
            );
            status.message
        }
        Err(other) => panic!("{name}: unexpected error {other}"),
    }
}

/// Merge-patches an existing object's spec and returns the rejection message.
async fn rejected_update(api: &Api<DynamicObject>, name: &str, spec_patch: Value) -> String {
    let patch = Patch::Merge(json!({ "spec": spec_patch }));
    match api.patch(name, &PatchParams::default(), &patch).await {
        Ok(_) => panic!("update of {name} with {spec_patch} was accepted"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                status.code, 422,
                "{name}: expected 422 Invalid, got {status:?}"
            );
            status.message
        }
        Err(other) => panic!("{name}: unexpected error {other}"),
    }
}

fn assert_says(message: &str, expected: &str) {
    assert!(
        message.contains(expected),
        "rejection message {message:?} should contain {expected:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_sharded_clusters_are_rejected_with_clear_messages() {
    let cluster = Cluster::shared();
    install_crds(cluster).await;
    let ns = cluster.namespace("crd-invalid").await;
    let api = api(cluster, ns.name(), "ShardedCluster", "shardedclusters").await;
    let sc = "ShardedCluster";

    // On create.
    let cases = [
        (
            "zero-shards",
            json!({ "engine": "redis", "shards": 0 }),
            "shards must be between 1 and 64",
        ),
        (
            "negative-replicas",
            json!({ "engine": "redis", "replicas": -1 }),
            "replicas must be between 0 and 5",
        ),
        (
            "too-many-replicas",
            json!({ "engine": "redis", "replicas": 9 }),
            "replicas must be between 0 and 5",
        ),
        (
            "unknown-engine",
            json!({ "engine": "mysql" }),
            "supported values: \"redis\", \"postgres\"",
        ),
        (
            "missing-engine",
            json!({ "shards": 2 }),
            "spec.engine: Required value",
        ),
        (
            "zero-weight",
            json!({ "engine": "redis", "shards": 2, "weights": [1, 0] }),
            "every weight must be a whole number from 1 to 100",
        ),
        (
            "weights-count",
            json!({ "engine": "redis", "shards": 3, "weights": [1, 2] }),
            "one weight per shard",
        ),
        (
            "bad-size",
            json!({ "engine": "redis", "storage": { "size": "lots" } }),
            "storage.size must be a Kubernetes quantity",
        ),
        (
            "bad-duration",
            json!({ "engine": "redis", "failover": { "unhealthyAfter": "soon" } }),
            "failover.unhealthyAfter must be a duration",
        ),
    ];
    for (name, spec, expected) in cases {
        let message = rejected_create(&api, sc, name, spec).await;
        assert_says(&message, expected);
    }

    // On update of a valid cluster.
    let valid = json!({ "engine": "redis", "shards": 3, "storage": { "size": "2Gi" } });
    api.create(&PostParams::default(), &object(sc, "valid", valid))
        .await
        .expect("a valid cluster is accepted");
    assert_says(
        &rejected_update(&api, "valid", json!({ "engine": "postgres" })).await,
        "engine is immutable",
    );
    assert_says(
        &rejected_update(&api, "valid", json!({ "storage": { "size": "1Gi" } })).await,
        "storage.size can only grow",
    );
    // Growing is fine.
    let grow = Patch::Merge(
        json!({ "spec": { "shards": 4, "storage": { "size": "3Gi" }, "replicas": 2 } }),
    );
    api.patch("valid", &PatchParams::default(), &grow)
        .await
        .expect("growing shards, storage and replicas is accepted");
    // A Redis cluster may also shrink: the leaving shards are drained by a migration.
    let shrink = Patch::Merge(json!({ "spec": { "shards": 2 } }));
    api.patch("valid", &PatchParams::default(), &shrink)
        .await
        .expect("lowering shards of a redis cluster is accepted");
    // PostgreSQL rows are not moved between shards: shards and weights stay put.
    let pg = json!({ "engine": "postgres", "shards": 2 });
    api.create(&PostParams::default(), &object(sc, "pg", pg))
        .await
        .expect("a valid postgres cluster is accepted");
    for change in [
        json!({ "shards": 3 }),
        json!({ "shards": 1 }),
        json!({ "weights": [1, 2] }),
    ] {
        assert_says(
            &rejected_update(&api, "pg", change).await,
            "shards and weights of a postgres cluster cannot change yet",
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_major_version_cannot_change_in_place() {
    let cluster = Cluster::shared();
    install_crds(cluster).await;
    let ns = cluster.namespace("crd-versions").await;
    let api = api(cluster, ns.name(), "ShardedCluster", "shardedclusters").await;
    let sc = "ShardedCluster";
    let refused = |majors: &str| {
        format!(
            "the PostgreSQL major version cannot change in place ({majors} needs pg_upgrade): set version (or the image tag) back to the previous major"
        )
    };
    let accept = |name: &'static str, spec_patch: Value| {
        let api = api.clone();
        async move {
            let patch = Patch::Merge(json!({ "spec": spec_patch }));
            api.patch(name, &PatchParams::default(), &patch)
                .await
                .unwrap_or_else(|e| panic!("{name}: {spec_patch} is refused: {e}"));
        }
    };

    // `version`, explicit or the default (15).
    for (name, spec) in [
        ("pg-15", json!({ "engine": "postgres", "version": "15" })),
        ("pg-default", json!({ "engine": "postgres" })),
    ] {
        api.create(&PostParams::default(), &object(sc, name, spec))
            .await
            .expect("a valid postgres cluster is accepted");
        assert_says(
            &rejected_update(&api, name, json!({ "version": "16" })).await,
            &refused("15 → 16"),
        );
    }
    // A minor version rolls out.
    accept("pg-15", json!({ "version": "15.8" })).await;
    accept("pg-default", json!({ "version": "15.8-bookworm" })).await;
    // Going back a major is refused too.
    assert_says(
        &rejected_update(&api, "pg-15", json!({ "version": "14" })).await,
        &refused("15 → 14"),
    );

    // `image` overrides `version`: the major is its tag's.
    let image = json!({ "engine": "postgres", "image": "postgres:15" });
    api.create(&PostParams::default(), &object(sc, "pg-image", image))
        .await
        .expect("a postgres cluster with an image is accepted");
    assert_says(
        &rejected_update(&api, "pg-image", json!({ "image": "postgres:16.1" })).await,
        &refused("15 → 16"),
    );
    assert_says(
        &rejected_update(&api, "pg-image", json!({ "image": null, "version": "17" })).await,
        &refused("15 → 17"),
    );
    accept(
        "pg-image",
        json!({ "image": "registry.local:5000/library/postgres:15.8-bookworm" }),
    )
    .await;
    accept("pg-image", json!({ "image": null, "version": "15.9" })).await;
    // A digest has no version to compare: not checked.
    accept(
        "pg-image",
        json!({ "image": "registry.local:5000/library/postgres@sha256:0123456789abcdef" }),
    )
    .await;

    // Redis restarts on any version, major or minor.
    let redis = json!({ "engine": "redis", "version": "7.0" });
    api.create(&PostParams::default(), &object(sc, "redis", redis))
        .await
        .expect("a valid redis cluster is accepted");
    accept("redis", json!({ "version": "7.2" })).await;
    accept("redis", json!({ "version": "8.0" })).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_cluster_gets_defaults_and_kubectl_explains_the_fields() {
    let cluster = Cluster::shared();
    install_crds(cluster).await;
    let ns = cluster.namespace("crd-defaults").await;
    let api = api(cluster, ns.name(), "ShardedCluster", "shardedclusters").await;
    let created = api
        .create(
            &PostParams::default(),
            &object("ShardedCluster", "minimal", json!({ "engine": "postgres" })),
        )
        .await
        .expect("a minimal cluster is accepted");
    let spec = &created.data["spec"];
    assert_eq!(spec["shards"], 1);
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["storage"]["size"], "1Gi");
    assert_eq!(spec["replication"]["mode"], "async");
    assert_eq!(spec["failover"]["unhealthyAfter"], "5s");

    // `sc` is also StorageClass's built-in short name, which kubectl prefers; the
    // full names are unambiguous.
    let explain = cluster.kubectl(&["explain", "shardedclusters.spec.replicas"]);
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(
        explain.status.success() && text.contains("Replicas per shard besides the primary"),
        "kubectl explain:\n{text}"
    );
    let get = cluster.kubectl(&["get", "shardedclusters", "-n", ns.name()]);
    let table = String::from_utf8_lossy(&get.stdout);
    for column in ["ENGINE", "SHARDS", "READY", "PHASE", "AGE", "postgres"] {
        assert!(
            table.contains(column),
            "kubectl get sc lacks {column}:\n{table}"
        );
    }
    let category = cluster.kubectl(&["get", "ringmaster", "-n", ns.name()]);
    assert!(
        String::from_utf8_lossy(&category.stdout).contains("minimal"),
        "the ringmaster category lists the cluster"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_shards_and_migrations_are_rejected() {
    let cluster = Cluster::shared();
    install_crds(cluster).await;
    let ns = cluster.namespace("crd-others").await;
    let shards = api(cluster, ns.name(), "Shard", "shards").await;
    let base = json!({ "cluster": "c", "index": 0, "engine": "redis", "image": "redis:7.0", "replicas": 1 });
    let mut zero_weight = base.clone();
    zero_weight["weight"] = json!(0);
    assert_says(
        &rejected_create(&shards, "Shard", "zero-weight", zero_weight).await,
        "weight must be at least 1",
    );
    shards
        .create(&PostParams::default(), &object("Shard", "ok", base))
        .await
        .expect("a valid shard");
    assert_says(
        &rejected_update(&shards, "ok", json!({ "index": 1 })).await,
        "index is immutable",
    );
    // spec.primary is a switchover request: it may change.
    let switchover = Patch::Merge(json!({ "spec": { "primary": "c-0-1" } }));
    let edited = shards
        .patch("ok", &PatchParams::default(), &switchover)
        .await
        .expect("spec.primary can change");
    assert_eq!(edited.data["spec"]["primary"], "c-0-1");

    let migrations = api(cluster, ns.name(), "ShardMigration", "shardmigrations").await;
    let message = rejected_create(
        &migrations,
        "ShardMigration",
        "nothing",
        json!({ "cluster": "c" }),
    )
    .await;
    assert_says(&message, "spec.fromRing: Required value");
    let ring = |version: i64, shards: i32| {
        let members: Vec<Value> = (0..shards)
            .map(|shard| json!({ "shard": shard, "weight": 1 }))
            .collect();
        json!({ "version": version, "vnodesPerWeight": 128, "members": members })
    };
    let skipping = json!({ "cluster": "c", "fromRing": ring(1, 3), "toRing": ring(3, 4) });
    assert_says(
        &rejected_create(&migrations, "ShardMigration", "skip", skipping).await,
        "toRing.version must be fromRing.version + 1",
    );
    let valid = json!({ "cluster": "c", "fromRing": ring(1, 3), "toRing": ring(2, 4) });
    migrations
        .create(
            &PostParams::default(),
            &object("ShardMigration", "ok", valid),
        )
        .await
        .expect("a valid migration is accepted");
    assert_says(
        &rejected_update(&migrations, "ok", json!({ "toRing": ring(2, 5) })).await,
        "toRing is immutable",
    );
    let rollback = Patch::Merge(json!({ "spec": { "rollback": true } }));
    migrations
        .patch("ok", &PatchParams::default(), &rollback)
        .await
        .expect("rollback can be requested");
    assert_says(
        &rejected_update(&migrations, "ok", json!({ "rollback": false })).await,
        "rollback cannot be undone",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn examples_are_valid_resources() {
    let cluster = Cluster::shared();
    install_crds(cluster).await;
    let ns = cluster.namespace("crd-examples").await;
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let out = cluster.kubectl(&["apply", "--dry-run=server", "-n", ns.name(), "-f", examples]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "examples rejected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "shardedcluster.ringmaster.dev/cache",
        "shardedcluster.ringmaster.dev/orders",
    ] {
        assert!(stdout.contains(name), "{name} missing from:\n{stdout}");
    }
}
