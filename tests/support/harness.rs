//! Drives the real Connection controller and the real engine against the fake
//! Kubernetes API and the fake Serval server, one reconcile pass at a time; and what
//! the integration tests share besides: conditions, convergence, log capture.
#![allow(dead_code)] // each test binary uses a different subset of the helpers

use std::sync::{Arc, Mutex};
use std::time::Duration;

use accessplane::api::{AccessProfile, Connection};
use accessplane::base::clock::ManualClock;
use accessplane::base::events::{EventPublisher, Reporter};
use accessplane::connections::Connections;
use accessplane::connections::controller::{self, ConnectionContext};
use accessplane::engine::metrics::ReconcileMetrics;
use accessplane::engine::requeue::Timing;
use accessplane::engine::{Engine, ManagedObject, Provider, reconcile};
use accessplane::providers::serval::AccessProfileProvider;
use accessplane::upstream::UpstreamMetrics;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::fake_kube::FakeKube;
use super::fake_serval::FakeServal;
use accessplane::fence::Fence;

pub const NS: &str = "platform-access";
pub const CLIENT_ID: &str = "operator-client";
pub const CLIENT_SECRET: &str = "SENTINEL-client-secret-3f9a";
pub const TEAM: &str = "team-payments";

pub struct Harness {
    pub kube: FakeKube,
    pub serval: FakeServal,
    pub clock: Arc<ManualClock>,
    pub engine: Arc<Engine<AccessProfile, AccessProfileProvider>>,
    pub conn_cx: Arc<ConnectionContext>,
}

impl Harness {
    /// Fakes started, the credentials Secret and a `serval` Connection applied and verified.
    pub async fn new() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let serval = FakeServal::start().await;
        serval.add_client(CLIENT_ID, CLIENT_SECRET);
        let kube = FakeKube::new();
        let client = kube.client();
        let clock = Arc::new(ManualClock::new(
            Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        let connections = Arc::new(Connections::default());
        let events = publisher(&client, &clock);
        let metrics = Arc::new(UpstreamMetrics::default());
        // Tests poll faster than the operator does: shorter shared-List window. Passes
        // are driven by hand, each standing for a resync: not spread, and not skipped as
        // echoes of the engine's own writes (tests of these set them).
        let timing = Timing {
            list_window: Duration::from_millis(400),
            resync_rate: 0.0,
            converged_quiet: Duration::ZERO,
            // Tests that drive passes one by one read accepted writes back at once.
            first_look: Duration::ZERO,
            ..Timing::default()
        };
        let engine = Arc::new(Engine::new(
            client.clone(),
            AccessProfileProvider,
            connections.clone(),
            events.clone(),
            clock.clone(),
            timing.clone(),
            ReconcileMetrics::default(),
        ));
        let conn_cx = Arc::new(ConnectionContext::new(
            client,
            connections.clone(),
            metrics,
            events,
            clock.clone(),
            (&timing).into(),
            Default::default(),
            accessplane::kinds::connection_users,
        ));
        let h = Self {
            kube,
            serval,
            clock,
            engine,
            conn_cx,
        };
        h.put_secret(
            "serval-credentials",
            json!({"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}),
        )
        .await;
        h.apply_connection("serval", json!({"serval": {"baseUrl": h.serval.base_url(), "credentialsSecretRef": {"name": "serval-credentials"}},
                                             "rateLimit": {"requestsPerSecond": 50, "burst": 50}}))
            .await;
        h.reconcile_connection("serval").await;
        assert_eq!(
            h.connection_ready("serval"),
            ("True".into(), "Verified".into())
        );
        h
    }

    pub fn client(&self) -> kube::Client {
        self.kube.client()
    }

    pub async fn put_secret(&self, name: &str, string_data: Value) {
        let api: Api<Secret> = Api::namespaced(self.client(), NS);
        let secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "stringData": string_data})).unwrap();
        let _ = api.delete(name, &DeleteParams::default()).await;
        api.create(&PostParams::default(), &secret).await.unwrap();
    }

    pub async fn apply_connection(&self, name: &str, spec: Value) {
        let api: Api<Connection> = Api::namespaced(self.client(), NS);
        let obj: Connection = serde_json::from_value(
            json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "Connection",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        )
        .unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap();
    }

    pub async fn reconcile_connection(&self, name: &str) -> Action {
        let api: Api<Connection> = Api::namespaced(self.client(), NS);
        let obj = api.get(name).await.unwrap();
        controller::reconcile(Arc::new(obj), self.conn_cx.clone())
            .await
            .unwrap()
    }

    pub fn connection_ready(&self, name: &str) -> (String, String) {
        let obj = self
            .kube
            .get("accessplane.io/v1alpha1", "connections", NS, name)
            .unwrap();
        let ready = condition(&obj, "Ready").expect("Ready condition");
        (
            ready["status"].as_str().unwrap().into(),
            ready["reason"].as_str().unwrap().into(),
        )
    }

