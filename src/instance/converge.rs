//! The convergence loop: brings the server to the desired state and keeps it
//! there.
//!
//! Each turn takes the desired state (the last `POST /role` command, or the
//! environment), does the next step towards it — initialise, clone, rewind,
//! start, promote, demote, fence, apply settings live — and then waits for what
//! can change the picture: a new command, the server's exit, the agent's
//! shutdown, or a retry timer. A server that dies is restarted with back-off; a
//! crashed primary is first held down for `holdCrashedPrimarySeconds` so that the
//! operator can fail over; after too many quick crashes the agent gives up
//! (liveness fails) until a new command comes.

use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, RewindNeed};
use super::error::InstanceError;
use super::init;
use super::reaper::{ExitStatus, Reaper};
use super::role::{DesiredRole, DesiredState, Role, StopMode, Upstream};
use super::status::{Phase, Shared};
use super::supervisor::{Backoff, Outcome, RestartPolicy, Server};

/// Delay before retrying a step that failed.
const RETRY: Duration = Duration::from_secs(2);
/// Interval between probes while waiting for a new server to answer.
const ANSWER_POLL: Duration = Duration::from_millis(200);
/// Interval between looks at an upstream that is not a primary yet.
const UPSTREAM_POLL: Duration = Duration::from_secs(1);
/// Failed rewinds after which the data directory is moved aside and cloned again.
const MAX_REWIND_FAILURES: u32 = 3;
/// A replica that does not stream from an upstream that answers as a primary for
/// this long is restarted (which rewinds it when its timeline diverged).
const STUCK_AFTER: Duration = Duration::from_secs(10);
/// How often a running replica's streaming is checked.
const STREAM_CHECK: Duration = Duration::from_secs(2);
/// Restarts of a stuck replica after which its data is moved aside and cloned again
/// (e.g. the primary no longer has the WAL it needs).
const MAX_STUCK_RESTARTS: u32 = 3;

/// What to wait for after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The server is as desired: wait for its exit, a command or the shutdown.
    Watch,
    /// Nothing to do until a command (or the shutdown).
    Idle,
    /// Step again after this delay (or at a command).
    After(Duration),
    /// Progress was made: step again at once.
    Again,
}

/// What ended a wait.
enum Wake {
    Command,
    Shutdown,
    Exited(ExitStatus),
    Timer,
}

/// Converges one server to its desired state until the agent stops.
pub struct Converger {
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    reaper: Arc<Reaper>,
    shutdown: CancellationToken,
    commands: watch::Receiver<DesiredState>,
    backoff: Backoff,
    server: Option<Server>,
    /// The desired state last applied to the running server.
    applied: Option<DesiredState>,
    rewind_failures: u32,
    /// Since when the running replica has not been streaming from a primary.
    not_streaming_since: Option<std::time::Instant>,
    /// Restarts for not streaming since it last streamed.
    stuck_restarts: u32,
}

impl Converger {
    /// A loop that runs until `shutdown` is cancelled.
    pub fn new(shared: Arc<Shared>, reaper: Arc<Reaper>, shutdown: CancellationToken) -> Self {
        let policy = RestartPolicy::new(shared.config.max_restarts);
        Self {
            engine: Arc::clone(&shared.engine),
            commands: shared.subscribe(),
            shared,
            reaper,
            shutdown,
            backoff: Backoff::new(policy),
            server: None,
            applied: None,
            rewind_failures: 0,
            not_streaming_since: None,
            stuck_restarts: 0,
        }
    }

