//! `ringmaster operator` as a child process of a test or benchmark, scoped to one
//! namespace, logging to a file whose tail goes into failure messages.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringmaster_e2e::Cluster;

/// The operator as a child process; killed (and reaped) on drop.
pub struct Operator {
    child: Child,
    log: PathBuf,
    /// `host:port` of its HTTP endpoint (`/metrics`, `/healthz`).
    pub http: String,
}

impl Operator {
    /// Without leader election, from the test build's binary.
    pub fn start(cluster: &Cluster, namespace: &str) -> Self {
        Self::spawn(
            cluster,
            env!("CARGO_BIN_EXE_ringmaster"),
            namespace,
            &["--leader-election=false"],
            &[],
        )
    }

    /// With leader election on the Lease in `namespace`, as `identity`.
    pub fn elected(cluster: &Cluster, namespace: &str, identity: &str) -> Self {
        let env = [("POD_NAMESPACE", namespace), ("POD_NAME", identity)];
        Self::spawn(
            cluster,
            env!("CARGO_BIN_EXE_ringmaster"),
            namespace,
            &[],
            &env,
        )
    }

    /// `GET http://<http>/<path>` (status code, body).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        super::http_get(&self.http, path).await
    }

    /// Sum of `ringmaster_reconciles_total{controller}` in `/metrics`.
    pub async fn reconciles(&self, controller: &str) -> anyhow::Result<u64> {
        let (_, body) = self.get("/metrics").await?;
        let prefix = format!("ringmaster_reconciles_total{{controller=\"{controller}\"}} ");
        Ok(body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }

    /// `program operator --namespaces <namespace> <args>` with `env` added (and
    /// `--log-level info` unless `args` set one).
    pub fn spawn(
        cluster: &Cluster,
        program: &str,
        namespace: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let http = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("ringmaster-operator-{namespace}-{port}.log"));
        let stderr = File::create(&log).expect("the operator's log file");
        let child = Command::new(program)
            .args(["operator", "--namespaces", namespace])
            .args(["--http-addr", &http, "--log-format", "text"])
            .args(if args.contains(&"--log-level") {
                &[][..]
            } else {
                &["--log-level", "info"][..]
            })
            .args(args)
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env_remove("RUST_LOG")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting ringmaster operator");
        Operator { child, log, http }
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!(
            "operator log {} (last lines):\n{}",
            self.log.display(),
            lines[start..].join("\n")
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Stops with SIGTERM and returns whether it exited 0 in time.
    pub fn terminate(mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
