//! Replication, automatic failover and declarative switchover of one Shard (pure).
//!
//! [`decide`] takes the Shard (its spec and the replication part of its previous
//! status), its Pods, what their agents' `GET /status` answered and the time, and
//! returns a [`Decision`]: the replication state to record (written **before** any
//! action, so an operator restarted at any point continues the same change), the
//! role commands to send, Pods to delete, labels, Events and what blocks progress.
//! The rules are those of `docs/replication.md`:
//!
//! * steady state — every instance is sent the command of its role (primary with
//!   its replicas; replicas with the primary's address) when what its agent holds
//!   differs; nothing is sent once everything converged;
//! * failover — a primary unhealthy for `failover.unhealthyAfter` is replaced by the
//!   most advanced replica: record (`Pending`), fence, promote (`Promoting`),
//!   re-point and finish;
//! * switchover — `spec.primary` naming another qualified replica: record, stop the
//!   primary cleanly as a replica of the target, promote, finish;
//! * rolling update — outdated replicas are recreated one at a time, then the
//!   primary is switched over to an updated replica and updated last.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::objects::{created_epoch, outdated, template_hash};
use super::plan::{desired_ordinals, pod_ready, terminating};
use crate::api::agent::{AgentStatus, DesiredRole, RoleCommand, StopMode, Upstream, parse_lsn};
use crate::api::shard::{
    ChangeKind, ChangePhase, FailoverRecord, PrimaryChange, Role, ShardSpec, ShardStatus,
};
use crate::api::{Engine, Shard, condition};
use crate::operator::names::{self, ROLE_COMMAND_ANNOTATION};

/// A target that has not become primary this long after it was asked is given up.
pub const CANDIDATE_TIMEOUT: Duration = Duration::from_secs(30);
/// A switchover whose old primary has not stepped down this long after it was asked
/// is turned into a failover when that primary is unhealthy, and cancelled when it
/// still serves.
pub const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// A rolling update does not retry a switchover that failed (`Degraded`,
/// [`SWITCHOVER_FAILED`]) for this long.
pub const SWITCHOVER_RETRY: Duration = Duration::from_secs(600);
/// Seconds added to `unhealthyAfter` for `holdCrashedPrimarySeconds`.
pub const HOLD_MARGIN_SECONDS: u64 = 30;
/// `unhealthyAfter` when the spec's value cannot be read.
pub const DEFAULT_UNHEALTHY_AFTER: Duration = Duration::from_secs(5);

/// `Degraded` reason: the primary is unhealthy and no replica may replace it.
pub const FAILOVER_BLOCKED: &str = "FailoverBlocked";
/// `Degraded` reason: `spec.primary` names an instance that cannot take over.
pub const SWITCHOVER_BLOCKED: &str = "SwitchoverBlocked";
/// `lastFailover.reason` of automatic failovers.
pub const PRIMARY_UNHEALTHY: &str = "PrimaryUnhealthy";
/// `lastFailover.reason` of switchovers requested through `spec.primary`.
pub const SWITCHOVER: &str = "Switchover";
/// `lastFailover.reason` of switchovers of a rolling update.
pub const ROLLING_UPDATE: &str = "RollingUpdate";
/// Event reason: a switchover was cancelled because the old primary did not step
/// down.
pub const SWITCHOVER_FAILED: &str = "SwitchoverFailed";

/// Parses a duration such as `500ms`, `5s` or `1m` (the CRD's `unhealthyAfter`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

/// `failover.unhealthyAfter` of `spec`.
pub fn unhealthy_after(spec: &ShardSpec) -> Duration {
    parse_duration(&spec.failover.unhealthy_after).unwrap_or(DEFAULT_UNHEALTHY_AFTER)
}

/// When to look at the shard again: after `interval`, or sooner when an unhealthy
/// primary becomes due for a failover before that (so a failover starts when
/// `unhealthyAfter` has passed, not up to one interval later).
pub fn recheck_after(
    state: &State,
    spec: &ShardSpec,
    now: Timestamp,
    interval: Duration,
) -> Duration {
    let Some(since) = state
        .primary_unhealthy_since
        .as_ref()
        .filter(|_| state.change.is_none())
    else {
        return interval;
    };
    let elapsed = Duration::try_from(now.duration_since(since.0)).unwrap_or_default();
    let remaining = unhealthy_after(spec).saturating_sub(elapsed);
    if remaining.is_zero() {
        return interval;
    }
    remaining.clamp(MIN_RECHECK, interval)
}

/// The shortest [`recheck_after`].
const MIN_RECHECK: Duration = Duration::from_millis(50);

/// Seconds a crashed primary is held down for the operator: `unhealthyAfter` + 30 s
/// when the shard has replicas and failover is enabled, else 0 (restart at once).
pub fn hold_seconds(spec: &ShardSpec) -> u64 {
    if spec.replicas > 0 && spec.failover.enabled {
        unhealthy_after(spec).as_secs_f64().ceil() as u64 + HOLD_MARGIN_SECONDS
    } else {
        0
    }
}

