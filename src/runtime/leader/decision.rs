//! The pure part of leader election: what a candidate may do with a Lease it has read,
//! and the spec it writes. No API server, no clocks of its own: callers pass `now`.
//!
//! Expiry follows client-go: a candidate never compares the holder's `renewTime` with
//! its own wall clock (clocks of different nodes disagree). It notes the local
//! monotonic instant at which it last saw the Lease *change*; the Lease is expired when
//! it has not changed for `leaseDurationSeconds` since.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;

use super::LeaseTiming;

/// `leaseDurationSeconds` written on release, so that other clients treat it as expired.
pub(super) const RELEASED_DURATION_SECONDS: i32 = 1;

/// What a candidate may do with the Lease it has just read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it and it has not expired: wait and retry.
    Wait,
}

/// The local instant at which the Lease was last seen to change.
#[derive(Debug, Default)]
pub struct Observer {
    last: Option<(LeaseSpec, Instant)>,
}

impl Observer {
    /// Records `spec` as read at `now`; returns the instant it was last seen to change.
    pub fn observe(&mut self, spec: &LeaseSpec, now: Instant) -> Instant {
        match &self.last {
            Some((seen, at)) if seen == spec => *at,
            _ => {
                self.last = Some((spec.clone(), now));
                now
            }
        }
    }
}

/// The current holder, if any (an empty identity counts as none).
pub fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// Decides what `identity` may do with `spec`, last seen changing at `changed_at`.
pub fn decide(
    spec: &LeaseSpec,
    identity: &str,
    changed_at: Instant,
    now: Instant,
    timing: &LeaseTiming,
) -> Decision {
    match holder(spec) {
        None => Decision::Acquire,
        Some(h) if h == identity => Decision::Renew,
        Some(_) if is_expired(spec, changed_at, now, timing) => Decision::Acquire,
        Some(_) => Decision::Wait,
    }
}

/// Whether a held Lease, unchanged since `changed_at`, has expired at `now`.
pub fn is_expired(
    spec: &LeaseSpec,
    changed_at: Instant,
    now: Instant,
    timing: &LeaseTiming,
) -> bool {
    now.saturating_duration_since(changed_at) >= lease_duration(spec, timing)
}

/// The Lease's own duration, or ours when it has none.
fn lease_duration(spec: &LeaseSpec, timing: &LeaseTiming) -> Duration {
    spec.lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(timing.lease_duration)
}

/// The spec `identity` writes to acquire (`Decision::Acquire`) or renew the Lease.
pub fn claimed_spec(
    current: &LeaseSpec,
    identity: &str,
    decision: Decision,
    now: Timestamp,
    timing: &LeaseTiming,
) -> LeaseSpec {
    let renewing = decision == Decision::Renew && holder(current) == Some(identity);
    let transitions = current.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(duration_seconds(timing.lease_duration)),
        acquire_time: if renewing {
            current.acquire_time.clone()
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if renewing {
            transitions
        } else {
            transitions + 1
        }),
        ..current.clone()
    }
}

/// The spec written on release: no holder and a 1 s duration, so any candidate
/// (ours or client-go's) may take it at once.
pub fn released_spec(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(RELEASED_DURATION_SECONDS),
        renew_time: Some(MicroTime(now)),
        ..current.clone()
    }
}

/// Whether a leader that last renewed at `last_renewed` must step down at `now`.
pub fn renew_deadline_passed(last_renewed: Instant, now: Instant, timing: &LeaseTiming) -> bool {
    now.saturating_duration_since(last_renewed) >= timing.renew_deadline
}

fn duration_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> LeaseTiming {
        LeaseTiming::default()
    }

    fn held_by(holder: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(3),
            acquire_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn free_lease_is_acquired() {
        let now = Instant::now();
        let d = decide(&LeaseSpec::default(), "a", now, now, &timing());
        assert_eq!(d, Decision::Acquire);
        let empty = LeaseSpec {
            holder_identity: Some(String::new()),
            ..held_by("x")
        };
        assert_eq!(decide(&empty, "a", now, now, &timing()), Decision::Acquire);
    }

    #[test]
    fn own_lease_is_renewed_even_after_a_restart() {
        let now = Instant::now();
        assert_eq!(
            decide(&held_by("a"), "a", now, now, &timing()),
            Decision::Renew
        );
    }

    #[test]
    fn lease_of_another_is_waited_for_until_it_expires() {
        let seen = Instant::now();
        let spec = held_by("b");
        let t = timing();
        assert_eq!(decide(&spec, "a", seen, seen, &t), Decision::Wait);
        let almost = seen + Duration::from_millis(14_999);
        assert_eq!(decide(&spec, "a", seen, almost, &t), Decision::Wait);
        let expired = seen + Duration::from_secs(15);
        assert_eq!(decide(&spec, "a", seen, expired, &t), Decision::Acquire);
    }

    #[test]
    fn expiry_uses_the_lease_duration_and_falls_back_to_ours() {
        let seen = Instant::now();
        let t = timing();
        let short = LeaseSpec {
            lease_duration_seconds: Some(1),
            ..held_by("b")
        };
        assert!(is_expired(&short, seen, seen + Duration::from_secs(1), &t));
        let none = LeaseSpec {
            lease_duration_seconds: None,
            ..held_by("b")
        };
        assert!(!is_expired(&none, seen, seen + Duration::from_secs(14), &t));
        assert!(is_expired(&none, seen, seen + Duration::from_secs(15), &t));
    }

    #[test]
    fn observer_restarts_the_clock_only_when_the_lease_changes() {
        let mut observer = Observer::default();
        let t0 = Instant::now();
        let spec = held_by("b");
        assert_eq!(observer.observe(&spec, t0), t0);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            observer.observe(&spec, t1),
            t0,
            "unchanged lease keeps its age"
        );
        let renewed = LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::from_second(60).unwrap())),
            ..spec
        };
        assert_eq!(
            observer.observe(&renewed, t1),
            t1,
            "a renewal restarts the clock"
        );
    }

    #[test]
    fn acquiring_counts_a_transition_and_sets_times() {
        let now = Timestamp::from_second(1_000).unwrap();
        let spec = claimed_spec(&held_by("b"), "a", Decision::Acquire, now, &timing());
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let now = Timestamp::from_second(1_000).unwrap();
        let current = held_by("a");
        let spec = claimed_spec(&current, "a", Decision::Renew, now, &timing());
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.acquire_time, current.acquire_time);
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
    }

    #[test]
    fn release_clears_the_holder_and_shortens_the_lease() {
        let now = Timestamp::from_second(1_000).unwrap();
        let spec = released_spec(&held_by("a"), now);
        assert_eq!(holder(&spec), None);
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(spec.lease_transitions, Some(3));
        let t = Instant::now();
        assert_eq!(decide(&spec, "b", t, t, &timing()), Decision::Acquire);
    }

    #[test]
    fn leader_steps_down_at_the_renew_deadline() {
        let t = timing();
        let renewed = Instant::now();
        assert!(!renew_deadline_passed(
            renewed,
            renewed + Duration::from_millis(9_999),
            &t
        ));
        assert!(renew_deadline_passed(
            renewed,
            renewed + Duration::from_secs(10),
            &t
        ));
    }
}
