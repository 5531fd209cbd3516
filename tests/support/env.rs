//! One test environment, generic over what differs between the integration tests that
//! need more than one fake: which fake upstreams run (`U`) and what reconciles (`R`).
//!
//! - `U`, an [`Upstream`]: fakes started with a client each ([`C1`], [`Ic`], [`Serval`],
//!   a pair of them, or `()` for none besides the harness's own Serval), and the
//!   Connections that reach them ([`Conn`]).
//! - `R`: a [`Harness`] (the Connections created through the API and verified by hand,
//!   on a manual clock; the test makes its engines), [`Passes`] (the same with the engine
//!   of one kind, driven a pass at a time), or an [`Operator`] (the whole operator,
//!   `run_with`, on a task; the Connections seeded in the apiserver for it to verify).
//!
//! A [`Setup`] is the step between: the fakes started and their Connections described,
//! for a test to adjust before anything connects.
#![allow(dead_code)] // each test binary uses a different subset of the helpers

use std::sync::Arc;
use std::time::Duration;

use accessplane::engine::{Engine, ManagedObject, Provider};
use accessplane::runtime::{RunConfig, RuntimeError, run_with};
use base64::Engine as _;
use futures::FutureExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::fake_c1::{FakeC1, test_credentials};
use super::fake_instaclustr::FakeInstaclustr;
use super::fake_kube::FakeKube;
use super::fake_serval::FakeServal;
use super::harness::{Harness, NS};

/// The fakes, the in-memory apiserver, and what reconciles.
pub struct Env<U, R> {
    /// The in-memory apiserver (under a `Harness` or `Passes`, the harness's own).
    pub kube: FakeKube,
    /// The fake upstreams.
    pub up: U,
    /// What reconciles: a [`Harness`], [`Passes`] or an [`Operator`].
    pub run: R,
}

/// A `Harness` with a verified `c1` Connection to a fresh fake tenant with one app.
pub type C1Env = Env<C1, Harness>;

/// A `Harness` with a verified `ic` Connection to a fresh fake Instaclustr account.
pub type IcEnv = Env<Ic, Harness>;

/// Fake upstreams, and the Connections that reach them.
pub trait Upstream: Sized {
    /// Starts the fakes, each with the client its Connection uses.
    async fn start() -> (Self, Vec<Conn>);
}

/// A Connection to a fake, and its credentials Secret.
pub struct Conn {
    pub name: &'static str,
    /// The credentials Secret's name (the spec refers to it).
    pub secret: &'static str,
    /// The Secret's entries, as text.
    pub credentials: Value,
    pub spec: Value,
}

impl Conn {
    /// The Connection `name` with `spec` (`{<upstream>: {<its URL field>: …}}`), its
    /// credentials in the Secret `secret`.
    pub fn new(
        name: &'static str,
        mut spec: Value,
        secret: &'static str,
        credentials: Value,
    ) -> Self {
        for upstream in spec.as_object_mut().unwrap().values_mut() {
            upstream["credentialsSecretRef"] = json!({"name": secret});
        }
        Self {
            name,
            secret,
            credentials,
            spec,
        }
    }
}

/// No upstream besides the harness's own Serval.
impl Upstream for () {
    async fn start() -> (Self, Vec<Conn>) {
        ((), Vec::new())
    }
}

/// Both; their Connections, `A`'s first.
impl<A: Upstream, B: Upstream> Upstream for (A, B) {
    async fn start() -> (Self, Vec<Conn>) {
        let (a, mut connections) = A::start().await;
        let (b, more) = B::start().await;
        connections.extend(more);
        ((a, b), connections)
    }
}

/// A fake ConductorOne tenant with one app; the Connection `c1`.
pub struct C1 {
    pub c1: FakeC1,
    pub app: String,
}

impl Upstream for C1 {
    async fn start() -> (Self, Vec<Conn>) {
        let c1 = FakeC1::start().await;
        let (client_id, secret, public) = test_credentials(&c1.host());
        c1.add_client(&client_id, public, &secret);
        let connection = Conn::new(
            "c1",
            json!({"conductorOne": {"serverUrl": c1.base_url()}}),
            "c1-credentials",
            json!({"clientId": client_id, "clientSecret": secret}),
        );
        let app = c1.seed_app();
        (Self { c1, app }, vec![connection])
    }
}

/// A fake Instaclustr account `ops`/`key`; the Connection `ic`. Gateway clusters and
/// virtual servers are the test's to add.
pub struct Ic {
    pub ic: FakeInstaclustr,
}

impl Upstream for Ic {
    async fn start() -> (Self, Vec<Conn>) {
        let ic = FakeInstaclustr::start().await;
        ic.add_account("ops", "key");
        let connection = Conn::new(
            "ic",
            json!({"instaclustr": {"baseUrl": ic.base_url()}}),
            "ic",
            json!({"username": "ops", "apiKey": "key"}),
        );
        (Self { ic }, vec![connection])
    }
}

/// A fake Serval with the client `operator`/`s3cret`; the Connection `serval`.
pub struct Serval {
    pub serval: FakeServal,
}