    /// Converges until shutdown, then stops the server cleanly.
    pub async fn run(mut self) -> Result<Outcome, InstanceError> {
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(self.stop_for_shutdown().await);
            }
            let desired = self.commands.borrow_and_update().clone();
            let next = match self.step(&desired).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, role = ?desired.role, "converging failed; retrying");
                    self.shared.update(|s| s.last_error = Some(e.to_string()));
                    Next::After(RETRY)
                }
            };
            match self.wait(next).await {
                Wake::Exited(status) => self.after_exit(status).await,
                Wake::Command => self.backoff.reset(),
                Wake::Shutdown | Wake::Timer => {}
            }
        }
    }

    /// One step towards `d`.
    async fn step(&mut self, d: &DesiredState) -> Result<Next, InstanceError> {
        match (d.role, d.upstream.as_ref()) {
            (DesiredRole::Fenced, _) => Ok(self.fence(d.stop).await),
            (DesiredRole::Primary, _) => self.lead(d).await,
            (DesiredRole::Replica, None) => Ok(self.wait_for_upstream().await),
            (DesiredRole::Replica, Some(u)) => self.follow(d, u).await,
        }
    }

    /// Fenced: the server is killed (or stopped cleanly) and stays down.
    async fn fence(&mut self, stop: StopMode) -> Next {
        if let Some(server) = self.server.take() {
            tracing::warn!(pid = server.pid(), ?stop, "fencing the server");
            self.shared.update(|s| s.phase = Phase::Stopping);
            let status = match stop {
                StopMode::Immediate => server.kill().await,
                StopMode::Clean => server.stop(&self.engine).await.0,
            };
            tracing::info!(%status, "the server is fenced");
        }
        self.stopped(Phase::Fenced);
        Next::Idle
    }

    /// Primary: initialise or start, promote a running replica, keep the replica
    /// set live.
    async fn lead(&mut self, d: &DesiredState) -> Result<Next, InstanceError> {
        let Some(role) = self.server.as_ref().map(|s| s.role) else {
            if !init::inspect(&self.shared)? {
                init::initialise_primary(&self.shared, &self.reaper, d).await?;
            }
            self.engine.render_config(d)?;
            self.start(Role::Primary)?;
            return Ok(Next::Again);
        };
        if !self.answers().await {
            return Ok(Next::After(ANSWER_POLL));
        }
        if role == Role::Replica {
            self.engine.promote().await?;
            tracing::info!("the server is promoted to primary");
            self.now_runs_as(Role::Primary)?;
        }
        self.apply(d).await
    }

    /// Replica without an upstream: a replica keeps following the last one; a
    /// primary is stopped; nothing starts until the operator names one.
    async fn wait_for_upstream(&mut self) -> Next {
        match self.server.take() {
            Some(server) if server.role == Role::Replica => {
                self.server = Some(server);
                Next::Watch
            }
            Some(server) => {
                tracing::info!("stopping the primary: it is to follow an upstream not named yet");
                self.shared.update(|s| s.phase = Phase::Stopping);
                let _ = server.stop(&self.engine).await;
                self.stopped(Phase::Waiting);
                Next::Idle
            }
            None => {
                self.shared.update(|s| s.phase = Phase::Waiting);
                Next::Idle
            }
        }
    }

    /// Replica of `u`: clone, rewind, start as a standby, re-point live, or demote
    /// a running primary.
    async fn follow(&mut self, d: &DesiredState, u: &Upstream) -> Result<Next, InstanceError> {
        match self.server.as_ref().map(|s| s.role) {
            Some(Role::Primary) => self.demote(d, u).await,
            Some(Role::Replica) => {
                if !self.answers().await {
                    return Ok(Next::After(ANSWER_POLL));
                }
                let next = self.apply(d).await?;
                Ok(self.watch_streaming(u).await.unwrap_or(next))
            }
            None => self.start_replica(d, u).await,
        }
    }

    /// Watches a running replica's stream: one that has not streamed for
    /// [`STUCK_AFTER`] while its upstream answers as a primary (a diverged timeline,
    /// missing WAL) is stopped, so that the next step rewinds or, after
    /// [`MAX_STUCK_RESTARTS`], clones it again. `None` when there is nothing to watch.
    async fn watch_streaming(&mut self, u: &Upstream) -> Option<Next> {
        if self.engine.demotes_in_place() {
            return None;
        }
        let streaming = self
            .engine
            .replication_report()
            .await
            .is_ok_and(|r| r.streaming);
        if streaming {
            self.not_streaming_since = None;
            self.stuck_restarts = 0;
            return Some(Next::After(STREAM_CHECK));
        }
        let since = *self
            .not_streaming_since
            .get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < STUCK_AFTER || !self.engine.upstream_is_primary(u).await {
            return Some(Next::After(STREAM_CHECK));
        }
        self.not_streaming_since = None;
        self.stuck_restarts += 1;
        tracing::warn!(upstream = %u.address(), after = ?since.elapsed(), restarts = self.stuck_restarts,
            "the replica does not stream from its primary; restarting it");
        if let Some(server) = self.server.take() {
            self.shared.update(|s| s.phase = Phase::Stopping);
            let _ = server.stop(&self.engine).await;
        }
        self.stopped(Phase::Stopped);
        if self.stuck_restarts >= MAX_STUCK_RESTARTS {
            self.stuck_restarts = 0;
            tracing::error!(
                "the replica keeps failing to stream; moving its data aside to clone it again"
            );
            if let Err(e) = init::set_aside(&self.shared) {
                self.shared.update(|s| s.last_error = Some(e.to_string()));
            }
        }
        Some(Next::Again)
    }

    /// A running primary becomes a replica of `u`.
    async fn demote(&mut self, d: &DesiredState, u: &Upstream) -> Result<Next, InstanceError> {
        if d.stop == StopMode::Clean && self.engine.demotes_in_place() {
            if !self.answers().await {
                return Ok(Next::After(ANSWER_POLL));
            }
            tracing::info!(upstream = %u.address(), "switching over to the upstream");
            self.engine.switchover_to(u).await?;
            self.now_runs_as(Role::Replica)?;
            return self.apply(d).await;
        }
        let server = self.server.take().expect("a running server");
        self.shared.update(|s| s.phase = Phase::Stopping);
        match d.stop {
            StopMode::Clean => {
                tracing::info!(upstream = %u.address(), "stopping the primary cleanly to follow the upstream");
                let (status, forced) = server.stop(&self.engine).await;
                tracing::info!(%status, forced, "the former primary stopped");
                if !forced {
                    // a clean shutdown sent every write to the standbys: nothing to rewind
                    self.shared.record_server_role(Role::Replica)?;
                }
            }
            StopMode::Immediate => {
                let status = server.kill().await;
                tracing::info!(%status, "the former primary was killed");
            }
        }
        self.stopped(Phase::Stopped);
        Ok(Next::Again)
    }

    /// No server runs: make the data directory a replica of `u`, then start it.
    async fn start_replica(
        &mut self,
        d: &DesiredState,
        u: &Upstream,
    ) -> Result<Next, InstanceError> {
        if !init::inspect(&self.shared)? {
            self.shared.update(|s| s.phase = Phase::Cloning);
            init::clone_replica(&self.shared, &self.reaper, u, d).await?;
            self.shared.record_server_role(Role::Replica)?;
            return Ok(Next::Again);
        }
        match self
            .engine
            .rewind_need(d.last_server_role, u, &self.reaper)
            .await?
        {
            RewindNeed::No => {}
            RewindNeed::WaitForUpstream => {
                self.shared.update(|s| s.phase = Phase::Rewinding);
                tracing::info!(upstream = %u.address(), "waiting for the upstream to be a primary before rewinding");
                return Ok(Next::After(UPSTREAM_POLL));
            }
            RewindNeed::Yes => {
                if let Some(next) = self.rewind(u).await? {
                    return Ok(next);
                }
            }
        }
        self.engine.render_config(d)?;
        self.start(Role::Replica)?;
        Ok(Next::Again)
    }

    /// Rewinds to `u`; after too many failures moves the data aside to clone
    /// again. `None` when the rewind succeeded.
    async fn rewind(&mut self, u: &Upstream) -> Result<Option<Next>, InstanceError> {
        self.shared.update(|s| s.phase = Phase::Rewinding);
        match self.engine.rewind(u, &self.reaper).await {
            Ok(()) => {
                tracing::info!(upstream = %u.address(), "rewound to the upstream");
                self.rewind_failures = 0;
                Ok(None)
            }
            Err(e) if self.rewind_failures + 1 >= MAX_REWIND_FAILURES => {
                self.rewind_failures = 0;
                tracing::error!(error = %e, "rewinding keeps failing; moving the data aside to clone again");
                self.shared.update(|s| s.last_error = Some(e.to_string()));
                init::set_aside(&self.shared)?;
                Ok(Some(Next::Again))
            }
            Err(e) => {
                self.rewind_failures += 1;
                Err(e)
            }
        }
    }

    /// Applies `d` to the running server (once per desired state).
    async fn apply(&mut self, d: &DesiredState) -> Result<Next, InstanceError> {
        if self.applied.as_ref() != Some(d) {
            self.engine.render_config(d)?;
            self.engine.apply_live(d).await?;
            self.applied = Some(d.clone());
            tracing::info!(epoch = d.epoch, role = ?d.role, "the server is converged");
        }
        self.shared.update(|s| {
            s.last_error = None;
            s.applied_epoch = Some(d.epoch);
        });
        Ok(Next::Watch)
    }

    /// Records the running server's new role (promotion, in-place demotion).
    fn now_runs_as(&mut self, role: Role) -> Result<(), InstanceError> {
        self.shared.record_server_role(role)?;
        if let Some(server) = &mut self.server {
            server.role = role;
        }
        self.shared.update(|s| s.started_as = Some(role));
        Ok(())
    }

    /// Whether the running server answers a probe now (logged the first time).
    async fn answers(&mut self) -> bool {
        let Ok(info) = self.shared.probe().await else {
            return false;
        };
        if let Some(server) = &mut self.server
            && !server.answered
        {
            server.answered = true;
            tracing::info!(version = %info.version, after = ?server.ran_for(), "the server answers");
        }
        true
    }

    /// Starts the server in `role`, recording the role first.
    fn start(&mut self, role: Role) -> Result<(), InstanceError> {
        self.shared.record_server_role(role)?;
        self.server = Some(Server::start(&self.shared, &self.reaper, role)?);
        self.applied = None;
        self.shared.update(|s| s.applied_epoch = None);
        Ok(())
    }

    /// No server runs any more: `phase`.
    fn stopped(&mut self, phase: Phase) {
        self.server = None;
        self.applied = None;
        self.shared.update(|s| {
            s.pid = None;
            s.applied_epoch = None;
            s.phase = phase;
        });
    }

    /// Waits for what `next` asks for, a command, the server's exit or the shutdown.
    async fn wait(&mut self, next: Next) -> Wake {
        let delay = match next {
            Next::Again => return Wake::Timer,
            Next::After(d) => Some(d),
            Next::Watch | Next::Idle => None,
        };
        let server = &mut self.server;
        let commands = &mut self.commands;
        tokio::select! {
            status = async { match server { Some(s) => s.wait().await, None => pending().await } } => Wake::Exited(status),
            () = async { if commands.changed().await.is_err() { pending::<()>().await } } => Wake::Command,
            () = self.shutdown.cancelled() => Wake::Shutdown,
            () = async { match delay { Some(d) => tokio::time::sleep(d).await, None => pending().await } } => Wake::Timer,
        }
    }

    /// The server died on its own: hold a crashed primary, else restart with
    /// back-off, or give up after too many quick crashes.
    async fn after_exit(&mut self, status: ExitStatus) {
        let Some(server) = self.server.take() else {
            return;
        };
        let ran_for = server.ran_for();
        self.stopped(Phase::BackingOff);
        let desired = self.shared.desired();
        let hold = desired.hold_crashed_primary_seconds;
        if server.role == Role::Primary && desired.role == DesiredRole::Primary && hold > 0 {
            tracing::warn!(%status, ?ran_for, hold_seconds = hold,
                "the primary exited unexpectedly; holding it down so that the operator can fail over");
            self.shared.update(|s| s.phase = Phase::Held);
            if self.pause(Some(Duration::from_secs(hold))).await {
                self.shared.update(|s| s.restarts += 1);
            }
            return;
        }
        match self.backoff.after_exit(ran_for) {
            Some(delay) => {
                tracing::warn!(%status, ?ran_for, ?delay, "the server exited unexpectedly; restarting it");
                if self.pause(Some(delay)).await {
                    self.shared.update(|s| s.restarts += 1);
                }
            }
            None => {
                tracing::error!(%status, restarts = self.shared.config.max_restarts,
                    "the server keeps dying; giving up until a new command (liveness now fails)");
                self.shared.update(|s| s.phase = Phase::Failed);
                self.pause(None).await;
            }
        }
    }

    /// Sleeps `delay` (forever with `None`); `true` when the time ran out, `false`
    /// when a command or the shutdown came first.
    async fn pause(&mut self, delay: Option<Duration>) -> bool {
        let commands = &mut self.commands;
        tokio::select! {
            () = async { match delay { Some(d) => tokio::time::sleep(d).await, None => pending().await } } => true,
            () = async { if commands.changed().await.is_err() { pending::<()>().await } } => {
                self.backoff.reset();
                false
            }
            () = self.shutdown.cancelled() => false,
        }
    }

    /// Stops the server cleanly at the agent's shutdown.
    async fn stop_for_shutdown(&mut self) -> Outcome {
        let Some(server) = self.server.take() else {
            self.stopped(Phase::Stopped);
            return Outcome::NotRunning;
        };
        self.shared.update(|s| s.phase = Phase::Stopping);
        let (status, forced) = server.stop(&self.engine).await;
        self.stopped(Phase::Stopped);
        Outcome::Stopped { status, forced }
    }
}
