//! No credential and no connector-config value ever leaves its Secret: a workload with
//! faults, auth failures and rotations across every upstream, then a scan of the text
//! and JSON logs (TRACE), every object and Event in the apiserver except the Secrets,
//! and the Prometheus metrics. Also: references never cross namespaces.

use std::sync::Arc;
use std::time::Duration;

use accessplane::api::{AccessProfile, Connection, Connector, PersonaAccessControl};
use accessplane::connections::controller;
use accessplane::engine::reconcile;
use accessplane::providers::conductorone::ConnectorProvider;
use accessplane::providers::instaclustr::PersonaAccessControlProvider;
use accessplane::runtime::telemetry::json_layer;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;

use crate::support::fake_c1::{FakeC1, test_credentials};
use crate::support::fake_instaclustr::FakeInstaclustr;
use crate::support::fake_serval::PROFILES_PATH;
use crate::support::harness::{
    CLIENT_ID, CLIENT_SECRET, CapturedLogs, Harness, NS, TEAM, capture_logs, condition,
};

const SERVAL_ROTATED: &str = "SENTINEL-serval-rotated-5be1";
const SERVAL_WRONG: &str = "SENTINEL-serval-wrong-77aa";
const BEARER_WRONG: &str = "SENTINEL-serval-bad-bearer-0c3d";
const C1_GARBAGE: &str = "SENTINEL-c1-garbage-8e12";
const CONFIG_TOKEN: &str = "SENTINEL-c1-config-token-71c2";
const CONFIG_ROTATED: &str = "SENTINEL-c1-config-rotated-9d04";
const CONFIG_OTHER: &str = "SENTINEL-c1-config-webhook-2b7f";
const IC_KEY: &str = "SENTINEL-ic-api-key-4e21";
const IC_ROTATED: &str = "SENTINEL-ic-rotated-9f10";
const IC_WRONG: &str = "SENTINEL-ic-wrong-3a3a";
const OTHER_NS_SECRET: &str = "SENTINEL-other-namespace-secret-61b0";
const OTHER: &str = "other-team";

const CLUSTER: &str = "gw-1";
const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";

/// A ConductorOne client secret and the private key inside it.
pub(crate) fn c1_sentinels(secret: &str) -> Vec<String> {
    let b64 = secret.rsplit(':').next().unwrap();
    let jwk: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .unwrap(),
    )
    .unwrap();
    vec![secret.to_string(), jwk["d"].as_str().unwrap().to_string()]
}

async fn put_secret_in(h: &Harness, ns: &str, name: &str, data: Value) {
    let api: Api<Secret> = Api::namespaced(h.client(), ns);
    let secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, "stringData": data})).unwrap();
    api.create(&PostParams::default(), &secret).await.unwrap();
}