    /// Creates an AccessProfile with the given spec (`connectionRef` and `teamId` defaulted).
    pub async fn apply_profile(&self, name: &str, mut spec: Value) {
        spec.as_object_mut()
            .unwrap()
            .entry("connectionRef")
            .or_insert(json!({"name": "serval"}));
        spec.as_object_mut()
            .unwrap()
            .entry("teamId")
            .or_insert(json!(TEAM));
        let obj: AccessProfile = serde_json::from_value(
            json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        )
        .unwrap();
        self.profiles()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }

    /// Merges `patch` into the AccessProfile's spec (a user edit).
    pub async fn edit_profile_spec(&self, name: &str, patch: Value) {
        self.edit_spec::<AccessProfile>(name, patch).await;
    }

    /// Merges `patch` into the spec of an object of any kind of the group (a user edit).
    pub async fn edit_spec<K: ManagedObject>(&self, name: &str, patch: Value) {
        Api::<K>::namespaced(self.client(), NS)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": patch})),
            )
            .await
            .unwrap();
    }

    /// The `serval` Connection's client, read-only (as `accessplane plan` uses it).
    pub fn read_only_serval(&self) -> accessplane::upstream::UpstreamClient {
        self.serval_client().read_only()
    }

    pub fn profiles(&self) -> Api<AccessProfile> {
        Api::namespaced(self.client(), NS)
    }

    /// One reconcile pass of the current object; `None` once the object is gone.
    pub async fn reconcile(&self, name: &str) -> Option<Action> {
        let obj = self.profiles().get_opt(name).await.unwrap()?;
        Some(
            reconcile(Arc::new(obj), self.engine.clone())
                .await
                .expect("reconcile"),
        )
    }

    /// Reconciles until the object stops changing (at most `n` passes).
    pub async fn settle(&self, name: &str, n: usize) {
        for _ in 0..n {
            let before = self.kube.resource_version();
            if self.reconcile(name).await.is_none() || self.kube.resource_version() == before {
                return;
            }
        }
    }

    pub async fn delete_profile(&self, name: &str) {
        self.profiles()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    pub fn object(&self, name: &str) -> Option<Value> {
        self.kube
            .get("accessplane.io/v1alpha1", "accessprofiles", NS, name)
    }

    /// (status, reason, message) of a condition of the AccessProfile.
    pub fn cond(&self, name: &str, type_: &str) -> (String, String, String) {
        let obj = self.object(name).expect("object exists");
        let c = condition(&obj, type_).unwrap_or_else(|| panic!("no {type_} condition in {obj}"));
        (
            c["status"].as_str().unwrap().into(),
            c["reason"].as_str().unwrap().into(),
            c["message"].as_str().unwrap_or_default().into(),
        )
    }

    pub fn status_id(&self, name: &str) -> Option<String> {
        self.object(name)?["status"]["id"]
            .as_str()
            .map(String::from)
    }

    pub fn event_reasons(&self) -> Vec<String> {
        self.kube
            .events(NS)
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// An Event publisher on this harness's fake apiserver and clock.
    pub fn publisher(&self) -> EventPublisher {
        publisher(&self.client(), &self.clock)
    }

    /// An engine for another kind, sharing this harness's Connections, clock and fakes.
    pub fn engine<K: ManagedObject, P: Provider<K>>(&self, provider: P) -> Arc<Engine<K, P>> {
        self.fenced_engine(provider, Fence::open())
    }

    /// An engine whose upstream and Kubernetes writes go only while `fence` is open, as
    /// a replica with leader election runs it.
    pub fn fenced_engine<K: ManagedObject, P: Provider<K>>(
        &self,
        provider: P,
        fence: Fence,
    ) -> Arc<Engine<K, P>> {
        let client = fence.kube_client(self.client());
        let events = publisher(&client, &self.clock);
        let engine = Engine::new(
            client,
            provider,
            self.engine.connections.clone(),
            events,
            self.clock.clone(),
            self.engine.timing.clone(),
            ReconcileMetrics::default(),
        );
        Arc::new(engine.with_fence(fence))
    }

    /// The `serval` Connection's client.
    pub fn serval_client(&self) -> accessplane::upstream::UpstreamClient {
        let reference = accessplane::api::envelope::ConnectionRef::local("serval");
        self.engine
            .connections
            .resolve(
                NS,
                &reference,
                accessplane::api::connection::UpstreamKind::Serval,
            )
            .expect("the serval Connection is ready")
    }

    /// Creates any object of the group from JSON (namespace defaulted).
    pub async fn create<K: ManagedObject>(&self, mut value: Value) {
        value["metadata"]["namespace"] = json!(NS);
        let obj: K = serde_json::from_value(value).unwrap();
        Api::<K>::namespaced(self.client(), NS)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }

    /// One reconcile pass of an object of any kind; `None` once it is gone.
    pub async fn pass<K: ManagedObject, P: Provider<K>>(
        &self,
        engine: &Arc<Engine<K, P>>,
        name: &str,
    ) -> Option<Action> {
        let obj = Api::<K>::namespaced(self.client(), NS)
            .get_opt(name)
            .await
            .unwrap()?;
        Some(
            reconcile(Arc::new(obj), engine.clone())
                .await
                .expect("reconcile"),
        )
    }

    /// Reconciles until the object stops changing (at most `n` passes).
    pub async fn settle_kind<K: ManagedObject, P: Provider<K>>(
        &self,
        engine: &Arc<Engine<K, P>>,
        name: &str,
        n: usize,
    ) {
        for _ in 0..n {
            let before = self.kube.resource_version();
            if self.pass(engine, name).await.is_none() || self.kube.resource_version() == before {
                return;
            }
        }
    }

    /// The stored object of any kind of the group, by plural.
    pub fn get(&self, plural: &str, name: &str) -> Option<Value> {
        self.kube.get("accessplane.io/v1alpha1", plural, NS, name)
    }

    /// (status, reason, message) of a condition of any object of the group.
    pub fn condition_of(&self, plural: &str, name: &str, type_: &str) -> (String, String, String) {
        let obj = self.get(plural, name).expect("object exists");
        let c = condition(&obj, type_).unwrap_or_else(|| panic!("no {type_} condition in {obj}"));
        (
            c["status"].as_str().unwrap().into(),
            c["reason"].as_str().unwrap().into(),
            c["message"].as_str().unwrap_or_default().into(),
        )
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The strings of a JSON array, as a set.
pub fn as_set(v: &Value) -> std::collections::BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

/// (status, reason) of a condition.
pub fn condition_pair(obj: &Value, kind: &str) -> Option<(String, String)> {
    let c = obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?;
    Some((c["status"].as_str()?.into(), c["reason"].as_str()?.into()))
}

/// "status/reason" of an object's Ready condition.
pub fn ready_reason(obj: Option<Value>) -> Option<String> {
    let (status, reason) = condition_pair(&obj?, "Ready")?;
    Some(format!("{status}/{reason}"))
}

/// Ready=True/Available and Synced=True at the current generation, the id recorded in
/// status (the only place it is written), nothing pending.
pub fn converged_status(obj: &Value) -> Result<(), String> {
    let ready = condition_pair(obj, "Ready");
    if ready != Some(("True".into(), "Available".into())) {
        return Err(format!("Ready is {ready:?}"));
    }
    let synced = condition_pair(obj, "Synced");
    if synced.as_ref().map(|s| s.0.as_str()) != Some("True") {
        return Err(format!("Synced is {synced:?}"));
    }
    let generation = &obj["metadata"]["generation"];
    if obj["status"]["observedGeneration"] != *generation {
        return Err(format!(
            "observedGeneration {} ≠ generation {generation}",
            obj["status"]["observedGeneration"]
        ));
    }
    if !obj["status"]["id"].is_string() {
        return Err("no status.id".into());
    }
    let annotations = &obj["metadata"]["annotations"];
    let created = annotations["accessplane.io/create-attempted"].is_string();
    let adopted =
        annotations["accessplane.io/adopted"] == "true" || obj["spec"]["externalId"].is_string();
    if created == adopted {
        return Err(format!(
            "neither or both created and adopted: {annotations}"
        ));
    }
    if obj["status"].get("pending").is_some() {
        return Err("status.pending still set".into());
    }
    Ok(())
}

/// `subscriber` as this thread's default while the returned guard lives.
///
/// The other tests' threads run without a subscriber, and tracing caches per call site
/// whether anyone is interested: a call site first hit there while this one is being
/// installed can be cached as "never" and then stay silent here too. Rebuilding that
/// cache now and every 50 ms while the guard lives makes such call sites log here again.
pub fn capture_logs(subscriber: impl tracing::Subscriber + Send + Sync + 'static) -> LogCapture {
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    let relisten = tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tracing::callsite::rebuild_interest_cache();
        }
    });
    LogCapture {
        _guard: guard,
        relisten,
    }
}

