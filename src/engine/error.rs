//! Errors of the engine layer and how they map to conditions.

use crate::base::KubeError;
use crate::base::conditions::reason;
use crate::upstream::{ErrorClass, UpstreamError};

/// Why a reconcile could not finish.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A Kubernetes API call failed; the controller retries with backoff.
    #[error("kubernetes API: {context}: {source}")]
    Kube {
        context: &'static str,
        #[source]
        source: kube::Error,
    },
    /// The upstream API failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Something this resource needs is not ready yet (Connection, referenced resource).
    #[error("{0}")]
    Dependency(String),
    /// The ClusterConnection it names does not allow its namespace: nothing is sent
    /// upstream (re-checked when namespaces or the ClusterConnection change).
    #[error("{0}")]
    ConnectionNotAllowed(String),
    /// Its team, app or gateway cluster is outside the slice of the tenant its
    /// ClusterConnection hands out (`allowedScopes`): nothing is sent upstream.
    #[error("{0}")]
    ScopeNotAllowed(String),
    /// Something this resource needs has failed (e.g. its gateway cluster's last
    /// operation failed); retried with backoff, reported as an error meanwhile.
    #[error("{0}")]
    DependencyFailed(String),
    /// A create may have happened but the object cannot be identified.
    #[error("{0}")]
    CreateAmbiguous(String),
    /// The upstream failed to delete the object in a way retrying will not fix (refused,
    /// credentials rejected); the message adds how to release the resource.
    #[error("cannot delete the upstream object: {source}; {hint}")]
    Delete {
        source: UpstreamError,
        hint: &'static str,
    },
    /// The operator refuses the operation for safety (e.g. deleting a team-default profile).
    #[error("{0}")]
    Refused(String),
}

impl EngineError {
    /// The upstream error behind this one, if any.
    pub fn upstream(&self) -> Option<&UpstreamError> {
        match self {
            Self::Upstream(e) | Self::Delete { source: e, .. } => Some(e),
            _ => None,
        }
    }

    /// Whether the write fence stopped this pass (this replica may no longer lead).
    pub fn is_fenced(&self) -> bool {
        match self {
            Self::Kube { source, .. } => crate::fence::is_fenced_kube(source),
            _ => self.upstream().is_some_and(UpstreamError::is_fenced),
        }
    }

    pub fn kube(context: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { context, source }
    }

    /// The `Synced=False` reason for this error.
    pub fn synced_reason(&self) -> &'static str {
        match self {
            Self::CreateAmbiguous(_) => reason::CREATE_AMBIGUOUS,
            Self::Refused(_) => reason::TERMINAL_ERROR,
            Self::Upstream(e) | Self::Delete { source: e, .. }
                if e.class() == ErrorClass::Terminal =>
            {
                reason::TERMINAL_ERROR
            }
            _ => reason::RECONCILE_ERROR,
        }
    }

    /// The `Ready=False` reason for this error: one per class of cause (see
    /// [`reason`]), `Error` only for what is not expected at all.
    pub fn ready_reason(&self) -> &'static str {
        match self {
            Self::Dependency(_) => reason::WAITING_FOR_DEPENDENCY,
            Self::ConnectionNotAllowed(_) => reason::CONNECTION_NOT_ALLOWED,
            Self::ScopeNotAllowed(_) => reason::SCOPE_NOT_ALLOWED,
            Self::DependencyFailed(_) => reason::DEPENDENCY_FAILED,
            Self::CreateAmbiguous(_) => reason::CREATE_AMBIGUOUS,
            Self::Refused(_) => reason::REFUSED,
            Self::Upstream(e) | Self::Delete { source: e, .. } => upstream_ready_reason(e),
            Self::Kube { .. } => reason::ERROR,
        }
    }

    /// Whether retrying without a spec change is pointless (retried only slowly).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.synced_reason(),
            reason::TERMINAL_ERROR | reason::CREATE_AMBIGUOUS
        )
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::Upstream(e) | Self::Delete { source: e, .. } => match e.class() {
                ErrorClass::Retryable => "upstream_retryable",
                ErrorClass::Terminal => "upstream_terminal",
                ErrorClass::NotFound => "upstream_not_found",
                ErrorClass::Authentication => "upstream_auth",
            },
            Self::Dependency(_)
            | Self::DependencyFailed(_)
            | Self::ConnectionNotAllowed(_)
            | Self::ScopeNotAllowed(_) => "dependency",
            Self::CreateAmbiguous(_) => "create_ambiguous",
            Self::Refused(_) => "refused",
        }
    }
}

/// A failed write of the base layer's (finalizer, annotations, status): retried like any
/// other failed Kubernetes call.
impl From<KubeError> for EngineError {
    fn from(KubeError { context, source }: KubeError) -> Self {
        Self::Kube { context, source }
    }
}

/// `Ready=False` reason of an upstream failure that says something about the object.
fn upstream_ready_reason(e: &UpstreamError) -> &'static str {
    match (e.class(), e.status()) {
        (ErrorClass::Terminal, Some(403)) => reason::PERMISSION_DENIED,
        (ErrorClass::Terminal, Some(400..=499)) => reason::UPSTREAM_REJECTED,
        // An undecodable answer, a misconfigured client; and the classes that leave
        // Ready as it was (retryable, not found, credentials) should never get here.
        _ => reason::ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: Option<&str>) -> EngineError {
        EngineError::Upstream(UpstreamError::Api {
            provider: "test",
            operation: "op",
            status,
            code: code.map(str::to_owned),
            message: "m".into(),
            retry_after: None,
        })
    }

    #[test]
    fn each_class_of_cause_has_its_own_ready_reason() {
        for status in [400, 410, 422] {
            let e = api(status, None);
            assert_eq!(e.ready_reason(), reason::UPSTREAM_REJECTED, "{status}");
            assert_eq!(e.synced_reason(), reason::TERMINAL_ERROR, "{status}");
        }
        assert_eq!(
            api(409, Some("already_exists")).ready_reason(),
            reason::UPSTREAM_REJECTED
        );
        assert_eq!(api(403, None).ready_reason(), reason::PERMISSION_DENIED);
        let refused_delete = EngineError::Delete {
            source: UpstreamError::RetriesExhausted {
                provider: "test",
                operation: "delete",
                attempts: 1,
                last: Box::new(UpstreamError::Api {
                    provider: "test",
                    operation: "delete",
                    status: 403,
                    code: None,
                    message: "m".into(),
                    retry_after: None,
                }),
            },
            hint: "orphan",
        };
        assert_eq!(refused_delete.ready_reason(), reason::PERMISSION_DENIED);
        assert_eq!(
            EngineError::Dependency("c".into()).ready_reason(),
            reason::WAITING_FOR_DEPENDENCY
        );
        assert_eq!(
            EngineError::DependencyFailed("c".into()).ready_reason(),
            reason::DEPENDENCY_FAILED
        );
        assert_eq!(
            EngineError::Refused("built in".into()).ready_reason(),
            reason::REFUSED
        );
        assert_eq!(
            EngineError::CreateAmbiguous("2 match".into()).ready_reason(),
            reason::CREATE_AMBIGUOUS
        );
        // Only the unexpected is left as "Error".
        let undecodable = EngineError::Upstream(UpstreamError::Decode {
            provider: "test",
            operation: "op",
            message: "missing field id".into(),
        });
        assert_eq!(undecodable.ready_reason(), reason::ERROR);
    }
}
