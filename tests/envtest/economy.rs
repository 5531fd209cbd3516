//! Real-apiserver tier: what the operator costs the Kubernetes API, counted from the
//! apiserver's audit log (one event per request, with the requesting user). The operator
//! runs as the chart's ServiceAccount on an apiserver of its own; N mixed resources are
//! created in one `kubectl create`, then the cluster is left quiet for two resync
//! intervals. Prints the requests per object by verb and resource (docs/src/performance.md)
//! and holds the bounds the operator meets, so a regression fails here.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::admission::{install_crds, namespace};
use crate::rbac::{chart_rbac, run_as_service_account};
use crate::support::envtest::{Envtest, dedicated_envtest, exclusive};
use crate::support::fake_c1::{FakeC1, test_credentials};
use crate::support::fake_instaclustr::FakeInstaclustr;
use crate::support::fake_serval::FakeServal;

const API: &str = "accessplane.io/v1alpha1";
const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";
/// (kind, plural, count): N = 200, mixed as in issue #16's measurement.
const MIX: [(&str, &str, usize); 3] = [
    ("AccessProfile", "accessprofiles", 80),
    ("AppEntitlement", "appentitlements", 60),
    ("PersonaAccessControl", "personaaccesscontrols", 60),
];
/// The operator's resync interval here (the CLI's minimum).
const RESYNC: Duration = Duration::from_secs(10);

/// `verb resource[/subresource]` → count, for the requests of `user` received in
/// `[from, to)` (RFC 3339 strings compare in time order at equal precision).
fn requests(env: &Envtest, user: &str, from: &str, to: &str) -> BTreeMap<String, usize> {
    let mut seen = HashSet::new();
    let mut counts = BTreeMap::new();
    for e in env.audit_events() {
        let at = e["requestReceivedTimestamp"].as_str().unwrap_or_default();
        if e["user"]["username"] != user || at < from || at >= to {
            continue;
        }
        if !seen.insert(e["auditID"].as_str().unwrap_or_default().to_string()) {
            continue; // a watch logs ResponseStarted and ResponseComplete
        }
        let r = &e["objectRef"];
        let mut resource = r["resource"].as_str().unwrap_or("-").to_string();
        if let Some(sub) = r["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        *counts
            .entry(format!("{} {resource}", e["verb"].as_str().unwrap_or("?")))
            .or_default() += 1;
    }
    counts
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

fn is_write(key: &str) -> bool {
    ["create ", "update ", "patch ", "delete "]
        .iter()
        .any(|v| key.starts_with(v))
}

fn ready_count(env: &Envtest, ns: &str) -> usize {
    let mut ready = 0;
    for (_, plural, _) in MIX {
        let out = env.kubectl_ok(&["get", plural, "-n", ns, "-o", "json"], None);
        let list: Value = serde_json::from_str(&out).unwrap();
        ready += list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| {
                o["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter().any(|c| {
                        c["type"] == "Ready"
                            && c["status"] == "True"
                            && c["observedGeneration"] == o["metadata"]["generation"]
                    })
                })
            })
            .count();
    }
    ready
}

/// How many objects a request key is about: its kind's count, or all N.
fn objects_of(key: &str, n: usize) -> (usize, &'static str) {
    let resource = key.split(' ').nth(1).and_then(|r| r.split('/').next());
    MIX.iter()
        .find(|(_, plural, _)| resource == Some(*plural))
        .map(|(kind, _, count)| (*count, *kind))
        .unwrap_or((n, "object"))
}

/// Requests per created object: per object of its kind for the kinds' own resources.
fn per_object(counts: &BTreeMap<String, usize>, key: &str, n: usize) -> f64 {
    *counts.get(key).unwrap_or(&0) as f64 / objects_of(key, n).0 as f64
}

