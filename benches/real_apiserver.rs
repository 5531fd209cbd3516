//! Real-apiserver benchmark: the measurement of the issue tracker, reproduced. The real
//! `accessplane` binary runs against a REAL kube-apiserver and etcd (the envtest harness,
//! `tests/support/envtest.rs`, an apiserver of its own per scenario) and the in-process
//! fake upstreams (20 ms latency, 50 requests/s per Connection, Instaclustr writes visible
//! after a delay). N mixed resources (40 % AccessProfile, 30 % AppEntitlement, 30 %
//! PersonaAccessControl, interleaved) go through ONE `kubectl create -f -`; the operator's
//! own requests are counted in the apiserver's audit log (it runs with a token identity of
//! its own, `OPERATOR_USER`, bound to `cluster-admin`: RBAC is not what this measures).
//!
//! `cargo bench --bench real_apiserver` runs the full set (N = 1,000 with writes visible
//! after 1 s and after 3 s, N = 5,000 after 1 s); `-- --n N --visibility SECS` runs one
//! scenario. Without `--bench` (how `cargo test --all-targets` runs this target) it runs
//! one smoke scenario (N = 30, 1 s). Without `KUBEBUILDER_ASSETS` it prints one line and
//! exits 0. Figures are reported, never asserted: the exit status is non-zero only when
//! something is broken (not all Ready by a generous deadline, the operator died, kubectl
//! failed).

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use common::Operator;
use support::envtest::{Envtest, OPERATOR_USER, dedicated_envtest};
use support::fake_c1::{self, FakeC1, test_credentials};
use support::fake_http::Recorded;
use support::fake_instaclustr::{self, FakeInstaclustr};
use support::fake_serval::{self, FakeServal};

const GROUP: &str = "accessplane.io";
const VERSION: &str = "v1alpha1";
const API: &str = "accessplane.io/v1alpha1";
const NS: &str = "bench";
const LATENCY: Duration = Duration::from_millis(20);
const RPS: u32 = 50;
const BURST: u32 = 50;
const TEAM: &str = "team-bench";
const CLUSTER: &str = "gw-bench";
const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";
/// The id the Connection controller reads to prove credentials work (not per object).
const CONNECTION_CHECK: &str = "accessplane-connection-check";
/// The full set: (N, Instaclustr visibility delay in seconds).
const FULL: [(usize, u64); 3] = [(1000, 1), (1000, 3), (5000, 1)];
const SMOKE_N: usize = 30;
/// Writes of the burst that land after the last Ready (e.g. an Event) still count.
const GRACE: Duration = Duration::from_secs(2);

// Targets of the issue, printed next to the figures.
const T_RATIO: f64 = 1.25;
const T_IC_CALLS: f64 = 1.15;
const T_CONFIRM_S: f64 = 1.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    AccessProfile,
    AppEntitlement,
    PersonaAccessControl,
}

const KINDS: [Kind; 3] = [
    Kind::AccessProfile,
    Kind::AppEntitlement,
    Kind::PersonaAccessControl,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AccessProfile => "AccessProfile",
            Kind::AppEntitlement => "AppEntitlement",
            Kind::PersonaAccessControl => "PersonaAccessControl",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::AccessProfile => "accessprofiles",
            Kind::AppEntitlement => "appentitlements",
            Kind::PersonaAccessControl => "personaaccesscontrols",
        }
    }

    /// Object names start with it, so that Events (named after their object) and
    /// watch events can be attributed to a kind.
    fn prefix(self) -> &'static str {
        match self {
            Kind::AccessProfile => "ap",
            Kind::AppEntitlement => "ae",
            Kind::PersonaAccessControl => "pac",
        }
    }

    fn of_name(name: &str) -> Option<Self> {
        KINDS
            .into_iter()
            .find(|k| name.starts_with(&format!("{}-", k.prefix())))
    }

    fn object_name(self, i: usize) -> String {
        format!("{}-{i:05}", self.prefix())
    }

    fn resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, VERSION, self.name()),
            self.plural(),
        )
    }

    /// Status writes a created object needs: one per visible transition (an accepted
    /// asynchronous write shows Pending first, then Ready).
    fn status_target(self) -> &'static str {
        match self {
            Kind::PersonaAccessControl => "2",
            _ => "1",
        }
    }
}

/// One scenario: N objects, Instaclustr writes visible after `visibility`.
#[derive(Clone, Debug)]
struct Scenario {
    n: usize,
    visibility: Duration,
}

