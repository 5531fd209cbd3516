//! Upstream faults and crashes across all three upstreams at once (issue #6, items 1–2).
//! The whole operator (`run_with`) runs against the in-memory apiserver and the three
//! fake upstreams over real HTTP, with a mixed workload of every managed kind.
//!
//! - Fault matrix: each fault kind at 10 % and 30 % of the requests (seeded) must still
//!   converge to exactly the desired upstream state, never send a request to a tenant that
//!   asked to wait (Retry-After), and cost at most 3× the calls of the fault-free run.
//! - Crash safety: the operator is aborted (its future dropped) at random points of a
//!   burst of creates, updates and deletes, including right after a create whose response
//!   was lost; after the restart there is no duplicate and no orphan upstream.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use accessplane::engine::requeue::Timing;
use accessplane::runtime::{RunConfig, RuntimeError, run_with};
use base64::Engine as _;
use futures::{FutureExt, StreamExt};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use accessplane::runtime::telemetry::json_layer;
use tracing_subscriber::layer::SubscriberExt;

use super::secret_leaks::c1_sentinels;
use crate::support::fake_c1::{FakeC1, TOOL_APPROVED, test_credentials};
use crate::support::fake_http::Recorded;
use crate::support::fake_http::{Fault, FaultMatch};
use crate::support::fake_instaclustr::{CONTROLS_PATH, FakeInstaclustr};
use crate::support::fake_kube::FakeKube;
use crate::support::fake_serval::{FakeServal, PROFILES_PATH};
use crate::support::harness::{
    CapturedLogs, as_set, capture_logs, condition_pair as condition, converged_status,
};

const API: &str = "accessplane.io/v1alpha1";
const NS: &str = "chaos";
const TEAM: &str = "team-chaos";
const CLUSTER: &str = "gw-chaos";
const VS: &str = "c3d4e5f6-a7b8-4901-8cde-f12345678902";
const GATEWAY_TOOLS: [&str; 3] = [
    "7a1f0000-0000-4000-8000-000000000001",
    "7a200000-0000-4000-8000-000000000002",
    "7a300000-0000-4000-8000-000000000003",
];
/// The Connections' `timeoutSeconds`; the timeout faults answer later than this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// The Retry-After (seconds) of the throttling faults.
const RETRY_AFTER_SECS: u64 = 3;
/// A request already on its way when the 429 reached the operator may arrive just after
/// it (the fakes see a request only once their handler runs, late on a busy machine): only
/// arrivals later than this after the 429 count as violations.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(1);
/// Scenarios run at the same time (each is an operator with its own fakes).
const PARALLEL_SCENARIOS: usize = 5;
const CONVERGE: Duration = Duration::from_secs(150);
/// Credentials and connector-config values: must never leave their Secrets (see
/// `fault_matrix_leaks_no_secret`). The ConductorOne client secret is random per world.
const SERVAL_SECRET: &str = "SENTINEL-chaos-serval-secret-d41f";
const IC_KEY: &str = "SENTINEL-chaos-ic-key-7b3e";
const CONFIG_SECRET: &str = "chaos-connector-config";
const CONFIG_TOKEN: &str = "SENTINEL-chaos-config-token-50a9";
const CONFIG_WEBHOOK: &str = "SENTINEL-chaos-config-webhook-e26c";

/// The five managed kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    AccessProfile,
    AppEntitlement,
    Connector,
    McpToolset,
    Persona,
}

const KINDS: [Kind; 5] = [
    Kind::AccessProfile,
    Kind::AppEntitlement,
    Kind::Connector,
    Kind::McpToolset,
    Kind::Persona,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AccessProfile => "AccessProfile",
            Kind::AppEntitlement => "AppEntitlement",
            Kind::Connector => "Connector",
            Kind::McpToolset => "McpToolset",
            Kind::Persona => "PersonaAccessControl",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::AccessProfile => "accessprofiles",
            Kind::AppEntitlement => "appentitlements",
            Kind::Connector => "connectors",
            Kind::McpToolset => "mcptoolsets",
            Kind::Persona => "personaaccesscontrols",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::AccessProfile => "ap",
            Kind::AppEntitlement => "ent",
            Kind::Connector => "con",
            Kind::McpToolset => "ts",
            Kind::Persona => "pac",
        }
    }
}

/// The upstream name of a resource (display name, or persona role).
fn display(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Persona => name.to_string(),
        _ => format!("chaos {name}"),
    }
}

/// A resource's upstream object as the fakes hold it, reduced to what the spec manages.
#[derive(Debug, PartialEq)]
struct Upstream {
    id: String,
    description: Option<String>,
    tools: Option<BTreeSet<String>>,
}

/// Fake upstreams, the in-memory apiserver, and the operator when it runs.
struct World {
    kube: FakeKube,
    serval: FakeServal,
    c1: FakeC1,
    ic: FakeInstaclustr,
    /// App of the entitlements and connectors.
    app: String,
    /// App and seeded connector of the toolsets (apart, so fault paths do not overlap).
    toolset_app: String,
    toolset_connector: String,
    /// Approved tools of that connector.
    tools: Vec<String>,
    /// The ConductorOne client secret (a signing key).
    c1_secret: String,
    /// Connectors are configured from the `CONFIG_SECRET` Secret (and converge only once
    /// their configuration is upstream).
    connector_config: bool,
    /// Port of the metrics server; 0 = any.
    metrics_port: u16,
    timing: Timing,
    operator: Option<Running>,
}

