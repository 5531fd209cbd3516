//! End to end against a real cluster: `ACCESSPLANE_E2E=1` and a kubeconfig (current
//! context). Installs the CRDs, runs the operator in-process (so it can reach the fake
//! Serval server on 127.0.0.1), applies the example, waits for Ready, deletes, and checks
//! the upstream. Skipped (passes trivially, with a note) when no cluster is configured.

use std::time::Duration;

use accessplane::api::{AccessProfile, Connection};
use accessplane::runtime::{RunConfig, run_with};
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::support::fake_serval::FakeServal;

fn enabled() -> bool {
    std::env::var("ACCESSPLANE_E2E").as_deref() == Ok("1")
}

/// The example manifest, moved into `namespace` and pointed at `connection`.
fn example_profile(namespace: &str) -> AccessProfile {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/serval/accessprofile.yaml"
    );
    let mut value: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    value["metadata"]["namespace"] = json!(namespace);
    serde_json::from_value(value).unwrap()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = std::time::Instant::now();
    eprintln!("waiting for {what}");
    for _ in 0..120 {
        if check().await {
            eprintln!("{what}: after {:?}", started.elapsed());
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn e2e_serval_access_profile_lifecycle() {
    if !enabled() {
        eprintln!("skipped: set ACCESSPLANE_E2E=1 with a kubeconfig to run the end-to-end test");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .expect("ACCESSPLANE_E2E=1 needs a reachable cluster");
    lifecycle(client).await;
}

/// The same script against the in-memory apiserver, so the e2e test itself is known to
/// work before anyone points it at a cluster.
#[tokio::test]
async fn e2e_script_runs_against_the_fake_apiserver() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    lifecycle(crate::support::fake_kube::FakeKube::new().client()).await;
}

async fn lifecycle(client: kube::Client) {
    let serval = FakeServal::start().await;
    serval.add_client("e2e-operator", "e2e-secret");
    let ns = format!("accessplane-e2e-{}", rand::random::<u32>());

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = RunConfig {
        namespace: Some(ns.clone()),
        concurrency: 2,
        resync: Duration::from_secs(60),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        install_crds: true,
    };
    let operator = tokio::spawn(run_with(
        client.clone(),
        config,
        stopped.map(|_| ()).boxed().shared(),
    ));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = serde_json::from_value(json!({"metadata": {"name": "serval-credentials"},
        "stringData": {"clientId": "e2e-operator", "clientSecret": "e2e-secret"}}))
    .unwrap();
    let connections: Api<Connection> = Api::namespaced(client.clone(), &ns);
    let profiles: Api<AccessProfile> = Api::namespaced(client.clone(), &ns);
    // The operator installs the CRDs; wait until the API serves them.
    wait_for("the CRDs", async || {
        connections.list(&Default::default()).await.is_ok()
    })
    .await;
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let connection = serde_json::from_value(json!({"metadata": {"name": "serval-prod"},
        "spec": {"serval": {"baseUrl": serval.base_url(), "credentialsSecretRef": {"name": "serval-credentials"}}}}))
    .unwrap();
    connections
        .create(&PostParams::default(), &connection)
        .await
        .unwrap();
    profiles
        .create(&PostParams::default(), &example_profile(&ns))
        .await
        .unwrap();

    wait_for("the AccessProfile to be Ready", async || {
        let obj = profiles.get("payments-oncall").await.unwrap();
        let ready = obj.status.as_ref().and_then(|s| {
            s.managed
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .cloned()
        });
        ready.is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(serval.profiles().len(), 1);
    assert_eq!(serval.profiles()[0]["name"], "Payments on-call");

    profiles
        .delete("payments-oncall", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the AccessProfile to be gone", async || {
        profiles.get_opt("payments-oncall").await.unwrap().is_none()
    })
    .await;
    assert!(
        serval.profiles().is_empty(),
        "deleted upstream (the operator created it)"
    );

    connections
        .delete("serval-prod", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the Connection to be gone", async || {
        connections.get_opt("serval-prod").await.unwrap().is_none()
    })
    .await;
    stop.send(()).unwrap();
    operator.await.unwrap().unwrap();
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
