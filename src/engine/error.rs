//! Errors of the engine layer and how they map to conditions.

use crate::upstream::{ErrorClass, UpstreamError};

use super::conditions::reason;

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
            Self::Dependency(_) | Self::DependencyFailed(_) => "dependency",
            Self::CreateAmbiguous(_) => "create_ambiguous",
            Self::Refused(_) => "refused",
        }
    }
}
