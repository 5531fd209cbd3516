//! Connector end to end: real engine + real ConductorOne client against the fake C1,
//! with the configuration read from a Kubernetes Secret.

use std::sync::Arc;
use std::time::Duration;

use accessplane::api::Connector;
use accessplane::engine::metrics::ReconcileMetrics;
use accessplane::engine::requeue::Timing;
use accessplane::engine::{Engine, reconcile};
use accessplane::providers::conductorone::ConnectorProvider;
use serde_json::{Value, json};

use crate::support::env::{self, C1, Passes};
use crate::support::fake_http::{Fault, FaultMatch};
use crate::support::harness::{NS, capture_trace_text};

const CONFIG_SECRET: &str = "github-connector-config";
const TOKEN: &str = "SENTINEL-connector-token-71c2";
const ROTATED_TOKEN: &str = "SENTINEL-connector-token-rotated-9d04";

type Env = env::Env<C1, Passes<Connector, ConnectorProvider>>;

impl Env {
    async fn put_config(&self, token: &str) {
        self.h()
            .put_secret(CONFIG_SECRET, json!({"token": token, "orgs": "acme"}))
            .await;
    }

    fn masks(&self) -> Vec<String> {
        self.up.c1.update_masks()
    }

    /// `needle` is in no Connector (status included) and no Event.
    fn assert_not_in_objects_or_events(&self, needle: &str) {
        let kube = &self.kube;
        let connectors = kube.list("accessplane.io/v1alpha1", "connectors", None);
        for obj in connectors.into_iter().chain(kube.events(NS)) {
            assert!(!obj.to_string().contains(needle), "config value in {obj}");
        }
    }
}

/// A connector the operator creates, configured from the Secret.
fn spec() -> Value {
    json!({
        "catalogId": "catalog-github",
        "displayName": "GitHub",
        "description": "GitHub organisation acme",
        "userIds": ["u-1", "u-2"],
        "configSecretRef": {"name": CONFIG_SECRET},
    })
}

fn expected_config(token: &str) -> Value {
    json!({"@type": "type.googleapis.com/c1.api.app.v1.EnvConfig", "configuration": {
        "orgs": {"stringValue": "acme"}, "token": {"stringValue": token}}})
}

/// Created and configured: `Ready`, the id recorded, the config sent once.
async fn created(name: &str) -> Env {
    let env = Env::new().await;
    env.put_config(TOKEN).await;
    env.apply(name, spec()).await;
    env.settle(name).await;
    assert_eq!(env.ready(name).0, "True", "{:?}", env.ready(name));
    env
}