/// A replication position as the status shows it: a PostgreSQL LSN or a Redis
/// offset in decimal.
pub fn format_position(engine: Engine, position: u64) -> String {
    match engine {
        Engine::Postgres => crate::api::agent::format_lsn(position),
        Engine::Redis => position.to_string(),
    }
}

/// Parses a position written by [`format_position`].
pub fn parse_position(engine: Engine, text: &str) -> Option<u64> {
    match engine {
        Engine::Postgres => parse_lsn(text),
        Engine::Redis => text.parse().ok(),
    }
}

/// The position of instance `name` in `shard`'s previous status.
fn recorded_position(shard: &Shard, name: &str) -> Option<u64> {
    let status = shard.status.as_ref()?;
    let instance = status.instances.iter().find(|i| i.name == name)?;
    parse_position(shard.spec.engine, instance.position.as_deref()?)
}

/// The position of `primary`: what its `agent` reports as a primary now, else what
/// the previous status recorded.
pub fn primary_position(shard: &Shard, primary: &str, agent: Option<&AgentStatus>) -> Option<u64> {
    let now = agent
        .filter(|a| a.role == Some(Role::Primary))
        .and_then(|a| a.replication.as_ref())
        .map(|r| r.position);
    now.or_else(|| recorded_position(shard, primary))
}

/// The replication part of a Shard's status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// The current primary (`status.primary`).
    pub primary: String,
    /// `status.epoch`.
    pub epoch: u64,
    /// `status.change`.
    pub change: Option<PrimaryChange>,
    /// `status.primaryUnhealthySince`.
    pub primary_unhealthy_since: Option<Time>,
    /// `status.failedCandidates`.
    pub failed_candidates: Vec<String>,
    /// `status.lastFailover`.
    pub last_failover: Option<FailoverRecord>,
}

impl State {
    /// The state recorded in `shard`'s status. A new shard's primary is the instance
    /// `spec.primary` names, else ordinal 0.
    pub fn of(shard: &Shard) -> State {
        let name = shard.name_any();
        let status = shard.status.clone().unwrap_or_default();
        let primary = status
            .primary
            .filter(|p| names::pod_ordinal(&name, p).is_some())
            .or_else(|| {
                shard
                    .spec
                    .primary
                    .clone()
                    .filter(|p| names::pod_ordinal(&name, p).is_some())
            })
            .unwrap_or_else(|| names::pod_name(&name, 0));
        State {
            primary,
            epoch: status.epoch,
            change: status.change,
            primary_unhealthy_since: status.primary_unhealthy_since,
            failed_candidates: status.failed_candidates,
            last_failover: status.last_failover,
        }
    }

    /// Writes the state into `status`.
    pub fn write_to(&self, status: &mut ShardStatus) {
        status.primary = Some(self.primary.clone());
        status.epoch = self.epoch;
        status.change = self.change.clone();
        status.primary_unhealthy_since = self.primary_unhealthy_since.clone();
        status.failed_candidates = self.failed_candidates.clone();
        status.last_failover = self.last_failover.clone();
    }

    /// The instance the shard is built around: the target of a change in progress
    /// (a Pod created meanwhile starts as primary only if it is the target), else
    /// the primary.
    pub fn anchor(&self) -> &str {
        self.change.as_ref().map_or(&self.primary, |c| &c.to)
    }

    /// The epoch new Pods start with.
    pub fn start_epoch(&self) -> u64 {
        self.change.as_ref().map_or(self.epoch, |c| c.epoch)
    }
}

/// What [`decide`] looks at.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The Shard, with its previous status.
    pub shard: &'a Shard,
    /// Its instance Pods.
    pub pods: &'a [Pod],
    /// The agents' `/status` by Pod name (an agent that did not answer is absent);
    /// `None` when the agents could not be asked at all (no token): then nothing is
    /// decided.
    pub agents: Option<&'a BTreeMap<String, AgentStatus>>,
    /// The image of the agent that instance Pods are built with.
    pub agent_image: &'a str,
    /// Now.
    pub now: Timestamp,
}

/// A role command for one instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// The instance (Pod) name.
    pub pod: String,
    /// Its Pod IP.
    pub host: String,
    /// The command.
    pub command: RoleCommand,
    /// A fence: when the agent does not take it, the Pod is deleted instead.
    pub fence: bool,
}

/// A Pod to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    /// The Pod name.
    pub pod: String,
    /// Event reason.
    pub reason: &'static str,
    /// Event note.
    pub note: String,
}

/// An Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning (else Normal).
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// The message.
    pub note: String,
}

/// Why a failover or switchover does not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// [`FAILOVER_BLOCKED`], [`SWITCHOVER_BLOCKED`] or [`SWITCHOVER_FAILED`].
    pub reason: &'static str,
    /// Why, for `Degraded`.
    pub message: String,
}

/// The replication labels of the instance Pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    /// The instance labelled `role=primary` (none while a change is in progress).
    pub primary: Option<String>,
    /// The instance without a role label (the old primary during a change).
    pub unlabelled: Option<String>,
    /// Replicas labelled `streaming=true`; `None`: leave the labels as they are.
    pub streaming: Option<BTreeSet<String>>,
}