impl Upstream for Serval {
    async fn start() -> (Self, Vec<Conn>) {
        let serval = FakeServal::start().await;
        serval.add_client("operator", "s3cret");
        let connection = Conn::new(
            "serval",
            json!({"serval": {"baseUrl": serval.base_url()}}),
            "serval-creds",
            json!({"clientId": "operator", "clientSecret": "s3cret"}),
        );
        (Self { serval }, vec![connection])
    }
}

/// The fakes started and their Connections described, nothing connected yet.
pub struct Setup<U> {
    pub up: U,
    pub connections: Vec<Conn>,
}

/// Where [`Setup::operator`] puts the Connections.
pub enum Seed {
    /// Each Connection and its Secret in this namespace.
    Connections(&'static str),
    /// Only the Secrets, in this namespace: the test makes the (Cluster)Connections.
    Secrets(&'static str),
}

impl<U: Upstream> Setup<U> {
    pub async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (up, connections) = U::start().await;
        Self { up, connections }
    }

    /// Every Connection limited to `rps` requests a second, in bursts of `burst`.
    pub fn rate_limit(mut self, rps: u32, burst: u32) -> Self {
        for connection in &mut self.connections {
            connection.spec["rateLimit"] = json!({"requestsPerSecond": rps, "burst": burst});
        }
        self
    }

    /// A [`Harness`], each Connection created through the API and verified.
    pub async fn harness(self) -> Env<U, Harness> {
        let h = Harness::new().await;
        for c in &self.connections {
            h.put_secret(c.secret, c.credentials.clone()).await;
            h.apply_connection(c.name, c.spec.clone()).await;
            h.reconcile_connection(c.name).await;
            assert_eq!(
                h.connection_ready(c.name),
                ("True".into(), "Verified".into())
            );
        }
        Env {
            kube: h.kube.clone(),
            up: self.up,
            run: h,
        }
    }

    /// The same, with the engine of `provider`'s kind.
    pub async fn passes<K: ManagedObject, P: Provider<K>>(
        self,
        provider: P,
    ) -> Env<U, Passes<K, P>> {
        let Env { kube, up, run: h } = self.harness().await;
        let engine = h.engine(provider);
        Env {
            kube,
            up,
            run: Passes {
                h,
                engine,
                settle_passes: 5,
            },
        }
    }

    /// `kube` seeded as `seed` says; the operator is not running yet.
    pub fn operator(self, kube: FakeKube, seed: Seed) -> Env<U, Operator> {
        let (ns, connections) = match seed {
            Seed::Connections(ns) => (ns, true),
            Seed::Secrets(ns) => (ns, false),
        };
        let b64 = |v: &Value| {
            json!(base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap()))
        };
        for c in &self.connections {
            let data: serde_json::Map<String, Value> = c
                .credentials
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), b64(v)))
                .collect();
            kube.put_object(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": c.secret, "namespace": ns},
                "data": data,
            }));
        }
        for c in self.connections.iter().filter(|_| connections) {
            kube.put_object(json!({
                "apiVersion": "accessplane.io/v1alpha1", "kind": "Connection",
                "metadata": {"name": c.name, "namespace": ns},
                "spec": c.spec,
            }));
        }
        Env {
            kube,
            up: self.up,
            run: Operator {
                running: None,
                patience: (Duration::from_secs(60), Duration::from_millis(50)),
            },
        }
    }
}

/// A fake Serval with a client, and a fake apiserver holding its credentials Secret and a
/// `serval` Connection in `team-a`.
pub async fn serval_world() -> (FakeKube, FakeServal) {
    let env = Setup::<Serval>::start()
        .await
        .operator(FakeKube::new(), Seed::Connections("team-a"));
    (env.kube, env.up.serval)
}

impl<U: Upstream> Env<U, Harness> {
    pub async fn new() -> Self {
        Setup::start().await.harness().await
    }
}

impl<U> Env<U, Harness> {
    pub fn h(&self) -> &Harness {
        &self.run
    }
}

/// The harness and the engine of kind `K`, driven a pass at a time.
pub struct Passes<K: ManagedObject, P: Provider<K>> {
    pub h: Harness,
    pub engine: Arc<Engine<K, P>>,
    /// The most passes [`Env::settle`] makes.
    pub settle_passes: usize,
}

impl<U: Upstream, K: ManagedObject, P: Provider<K> + Default> Env<U, Passes<K, P>> {
    pub async fn new() -> Self {
        Setup::start().await.passes(P::default()).await
    }
}

impl<U, K: ManagedObject, P: Provider<K>> Env<U, Passes<K, P>> {
    pub fn h(&self) -> &Harness {
        &self.run.h
    }

    /// The kind's plural, as the apiserver names it.
    pub fn plural() -> String {
        K::plural(&()).into_owned()
    }

    pub fn api(&self) -> Api<K> {
        Api::namespaced(self.h().client(), NS)
    }