#[tokio::test]
async fn create_sends_the_config_in_a_follow_up_update() {
    let env = created("github").await;
    let id = env.id("github");
    let create = env
        .up
        .c1
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/connectors"))
        .unwrap();
    assert_eq!(
        create.body.unwrap(),
        json!({"catalogId": "catalog-github", "displayName": "GitHub",
               "description": "GitHub organisation acme", "userIds": ["u-1", "u-2"]})
    );
    assert_eq!(env.masks(), vec!["config"]);
    assert_eq!(
        env.up.c1.connector_config(&id),
        Some(expected_config(TOKEN))
    );
    let hash = env.status("github")["configHash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(hash.len(), 64, "hex SHA-256");

    // Converged: a resync only reads.
    env.up.c1.clear_requests();
    env.pass("github").await;
    assert_eq!(env.up.c1.writes(), 0);
    assert_eq!(env.status("github")["configHash"], hash.as_str());
}

#[tokio::test]
async fn rotated_secret_resends_the_config_exactly_once() {
    let env = created("github").await;
    let id = env.id("github");
    let hash = env.status("github")["configHash"].clone();
    env.put_config(ROTATED_TOKEN).await;
    env.settle("github").await;
    env.pass("github").await;

    assert_eq!(env.masks(), vec!["config", "config"], "one more update");
    assert_eq!(env.up.c1.config_updates(), 2);
    assert_eq!(
        env.up.c1.connector_config(&id),
        Some(expected_config(ROTATED_TOKEN))
    );
    assert_ne!(env.status("github")["configHash"], hash);
    assert_eq!(env.ready("github").0, "True");
}

/// A Secret change that arrives while a pass runs (the watcher asks for a recheck) is not
/// lost: that pass may have read the old content, so although it ends converged, the next
/// pass looks again instead of taking it for the echo of a converged one.
#[tokio::test]
async fn a_secret_change_during_a_pass_is_not_lost() {
    let env = created("github").await;
    let id = env.id("github");
    let h = env.h();
    // An engine that, like the operator's, skips passes right after a converged one.
    let engine = Arc::new(Engine::new(
        h.client(),
        ConnectorProvider,
        h.engine.connections.clone(),
        h.publisher(),
        h.clock.clone(),
        Timing {
            converged_quiet: Duration::from_secs(60),
            ..h.engine.timing.clone()
        },
        ReconcileMetrics::default(),
    ));
    // A resync pass that reads the upstream slowly, while the Secret changes.
    let path = format!("/api/v1/apps/{}/connectors/{id}", env.up.app);
    env.up.c1.push_fault(
        FaultMatch::new("GET", &path),
        Fault::Latency(Duration::from_secs(1)),
    );
    let api: kube::Api<Connector> = kube::Api::namespaced(h.client(), NS);
    let obj = api.get("github").await.unwrap();
    let pass = tokio::spawn(reconcile(Arc::new(obj.clone()), engine.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.put_config(ROTATED_TOKEN).await;
    engine.recheck(&obj);
    pass.await.unwrap().unwrap();
    assert_eq!(
        env.up.c1.connector_config(&id),
        Some(expected_config(TOKEN)),
        "the running pass had read the old content"
    );

    h.pass(&engine, "github").await;
    assert_eq!(
        env.up.c1.connector_config(&id),
        Some(expected_config(ROTATED_TOKEN))
    );
}

/// An upstream that echoes the config it rejected (in a 400, or in a 503 that is retried)
/// gets the Secret's values replaced before the error is logged, put in status or in an
/// Event.
#[tokio::test]
async fn config_values_echoed_in_upstream_errors_are_redacted() {
    let env = created("github").await;
    let id = env.id("github");
    let (logs, _capture) = capture_trace_text();
    let path = format!("/api/v1/apps/{}/connectors/{id}", env.up.app);
    for code in [503, 400] {
        let message = format!("config rejected: token {ROTATED_TOKEN} is not valid");
        env.up.c1.push_fault(
            FaultMatch::new("POST", &path),
            Fault::Status {
                code,
                retry_after: None,
                retry_after_ms: None,
                body: Some(json!({"code": 3, "message": message, "details": []})),
            },
        );
    }
    env.put_config(ROTATED_TOKEN).await;
    env.settle("github").await;

    let (status, reason, message) = env.h().condition_of("connectors", "github", "Synced");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TerminalError")
    );
    assert!(
        message.contains("token [redacted] is not valid"),
        "{message}"
    );
    let text = logs.text();
    assert!(text.contains("[redacted]"), "the retried 503 was logged");
    assert!(!text.contains(ROTATED_TOKEN), "config value in logs");
    env.assert_not_in_objects_or_events(ROTATED_TOKEN);
}

#[tokio::test]
async fn drifted_display_name_is_corrected_alone() {
    let env = created("github").await;
    let id = env.id("github");
    env.up.c1.edit_connector(&id, |c| {
        c["displayName"] = json!("renamed in the UI");
        c["profileIgnoreList"] = json!(["unmanaged"]);
    });
    env.settle("github").await;

    assert_eq!(env.masks(), vec!["config", "displayName"]);
    let upstream = env.up.c1.connector(&id).unwrap();
    assert_eq!(upstream["displayName"], "GitHub");
    assert_eq!(
        upstream["profileIgnoreList"],
        json!(["unmanaged"]),
        "unmanaged fields are left alone"
    );
}

#[tokio::test]
async fn reordered_user_ids_are_no_drift() {
    let env = created("github").await;
    let id = env.id("github");
    env.up
        .c1
        .edit_connector(&id, |c| c["userIds"] = json!(["u-2", "u-1"]));
    env.up.c1.clear_requests();
    env.settle("github").await;
    assert_eq!(env.up.c1.writes(), 0);
    assert_eq!(env.ready("github").0, "True");
}

#[tokio::test]
async fn adopted_connector_is_updated_and_orphaned() {
    let env = Env::new().await;
    let id = env.up.c1.seed_connector(&env.up.app, "Okta");
    env.apply(
        "okta",
        json!({"externalId": id, "description": "Managed in Git", "profileAllowList": ["p-1"]}),
    )
    .await;
    env.settle("okta").await;
    assert_eq!(env.ready("okta").0, "True", "{:?}", env.ready("okta"));
    assert_eq!(env.masks(), vec!["description,profileAllowList"]);
    assert_eq!(
        env.up
            .c1
            .count("POST", &format!("/api/v1/apps/{}/connectors", env.up.app)),
        1,
        "one update, no create"
    );

    env.delete("okta").await;
    env.settle("okta").await;
    assert!(env.h().get("connectors", "okta").is_none());
    assert!(
        env.up.c1.connector(&id).unwrap()["deletedAt"].is_null(),
        "orphaned"
    );
}

#[tokio::test]
async fn created_connector_is_deleted_upstream() {
    let env = created("github").await;
    let id = env.id("github");
    // The Secret often goes with the resource (`kubectl delete -f`): deletion needs no config.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.h().client(), NS);
    secrets
        .delete(CONFIG_SECRET, &Default::default())
        .await
        .unwrap();
    env.delete("github").await;
    env.settle("github").await;
    assert!(env.h().get("connectors", "github").is_none());
    assert!(
        env.up.c1.connector(&id).unwrap()["deletedAt"].is_string(),
        "deleted upstream"
    );
}

#[tokio::test]
async fn observe_reports_drift_without_writes_or_a_config_hash() {
    let env = Env::new().await;
    env.put_config(TOKEN).await;
    let id = env.up.c1.seed_connector(&env.up.app, "Okta");
    env.apply(
        "okta",
        json!({"externalId": id, "managementPolicy": "Observe", "displayName": "Okta prod",
               "configSecretRef": {"name": CONFIG_SECRET}}),
    )
    .await;
    env.settle("okta").await;
    let (status, reason, message) = env.ready("okta");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Drifted"));
    assert!(
        message.contains("displayName") && message.contains("config"),
        "{message}"
    );
    assert_eq!(env.up.c1.writes(), 0);
    assert!(
        env.status("okta").get("configHash").is_none(),
        "never claims a config it did not send"
    );
}

#[tokio::test]
async fn sync_status_is_surfaced() {
    let env = created("github").await;
    let id = env.id("github");
    assert_eq!(
        env.status("github")["syncStatus"],
        "SYNC_STATUS_UNSPECIFIED"
    );
    assert!(env.status("github").get("lastError").is_none());

    env.up
        .c1
        .set_connector_sync(&id, "SYNC_STATUS_ERROR", "401 from GitHub");
    env.pass("github").await;
    assert_eq!(env.status("github")["syncStatus"], "SYNC_STATUS_ERROR");
    assert_eq!(env.status("github")["lastError"], "401 from GitHub");

    env.up.c1.set_connector_sync(&id, "SYNC_STATUS_DONE", "");
    env.pass("github").await;
    assert_eq!(env.status("github")["syncStatus"], "SYNC_STATUS_DONE");
    assert!(env.status("github").get("lastError").is_none());
}

#[tokio::test]
async fn missing_config_secret_waits_for_it() {
    let env = Env::new().await;
    env.apply("github", spec()).await;
    env.settle("github").await;
    let (status, reason, message) = env.ready("github");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "WaitingForDependency")
    );
    assert_eq!(
        message,
        format!("Secret {NS}/{CONFIG_SECRET} (spec.configSecretRef) does not exist")
    );
    assert_eq!(env.up.c1.writes(), 0, "nothing created without its config");

    env.put_config(TOKEN).await;
    env.settle("github").await;
    assert_eq!(env.ready("github").0, "True");
    assert_eq!(env.masks(), vec!["config"]);
}