/// A running operator: its stop signal and its task.
type Running = (oneshot::Sender<()>, JoinHandle<Result<(), RuntimeError>>);

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl World {
    /// Fakes with credentials, the three Secrets and Connections; the operator is not running.
    async fn new(timing: Timing) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let serval = FakeServal::start().await;
        serval.add_client("operator", SERVAL_SECRET);
        let c1 = FakeC1::start().await;
        let (client_id, client_secret, public) = test_credentials(&c1.host());
        c1.add_client(&client_id, public, &client_secret);
        let app = c1.seed_app();
        let toolset_app = c1.seed_app();
        let toolset_connector = c1.seed_connector(&toolset_app, "Chaos MCP");
        let tools = ["search", "read", "write"]
            .map(|t| c1.seed_tool(&toolset_app, &toolset_connector, t, TOOL_APPROVED))
            .to_vec();
        let ic = FakeInstaclustr::start().await;
        ic.add_account("ops", IC_KEY);
        ic.add_virtual_server(CLUSTER, VS);
        ic.set_visibility_delay(Duration::from_millis(300));

        let kube = FakeKube::new();
        let secrets = [
            (
                "serval-creds",
                json!({"clientId": b64("operator"), "clientSecret": b64(SERVAL_SECRET)}),
            ),
            (
                "c1-creds",
                json!({"clientId": b64(&client_id), "clientSecret": b64(&client_secret)}),
            ),
            (
                "ic-creds",
                json!({"username": b64("ops"), "apiKey": b64(IC_KEY)}),
            ),
            (
                CONFIG_SECRET,
                json!({"token": b64(CONFIG_TOKEN), "webhookSecret": b64(CONFIG_WEBHOOK)}),
            ),
        ];
        for (name, data) in secrets {
            kube.put_object(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": NS}, "data": data}));
        }
        let connections = [
            (
                "serval",
                json!({"serval": {"baseUrl": serval.base_url(), "credentialsSecretRef": {"name": "serval-creds"}}}),
            ),
            (
                "c1",
                json!({"conductorOne": {"serverUrl": c1.base_url(), "credentialsSecretRef": {"name": "c1-creds"}}}),
            ),
            (
                "ic",
                json!({"instaclustr": {"baseUrl": ic.base_url(), "credentialsSecretRef": {"name": "ic-creds"}}}),
            ),
        ];
        for (name, mut spec) in connections {
            spec["rateLimit"] = json!({"requestsPerSecond": 50, "burst": 50});
            spec["timeoutSeconds"] = json!(CLIENT_TIMEOUT.as_secs());
            kube.put_object(json!({"apiVersion": API, "kind": "Connection",
                "metadata": {"name": name, "namespace": NS}, "spec": spec}));
        }
        Self {
            kube,
            serval,
            c1,
            ic,
            app,
            toolset_app,
            toolset_connector,
            tools,
            c1_secret: client_secret,
            connector_config: false,
            metrics_port: 0,
            timing,
            operator: None,
        }
    }

    /// Starts a fresh operator (a new process, as far as the operator can tell).
    fn start(&mut self) {
        assert!(self.operator.is_none(), "already running");
        let (stop, stopped) = oneshot::channel::<()>();
        let config = RunConfig {
            namespace: Some(NS.into()),
            concurrency: 4,
            timing: self.timing.clone(),
            metrics_addr: ([127, 0, 0, 1], self.metrics_port).into(),
            ..RunConfig::default()
        };
        let shutdown = stopped.map(|_| ()).boxed().shared();
        let handle = tokio::spawn(run_with(self.kube.client(), config, shutdown));
        self.operator = Some((stop, handle));
    }

    /// Starts the operator with its metrics server on a free port, to read its metrics.
    async fn start_with_metrics(&mut self) {
        loop {
            self.metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            self.start();
            let health = format!("http://127.0.0.1:{}/healthz", self.metrics_port);
            // Until it serves, unless someone else took the port in the meantime.
            while !self.operator.as_ref().unwrap().1.is_finished() {
                let response = reqwest::get(&health).await;
                if response.is_ok_and(|r| r.status().is_success()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (_, handle) = self.operator.take().unwrap();
            let _ = handle.await;
        }
    }

    /// Kills the operator mid-flight: its future is dropped wherever it is.
    async fn crash(&mut self) {
        let (stop, handle) = self.operator.take().expect("running");
        handle.abort();
        let _ = handle.await;
        // The metrics server runs in a task of its own: stop it too.
        let _ = stop.send(());
    }

    async fn shutdown(&mut self) {
        let (stop, handle) = self.operator.take().expect("running");
        stop.send(()).unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(60), handle).await;
        stopped.expect("graceful shutdown").unwrap().unwrap();
    }

    async fn wait_connections(&self) {
        self.wait("the Connections to be verified", |w| {
            for name in ["serval", "c1", "ic"] {
                let conn = w.kube.get(API, "connections", NS, name);
                let ready = conn.as_ref().and_then(|c| condition(c, "Ready"));
                if ready.as_ref().map(|r| r.0.as_str()) != Some("True") {
                    return Err(format!("Connection {name}: Ready is {ready:?}"));
                }
            }
            Ok(())
        })
        .await;
    }

    async fn wait(&self, what: &str, check: impl Fn(&Self) -> Result<(), String>) {
        let deadline = Instant::now() + CONVERGE;
        loop {
            match check(self) {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => {
                    panic!("timed out waiting for {what}: {why}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The spec of resource `name` at `version` (every version changes what the kind manages).
    fn spec(&self, kind: Kind, name: &str, version: u32) -> Value {
        let description = format!("{name} v{version}");
        let pick =
            |n: usize| -> Vec<usize> { (0..n).map(|i| (version as usize + i) % 3).collect() };
        match kind {
            Kind::AccessProfile => json!({"connectionRef": {"name": "serval"}, "teamId": TEAM,
                "name": display(kind, name), "description": description}),
            Kind::AppEntitlement => json!({"connectionRef": {"name": "c1"}, "appId": self.app,
                "displayName": display(kind, name), "description": description}),
            Kind::Connector => {
                let mut spec = json!({"connectionRef": {"name": "c1"}, "appId": self.app,
                    "catalogId": "catalog-chaos", "displayName": display(kind, name), "description": description});
                if self.connector_config {
                    spec["configSecretRef"] = json!({"name": CONFIG_SECRET});
                }
                spec
            }
            Kind::McpToolset => {
                let tools: Vec<Value> = pick(2)
                    .into_iter()
                    .map(|i| json!({"id": self.tools[i]}))
                    .collect();
                json!({"connectionRef": {"name": "c1"}, "appId": self.toolset_app,
                    "connectorId": self.toolset_connector, "displayName": display(kind, name),
                    "description": description, "tools": tools})
            }
            Kind::Persona => {
                let tools: Vec<&str> = pick(version as usize % 3 + 1)
                    .into_iter()
                    .map(|i| GATEWAY_TOOLS[i])
                    .collect();
                json!({"connectionRef": {"name": "ic"}, "clusterId": CLUSTER, "virtualServerId": VS,
                    "personaRole": name, "type": "ALLOWLIST", "tools": tools})
            }
        }
    }

    /// What the spec says upstream should hold (id aside).
    fn expected(&self, kind: Kind, spec: &Value) -> (Option<String>, Option<BTreeSet<String>>) {
        let tools = match kind {
            Kind::McpToolset => Some(
                spec["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["id"].as_str().unwrap().to_string())
                    .collect(),
            ),
            Kind::Persona => Some(as_set(&spec["tools"])),
            _ => None,
        };
        let description =
            (kind != Kind::Persona).then(|| spec["description"].as_str().unwrap().into());
        (description, tools)
    }

    /// Live upstream objects of the workload, by upstream name.
    fn upstream(&self, kind: Kind) -> BTreeMap<String, Vec<Upstream>> {
        let text = |v: &Value| v.as_str().map(String::from);
        let mut out: BTreeMap<String, Vec<Upstream>> = BTreeMap::new();
        let mut add = |name: String, u: Upstream| out.entry(name).or_default().push(u);
        let ours = |v: &Value| {
            v["displayName"]
                .as_str()
                .is_some_and(|n| n.starts_with("chaos "))
        };
        match kind {
            Kind::AccessProfile => {
                for p in self
                    .serval
                    .profiles()
                    .into_iter()
                    .filter(|p| p["teamId"] == TEAM)
                {
                    add(
                        p["name"].as_str().unwrap().into(),
                        Upstream {
                            id: text(&p["id"]).unwrap(),
                            description: text(&p["description"]),
                            tools: None,
                        },
                    );
                }
            }
            Kind::AppEntitlement | Kind::Connector => {
                let all = if kind == Kind::Connector {
                    self.c1.connectors(&self.app)
                } else {
                    self.c1.entitlements(&self.app)
                };
                for o in all
                    .into_iter()
                    .filter(|o| o["deletedAt"].is_null() && ours(o))
                {
                    add(
                        text(&o["displayName"]).unwrap(),
                        Upstream {
                            id: text(&o["id"]).unwrap(),
                            description: text(&o["description"]),
                            tools: None,
                        },
                    );
                }
            }
            Kind::McpToolset => {
                let all = self.c1.toolsets(&self.toolset_app, &self.toolset_connector);
                for t in all
                    .into_iter()
                    .filter(|t| t["deletedAt"].is_null() && ours(t))
                {
                    let id = text(&t["id"]).unwrap();
                    let tools = self.c1.bindings(&id).into_iter().collect();
                    add(
                        text(&t["displayName"]).unwrap(),
                        Upstream {
                            id,
                            description: text(&t["description"]),
                            tools: Some(tools),
                        },
                    );
                }
            }
            Kind::Persona => {
                for c in self.ic.controls(CLUSTER) {
                    add(
                        text(&c["personaRole"]).unwrap(),
                        Upstream {
                            id: text(&c["id"]).unwrap(),
                            description: None,
                            tools: Some(as_set(&c["tools"])),
                        },
                    );
                }
            }
        }
        out
    }

    /// Every object the server-assigned-id upstreams ever created, soft-deleted ones
    /// included (ConductorOne keeps them), by upstream name: more than one is a duplicate.
    fn c1_ever_created(&self) -> BTreeMap<String, usize> {
        let mut count = BTreeMap::new();
        let all = self
            .c1
            .entitlements(&self.app)
            .into_iter()
            .chain(self.c1.connectors(&self.app))
            .chain(self.c1.toolsets(&self.toolset_app, &self.toolset_connector));
        for o in all {
            if let Some(name) = o["displayName"]
                .as_str()
                .filter(|n| n.starts_with("chaos "))
            {
                *count.entry(name.to_string()).or_insert(0) += 1;
            }
        }
        count
    }

    fn apply(&self, kind: Kind, name: &str, spec: Value) {
        self.kube
            .put_object(json!({"apiVersion": API, "kind": kind.name(),
            "metadata": {"name": name, "namespace": NS, "generation": 1}, "spec": spec}));
    }

    /// `kubectl patch --type merge` of the spec; false when the object is gone.
    fn edit(&self, kind: Kind, name: &str, spec: Value) -> bool {
        self.kube
            .merge_patch(API, kind.plural(), NS, name, json!({"spec": spec}))
            .is_ok()
    }

    fn delete(&self, kind: Kind, name: &str) {
        let _ = self.kube.delete_object(API, kind.plural(), NS, name);
    }

    /// Every desired resource converged to exactly its upstream object, every deleted one
    /// gone from Kubernetes, and upstream nothing else (no duplicate, no orphan).
    fn converged(&self, desired: &Desired) -> Result<(), String> {
        for kind in KINDS {
            let mut upstream = self.upstream(kind);
            for (name, spec) in desired.of(kind) {
                let what = format!("{} {name}", kind.name());
                let obj = self
                    .kube
                    .get(API, kind.plural(), NS, name)
                    .ok_or(format!("{what}: not in Kubernetes"))?;
                converged_status(&obj).map_err(|e| format!("{what}: {e}"))?;
                let found = upstream.remove(&display(kind, name)).unwrap_or_default();
                let [one] = found.as_slice() else {
                    return Err(format!("{what}: {} upstream objects", found.len()));
                };
                if obj["status"]["id"].as_str() != Some(one.id.as_str()) {
                    return Err(format!(
                        "{what}: status.id {} ≠ upstream {}",
                        obj["status"]["id"], one.id
                    ));
                }
                if kind == Kind::Connector && self.connector_config {
                    let config = self.c1.connector_config(&one.id).unwrap_or_default();
                    if !config.to_string().contains(CONFIG_TOKEN) {
                        return Err(format!("{what}: configuration not upstream"));
                    }
                }
                let (description, tools) = self.expected(kind, spec);
                if (&one.description, &one.tools) != (&description, &tools) {
                    return Err(format!(
                        "{what}: upstream {:?} {:?} ≠ spec {description:?} {tools:?}",
                        one.description, one.tools
                    ));
                }
            }
            if let Some((name, objects)) = upstream.into_iter().next() {
                return Err(format!(
                    "{} upstream {name:?} ({} objects) has no resource (orphan)",
                    kind.name(),
                    objects.len()
                ));
            }
            for name in desired.deleted(kind) {
                if let Some(obj) = self.kube.get(API, kind.plural(), NS, name) {
                    return Err(format!(
                        "{} {name}: still in Kubernetes: {} {}",
                        kind.name(),
                        obj["metadata"]["annotations"],
                        obj["status"]
                    ));
                }
            }
        }
        Ok(())
    }

    /// Requests of the operator to all three upstreams.
    fn requests(&self) -> [Vec<Recorded>; 3] {
        [
            self.serval.requests(),
            self.c1.requests(),
            self.ic.requests(),
        ]
    }

    fn clear_requests(&self) {
        self.serval.clear_requests();
        self.c1.clear_requests();
        self.ic.clear_requests();
    }

    fn set_chaos(&self, rate: f64, faults: &[Fault], seed: u64) {
        self.serval.set_chaos(rate, faults.to_vec(), seed);
        self.c1.set_chaos(rate, faults.to_vec(), seed + 1);
        self.ic.set_chaos(rate, faults.to_vec(), seed + 2);
    }

    fn chaos_injected(&self) -> usize {
        self.serval.chaos_injected() + self.c1.chaos_injected() + self.ic.chaos_injected()
    }

    /// The operator's Prometheus metrics, as served.
    async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        reqwest::get(url).await.unwrap().text().await.unwrap()
    }
}

/// `accessplane_upstream_retries_total`, all series summed.
fn client_retries(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("accessplane_upstream_retries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What the user wants: resources by kind and name with their spec, and deleted names.
#[derive(Default)]
struct Desired {
    live: BTreeMap<(Kind, String), Value>,
    gone: BTreeSet<(Kind, String)>,
}

impl Desired {
    fn of(&self, kind: Kind) -> impl Iterator<Item = (&str, &Value)> {
        self.live
            .iter()
            .filter(move |((k, _), _)| *k == kind)
            .map(|((_, n), s)| (n.as_str(), s))
    }

    fn deleted(&self, kind: Kind) -> impl Iterator<Item = &str> {
        self.gone
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|(_, n)| n.as_str())
    }
}

/// One step of a workload.
#[derive(Clone, Debug)]
enum Step {
    Create(Kind, String),
    Update(Kind, String, u32),
    Delete(Kind, String),
}

impl Step {
    fn apply(&self, w: &World, desired: &mut Desired) {
        match self {
            Step::Create(kind, name) => {
                let spec = w.spec(*kind, name, 1);
                w.apply(*kind, name, spec.clone());
                desired.live.insert((*kind, name.clone()), spec);
            }
            Step::Update(kind, name, version) => {
                let spec = w.spec(*kind, name, *version);
                if w.edit(*kind, name, spec.clone()) {
                    desired.live.insert((*kind, name.clone()), spec);
                }
            }
            Step::Delete(kind, name) => {
                w.delete(*kind, name);
                desired.live.remove(&(*kind, name.clone()));
                desired.gone.insert((*kind, name.clone()));
            }
        }
    }
}

fn name(kind: Kind, i: usize) -> String {
    format!("{}-{i}", kind.prefix())
}

/// Creates of `per_kind` resources of every kind.
fn creates(per_kind: usize) -> Vec<Step> {
    KINDS
        .iter()
        .flat_map(|&k| (0..per_kind).map(move |i| Step::Create(k, name(k, i))))
        .collect()
}

/// For every kind: update resource 0, delete resource 1, create resource `per_kind`.
fn changes(per_kind: usize) -> Vec<Step> {
    KINDS
        .iter()
        .flat_map(|&k| {
            [
                Step::Update(k, name(k, 0), 2),
                Step::Delete(k, name(k, 1)),
                Step::Create(k, name(k, per_kind)),
            ]
        })
        .collect()
}

/// Short timings so the suite is fast: quick retries, no resync during a run.
fn test_timing() -> Timing {
    Timing {
        resync: Duration::from_secs(600),
        error_backoff_base: Duration::from_millis(200),
        error_backoff_max: Duration::from_secs(3),
        pending_poll_max: Duration::from_secs(3),
        list_window: Duration::from_millis(500),
        ..Timing::default()
    }
}

// ---------------------------------------------------------------------------------
// Fault matrix

struct Figures {
    scenario: &'static str,
    rate: f64,
    calls: usize,
    injected: usize,
    retries: u64,
    elapsed: Duration,
    retry_after_violations: Vec<String>,
    /// The operator's metrics at the end.
    metrics: String,
}

/// Requests that arrived while a Retry-After answered before them was still running.
fn retry_after_violations(log: &[Recorded], upstream: &str) -> Vec<String> {
    let throttled: Vec<&Recorded> = log.iter().filter(|r| r.status == 429).collect();
    let wait = Duration::from_secs(RETRY_AFTER_SECS);
    let mut out = vec![];
    for r in log {
        for t in &throttled {
            if r.at > t.at + IN_FLIGHT_GRACE && r.at < t.at + wait {
                out.push(format!(
                    "{upstream}: {} {} arrived {:?} after {} {} was answered 429 with Retry-After: {RETRY_AFTER_SECS}",
                    r.method,
                    r.path,
                    r.at - t.at,
                    t.method,
                    t.path,
                ));
                break;
            }
        }
    }
    out
}

const PER_KIND: usize = 2;

async fn run_scenario(scenario: &'static str, rate: f64, faults: Vec<Fault>, seed: u64) -> Figures {
    let mut w = World::new(test_timing()).await;
    run_scenario_in(&mut w, scenario, rate, faults, seed).await
}

/// The scenario in `w`; the operator is stopped at the end.
async fn run_scenario_in(
    w: &mut World,
    scenario: &'static str,
    rate: f64,
    faults: Vec<Fault>,
    seed: u64,
) -> Figures {
    w.start_with_metrics().await;
    w.wait_connections().await;
    w.clear_requests();
    w.set_chaos(rate, &faults, seed);
    let started = Instant::now();
    let mut desired = Desired::default();
    for step in creates(PER_KIND) {
        step.apply(w, &mut desired);
    }
    w.wait(&format!("{scenario} {rate}: creates to converge"), |w| {
        w.converged(&desired)
    })
    .await;
    for step in changes(PER_KIND) {
        step.apply(w, &mut desired);
    }
    w.wait(&format!("{scenario} {rate}: changes to converge"), |w| {
        w.converged(&desired)
    })
    .await;
    let elapsed = started.elapsed();
    let injected = w.chaos_injected();
    w.set_chaos(0.0, &[], 0);
    let logs = w.requests();
    // Only these scenarios' 429s carry a Retry-After.
    let retry_after_violations = match faults.iter().any(|f| {
        matches!(
            f,
            Fault::Status {
                retry_after: Some(_),
                ..
            }
        )
    }) {
        true => ["serval", "conductorone", "instaclustr"]
            .iter()
            .zip(&logs)
            .flat_map(|(upstream, log)| retry_after_violations(log, upstream))
            .collect(),
        false => vec![],
    };
    let metrics = w.metrics().await;
    let retries = client_retries(&metrics);

    w.shutdown().await;
    Figures {
        scenario,
        rate,
        calls: logs.iter().map(Vec::len).sum(),
        injected,
        retries,
        elapsed,
        retry_after_violations,
        metrics,
    }
}

fn fault_kinds() -> Vec<(&'static str, Vec<Fault>)> {
    let throttle = |retry_after: Option<String>| Fault::Status {
        code: 429,
        retry_after,
        retry_after_ms: None,
        body: None,
    };
    vec![
        (
            "429 + Retry-After: 2",
            vec![throttle(Some(RETRY_AFTER_SECS.to_string()))],
        ),
        ("429, no Retry-After", vec![throttle(None)]),
        ("500 / 503", vec![Fault::status(500), Fault::status(503)]),
        // Half of the resets happen after the server applied the request.
        (
            "connection reset",
            vec![Fault::DropConnection, Fault::ApplyThenDropConnection],
        ),
        // Answered after the client gave up; half of them were applied at once.
        (
            "timeout (1.5 s > 1 s)",
            [Fault::Latency, Fault::ApplyThenLatency]
                .map(|fault| fault(Duration::from_millis(1500)))
                .to_vec(),
        ),
        (
            "latency 0.1–0.6 s",
            [100, 300, 600]
                .map(|ms| Fault::Latency(Duration::from_millis(ms)))
                .to_vec(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_converges_within_budget() {
    let mut runs = vec![run_scenario("no faults", 0.0, vec![], 1).boxed()];
    for (i, (scenario, faults)) in fault_kinds().into_iter().enumerate() {
        for (j, rate) in [0.1, 0.3].into_iter().enumerate() {
            let seed = 100 + 10 * i as u64 + j as u64;
            runs.push(run_scenario(scenario, rate, faults.clone(), seed).boxed());
        }
    }
    let figures: Vec<Figures> = futures::stream::iter(runs)
        .buffered(PARALLEL_SCENARIOS)
        .collect()
        .await;
    let baseline = figures[0].calls;

    eprintln!(
        "\nUpstream fault matrix: {} resources of 5 kinds created, then per kind 1 updated, 1 deleted, 1 created",
        5 * PER_KIND
    );
    eprintln!(
        "| faults | rate | calls | × fault-free | faults injected | client retries | time (s) |"
    );
    eprintln!("|---|---|---|---|---|---|---|");
    for f in &figures {
        eprintln!(
            "| {} | {:.0} % | {} | {:.2} | {} | {} | {:.1} |",
            f.scenario,
            f.rate * 100.0,
            f.calls,
            f.calls as f64 / baseline as f64,
            f.injected,
            f.retries,
            f.elapsed.as_secs_f64()
        );
    }
    for f in &figures {
        assert!(
            f.retry_after_violations.is_empty(),
            "{} at {}: Retry-After violated:\n{}",
            f.scenario,
            f.rate,
            f.retry_after_violations.join("\n")
        );
        assert!(
            f.calls <= 3 * baseline,
            "{} at {}: {} calls > 3 × {baseline}",
            f.scenario,
            f.rate,
            f.calls
        );
    }
}

/// Issue #6, item 5, under the fault matrix: one scenario of the matrix per fault kind
/// (10 %), with every Connector configured from a Secret, all run on this test's one
/// thread so that its thread-local subscriber sees every task of the six operators. The
/// TRACE logs (text and JSON), every object and Event in the apiserver but the Secrets,
/// and the operators' metrics must hold no credential and no connector-config value.
#[tokio::test(flavor = "current_thread")]
async fn fault_matrix_leaks_no_secret() {
    let text_logs = CapturedLogs::default();
    let json_logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::TRACE)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(text_logs.clone()),
        )
        .with(json_layer(json_logs.clone()));
    let capture = capture_logs(subscriber);

    let mut worlds = vec![];
    for _ in fault_kinds() {
        let mut w = World::new(test_timing()).await;
        w.connector_config = true;
        worlds.push(w);
    }
    let runs =
        worlds
            .iter_mut()
            .zip(fault_kinds())
            .enumerate()
            .map(|(i, (w, (scenario, faults)))| {
                run_scenario_in(w, scenario, 0.1, faults, 500 + i as u64)
            });
    let figures = futures::future::join_all(runs).await;
    drop(capture);

    let mut needles: Vec<String> = [SERVAL_SECRET, IC_KEY, CONFIG_TOKEN, CONFIG_WEBHOOK]
        .map(String::from)
        .to_vec();
    for w in &worlds {
        needles.extend(c1_sentinels(&w.c1_secret));
    }
    // As the Secrets hold them, too.
    needles.extend(needles.clone().iter().map(|n| b64(n)));

    let text = text_logs.text();
    let json_text = json_logs.text();
    for f in &figures {
        assert!(f.injected > 0, "{}: faults injected", f.scenario);
    }
    for (what, logs) in [("text", &text), ("JSON", &json_text)] {
        let missing: Vec<&str> = [
            "TRACE",
            "con-0",
            "ap-0",
            "ent-0",
            "ts-0",
            "pac-0",
            // The fakes' error message: every retried 429/5xx logs it.
            "injected fault",
        ]
        .into_iter()
        .filter(|marker| !logs.contains(marker))
        .collect();
        assert!(
            missing.is_empty(),
            "{what} logs ({} lines) lack {missing:?}",
            logs.lines().count()
        );
    }
    for line in json_text.lines() {
        serde_json::from_str::<Value>(line).expect("one JSON object per line");
    }
    let mut objects = vec![];
    for w in &worlds {
        for (api_version, plural, obj) in w.kube.all_objects() {
            if !(api_version == "v1" && plural == "secrets") {
                objects.push((format!("{api_version}/{plural}"), obj.to_string()));
            }
        }
    }
    for expected in [
        "accessplane.io/v1alpha1/connections",
        "accessplane.io/v1alpha1/connectors",
        "accessplane.io/v1alpha1/personaaccesscontrols",
        "events.k8s.io/v1/events",
    ] {
        assert!(
            objects.iter().any(|(k, _)| k == expected),
            "{expected} scanned"
        );
    }
    assert!(
        objects.iter().any(|(_, o)| o.contains("configHash")),
        "connector configurations were applied"
    );
    for f in &figures {
        assert!(f.metrics.contains("accessplane_upstream_requests_total"));
    }

    for needle in &needles {
        assert!(!text.contains(needle.as_str()), "a secret in the text logs");
        assert!(
            !json_text.contains(needle.as_str()),
            "a secret in the JSON logs"
        );
        for f in &figures {
            assert!(
                !f.metrics.contains(needle.as_str()),
                "a secret in the metrics ({})",
                f.scenario
            );
        }
        for (kind, obj) in &objects {
            assert!(!obj.contains(needle.as_str()), "a secret in {kind}");
        }
    }
    let slowest = figures.iter().map(|f| f.elapsed).max().unwrap_or_default();
    eprintln!(
        "secret scan under faults: {} scenarios (slowest {:.1} s), {} text log lines, {} JSON log lines, {} objects, {} needles",
        figures.len(),
        slowest.as_secs_f64(),
        text.lines().count(),
        json_text.lines().count(),
        objects.len(),
        needles.len()
    );
}

// ---------------------------------------------------------------------------------
// Crash safety

struct CrashFigures {
    seed: u64,
    crashes: usize,
    after_lost_response: usize,
    recover: Duration,
}

/// Create paths of the server-assigned-id kinds (exact collection paths).
fn create_paths(w: &World) -> [(Kind, String); 4] {
    [
        (Kind::AccessProfile, PROFILES_PATH.to_string()),
        (
            Kind::AppEntitlement,
            format!("/api/v1/apps/{}/entitlements", w.app),
        ),
        (
            Kind::Connector,
            format!("/api/v1/apps/{}/connectors", w.app),
        ),
        (
            Kind::McpToolset,
            format!(
                "/api/v1/apps/{}/connectors/{}/mcp_toolsets",
                w.toolset_app, w.toolset_connector
            ),
        ),
    ]
}

/// The next create of `kind` is applied upstream, then its connection drops (the first
/// POST under the collection path is a create: nothing of the kind exists before).
fn lose_next_create(w: &World, kind: Kind, path: &str) {
    // Exactly the collection: an update of an item below it must not take the fault.
    let matcher = FaultMatch::exactly("POST", path);
    match kind {
        Kind::AccessProfile => w.serval.push_fault(matcher, Fault::ApplyThenDropConnection),
        _ => w.c1.push_fault(matcher, Fault::ApplyThenDropConnection),
    }
}

/// Kinds of the creates whose response was lost so far.
fn lost_creates(w: &World) -> BTreeSet<Kind> {
    let paths = create_paths(w);
    let [serval, c1, _] = w.requests();
    serval
        .iter()
        .chain(&c1)
        .filter(|r| r.method == "POST" && r.status == 0)
        .filter_map(|r| paths.iter().find(|(_, p)| *p == r.path).map(|(k, _)| *k))
        .collect()
}

async fn crash_run(seed: u64) -> CrashFigures {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = World::new(test_timing()).await;
    w.start();
    w.wait_connections().await;
    for (kind, path) in create_paths(&w) {
        lose_next_create(&w, kind, &path);
    }

    // A burst: creates, then updates, deletes and more creates, shuffled, with random gaps,
    // and crashes at random times (each followed by a random downtime).
    let mut first = creates(3);
    first.shuffle(&mut rng);
    let mut then = changes(3);
    then.shuffle(&mut rng);
    let steps: Vec<(Step, Duration)> = first
        .into_iter()
        .chain(then)
        .map(|s| (s, Duration::from_millis(rng.random_range(0..120))))
        .collect();
    let mut steps = steps.into_iter();
    let mut crash_at: Vec<Duration> = (0..3)
        .map(|_| Duration::from_millis(rng.random_range(50..3000)))
        .collect();
    crash_at.sort();
    let mut downtime = move || Duration::from_millis(rng.random_range(0..300));

    let started = Instant::now();
    let mut desired = Desired::default();
    let mut next_step_at = Duration::ZERO;
    let mut steps_done = false;
    let (mut scheduled, mut after_lost_response, mut lost_seen) = (0, 0, 0);
    // One loop drives the burst and the crashes.
    while !(steps_done && scheduled == crash_at.len()) {
        let now = started.elapsed();
        if !steps_done && now >= next_step_at {
            match steps.next() {
                Some((step, gap)) => {
                    step.apply(&w, &mut desired);
                    next_step_at = now + gap;
                }
                None => steps_done = true,
            }
            continue;
        }
        let lost = lost_creates(&w).len();
        // Right after a lost create response, before the operator could recover it.
        let lost_trigger = lost > lost_seen;
        lost_seen = lost;
        if lost_trigger || crash_at.get(scheduled).is_some_and(|at| now >= *at) {
            match lost_trigger {
                true => after_lost_response += 1,
                false => scheduled += 1,
            }
            w.crash().await;
            tokio::time::sleep(downtime()).await;
            w.start();
            continue;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A crash may have caught a create while its faulty request was in flight (the fault
    // then went unused): lose one more create of each such kind, and crash right after.
    for (kind, path) in create_paths(&w) {
        if lost_creates(&w).contains(&kind) {
            continue;
        }
        lose_next_create(&w, kind, &path);
        Step::Create(kind, name(kind, 9)).apply(&w, &mut desired);
        w.wait(
            &format!("seed {seed}: a lost {} create", kind.name()),
            |w| match lost_creates(w).contains(&kind) {
                true => Ok(()),
                false => Err("no lost create yet".into()),
            },
        )
        .await;
        w.crash().await;
        after_lost_response += 1;
        w.start();
    }

    let recovering = Instant::now();
    w.wait(
        &format!("seed {seed}: convergence after the last restart"),
        |w| w.converged(&desired),
    )
    .await;
    let recover = recovering.elapsed();
    // Zero duplicates ever: no ConductorOne object (soft-deleted ones count) was made twice;
    // `converged` found no duplicate and no orphan in the final state of every upstream.
    let twice: Vec<_> = w
        .c1_ever_created()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "seed {seed}: created more than once: {twice:?}"
    );
    w.shutdown().await;
    CrashFigures {
        seed,
        crashes: scheduled + after_lost_response,
        after_lost_response,
        recover,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_leave_no_duplicate_and_no_orphan() {
    let runs = (1..=10).map(|seed| crash_run(seed).boxed());
    let figures: Vec<CrashFigures> = futures::stream::iter(runs)
        .buffered(PARALLEL_SCENARIOS)
        .collect()
        .await;
    eprintln!("\nCrash safety: 20 creates, 5 updates, 5 deletes across 5 kinds, killed at random");
    eprintln!(
        "| seed | crashes | right after a lost create response | converged after last restart (s) |"
    );
    eprintln!("|---|---|---|---|");
    for f in &figures {
        eprintln!(
            "| {} | {} | {} | {:.1} |",
            f.seed,
            f.crashes,
            f.after_lost_response,
            f.recover.as_secs_f64()
        );
    }
}

/// Found by the crash suite: a persona access control deleted while its accepted create
/// was not visible yet read as "absent", so the finalizer went and the control appeared
/// upstream afterwards with nothing owning it.
#[tokio::test]
async fn deleting_a_persona_whose_create_is_not_visible_yet_leaves_no_orphan() {
    delete_before_the_create_shows(false).await;
}

/// The same where the gateway's DELETE sees only visible objects: its 404 then says as
/// little as the absent read (the contract leaves open which the real gateway does).
#[tokio::test]
async fn a_404_to_deleting_a_persona_whose_create_is_not_visible_yet_leaves_no_orphan() {
    delete_before_the_create_shows(true).await;
}

async fn delete_before_the_create_shows(delete_sees_only_visible: bool) {
    let mut w = World::new(test_timing()).await;
    w.ic.set_visibility_delay(Duration::from_secs(2));
    w.ic.set_delete_sees_only_visible(delete_sees_only_visible);
    w.start();
    w.wait_connections().await;
    let mut desired = Desired::default();
    Step::Create(Kind::Persona, "late".into()).apply(&w, &mut desired);
    w.wait("the create to be accepted", |w| {
        let accepted =
            w.ic.requests()
                .iter()
                .any(|r| r.method == "POST" && r.path == CONTROLS_PATH && r.status == 202);
        accepted.then_some(()).ok_or("not yet".into())
    })
    .await;
    Step::Delete(Kind::Persona, "late".into()).apply(&w, &mut desired);
    // Gone from Kubernetes, and still gone upstream once every accepted write is visible.
    w.wait("the deletion", |w| w.converged(&desired)).await;
    w.wait("the gateway to apply every accepted write", |w| {
        match w.ic.pending_changes() {
            0 => Ok(()),
            n => Err(format!("{n} pending")),
        }
    })
    .await;
    w.converged(&desired).unwrap();
    w.shutdown().await;
}