    /// Creates the object `name` with `spec`.
    pub async fn create(&self, name: &str, spec: Value) {
        let obj = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()),
                         "metadata": {"name": name}, "spec": spec});
        self.h().create::<K>(obj).await;
    }

    /// Merges `patch` into the object's spec (a user's edit).
    pub async fn edit(&self, name: &str, patch: Value) {
        self.h().edit_spec::<K>(name, patch).await;
    }

    /// `kubectl delete`: the finalizer keeps the object until a pass lets it go.
    pub async fn delete(&self, name: &str) {
        self.api()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// One reconcile pass; `None` once the object is gone.
    pub async fn pass(&self, name: &str) -> Option<Action> {
        self.h().pass(&self.run.engine, name).await
    }

    /// Passes until the object stops changing (at most `settle_passes`).
    pub async fn settle(&self, name: &str) {
        let n = self.run.settle_passes;
        self.h().settle_kind(&self.run.engine, name, n).await;
    }

    /// The stored object.
    pub fn get(&self, name: &str) -> Option<Value> {
        self.h().get(&Self::plural(), name)
    }

    /// (status, reason, message) of a condition.
    pub fn condition(&self, name: &str, type_: &str) -> (String, String, String) {
        self.h().condition_of(&Self::plural(), name, type_)
    }

    pub fn ready(&self, name: &str) -> (String, String, String) {
        self.condition(name, "Ready")
    }

    pub fn synced(&self, name: &str) -> (String, String, String) {
        self.condition(name, "Synced")
    }

    pub fn status(&self, name: &str) -> Value {
        self.get(name).unwrap()["status"].clone()
    }

    /// The upstream id recorded in status.
    pub fn id(&self, name: &str) -> String {
        self.status(name)["id"].as_str().unwrap().to_string()
    }
}

impl<K: ManagedObject, P: Provider<K>> Env<C1, Passes<K, P>> {
    /// Creates `name` on the `c1` Connection and the tenant's app.
    pub async fn apply(&self, name: &str, mut spec: Value) {
        spec["connectionRef"] = json!({"name": "c1"});
        spec["appId"] = json!(self.up.app);
        self.create(name, spec).await;
    }
}

/// The whole operator (`run_with`) on a task, once started.
pub struct Operator {
    running: Option<Running>,
    /// How long [`Env::wait`] waits at the most, and how often it looks.
    pub patience: (Duration, Duration),
}

/// A running operator: its stop signal and its task.
type Running = (oneshot::Sender<()>, JoinHandle<Result<(), RuntimeError>>);

impl<U> Env<U, Operator> {
    /// [`Env::wait`] gives up after `within`, looking every `every`.
    pub fn patience(mut self, within: Duration, every: Duration) -> Self {
        self.run.patience = (within, every);
        self
    }

    /// Starts the operator (a new process, as far as it can tell).
    pub fn start(&mut self, config: RunConfig) {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = stopped.map(|_| ()).boxed().shared();
        let task = tokio::spawn(run_with(self.kube.client(), config, shutdown));
        self.run.running = Some((stop, task));
    }

    /// Starts the operator with its metrics server on a free port, once it serves;
    /// returns the server's base URL (`http://127.0.0.1:<port>`).
    pub async fn start_serving(&mut self, config: RunConfig) -> String {
        loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let base = format!("http://127.0.0.1:{port}");
            self.start(RunConfig {
                metrics_addr: ([127, 0, 0, 1], port).into(),
                ..config.clone()
            });
            // Until it serves, unless someone else took the port in the meantime.
            while !self.run.running.as_ref().unwrap().1.is_finished() {
                let health = reqwest::get(format!("{base}/healthz")).await;
                if health.is_ok_and(|r| r.status().is_success()) {
                    return base;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (_, task) = self.run.running.take().unwrap();
            let _ = task.await;
        }
    }

    /// Graceful shutdown, done within `within`.
    pub async fn stop(&mut self, within: Duration) {
        let (stop, task) = self.run.running.take().expect("operator started");
        stop.send(()).unwrap();
        let result = tokio::time::timeout(within, task).await;
        result.expect("graceful shutdown").unwrap().unwrap();
    }

    /// kill -9: the operator stops at once, wherever it is (its task is dropped).
    pub async fn kill(&mut self) {
        let (stop, task) = self.run.running.take().expect("operator started");
        task.abort();
        let _ = task.await;
        drop(stop);
    }

    /// The operator is still the same, running process (no crash, no restart).
    pub fn assert_running(&self) {
        let (_, task) = self.run.running.as_ref().expect("operator started");
        assert!(!task.is_finished(), "the operator stopped");
    }

    /// Waits until `check` passes; panics with its last answer after the patience.
    pub async fn wait<T>(&self, what: &str, check: impl Fn(&Self) -> Result<T, String>) -> T {
        let (within, every) = self.run.patience;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match check(self) {
                Ok(value) => return value,
                Err(why) if tokio::time::Instant::now() >= deadline => {
                    panic!("timed out waiting for {what}: {why}")
                }
                Err(_) => tokio::time::sleep(every).await,
            }
        }
    }
}