impl Scenario {
    /// 40 % / 30 % / 30 %, the remainder to PersonaAccessControl.
    fn count(&self, kind: Kind) -> usize {
        let (ap, ae) = (self.n * 4 / 10, self.n * 3 / 10);
        match kind {
            Kind::AccessProfile => ap,
            Kind::AppEntitlement => ae,
            Kind::PersonaAccessControl => self.n - ap - ae,
        }
    }

    /// Fewest upstream calls that create a kind's objects on its Connection: one create
    /// each, plus for Instaclustr one gateway-cluster status check before writing and
    /// one List confirming the accepted writes.
    fn min_calls(&self, kind: Kind) -> usize {
        match (kind, self.count(kind)) {
            (Kind::PersonaAccessControl, n) if n > 0 => n + 2,
            (_, n) => n,
        }
    }

    /// Time the Connections' rate limits alone need (each kind has its own Connection;
    /// the initial burst is ignored).
    fn bound_s(&self) -> f64 {
        KINDS
            .iter()
            .map(|k| self.min_calls(*k) as f64 / f64::from(RPS))
            .fold(0.0, f64::max)
    }

    /// Interleaved, as a GitOps sync of a mixed repository would send them.
    fn objects(&self, app: &str) -> Vec<(Kind, usize, Value)> {
        let max = KINDS.iter().map(|k| self.count(*k)).max().unwrap_or(0);
        let mut out = Vec::with_capacity(self.n);
        for i in 0..max {
            for kind in KINDS.into_iter().filter(|k| i < self.count(*k)) {
                let spec = match kind {
                    Kind::AccessProfile => json!({"connectionRef": {"name": "serval"},
                        "teamId": TEAM, "name": format!("Bench profile {i}")}),
                    Kind::AppEntitlement => json!({"connectionRef": {"name": "c1"},
                        "appId": app, "displayName": format!("Bench entitlement {i}"),
                        "alias": format!("bench-{i}")}),
                    Kind::PersonaAccessControl => json!({"connectionRef": {"name": "instaclustr"},
                        "clusterId": CLUSTER, "virtualServerId": VS,
                        "personaRole": persona_role(i), "type": "ALLOWLIST", "tools": []}),
                };
                let object = json!({"apiVersion": API, "kind": kind.name(),
                    "metadata": {"name": kind.object_name(i), "namespace": NS}, "spec": spec});
                out.push((kind, i, object));
            }
        }
        out
    }
}

fn persona_role(i: usize) -> String {
    format!("persona-{i}")
}

/// A request of the operator to the apiserver, as counted: `verb resource[/sub]`, with
/// the three kinds' own resources written `<object>` so that the kinds share rows.
type RequestKey = String;

/// The figures of one scenario.
#[derive(Default, Debug)]
struct Figures {
    n: usize,
    visibility_s: u64,
    counts: BTreeMap<Kind, usize>,
    /// Per kind: the fewest upstream calls that create its objects.
    min_calls: BTreeMap<Kind, usize>,
    kubectl_s: Option<f64>,
    bound_s: f64,
    ready_s: Option<f64>,
    ready_count: usize,
    /// Per kind: seconds from the first create until its last object was Ready.
    ready_by_kind: BTreeMap<Kind, f64>,
    /// The operator's apiserver requests in the burst window, per (request, kind); kind
    /// `None` for requests about no one object (Secrets, Lists, watches).
    k8s: BTreeMap<(RequestKey, Option<Kind>), usize>,
    /// Upstream calls in the burst window per kind and operation.
    upstream: BTreeMap<Kind, BTreeMap<String, usize>>,
    /// Token exchanges and Connection checks in the window (not per object).
    upstream_overhead: usize,
    /// PersonaAccessControl: seconds from its write becoming visible to Ready, sorted.
    confirm_s: Vec<f64>,
    rss_kib: u64,
    broken: Vec<String>,
}

impl Figures {
    fn per_object(&self, key: &str, kind: Kind) -> f64 {
        let c = self.k8s.get(&(key.to_string(), Some(kind))).copied();
        c.unwrap_or(0) as f64 / self.counts[&kind].max(1) as f64
    }

    fn writes(&self, kind: Option<Kind>) -> usize {
        self.k8s
            .iter()
            .filter(|((key, k), _)| is_write(key) && (kind.is_none() || *k == kind))
            .map(|(_, c)| c)
            .sum()
    }

    fn events(&self) -> usize {
        self.k8s
            .iter()
            .filter(|((key, _), _)| key == "create events")
            .map(|(_, c)| c)
            .sum()
    }

    fn calls_per_object(&self, kind: Kind) -> f64 {
        let calls: usize = self.upstream.get(&kind).map_or(0, |m| m.values().sum());
        calls as f64 / self.counts[&kind].max(1) as f64
    }

