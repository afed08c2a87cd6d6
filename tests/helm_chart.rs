//! The Helm chart: lints clean, renders sane objects for both RBAC modes, installs on
//! the real apiserver, and its RBAC grants the operator's ServiceAccount what the
//! operator does — and nothing more — checked with `kubectl auth can-i`.
//!
//! The operator Deployment is installed with `replicas=0`: these tests check the
//! chart, not the operator.

use std::collections::BTreeSet;

use ringmaster_e2e::Cluster;
use serde_json::Value;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ringmaster");

fn helm_ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.helm(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `helm template` output as JSON values, one per object.
fn render(cluster: &Cluster, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "rm", CHART, "--namespace", "ringmaster-system"];
    args.extend_from_slice(extra);
    let text = helm_ok(cluster, &args);
    text.split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("-");
            format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap(),
                ns,
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn deployment(objects: &[Value]) -> &Value {
    objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment")
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[test]
fn chart_lints_clean_in_both_rbac_modes() {
    let cluster = Cluster::shared();
    for extra in [
        &[][..],
        &[
            "--set",
            "watchNamespaces={a,b}",
            "--set",
            "serviceMonitor.enabled=true",
        ][..],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend_from_slice(extra);
        let out = helm_ok(cluster, &args);
        assert!(out.contains("0 chart(s) failed"), "{out}");
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "{out}"
        );
    }
    for bad in ["logFormat=xml", "httpAddress=", "httpAddress=0.0.0.0"] {
        let out = cluster.helm(&["lint", CHART, "--set", bad]);
        assert!(
            !out.status.success(),
            "{bad} must be rejected by the schema"
        );
    }
}

#[test]
fn all_namespaces_renders_a_cluster_role() {
    let cluster = Cluster::shared();
    let objects = render(cluster, &[]);
    let kinds = kinds(&objects);
    for expected in [
        "ServiceAccount/ringmaster-system/rm-ringmaster",
        "ClusterRole/-/rm-ringmaster",
        "ClusterRoleBinding/-/rm-ringmaster",
        "Role/ringmaster-system/rm-ringmaster-leader-election",
        "RoleBinding/ringmaster-system/rm-ringmaster-leader-election",
        "Service/ringmaster-system/rm-ringmaster-metrics",
        "Deployment/ringmaster-system/rm-ringmaster",
    ] {
        assert!(
            kinds.contains(expected),
            "{expected} missing from {kinds:#?}"
        );
    }
    assert!(
        !kinds.iter().any(|k| k.starts_with("ServiceMonitor/")),
        "{kinds:#?}"
    );
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("Role/") && !k.ends_with("-leader-election")),
        "{kinds:#?}"
    );

    let pod = &deployment(&objects)["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        strings(&container["args"]),
        [
            "operator",
            "--http-addr=0.0.0.0:8080",
            "--log-level=info",
            "--log-format=json"
        ]
    );
    let image = container["image"].as_str().unwrap();
    assert_eq!(image, "ghcr.io/ringmaster/ringmaster:0.1.0");
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        ["POD_IP", "POD_NAME", "POD_NAMESPACE", "RINGMASTER_IMAGE"]
    );
    assert_eq!(container["env"][3]["value"], image);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    let sc = &container["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
}

#[test]
fn watched_namespaces_render_roles_and_the_flag() {
    let cluster = Cluster::shared();
    let objects = render(
        cluster,
        &[
            "--set",
            "watchNamespaces={team-a,team-b,team-a}",
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "image.tag=1.2.3",
        ],
    );
    let kinds = kinds(&objects);
    for expected in [
        "Role/team-a/rm-ringmaster",
        "RoleBinding/team-a/rm-ringmaster",
        "Role/team-b/rm-ringmaster",
        "RoleBinding/team-b/rm-ringmaster",
        "ServiceMonitor/ringmaster-system/rm-ringmaster",
    ] {
        assert!(
            kinds.contains(expected),
            "{expected} missing from {kinds:#?}"
        );
    }
    assert!(!kinds.contains("ClusterRole/-/rm-ringmaster"), "{kinds:#?}");
    assert!(
        !kinds.contains("ClusterRoleBinding/-/rm-ringmaster"),
        "{kinds:#?}"
    );
    let container = &deployment(&objects)["spec"]["template"]["spec"]["containers"][0];
    assert!(strings(&container["args"]).contains(&"--namespaces=team-a,team-b"));
    assert_eq!(container["image"], "ghcr.io/ringmaster/ringmaster:1.2.3");
}