/// Every log line (TRACE and up, text format) of this test's thread while the guard lives.
pub fn capture_trace_text() -> (CapturedLogs, LogCapture) {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .finish();
    (logs, capture_logs(subscriber))
}

pub struct LogCapture {
    _guard: tracing::subscriber::DefaultGuard,
    relisten: tokio::task::JoinHandle<()>,
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        self.relisten.abort();
    }
}

/// A tracing subscriber writing into a buffer, to check what the operator logs.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The requeue delay of an Action (kube-runtime exposes it only through Debug).
pub fn requeue_of(action: &kube::runtime::controller::Action) -> Option<Duration> {
    let text = format!("{action:?}");
    let secs = text.split("requeue_after: Some(").nth(1)?;
    let num: String = secs
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let unit: String = secs[num.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    let value: f64 = num.parse().ok()?;
    Some(match unit.as_str() {
        "ms" => Duration::from_secs_f64(value / 1000.0),
        "µs" | "us" => Duration::from_secs_f64(value / 1e6),
        "ns" => Duration::from_secs_f64(value / 1e9),
        _ => Duration::from_secs_f64(value),
    })
}

fn publisher(client: &kube::Client, clock: &Arc<ManualClock>) -> EventPublisher {
    let reporter = Reporter {
        controller: "accessplane".into(),
        instance: None,
    };
    EventPublisher::new(client.clone(), reporter, clock.clone())
}
