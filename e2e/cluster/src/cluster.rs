//! The Rust API of the local cluster for tests.

use std::collections::VecDeque;
use std::env;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::bins;
use crate::info::ClusterInfo;
use crate::layout::Layout;
use crate::namespace::TestNamespace;

/// Path of a running cluster's `cluster.json` to reuse instead of starting one.
pub const CLUSTER_ENV: &str = "RINGMASTER_E2E_CLUSTER";
/// Set (to anything but `0`) to run the control plane without the node agent.
pub const NO_NODE_ENV: &str = "RINGMASTER_E2E_NO_NODE";
/// Set to echo the supervisor's log to stderr.
pub const VERBOSE_ENV: &str = "RINGMASTER_E2E_VERBOSE";
const START_TIMEOUT: Duration = Duration::from_secs(300);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
const STDERR_TAIL: usize = 60;

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Run the node agent (default: unless `RINGMASTER_E2E_NO_NODE` is set).
    pub node: bool,
    /// Cluster directory (default: a fresh one under `${TMPDIR:-/tmp}/ringmaster-e2e`).
    pub dir: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            node: !env_flag(NO_NODE_ENV),
            dir: None,
        }
    }
}

fn env_flag(name: &str) -> bool {
    env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A running local cluster: either started by this process (an `e2e-cluster run
/// --lifeline-stdin` child that tears everything down when this process exits or
/// the handle is stopped or dropped) or attached to one started elsewhere.
#[derive(Debug)]
pub struct Cluster {
    info: ClusterInfo,
    supervisor: Option<Supervisor>,
}

/// The supervisor child and its lifeline.
#[derive(Debug)]
struct Supervisor {
    child: Child,
    lifeline: Option<ChildStdin>,
    stderr: Arc<Mutex<StderrLog>>,
}

impl Cluster {
    /// The cluster shared by every test of this test binary, started on first use.
    ///
    /// Reuses the cluster of `$RINGMASTER_E2E_CLUSTER` (a `cluster.json`, e.g. from
    /// `make cluster-up`) if it runs; otherwise starts one that lives as long as the
    /// test binary. Panics with the reason if no cluster can be had.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        let shared = SHARED.get_or_init(|| Cluster::shared_init().map_err(|e| format!("{e:#}")));
        match shared {
            Ok(cluster) => cluster,
            Err(e) => panic!("the shared test cluster is not available: {e}"),
        }
    }

    fn shared_init() -> Result<Cluster> {
        if let Some(path) = env::var_os(CLUSTER_ENV).filter(|p| !p.is_empty()) {
            match Cluster::attach(Path::new(&path)) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => eprintln!("warning: {CLUSTER_ENV}: {e:#}; starting a cluster instead"),
            }
        }
        Cluster::start(ClusterOptions::default())
    }

    /// Attaches to the running cluster described by `cluster_json`.
    pub fn attach(cluster_json: &Path) -> Result<Cluster> {
        let info = ClusterInfo::load(cluster_json)?;
        if !info.is_running() {
            bail!(
                "the cluster of {} is not running (supervisor pid {} is gone)",
                cluster_json.display(),
                info.supervisor_pid
            );
        }
        Ok(Cluster {
            info,
            supervisor: None,
        })
    }

    /// Starts a cluster owned by this handle (see [`Cluster::stop`]).
    pub fn start(opts: ClusterOptions) -> Result<Cluster> {
        let exe = bins::workspace_bin("e2e-cluster", bins::E2E_CLUSTER_ENV)?;
        let mut cmd = Command::new(&exe);
        cmd.args(["run", "--lifeline-stdin"]);
        if !opts.node {
            cmd.arg("--no-node");
        }
        if let Some(dir) = &opts.dir {
            cmd.arg("--dir").arg(dir);
        }
        let mut child = cmd
            .env_remove(NO_NODE_ENV)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stderr = StderrLog::collect(child.stderr.take().expect("piped stderr"));
        let ready = read_ready(child.stdout.take().expect("piped stdout"));
        let lifeline = child.stdin.take();
        let mut supervisor = Supervisor {
            child,
            lifeline,
            stderr,
        };
        match ready.recv_timeout(START_TIMEOUT) {
            Ok(Ok(path)) => {
                let info = ClusterInfo::load(&path)?;
                Ok(Cluster {
                    info,
                    supervisor: Some(supervisor),
                })
            }
            Ok(Err(e)) => Err(supervisor.fail(e)),
            Err(_) => Err(supervisor.fail(anyhow!("not ready after {START_TIMEOUT:?}"))),
        }
    }

    /// Stops a cluster this handle started and waits until its supervisor (which
    /// reaps every process of the cluster) has exited. An attached cluster is left
    /// running.
    pub fn stop(mut self) -> Result<()> {
        let Some(mut supervisor) = self.supervisor.take() else {
            return Ok(());
        };
        drop(supervisor.lifeline.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = supervisor.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "the supervisor exited with {status}:\n{}",
                        supervisor.stderr_tail()
                    );
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = supervisor.child.kill();
                let _ = supervisor.child.wait();
                bail!(
                    "the supervisor did not stop within {STOP_TIMEOUT:?}:\n{}",
                    supervisor.stderr_tail()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// What `cluster.json` says about the cluster (ports, pids, ranges, ...).
    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    /// A client with admin credentials, bound to the current tokio runtime.
    pub async fn client(&self) -> kube::Client {
        crate::client::from_kubeconfig(self.kubeconfig_path())
            .await
            .expect("a client from the admin kubeconfig")
    }

    /// The admin kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.info.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn apiserver_url(&self) -> &str {
        &self.info.apiserver_url
    }

    /// The control-plane binaries (kubectl, helm, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.info.bin_dir
    }

    /// The cluster directory (logs in `logs/`).
    pub fn dir(&self) -> &Path {
        &self.info.dir
    }

    /// The Node's name (empty without a node).
    pub fn node_name(&self) -> &str {
        self.info.node_name.as_deref().unwrap_or("")
    }

    /// The node agent's state directory.
    pub fn node_state_dir(&self) -> &Path {
        &self.info.node_state_dir
    }

    /// A `kubectl` command with `KUBECONFIG` set (for stdin or a custom environment).
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir().join("kubectl"));
        cmd.env("KUBECONFIG", self.kubeconfig_path())
            .env("KUBECACHEDIR", Layout::new(self.dir()).kube_cache());
        cmd
    }

    /// A `helm` command with `KUBECONFIG` and helm's homes inside the cluster directory.
    pub fn helm_command(&self) -> Command {
        let home = Layout::new(self.dir()).helm_home();
        let mut cmd = Command::new(self.bin_dir().join("helm"));
        cmd.env("KUBECONFIG", self.kubeconfig_path())
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        cmd
    }

    /// Runs `kubectl <args>` and returns its output (panics if it cannot run).
    pub fn kubectl<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        run_tool(self.kubectl_command(), args, "kubectl")
    }

    /// Runs `helm <args>` and returns its output (panics if it cannot run).
    pub fn helm<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        run_tool(self.helm_command(), args, "helm")
    }

    /// Creates a namespace `<prefix>-<random>`, usable for Pods, deleted (and
    /// awaited, bounded) when the returned value is dropped.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let client = self.client().await;
        TestNamespace::create(&client, prefix, self.kubectl_command())
            .await
            .expect("a test namespace")
    }
}