#[test]
fn http_address_is_passed_as_given_and_sets_the_container_port() {
    let cluster = Cluster::shared();
    for (address, port) in [("$(POD_IP):8080", 8080), ("[::]:9090", 9090)] {
        let value = format!("httpAddress={address}");
        let objects = render(cluster, &["--set-string", &value]);
        let container = &deployment(&objects)["spec"]["template"]["spec"]["containers"][0];
        let flag = format!("--http-addr={address}");
        assert_eq!(strings(&container["args"])[1], flag);
        // The probes and the metrics Service target the named port `http`.
        assert_eq!(container["ports"][0]["name"], "http");
        assert_eq!(container["ports"][0]["containerPort"], port);
        // $(POD_IP) stays resolvable.
        assert_eq!(container["env"][0]["name"], "POD_IP");
        let service = objects
            .iter()
            .find(|o| o["kind"] == "Service")
            .expect("the metrics Service");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    }
}

#[test]
fn extra_env_is_appended_to_the_operator_container() {
    let cluster = Cluster::shared();
    let plain = render(cluster, &[]);
    let env = &deployment(&plain)["spec"]["template"]["spec"]["containers"][0]["env"];
    let names: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["POD_IP", "POD_NAME", "POD_NAMESPACE", "RINGMASTER_IMAGE"]
    );
    let objects = render(
        cluster,
        &[
            "--set",
            "extraEnv[0].name=HTTPS_PROXY",
            "--set",
            "extraEnv[0].value=http://proxy:3128",
        ],
    );
    let env = &deployment(&objects)["spec"]["template"]["spec"]["containers"][0]["env"];
    let last = env.as_array().unwrap().last().unwrap();
    assert_eq!(last["name"], "HTTPS_PROXY");
    assert_eq!(last["value"], "http://proxy:3128");
}