impl Labels {
    /// The role labels of `state`, streaming labels left as they are: the primary's,
    /// or while a change is in progress none, with the old primary unlabelled.
    fn of(state: &State) -> Self {
        let (primary, unlabelled) = match &state.change {
            Some(change) => (None, Some(change.from.clone())),
            None => (Some(state.primary.clone()), None),
        };
        Self {
            primary,
            unlabelled,
            streaming: None,
        }
    }

    /// The role label `pod` should have.
    pub fn role(&self, pod: &str) -> Option<Role> {
        if self.unlabelled.as_deref() == Some(pod) {
            None
        } else if self.primary.as_deref() == Some(pod) {
            Some(Role::Primary)
        } else {
            Some(Role::Replica)
        }
    }

    /// Whether `pod` should be labelled streaming (`None`: leave it).
    pub fn streaming(&self, pod: &str) -> Option<bool> {
        self.streaming.as_ref().map(|s| s.contains(pod))
    }
}

/// A change of primary that completed in this reconciliation.
#[derive(Clone, Debug, PartialEq)]
pub struct Completed {
    /// Failover or switchover.
    pub kind: ChangeKind,
    /// Seconds from `startedAt`.
    pub seconds: f64,
}

/// What to do about a Shard's replication.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// The replication state to record before acting.
    pub state: State,
    /// A new `spec.primary` (after a failover or a rolling update's switchover),
    /// merge-patched before the state is written.
    pub spec_primary: Option<String>,
    /// Role commands to send.
    pub commands: Vec<Command>,
    /// Pods to delete (fence of an unreachable old primary, rolling update).
    pub delete_pods: Vec<Deletion>,
    /// Events.
    pub events: Vec<Note>,
    /// A change completed now (metrics).
    pub completed: Option<Completed>,
    /// Why a failover or switchover is not done.
    pub blocked: Option<Blocked>,
    /// Why the primary is unhealthy.
    pub unhealthy: Option<String>,
    /// Labels of the Pods.
    pub labels: Labels,
}

/// Decides what to do about the replication of `inputs.shard`.
pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let state = State::of(inputs.shard);
    let mut d = Decision {
        labels: Labels::of(&state),
        state,
        ..Decision::default()
    };
    let Some(agents) = inputs.agents else {
        return d;
    };
    let view = View::new(inputs, agents, &d.state);
    match d.state.change.clone() {
        Some(change) => advance(&mut d, &view, &change),
        None => steady(&mut d, &view),
    }
    match d.state.change.clone() {
        Some(change) => change_actions(&mut d, &view, &change),
        None => converge(&mut d, &view),
    }
    d.labels = labels(&d.state, &view);
    d
}

// ------------------------------------------------------------------ observations

/// The instances as observed.
struct View<'a> {
    shard: &'a Shard,
    names: Vec<String>,
    pods: BTreeMap<String, &'a Pod>,
    agents: &'a BTreeMap<String, AgentStatus>,
    /// The hash of the template Pods of the spec are built from.
    template: String,
    now: Timestamp,
}

impl<'a> View<'a> {
    /// The instances of `state` (the recorded replication state of `inputs.shard`).
    fn new(inputs: &Inputs<'a>, agents: &'a BTreeMap<String, AgentStatus>, state: &State) -> Self {
        let shard = inputs.shard;
        let name = shard.name_any();
        let anchor = names::pod_ordinal(&name, state.anchor()).unwrap_or(0);
        let names = desired_ordinals(shard.spec.instances(), anchor)
            .into_iter()
            .map(|o| names::pod_name(&name, o))
            .collect();
        Self {
            shard,
            names,
            pods: inputs.pods.iter().map(|p| (p.name_any(), p)).collect(),
            agents,
            template: template_hash(&shard.spec, inputs.agent_image),
            now: inputs.now,
        }
    }

    fn spec(&self) -> &ShardSpec {
        &self.shard.spec
    }

