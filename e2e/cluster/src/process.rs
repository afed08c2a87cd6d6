//! Child processes of the supervisor: spawned with their output in a log file, in
//! their own process group, killed if the supervisor dies; stopped with SIGTERM,
//! then SIGKILL after a grace period.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{Pid, getppid};

/// What to run: a named program with arguments and extra environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSpec {
    /// Name of the process (and of its log file).
    pub name: &'static str,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables added to the supervisor's.
    pub env: Vec<(String, OsString)>,
}

/// A running child process.
#[derive(Debug)]
pub struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `spec` with stdout and stderr appended to `log`.
    ///
    /// The child gets its own process group and `PR_SET_PDEATHSIG=SIGKILL`: it dies
    /// when the thread that spawned it exits, so spawn from a thread that lives as
    /// long as the child should (the supervisor's main thread).
    pub fn spawn(spec: &ProcSpec, log: &Path) -> Result<Proc> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let parent = nix::unistd::getpid();
        // SAFETY: only async-signal-safe calls (prctl, getppid) run between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                if getppid() != parent {
                    return Err(std::io::Error::other("supervisor died during spawn"));
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
        Ok(Proc {
            name: spec.name,
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The exit status, if the process has exited (reaping it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Stops the process: SIGTERM, then SIGKILL to its whole group after `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let pid = Pid::from_raw(self.pid() as i32);
        if self.exited().is_none() {
            let _ = kill(pid, Signal::SIGTERM);
        }
        let status = wait_child(&mut self.child, grace);
        // Whatever the process left behind in its group goes too.
        let _ = killpg(pid, Signal::SIGKILL);
        status.or_else(|| {
            let _ = self.child.kill();
            self.child.wait().ok()
        })
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Direct children of this process (orphans re-parented to a subreaper included).
pub fn children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(me))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Reaps exited children other than `tracked` (orphans re-parented to this
/// subreaper), leaving the tracked ones to their [`Proc`].
pub fn reap_orphans(tracked: &[u32]) {
    for pid in children().into_iter().filter(|p| !tracked.contains(p)) {
        let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
    }
}

/// Kills and reaps every remaining child (for a child subreaper: also orphaned
/// grandchildren), waiting at most `timeout`.
pub fn reap_all(timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
        let left: Vec<u32> = children().into_iter().filter(|p| pid_alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        sleep(Duration::from_millis(50));
    }
}

/// The last `lines` lines of a (possibly large) text file.
pub fn tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: &str) -> ProcSpec {
        ProcSpec {
            name: "test",
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
        }
    }

    fn temp_log(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("ringmaster-proc-{name}-{}.log", std::process::id()))
    }

    #[test]
    fn output_goes_to_the_log_and_exit_is_observed() {
        let log = temp_log("out");
        let mut proc = Proc::spawn(&spec("echo $GREETING; echo two >&2; exit 3"), &log).unwrap();
        let status = wait_child(&mut proc.child, Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(proc.log_tail(10), "hello\ntwo");
        assert_eq!(proc.log_tail(1), "two");
        fs::remove_file(log).unwrap();
    }

    #[test]
    fn terminate_escalates_to_sigkill() {
        let log = temp_log("term");
        let mut proc = Proc::spawn(&spec("trap '' TERM; sleep 30 & wait; sleep 30"), &log).unwrap();
        let pid = proc.pid();
        sleep(Duration::from_millis(200));
        assert!(pid_alive(pid));
        assert!(rss_kib(pid).is_some());
        let started = Instant::now();
        let status = proc.terminate(Duration::from_millis(300)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!status.success());
        assert!(!pid_alive(pid));
        fs::remove_file(log).unwrap();
    }
}
