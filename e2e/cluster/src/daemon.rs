//! `e2e-cluster up | down | status`: a long-lived cluster in the background.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::info::ClusterInfo;
use crate::layout::Layout;
use crate::process::{pid_alive, rss_kib, tail};
use crate::supervisor::read_pid;

const UP_TIMEOUT: Duration = Duration::from_secs(300);
const DOWN_TIMEOUT: Duration = Duration::from_secs(90);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(200);

/// Starts `e2e-cluster run --dir <dir> <run_args>` detached (its output in
/// `<dir>/supervisor.log`), waits until it is ready and prints how to use it.
pub fn up(dir: &Path, run_args: &[String]) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let layout = Layout::new(dir.canonicalize()?);
    if let Some(pid) = running_supervisor(&layout) {
        println!(
            "a cluster already runs in {} (pid {pid})",
            layout.root().display()
        );
        return print_usage(&layout);
    }
    let _ = fs::remove_file(layout.cluster_json());
    let log = File::create(layout.supervisor_log())?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("run")
        .arg("--dir")
        .arg(layout.root())
        .args(run_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches from the terminal and its signals.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
    }
    let mut child = cmd.spawn().context("starting the supervisor")?;
    let started = Instant::now();
    eprintln!("starting the cluster in {} ...", layout.root().display());
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the supervisor exited with {status} before the cluster was ready; {}:\n{}",
                layout.supervisor_log().display(),
                tail(&layout.supervisor_log(), 40)
            );
        }
        let info = ClusterInfo::load(&layout.cluster_json()).ok();
        if info.is_some_and(|i| i.supervisor_pid == child.id()) {
            break;
        }
        if started.elapsed() > UP_TIMEOUT {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            bail!(
                "the cluster was not ready after {UP_TIMEOUT:?}; stopping it. {}:\n{}",
                layout.supervisor_log().display(),
                tail(&layout.supervisor_log(), 40)
            );
        }
        sleep(POLL);
    }
    println!("cluster ready in {:.1?}", started.elapsed());
    print_usage(&layout)
}

fn print_usage(layout: &Layout) -> Result<()> {
    let info = ClusterInfo::load(&layout.cluster_json())?;
    println!("kubeconfig: {}", info.kubeconfig.display());
    println!("export KUBECONFIG={}", info.kubeconfig.display());
    println!(
        "export RINGMASTER_E2E_CLUSTER={}   # tests reuse this cluster",
        layout.cluster_json().display()
    );
    println!(
        "export PATH={}:$PATH   # kubectl, helm",
        info.bin_dir.display()
    );
    Ok(())
}

/// The supervisor's pid, if one runs in the directory.
fn running_supervisor(layout: &Layout) -> Option<u32> {
    read_pid(&layout.supervisor_pid()).filter(|pid| pid_alive(*pid))
}

/// Stops the supervisor of `dir` and waits until it and every process it ran are gone.
pub fn down(dir: &Path) -> Result<()> {
    let layout = Layout::new(dir);
    let Some(pid) = running_supervisor(&layout) else {
        println!("no cluster runs in {}", dir.display());
        return Ok(());
    };
    let info = ClusterInfo::load(&layout.cluster_json()).ok();
    let mut pids: Vec<(String, u32)> = vec![("e2e-cluster".into(), pid)];
    if let Some(info) = &info {
        pids.extend(info.pids.iter().map(|(n, p)| (n.clone(), *p)));
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    eprintln!(
        "stopping the cluster in {} (supervisor pid {pid}) ...",
        dir.display()
    );
    if wait_gone(&pids, DOWN_TIMEOUT).is_empty() {
        println!("cluster stopped");
        return Ok(());
    }
    // SIGKILL the supervisor: its children die with it (PR_SET_PDEATHSIG).
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let left = wait_gone(&pids, KILL_TIMEOUT);
    if !left.is_empty() {
        bail!("processes still alive after stopping the cluster: {left:?}");
    }
    println!("cluster stopped (the supervisor had to be killed)");
    Ok(())
}

fn wait_gone(pids: &[(String, u32)], timeout: Duration) -> Vec<(String, u32)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<_> = pids
            .iter()
            .filter(|(_, p)| pid_alive(*p))
            .cloned()
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        sleep(POLL);
    }
}

/// Prints the state of the cluster in `dir`; `Ok(false)` if none runs.
pub fn status(dir: &Path) -> Result<bool> {
    let layout = Layout::new(dir);
    let Some(pid) = running_supervisor(&layout) else {
        println!("no cluster runs in {}", dir.display());
        return Ok(false);
    };
    let Ok(info) = ClusterInfo::load(&layout.cluster_json()) else {
        println!(
            "a cluster is starting in {} (supervisor pid {pid})",
            dir.display()
        );
        return Ok(true);
    };
    println!("cluster {} running in {}", info.name, info.dir.display());
    println!("  apiserver   {}", info.apiserver_url);
    println!("  kubeconfig  {}", info.kubeconfig.display());
    println!(
        "  slot {}: pods {}, services {}",
        info.slot, info.pod_cidr, info.service_cidr
    );
    println!(
        "  node        {}",
        info.node_name.as_deref().unwrap_or("(none)")
    );
    println!("  logs        {}", info.logs_dir.display());
    for (name, pid) in
        std::iter::once(("e2e-cluster".to_string(), info.supervisor_pid)).chain(info.pids.clone())
    {
        let state = match rss_kib(pid) {
            Some(kib) if pid_alive(pid) => format!("running, RSS {} MiB", kib / 1024),
            _ => "gone".to_string(),
        };
        println!("  {name:<24} pid {pid:<8} {state}");
    }
    Ok(true)
}

/// The default directory of `make cluster-up`.
pub fn default_dir() -> PathBuf {
    crate::bins::workspace_root().join(".e2e/cluster")
}