    /// The Pod of `name` unless it is being deleted.
    fn pod(&self, name: &str) -> Option<&'a Pod> {
        self.pods.get(name).copied().filter(|p| !terminating(p))
    }

    fn ready(&self, name: &str) -> bool {
        self.pod(name).is_some_and(pod_ready)
    }

    fn ip(&self, name: &str) -> Option<String> {
        self.pod(name)?.status.as_ref()?.pod_ip.clone()
    }

    /// The agent of a live Pod.
    fn agent(&self, name: &str) -> Option<&'a AgentStatus> {
        self.pod(name)?;
        self.agents.get(name)
    }

    fn upstream(&self, name: &str) -> Option<Upstream> {
        Some(Upstream {
            name: name.to_owned(),
            host: self.ip(name)?,
            port: self.spec().engine.default_port(),
        })
    }

    fn streaming(&self, name: &str) -> bool {
        self.agent(name)
            .and_then(|a| a.replication.as_ref())
            .is_some_and(|r| r.streaming)
    }

    /// What a replica has received (its position when it reports no more).
    fn received(&self, name: &str) -> Option<u64> {
        let r = self.agent(name)?.replication.as_ref()?;
        Some(r.received.unwrap_or(r.position))
    }

    fn replayed(&self, name: &str) -> u64 {
        self.agent(name)
            .and_then(|a| a.replication.as_ref())
            .map_or(0, |r| r.replayed.or(r.received).unwrap_or(r.position))
    }

    /// Whether `name` was ready in the previous status.
    fn was_ready(&self, name: &str) -> bool {
        self.shard
            .status
            .as_ref()
            .is_some_and(|s| s.instances.iter().any(|i| i.name == name && i.ready))
    }

    /// Why the primary `name` is unhealthy, if it is.
    fn unhealthy(&self, name: &str) -> Option<String> {
        let Some(pod) = self.pods.get(name) else {
            return Some("its Pod is missing".into());
        };
        if terminating(pod) {
            return Some("its Pod is being deleted".into());
        }
        if !pod_ready(pod) {
            return Some("its Pod is not ready".into());
        }
        let Some(agent) = self.agents.get(name) else {
            return Some("its agent does not answer".into());
        };
        (!agent.server_up).then(|| format!("its server is not up (phase {})", agent.phase))
    }

    fn seconds_since(&self, then: &Time) -> f64 {
        self.now.duration_since(then.0).as_secs_f64()
    }

    /// The Pod's annotation of the last command its agent took.
    fn last_command(&self, name: &str) -> Option<&'a str> {
        self.pod(name)?
            .metadata
            .annotations
            .as_ref()?
            .get(ROLE_COMMAND_ANNOTATION)
            .map(String::as_str)
    }

    /// Whether the Pod of `name` was built from another template than the spec's.
    fn outdated(&self, name: &str) -> bool {
        self.pod(name)
            .is_some_and(|pod| outdated(pod, &self.template))
    }

    fn max_lag(&self) -> u64 {
        u64::try_from(self.spec().failover.max_lag_bytes).unwrap_or(0)
    }
}

// ------------------------------------------------------------------ steady state

fn steady(d: &mut Decision, v: &View<'_>) {
    let highest = v.names.iter().filter_map(|n| v.agent(n)).map(|a| a.epoch);
    d.state.epoch = highest.fold(d.state.epoch, u64::max);
    let primary = d.state.primary.clone();
    match v.unhealthy(&primary) {
        None => {
            d.state.primary_unhealthy_since = None;
            d.state.failed_candidates.clear();
        }
        Some(why) => return primary_down(d, v, why),
    }
    if !switchover(d, v) {
        rolling_update(d, v);
    }
}

/// The primary is unhealthy: start the clock, and fail over once it is due.
fn primary_down(d: &mut Decision, v: &View<'_>, why: String) {
    let since = match &d.state.primary_unhealthy_since {
        Some(since) => since.clone(),
        // A primary that never was ready is starting, not failing.
        None if !v.was_ready(&d.state.primary) => return,
        None => {
            let now = Time(v.now);
            d.state.primary_unhealthy_since = Some(now.clone());
            now
        }
    };
    d.unhealthy = Some(why.clone());
    let spec = v.spec();
    if !spec.failover.enabled || spec.replicas == 0 {
        return;
    }
    let elapsed = v.seconds_since(&since);
    if elapsed < unhealthy_after(spec).as_secs_f64() {
        return;
    }
    let primary = d.state.primary.clone();
    let reason = format!("{PRIMARY_UNHEALTHY}: {why} for {elapsed:.0}s");
    let unhealthy = format!("the primary {primary} is unhealthy ({why})");
    fail_over(d, v, &primary, reason, since, &unhealthy);
}

/// Fails `primary` over to the best candidate other than it (a new change with
/// `reason`, started at `started_at`), or reports `unhealthy` and what blocks it.
fn fail_over(
    d: &mut Decision,
    v: &View<'_>,
    primary: &str,
    reason: String,
    started_at: Time,
    unhealthy: &str,
) {
    let mut exclude = d.state.failed_candidates.clone();
    exclude.push(primary.to_owned());
    match choose(v, primary, &exclude) {
        Ok(candidate) => {
            d.state.change = None;
            record(
                d,
                v,
                ChangeKind::Failover,
                primary,
                &candidate,
                reason,
                started_at,
            );
        }
        Err(message) => block(d, v, FAILOVER_BLOCKED, format!("{unhealthy} but {message}")),
    }
}

/// The replica to promote instead of `primary`: the most advanced one that
/// answers with its server up (received, then replayed, then name), not in
/// `exclude`, within `failover.maxLagBytes` unless `allowDataLoss`.
fn choose(v: &View<'_>, primary: &str, exclude: &[String]) -> Result<String, String> {
    let mut ranked = Vec::new();
    let mut rejected = Vec::new();
    for name in v.names.iter().filter(|n| !exclude.contains(n)) {
        match v.agent(name) {
            None => rejected.push(format!("{name}: no answer")),
            Some(a) if !a.server_up => rejected.push(format!("{name}: server not up")),
            Some(_) => match v.received(name) {
                None => rejected.push(format!("{name}: no replication position")),
                Some(received) => ranked.push((received, v.replayed(name), name.clone())),
            },
        }
    }
    ranked.sort_by(|a, b| {
        (Reverse(a.0), Reverse(a.1), &a.2).cmp(&(Reverse(b.0), Reverse(b.1), &b.2))
    });
    let Some((received, _, best)) = ranked.into_iter().next() else {
        let why = if rejected.is_empty() {
            "none is left".to_owned()
        } else {
            rejected.join("; ")
        };
        return Err(format!("no replica can take over ({why})"));
    };
    let failover = &v.spec().failover;
    if let Some(last) = recorded_position(v.shard, primary) {
        let lag = last.saturating_sub(received);
        if lag > v.max_lag() && !failover.allow_data_loss {
            return Err(format!(
                "the most advanced replica {best} is {lag} bytes behind the primary's last \
                 known position, more than failover.maxLagBytes ({}); set \
                 failover.allowDataLoss to promote it anyway and lose those writes",
                failover.max_lag_bytes
            ));
        }
    }
    Ok(best)
}

