//! Scale benchmark (issue #7): the real `accessplane` binary, as a separate process,
//! against an in-memory fake Kubernetes apiserver served over HTTP and the in-process
//! fake upstreams (Serval, ConductorOne, Instaclustr) with 20 ms added latency and a
//! client-side rate limit of 50 requests/s per Connection.
//!
//! `cargo bench --bench scale` runs the full set (N = 1,000 of each kind alone, then
//! 1,000 / 5,000 / 10,000 mixed). Without `--bench` (how `cargo test --all-targets`
//! runs this target) it runs one small smoke scenario. `--n <N>` and `--kind <kind>`
//! (`mixed`, `AccessProfile`, `AppEntitlement`, `Connector`, `McpToolset`,
//! `PersonaAccessControl`) run one ad-hoc scenario. Figures are reported, never asserted:
//! the exit status is non-zero only when something is broken (e.g. resources never
//! become Ready within a generous deadline).
//!
//! `ACCESSPLANE_BENCH_WRAPPER="heaptrack"` (any command prefix, split on spaces) runs the
//! operator under a profiler; memory and CPU figures then describe the wrapper's process.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use common::{Operator, clock_ticks};

use support::fake_c1::{self, FakeC1, test_credentials};
use support::fake_http::Recorded;
use support::fake_instaclustr::{self, FakeInstaclustr};
use support::fake_kube::{FakeKube, RecordedRequest};
use support::fake_serval::{self, FakeServal};
use support::kube_server::KubeServer;

const API: &str = "accessplane.io/v1alpha1";
const NS: &str = "bench";
const LATENCY: Duration = Duration::from_millis(20);
const RPS: u32 = 50;
const BURST: u32 = 50;
const TEAM: &str = "team-bench";
const CLUSTER: &str = "gw-bench";
const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";
/// Largest page each list endpoint serves (per the upstream contracts).
const SERVAL_PAGE: usize = 1000;
const C1_PAGE: usize = 100;
const SMOKE_N: usize = 60;
const EDITED: &str = "edited during the resync wave";
/// The id the Connection controller reads to prove credentials work.
const CONNECTION_CHECK: &str = "accessplane-connection-check";

// Targets of issue #7, printed next to the figures.
const T_RATIO: f64 = 1.25;
const T_CALLS: f64 = 1.1;
const T_READS: f64 = 1.1;
const T_EDIT_S: f64 = 2.0;
const T_RSS_MIB: f64 = 64.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    AccessProfile,
    AppEntitlement,
    Connector,
    McpToolset,
    PersonaAccessControl,
}

const KINDS: [Kind; 5] = [
    Kind::AccessProfile,
    Kind::AppEntitlement,
    Kind::Connector,
    Kind::McpToolset,
    Kind::PersonaAccessControl,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AccessProfile => "AccessProfile",
            Kind::AppEntitlement => "AppEntitlement",
            Kind::Connector => "Connector",
            Kind::McpToolset => "McpToolset",
            Kind::PersonaAccessControl => "PersonaAccessControl",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::AccessProfile => "accessprofiles",
            Kind::AppEntitlement => "appentitlements",
            Kind::Connector => "connectors",
            Kind::McpToolset => "mcptoolsets",
            Kind::PersonaAccessControl => "personaaccesscontrols",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Kind::AccessProfile => "ap",
            Kind::AppEntitlement => "ae",
            Kind::Connector => "cn",
            Kind::McpToolset => "ts",
            Kind::PersonaAccessControl => "pac",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        KINDS
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s) || k.short() == s.to_lowercase())
    }

    fn upstream(self) -> Upstream {
        match self {
            Kind::AccessProfile => Upstream::Serval,
            Kind::PersonaAccessControl => Upstream::Instaclustr,
            _ => Upstream::C1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Upstream {
    Serval,
    C1,
    Instaclustr,
}

const UPSTREAMS: [Upstream; 3] = [Upstream::Serval, Upstream::C1, Upstream::Instaclustr];

impl Upstream {
    fn connection(self) -> &'static str {
        match self {
            Upstream::Serval => "serval",
            Upstream::C1 => "c1",
            Upstream::Instaclustr => "instaclustr",
        }
    }
}

/// One scenario: how many objects of each kind.
#[derive(Clone, Debug)]
struct Scenario {
    label: String,
    counts: BTreeMap<Kind, usize>,
}

impl Scenario {
    fn mixed(n: usize) -> Self {
        let counts = KINDS
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, n / 5 + usize::from(i < n % 5)))
            .collect();
        Self {
            label: "mixed".into(),
            counts,
        }
    }

    fn single(kind: Kind, n: usize) -> Self {
        Self {
            label: kind.name().into(),
            counts: [(kind, n)].into(),
        }
    }

    fn n(&self) -> usize {
        self.counts.values().sum()
    }

    fn count(&self, kind: Kind) -> usize {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    fn on(&self, upstream: Upstream) -> usize {
        self.counts
            .iter()
            .filter(|(k, _)| k.upstream() == upstream)
            .map(|(_, n)| n)
            .sum()
    }

    /// Fewest upstream calls that create everything: one create per object (every
    /// create answers with the object, or, on Instaclustr, is confirmed by one List per
    /// cluster after one cluster-status check before writing).
    fn min_create_calls(&self, upstream: Upstream) -> usize {
        let n = self.on(upstream);
        match upstream {
            Upstream::Instaclustr if n > 0 => n + 2,
            _ => n,
        }
    }

    /// Fewest reads that observe everything: one paged List per scope.
    fn min_resync_reads(&self) -> BTreeMap<&'static str, usize> {
        let pages = |n: usize, size: usize| n.div_ceil(size);
        let mut m = BTreeMap::new();
        for (kind, &n) in &self.counts {
            if n == 0 {
                continue;
            }
            let (scope, p) = match kind {
                Kind::AccessProfile => ("serval team", pages(n, SERVAL_PAGE)),
                Kind::AppEntitlement => ("c1 app entitlements", pages(n, C1_PAGE)),
                Kind::Connector => ("c1 app connectors", pages(n, C1_PAGE)),
                // The connector's two built-in toolsets are listed too.
                Kind::McpToolset => ("c1 connector toolsets", pages(n + 2, C1_PAGE)),
                Kind::PersonaAccessControl => ("instaclustr cluster", 1),
            };
            m.insert(scope, p);
        }
        m
    }

    /// Time the rate limit alone needs for the minimal creates (max over Connections).
    fn bound(&self) -> f64 {
        UPSTREAMS
            .iter()
            .map(|u| self.min_create_calls(*u) as f64 / f64::from(RPS))
            .fold(0.0, f64::max)
    }
}

