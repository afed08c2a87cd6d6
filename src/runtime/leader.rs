//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Only the holder of the Lease (`ringmaster-operator` in `POD_NAMESPACE`, identity
//! `POD_NAME`) reconciles. Every write is a `replace` carrying the `resourceVersion`
//! that was read, so two candidates racing for the same Lease cannot both win: the
//! loser gets `409 Conflict` and stays a candidate.
//!
//! Timing ([`LeaseTiming`], defaults): the Lease lasts 15 s; the leader renews every
//! 5 s and steps down — and says so on its channel at once — when it has not renewed
//! for 10 s (before anyone else may consider the Lease expired); candidates retry every
//! 2 s. On shutdown the leader releases the Lease so a standby takes over within one
//! retry period.
//!
//! ```no_run
//! # async fn run(client: kube::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use ringmaster::runtime::{leader::LeaderElector, shutdown::Shutdown};
//! let shutdown = Shutdown::new();
//! let (leading_tx, mut leading) = tokio::sync::watch::channel(false);
//! let elector = tokio::spawn(LeaderElector::from_env(client)?.run(leading_tx, shutdown.clone()));
//! while leading.wait_for(|l| *l).await.is_ok() {
//!     // start the controllers; stop them as soon as `leading` turns false
//!     let _ = leading.wait_for(|l| !*l).await;
//! }
//! drop(leading); // lets the elector release the Lease
//! elector.await??;
//! # Ok(()) }
//! ```

mod decision;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use decision::{
    Decision, Observer, claimed_spec, decide, holder, released_spec, renew_deadline_passed,
};

use super::metrics::Metrics;
use super::shutdown::Shutdown;

/// Name of the operator's Lease.
pub const DEFAULT_LEASE_NAME: &str = "ringmaster-operator";
/// Environment variable holding the Lease's namespace (downward API).
pub const NAMESPACE_ENV: &str = "POD_NAMESPACE";
/// Environment variable holding this replica's identity (downward API).
pub const IDENTITY_ENV: &str = "POD_NAME";

