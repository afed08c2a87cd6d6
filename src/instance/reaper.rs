//! Child processes and PID 1's duty: the agent is the only waiter.
//!
//! As PID 1 of its container (and as a child subreaper elsewhere) the agent
//! inherits every orphaned process, so it waits for *any* child on `SIGCHLD`
//! and hands each status to whoever spawned that child. Nothing else in the
//! agent may wait for a child (no `std::process::Command::output`, no
//! `tokio::process`): every program is started through [`Reaper::spawn`].
//!
//! No unit tests here: waiting for any child inside the shared test binary would
//! steal other tests' children. `tests/instance_agent.rs` covers it end to end
//! (initdb, restarts after kill -9, orphans of a killed postmaster reaped).

use std::collections::HashMap;
use std::fmt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

use super::error::InstanceError;

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(Signal),
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(self) -> bool {
        self == Self::Exited(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exit code {code}"),
            Self::Signaled(sig) => write!(f, "killed by {sig}"),
        }
    }
}

/// A running child started by the [`Reaper`].
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    exit: oneshot::Receiver<ExitStatus>,
    status: Option<ExitStatus>,
}

impl Child {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Waits until it has exited (and been reaped).
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        // The sender lives in the reaper's table until the child is reaped.
        let status = (&mut self.exit).await.unwrap_or(ExitStatus::Exited(-1));
        self.status = Some(status);
        status
    }

    /// Waits at most `timeout`; `None` when it still runs.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.wait()).await.ok()
    }

    /// Sends `signal` to it, unless it has already been reaped (its pid may
    /// belong to another process by then).
    pub fn signal(&mut self, signal: Signal) {
        if self.status.is_some() {
            return;
        }
        if let Ok(status) = self.exit.try_recv() {
            self.status = Some(status);
            return;
        }
        if let Err(e) = nix::sys::signal::kill(self.pid, signal) {
            tracing::warn!(pid = self.pid.as_raw(), %signal, error = %e, "signalling the server");
        }
    }
}

/// Waits for every child of the process and routes exit statuses.
#[derive(Debug, Default)]
pub struct Reaper {
    waiting: Mutex<HashMap<Pid, oneshot::Sender<ExitStatus>>>,
}

impl Reaper {
    /// Becomes the waiter of all children (and, outside a container, a child
    /// subreaper so orphaned grandchildren come here too) and starts reaping.
    pub fn start() -> Result<Arc<Self>, InstanceError> {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become a child subreaper");
        }
        let mut sigchld = signal(SignalKind::child()).map_err(|e| InstanceError::Io {
            action: "listening for",
            path: "SIGCHLD".into(),
            source: e,
        })?;
        let reaper = Arc::new(Self::default());
        let me = Arc::clone(&reaper);
        tokio::spawn(async move {
            loop {
                // The timer is a safety net only: SIGCHLD wakes us on time.
                tokio::select! {
                    _ = sigchld.recv() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                me.reap();
            }
        });
        Ok(reaper)
    }

    /// Starts `cmd` in its own process group; with `parent_death_signal` the
    /// child gets that signal if the agent dies without stopping it.
    pub fn spawn(
        &self,
        cmd: &mut Command,
        parent_death_signal: Option<Signal>,
    ) -> Result<Child, InstanceError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let agent = nix::unistd::getpid();
        cmd.process_group(0);
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls (prctl, getppid); it does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(sig) = parent_death_signal {
                    nix::sys::prctl::set_pdeathsig(sig)?;
                    if nix::unistd::getppid() != agent {
                        return Err(Errno::ESRCH.into());
                    }
                }
                Ok(())
            });
        }
        // Hold the table while forking so the child is registered before it
        // can be reaped.
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let child = cmd
            .spawn()
            .map_err(|source| InstanceError::Spawn { program, source })?;
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
        drop(child); // statuses come through the reaper, never through std
        let (tx, exit) = oneshot::channel();
        waiting.insert(pid, tx);
        Ok(Child {
            pid,
            exit,
            status: None,
        })
    }

    /// Runs `cmd` to completion and fails unless it exits with code 0.
    pub async fn run(&self, cmd: &mut Command) -> Result<(), InstanceError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let status = self.spawn(cmd, Some(Signal::SIGKILL))?.wait().await;
        if status.success() {
            Ok(())
        } else {
            Err(InstanceError::CommandFailed { program, status })
        }
    }

    /// Collects every exited child without blocking.
    fn reap(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let (pid, status) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signaled(sig)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid");
                    return;
                }
            };
            match waiting.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => tracing::debug!(pid = pid.as_raw(), %status, "reaped an orphan"),
            }
        }
    }
}