/// `kubectl auth can-i <verb> <resource> -n <ns>` as `user`; `resource` may end in
/// `#<subresource>` (a `/` would name an object).
fn can_i(cluster: &Cluster, user: &str, verb: &str, resource: &str, ns: &str) -> bool {
    let (resource, subresource) = resource.split_once('#').unwrap_or((resource, ""));
    let mut args = vec!["auth", "can-i", verb, resource, "-n", ns, "--as", user];
    let flag = format!("--subresource={subresource}");
    if !subresource.is_empty() {
        args.push(&flag);
    }
    let out = cluster.kubectl(&args);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// What the operator must be able to do in a namespace it manages: every call it makes
/// (see the rules in charts/ringmaster/templates/_helpers.tpl).
const GRANTED: &[(&str, &str)] = &[
    ("get", "shardedclusters.ringmaster.dev"),
    ("list", "shardedclusters.ringmaster.dev"),
    ("watch", "shardedclusters.ringmaster.dev"),
    ("patch", "shardedclusters.ringmaster.dev#status"),
    ("update", "shardedclusters.ringmaster.dev#finalizers"),
    ("list", "shards.ringmaster.dev"),
    ("watch", "shards.ringmaster.dev"),
    ("create", "shards.ringmaster.dev"),
    ("patch", "shards.ringmaster.dev"),
    ("patch", "shards.ringmaster.dev#status"),
    ("update", "shards.ringmaster.dev#finalizers"),
    ("get", "shardmigrations.ringmaster.dev"),
    ("list", "shardmigrations.ringmaster.dev"),
    ("watch", "shardmigrations.ringmaster.dev"),
    ("create", "shardmigrations.ringmaster.dev"),
    ("patch", "shardmigrations.ringmaster.dev#status"),
    ("delete", "shards.ringmaster.dev"),
    ("get", "deployments.apps"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("create", "serviceaccounts"),
    ("patch", "serviceaccounts"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("patch", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("list", "pods"),
    ("watch", "pods"),
    ("create", "pods"),
    ("patch", "pods"),
    ("delete", "pods"),
    ("list", "persistentvolumeclaims"),
    ("watch", "persistentvolumeclaims"),
    ("create", "persistentvolumeclaims"),
    ("patch", "persistentvolumeclaims"),
    ("delete", "persistentvolumeclaims"),
    ("list", "services"),
    ("watch", "services"),
    ("create", "services"),
    ("patch", "services"),
    ("get", "configmaps"),
    ("watch", "configmaps"),
    ("create", "configmaps"),
    ("patch", "configmaps"),
    ("get", "secrets"),
    ("watch", "secrets"),
    ("create", "secrets"),
    ("patch", "secrets"),
    ("create", "events.events.k8s.io"),
    ("patch", "events.events.k8s.io"),
];

/// What it must not be able to do anywhere: nothing it does not call.
const DENIED: &[(&str, &str)] = &[
    // ShardedClusters belong to users; the operator writes only their status.
    ("create", "shardedclusters.ringmaster.dev"),
    ("update", "shardedclusters.ringmaster.dev"),
    ("patch", "shardedclusters.ringmaster.dev"),
    ("delete", "shardedclusters.ringmaster.dev"),
    ("update", "shardedclusters.ringmaster.dev#status"),
    // Shards: created and applied, never replaced; deleted one by one once drained.
    ("update", "shards.ringmaster.dev"),
    ("deletecollection", "shards.ringmaster.dev"),
    ("update", "shards.ringmaster.dev#status"),
    // ShardMigrations: created, never changed or deleted (their spec is the user's).
    ("update", "shardmigrations.ringmaster.dev"),
    ("patch", "shardmigrations.ringmaster.dev"),
    ("delete", "shardmigrations.ringmaster.dev"),
    ("update", "shardmigrations.ringmaster.dev#status"),
    ("update", "shardmigrations.ringmaster.dev#finalizers"),
    // Core objects are applied (PATCH), never replaced (PUT).
    ("update", "pods"),
    ("update", "services"),
    ("delete", "services"),
    ("update", "persistentvolumeclaims"),
    ("update", "configmaps"),
    ("delete", "configmaps"),
    ("delete", "secrets"),
    ("update", "secrets"),
    ("create", "pods#exec"),
    ("patch", "pods#status"),
    ("create", "pods#eviction"),
    // Routers are Deployments: applied, never replaced or deleted (garbage collection).
    ("update", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("list", "statefulsets.apps"),
    ("delete", "roles.rbac.authorization.k8s.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    // Legacy core Events are not used: events.k8s.io only.
    ("create", "events"),
    ("delete", "events.events.k8s.io"),
    ("delete", "namespaces"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
];

#[tokio::test(flavor = "multi_thread")]
async fn namespaced_install_grants_only_the_watched_namespaces() {
    let cluster = Cluster::shared();
    let release_ns = cluster.namespace("chart-ns").await;
    let team_a = cluster.namespace("chart-team-a").await;
    let other = cluster.namespace("chart-other").await;
    let release = format!("rmn{}", &release_ns.name()[release_ns.name().len() - 5..]);
    let namespaces = format!("watchNamespaces={{{}}}", team_a.name());
    helm_ok(
        cluster,
        &[
            "install",
            &release,
            CHART,
            "--namespace",
            release_ns.name(),
            "--skip-crds",
            "--set",
            "replicas=0",
            "--set",
            &namespaces,
            "--set",
            "rbac.aggregateToDefaultRoles=false",
            "--wait",
            "--timeout",
            "60s",
        ],
    );
    let sa = format!(
        "system:serviceaccount:{}:{release}-ringmaster",
        release_ns.name()
    );
    for (verb, resource) in GRANTED {
        assert!(
            can_i(cluster, &sa, verb, resource, team_a.name()),
            "cannot {verb} {resource} in the watched namespace"
        );
        assert!(
            !can_i(cluster, &sa, verb, resource, other.name()),
            "can {verb} {resource} in an unwatched namespace"
        );
    }
    for (verb, resource) in DENIED {
        assert!(
            !can_i(cluster, &sa, verb, resource, team_a.name()),
            "can {verb} {resource}"
        );
    }
    assert_lease_rules(cluster, &sa, release_ns.name());
    helm_ok(
        cluster,
        &[
            "uninstall",
            &release,
            "--namespace",
            release_ns.name(),
            "--wait",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_wide_install_grants_every_namespace() {
    let cluster = Cluster::shared();
    let release_ns = cluster.namespace("chart-cw").await;
    let anywhere = cluster.namespace("chart-any").await;
    let release = format!("rmc{}", &release_ns.name()[release_ns.name().len() - 5..]);
    helm_ok(
        cluster,
        &[
            "install",
            &release,
            CHART,
            "--namespace",
            release_ns.name(),
            "--set",
            "replicas=0",
            "--wait",
            "--timeout",
            "60s",
        ],
    );
    // The chart's CRDs were installed (or already were) and are served.
    let crds = cluster.kubectl(&[
        "get",
        "crd",
        "shardedclusters.ringmaster.dev",
        "shards.ringmaster.dev",
        "shardmigrations.ringmaster.dev",
    ]);
    assert!(
        crds.status.success(),
        "{}",
        String::from_utf8_lossy(&crds.stderr)
    );
    let sa = format!(
        "system:serviceaccount:{}:{release}-ringmaster",
        release_ns.name()
    );
    for (verb, resource) in GRANTED {
        assert!(
            can_i(cluster, &sa, verb, resource, anywhere.name()),
            "cannot {verb} {resource}"
        );
    }
    for (verb, resource) in DENIED {
        assert!(
            !can_i(cluster, &sa, verb, resource, anywhere.name()),
            "can {verb} {resource}"
        );
    }
    assert_lease_rules(cluster, &sa, release_ns.name());
    // Namespace editors manage ShardedClusters and ShardMigrations through the
    // aggregated roles; Shards are the operator's, so they may only read them.
    bind_default_role(cluster, "edit", "alice", anywhere.name());
    wait_for_grant(
        cluster,
        "alice",
        "create",
        "shardedclusters.ringmaster.dev",
        anywhere.name(),
    )
    .await;
    for (verb, resource) in [
        ("get", "shardedclusters.ringmaster.dev"),
        ("update", "shardedclusters.ringmaster.dev"),
        ("patch", "shardedclusters.ringmaster.dev"),
        ("delete", "shardedclusters.ringmaster.dev"),
        ("create", "shardmigrations.ringmaster.dev"),
        ("delete", "shardmigrations.ringmaster.dev"),
        ("get", "shards.ringmaster.dev"),
        ("list", "shards.ringmaster.dev"),
        ("watch", "shards.ringmaster.dev"),
    ] {
        assert!(
            can_i(cluster, "alice", verb, resource, anywhere.name()),
            "an editor cannot {verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("create", "shards.ringmaster.dev"),
        ("update", "shards.ringmaster.dev"),
        ("patch", "shards.ringmaster.dev"),
        ("delete", "shards.ringmaster.dev"),
        ("deletecollection", "shards.ringmaster.dev"),
        ("patch", "shards.ringmaster.dev#status"),
        ("patch", "shardedclusters.ringmaster.dev#status"),
    ] {
        assert!(
            !can_i(cluster, "alice", verb, resource, anywhere.name()),
            "an editor can {verb} {resource}"
        );
    }
    // Viewers read all three kinds and change none.
    bind_default_role(cluster, "view", "bob", anywhere.name());
    wait_for_grant(
        cluster,
        "bob",
        "list",
        "shards.ringmaster.dev",
        anywhere.name(),
    )
    .await;
    for resource in [
        "shardedclusters.ringmaster.dev",
        "shards.ringmaster.dev",
        "shardmigrations.ringmaster.dev",
    ] {
        assert!(can_i(cluster, "bob", "get", resource, anywhere.name()));
        assert!(can_i(cluster, "bob", "watch", resource, anywhere.name()));
        for verb in ["create", "patch", "delete"] {
            assert!(
                !can_i(cluster, "bob", verb, resource, anywhere.name()),
                "a viewer can {verb} {resource}"
            );
        }
    }
    helm_ok(
        cluster,
        &[
            "uninstall",
            &release,
            "--namespace",
            release_ns.name(),
            "--wait",
        ],
    );
}

/// Binds the built-in ClusterRole `role` to `user` in `ns`.
fn bind_default_role(cluster: &Cluster, role: &str, user: &str, ns: &str) {
    let out = cluster.kubectl(&[
        "create",
        "rolebinding",
        &format!("{user}-{role}"),
        &format!("--clusterrole={role}"),
        &format!("--user={user}"),
        "-n",
        ns,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (aggregation is asynchronous) until `user` may `verb` `resource` in `ns`.
async fn wait_for_grant(cluster: &Cluster, user: &str, verb: &str, resource: &str, ns: &str) {
    let granted = ringmaster_e2e::wait_for(
        &format!("the aggregated roles to let {user} {verb} {resource}"),
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(200),
        || async { Ok(can_i(cluster, user, verb, resource, ns).then_some(())) },
    )
    .await;
    assert!(granted.is_ok(), "{granted:?}");
}

fn assert_lease_rules(cluster: &Cluster, sa: &str, ns: &str) {
    assert!(can_i(
        cluster,
        sa,
        "get",
        "leases.coordination.k8s.io/ringmaster-operator",
        ns
    ));
    assert!(can_i(
        cluster,
        sa,
        "update",
        "leases.coordination.k8s.io/ringmaster-operator",
        ns
    ));
    assert!(can_i(
        cluster,
        sa,
        "create",
        "leases.coordination.k8s.io",
        ns
    ));
    assert!(!can_i(
        cluster,
        sa,
        "update",
        "leases.coordination.k8s.io/someone-else",
        ns
    ));
    assert!(!can_i(
        cluster,
        sa,
        "delete",
        "leases.coordination.k8s.io/ringmaster-operator",
        ns
    ));
}