    /// The ratio the issue targets: all Ready ÷ max(rate-limit bound, kubectl time).
    fn ratio(&self) -> Option<f64> {
        let floor = self.bound_s.max(self.kubectl_s?);
        Some(self.ready_s? / floor)
    }

    fn confirm(&self, q: f64) -> Option<f64> {
        let v = &self.confirm_s;
        if v.is_empty() {
            return None;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        Some(v[i])
    }
}

fn is_write(key: &str) -> bool {
    ["create ", "update ", "patch ", "delete "]
        .iter()
        .any(|v| key.starts_with(v))
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match common::parse_args("--visibility").and_then(|a| {
        let visibility = a
            .option
            .as_deref()
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("bad --visibility {v} (seconds)"))
            })
            .transpose()?;
        Ok((a, visibility))
    }) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("real_apiserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (args, visibility) = args;
    let scenarios: Vec<Scenario> = if args.n.is_some() || visibility.is_some() {
        vec![Scenario {
            n: args.n.unwrap_or(if args.full { 1000 } else { SMOKE_N }),
            visibility: Duration::from_secs(visibility.unwrap_or(1)),
        }]
    } else if args.full {
        FULL.iter()
            .map(|&(n, v)| Scenario {
                n,
                visibility: Duration::from_secs(v),
            })
            .collect()
    } else {
        vec![Scenario {
            n: SMOKE_N,
            visibility: Duration::from_secs(1),
        }]
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let workdir =
        std::env::temp_dir().join(format!("accessplane-real-apiserver-{}", std::process::id()));
    let mut all = Vec::new();
    for (i, scenario) in scenarios.into_iter().enumerate() {
        // An apiserver of its own per scenario: an empty audit log, no objects of the
        // previous scenario, no watch caches to warm. Prints the one `skipped:` line
        // and ends the benchmark when KUBEBUILDER_ASSETS is unset.
        let Some(env) = dedicated_envtest() else {
            return ExitCode::SUCCESS;
        };
        if i == 0 {
            println!(
                "accessplane real-apiserver benchmark ({} mode, operator binary: {})\n{}",
                match (args.n.is_some() || visibility.is_some(), args.full) {
                    (true, _) => "one scenario",
                    (false, true) => "full set",
                    (false, false) => "smoke",
                },
                if cfg!(debug_assertions) {
                    "debug build"
                } else {
                    "release build"
                },
                setup_note(&env)
            );
        }
        println!(
            "\n== N={} ({}), Instaclustr writes visible after {} s",
            scenario.n,
            KINDS
                .iter()
                .map(|k| format!("{} {}", k.name(), scenario.count(*k)))
                .collect::<Vec<_>>()
                .join(", "),
            scenario.visibility.as_secs()
        );
        let dir = workdir.join(format!(
            "{i}-n{}-v{}",
            scenario.n,
            scenario.visibility.as_secs()
        ));
        std::fs::create_dir_all(&dir).expect("scenario dir");
        let figures = rt.block_on(run_scenario(&env, &scenario, &dir));
        drop(env);
        print_details(&figures);
        all.push(figures);
    }
    println!("\n{}", table(&all));
    let broken: Vec<&String> = all.iter().flat_map(|f| &f.broken).collect();
    if broken.is_empty() {
        let _ = std::fs::remove_dir_all(&workdir);
        ExitCode::SUCCESS
    } else {
        println!("operator logs kept in {}", workdir.display());
        for b in broken {
            eprintln!("real_apiserver: BROKEN: {b}");
        }
        ExitCode::FAILURE
    }
}

fn setup_note(env: &Envtest) -> String {
    let version = |bin: &Path, args: &[&str]| {
        Command::new(bin)
            .args(args)
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_string))
            .unwrap_or_else(|| "?".into())
    };
    let assets = std::env::var_os("KUBEBUILDER_ASSETS").unwrap_or_default();
    let assets = Path::new(&assets);
    format!(
        "Kubernetes side: a REAL kube-apiserver ({}) and etcd ({}) from KUBEBUILDER_ASSETS, one per scenario, on {} cores shared with everything else.\n\
         Upstreams: in-process fakes of Serval, ConductorOne and Instaclustr, {} ms added latency per request.\n\
         Operator: the real `accessplane run` binary, default flags, as user {OPERATOR_USER} (cluster-admin); its requests counted in the audit log.\n\
         Connections: one per upstream, rateLimit {RPS} requests/s (burst {BURST}). Objects created by one `kubectl create -f -` ({}).",
        version(&assets.join("kube-apiserver"), &["--version"]),
        version(&assets.join("etcd"), &["--version"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        LATENCY.as_millis(),
        version(env.kubectl_binary(), &["version", "--client"])
            .trim_start_matches("Client Version: "),
    )
}

// ---------------------------------------------------------------------------------
// The environment: CRDs, fakes, Connections, the operator.

struct Upstreams {
    serval: FakeServal,
    c1: FakeC1,
    ic: FakeInstaclustr,
    /// The ConductorOne app every AppEntitlement belongs to.
    app: String,
    /// The operator's ConductorOne client id and secret.
    c1_client: (String, String),
}

impl Upstreams {
    async fn start(visibility: Duration) -> Self {
        let serval = FakeServal::start().await;
        let c1 = FakeC1::start().await;
        let ic = FakeInstaclustr::start().await;
        serval.set_latency(LATENCY);
        c1.set_latency(LATENCY);
        ic.set_latency(LATENCY);
        ic.set_visibility_delay(visibility);
        serval.add_client("bench-operator", "bench-serval-secret");
        ic.add_account("bench", "bench-ic-key");
        ic.add_virtual_server(CLUSTER, VS);
        let (c1_id, c1_secret, c1_public) = test_credentials(&c1.host());
        c1.add_client(&c1_id, c1_public, &c1_secret);
        let app = c1.seed_app();
        Self {
            serval,
            c1,
            ic,
            app,
            c1_client: (c1_id, c1_secret),
        }
    }

    /// The Secrets and Connections, as one stream for kubectl.
    fn connection_docs(&self) -> String {
        let (c1_id, c1_secret) = &self.c1_client;
        let rate = json!({"requestsPerSecond": RPS, "burst": BURST});
        let mut docs = String::new();
        for (name, data, spec) in [
            (
                "serval",
                json!({"clientId": "bench-operator", "clientSecret": "bench-serval-secret"}),
                json!({"serval": {"baseUrl": self.serval.base_url()}}),
            ),
            (
                "c1",
                json!({"clientId": c1_id, "clientSecret": c1_secret}),
                json!({"conductorOne": {"serverUrl": self.c1.base_url()}}),
            ),
            (
                "instaclustr",
                json!({"username": "bench", "apiKey": "bench-ic-key"}),
                json!({"instaclustr": {"baseUrl": self.ic.base_url()}}),
            ),
        ] {
            let mut spec = spec;
            let field = spec.as_object().unwrap().keys().next().unwrap().clone();
            spec[&field]["credentialsSecretRef"] = json!({"name": name});
            spec["rateLimit"] = rate.clone();
            let secret = json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": NS}, "stringData": data});
            let connection = json!({"apiVersion": API, "kind": "Connection",
                "metadata": {"name": name, "namespace": NS}, "spec": spec});
            docs += &format!("{secret}\n{connection}\n");
        }
        docs
    }

    /// The upstream calls that arrived in `[from, to)`, per kind and operation, and the
    /// Connection overhead (token exchanges, credential checks) counted apart.
    fn calls(
        &self,
        from: Instant,
        to: Instant,
    ) -> (BTreeMap<Kind, BTreeMap<String, usize>>, usize) {
        let mut per_kind: BTreeMap<Kind, BTreeMap<String, usize>> = BTreeMap::new();
        let mut overhead = 0;
        let logs = [
            (
                Kind::AccessProfile,
                self.serval.requests(),
                fake_serval::TOKEN_PATH,
            ),
            (
                Kind::AppEntitlement,
                self.c1.requests(),
                fake_c1::TOKEN_PATH,
            ),
            // Basic auth: Instaclustr has no token endpoint.
            (Kind::PersonaAccessControl, self.ic.requests(), ""),
        ];
        for (kind, requests, token_path) in logs {
            for r in requests.iter().filter(|r| r.at >= from && r.at < to) {
                if r.path == token_path || r.path.contains(CONNECTION_CHECK) {
                    overhead += 1;
                    continue;
                }
                let op = match kind {
                    Kind::AccessProfile => serval_op(r),
                    Kind::AppEntitlement => c1_op(r),
                    Kind::PersonaAccessControl => instaclustr_op(r),
                };
                *per_kind.entry(kind).or_default().entry(op).or_default() += 1;
            }
        }
        (per_kind, overhead)
    }
}

/// A CRUD word for a request on a collection or on one item.
fn crud(method: &str, item: bool) -> &'static str {
    match (method, item) {
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", false) => "create",
        // ConductorOne updates with POST on the item.
        ("POST", true) | ("PUT", true) | ("PATCH", true) => "update",
        ("DELETE", _) => "delete",
        _ => "other",
    }
}

