//! The operator's `/metrics` as scraped: state counted from the caches (resources by
//! kind and Ready state, Connections, leadership), an out-of-band change made in the
//! fake upstream counted with its field (corrected, and reported under Observe), the
//! time to Ready; no secret in any of it; and every metric the chart's alert rules and
//! dashboard name exists.

use std::collections::BTreeSet;
use std::time::Duration;

use accessplane::engine::requeue::Timing;
use accessplane::runtime::RunConfig;
use serde_json::{Value, json};

use crate::support::env::{Operator, Seed, Serval, Setup};
use crate::support::fake_kube::FakeKube;

const NS: &str = "team-a";
const API: &str = "accessplane.io/v1alpha1";

type Env = crate::support::env::Env<Serval, Operator>;

async fn scrape(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `series` (its name and labels as printed), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every sample name the exposition can hold: a counter's `_total`, a histogram's
/// `_bucket`/`_sum`/`_count`, a gauge's own name (from the `# TYPE` lines, so families
/// with no sample yet count too).
fn exposed_names(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// The `accessplane_*` metric names a text (PromQL of rules or dashboard) uses.
fn used_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("accessplane_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn profile(name: &str, spec: Value) -> Value {
    json!({"apiVersion": API, "kind": "AccessProfile",
           "metadata": {"name": name, "namespace": NS, "generation": 1},
           "spec": spec})
}

#[tokio::test]
async fn state_drift_and_time_to_ready_are_scraped_and_every_alerted_metric_exists() {
    let mut env: Env = Setup::<Serval>::start()
        .await
        .operator(FakeKube::new(), Seed::Connections(NS))
        .patience(Duration::from_secs(60), Duration::from_millis(100));
    let watched_id = env.up.serval.seed_profile(
        json!({"teamId": "team-1", "name": "Made by hand", "description": "as made"}),
    );
    env.kube.put_object(profile(
        "managed",
        json!({"connectionRef": {"name": "serval"}, "teamId": "team-1", "name": "Managed", "description": "from Git"}),
    ));
    env.kube.put_object(profile(
        "watched",
        json!({"connectionRef": {"name": "serval"}, "teamId": "team-1", "externalId": watched_id,
               "managementPolicy": "Observe", "description": "as made"}),
    ));
    let base = env
        .start_serving(RunConfig {
            namespace: Some(NS.into()),
            timing: Timing {
                resync: Duration::from_secs(1),
                resync_rate: 0.0,
                ..Timing::default()
            },
            ..RunConfig::default()
        })
        .await;
    let ready = |env: &Env, name: &str| {
        let obj = env.kube.get(API, "accessprofiles", NS, name);
        obj.and_then(|o| {
            let conditions = o["status"]["conditions"].as_array()?.clone();
            conditions.into_iter().find(|c| c["type"] == "Ready")
        })
    };
    env.wait("both Ready", |env| {
        for name in ["managed", "watched"] {
            let r = ready(env, name);
            if r.as_ref().map(|r| r["status"].clone()) != Some(json!("True")) {
                return Err(format!("{name}: {r:?}"));
            }
        }
        Ok(())
    })
    .await;
    let metrics = scrape(&base).await;
    let series = r#"accessplane_resources{kind="AccessProfile",ready="True",reason="Available"}"#;
    assert_eq!(sample(&metrics, series), Some(2.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "accessplane_leader"),
        Some(1.0),
        "{metrics}"
    );
    let connections = r#"accessplane_connections{kind="Connection",provider="serval",ready="True",reason="Verified"}"#;
    assert_eq!(sample(&metrics, connections), Some(1.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            r#"accessplane_pending_writes{kind="AccessProfile"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
    let ready_count = r#"accessplane_time_to_ready_seconds_count{kind="AccessProfile"}"#;
    assert_eq!(sample(&metrics, ready_count), Some(2.0), "{metrics}");

    // Someone edits both profiles in Serval's UI.
    let managed_id = env.kube.get(API, "accessprofiles", NS, "managed").unwrap()["status"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let serval = &env.up.serval;
    // And the next List meets a 503 once (a retry, for the throttling panel's series).
    serval.fail_next("GET", "/v2/access-profiles", 503, 1);
    serval.edit_profile(&managed_id, |p| {
        p["description"] = json!("changed in the UI")
    });
    serval.edit_profile(&watched_id, |p| {
        p["description"] = json!("changed in the UI")
    });
    let corrected = r#"accessplane_drift_detected_total{kind="AccessProfile",field="description",action="corrected"}"#;
    let reported = r#"accessplane_drift_detected_total{kind="AccessProfile",field="description",action="reported"}"#;
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = scrape(&base).await;
        if sample(&metrics, corrected).is_some() && sample(&metrics, reported).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sample(&metrics, corrected), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, reported), Some(1.0), "{metrics}");
    // Resyncs that find the same drift again do not count it again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = scrape(&base).await;
    assert_eq!(sample(&metrics, reported), Some(1.0), "{metrics}");
    let drifted = r#"accessplane_resources{kind="AccessProfile",ready="False",reason="Drifted"}"#;
    assert_eq!(sample(&metrics, drifted), Some(1.0), "{metrics}");
    assert!(!metrics.contains("s3cret"), "a credential in the metrics");
    assert!(
        !metrics.contains("changed in the UI"),
        "a field value in the metrics"
    );

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join("charts/accessplane/files/alerts.yaml")).unwrap();
    let dashboard =
        std::fs::read_to_string(root.join("charts/accessplane/files/dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    let exposed = exposed_names(&metrics);
    for (what, text) in [("alerts.yaml", rules), ("dashboard.json", exprs.join("\n"))] {
        let used = used_names(&text);
        assert!(used.len() >= 5, "{what}: {used:?}");
        let missing: Vec<&String> = used.difference(&exposed).collect();
        assert!(
            missing.is_empty(),
            "{what} names metrics the operator does not expose: {missing:?}\nexposed: {exposed:?}"
        );
    }
    env.stop(Duration::from_secs(30)).await;
}

/// Each alert links to a heading of its own in the troubleshooting page (the anchor
/// mdBook gives the heading `### <alert name>`).
#[test]
fn every_alert_links_to_its_troubleshooting_entry() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join("charts/accessplane/files/alerts.yaml")).unwrap();
    let page = std::fs::read_to_string(root.join("docs/src/troubleshooting.md")).unwrap();
    let rules: Value = serde_yaml::from_str(&rules).unwrap();
    let alerts = rules["groups"][0]["rules"].as_array().unwrap();
    assert!(alerts.len() >= 6);
    for rule in alerts {
        let alert = rule["alert"].as_str().unwrap();
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        assert_eq!(url, format!("RUNBOOK_BASE#{}", alert.to_lowercase()));
        assert!(
            page.lines().any(|l| l == format!("### {alert}")),
            "no troubleshooting entry for {alert}"
        );
        for key in ["summary", "description"] {
            assert!(rule["annotations"][key].is_string(), "{alert}: no {key}");
        }
    }
}
