//! `e2e-cluster run`: starts a cluster, announces it, watches it and tears it down.
//!
//! Every process is spawned from the main thread (their `PR_SET_PDEATHSIG` fires
//! when the spawning thread exits), so the supervisor drives everything on a
//! current-thread tokio runtime. It is a child subreaper, so orphans of its
//! children come back to it and are reaped at teardown.

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::oneshot;

use crate::bins;
use crate::components::{NodeBins, Plan};
use crate::health;
use crate::info::ClusterInfo;
use crate::kubeconfig::{self, CLUSTER_NAME, Credentials};
use crate::layout::Layout;
use crate::logging::log;
use crate::pki::{self, Pki, PkiSpec};
use crate::ports::{self, Ports};
use crate::process::{self, Proc, ProcSpec, pid_alive};
use crate::slot;

const ETCD_TIMEOUT: Duration = Duration::from_secs(30);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(120);
const NODE_TIMEOUT: Duration = Duration::from_secs(90);
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const NODE_GRACE: Duration = Duration::from_secs(45);
const CONTROL_PLANE_GRACE: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 30;
/// Name of the ClusterRoleBinding that makes the node's user a cluster admin.
pub const NODE_BINDING: &str = "ringmaster-e2e:nodes-cluster-admin";

/// How `e2e-cluster run` was asked to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Cluster directory; default `${TMPDIR:-/tmp}/ringmaster-e2e/<slot>-<pid>`.
    pub dir: Option<PathBuf>,
    /// Tear down when stdin reaches EOF.
    pub lifeline_stdin: bool,
    /// Run the node agent (`RINGMASTER_E2E_NO_NODE=1` turns it off).
    pub node: bool,
    /// Name of the Node.
    pub node_name: String,
    /// The node's image map.
    pub images: PathBuf,
    /// A fixed slot instead of the first free one.
    pub slot: Option<u8>,
}

/// Runs a cluster until it is told to stop or a process dies; returns the exit code.
pub fn run(opts: RunOptions) -> Result<i32> {
    crate::logging::init();
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(supervise(opts))
}

