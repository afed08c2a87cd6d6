//! Runs the server as a child, restarts it with back-off when it dies, and
//! stops it cleanly when the agent is asked to stop.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::engine::Engine;
use super::error::InstanceError;
use super::reaper::{Child, ExitStatus, Reaper};
use super::status::{Phase, Shared};

/// Interval between probes while waiting for a new server to answer.
const STARTUP_PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// When to restart a server that died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Quick crashes in a row after which the agent gives up.
    pub max_restarts: u32,
    /// Delay before the first restart; doubles with each quick crash.
    pub first_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// A server that ran this long before dying did not crash "quickly":
    /// the count starts again.
    pub stable_after: Duration,
}

impl RestartPolicy {
    /// The default policy with `max_restarts`.
    pub fn new(max_restarts: u32) -> Self {
        Self {
            max_restarts,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// Counts quick crashes and says how long to wait before the next start.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RestartPolicy,
    quick_crashes: u32,
}

impl Backoff {
    /// No crash yet.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            quick_crashes: 0,
        }
    }

    /// After a server that ran for `ran_for` died: the delay before restarting
    /// it, or `None` to give up.
    pub fn after_exit(&mut self, ran_for: Duration) -> Option<Duration> {
        if ran_for >= self.policy.stable_after {
            self.quick_crashes = 0;
        }
        self.quick_crashes += 1;
        if self.quick_crashes > self.policy.max_restarts {
            return None;
        }
        let factor = 2u32.saturating_pow(self.quick_crashes - 1);
        Some(
            self.policy
                .first_delay
                .saturating_mul(factor)
                .min(self.policy.max_delay),
        )
    }
}

/// How supervision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server was stopped on request; `forced` when it had to be stopped
    /// harder than the first, clean step.
    Stopped {
        /// Its exit status.
        status: ExitStatus,
        /// Whether the clean stop timed out.
        forced: bool,
    },
    /// The agent was asked to stop while no server ran.
    NotRunning,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stopped {
                status,
                forced: false,
            } => write!(f, "the server stopped cleanly ({status})"),
            Self::Stopped {
                status,
                forced: true,
            } => write!(f, "the server had to be stopped forcibly ({status})"),
            Self::NotRunning => f.write_str("no server was running"),
        }
    }
}

/// What ended the wait on a running server.
enum Event {
    Exited(ExitStatus),
    Shutdown,
}

/// Supervises one server.
pub struct Supervisor {
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    reaper: Arc<Reaper>,
    shutdown: CancellationToken,
    policy: RestartPolicy,
}

impl Supervisor {
    /// A supervisor that runs until `shutdown` is cancelled.
    pub fn new(shared: Arc<Shared>, reaper: Arc<Reaper>, shutdown: CancellationToken) -> Self {
        let policy = RestartPolicy::new(shared.config.max_restarts);
        Self {
            engine: Arc::clone(&shared.engine),
            shared,
            reaper,
            shutdown,
            policy,
        }
    }

