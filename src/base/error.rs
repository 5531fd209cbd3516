//! The base layer's one error: a Kubernetes API call that failed. The engine and the
//! Connection controller each turn it into their own outcome.

/// A Kubernetes API call that failed, and what was being done; the caller retries.
#[derive(Debug, thiserror::Error)]
#[error("kubernetes API: {context}: {source}")]
pub struct KubeError {
    pub context: &'static str,
    #[source]
    pub source: kube::Error,
}

impl KubeError {
    /// Wraps a failed call made while doing `context` (for `map_err`).
    pub fn at(context: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self { context, source }
    }
}
