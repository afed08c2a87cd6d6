//! Building status conditions whose `lastTransitionTime` moves only on a transition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::Condition;

/// A condition as computed by a status function, before timestamps are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The condition type, e.g. `Ready`.
    pub type_: &'static str,
    /// Whether the condition holds.
    pub status: bool,
    /// A CamelCase reason.
    pub reason: &'static str,
    /// A human-readable message.
    pub message: String,
}

impl Desired {
    /// A condition that holds.
    pub fn yes(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: true,
            reason,
            message: message.into(),
        }
    }

    /// A condition that does not hold.
    pub fn no(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// `now` truncated to whole seconds, as the apiserver stores condition times.
pub fn now_seconds() -> Time {
    truncate(Timestamp::now())
}

/// `ts` truncated to whole seconds.
pub fn truncate(ts: Timestamp) -> Time {
    Time(Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// The conditions `desired`, in that order, for an object at `generation`: each keeps
/// the `lastTransitionTime` of the same type in `previous` when its status did not
/// change, and gets `now` otherwise.
pub fn settle(
    desired: Vec<Desired>,
    previous: &[Condition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|d| {
            let status = status_str(d.status);
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: d.type_.to_owned(),
                status: status.to_owned(),
                reason: d.reason.to_owned(),
                message: d.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Whether condition `type_` of `conditions` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Joins up to `max` names with `, `, summarising the rest (`a, b and 3 more`).
pub fn name_list<S: AsRef<str>>(names: &[S], max: usize) -> String {
    let shown: Vec<&str> = names.iter().take(max).map(AsRef::as_ref).collect();
    let mut out = shown.join(", ");
    if names.len() > max {
        out.push_str(&format!(" and {} more", names.len() - max));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let t0 = time("2024-01-01T00:00:00Z");
        let t1 = time("2024-01-01T00:01:00Z");
        let first = settle(
            vec![Desired::no("Ready", "Starting", "0/1")],
            &[],
            Some(1),
            &t0,
        );
        assert_eq!(first[0].last_transition_time, t0);
        // Same status, different message and generation: time kept.
        let same = settle(
            vec![Desired::no("Ready", "Waiting", "still 0/1")],
            &first,
            Some(2),
            &t1,
        );
        assert_eq!(same[0].last_transition_time, t0);
        assert_eq!(same[0].reason, "Waiting");
        assert_eq!(same[0].observed_generation, Some(2));
        // Status flips: time moves.
        let flipped = settle(
            vec![Desired::yes("Ready", "Ok", "1/1")],
            &same,
            Some(2),
            &t1,
        );
        assert_eq!(flipped[0].last_transition_time, t1);
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn truncation_drops_subseconds() {
        let ts: Timestamp = "2024-01-01T00:00:00.123456Z".parse().unwrap();
        assert_eq!(truncate(ts), time("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn name_lists_are_bounded() {
        assert_eq!(name_list(&["a", "b"], 3), "a, b");
        assert_eq!(name_list(&["a", "b", "c", "d"], 2), "a, b and 2 more");
    }
}