fn table(title: &str, counts: &BTreeMap<String, usize>, n: usize) -> String {
    let mut out = format!("{title} (N = {n}):\n");
    for (key, count) in counts {
        let (of, kind) = objects_of(key, n);
        let per = *count as f64 / of as f64;
        out += &format!("  {key:<40} {count:>6}  {per:>5.2} per {kind}\n");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_requests_per_object_for_a_burst_of_creates_and_a_quiet_resync() {
    let _exclusive = exclusive().await;
    let Some(env) = dedicated_envtest() else {
        return;
    };
    if env.helm_binary().is_none() {
        return;
    }
    install_crds(&env);
    let system = namespace(&env, "accessplane-system");
    let ns = namespace(&env, "economy");
    env.kubectl_ok(&["apply", "-f", "-"], Some(&chart_rbac(&env, &system, &[])));

    let serval = FakeServal::start().await;
    serval.add_client("economy", "economy-secret");
    let c1 = FakeC1::start().await;
    let (c1_id, c1_secret, c1_public) = test_credentials(&c1.host());
    c1.add_client(&c1_id, c1_public, &c1_secret);
    let app = c1.seed_app();
    let ic = FakeInstaclustr::start().await;
    ic.add_account("economy", "economy-key");
    ic.add_virtual_server("gw-economy", VS);
    ic.set_visibility_delay(Duration::from_secs(1));

    let mut docs = vec![];
    for (name, data, spec) in [
        (
            "serval",
            json!({"clientId": "economy", "clientSecret": "economy-secret"}),
            json!({"serval": {"baseUrl": serval.base_url()}}),
        ),
        (
            "c1",
            json!({"clientId": c1_id, "clientSecret": c1_secret}),
            json!({"conductorOne": {"serverUrl": c1.base_url()}}),
        ),
        (
            "instaclustr",
            json!({"username": "economy", "apiKey": "economy-key"}),
            json!({"instaclustr": {"baseUrl": ic.base_url()}}),
        ),
    ] {
        let mut spec = spec;
        let field = spec.as_object().unwrap().keys().next().unwrap().clone();
        spec[&field]["credentialsSecretRef"] = json!({"name": name});
        docs.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}));
        docs.push(json!({"apiVersion": API, "kind": "Connection", "metadata": {"name": name}, "spec": spec}));
    }
    let mut operator = run_as_service_account(&env, &system, &[]).await;
    let user = format!("system:serviceaccount:{system}:accessplane");
    let stream = |docs: &[Value]| -> String {
        docs.iter()
            .map(|d| {
                let mut d = d.clone();
                d["metadata"]["namespace"] = json!(ns);
                d.to_string() + "\n"
            })
            .collect()
    };
    env.kubectl_ok(&["create", "-f", "-"], Some(&stream(&docs)));
    // Connections verified before the burst, so the window counts the resources only.
    for _ in 0..120 {
        let out = env.kubectl_ok(
            &[
                "get",
                "connections",
                "-n",
                &ns,
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
            ],
            None,
        );
        if out.split_whitespace().filter(|s| *s == "True").count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut resources = vec![];
    let max = MIX.iter().map(|m| m.2).max().unwrap();
    for i in 0..max {
        for (kind, _, count) in MIX {
            if i >= count {
                continue;
            }
            let spec = match kind {
                "AccessProfile" => {
                    json!({"connectionRef": {"name": "serval"}, "teamId": "team-economy", "name": format!("Economy profile {i}")})
                }
                "AppEntitlement" => {
                    json!({"connectionRef": {"name": "c1"}, "appId": app, "displayName": format!("Economy entitlement {i}"), "alias": format!("economy-{i}")})
                }
                _ => {
                    json!({"connectionRef": {"name": "instaclustr"}, "clusterId": "gw-economy", "virtualServerId": VS, "personaRole": format!("persona-{i}"), "type": "ALLOWLIST", "tools": []})
                }
            };
            resources.push(json!({"apiVersion": API, "kind": kind,
                "metadata": {"name": format!("{}-{i:04}", kind.to_lowercase())}, "spec": spec}));
        }
    }
    let n = resources.len();
    let from = now();
    let started = Instant::now();
    env.kubectl_ok(&["create", "-f", "-"], Some(&stream(&resources)));
    let created = started.elapsed();
    loop {
        if ready_count(&env, &ns) == n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "not all Ready:\n{}",
            operator.log()
        );
        assert!(
            matches!(operator.child.try_wait(), Ok(None)),
            "{}",
            operator.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_ready = started.elapsed();
    // Late writes of the burst (e.g. an Event) land before the window closes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let burst_end = now();
    tokio::time::sleep(RESYNC * 2).await;
    let quiet_end = now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let burst = requests(&env, &user, &from, &burst_end);
    let quiet = requests(&env, &user, &burst_end, &quiet_end);
    eprintln!(
        "{}{}created by kubectl in {created:.1?}, all Ready after {all_ready:.1?}",
        table("operator requests while creating", &burst, n),
        table(
            &format!(
                "operator requests in a quiet {:?} (two resyncs)",
                RESYNC * 2
            ),
            &quiet,
            n
        ),
    );

    let writes: usize = burst
        .iter()
        .filter(|(k, _)| is_write(k))
        .map(|(_, c)| c)
        .sum();
    // One metadata write per created object (finalizer and create mark together), status
    // once per visible transition (PersonaAccessControl: Pending, then Ready), one Event.
    for (kind, plural, _) in MIX {
        let status = per_object(&burst, &format!("patch {plural}/status"), n);
        let limit = if kind == "PersonaAccessControl" {
            2.2
        } else {
            1.1
        };
        assert!(
            status <= limit,
            "{kind}: status patches per object {status:.2}"
        );
        let metadata = per_object(&burst, &format!("patch {plural}"), n);
        assert!(
            metadata <= 1.0,
            "{kind}: metadata patches per object {metadata:.2}"
        );
    }
    assert!(
        per_object(&burst, "create events", n) <= 1.05,
        "events per object"
    );
    assert!(
        writes as f64 / n as f64 <= 3.5,
        "writes per object: {writes}"
    );
    // A quiet resync writes nothing to the apiserver (it re-reads the Connections' Secrets).
    let quiet_writes: Vec<_> = quiet.iter().filter(|(k, _)| is_write(k)).collect();
    assert!(
        quiet_writes.is_empty(),
        "writes during a quiet resync: {quiet_writes:?}"
    );
    assert!(ic.control(&format!("{VS}_persona-0")).is_some());
}