fn serval_op(r: &Recorded) -> String {
    match r.path.strip_prefix(fake_serval::PROFILES_PATH) {
        Some(rest) => crud(&r.method, !rest.is_empty()).into(),
        None => format!("{} {}", r.method, r.path),
    }
}

fn c1_op(r: &Recorded) -> String {
    if r.path == fake_c1::SEARCH_PATH {
        "search".into()
    } else if r.path.ends_with("/entitlements") {
        crud(&r.method, false).into()
    } else if r.path.contains("/entitlements/") {
        crud(&r.method, true).into()
    } else {
        format!("{} {}", r.method, r.path)
    }
}

fn instaclustr_op(r: &Recorded) -> String {
    if r.path.starts_with(fake_instaclustr::LIST_PATH_PREFIX) {
        "gateway cluster list".into()
    } else if r.path.starts_with(fake_instaclustr::CLUSTERS_PATH) {
        "gateway cluster status".into()
    } else if let Some(rest) = r.path.strip_prefix(fake_instaclustr::CONTROLS_PATH) {
        crud(&r.method, !rest.is_empty()).into()
    } else {
        format!("{} {}", r.method, r.path)
    }
}

fn condition<'a>(obj: &'a DynamicObject, type_: &str) -> Option<&'a Value> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Ready=True for the object's current generation.
fn is_ready(obj: &DynamicObject) -> bool {
    condition(obj, "Ready").is_some_and(|c| {
        c["status"] == "True" && c["observedGeneration"].as_i64() == obj.metadata.generation
    })
}