/// How long a release may take on shutdown before it is abandoned.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// A required environment variable is missing or empty.
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
    /// The timing parameters are inconsistent.
    #[error("invalid lease timing: {0}")]
    InvalidTiming(&'static str),
    /// Reading or writing the Lease failed.
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Durations of the election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease stays valid after its last renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down (must be < `lease_duration`).
    pub renew_deadline: Duration,
    /// How often the leader renews (must be < `renew_deadline`).
    pub renew_period: Duration,
    /// How often a candidate retries, and a leader after a failed renewal.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_period: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaseTiming {
    /// Checks `retry, renew_period < renew_deadline < lease_duration`, whole seconds of
    /// lease duration (the Lease stores seconds).
    pub fn validate(&self) -> Result<(), LeaderError> {
        if self.lease_duration.as_secs() == 0 || self.lease_duration.subsec_nanos() != 0 {
            return Err(LeaderError::InvalidTiming(
                "lease duration must be whole seconds ≥ 1",
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(LeaderError::InvalidTiming(
                "renew deadline must be below the lease duration",
            ));
        }
        if self.renew_period >= self.renew_deadline || self.retry_period >= self.renew_deadline {
            return Err(LeaderError::InvalidTiming(
                "renew and retry periods must be below the renew deadline",
            ));
        }
        if self.renew_period.is_zero() || self.retry_period.is_zero() {
            return Err(LeaderError::InvalidTiming(
                "renew and retry periods must be positive",
            ));
        }
        Ok(())
    }
}

/// Why a leader stopped leading.
#[derive(Debug)]
enum Stepped {
    /// Another candidate holds the Lease, or renewing failed until the deadline.
    Lost,
    /// Shutdown was asked for; `last_renewed` is when the Lease was last renewed.
    Shutdown { last_renewed: Instant },
}

/// A candidate for the leadership of one Lease.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timing: LeaseTiming,
    metrics: Option<Metrics>,
    observer: Observer,
}

impl LeaderElector {
    /// A candidate `identity` for the Lease `lease_namespace/lease_name`, default timing.
    pub fn new(client: Client, lease_namespace: &str, lease_name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, lease_namespace),
            namespace: lease_namespace.to_owned(),
            name: lease_name.to_owned(),
            identity: identity.to_owned(),
            timing: LeaseTiming::default(),
            metrics: None,
            observer: Observer::default(),
        }
    }

    /// The operator's candidate: Lease [`DEFAULT_LEASE_NAME`] in `$POD_NAMESPACE`,
    /// identity `$POD_NAME`.
    pub fn from_env(client: Client) -> Result<Self, LeaderError> {
        let namespace = env_var(NAMESPACE_ENV)?;
        let identity = env_var(IDENTITY_ENV)?;
        Ok(Self::new(client, &namespace, DEFAULT_LEASE_NAME, &identity))
    }

    /// Replaces the timing (validated by [`run`](Self::run)).
    pub fn with_timing(mut self, timing: LeaseTiming) -> Self {
        self.timing = timing;
        self
    }

    /// Keeps the `leader` gauge of `metrics` in step with leadership.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Competes for the Lease until `shutdown`, publishing leadership on `leading`:
    /// `true` once acquired, `false` the moment it is lost (another holder, or no
    /// successful renewal within the renew deadline) and when this future ends or is
    /// dropped. After losing it, competes again.
    ///
    /// On shutdown while leading: sends `false`, waits (at most until the renew
    /// deadline) for every receiver of `leading` to be dropped — the sign that the
    /// controllers have stopped — and then releases the Lease. If receivers remain, it
    /// does not release and the Lease simply expires.
    pub async fn run(
        mut self,
        leading: watch::Sender<bool>,
        shutdown: Shutdown,
    ) -> Result<(), LeaderError> {
        self.timing.validate()?;
        let flag = LeadingFlag::new(leading, self.metrics.clone());
        tracing::info!(lease = %self.lease_ref(), identity = %self.identity, "competing for leadership");
        loop {
            let Some(acquired_at) = self.acquire(&shutdown).await else {
                return Ok(());
            };
            tracing::info!(lease = %self.lease_ref(), identity = %self.identity, "became leader");
            flag.set(true);
            let stepped = self.hold(acquired_at, &shutdown).await;
            flag.set(false);
            match stepped {
                Stepped::Lost => {
                    tracing::warn!(lease = %self.lease_ref(), identity = %self.identity, "lost leadership");
                }
                Stepped::Shutdown { last_renewed } => {
                    self.release_after_receivers_closed(&flag, last_renewed)
                        .await;
                    return Ok(());
                }
            }
        }
    }

    /// Retries until the Lease is ours (returns the instant before the winning write),
    /// or `None` on shutdown.
    async fn acquire(&mut self, shutdown: &Shutdown) -> Option<Instant> {
        loop {
            let started = Instant::now();
            let attempt =
                tokio::time::timeout(self.timing.renew_deadline, self.try_acquire_or_renew());
            tokio::select! {
                biased;
                () = shutdown.wait() => return None,
                result = attempt => match result {
                    Ok(Ok(true)) => return Some(started),
                    Ok(Ok(false)) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "leader election attempt failed"),
                    Err(_) => tracing::warn!("leader election attempt timed out"),
                },
            }
            tokio::select! {
                biased;
                () = shutdown.wait() => return None,
                () = tokio::time::sleep(self.timing.retry_period) => {}
            }
        }
    }

    /// Renews until the Lease is lost, the renew deadline passes, or shutdown.
    async fn hold(&mut self, acquired_at: Instant, shutdown: &Shutdown) -> Stepped {
        let mut last_renewed = acquired_at;
        let mut pause = self.timing.renew_period;
        loop {
            let deadline = last_renewed + self.timing.renew_deadline;
            let wake = (Instant::now() + pause).min(deadline);
            tokio::select! {
                biased;
                () = shutdown.wait() => return Stepped::Shutdown { last_renewed },
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let started = Instant::now();
            if renew_deadline_passed(last_renewed, started, &self.timing) {
                tracing::warn!("no successful renewal within the renew deadline");
                return Stepped::Lost;
            }
            let attempt = tokio::time::timeout_at(deadline.into(), self.try_acquire_or_renew());
            tokio::select! {
                biased;
                () = shutdown.wait() => return Stepped::Shutdown { last_renewed },
                result = attempt => match result {
                    Ok(Ok(true)) => {
                        last_renewed = started;
                        pause = self.timing.renew_period;
                    }
                    Ok(Ok(false)) => return Stepped::Lost,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "renewing the lease failed; retrying");
                        pause = self.timing.retry_period;
                    }
                    Err(_) => {
                        tracing::warn!("renewing the lease timed out at the renew deadline");
                        return Stepped::Lost;
                    }
                },
            }
        }
    }

    /// One round: read the Lease and, if allowed, claim it. `Ok(true)` when we hold it
    /// afterwards, `Ok(false)` when someone else does or won the race.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let now = Instant::now();
        let Some(lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return self.create().await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let changed_at = self.observer.observe(&spec, now);
        let decision = decide(&spec, &self.identity, changed_at, now, &self.timing);
        if decision == Decision::Wait {
            return Ok(false);
        }
        let claimed = claimed_spec(
            &spec,
            &self.identity,
            decision,
            Timestamp::now(),
            &self.timing,
        );
        self.write(lease, claimed, now).await
    }

    /// Creates the Lease held by us; `Ok(false)` if another candidate created it first.
    async fn create(&mut self) -> Result<bool, LeaderError> {
        let spec = claimed_spec(
            &LeaseSpec::default(),
            &self.identity,
            Decision::Acquire,
            Timestamp::now(),
            &self.timing,
        );
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec.clone()),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                self.observer.observe(&spec, Instant::now());
                Ok(true)
            }
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// Replaces the Lease read as `lease` (its resourceVersion guards the write) with
    /// `spec`; `Ok(false)` on a conflict.
    async fn write(
        &mut self,
        mut lease: Lease,
        spec: LeaseSpec,
        now: Instant,
    ) -> Result<bool, LeaderError> {
        lease.spec = Some(spec.clone());
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observer.observe(&spec, now);
                Ok(true)
            }
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// On shutdown: waits for the controllers to let go of `leading`, then releases.
    async fn release_after_receivers_closed(&mut self, flag: &LeadingFlag, last_renewed: Instant) {
        let deadline = last_renewed + self.timing.renew_deadline;
        if tokio::time::timeout_at(deadline.into(), flag.closed())
            .await
            .is_err()
        {
            tracing::warn!(
                "receivers of leadership still open at the renew deadline; not releasing"
            );
            return;
        }
        match tokio::time::timeout(RELEASE_TIMEOUT, self.release()).await {
            Ok(Ok(true)) => tracing::info!(lease = %self.lease_ref(), "released the lease"),
            Ok(Ok(false)) => {
                tracing::info!(lease = %self.lease_ref(), "lease no longer ours; nothing to release")
            }
            Ok(Err(error)) => tracing::warn!(%error, "releasing the lease failed"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }

    /// Clears the holder if it is us; `Ok(true)` when released.
    async fn release(&mut self) -> Result<bool, LeaderError> {
        let Some(lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(false);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if holder(&spec) != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let released = released_spec(&spec, Timestamp::now());
        self.write(lease, released, Instant::now()).await
    }

    fn lease_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn api_error(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }
}

/// The published leadership; publishes `false` when dropped, so a crashed or
/// cancelled elector never leaves `true` behind.
struct LeadingFlag {
    tx: watch::Sender<bool>,
    metrics: Option<Metrics>,
}

impl LeadingFlag {
    fn new(tx: watch::Sender<bool>, metrics: Option<Metrics>) -> Self {
        let flag = Self { tx, metrics };
        flag.set(false);
        flag
    }

    fn set(&self, leading: bool) {
        self.tx
            .send_if_modified(|current| std::mem::replace(current, leading) != leading);
        if let Some(metrics) = &self.metrics {
            metrics.set_leader(leading);
        }
    }

    async fn closed(&self) {
        self.tx.closed().await;
    }
}

impl Drop for LeadingFlag {
    fn drop(&mut self) {
        self.set(false);
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

fn env_var(name: &'static str) -> Result<String, LeaderError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(LeaderError::MissingEnv(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timing_matches_the_contract() {
        let t = LeaseTiming::default();
        assert_eq!(t.lease_duration, Duration::from_secs(15));
        assert_eq!(t.renew_period, Duration::from_secs(5));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        t.validate().unwrap();
    }

    #[test]
    fn inconsistent_timing_is_rejected() {
        let base = LeaseTiming::default();
        let deadline_too_long = LeaseTiming {
            renew_deadline: Duration::from_secs(15),
            ..base.clone()
        };
        assert!(deadline_too_long.validate().is_err());
        let renew_too_slow = LeaseTiming {
            renew_period: Duration::from_secs(10),
            ..base.clone()
        };
        assert!(renew_too_slow.validate().is_err());
        let fractional = LeaseTiming {
            lease_duration: Duration::from_millis(15_500),
            ..base
        };
        assert!(fractional.validate().is_err());
    }

    #[test]
    fn leading_flag_publishes_changes_and_false_on_drop() {
        let (tx, mut rx) = watch::channel(true);
        let metrics = Metrics::new();
        let flag = LeadingFlag::new(tx, Some(metrics.clone()));
        assert!(!*rx.borrow_and_update(), "starts as not leading");
        flag.set(true);
        assert!(rx.has_changed().unwrap());
        assert!(*rx.borrow_and_update());
        assert!(metrics.encode().contains("ringmaster_leader 1"));
        flag.set(true);
        assert!(!rx.has_changed().unwrap(), "no change, no notification");
        drop(flag);
        assert!(!*rx.borrow(), "dropping the flag publishes false");
        assert!(metrics.encode().contains("ringmaster_leader 0"));
    }

    #[test]
    fn status_codes_are_recognised() {
        let status = kube::core::Status::failure("conflict", "Conflict").with_code(409);
        let error = kube::Error::Api(Box::new(status));
        assert!(is_status(&error, 409));
        assert!(!is_status(&error, 404));
    }
}