/// Records a new change (phase `Pending`, a new epoch).
fn record(
    d: &mut Decision,
    v: &View<'_>,
    kind: ChangeKind,
    from: &str,
    to: &str,
    reason: String,
    started_at: Time,
) {
    d.state.epoch += 1;
    let (event, warning, what) = match kind {
        ChangeKind::Failover => ("FailoverStarted", true, "failing over"),
        ChangeKind::Switchover => ("SwitchoverStarted", false, "switching over"),
    };
    d.events.push(Note {
        warning,
        reason: event,
        note: format!(
            "{what} from {from} to {to} at epoch {} ({reason})",
            d.state.epoch
        ),
    });
    d.state.change = Some(PrimaryChange {
        kind,
        phase: ChangePhase::Pending,
        from: from.to_owned(),
        to: to.to_owned(),
        reason,
        started_at,
        epoch: d.state.epoch,
        phase_since: Some(Time(v.now)),
    });
}

/// Reports what blocks a change, with an Event when it is new.
fn block(d: &mut Decision, v: &View<'_>, reason: &'static str, message: String) {
    let known = v.shard.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition::DEGRADED && c.reason == reason && c.message == message)
    });
    if !known {
        d.events.push(Note {
            warning: true,
            reason,
            note: message.clone(),
        });
    }
    d.blocked = Some(Blocked { reason, message });
}

/// Starts a switchover when `spec.primary` names another instance; `true` when
/// `spec.primary` asks for one (started or blocked).
fn switchover(d: &mut Decision, v: &View<'_>) -> bool {
    let Some(target) = v.spec().primary.clone() else {
        return false;
    };
    let primary = d.state.primary.clone();
    if target == primary {
        return false;
    }
    match switchover_blocker(v, &primary, &target) {
        Some(why) => block(
            d,
            v,
            SWITCHOVER_BLOCKED,
            format!("spec.primary asks for {target} but {why}; {primary} stays primary"),
        ),
        None => record(
            d,
            v,
            ChangeKind::Switchover,
            &primary,
            &target,
            format!("{SWITCHOVER}: spec.primary is {target}"),
            Time(v.now),
        ),
    }
    true
}

/// Why `target` cannot take over from `primary` now.
fn switchover_blocker(v: &View<'_>, primary: &str, target: &str) -> Option<String> {
    if !v.names.iter().any(|n| n == target) {
        return Some(format!(
            "it is not an instance of this shard (instances: {})",
            v.names.join(", ")
        ));
    }
    if !v.ready(target) {
        return Some("it is not ready".into());
    }
    if v.agent(target).is_none() {
        return Some("its agent does not answer".into());
    }
    if !v.streaming(target) {
        return Some(format!("it does not stream from {primary}"));
    }
    let lag = lag(v, primary, target)?;
    (lag > v.max_lag()).then(|| {
        format!(
            "it is {lag} bytes behind, more than failover.maxLagBytes ({})",
            v.spec().failover.max_lag_bytes
        )
    })
}

fn lag(v: &View<'_>, primary: &str, replica: &str) -> Option<u64> {
    Some(primary_position(v.shard, primary, v.agent(primary))?.saturating_sub(v.received(replica)?))
}

/// One step of a rolling update, when every instance is ready.
fn rolling_update(d: &mut Decision, v: &View<'_>) {
    let outdated: Vec<&String> = v.names.iter().filter(|n| v.outdated(n)).collect();
    if outdated.is_empty() || !v.names.iter().all(|n| v.ready(n)) {
        return;
    }
    let primary = d.state.primary.clone();
    let image = &v.spec().image;
    let replicas: Vec<&String> = v.names.iter().filter(|n| **n != primary).collect();
    if let Some(replica) = outdated.iter().find(|n| ***n != primary) {
        if replicas.iter().all(|n| v.streaming(n)) {
            d.delete_pods.push(Deletion {
                pod: (*replica).clone(),
                reason: ROLLING_UPDATE,
                note: format!(
                    "rolling update: deleted Pod {replica} to apply the spec ({image}, \
                     resources); it is recreated on its volume"
                ),
            });
        }
        return;
    }
    if replicas.is_empty() {
        d.delete_pods.push(Deletion {
            pod: primary.clone(),
            reason: ROLLING_UPDATE,
            note: format!(
                "rolling update: deleted Pod {primary} (no replica to switch over to) to \
                 apply the spec ({image}, resources); it is recreated on its volume"
            ),
        });
        return;
    }
    if let Some(message) = recent_switchover_failure(v) {
        d.blocked = Some(Blocked {
            reason: SWITCHOVER_FAILED,
            message,
        });
        return;
    }
    let target = replicas
        .iter()
        .filter(|n| switchover_blocker(v, &primary, n).is_none())
        .max_by_key(|n| (v.received(n), Reverse((**n).clone())));
    if let Some(target) = target {
        let reason = format!("{ROLLING_UPDATE}: {primary} runs an outdated Pod template");
        let now = Time(v.now);
        record(d, v, ChangeKind::Switchover, &primary, target, reason, now);
    }
}