#[tokio::test]
async fn lost_create_is_recovered_by_display_name() {
    let env = Env::new().await;
    env.put_config(TOKEN).await;
    env.up.c1.push_fault(
        FaultMatch::new("POST", &format!("/api/v1/apps/{}/connectors", env.up.app)),
        Fault::ApplyThenDropConnection,
    );
    env.apply("github", spec()).await;
    env.settle("github").await;
    let live: Vec<Value> = env
        .up
        .c1
        .connectors(&env.up.app)
        .into_iter()
        .filter(|c| c["deletedAt"].is_null())
        .collect();
    assert_eq!(live.len(), 1, "exactly one created: {live:?}");
    assert_eq!(env.ready("github").0, "True");
    assert_eq!(
        env.masks(),
        vec!["config"],
        "the recovered connector is configured"
    );
}

#[tokio::test]
async fn lost_create_with_namesakes_is_ambiguous() {
    let env = Env::new().await;
    env.put_config(TOKEN).await;
    env.up.c1.push_fault(
        FaultMatch::new("POST", &format!("/api/v1/apps/{}/connectors", env.up.app)),
        Fault::ApplyThenDropConnection,
    );
    // Connectors carry no annotations: a namesake from the same catalog entry is
    // indistinguishable from the one the lost create made.
    env.up.c1.seed_connector(&env.up.app, "GitHub");
    env.apply(
        "github",
        json!({"catalogId": "catalog-seeded", "displayName": "GitHub"}),
    )
    .await;
    env.settle("github").await;
    let (status, reason, _) = env.h().condition_of("connectors", "github", "Synced");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CreateAmbiguous")
    );
}

