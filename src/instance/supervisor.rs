//! The server as a child process: starting it, stopping it cleanly or killing it
//! with its whole process tree, and the back-off of restarts after crashes. The
//! convergence loop ([`super::converge`]) decides when.

use std::fmt;
use std::time::{Duration, Instant};

use super::engine::Engine;
use super::error::InstanceError;
use super::process_tree;
use super::reaper::{Child, ExitStatus, Reaper};
use super::role::Role;
use super::status::{Phase, Shared};

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
    /// Forgets the crashes so far (a new command came).
    pub fn reset(&mut self) {
        self.quick_crashes = 0;
    }

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

/// A running server: the child, the role it runs as, when it started.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// The role it was started in (a primary after a promotion).
    pub role: Role,
    /// It has answered a probe since it started.
    pub answered: bool,
    started: Instant,
}

impl Server {
    /// Spawns the engine's server command (secrets scrubbed, configuration already
    /// rendered) in its own process group, and records it in the shared state.
    pub fn start(shared: &Shared, reaper: &Reaper, role: Role) -> Result<Self, InstanceError> {
        let engine = &shared.engine;
        let mut cmd = engine.server_command();
        let child = reaper.spawn(&mut cmd, Some(engine.parent_death_signal()))?;
        tracing::info!(pid = child.pid(), role = role.as_str(),
            program = %cmd.get_program().to_string_lossy(), "server started");
        shared.update(|s| {
            s.phase = Phase::Starting;
            s.pid = Some(child.pid());
            s.started_as = Some(role);
            s.started_at = Some(jiff::Timestamp::now());
        });
        Ok(Self {
            child,
            role,
            answered: false,
            started: Instant::now(),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// How long it has run.
    pub fn ran_for(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until it exits.
    pub async fn wait(&mut self) -> ExitStatus {
        self.child.wait().await
    }

    /// Stops it with the engine's plan, escalating after each wait; `forced`
    /// when the first, clean step was not enough.
    pub async fn stop(mut self, engine: &Engine) -> (ExitStatus, bool) {
        let plan = engine.stop_plan();
        for (i, step) in plan.iter().enumerate() {
            tracing::info!(pid = self.pid(), signal = %step.signal, "stopping the server");
            self.child.signal(step.signal);
            let status = match step.wait {
                Some(wait) => self.child.wait_timeout(wait).await,
                None => Some(self.child.wait().await),
            };
            if let Some(status) = status {
                return (status, i > 0);
            }
            tracing::warn!(signal = %step.signal, wait = ?step.wait, "the server did not stop in time; escalating");
        }
        // the last step waits without limit
        unreachable!("a stop plan ends with a step that waits for the exit")
    }

    /// SIGKILLs it and every process it started, and waits for its exit.
    pub async fn kill(mut self) -> ExitStatus {
        let victims = process_tree::kill_tree(self.pid());
        tracing::warn!(
            pid = self.pid(),
            processes = victims.len(),
            "killed the server's processes"
        );
        self.child.wait().await
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