/// Why the supervisor stops.
enum Outcome {
    Started(Box<ClusterInfo>),
    Failed(anyhow::Error),
    Stopped(&'static str),
}

async fn supervise(opts: RunOptions) -> Result<i32> {
    let mut stop = StopRequests::install(opts.lifeline_stdin)?;
    let cache = bins::cache_dir();
    let slot = match opts.slot {
        Some(n) => slot::acquire(&cache, n)?,
        None => slot::acquire_any(&cache)?,
    };
    let layout = Layout::new(cluster_dir(opts.dir.as_deref(), slot.slot())?);
    prepare_dir(&layout)?;
    crate::logging::log_to(&layout.log("supervisor"))?;
    log(format!(
        "slot {} in {}",
        slot.slot(),
        layout.root().display()
    ));
    let mut procs = Procs::default();
    let code = run_cluster(&opts, &layout, slot.slot(), &mut procs, &mut stop).await;
    procs.teardown();
    finish(&layout);
    Ok(code)
}

/// Starts the cluster, announces it and watches it; returns the exit code. The
/// caller tears down whatever was started, whatever happened.
async fn run_cluster(
    opts: &RunOptions,
    layout: &Layout,
    slot: u8,
    procs: &mut Procs,
    stop: &mut StopRequests,
) -> i32 {
    let started = Instant::now();
    let outcome = tokio::select! {
        r = start(opts, layout, slot, procs) => match r {
            Ok(info) => Outcome::Started(Box::new(info)),
            Err(e) => Outcome::Failed(e),
        },
        reason = stop.next() => Outcome::Stopped(reason),
    };
    match outcome {
        Outcome::Started(info) => {
            log(format!("cluster ready in {:.1?}", started.elapsed()));
            if let Err(err) = announce(&info, layout) {
                log(format!("announcing the cluster failed: {err:#}"));
                return 1;
            }
            watch(procs, stop).await
        }
        Outcome::Failed(err) => {
            log(format!("startup failed: {err:#}"));
            1
        }
        Outcome::Stopped(reason) => {
            log(format!("stopping during startup: {reason}"));
            0
        }
    }
}

/// The cluster directory: `dir`, or a fresh one per slot and pid under the temp dir.
fn cluster_dir(dir: Option<&Path>, slot: u8) -> Result<PathBuf> {
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            let base = std::env::temp_dir().join("ringmaster-e2e");
            prune_stale(&base, slot);
            base.join(format!("{slot}-{}", std::process::id()))
        }
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// Removes directories of earlier clusters of this slot (we hold the slot, so
/// none of them runs); the newest logs of a slot stay until it is reused.
fn prune_stale(base: &Path, slot: u8) {
    let prefix = format!("{slot}-");
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Refuses a directory another supervisor runs in; replaces what a fresh start owns.
fn prepare_dir(layout: &Layout) -> Result<()> {
    let other = read_pid(&layout.supervisor_pid()).filter(|p| *p != std::process::id());
    if let Some(pid) = other.filter(|p| pid_alive(*p)) {
        bail!(
            "a cluster already runs in {} (supervisor pid {pid}); stop it with \
             `e2e-cluster down --dir {}`",
            layout.root().display(),
            layout.root().display()
        );
    }
    for entry in layout.owned_entries() {
        let removed = match fs::symlink_metadata(&entry) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&entry),
            Ok(_) => fs::remove_file(&entry),
            Err(_) => Ok(()),
        };
        removed.with_context(|| format!("removing {}", entry.display()))?;
    }
    for dir in [layout.logs(), layout.node_state(), layout.helm_home()] {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(layout.supervisor_pid(), format!("{}\n", std::process::id()))
        .context("writing the pid file")
}

/// The pid in a pid file.
pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Writes `cluster.json` and prints `READY <path>`.
fn announce(info: &ClusterInfo, layout: &Layout) -> Result<()> {
    let path = layout.cluster_json();
    info.save(&path)?;
    let mut stdout = std::io::stdout().lock();
    // The reader may be gone already; the cluster runs regardless.
    let _ = writeln!(stdout, "READY {}", path.display());
    let _ = stdout.flush();
    Ok(())
}

/// Removes the files that say the cluster runs.
fn finish(layout: &Layout) {
    let _ = fs::remove_file(layout.cluster_json());
    if read_pid(&layout.supervisor_pid()) == Some(std::process::id()) {
        let _ = fs::remove_file(layout.supervisor_pid());
    }
    log("stopped");
}

/// Waits for a stop request (0) or an unexpected death (1).
async fn watch(procs: &mut Procs, stop: &mut StopRequests) -> i32 {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            reason = stop.next() => {
                log(format!("stopping: {reason}"));
                return 0;
            }
            _ = tick.tick() => {
                if let Err(err) = procs.check_alive() {
                    log(format!("{err:#}"));
                    return 1;
                }
                ticks += 1;
                if ticks.is_multiple_of(20) {
                    let tracked: Vec<u32> = procs.pids().into_values().collect();
                    process::reap_orphans(&tracked);
                }
            }
        }
    }
}

/// Starts every process in order, waiting for each to be usable.
async fn start(
    opts: &RunOptions,
    layout: &Layout,
    slot: u8,
    procs: &mut Procs,
) -> Result<ClusterInfo> {
    let bin_dir = bins::k8s_bin_dir()?;
    let node = opts.node.then(|| node_bins(opts)).transpose()?;
    let service_cidr = slot::service_cidr(slot);
    let pki = Pki::generate(&PkiSpec {
        node_name: opts.node_name.clone(),
        service_ip: slot::first_ip(service_cidr),
    })?;
    let plan = Plan {
        pki: pki.write(&layout.pki())?,
        layout: layout.clone(),
        ports: Ports::pick()?,
        pod_cidr: slot::pod_cidr(slot),
        service_cidr,
        bin_dir: bin_dir.clone(),
    };
    write_kubeconfigs(&plan, &pki, &opts.node_name)?;
    let client = start_control_plane(&plan, procs).await?;
    if let Some(node) = &node {
        start_node(&plan, node, &opts.node_name, &client, procs).await?;
    }
    let default_ns = || health::namespace_ready(&client, "default");
    let what = "the default ServiceAccount";
    procs
        .await_up(
            "kube-controller-manager",
            what,
            SERVICE_ACCOUNT_TIMEOUT,
            default_ns,
        )
        .await?;
    let node_name = node.is_some().then(|| opts.node_name.clone());
    Ok(cluster_info(&plan, slot, node_name, procs))
}

fn node_bins(opts: &RunOptions) -> Result<NodeBins> {
    Ok(NodeBins {
        localnode: bins::workspace_bin("localnode", bins::LOCALNODE_ENV)?,
        images: opts.images.clone(),
        ringmaster: bins::workspace_bin_path("ringmaster", bins::RINGMASTER_ENV),
    })
}