/// The message of a `Degraded` [`SWITCHOVER_FAILED`] condition set less than
/// [`SWITCHOVER_RETRY`] ago, if the status has one.
fn recent_switchover_failure(v: &View<'_>) -> Option<String> {
    let status = v.shard.status.as_ref()?;
    let failed = status.conditions.iter().find(|c| {
        c.type_ == condition::DEGRADED && c.status == "True" && c.reason == SWITCHOVER_FAILED
    })?;
    (v.seconds_since(&failed.last_transition_time) < SWITCHOVER_RETRY.as_secs_f64())
        .then(|| failed.message.clone())
}

// ------------------------------------------------------------------ a change in progress

fn advance(d: &mut Decision, v: &View<'_>, change: &PrimaryChange) {
    match change.phase {
        ChangePhase::Pending => {
            let Some(how) = stopped(v, change) else {
                if change.kind == ChangeKind::Switchover {
                    stalled_switchover(d, v, change);
                }
                return;
            };
            let (reason, note) = match change.kind {
                ChangeKind::Failover => ("Fenced", format!("fenced {}: {how}", change.from)),
                ChangeKind::Switchover => (
                    "Demoted",
                    format!("{} stopped being primary: {how}", change.from),
                ),
            };
            d.events.push(Note {
                warning: false,
                reason,
                note,
            });
            if let Some(c) = d.state.change.as_mut() {
                c.phase = ChangePhase::Promoting;
                c.phase_since = Some(Time(v.now));
            }
        }
        ChangePhase::Promoting => {
            if promoted(v, change) {
                finish(d, v, change);
            } else if let Some(why) = candidate_failure(v, change) {
                candidate_failed(d, v, change, &why);
            }
        }
    }
}

/// A switchover whose old primary has not stepped down within
/// [`SWITCHOVER_TIMEOUT`]: when that primary is unhealthy (its agent or server does
/// not answer) it becomes a failover to the most advanced replica at a new epoch
/// (the old primary is fenced); when it still serves as primary the switchover is
/// cancelled: it stays primary at a new epoch and `spec.primary` names it again.
fn stalled_switchover(d: &mut Decision, v: &View<'_>, change: &PrimaryChange) {
    let waited = v.seconds_since(change.phase_since.as_ref().unwrap_or(&change.started_at));
    if waited < SWITCHOVER_TIMEOUT.as_secs_f64() {
        return;
    }
    let from = &change.from;
    let last_error = v
        .agent(from)
        .and_then(|a| a.last_error.as_deref())
        .map_or_else(String::new, |e| format!(" (last error: {e})"));
    match v.unhealthy(from) {
        Some(why) => {
            let since = d
                .state
                .primary_unhealthy_since
                .get_or_insert(Time(v.now))
                .clone();
            d.unhealthy = Some(why.clone());
            let spec = v.spec();
            if !spec.failover.enabled {
                let message = format!(
                    "{from} did not step down for the switchover to {} and is unhealthy \
                     ({why}), and automatic failover is disabled: bring {from} back, or \
                     enable failover",
                    change.to
                );
                return block(d, v, FAILOVER_BLOCKED, message);
            }
            if v.seconds_since(&since) < unhealthy_after(spec).as_secs_f64() {
                return;
            }
            let to = &change.to;
            let reason = format!(
                "{PRIMARY_UNHEALTHY}: {why} {waited:.0}s into a switchover to {to}{last_error}"
            );
            let unhealthy = format!(
                "{from} did not step down for the switchover to {to} and is unhealthy ({why})"
            );
            fail_over(d, v, from, reason, change.started_at.clone(), &unhealthy);
        }
        None => {
            d.state.change = None;
            d.state.epoch += 1;
            d.spec_primary = Some(from.clone());
            let note = format!(
                "{from} did not step down within {}s of the switchover to {}{last_error}; \
                 the switchover is cancelled, {from} stays primary at epoch {} and \
                 spec.primary names it again: edit spec.primary to retry (a rolling \
                 update retries after {} min)",
                SWITCHOVER_TIMEOUT.as_secs(),
                change.to,
                d.state.epoch,
                SWITCHOVER_RETRY.as_secs() / 60
            );
            block(d, v, SWITCHOVER_FAILED, note);
        }
    }
}

