//! Reconcile metrics per kind: passes and their duration, out-of-band changes found
//! (drift), and the time a resource takes to become Ready.

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

/// An out-of-band change of one managed field: `corrected` (written back) or `reported`
/// (`managementPolicy: Observe`). Field names come from the provider's diff: a small
/// fixed set per kind, never a value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    pub kind: String,
    pub field: &'static str,
    pub action: &'static str,
}

/// `action` of a drift that was written back.
pub const CORRECTED: &str = "corrected";
/// `action` of a drift only reported (Observe).
pub const REPORTED: &str = "reported";

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// `accessplane_reconcile_total{kind,result}`, `accessplane_reconcile_duration_seconds{kind}`,
/// `accessplane_drift_detected_total{kind,field,action}` and
/// `accessplane_time_to_ready_seconds{kind}`.
#[derive(Clone)]
pub struct ReconcileMetrics {
    pub reconciles: Family<ResultLabels, Counter>,
    pub duration: HistogramFamily<KindLabels>,
    pub drift: Family<DriftLabels, Counter>,
    pub time_to_ready: HistogramFamily<KindLabels>,
}

impl Default for ReconcileMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            // 5 ms .. ~40 s
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            drift: Family::default(),
            // 0.25 s .. ~9 h: a synchronous upstream answers in a pass, an asynchronous
            // one in minutes, a resource waiting for a dependency may take hours.
            time_to_ready: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.25, 2.0, 18))
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
        registry.register(
            "accessplane_drift_detected",
            "Out-of-band changes of managed fields found upstream, per kind, field and action (corrected, or reported under managementPolicy Observe)",
            self.drift.clone(),
        );
        registry.register(
            "accessplane_time_to_ready_seconds",
            "Time from a resource's creation (or the pass that first saw its new generation) to Ready, per kind",
            self.time_to_ready.clone(),
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

    /// Counts one out-of-band change of each of `fields`.
    pub fn drifted(&self, kind: &str, fields: &[&'static str], action: &'static str) {
        for field in fields {
            self.drift
                .get_or_create(&DriftLabels {
                    kind: kind.into(),
                    field,
                    action,
                })
                .inc();
        }
    }

    pub fn became_ready(&self, kind: &str, seconds: f64) {
        self.time_to_ready
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(seconds);
    }
}