/// The figures of one scenario.
#[derive(Default, Debug)]
struct Figures {
    label: String,
    n: usize,
    ready_s: Option<f64>,
    ready_count: usize,
    bound_s: f64,
    create_calls: usize,
    create_min: usize,
    create_tokens: usize,
    create_kube_writes: usize,
    create_by_kind: BTreeMap<&'static str, (usize, usize)>,
    create_ops: BTreeMap<String, usize>,
    create_kube_ops: BTreeMap<String, usize>,
    resync_kube_ops: BTreeMap<String, usize>,
    /// One Event note per reason seen during the resync (what went wrong, if anything).
    resync_event_notes: BTreeMap<String, String>,
    resync_up_writes: usize,
    resync_kube_writes: usize,
    resync_reads: usize,
    resync_pages: usize,
    resync_tokens: usize,
    resync_reads_by_scope: BTreeMap<String, usize>,
    resync_pages_by_scope: BTreeMap<&'static str, usize>,
    resync_wave_s: Option<f64>,
    resync_reconciles: u64,
    edit_kind: &'static str,
    edit_s: Option<f64>,
    rss_create_kib: u64,
    rss_resync_kib: u64,
    cpu_per_noop_us: Option<f64>,
    plan: Option<PlanFigures>,
    broken: Vec<String>,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match common::parse_args("--kind") {
        Ok(a) => a,
        Err(e) => {
            eprintln!("scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    let scenarios = if args.n.is_some() || args.option.is_some() {
        let n = args.n.unwrap_or(if args.full { 1000 } else { SMOKE_N });
        match args.option.as_deref().unwrap_or("mixed") {
            "mixed" => vec![Scenario::mixed(n)],
            other => match Kind::parse(other) {
                Some(k) => vec![Scenario::single(k, n)],
                None => {
                    eprintln!("scale: unknown --kind {other}");
                    return ExitCode::FAILURE;
                }
            },
        }
    } else if args.full {
        let mut s: Vec<Scenario> = KINDS.iter().map(|k| Scenario::single(*k, 1000)).collect();
        s.extend([1000, 5000, 10_000].map(Scenario::mixed));
        s
    } else {
        vec![Scenario::mixed(SMOKE_N)]
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let figures = rt.block_on(run_all(scenarios, args.full));
    let broken: Vec<&String> = figures.iter().flat_map(|f| &f.broken).collect();
    if broken.is_empty() {
        ExitCode::SUCCESS
    } else {
        for b in broken {
            eprintln!("scale: BROKEN: {b}");
        }
        ExitCode::FAILURE
    }
}

async fn run_all(scenarios: Vec<Scenario>, full: bool) -> Vec<Figures> {
    let workdir = std::env::temp_dir().join(format!("accessplane-scale-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).expect("work dir");
    println!(
        "accessplane scale benchmark ({} mode, operator binary: {})",
        if full { "full" } else { "smoke" },
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        }
    );
    println!("{}", setup_note());
    let mut all = Vec::new();
    for (i, scenario) in scenarios.into_iter().enumerate() {
        println!(
            "\n== {} N={} ({})",
            scenario.label,
            scenario.n(),
            scenario
                .counts
                .iter()
                .map(|(k, n)| format!("{} {n}", k.name()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let dir = workdir.join(format!("{i}-{}-{}", scenario.label, scenario.n()));
        std::fs::create_dir_all(&dir).expect("scenario dir");
        let f = run_scenario(&scenario, &dir).await;
        print_details(&f);
        all.push(f);
    }
    println!("\n{}", table(&all));
    if all.iter().all(|f| f.broken.is_empty()) {
        let _ = std::fs::remove_dir_all(&workdir);
    } else {
        println!("operator logs kept in {}", workdir.display());
    }
    all
}

fn setup_note() -> String {
    format!(
        "Kubernetes side: an IN-MEMORY FAKE apiserver (tests/support/fake_kube.rs) served over HTTP on 127.0.0.1, not a real cluster.\n\
         Upstreams: in-process fakes of Serval, ConductorOne and Instaclustr (tests/support/fake_*.rs), {} ms added latency per request.\n\
         Operator: the real `accessplane run` binary as a child process (kubeconfig -> fake apiserver), default flags (concurrency 4, resync 10m).\n\
         Connections: one per upstream, rateLimit {RPS} requests/s (burst {BURST}).",
        LATENCY.as_millis()
    )
}

// ---------------------------------------------------------------------------------
// The environment: fakes, Connections, operator processes.

struct Env {
    kube: FakeKube,
    /// Serves `kube` to the operator; stops when dropped.
    _server: KubeServer,
    serval: FakeServal,
    c1: FakeC1,
    ic: FakeInstaclustr,
    app_ae: String,
    app_cn: String,
    app_ts: String,
    connector_ts: String,
    kubeconfig: PathBuf,
}

impl Env {
    async fn start(dir: &Path) -> Self {
        let kube = FakeKube::new();
        let server = KubeServer::start(kube.clone()).await;
        let serval = FakeServal::start().await;
        let c1 = FakeC1::start().await;
        let ic = FakeInstaclustr::start().await;
        serval.set_latency(LATENCY);
        c1.set_latency(LATENCY);
        ic.set_latency(LATENCY);

        serval.add_client("bench-operator", "bench-serval-secret");
        let (c1_id, c1_secret, c1_public) = test_credentials(&c1.host());
        c1.add_client(&c1_id, c1_public, &c1_secret);
        let app_ae = c1.seed_app();
        let app_cn = c1.seed_app();
        let app_ts = c1.seed_app();
        let connector_ts = c1.seed_connector(&app_ts, "Bench MCP server");
        ic.add_account("bench", "bench-ic-key");
        ic.add_virtual_server(CLUSTER, VS);

        for (_, crd) in accessplane::kinds::all_crds() {
            let mut v = serde_json::to_value(crd).expect("crd json");
            v["apiVersion"] = json!("apiextensions.k8s.io/v1");
            v["kind"] = json!("CustomResourceDefinition");
            kube.upsert("customresourcedefinitions", v);
        }
        kube.put_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}));
        let secret = |name: &str, data: Value| {
            let data: serde_json::Map<String, Value> = data
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let b = base64::engine::general_purpose::STANDARD
                        .encode(v.as_str().unwrap().as_bytes());
                    (k.clone(), Value::String(b))
                })
                .collect();
            kube.put_object(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": NS}, "type": "Opaque", "data": data}));
        };
        secret(
            "serval-credentials",
            json!({"clientId": "bench-operator", "clientSecret": "bench-serval-secret"}),
        );
        secret(
            "c1-credentials",
            json!({"clientId": c1_id, "clientSecret": c1_secret}),
        );
        secret(
            "instaclustr-credentials",
            json!({"username": "bench", "apiKey": "bench-ic-key"}),
        );
        let rate = json!({"requestsPerSecond": RPS, "burst": BURST});
        let connection = |name: &str, spec: Value| {
            let mut spec = spec;
            spec["rateLimit"] = rate.clone();
            kube.put_object(json!({"apiVersion": API, "kind": "Connection",
                "metadata": {"name": name, "namespace": NS, "generation": 1}, "spec": spec}));
        };
        connection(
            "serval",
            json!({"serval": {"baseUrl": serval.base_url(), "credentialsSecretRef": {"name": "serval-credentials"}}}),
        );
        connection(
            "c1",
            json!({"conductorOne": {"serverUrl": c1.base_url(), "credentialsSecretRef": {"name": "c1-credentials"}}}),
        );
        connection(
            "instaclustr",
            json!({"instaclustr": {"baseUrl": ic.base_url(), "credentialsSecretRef": {"name": "instaclustr-credentials"}}}),
        );

        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig(NS)).expect("kubeconfig");
        Self {
            kube,
            _server: server,
            serval,
            c1,
            ic,
            app_ae,
            app_cn,
            app_ts,
            connector_ts,
            kubeconfig,
        }
    }

    fn name(kind: Kind, i: usize) -> String {
        format!("bench-{}-{i:06}", kind.short())
    }

    fn spec(&self, kind: Kind, i: usize) -> Value {
        match kind {
            Kind::AccessProfile => json!({"connectionRef": {"name": "serval"}, "teamId": TEAM,
                "name": format!("Bench profile {i}"), "description": "bench"}),
            Kind::AppEntitlement => json!({"connectionRef": {"name": "c1"}, "appId": self.app_ae,
                "displayName": format!("Bench entitlement {i}"), "alias": format!("bench-ae-{i}"),
                "description": "bench"}),
            Kind::Connector => json!({"connectionRef": {"name": "c1"}, "appId": self.app_cn,
                "catalogId": "catalog-bench", "displayName": format!("Bench connector {i}"),
                "description": "bench"}),
            Kind::McpToolset => json!({"connectionRef": {"name": "c1"}, "appId": self.app_ts,
                "connectorId": self.connector_ts, "displayName": format!("Bench toolset {i}"),
                "description": "bench"}),
            Kind::PersonaAccessControl => json!({"connectionRef": {"name": "instaclustr"},
                "clusterId": CLUSTER, "virtualServerId": VS, "personaRole": format!("persona-{i}"),
                "type": "ALLOWLIST", "tools": []}),
        }
    }

    fn put_resources(&self, s: &Scenario) {
        // Interleaved, as a GitOps sync of a mixed repository would write them.
        let max = s.counts.values().copied().max().unwrap_or(0);
        for i in 0..max {
            for (&kind, &n) in &s.counts {
                if i < n {
                    self.kube
                        .put_object(json!({"apiVersion": API, "kind": kind.name(),
                        "metadata": {"name": Self::name(kind, i), "namespace": NS, "generation": 1},
                        "spec": self.spec(kind, i)}));
                }
            }
        }
    }

    /// Objects of the scenario whose Ready condition is True for their generation.
    fn ready_count(&self, s: &Scenario) -> usize {
        s.counts
            .keys()
            .map(|k| {
                self.kube
                    .list(API, k.plural(), Some(NS))
                    .iter()
                    .filter(|o| is_ready(o))
                    .count()
            })
            .sum()
    }

    /// Every object of the scenario Ready and Synced for its generation.
    fn all_synced(&self, s: &Scenario) -> bool {
        s.counts.keys().all(|k| {
            self.kube
                .list(API, k.plural(), Some(NS))
                .iter()
                .all(|o| is_ready(o) && condition(o, "Synced")["status"] == "True")
        })
    }

    fn connections_ready(&self) -> bool {
        UPSTREAMS.iter().all(|u| {
            self.kube
                .get(API, "connections", NS, u.connection())
                .is_some_and(|o| condition(&o, "Ready")["status"] == "True")
        })
    }

    fn upstream_requests(&self) -> usize {
        let all = |count: &dyn Fn(&str) -> usize| {
            ["GET", "POST", "PUT", "DELETE", "PATCH"]
                .iter()
                .map(|m| count(m))
                .sum::<usize>()
        };
        all(&|m| self.serval.count(m, "/"))
            + all(&|m| self.c1.count(m, "/"))
            + all(&|m| self.ic.count(m, "/"))
    }

    fn clear_logs(&self) {
        self.serval.clear_requests();
        self.c1.clear_requests();
        self.ic.clear_requests();
        self.kube.clear_requests();
    }

    /// Every upstream request since the last clear, classified.
    fn calls(&self) -> Vec<Call> {
        let mut out = Vec::new();
        for r in self.serval.requests() {
            out.push(classify_serval(&r));
        }
        for r in self.c1.requests() {
            out.push(classify_c1(&r));
        }
        for r in self.ic.requests() {
            out.push(classify_ic(&r));
        }
        out
    }
}

fn condition(obj: &Value, type_: &str) -> Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or(Value::Null)
}

fn is_ready(obj: &Value) -> bool {
    let ready = condition(obj, "Ready");
    ready["status"] == "True"
        && ready["observedGeneration"].as_i64() == obj["metadata"]["generation"].as_i64()
}

// ---------------------------------------------------------------------------------
// Classifying upstream requests.

#[derive(Clone, Debug)]
struct Call {
    /// The kind it serves (None: token exchange, Connection check, cluster status).
    kind: Option<Kind>,
    /// Connection overhead, not per resource: a token exchange or the Connection's
    /// credentials check (a read of `accessplane-connection-check`).
    token: bool,
    write: bool,
    /// For reads: the list scope, or "get ..." for single-object reads.
    read_scope: String,
    method: String,
    path: String,
}

impl Call {
    /// What it did, for breakdowns: `POST write`, `c1 get ae`, ...
    fn op(&self) -> String {
        if self.path.contains(CONNECTION_CHECK) {
            "connection check".into()
        } else if self.token {
            "token".into()
        } else if self.write {
            format!("{} write", self.method)
        } else {
            self.read_scope.clone()
        }
    }
}

fn classify_serval(r: &Recorded) -> Call {
    let token = r.path == fake_serval::TOKEN_PATH || r.path.contains(CONNECTION_CHECK);
    let list = r.method == "GET" && r.path == fake_serval::PROFILES_PATH;
    Call {
        kind: (!token).then_some(Kind::AccessProfile),
        token,
        write: !token && r.method != "GET",
        read_scope: if list {
            "serval team".into()
        } else {
            "serval get".into()
        },
        method: r.method.clone(),
        path: r.path.clone(),
    }
}

fn classify_c1(r: &Recorded) -> Call {
    let token = r.path == fake_c1::TOKEN_PATH || r.path.contains(CONNECTION_CHECK);
    let search = r.path == fake_c1::SEARCH_PATH;
    let seg: Vec<&str> = r.path.trim_start_matches("/api/v1/").split('/').collect();
    let kind = if token {
        None
    } else if search || seg.get(2) == Some(&"entitlements") {
        Some(Kind::AppEntitlement)
    } else if seg.len() > 4 {
        Some(Kind::McpToolset)
    } else {
        Some(Kind::Connector)
    };
    let write = !token && !search && r.method != "GET";
    let read_scope = match (kind, seg.len()) {
        _ if search => "c1 search".into(),
        (Some(Kind::AppEntitlement), 3) => "c1 app entitlements".into(),
        (Some(Kind::Connector), 3) => "c1 app connectors".into(),
        (Some(Kind::McpToolset), 5) if seg[4] == "mcp_toolsets" => "c1 connector toolsets".into(),
        (Some(Kind::McpToolset), 5) => format!("c1 {}", seg[4]),
        (Some(Kind::McpToolset), 7) => "c1 tool bindings".into(),
        (Some(k), _) => format!("c1 get {}", k.short()),
        (None, _) => "c1 token".into(),
    };
    Call {
        kind,
        token,
        write,
        read_scope,
        method: r.method.clone(),
        path: r.path.clone(),
    }
}

fn classify_ic(r: &Recorded) -> Call {
    let list = r.path.starts_with(fake_instaclustr::LIST_PATH_PREFIX);
    let cluster = r.path.starts_with(fake_instaclustr::CLUSTERS_PATH);
    let token = r.path.contains(CONNECTION_CHECK);
    Call {
        kind: (!cluster).then_some(Kind::PersonaAccessControl),
        token,
        write: r.method != "GET",
        read_scope: if list {
            "instaclustr cluster".into()
        } else if cluster {
            "instaclustr cluster status".into()
        } else {
            "instaclustr get".into()
        },
        method: r.method.clone(),
        path: r.path.clone(),
    }
}

fn kube_writes(reqs: &[RecordedRequest], except: Option<&str>) -> usize {
    kube_ops(reqs, except).values().sum()
}

/// Kubernetes writes by `METHOD plural[/subresource]`, without those about `except`.
fn kube_ops(reqs: &[RecordedRequest], except: Option<&str>) -> BTreeMap<String, usize> {
    let quoted = except.map(|n| format!("\"{n}\""));
    let mut ops = BTreeMap::new();
    let writes = reqs
        .iter()
        .filter(|r| r.method != "GET")
        .filter(|r| match (&quoted, except) {
            (Some(q), Some(n)) => {
                !r.path.ends_with(n)
                    && !r.path.contains(&format!("/{n}/"))
                    && !r.body.as_ref().is_some_and(|b| b.to_string().contains(q))
            }
            _ => true,
        });
    for r in writes {
        let seg: Vec<&str> = r.path.split('/').collect();
        // .../namespaces/{ns}/{plural}[/{name}[/{sub}]]
        let at = seg
            .iter()
            .position(|s| *s == "namespaces")
            .map_or(0, |i| i + 2);
        let what = match (seg.get(at), seg.get(at + 2)) {
            (Some(p), Some(sub)) => format!("{p}/{sub}"),
            (Some(p), None) if *p == "events" => {
                let reason = r.body.as_ref().and_then(|b| b["reason"].as_str());
                format!("events ({})", reason.unwrap_or("?"))
            }
            (Some(p), None) => p.to_string(),
            _ => r.path.clone(),
        };
        let patch = r
            .content_type
            .as_deref()
            .and_then(|c| c.split('/').nth(1))
            .map_or(String::new(), |c| format!(" ({c})"));
        *ops.entry(format!(
            "{} {what}{}",
            r.method,
            if r.method == "PATCH" {
                patch
            } else {
                String::new()
            }
        ))
        .or_default() += 1;
    }
    ops
}

// ---------------------------------------------------------------------------------
// One scenario.

async fn run_scenario(s: &Scenario, dir: &Path) -> Figures {
    let mut f = Figures {
        label: s.label.clone(),
        n: s.n(),
        bound_s: s.bound(),
        ..Figures::default()
    };
    let ticks = clock_ticks();
    let http = reqwest::Client::new();
    let env = Env::start(dir).await;

    // --- Create path.
    let mut op = Operator::spawn(&env.kubeconfig, &dir.join("operator-create.log"));
    let started = Instant::now();
    while !env.connections_ready() {
        if started.elapsed() > Duration::from_secs(60) || !op.alive() {
            f.broken.push(format!(
                "{} N={}: Connections not Ready after 60 s (operator log: {})",
                s.label,
                s.n(),
                dir.join("operator-create.log").display()
            ));
            op.stop().await;
            return f;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.clear_logs();
    let t0 = Instant::now();
    env.put_resources(s);
    let deadline = Duration::from_secs_f64(120.0 + 10.0 * f.bound_s);
    loop {
        f.ready_count = env.ready_count(s);
        if f.ready_count == s.n() {
            f.ready_s = Some(t0.elapsed().as_secs_f64());
            break;
        }
        if t0.elapsed() > deadline || !op.alive() {
            f.broken.push(format!(
                "{} N={}: only {}/{} Ready after {:.0} s (operator log: {})",
                s.label,
                s.n(),
                f.ready_count,
                s.n(),
                t0.elapsed().as_secs_f64(),
                dir.join("operator-create.log").display()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(if s.n() > 2000 { 500 } else { 100 })).await;
    }
    let calls = env.calls();
    f.create_tokens = calls.iter().filter(|c| c.token).count();
    f.create_calls = calls.iter().filter(|c| !c.token).count();
    f.create_min = UPSTREAMS.iter().map(|u| s.min_create_calls(*u)).sum();
    for (&kind, &n) in &s.counts {
        let used = calls.iter().filter(|c| c.kind == Some(kind)).count();
        f.create_by_kind.insert(kind.name(), (used, n));
    }
    for c in calls.iter().filter(|c| !c.token) {
        let kind = c.kind.map_or("-", Kind::short);
        *f.create_ops
            .entry(format!("{kind}: {}", c.op()))
            .or_default() += 1;
    }
    let reqs = env.kube.requests();
    f.create_kube_writes = kube_writes(&reqs, None);
    f.create_kube_ops = kube_ops(&reqs, None);
    f.rss_create_kib = op.vm_hwm_kib();
    op.stop().await;
    if f.ready_s.is_none() {
        return f;
    }

    // --- Full resync: a restarted operator reconciles every (converged) object once.
    env.clear_logs();
    let edit_kind = [Kind::AccessProfile]
        .into_iter()
        .chain(KINDS)
        .find(|k| s.count(*k) > 0)
        .expect("some kind");
    f.edit_kind = edit_kind.name();
    let edit_name = Env::name(edit_kind, s.count(edit_kind) - 1);
    let edit_obj = env
        .kube
        .get(API, edit_kind.plural(), NS, &edit_name)
        .expect("edit target");
    let edit_id = edit_obj["status"]["id"].as_str().unwrap_or("").to_string();

    let op = Operator::spawn(&env.kubeconfig, &dir.join("operator-resync.log"));
    let t_start = Instant::now();
    // The wave begins with the first reconcile.
    let (cpu0, rec0) = loop {
        if let Some((all, ok)) = op.reconciles(&http).await
            && all > 0
        {
            break (op.cpu_seconds(ticks), (all, ok));
        }
        if t_start.elapsed() > Duration::from_secs(120) {
            f.broken.push(format!(
                "{} N={}: the restarted operator reconciled nothing within 120 s",
                s.label,
                s.n()
            ));
            op.stop().await;
            return f;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let t_wave = Instant::now();
    // A user edit while the wave is queued.
    edit(&env, edit_kind, &edit_name);
    let edit_t0 = Instant::now();
    let env = Arc::new(env);
    let watcher = {
        let env = env.clone();
        let edit_id = edit_id.clone();
        tokio::spawn(async move {
            loop {
                if edit_applied(&env, edit_kind, &edit_id) {
                    return edit_t0.elapsed().as_secs_f64();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // Done when every object was reconciled, nothing moved for 2 s and every object is
    // Ready and Synced again (a reconcile that failed, e.g. because its Connection was
    // not verified yet, is retried after the error backoff).
    let wave_deadline = Duration::from_secs_f64(120.0 + 0.06 * s.n() as f64);
    let mut last = ((0u64, 0u64), 0usize, 0u64);
    let mut still_since = Instant::now();
    let mut rec_end = rec0;
    loop {
        let r = op.reconciles(&http).await.unwrap_or(rec_end);
        let now = (r, env.upstream_requests(), env.kube.resource_version());
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        rec_end = r;
        let quiet = still_since.elapsed() >= Duration::from_secs(2);
        let (_, ok) = r;
        if ok >= s.n() as u64 && quiet && watcher.is_finished() && env.all_synced(s) {
            f.resync_wave_s = Some((still_since - t_wave).as_secs_f64());
            break;
        }
        if t_wave.elapsed() > wave_deadline {
            if ok < s.n() as u64 {
                f.broken.push(format!(
                    "{} N={}: resync wave incomplete after {:.0} s ({ok}/{} successful reconciles)",
                    s.label,
                    s.n(),
                    t_wave.elapsed().as_secs_f64(),
                    s.n()
                ));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let cpu1 = op.cpu_seconds(ticks);
    f.rss_resync_kib = op.vm_hwm_kib();
    // Counted from just before the first one (which the sample may already include).
    f.resync_reconciles = rec_end.0.saturating_sub(rec0.0) + 1;
    let ok_reconciles = rec_end.1.saturating_sub(rec0.1) + 1;
    if watcher.is_finished() {
        f.edit_s = watcher.await.ok();
    } else {
        watcher.abort();
    }
    // The edited object's reconciles and failed ones are not no-ops; their CPU is
    // included, which at scale is within the noise.
    let noop = ok_reconciles.saturating_sub(1);
    if noop > 0 {
        f.cpu_per_noop_us = Some((cpu1 - cpu0) * 1e6 / noop as f64);
    }
    let calls = env.calls();
    let not_edit = |c: &&Call| edit_id.is_empty() || !c.path.contains(edit_id.as_str());
    f.resync_tokens = calls.iter().filter(|c| c.token).count();
    f.resync_up_writes = calls.iter().filter(|c| c.write).filter(not_edit).count();
    // The edit's own calls are not the resync's: the read-back of its write and, before
    // an Instaclustr write, the gateway cluster's state (read before writes only).
    let edit_gate = |c: &&Call| {
        c.kind.is_none() && c.read_scope == "instaclustr cluster status" && f.resync_up_writes == 0
    };
    let reads = calls.iter().filter(|c| !c.token && !c.write);
    for c in reads.filter(not_edit).filter(|c| !edit_gate(c)) {
        *f.resync_reads_by_scope
            .entry(c.read_scope.clone())
            .or_default() += 1;
    }
    f.resync_reads = f.resync_reads_by_scope.values().sum();
    f.resync_pages_by_scope = s.min_resync_reads();
    f.resync_pages = f.resync_pages_by_scope.values().sum();
    let reqs = env.kube.requests();
    f.resync_kube_writes = kube_writes(&reqs, Some(&edit_name));
    f.resync_kube_ops = kube_ops(&reqs, Some(&edit_name));
    for r in reqs
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
    {
        if let Some(b) = &r.body {
            let reason = b["reason"].as_str().unwrap_or("?").to_string();
            let note = b["note"].as_str().unwrap_or("").chars().take(160).collect();
            f.resync_event_notes.entry(reason).or_insert(note);
        }
    }
    op.stop().await;
    f.plan = plan_phase(&env, s, dir).await;
    f
}

/// `accessplane plan` of every resource, as they are (issue #18: about as many upstream
/// reads as one resync, no write anywhere).
#[derive(Debug)]
struct PlanFigures {
    seconds: f64,
    exit: i32,
    reads: usize,
    reads_by_scope: BTreeMap<String, usize>,
    writes: usize,
    tokens: usize,
    kube_writes: usize,
}

async fn plan_phase(env: &Env, s: &Scenario, dir: &Path) -> Option<PlanFigures> {
    let manifests = dir.join("plan-input.yaml");
    let mut text = String::new();
    for kind in KINDS.iter().filter(|k| s.count(**k) > 0) {
        for obj in env.kube.list(API, kind.plural(), Some(NS)) {
            let doc = json!({"apiVersion": API, "kind": kind.name(),
                "metadata": {"name": obj["metadata"]["name"], "namespace": NS}, "spec": obj["spec"]});
            text.push_str(&serde_json::to_string(&doc).expect("JSON"));
            text.push_str("\n---\n");
        }
    }
    std::fs::write(&manifests, text).expect("plan input");
    env.clear_logs();
    let kubeconfig = env.kubeconfig.clone();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_accessplane"))
            .args(["plan", "-o", "json", "-f"])
            .arg(&manifests)
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .output()
    })
    .await
    .ok()?
    .ok()?;
    let seconds = started.elapsed().as_secs_f64();
    let calls = env.calls();
    let mut reads_by_scope = BTreeMap::new();
    for c in calls.iter().filter(|c| !c.token && !c.write) {
        *reads_by_scope.entry(c.read_scope.clone()).or_default() += 1;
    }
    Some(PlanFigures {
        seconds,
        exit: out.status.code().unwrap_or(-1),
        reads: reads_by_scope.values().sum(),
        reads_by_scope,
        writes: calls.iter().filter(|c| c.write).count(),
        tokens: calls.iter().filter(|c| c.token).count(),
        kube_writes: kube_writes(&env.kube.requests(), None),
    })
}

fn edit(env: &Env, kind: Kind, name: &str) {
    let patch = match kind {
        Kind::PersonaAccessControl => json!({"spec": {"type": "DENYLIST"}}),
        _ => json!({"spec": {"description": EDITED}}),
    };
    env.kube
        .merge_patch(API, kind.plural(), NS, name, patch)
        .expect("user edit");
}

fn edit_applied(env: &Env, kind: Kind, id: &str) -> bool {
    let upstream = match kind {
        Kind::AccessProfile => env.serval.profile(id),
        Kind::AppEntitlement => env.c1.entitlement(&env.app_ae, id),
        Kind::Connector => env.c1.connector(id),
        Kind::McpToolset => env.c1.toolset(id),
        Kind::PersonaAccessControl => env.ic.control(id),
    };
    upstream.is_some_and(|u| match kind {
        Kind::PersonaAccessControl => u["type"] == "DENYLIST",
        _ => u["description"] == EDITED,
    })
}

// ---------------------------------------------------------------------------------
// Output.

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn print_details(f: &Figures) {
    let mut out = String::new();
    match f.ready_s {
        Some(t) => {
            let _ = writeln!(
                out,
                "  all Ready after {t:.1} s; rate-limit bound {:.1} s (ratio {})",
                f.bound_s,
                ratio(t, f.bound_s)
            );
        }
        None => {
            let _ = writeln!(out, "  NOT all Ready: {}/{}", f.ready_count, f.n);
        }
    }
    let _ = writeln!(
        out,
        "  create path: {} upstream calls (+{} token/connection check), minimum {}; Kubernetes writes {} ({:.1}/object)",
        f.create_calls,
        f.create_tokens,
        f.create_min,
        f.create_kube_writes,
        f.create_kube_writes as f64 / f.n.max(1) as f64
    );
    for (kind, (used, n)) in &f.create_by_kind {
        let _ = writeln!(
            out,
            "    {kind}: {used} calls for {n} objects ({:.2}/object)",
            *used as f64 / (*n).max(1) as f64
        );
    }
    let _ = writeln!(
        out,
        "    upstream calls by kind and operation: {}",
        join(&f.create_ops)
    );
    let _ = writeln!(out, "    Kubernetes writes: {}", join(&f.create_kube_ops));
    if f.resync_reconciles > 0 {
        let _ = writeln!(
            out,
            "  resync (operator restart): {} reconciles in {}; upstream writes {}, Kubernetes writes {}, token/connection-check calls {}",
            f.resync_reconciles,
            f.resync_wave_s.map_or("-".into(), |t| format!("{t:.1} s")),
            f.resync_up_writes,
            f.resync_kube_writes,
            f.resync_tokens
        );
        let _ = writeln!(
            out,
            "    reads {} vs {} pages; by scope: {}",
            f.resync_reads,
            f.resync_pages,
            f.resync_reads_by_scope
                .iter()
                .map(|(k, v)| match f.resync_pages_by_scope.get(k.as_str()) {
                    Some(p) => format!("{k} {v} (min {p})"),
                    None => format!("{k} {v}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(out, "    Kubernetes writes: {}", join(&f.resync_kube_ops));
        for (reason, note) in &f.resync_event_notes {
            let _ = writeln!(out, "    e.g. Event {reason}: {note}");
        }
        let _ = writeln!(
            out,
            "    user edit ({}) applied upstream after {}",
            f.edit_kind,
            f.edit_s
                .map_or("never (within the wave)".into(), |t| format!("{t:.2} s"))
        );
    }
    if let Some(p) = &f.plan {
        let _ = writeln!(
            out,
            "  plan of all {} resources: {:.1} s, exit {}; upstream reads {} (resync: {}), writes {}, token/connection-check calls {}, Kubernetes writes {}",
            f.n, p.seconds, p.exit, p.reads, f.resync_reads, p.writes, p.tokens, p.kube_writes
        );
        let _ = writeln!(out, "    plan reads by scope: {}", join(&p.reads_by_scope));
    }
    let _ = writeln!(
        out,
        "  operator VmHWM: {:.1} MiB (create), {:.1} MiB (resync); CPU per no-op reconcile {}",
        f.rss_create_kib as f64 / 1024.0,
        f.rss_resync_kib as f64 / 1024.0,
        f.cpu_per_noop_us
            .map_or("-".into(), |us| format!("{us:.0} µs"))
    );
    print!("{out}");
}

fn join<K: std::fmt::Display>(m: &BTreeMap<K, usize>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table(all: &[Figures]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| scenario | N | all Ready (s) | bound (s) | ratio | calls/object | min | × min | resync up writes | resync k8s writes | resync reads | pages | × pages | edit applied (s) | peak RSS (MiB) | CPU/no-op (µs) |"
    );
    let _ = writeln!(
        t,
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    let _ = writeln!(
        t,
        "| **target** | | | | ≤ {T_RATIO} | | | ≤ {T_CALLS} | 0 | 0 | | | ≤ {T_READS} | < {T_EDIT_S} | ≤ {T_RSS_MIB} at 10k | |"
    );
    for f in all {
        let n = f.n.max(1) as f64;
        let rss = f.rss_create_kib.max(f.rss_resync_kib) as f64 / 1024.0;
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.1} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            f.label,
            f.n,
            f.ready_s
                .map_or(format!("> ({}/{})", f.ready_count, f.n), |t| format!(
                    "{t:.1}"
                )),
            f.bound_s,
            f.ready_s.map_or("-".into(), |t| ratio(t, f.bound_s)),
            f.create_calls as f64 / n,
            f.create_min as f64 / n,
            ratio(f.create_calls as f64, f.create_min as f64),
            f.resync_up_writes,
            f.resync_kube_writes,
            f.resync_reads,
            f.resync_pages,
            ratio(f.resync_reads as f64, f.resync_pages as f64),
            f.edit_s.map_or("-".into(), |t| format!("{t:.2}")),
            rss,
            f.cpu_per_noop_us
                .map_or("-".into(), |us| format!("{us:.0}")),
        );
    }
    let _ = write!(
        t,
        "Kubernetes side: in-memory fake apiserver (not a real cluster). calls and reads exclude token exchanges and Connection checks; \
         resync = operator restart (its start-up pass reconciles every converged object); \
         resync figures exclude the calls and writes of the one user edit; bound = minimal create calls / {RPS} rps, max over Connections."
    );
    t
}