async fn reconcile_connection_in(h: &Harness, ns: &str, name: &str) -> (String, String) {
    let api: Api<Connection> = Api::namespaced(h.client(), ns);
    let obj = api.get(name).await.unwrap();
    controller::reconcile(Arc::new(obj), h.conn_cx.clone())
        .await
        .unwrap();
    let obj = h
        .kube
        .get("accessplane.io/v1alpha1", "connections", ns, name)
        .unwrap();
    let ready = condition(&obj, "Ready").unwrap();
    (
        ready["status"].as_str().unwrap().into(),
        ready["reason"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn secrets_never_leak_and_references_stay_in_their_namespace() {
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
    let _capture = capture_logs(subscriber);

    let mut sentinels: Vec<String> = [
        CLIENT_SECRET,
        SERVAL_ROTATED,
        SERVAL_WRONG,
        BEARER_WRONG,
        C1_GARBAGE,
        CONFIG_TOKEN,
        CONFIG_ROTATED,
        CONFIG_OTHER,
        IC_KEY,
        IC_ROTATED,
        IC_WRONG,
        OTHER_NS_SECRET,
    ]
    .map(String::from)
    .to_vec();

    // --- Serval, client credentials: create, 5xx, 401 (API and token endpoint), rotation.
    let h = Harness::new().await;
    h.apply_profile("oncall", json!({"name": "Payments on-call"}))
        .await;
    h.settle("oncall", 4).await;
    assert_eq!(h.cond("oncall", "Ready").0, "True");
    h.serval.fail_next("GET", PROFILES_PATH, 500, 1);
    h.reconcile("oncall").await;
    h.serval.revoke_tokens();
    h.serval.fail_next("GET", PROFILES_PATH, 401, 1);
    h.reconcile("oncall").await;
    h.serval.revoke_tokens();
    h.serval.fail_next("POST", "/v2/auth/token", 401, 1);
    h.edit_profile_spec("oncall", json!({"description": "changed"}))
        .await;
    h.reconcile("oncall").await;
    h.serval.add_client(CLIENT_ID, SERVAL_ROTATED);
    h.put_secret(
        "serval-credentials",
        json!({"clientId": CLIENT_ID, "clientSecret": SERVAL_ROTATED}),
    )
    .await;
    h.reconcile_connection("serval").await;
    assert_eq!(h.connection_ready("serval").1, "Verified");
    h.settle("oncall", 3).await;
    // A wrong secret: AuthenticationFailed, named but never echoed.
    h.put_secret(
        "serval-wrong",
        json!({"clientId": CLIENT_ID, "clientSecret": SERVAL_WRONG}),
    )
    .await;
    h.apply_connection("serval-wrong", json!({"serval": {"baseUrl": h.serval.base_url(), "credentialsSecretRef": {"name": "serval-wrong"}}}))
        .await;
    h.reconcile_connection("serval-wrong").await;
    assert_eq!(h.connection_ready("serval-wrong").1, "AuthenticationFailed");

    // --- Serval, bearer token (and a refused one).
    let bearer = h.serval.issue_bearer_token();
    sentinels.push(bearer.clone());
    h.put_secret("serval-bearer", json!({"bearerToken": bearer}))
        .await;
    h.apply_connection("serval-bearer", json!({"serval": {"baseUrl": h.serval.base_url(), "credentialsSecretRef": {"name": "serval-bearer"}}}))
        .await;
    h.reconcile_connection("serval-bearer").await;
    assert_eq!(h.connection_ready("serval-bearer").1, "Verified");
    h.apply_profile(
        "bearer",
        json!({"connectionRef": {"name": "serval-bearer"}, "name": "Bearer profile"}),
    )
    .await;
    h.settle("bearer", 4).await;
    assert_eq!(h.cond("bearer", "Ready").0, "True");
    h.serval.fail_next("GET", PROFILES_PATH, 503, 1);
    h.reconcile("bearer").await;
    h.put_secret("serval-bad-bearer", json!({"bearerToken": BEARER_WRONG}))
        .await;
    h.apply_connection("serval-bad-bearer", json!({"serval": {"baseUrl": h.serval.base_url(), "credentialsSecretRef": {"name": "serval-bad-bearer"}}}))
        .await;
    h.reconcile_connection("serval-bad-bearer").await;
    assert_eq!(
        h.connection_ready("serval-bad-bearer").1,
        "AuthenticationFailed"
    );

    // --- ConductorOne: signed client assertion, a Connector configured from a Secret.
    let c1 = FakeC1::start().await;
    let (client_id, c1_secret, public) = test_credentials(&c1.host());
    sentinels.extend(c1_sentinels(&c1_secret));
    c1.add_client(&client_id, public, &c1_secret);
    h.put_secret(
        "c1-credentials",
        json!({"clientId": client_id, "clientSecret": c1_secret}),
    )
    .await;
    h.apply_connection("c1", json!({"conductorOne": {"serverUrl": c1.base_url(), "credentialsSecretRef": {"name": "c1-credentials"}}}))
        .await;
    h.reconcile_connection("c1").await;
    assert_eq!(h.connection_ready("c1").1, "Verified");
    let app = c1.seed_app();
    h.put_secret(
        "github-config",
        json!({"token": CONFIG_TOKEN, "webhookSecret": CONFIG_OTHER}),
    )
    .await;
    let connectors = h.engine(ConnectorProvider);
    h.create::<Connector>(json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "Connector", "metadata": {"name": "github"},
        "spec": {"connectionRef": {"name": "c1"}, "appId": app, "catalogId": "catalog-github", "displayName": "GitHub",
                 "configSecretRef": {"name": "github-config"}}}))
        .await;
    h.settle_kind(&connectors, "github", 5).await;
    assert_eq!(h.condition_of("connectors", "github", "Ready").0, "True");
    // Config rotation refused (400), retried after 5xx, then accepted.
    h.put_secret(
        "github-config",
        json!({"token": CONFIG_ROTATED, "webhookSecret": CONFIG_OTHER}),
    )
    .await;
    c1.fail_next("POST", "/api/v1/apps", 400, 1);
    h.settle_kind(&connectors, "github", 3).await;
    assert_eq!(
        h.condition_of("connectors", "github", "Synced").1,
        "TerminalError"
    );
    h.advance(Duration::from_secs(16 * 60));
    c1.fail_next("POST", "/api/v1/apps", 503, 1);
    h.pass(&connectors, "github").await;
    h.settle_kind(&connectors, "github", 4).await;
    // Revoked tokens: refreshed with a new assertion.
    c1.revoke_tokens();
    h.advance(Duration::from_secs(16 * 60));
    h.settle_kind(&connectors, "github", 3).await;
    // Credential rotation, and a malformed and an unknown secret.
    let (_, rotated, rotated_public) = test_credentials(&c1.host());
    sentinels.extend(c1_sentinels(&rotated));
    c1.add_client(&client_id, rotated_public, &rotated);
    h.put_secret(
        "c1-credentials",
        json!({"clientId": client_id, "clientSecret": rotated}),
    )
    .await;
    h.reconcile_connection("c1").await;
    assert_eq!(h.connection_ready("c1").1, "Verified");
    h.put_secret(
        "c1-bad",
        json!({"clientId": client_id, "clientSecret": C1_GARBAGE}),
    )
    .await;
    h.apply_connection("c1-bad", json!({"conductorOne": {"serverUrl": c1.base_url(), "credentialsSecretRef": {"name": "c1-bad"}}}))
        .await;
    h.reconcile_connection("c1-bad").await;
    assert_eq!(h.connection_ready("c1-bad").1, "SecretKeyInvalid");
    let (_, unknown, _) = test_credentials(&c1.host());
    sentinels.extend(c1_sentinels(&unknown));
    h.put_secret(
        "c1-unknown",
        json!({"clientId": client_id, "clientSecret": unknown}),
    )
    .await;
    h.apply_connection("c1-unknown", json!({"conductorOne": {"serverUrl": c1.base_url(), "credentialsSecretRef": {"name": "c1-unknown"}}}))
        .await;
    h.reconcile_connection("c1-unknown").await;
    assert_eq!(h.connection_ready("c1-unknown").1, "AuthenticationFailed");
    // Deleting the connector sends nothing secret either.
    Api::<Connector>::namespaced(h.client(), NS)
        .delete("github", &Default::default())
        .await
        .unwrap();
    h.settle_kind(&connectors, "github", 3).await;
    assert!(h.get("connectors", "github").is_none());

    // --- Instaclustr: API key, 5xx, wrong key, rotation.
    let ic = FakeInstaclustr::start().await;
    ic.add_account("ops", IC_KEY);
    ic.add_virtual_server(CLUSTER, VS);
    h.put_secret("ic", json!({"username": "ops", "apiKey": IC_KEY}))
        .await;
    h.apply_connection(
        "ic",
        json!({"instaclustr": {"baseUrl": ic.base_url(), "credentialsSecretRef": {"name": "ic"}}}),
    )
    .await;
    h.reconcile_connection("ic").await;
    assert_eq!(h.connection_ready("ic").1, "Verified");
    let personas = h.engine(PersonaAccessControlProvider::default());
    h.create::<PersonaAccessControl>(json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "PersonaAccessControl", "metadata": {"name": "analysts"},
        "spec": {"connectionRef": {"name": "ic"}, "clusterId": CLUSTER, "virtualServerId": VS, "personaRole": "analyst", "type": "ALLOWLIST", "tools": []}}))
        .await;
    for _ in 0..10 {
        h.pass(&personas, "analysts").await;
        if h.condition_of("personaaccesscontrols", "analysts", "Ready")
            .0
            == "True"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(450)).await;
    }
    assert_eq!(
        h.condition_of("personaaccesscontrols", "analysts", "Ready")
            .0,
        "True"
    );
    ic.fail_next("GET", "/", 503, 1);
    h.pass(&personas, "analysts").await;
    ic.fail_next("GET", "/", 401, 1);
    tokio::time::sleep(Duration::from_millis(450)).await;
    h.pass(&personas, "analysts").await;
    h.put_secret("ic-wrong", json!({"username": "ops", "apiKey": IC_WRONG}))
        .await;
    h.apply_connection("ic-wrong", json!({"instaclustr": {"baseUrl": ic.base_url(), "credentialsSecretRef": {"name": "ic-wrong"}}}))
        .await;
    h.reconcile_connection("ic-wrong").await;
    assert_eq!(h.connection_ready("ic-wrong").1, "AuthenticationFailed");
    ic.add_account("ops", IC_ROTATED);
    h.put_secret("ic", json!({"username": "ops", "apiKey": IC_ROTATED}))
        .await;
    h.reconcile_connection("ic").await;
    assert_eq!(h.connection_ready("ic").1, "Verified");
    tokio::time::sleep(Duration::from_millis(450)).await;
    h.pass(&personas, "analysts").await;

    // --- Namespaces: a Connection is not resolvable from another namespace ...
    let profiles_b: Api<AccessProfile> = Api::namespaced(h.client(), OTHER);
    let intruder: AccessProfile = serde_json::from_value(
        json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
        "metadata": {"name": "intruder", "namespace": OTHER},
        "spec": {"connectionRef": {"name": "serval"}, "teamId": TEAM, "name": "Intruder"}}),
    )
    .unwrap();
    profiles_b
        .create(&PostParams::default(), &intruder)
        .await
        .unwrap();
    let writes = h.serval.writes();
    for _ in 0..3 {
        let obj = profiles_b.get("intruder").await.unwrap();
        reconcile(Arc::new(obj), h.engine.clone()).await.unwrap();
    }
    let obj = h
        .kube
        .get(
            "accessplane.io/v1alpha1",
            "accessprofiles",
            OTHER,
            "intruder",
        )
        .unwrap();
    let ready = condition(&obj, "Ready").unwrap();
    assert_eq!(ready["reason"], "WaitingForDependency", "{obj}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{OTHER}/serval")),
        "{obj}"
    );
    assert_eq!(h.serval.writes(), writes, "nothing created upstream");
    assert!(obj["status"]["id"].is_null());

    // ... and a Connection reads only its own namespace's Secret.
    let spec = json!({"serval": {"baseUrl": h.serval.base_url(), "credentialsSecretRef": {"name": "serval-credentials"}}});
    let conn_b: Connection = serde_json::from_value(
        json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "Connection",
        "metadata": {"name": "serval", "namespace": OTHER}, "spec": spec}),
    )
    .unwrap();
    Api::<Connection>::namespaced(h.client(), OTHER)
        .create(&PostParams::default(), &conn_b)
        .await
        .unwrap();
    assert_eq!(
        reconcile_connection_in(&h, OTHER, "serval").await,
        ("False".into(), "SecretNotFound".into()),
        "NS's same-named Secret is not used"
    );
    put_secret_in(
        &h,
        OTHER,
        "serval-credentials",
        json!({"clientId": CLIENT_ID, "clientSecret": OTHER_NS_SECRET}),
    )
    .await;
    assert_eq!(
        reconcile_connection_in(&h, OTHER, "serval").await,
        ("False".into(), "AuthenticationFailed".into()),
        "its own namespace's Secret is the one used"
    );
    assert_eq!(h.connection_ready("serval").1, "Verified", "NS unaffected");

    // --- The scan.
    let text = text_logs.text();
    let json_text = json_logs.text();
    for marker in ["oncall", "github", "analysts", "intruder"] {
        assert!(text.contains(marker), "text logs captured {marker}");
        assert!(json_text.contains(marker), "JSON logs captured {marker}");
    }
    assert!(text.contains("TRACE") || text.contains("DEBUG"));
    for line in json_text.lines() {
        serde_json::from_str::<Value>(line).expect("one JSON object per line");
    }

    let mut metrics = String::new();
    let mut registry = Registry::default();
    h.conn_cx.metrics.register(&mut registry);
    h.engine.metrics.register(&mut registry);
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    for m in [&connectors.metrics, &personas.metrics] {
        let mut registry = Registry::default();
        m.register(&mut registry);
        prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    }
    assert!(metrics.contains("accessplane_upstream_requests_total"));
    assert!(metrics.contains("accessplane_reconcile_total"));

    let objects: Vec<(String, Value)> = h
        .kube
        .all_objects()
        .into_iter()
        .filter(|(api_version, plural, _)| !(api_version == "v1" && plural == "secrets"))
        .map(|(api_version, plural, v)| (format!("{api_version}/{plural}"), v))
        .collect();
    let kinds: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    for expected in [
        "accessplane.io/v1alpha1/connections",
        "accessplane.io/v1alpha1/accessprofiles",
        "accessplane.io/v1alpha1/personaaccesscontrols",
        "events.k8s.io/v1/events",
    ] {
        assert!(kinds.contains(&expected), "{expected} scanned");
    }
    // Status messages of the failures were written (so the scan covers them).
    let all = objects
        .iter()
        .map(|(_, v)| v.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all.contains("AuthenticationFailed") && all.contains("TerminalError"));

    for needle in &sentinels {
        assert!(!text.contains(needle.as_str()), "{needle} in text logs");
        assert!(
            !json_text.contains(needle.as_str()),
            "{needle} in JSON logs"
        );
        assert!(!metrics.contains(needle.as_str()), "{needle} in metrics");
        for (kind, obj) in &objects {
            assert!(
                !obj.to_string().contains(needle.as_str()),
                "{needle} in {kind}: {obj}"
            );
        }
    }
}
