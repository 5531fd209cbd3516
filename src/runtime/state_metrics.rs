//! State metrics, counted at scrape time (at most every 2 s) from the caches the
//! controllers already hold (never from the API, and no copy of any object): resources by kind and `Ready`
//! state, awaited asynchronous writes, Connections by provider and state, and whether
//! this replica leads. A standby replica runs no controller, so it shows only
//! `accessplane_leader 0`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use crate::base::conditions::{self, READY};
use crate::connections::controller::ConnectionObject;
use crate::engine::ManagedObject;
use crate::fence::Fence;

/// How long one count answers scrapes: scrapes come every 10 s or more, a tool polling
/// `/metrics` faster costs one count per period, not one per poll.
const COUNT_REUSED_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// What one scrape counts.
#[derive(Clone, Default)]
struct Counts {
    /// (kind, ready, reason) → resources.
    resources: BTreeMap<(String, String, String), i64>,
    /// kind → (awaited writes, age of the oldest in seconds).
    pending: BTreeMap<String, (i64, f64)>,
    /// (kind, provider, ready, reason) → Connections.
    connections: BTreeMap<(String, String, String, String), i64>,
}

/// One cache to count from.
type Source = Box<dyn Fn(&mut Counts, Timestamp) + Send + Sync>;

/// The scrape-time collector; cheap to clone, filled as controllers start.
#[derive(Clone, Default)]
pub struct StateMetrics {
    sources: Arc<Mutex<Vec<Source>>>,
    fence: Arc<Mutex<Option<Fence>>>,
    /// The last count and when it was made.
    last: Arc<Mutex<Option<(std::time::Instant, Counts)>>>,
}

impl std::fmt::Debug for StateMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateMetrics")
    }
}

/// `Ready`'s status (`True`, `False`, `Unknown` when not written yet) and reason.
fn ready_of(conditions: &[crate::api::condition::Condition]) -> (String, String) {
    match conditions::get(conditions, READY) {
        Some(c) => (c.status.to_string(), c.reason.to_string()),
        None => ("Unknown".into(), String::new()),
    }
}

impl StateMetrics {
    /// Counts the resources of the managed kind `K` in `store`.
    pub fn watch_kind<K: ManagedObject>(&self, store: Store<K>) {
        let kind = K::kind(&()).to_string();
        self.add(Box::new(move |counts, now| {
            let state = store.state();
            // Counted by the cache's own strings: no allocation per object.
            let mut resources: HashMap<(&str, &str), i64> = HashMap::new();
            let pending = counts.pending.entry(kind.clone()).or_default();
            for obj in &state {
                let status = obj.managed_status();
                let ready = status.and_then(|s| conditions::get(&s.conditions, READY));
                let key = ready.map_or(("Unknown", ""), |c| (&*c.status, &*c.reason));
                *resources.entry(key).or_default() += 1;
                if let Some(write) = status.and_then(|s| s.pending.as_ref()) {
                    pending.0 += 1;
                    if let Ok(at) = write.requested_at.parse::<Timestamp>() {
                        let age = now.duration_since(at).as_secs_f64().max(0.0);
                        pending.1 = pending.1.max(age);
                    }
                }
            }
            for ((ready, reason), n) in resources {
                let key = (kind.clone(), ready.to_string(), reason.to_string());
                counts.resources.insert(key, n);
            }
        }));
    }

    /// Counts the Connections (or ClusterConnections) in `store`.
    pub fn watch_connections<C: ConnectionObject>(&self, store: Store<C>) {
        let kind = C::kind(&()).to_string();
        self.add(Box::new(move |counts, _| {
            for conn in store.state() {
                let provider = conn
                    .spec()
                    .upstream_kind()
                    .map_or("none", crate::saas::provider_name);
                let (ready, reason) = ready_of(conn.conditions());
                let key = (kind.clone(), provider.to_string(), ready, reason);
                *counts.connections.entry(key).or_default() += 1;
            }
        }));
    }

    /// This replica leads while `fence` is open.
    pub fn watch_fence(&self, fence: Fence) {
        *self.fence.lock().unwrap() = Some(fence);
    }

    fn add(&self, source: Source) {
        self.sources.lock().unwrap().push(source);
    }

    /// The counts of the caches now, or of less than [`COUNT_REUSED_FOR`] ago.
    fn count(&self) -> Counts {
        let mut last = self.last.lock().unwrap();
        if let Some((at, counts)) = last.as_ref()
            && at.elapsed() < COUNT_REUSED_FOR
        {
            return counts.clone();
        }
        let counts = self.count_now();
        *last = Some((std::time::Instant::now(), counts.clone()));
        counts
    }

    fn count_now(&self) -> Counts {
        let mut counts = Counts::default();
        let now = Timestamp::now();
        for source in self.sources.lock().unwrap().iter() {
            source(&mut counts, now);
        }
        counts
    }
}

/// Writes one gauge family: `samples` of (labels, value).
fn gauges<L: prometheus_client::encoding::EncodeLabelSet, N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, N)>,
) -> Result<(), std::fmt::Error>
where
    N: prometheus_client::encoding::EncodeGaugeValue,
{
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for StateMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let leads = self
            .fence
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(Fence::is_open);
        let leader = encoder.encode_descriptor(
            "accessplane_leader",
            "1 while this replica may write (it holds the leader-election lease, or runs without leader election), else 0",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(leads)).encode(leader)?;
        let counts = self.count();
        gauges(
            &mut encoder,
            "accessplane_resources",
            "Resources per kind and Ready state (True, False, Unknown) and reason, from the controllers' caches",
            counts
                .resources
                .into_iter()
                .map(|((kind, ready, reason), n)| {
                    (
                        vec![("kind", kind), ("ready", ready), ("reason", reason)],
                        n,
                    )
                }),
        )?;
        gauges(
            &mut encoder,
            "accessplane_pending_writes",
            "Writes an asynchronous upstream accepted (202) that are not visible yet, per kind",
            counts
                .pending
                .iter()
                .map(|(kind, (n, _))| (vec![("kind", kind.clone())], *n)),
        )?;
        gauges(
            &mut encoder,
            "accessplane_pending_write_oldest_age_seconds",
            "Age of the oldest awaited asynchronous write per kind (0 when none)",
            counts
                .pending
                .iter()
                .map(|(kind, (_, age))| (vec![("kind", kind.clone())], *age)),
        )?;
        gauges(
            &mut encoder,
            "accessplane_connections",
            "Connections and ClusterConnections per provider, Ready state and reason",
            counts
                .connections
                .into_iter()
                .map(|((kind, provider, ready, reason), n)| {
                    let labels = [
                        ("kind", kind),
                        ("provider", provider),
                        ("ready", ready),
                        ("reason", reason),
                    ];
                    (labels.to_vec(), n)
                }),
        )
    }
}