#[tokio::test]
async fn config_values_never_reach_logs_status_or_events() {
    let (logs, _capture) = capture_trace_text();

    let env = created("github").await;
    env.put_config(ROTATED_TOKEN).await;
    env.settle("github").await;
    // A rejected config update: the error reaches status and events, the values must not.
    env.up.c1.fail_next("POST", "/api/v1/apps", 400, 1);
    env.put_config(TOKEN).await;
    env.settle("github").await;

    let text = logs.text();
    assert!(text.contains("github"), "logs were captured");
    for needle in [TOKEN, ROTATED_TOKEN] {
        assert!(!text.contains(needle), "config value in logs");
        env.assert_not_in_objects_or_events(needle);
    }
}

/// Under the least-privilege install (`--secrets-scope credentials-namespace`) the
/// apiserver refuses the config Secret's read: the Connector says why instead of
/// retrying a 403 as a passing fault, and nothing is created.
#[tokio::test]
async fn a_config_secret_the_operator_may_not_read_is_named_with_why() {
    let env = Env::new().await;
    env.put_config(TOKEN).await;
    env.apply("github", spec()).await;
    env.run
        .h
        .kube
        .fail_next("GET", &format!("/secrets/{CONFIG_SECRET}"), 403, 100);
    env.settle("github").await;
    let (status, reason, message) = env.ready("github");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "WaitingForDependency")
    );
    assert!(
        message.contains(&format!(
            "Secret {NS}/{CONFIG_SECRET} (spec.configSecretRef) cannot be read"
        )) && message.contains("secrets scope credentialsNamespace"),
        "{message}"
    );
    assert_eq!(env.up.c1.writes(), 0, "nothing created without its config");
}