/// How the old primary stopped accepting writes, once it has.
fn stopped(v: &View<'_>, change: &PrimaryChange) -> Option<String> {
    let from = &change.from;
    let Some(pod) = v.pods.get(from) else {
        return Some("its Pod is gone".into());
    };
    if terminating(pod) {
        return Some("its Pod is being deleted".into());
    }
    if created_epoch(pod).is_some_and(|e| e >= change.epoch) {
        return Some("its Pod was recreated as a replica".into());
    }
    let agent = v.agent(from)?;
    if agent.epoch < change.epoch || agent.desired_role == DesiredRole::Primary {
        return None;
    }
    match change.kind {
        // a hung server does not answer either: only a server the agent has killed
        // (phase `fenced`) or that is not running at all is fenced
        ChangeKind::Failover => (agent.phase == "fenced" || agent.pid.is_none())
            .then(|| format!("its server is stopped (phase {})", agent.phase)),
        ChangeKind::Switchover => (agent.role == Some(Role::Replica))
            .then(|| format!("it runs as a replica of {}", change.to)),
    }
}

/// Whether the target reports being primary at the change's epoch.
fn promoted(v: &View<'_>, change: &PrimaryChange) -> bool {
    v.agent(&change.to).is_some_and(|a| {
        a.epoch >= change.epoch
            && a.desired_role == DesiredRole::Primary
            && a.role == Some(Role::Primary)
            && a.server_up
    })
}

/// Why the target is given up, if it is.
fn candidate_failure(v: &View<'_>, change: &PrimaryChange) -> Option<String> {
    if v.pod(&change.to).is_none() {
        return Some("its Pod is gone".into());
    }
    let agent = v.agent(&change.to);
    let error = agent.and_then(|a| a.last_error.clone());
    if agent.is_some_and(|a| a.epoch >= change.epoch && a.phase == "failed") {
        let error = error.unwrap_or_else(|| "no error reported".into());
        return Some(format!("its promotion failed: {error}"));
    }
    let since = change.phase_since.as_ref().unwrap_or(&change.started_at);
    let waited = v.seconds_since(since);
    (waited >= CANDIDATE_TIMEOUT.as_secs_f64()).then(|| {
        let last = error.map_or_else(String::new, |e| format!(" (last error: {e})"));
        let answer = if agent.is_none() {
            ", and its agent does not answer"
        } else {
            ""
        };
        format!("it is not primary {waited:.0}s after it was asked{answer}{last}")
    })
}

/// Gives up the target: tries the next candidate with a new epoch, or reports the
/// failover blocked.
fn candidate_failed(d: &mut Decision, v: &View<'_>, change: &PrimaryChange, why: &str) {
    d.events.push(Note {
        warning: true,
        reason: "CandidateFailed",
        note: format!("{} could not take over: {why}", change.to),
    });
    if !d.state.failed_candidates.contains(&change.to) {
        d.state.failed_candidates.push(change.to.clone());
    }
    d.state.change = None;
    let mut exclude = d.state.failed_candidates.clone();
    if change.kind == ChangeKind::Failover {
        exclude.push(change.from.clone());
    }
    match choose(v, &change.from, &exclude) {
        Ok(next) => record(
            d,
            v,
            ChangeKind::Failover,
            &change.from,
            &next,
            change.reason.clone(),
            change.started_at.clone(),
        ),
        Err(message) => block(
            d,
            v,
            FAILOVER_BLOCKED,
            format!("{} could not take over ({why}) and {message}", change.to),
        ),
    }
}

/// Completes a change: the target is the primary.
fn finish(d: &mut Decision, v: &View<'_>, change: &PrimaryChange) {
    let seconds = (v.seconds_since(&change.started_at) * 1000.0).round() / 1000.0;
    let reason = change
        .reason
        .split(':')
        .next()
        .unwrap_or(SWITCHOVER)
        .to_owned();
    d.state.primary = change.to.clone();
    d.state.change = None;
    d.state.failed_candidates.clear();
    d.state.primary_unhealthy_since = None;
    d.state.last_failover = Some(FailoverRecord {
        time: Time(v.now),
        from: change.from.clone(),
        to: change.to.clone(),
        reason,
        duration_seconds: seconds,
    });
    if v.spec().primary.as_deref() != Some(change.to.as_str()) {
        d.spec_primary = Some(change.to.clone());
    }
    d.events.push(Note {
        warning: false,
        reason: "Promoted",
        note: format!("{} is primary at epoch {}", change.to, change.epoch),
    });
    let completed = match change.kind {
        ChangeKind::Failover => "FailoverCompleted",
        ChangeKind::Switchover => "SwitchoverCompleted",
    };
    d.events.push(Note {
        warning: false,
        reason: completed,
        note: format!(
            "{} replaced {} as primary in {seconds:.1}s ({})",
            change.to, change.from, change.reason
        ),
    });
    d.completed = Some(Completed {
        kind: change.kind,
        seconds,
    });
}

// ------------------------------------------------------------------ commands

fn change_actions(d: &mut Decision, v: &View<'_>, change: &PrimaryChange) {
    match (change.phase, change.kind) {
        (ChangePhase::Pending, ChangeKind::Failover) => fence(d, v, change),
        (ChangePhase::Pending, ChangeKind::Switchover) => demote(d, v, change),
        (ChangePhase::Promoting, kind) => {
            if kind == ChangeKind::Failover {
                fence(d, v, change);
            }
            let command = primary_command(v, &change.to, change.epoch);
            push_if_needed(d, v, &change.to, command, false);
        }
    }
}

