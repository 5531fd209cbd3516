//! Reconcile metrics per kind.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// `accessplane_reconcile_total{kind,result}` and `accessplane_reconcile_duration_seconds{kind}`.
#[derive(Clone)]
pub struct ReconcileMetrics {
    pub reconciles: Family<ResultLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
}

impl Default for ReconcileMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
        }
    }
}

impl ReconcileMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "accessplane_reconcile",
            "Reconciles per kind and result (ok or an error class)",
            self.reconciles.clone(),
        );
        registry.register(
            "accessplane_reconcile_duration_seconds",
            "Reconcile duration per kind",
            self.duration.clone(),
        );
    }

    pub fn observe(&self, kind: &str, result: &str, seconds: f64) {
        self.reconciles
            .get_or_create(&ResultLabels {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
        self.duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(seconds);
    }
}
