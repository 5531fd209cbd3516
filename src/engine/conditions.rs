//! `Ready`/`Synced` conditions (design §3): reasons, and setting a condition so that
//! `lastTransitionTime` only moves when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";

/// Condition reasons, shared by every kind.
pub mod reason {
    pub const AVAILABLE: &str = "Available";
    pub const CREATING: &str = "Creating";
    pub const UPDATING: &str = "Updating";
    pub const DELETING: &str = "Deleting";
    pub const PENDING: &str = "Pending";
    pub const WAITING_FOR_DEPENDENCY: &str = "WaitingForDependency";
    pub const NOT_FOUND: &str = "NotFound";
    pub const DRIFTED: &str = "Drifted";
    pub const ERROR: &str = "Error";
    pub const RECONCILE_SUCCESS: &str = "ReconcileSuccess";
    pub const RECONCILE_ERROR: &str = "ReconcileError";
    pub const TERMINAL_ERROR: &str = "TerminalError";
    pub const CREATE_AMBIGUOUS: &str = "CreateAmbiguous";
}

/// The desired value of one condition, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionValue {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl ConditionValue {
    pub fn new(status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Sets `type_` in `conditions`. The transition time is kept unless the status flips.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: &ConditionValue,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if value.status { "True" } else { "False" }.to_string();
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: type_.to_string(),
        status,
        reason: value.reason.to_string(),
        message: value.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The condition of that type, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let t2 = Timestamp::from_second(3_000).unwrap();
        let mut conds = vec![];
        set(
            &mut conds,
            READY,
            &ConditionValue::new(false, reason::CREATING, "a"),
            Some(1),
            t0,
        );
        set(
            &mut conds,
            READY,
            &ConditionValue::new(false, reason::PENDING, "b"),
            Some(1),
            t1,
        );
        assert_eq!(conds[0].last_transition_time.0, t0);
        assert_eq!(conds[0].reason, reason::PENDING);
        set(
            &mut conds,
            READY,
            &ConditionValue::new(true, reason::AVAILABLE, ""),
            Some(2),
            t2,
        );
        assert_eq!(conds[0].last_transition_time.0, t2);
        assert_eq!(conds[0].observed_generation, Some(2));
        assert_eq!(conds.len(), 1);
    }
}