/// Records the instant each object of the three kinds in `NS` is first seen Ready for
/// its generation. One watch per kind instead of polling Lists: Lists of 5,000 objects
/// every few hundred milliseconds would load the apiserver being measured.
struct ReadyWatch {
    first_ready: Arc<Mutex<HashMap<String, Instant>>>,
    /// How many of the three watches have delivered their initial List.
    synced: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadyWatch {
    fn start(client: kube::Client) -> Self {
        let first_ready = Arc::new(Mutex::new(HashMap::new()));
        let synced = Arc::new(AtomicUsize::new(0));
        let streams = KINDS.map(|kind| {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), NS, &kind.resource());
            watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed()
        });
        let task = {
            let (first_ready, synced) = (first_ready.clone(), synced.clone());
            tokio::spawn(async move {
                let mut events = futures::stream::select_all(streams);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))
                            if is_ready(&o) =>
                        {
                            let name = o.metadata.name.unwrap_or_default();
                            let now = Instant::now();
                            first_ready.lock().unwrap().entry(name).or_insert(now);
                        }
                        Ok(watcher::Event::InitDone) => {
                            synced.fetch_add(1, Ordering::SeqCst);
                        }
                        // Errors are retried by the backoff; a relist replays the state.
                        _ => {}
                    }
                }
            })
        };
        Self {
            first_ready,
            synced,
            task,
        }
    }

    async fn wait_synced(&self) {
        while self.synced.load(Ordering::SeqCst) < KINDS.len() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn snapshot(&self) -> HashMap<String, Instant> {
        self.first_ready.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.first_ready.lock().unwrap().len()
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The wall clock as the audit log writes it (RFC 3339, microseconds, UTC): strings of
/// equal precision compare in time order.
fn audit_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// The operator's requests received in `[from, to)`, per (request, kind).
fn operator_requests(
    env: &Envtest,
    from: &str,
    to: &str,
) -> BTreeMap<(RequestKey, Option<Kind>), usize> {
    let mut seen = HashSet::new();
    let mut counts = BTreeMap::new();
    for e in env.audit_events() {
        let at = e["requestReceivedTimestamp"].as_str().unwrap_or_default();
        if e["user"]["username"] != OPERATOR_USER || at < from || at >= to {
            continue;
        }
        // A long-running request (a watch) is logged at ResponseStarted and again at
        // ResponseComplete.
        if !seen.insert(e["auditID"].as_str().unwrap_or_default().to_string()) {
            continue;
        }
        let r = &e["objectRef"];
        let resource = r["resource"].as_str().unwrap_or("-");
        let name = r["name"].as_str().unwrap_or_default();
        let own = KINDS.into_iter().find(|k| k.plural() == resource);
        // A request about one object is counted for its kind: the kinds' own resources
        // share a row (`<object>`); Events are named after their object
        // (`<name>.<suffix>`). Lists and watches are about no one object.
        let kind = if name.is_empty() {
            None
        } else {
            own.or_else(|| Kind::of_name(name))
        };
        let mut what = match (own, kind) {
            (Some(_), Some(_)) => "<object>".to_string(),
            _ => resource.to_string(),
        };
        if let Some(sub) = r["subresource"].as_str() {
            what = format!("{what}/{sub}");
        }
        let key = format!("{} {what}", e["verb"].as_str().unwrap_or("?"));
        *counts.entry((key, kind)).or_default() += 1;
    }
    counts
}

/// The last lines of a log file, for a broken run.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    if all.is_empty() {
        return "(empty)".into();
    }
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------
// One scenario.

async fn run_scenario(env: &Envtest, s: &Scenario, dir: &Path) -> Figures {
    let mut f = Figures {
        n: s.n,
        visibility_s: s.visibility.as_secs(),
        counts: KINDS.iter().map(|k| (*k, s.count(*k))).collect(),
        min_calls: KINDS.iter().map(|k| (*k, s.min_calls(*k))).collect(),
        bound_s: s.bound_s(),
        ..Figures::default()
    };
    let operator_log = dir.join("operator.log");
    let broken = |f: &mut Figures, what: String| {
        f.broken.push(format!(
            "N={} visibility {} s: {what}\n--- operator log (tail, warnings and errors only):\n{}",
            s.n,
            s.visibility.as_secs(),
            tail(&operator_log, 40)
        ));
    };

    env.install_crds_except(&[]);
    env.kubectl_ok(&["create", "namespace", NS], None);
    let up = Upstreams::start(s.visibility).await;
    env.kubectl_ok(&["create", "-f", "-"], Some(&up.connection_docs()));
    env.kubectl_ok(
        &[
            "create",
            "clusterrolebinding",
            "accessplane-bench-operator",
            "--clusterrole=cluster-admin",
            &format!("--user={OPERATOR_USER}"),
        ],
        None,
    );
    let kubeconfig = env.write_kubeconfig(env.operator_token(), NS);
    let mut op = Operator::spawn(&kubeconfig, &operator_log);

    // Connections verified before the burst, so that the window counts the resources.
    let admin = env.admin().await;
    let connections: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        NS,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, VERSION, "Connection"),
            "connections",
        ),
    );
    let started = Instant::now();
    loop {
        let mut ready = 0;
        for name in ["serval", "c1", "instaclustr"] {
            if connections.get(name).await.is_ok_and(|c| is_ready(&c)) {
                ready += 1;
            }
        }
        if ready == 3 {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) || !op.alive() {
            let why = op
                .exit_status()
                .map_or(String::new(), |st| format!(": the operator exited ({st})"));
            broken(&mut f, format!("Connections not Ready within 60 s{why}"));
            op.stop().await;
            return f;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let watch = ReadyWatch::start(admin);
    watch.wait_synced().await;

    // The burst: one kubectl, its stdin from a file and its output to files (the output
    // of thousands of creates would fill a pipe nobody reads while stdin is written).
    let objects = s.objects(&up.app);
    let stream: String = objects.iter().map(|(_, _, o)| format!("{o}\n")).collect();
    let input = dir.join("resources.json");
    std::fs::write(&input, stream).expect("resources stream");
    let mut kubectl = Command::new(env.kubectl_binary());
    kubectl
        .args(["create", "-f", "-"])
        .env("KUBECONFIG", env.kubeconfig_path())
        .stdin(std::fs::File::open(&input).expect("resources stream"))
        .stdout(std::fs::File::create(dir.join("kubectl.out")).expect("kubectl.out"))
        .stderr(std::fs::File::create(dir.join("kubectl.err")).expect("kubectl.err"));
    let from = audit_now();
    let t0 = Instant::now();
    let mut child = kubectl.spawn().expect("spawn kubectl");
    let kubectl_done = tokio::task::spawn_blocking(move || (child.wait(), Instant::now()));

    // Until every object was seen Ready. The deadline counts from kubectl's end, so a
    // slow apiserver (kubectl's creates take what they take) is not "broken".
    let kubectl_deadline = Duration::from_secs(600) + Duration::from_millis(200 * s.n as u64);
    let ready_after_kubectl = Duration::from_secs_f64(120.0 + 10.0 * f.bound_s);
    let mut kubectl_end: Option<Instant> = None;
    let mut kubectl_done = Some(kubectl_done);
    loop {
        if let Some(handle) = kubectl_done.take_if(|h| h.is_finished()) {
            let (status, end) = handle.await.expect("kubectl waiter");
            kubectl_end = Some(end);
            f.kubectl_s = Some((end - t0).as_secs_f64());
            if !status.is_ok_and(|code| code.success()) {
                let err = std::fs::read_to_string(dir.join("kubectl.err")).unwrap_or_default();
                broken(&mut f, format!("kubectl create failed: {}", err.trim()));
                break;
            }
        }
        f.ready_count = watch.count();
        if f.ready_count >= s.n && kubectl_end.is_some() {
            break;
        }
        let late = match kubectl_end {
            Some(end) => end.elapsed() > ready_after_kubectl,
            None => t0.elapsed() > kubectl_deadline,
        };
        if late || !op.alive() {
            let what = if let Some(status) = op.exit_status() {
                format!("the operator exited ({status})")
            } else if kubectl_end.is_none() {
                format!(
                    "kubectl still creating after {:.0} s",
                    t0.elapsed().as_secs_f64()
                )
            } else {
                format!(
                    "only {}/{} Ready {:.0} s after the first create",
                    f.ready_count,
                    s.n,
                    t0.elapsed().as_secs_f64()
                )
            };
            broken(&mut f, what);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_ready = watch.snapshot();
    drop(watch);
    if f.broken.is_empty() {
        // All Ready = the last first-Ready instant (not when this loop looked).
        let secs = |t: &Instant| t.saturating_duration_since(t0).as_secs_f64();
        f.ready_s = first_ready.values().map(secs).reduce(f64::max);
        for (name, at) in &first_ready {
            if let Some(kind) = Kind::of_name(name) {
                let e = f.ready_by_kind.entry(kind).or_default();
                *e = e.max(secs(at));
            }
        }
    }
    // Late writes of the burst (e.g. an Event after the status) land in the window.
    tokio::time::sleep(GRACE).await;
    let to = audit_now();
    let end = Instant::now();
    f.rss_kib = op.vm_hwm_kib();
    op.stop().await;

    f.k8s = operator_requests(env, &from, &to);
    (f.upstream, f.upstream_overhead) = up.calls(t0, end);
    // Confirmation latency: first seen Ready minus the instant the gateway showed the
    // write (what the operator can at best react to; includes the watch's delivery).
    let visible = up.ic.visible_since();
    for (kind, i, _) in &objects {
        if *kind != Kind::PersonaAccessControl {
            continue;
        }
        let id = format!("{VS}_{}", persona_role(*i));
        if let (Some(v), Some(r)) = (visible.get(&id), first_ready.get(&kind.object_name(*i))) {
            let latency = match r.checked_duration_since(*v) {
                Some(d) => d.as_secs_f64(),
                None => -v.duration_since(*r).as_secs_f64(),
            };
            f.confirm_s.push(latency);
        }
    }
    f.confirm_s.sort_by(f64::total_cmp);
    f
}

// ---------------------------------------------------------------------------------
// Output.

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// KiB as MiB; `-` when unknown (the operator was gone before it was read).
fn mib(kib: u64) -> String {
    if kib == 0 {
        "-".into()
    } else {
        format!("{:.1}", kib as f64 / 1024.0)
    }
}

fn join(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows of the request table: writes first, then reads, each by name.
fn request_keys(f: &Figures) -> Vec<String> {
    let mut keys: Vec<String> = f.k8s.keys().map(|(k, _)| k.clone()).collect();
    keys.sort_by_key(|k| (!is_write(k), k.clone()));
    keys.dedup();
    keys
}

fn target_of(key: &str) -> &'static str {
    match key {
        "patch <object>" => "≤ 1",
        "patch <object>/status" => "1 (PAC 2)",
        "create events" => "≤ 1",
        _ => "",
    }
}

fn print_details(f: &Figures) {
    let mut out = String::new();
    let n = f.n.max(1) as f64;
    let _ = writeln!(
        out,
        "  kubectl create: {} s (client time); rate-limit bound {:.1} s",
        opt(f.kubectl_s, 1),
        f.bound_s
    );
    match f.ready_s {
        Some(t) => {
            let _ = writeln!(
                out,
                "  all Ready after {t:.1} s = {} × max(bound, kubectl) (target ≤ {T_RATIO}); last Ready per kind: {}",
                opt(f.ratio(), 2),
                f.ready_by_kind
                    .iter()
                    .map(|(k, t)| format!("{} {t:.1} s", k.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        None => {
            let _ = writeln!(out, "  NOT all Ready: {}/{}", f.ready_count, f.n);
        }
    }
    let _ = writeln!(
        out,
        "  operator requests to the apiserver per created object (audit log, user {OPERATOR_USER}, first create .. all Ready + {} s):",
        GRACE.as_secs()
    );
    let _ = writeln!(
        out,
        "    | request | {} | any (per N) | count | target |",
        KINDS.map(Kind::name).join(" | ")
    );
    let _ = writeln!(out, "    |---|--:|--:|--:|--:|--:|--:|");
    let mut row = |label: &str, per_kind: [Option<f64>; 3], total: usize, target: &str| {
        let cells = per_kind.map(|v| opt(v, 2)).join(" | ");
        let _ = writeln!(
            out,
            "    | {label} | {cells} | {:.2} | {total} | {target} |",
            total as f64 / n
        );
    };
    for key in request_keys(f) {
        let total: usize = f
            .k8s
            .iter()
            .filter(|((k, _), _)| *k == key)
            .map(|(_, c)| c)
            .sum();
        let about_objects = f.k8s.keys().any(|(k, kind)| *k == key && kind.is_some());
        let per_kind = KINDS.map(|kind| about_objects.then(|| f.per_object(&key, kind)));
        row(&key, per_kind, total, target_of(&key));
    }
    let per_kind_writes =
        KINDS.map(|kind| Some(f.writes(Some(kind)) as f64 / f.counts[&kind].max(1) as f64));
    row("**all writes**", per_kind_writes, f.writes(None), "");
    let _ = writeln!(
        out,
        "  upstream calls per object (token exchanges and Connection checks excluded: {}):",
        f.upstream_overhead
    );
    for kind in KINDS {
        let ops = f.upstream.get(&kind).cloned().unwrap_or_default();
        let target = if kind == Kind::PersonaAccessControl {
            format!("≤ {T_IC_CALLS}")
        } else {
            "1.00".into()
        };
        let _ = writeln!(
            out,
            "    {}: {:.2} (target {target}; minimum {} for {}): {}",
            kind.name(),
            f.calls_per_object(kind),
            f.min_calls[&kind],
            f.counts[&kind],
            join(&ops)
        );
    }
    let _ = writeln!(
        out,
        "  PersonaAccessControl Ready after its write was visible on the gateway: median {} s, p95 {} s, max {} s over {} (target ≤ {T_CONFIRM_S} s)",
        opt(f.confirm(0.5), 2),
        opt(f.confirm(0.95), 2),
        opt(f.confirm(1.0), 2),
        f.confirm_s.len()
    );
    let _ = writeln!(out, "  operator peak RSS (VmHWM): {} MiB", mib(f.rss_kib));
    print!("{out}");
}

fn table(all: &[Figures]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| N | visible after (s) | kubectl (s) | bound (s) | all Ready (s) | ratio | metadata PATCH/obj AP·AE·PAC | status PATCH/obj AP·AE·PAC | Events/obj | k8s writes/obj | upstream calls/obj AP·AE·PAC | PAC confirm median·p95·max (s) | peak RSS (MiB) |"
    );
    let _ = writeln!(t, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    let _ = writeln!(
        t,
        "| **target** | | | | | ≤ {T_RATIO} | ≤ 1 | {} | ≤ 1 | | 1.00·1.00·≤ {T_IC_CALLS} | ≤ {T_CONFIRM_S} (max) | |",
        KINDS.map(Kind::status_target).join("·")
    );
    for f in all {
        let per_kind = |key: &str| {
            KINDS
                .map(|k| format!("{:.2}", f.per_object(key, k)))
                .join("·")
        };
        let n = f.n.max(1) as f64;
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {}·{}·{} | {} |",
            f.n,
            f.visibility_s,
            opt(f.kubectl_s, 1),
            f.bound_s,
            f.ready_s
                .map_or(format!("> ({}/{})", f.ready_count, f.n), |t| format!(
                    "{t:.1}"
                )),
            opt(f.ratio(), 2),
            per_kind("patch <object>"),
            per_kind("patch <object>/status"),
            f.events() as f64 / n,
            f.writes(None) as f64 / n,
            KINDS
                .map(|k| format!("{:.2}", f.calls_per_object(k)))
                .join("·"),
            opt(f.confirm(0.5), 2),
            opt(f.confirm(0.95), 2),
            opt(f.confirm(1.0), 2),
            mib(f.rss_kib),
        );
    }
    let _ = write!(
        t,
        "Real kube-apiserver + etcd (envtest), fake upstreams. ratio = all Ready ÷ max(bound, kubectl); bound = minimal create calls / {RPS} rps, max over Connections; \
         per-object figures from the audit log (operator's own user, first create .. all Ready + {} s); upstream calls exclude token exchanges and Connection checks; \
         PAC confirm = first seen Ready − write visible on the gateway.",
        GRACE.as_secs()
    );
    t
}
