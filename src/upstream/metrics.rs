//! Prometheus metrics of upstream calls, per provider and operation.

use std::borrow::Cow;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one request attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    provider: &'static str,
    operation: &'static str,
    /// HTTP status code, or a word when there was none (`transport`, `decode`, ...).
    status: Cow<'static, str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    provider: &'static str,
    operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RetryLabels {
    provider: &'static str,
    operation: &'static str,
    reason: Cow<'static, str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Metric families of all upstream clients; share one instance (in an `Arc`).
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<OperationLabels>,
    retries: Family<RetryLabels, Counter>,
    rate_limit_wait: HistogramFamily<ProviderLabels>,
}

impl Default for UpstreamMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            // 5 ms .. ~40 s
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            retries: Family::default(),
            // 1 ms .. ~16 s; most acquisitions do not wait at all.
            rate_limit_wait: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
        }
    }
}

impl UpstreamMetrics {
    /// Registers all families in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "accessplane_upstream_requests",
            "Upstream HTTP request attempts by provider, operation and status",
            self.requests.clone(),
        );
        registry.register(
            "accessplane_upstream_request_duration_seconds",
            "Latency of upstream HTTP request attempts",
            self.duration.clone(),
        );
        registry.register(
            "accessplane_upstream_retries",
            "Upstream request retries by reason",
            self.retries.clone(),
        );
        registry.register(
            "accessplane_upstream_rate_limit_wait_seconds",
            "Time spent waiting for the per-connection rate limiter",
            self.rate_limit_wait.clone(),
        );
    }

    /// Records one finished attempt.
    pub(crate) fn observe_request(
        &self,
        provider: &'static str,
        operation: &'static str,
        status: Cow<'static, str>,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                provider,
                operation,
                status,
            })
            .inc();
        self.duration
            .get_or_create(&OperationLabels {
                provider,
                operation,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records that an attempt is about to be retried.
    pub(crate) fn observe_retry(
        &self,
        provider: &'static str,
        operation: &'static str,
        reason: Cow<'static, str>,
    ) {
        self.retries
            .get_or_create(&RetryLabels {
                provider,
                operation,
                reason,
            })
            .inc();
    }

    /// Records time spent waiting for a rate-limit permit.
    pub(crate) fn observe_rate_limit_wait(&self, provider: &'static str, waited: Duration) {
        self.rate_limit_wait
            .get_or_create(&ProviderLabels { provider })
            .observe(waited.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn exports_the_documented_names() {
        let metrics = UpstreamMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.observe_request("serval", "get", "200".into(), Duration::from_millis(20));
        metrics.observe_retry("serval", "get", "429".into());
        metrics.observe_rate_limit_wait("serval", Duration::ZERO);

        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for needle in [
            r#"accessplane_upstream_requests_total{provider="serval",operation="get",status="200"} 1"#,
            r#"accessplane_upstream_request_duration_seconds_count{provider="serval",operation="get"} 1"#,
            r#"accessplane_upstream_retries_total{provider="serval",operation="get",reason="429"} 1"#,
            r#"accessplane_upstream_rate_limit_wait_seconds_count{provider="serval"} 1"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