fn write_kubeconfigs(plan: &Plan, pki: &Pki, node_name: &str) -> Result<()> {
    let server = plan.apiserver_url();
    let layout = &plan.layout;
    let node_user = pki::node_user(node_name);
    let configs = [
        (layout.admin_kubeconfig(), pki::ADMIN_USER, &pki.admin),
        (
            layout.controller_manager_kubeconfig(),
            pki::CONTROLLER_MANAGER_USER,
            &pki.controller_manager,
        ),
        (
            layout.node_kubeconfig(),
            node_user.as_str(),
            &pki.node_client,
        ),
    ];
    for (path, user, pem) in configs {
        let creds = Credentials {
            user,
            cert: &pem.cert,
            key: &pem.key,
        };
        kubeconfig::write(&path, &server, &pki.ca.cert, creds)?;
    }
    Ok(())
}

/// etcd, kube-apiserver (until `/readyz`), kube-controller-manager; returns an
/// admin client.
async fn start_control_plane(plan: &Plan, procs: &mut Procs) -> Result<Client> {
    procs.start(&plan.etcd(), &plan.layout)?;
    let etcd_port = plan.ports.etcd_client;
    let etcd_up = || async move { Ok(ports::is_listening(etcd_port).then_some(())) };
    procs
        .await_up("etcd", "etcd to accept connections", ETCD_TIMEOUT, etcd_up)
        .await?;
    procs.start(&plan.apiserver(), &plan.layout)?;
    let client = crate::client::from_kubeconfig(&plan.layout.admin_kubeconfig()).await?;
    let readyz = || health::apiserver_ready(&client);
    let what = "kube-apiserver /readyz";
    procs
        .await_up("kube-apiserver", what, APISERVER_TIMEOUT, readyz)
        .await?;
    procs.start(&plan.controller_manager(), &plan.layout)?;
    Ok(client)
}

/// Binds the node's user to `cluster-admin`, starts the node agent and waits
/// until the Node is Ready.
async fn start_node(
    plan: &Plan,
    node: &NodeBins,
    node_name: &str,
    client: &Client,
    procs: &mut Procs,
) -> Result<()> {
    grant_node_access(client).await?;
    procs.start(&plan.localnode(node, node_name), &plan.layout)?;
    let ready = || health::node_ready(client, node_name);
    let what = format!("Node {node_name} to be Ready");
    procs
        .await_up("localnode", &what, NODE_TIMEOUT, ready)
        .await
}

/// The node runs without the Node authorizer (RBAC only): its user
/// `system:node:<name>` (group `system:nodes`) gets `cluster-admin`.
async fn grant_node_access(client: &Client) -> Result<()> {
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": { "name": NODE_BINDING },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": pki::NODES_GROUP }],
    }))?;
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    match api.create(&PostParams::default(), &binding).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).context("creating the node's ClusterRoleBinding"),
    }
}

fn cluster_info(plan: &Plan, slot: u8, node_name: Option<String>, procs: &Procs) -> ClusterInfo {
    let layout = &plan.layout;
    ClusterInfo {
        name: CLUSTER_NAME.into(),
        dir: layout.root().to_path_buf(),
        slot,
        kubeconfig: layout.admin_kubeconfig(),
        ca_cert: plan.pki.ca.cert.clone(),
        apiserver_url: plan.apiserver_url(),
        ports: plan.ports,
        pod_cidr: plan.pod_cidr.to_string(),
        service_cidr: plan.service_cidr.to_string(),
        bin_dir: plan.bin_dir.clone(),
        node_name,
        node_state_dir: layout.node_state(),
        logs_dir: layout.logs(),
        supervisor_pid: std::process::id(),
        pids: procs.pids(),
    }
}

/// The processes of the cluster, in start order.
#[derive(Debug, Default)]
struct Procs {
    list: Vec<Proc>,
}

impl Procs {
    fn start(&mut self, spec: &ProcSpec, layout: &Layout) -> Result<()> {
        log(format!(
            "starting {} (log {})",
            spec.name,
            layout.log(spec.name).display()
        ));
        self.list.push(Proc::spawn(spec, &layout.log(spec.name))?);
        Ok(())
    }

    fn pids(&self) -> BTreeMap<String, u32> {
        let pids = self.list.iter().map(|p| (p.name().to_string(), p.pid()));
        pids.collect()
    }