fn run_tool<S: AsRef<OsStr>>(mut cmd: Command, args: &[S], name: &str) -> Output {
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {name} ({:?}): {e}", cmd.get_program()))
}

impl Supervisor {
    /// Kills a supervisor that failed to start and describes why.
    fn fail(&mut self, err: anyhow::Error) -> anyhow::Error {
        drop(self.lifeline.take());
        let _ = self.child.kill();
        let status = self.child.wait().map(|s| s.to_string());
        // Let the stderr thread drain what the supervisor wrote last.
        sleep(Duration::from_millis(200));
        anyhow!(
            "the local cluster did not start ({err:#}; supervisor {}):\n{}",
            status.unwrap_or_else(|e| e.to_string()),
            self.stderr_tail()
        )
    }

    fn stderr_tail(&self) -> String {
        let log = self.stderr.lock().unwrap();
        log.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// Reads the supervisor's stdout until `READY <path>`, then drains it.
fn read_ready(stdout: impl std::io::Read + Send + 'static) -> mpsc::Receiver<Result<PathBuf>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(path) = line.strip_prefix("READY ") {
                let _ = tx.send(Ok(PathBuf::from(path.trim())));
            }
        }
        let _ = tx.send(Err(anyhow!("the supervisor exited before it was ready")));
    });
    rx
}

/// The last lines of the supervisor's stderr (for error messages; the supervisor
/// also logs to `<dir>/logs/supervisor.log` itself).
#[derive(Debug, Default)]
struct StderrLog {
    tail: VecDeque<String>,
    echo: bool,
}

impl StderrLog {
    fn collect(stderr: impl std::io::Read + Send + 'static) -> Arc<Mutex<StderrLog>> {
        let log = Arc::new(Mutex::new(StderrLog {
            echo: env_flag(VERBOSE_ENV),
            ..StderrLog::default()
        }));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        log
    }

    fn push(&mut self, line: String) {
        if self.echo {
            eprintln!("{line}");
        }
        self.tail.push_back(line);
        if self.tail.len() > STDERR_TAIL {
            self.tail.pop_front();
        }
    }
}
