//! `Ready`/`Synced` conditions: reasons, and setting a condition so that
//! `lastTransitionTime` only moves when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub use crate::api::condition::Condition;
use crate::api::condition::SharedStr;

pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";

/// Condition reasons, shared by every kind. Every `Ready=False` cause has its own
/// reason, so that alerts and `kubectl get -o jsonpath` can tell them apart; `ERROR` is
/// left for what the operator does not expect at all.
pub mod reason {
    /// `Ready=True`: the upstream object matches the spec.
    pub const AVAILABLE: &str = "Available";
    /// The first create has not succeeded yet (`Synced` says why); retried with backoff.
    pub const CREATING: &str = "Creating";
    /// An update of the upstream object is on its way.
    pub const UPDATING: &str = "Updating";
    /// The upstream object is being deleted; the finalizer stays until it is gone.
    pub const DELETING: &str = "Deleting";
    /// An asynchronous upstream accepted a write (202) that is not visible yet.
    pub const PENDING: &str = "Pending";
    /// The Connection or a referenced resource is missing or not ready yet.
    pub const WAITING_FOR_DEPENDENCY: &str = "WaitingForDependency";
    /// The ClusterConnection named by `connectionRef` does not allow the namespace.
    pub const CONNECTION_NOT_ALLOWED: &str = "ConnectionNotAllowed";
    /// Its team, app or gateway cluster is not in its ClusterConnection's `allowedScopes`.
    pub const SCOPE_NOT_ALLOWED: &str = "ScopeNotAllowed";
    /// Something this resource needs has failed (e.g. its MCP Gateway cluster's last
    /// operation); retried with backoff.
    pub const DEPENDENCY_FAILED: &str = "DependencyFailed";
    /// The adopted object (or, with `Observe`, any matching one) does not exist upstream.
    pub const NOT_FOUND: &str = "NotFound";
    /// Another resource of the kind manages the upstream object this one names.
    pub const ALREADY_MANAGED: &str = "AlreadyManaged";
    /// `Observe` policy: the upstream object differs from the spec.
    pub const DRIFTED: &str = "Drifted";
    /// The upstream rejected the spec (HTTP 400, 409 already-exists, 422 or another 4xx
    /// that retrying will not fix); the message has the upstream's words.
    pub const UPSTREAM_REJECTED: &str = "UpstreamRejected";
    /// The upstream answered 403: the Connection's credentials work but lack permission.
    pub const PERMISSION_DENIED: &str = "PermissionDenied";
    /// A tool the spec names exists on the connector but is not approved.
    pub const TOOL_NOT_APPROVED: &str = "ToolNotApproved";
    /// A tool the spec names does not exist in the connector's tool catalogue.
    pub const TOOL_NOT_FOUND: &str = "ToolNotFound";
    /// The operator refuses the operation for safety (an object built into the SaaS, a
    /// team's default profile); the spec or the policy must change.
    pub const REFUSED: &str = "Refused";
    /// Nothing the operator expects: an upstream answer of an unknown shape, a client
    /// misconfiguration. The message says what happened.
    pub const ERROR: &str = "Error";
    /// `Synced=True`: the last reconcile succeeded.
    pub const RECONCILE_SUCCESS: &str = "ReconcileSuccess";
    /// `Synced=False`: a retryable failure (network, 429, 5xx); retried with backoff.
    pub const RECONCILE_ERROR: &str = "ReconcileError";
    /// `Synced=False`: retrying without a spec change is pointless (retried only slowly).
    pub const TERMINAL_ERROR: &str = "TerminalError";
    /// `Synced=False` and `Ready=False`: after an interrupted create, several upstream
    /// objects match the natural key.
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
    let status = SharedStr::new(if value.status { "True" } else { "False" });
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: SharedStr::new(type_),
        status,
        reason: SharedStr::new(value.reason),
        message: SharedStr::new(&value.message),
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