    /// Fails, naming the process and its last log lines, if any process exited.
    fn check_alive(&mut self) -> Result<()> {
        for proc in &mut self.list {
            if let Some(status) = proc.exited() {
                bail!(
                    "{} (pid {}) exited unexpectedly with {status}; last lines of {}:\n{}",
                    proc.name(),
                    proc.pid(),
                    proc.log().display(),
                    proc.log_tail(LOG_TAIL_LINES)
                );
            }
        }
        Ok(())
    }

    fn tail_of(&self, name: &str) -> String {
        let proc = self.list.iter().find(|p| p.name() == name);
        proc.map(|p| {
            format!(
                "last lines of {}:\n{}",
                p.log().display(),
                p.log_tail(LOG_TAIL_LINES)
            )
        })
        .unwrap_or_default()
    }

    /// Polls `probe` until it yields, failing early if a process dies and at the
    /// timeout with the last observation and the tail of `component`'s log.
    async fn await_up<F, Fut>(
        &mut self,
        component: &str,
        what: &str,
        timeout: Duration,
        mut probe: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<()>>>,
    {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            let last = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(Some(()))) => {
                    log(format!("{what}: ok after {:.1?}", started.elapsed()));
                    return Ok(());
                }
                Ok(Ok(None)) => "not yet".to_string(),
                Ok(Err(err)) => format!("{err:#}"),
                Err(_) => format!("probe timed out after {PROBE_TIMEOUT:?}"),
            };
            if started.elapsed() >= timeout {
                return Err(anyhow!(
                    "timed out after {:.1?} waiting for {what}; last observation: {last}\n{}",
                    started.elapsed(),
                    self.tail_of(component)
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops every process in reverse start order (the node first, so it stops its
    /// pods), then kills and reaps anything left.
    fn teardown(&mut self) {
        while let Some(mut proc) = self.list.pop() {
            let grace = match proc.name() {
                "localnode" => NODE_GRACE,
                _ => CONTROL_PLANE_GRACE,
            };
            let started = Instant::now();
            let status = proc.terminate(grace);
            log(format!(
                "stopped {} (pid {}) in {:.1?}: {}",
                proc.name(),
                proc.pid(),
                started.elapsed(),
                status.map_or("not reaped".to_string(), |s| s.to_string())
            ));
        }
        let left = process::reap_all(Duration::from_secs(5));
        if !left.is_empty() {
            log(format!("processes that could not be reaped: {left:?}"));
        }
    }
}

/// The ways the supervisor is asked to stop: SIGTERM, SIGINT, SIGHUP and, with a
/// lifeline, EOF on stdin.
struct StopRequests {
    term: Signal,
    int: Signal,
    hup: Signal,
    lifeline: Option<oneshot::Receiver<()>>,
}

impl StopRequests {
    fn install(lifeline_stdin: bool) -> Result<StopRequests> {
        Ok(StopRequests {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            lifeline: lifeline_stdin.then(watch_stdin),
        })
    }

    /// Waits for the next stop request and names it.
    async fn next(&mut self) -> &'static str {
        let StopRequests {
            term,
            int,
            hup,
            lifeline,
        } = self;
        let eof = async {
            match lifeline {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
            () = eof => "stdin reached EOF (lifeline)",
        }
    }
}

/// A thread that reads stdin to EOF, then fires the returned receiver.
fn watch_stdin() -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_dir_replaces_only_owned_entries() {
        let root = std::env::temp_dir().join(format!("ringmaster-prep-{}", std::process::id()));
        let layout = Layout::new(&root);
        fs::create_dir_all(layout.etcd_data()).unwrap();
        fs::write(layout.etcd_data().join("old"), "x").unwrap();
        fs::write(layout.cluster_json(), "{}").unwrap();
        fs::write(root.join("mine.txt"), "keep").unwrap();
        prepare_dir(&layout).unwrap();
        assert!(!layout.etcd_data().exists());
        assert!(!layout.cluster_json().exists());
        assert!(layout.logs().is_dir());
        assert_eq!(fs::read_to_string(root.join("mine.txt")).unwrap(), "keep");
        assert_eq!(read_pid(&layout.supervisor_pid()), Some(std::process::id()));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_directory_with_a_live_supervisor_is_refused() {
        let root = std::env::temp_dir().join(format!("ringmaster-busy-{}", std::process::id()));
        let layout = Layout::new(&root);
        fs::create_dir_all(&root).unwrap();
        // pid 1 is alive and is not us.
        fs::write(layout.supervisor_pid(), "1\n").unwrap();
        let err = prepare_dir(&layout).unwrap_err().to_string();
        assert!(err.contains("already runs"), "{err}");
        fs::remove_dir_all(root).unwrap();
    }
}
