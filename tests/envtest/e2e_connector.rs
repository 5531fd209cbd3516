//! End to end for `Connector` (see `e2e.rs`): the example connector and its config Secret
//! against the fake ConductorOne, including a Secret rotation picked up by the watch.

use std::time::{Duration, Instant};

use accessplane::api::Connector;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::e2e::{Cluster, Operator, cluster, example, fake_cluster, wait_for};
use crate::support::fake_c1::FakeC1;

#[tokio::test]
async fn e2e_c1_connector() {
    if let Some(cluster) = cluster().await {
        c1_connector(cluster).await;
    }
}

#[tokio::test]
async fn e2e_script_c1_connector() {
    c1_connector(fake_cluster()).await;
}

async fn c1_connector(cluster: Cluster) {
    let c1 = FakeC1::start().await;
    let app = c1.seed_app();
    // A long resync: the Secret rotation below must arrive through the watch.
    let timing = accessplane::engine::requeue::Timing {
        resync: Duration::from_secs(60),
        ..Default::default()
    };
    let op = Operator::start_with(cluster, timing).await;
    op.connect_c1(&c1).await;
    let mut secret = example("conductorone/connector-config-secret.yaml");
    secret["stringData"] = json!({"token": "e2e-token", "orgs": "acme"});
    op.apply::<Secret>(secret).await;
    let mut connector = example("conductorone/connector.yaml");
    connector["spec"]["appId"] = json!(app);
    connector["spec"]["catalogId"] = json!("catalog-github");
    connector["spec"]["userIds"] = json!(["u-owner"]);
    op.apply::<Connector>(connector.clone()).await;
    op.wait_ready::<Connector>("github").await;
    op.settled::<Connector>(connector.clone()).await;

    let live: Vec<Value> = c1
        .connectors(&app)
        .into_iter()
        .filter(|c| c["deletedAt"].is_null())
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["displayName"], "GitHub");
    let id = live[0]["id"].as_str().unwrap().to_string();
    let token = |config: Option<Value>| config.map(|c| c["configuration"]["token"].clone());
    assert_eq!(
        token(c1.connector_config(&id)),
        Some(json!({"stringValue": "e2e-token"}))
    );

    // A rotated Secret reaches the connector through the Secret watch, not a resync.
    let rotated = base64::engine::general_purpose::STANDARD.encode("e2e-token-rotated");
    // Counted from here: on a loaded machine a pass may have re-sent the first config
    // (the rotated one must still arrive, through the watch).
    let sent_before = c1.config_updates();
    op.api::<Secret>()
        .patch(
            "github-connector-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"token": rotated}})),
        )
        .await
        .unwrap();
    let rotated_at = Instant::now();
    wait_for("the rotated config to be sent", async || {
        c1.config_updates() > sent_before
            && token(c1.connector_config(&id)) == Some(json!({"stringValue": "e2e-token-rotated"}))
    })
    .await;
    assert!(
        rotated_at.elapsed() < Duration::from_secs(30),
        "the resync (60 s) is not what picked it up"
    );
    assert_eq!(
        token(c1.connector_config(&id)),
        Some(json!({"stringValue": "e2e-token-rotated"}))
    );

    let display_name = || c1.connector(&id).unwrap()["displayName"].clone();
    op.drift_corrected::<Connector>(
        connector.clone(),
        || c1.edit_connector(&id, |c| c["displayName"] = json!("Renamed in the UI")),
        || display_name() == "GitHub",
    )
    .await;

    op.delete_and_wait::<Connector>("github").await;
    assert!(
        c1.connector(&id).unwrap()["deletedAt"].is_string(),
        "deleted upstream (the operator created it)"
    );
    let live = || {
        let all = c1.connectors(&app).into_iter();
        all.filter(|c| c["deletedAt"].is_null()).count()
    };
    op.orphaned::<Connector>(connector, async || live() == 1)
        .await;
    op.finish("c1-prod").await;
}