    /// Starts the server and keeps it running until shutdown.
    pub async fn run(&self) -> Result<Outcome, InstanceError> {
        let mut backoff = Backoff::new(self.policy);
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(self.stopped_idle());
            }
            let started = Instant::now();
            let mut child = self.start()?;
            let watcher = tokio::spawn(announce_ready(Arc::clone(&self.shared), started));
            let event = tokio::select! {
                status = child.wait() => Event::Exited(status),
                () = self.shutdown.cancelled() => Event::Shutdown,
            };
            watcher.abort();
            let status = match event {
                Event::Shutdown => return Ok(self.stop(child).await),
                Event::Exited(status) => status,
            };
            let ran_for = started.elapsed();
            self.shared.update(|s| s.pid = None);
            match backoff.after_exit(ran_for) {
                Some(delay) => {
                    tracing::warn!(%status, ?ran_for, ?delay, "the server exited unexpectedly; restarting it");
                    if !self.wait_before_restart(delay).await {
                        return Ok(self.stopped_idle());
                    }
                }
                None => {
                    tracing::error!(%status, restarts = self.policy.max_restarts,
                        "the server keeps dying; giving up (liveness now fails)");
                    self.shared.update(|s| s.phase = Phase::Failed);
                    self.shutdown.cancelled().await;
                    return Ok(self.stopped_idle());
                }
            }
        }
    }

    /// Renders the configuration and spawns the server.
    fn start(&self) -> Result<Child, InstanceError> {
        self.engine.render_config()?;
        let mut cmd = self.engine.server_command();
        let child = self
            .reaper
            .spawn(&mut cmd, Some(self.engine.parent_death_signal()))?;
        tracing::info!(pid = child.pid(), program = %cmd.get_program().to_string_lossy(), "server started");
        self.shared.update(|s| {
            s.phase = Phase::Starting;
            s.pid = Some(child.pid());
            s.started_at = Some(jiff::Timestamp::now());
        });
        Ok(child)
    }

    /// Sleeps `delay`; `false` when shutdown came first.
    async fn wait_before_restart(&self, delay: Duration) -> bool {
        self.shared.update(|s| s.phase = Phase::BackingOff);
        tokio::select! {
            () = tokio::time::sleep(delay) => {
                self.shared.update(|s| s.restarts += 1);
                true
            }
            () = self.shutdown.cancelled() => false,
        }
    }

    /// Stops the server with the engine's plan, escalating after each wait.
    async fn stop(&self, mut child: Child) -> Outcome {
        self.shared.update(|s| s.phase = Phase::Stopping);
        let plan = self.engine.stop_plan();
        for (i, step) in plan.iter().enumerate() {
            tracing::info!(pid = child.pid(), signal = %step.signal, "stopping the server");
            child.signal(step.signal);
            let status = match step.wait {
                Some(wait) => child.wait_timeout(wait).await,
                None => Some(child.wait().await),
            };
            if let Some(status) = status {
                self.stopped_idle();
                return Outcome::Stopped {
                    status,
                    forced: i > 0,
                };
            }
            tracing::warn!(signal = %step.signal, wait = ?step.wait, "the server did not stop in time; escalating");
        }
        // the last step waits without limit
        unreachable!("a stop plan ends with a step that waits for the exit")
    }

    fn stopped_idle(&self) -> Outcome {
        self.shared.update(|s| {
            s.pid = None;
            s.phase = Phase::Stopped;
        });
        Outcome::NotRunning
    }
}

/// Probes a freshly started server until it answers, and logs when it does.
async fn announce_ready(shared: Arc<Shared>, started: Instant) {
    loop {
        match shared.probe().await {
            Ok(info) => {
                tracing::info!(version = %info.version, after = ?started.elapsed(), "the server answers");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "the server does not answer yet"),
        }
        tokio::time::sleep(STARTUP_PROBE_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3),
            stable_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_then_give_up() {
        let mut b = Backoff::new(policy());
        let quick = Duration::from_secs(1);
        assert_eq!(b.after_exit(quick), Some(Duration::from_secs(1)));
        assert_eq!(b.after_exit(quick), Some(Duration::from_secs(2)));
        assert_eq!(b.after_exit(quick), Some(Duration::from_secs(3)));
        assert_eq!(b.after_exit(quick), None);
    }

    #[test]
    fn a_stable_run_resets_the_count() {
        let mut b = Backoff::new(policy());
        let quick = Duration::from_secs(1);
        b.after_exit(quick);
        b.after_exit(quick);
        b.after_exit(quick);
        assert_eq!(
            b.after_exit(Duration::from_secs(120)),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn zero_restarts_gives_up_at_once() {
        let mut b = Backoff::new(RestartPolicy::new(0));
        assert_eq!(b.after_exit(Duration::ZERO), None);
    }
}