/// Fences the old primary: `fenced` with `stop: immediate`, or deletes its Pod when
/// its agent does not answer.
fn fence(d: &mut Decision, v: &View<'_>, change: &PrimaryChange) {
    let from = &change.from;
    let Some(pod) = v.pod(from) else { return };
    if created_epoch(pod).is_some_and(|e| e >= change.epoch) {
        return;
    }
    match v.agent(from) {
        Some(a) if a.epoch >= change.epoch && a.desired_role != DesiredRole::Primary => {}
        Some(_) => {
            let command = RoleCommand {
                role: DesiredRole::Fenced,
                upstream: v.upstream(&change.to),
                stop: StopMode::Immediate,
                ..base_command(v, change.epoch)
            };
            push(d, v, from, command, true);
        }
        None => d.delete_pods.push(Deletion {
            pod: from.clone(),
            reason: "Fenced",
            note: format!("deleted Pod {from} to fence the old primary: its agent does not answer"),
        }),
    }
}

/// Stops the old primary cleanly as a replica of the target.
fn demote(d: &mut Decision, v: &View<'_>, change: &PrimaryChange) {
    let Some(upstream) = v.upstream(&change.to) else {
        return;
    };
    let command = RoleCommand {
        role: DesiredRole::Replica,
        upstream: Some(upstream),
        stop: StopMode::Clean,
        ..base_command(v, change.epoch)
    };
    push_if_needed(d, v, &change.from, command, false);
}

/// Every instance in the role of the recorded state. Replicas get a command of the
/// state's epoch only once the primary has applied its own (see
/// [`primary_settled`]).
fn converge(d: &mut Decision, v: &View<'_>) {
    let primary = d.state.primary.clone();
    let epoch = d.state.epoch;
    let upstream = v
        .upstream(&primary)
        .filter(|_| primary_settled(v, &primary, epoch));
    for name in &v.names {
        let command = if *name == primary {
            primary_command(v, name, epoch)
        } else if let Some(upstream) = &upstream {
            RoleCommand {
                role: DesiredRole::Replica,
                upstream: Some(upstream.clone()),
                ..base_command(v, epoch)
            }
        } else {
            continue;
        };
        push_if_needed(d, v, name, command, false);
    }
}

/// Whether the primary's agent has applied a command of `epoch` (or reports no
/// applied epoch at all). Until it has, it may still be finishing an older step: a
/// Redis `FAILOVER` of a cancelled switchover can still hand the primary role to
/// its target, and a replica command taken before that step ends would leave the
/// target a second primary; taken after it, the command makes the target follow.
fn primary_settled(v: &View<'_>, primary: &str, epoch: u64) -> bool {
    v.agent(primary)
        .is_some_and(|a| a.applied_epoch.is_none_or(|applied| applied >= epoch))
}

fn base_command(v: &View<'_>, epoch: u64) -> RoleCommand {
    let spec = v.spec();
    RoleCommand {
        epoch,
        role: DesiredRole::Replica,
        upstream: None,
        replicas: Vec::new(),
        mode: spec.replication.mode,
        stop: StopMode::Clean,
        hold_crashed_primary_seconds: hold_seconds(spec),
    }
}

fn primary_command(v: &View<'_>, primary: &str, epoch: u64) -> RoleCommand {
    RoleCommand {
        role: DesiredRole::Primary,
        replicas: v.names.iter().filter(|n| *n != primary).cloned().collect(),
        ..base_command(v, epoch)
    }
}

/// Sends `command` to `name` unless its agent already holds it.
fn push_if_needed(d: &mut Decision, v: &View<'_>, name: &str, command: RoleCommand, fence: bool) {
    let Some(agent) = v.agent(name) else { return };
    let annotated = v.last_command(name) == Some(command_annotation(&command).as_str());
    let holds = agent.epoch == command.epoch && agent.desired_role == command.role;
    if !(holds && annotated) && agent.epoch <= command.epoch {
        push(d, v, name, command, fence);
    }
}

fn push(d: &mut Decision, v: &View<'_>, name: &str, command: RoleCommand, fence: bool) {
    let Some(host) = v.ip(name) else { return };
    d.commands.push(Command {
        pod: name.to_owned(),
        host,
        command,
        fence,
    });
}

/// The annotation value recording that an agent took `command`.
pub fn command_annotation(command: &RoleCommand) -> String {
    serde_json::to_string(command).unwrap_or_default()
}

fn labels(state: &State, v: &View<'_>) -> Labels {
    let Labels {
        primary,
        unlabelled,
        ..
    } = Labels::of(state);
    let streaming = v
        .names
        .iter()
        .filter(|n| Some(*n) != primary.as_ref() && Some(*n) != unlabelled.as_ref())
        .filter(|n| v.streaming(n) && v.agent(n).is_some_and(|a| a.role != Some(Role::Primary)))
        .cloned()
        .collect();
    Labels {
        primary,
        unlabelled,
        streaming: Some(streaming),
    }
}
