//! Connections to ConductorOne and Instaclustr: credentials from the Secret, verified
//! against the fake servers (the Serval cases live with the AccessProfile tests).

use serde_json::json;

use crate::support::fake_c1::{FakeC1, test_credentials};
use crate::support::fake_instaclustr::FakeInstaclustr;
use crate::support::harness::{Harness, NS};

#[tokio::test]
async fn conductorone_client_assertion_is_accepted() {
    let h = Harness::new().await;
    let c1 = FakeC1::start().await;
    let (client_id, secret, public) = test_credentials(&c1.host());
    c1.add_client(&client_id, public, &secret);
    h.put_secret("c1", json!({"clientId": client_id, "clientSecret": secret}))
        .await;
    h.apply_connection("c1", json!({"conductorOne": {"serverUrl": c1.base_url(), "credentialsSecretRef": {"name": "c1"}}})).await;
    h.reconcile_connection("c1").await;
    assert_eq!(h.connection_ready("c1"), ("True".into(), "Verified".into()));
    assert_eq!(c1.token_exchanges(), 1);
    let token_request = c1
        .requests()
        .into_iter()
        .find(|r| r.path == "/auth/v1/token")
        .unwrap();
    let body = token_request.body.unwrap();
    assert_eq!(
        body["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert!(
        body.get("client_secret").is_none(),
        "the secret itself is never sent"
    );
}

#[tokio::test]
async fn conductorone_client_secret_grant_and_refusals() {
    let h = Harness::new().await;
    let c1 = FakeC1::start().await;
    let (client_id, secret, public) = test_credentials(&c1.host());
    c1.add_client(&client_id, public, &secret);
    h.put_secret("c1", json!({"clientId": client_id, "clientSecret": secret}))
        .await;
    h.apply_connection("c1", json!({"conductorOne": {"serverUrl": c1.base_url(), "authMethod": "ClientSecretPost", "credentialsSecretRef": {"name": "c1"}}})).await;
    h.reconcile_connection("c1").await;
    assert_eq!(h.connection_ready("c1"), ("True".into(), "Verified".into()));

    // A well-formed key the tenant does not know.
    let (_, other_secret, _) = test_credentials(&c1.host());
    h.put_secret(
        "c1-wrong",
        json!({"clientId": client_id, "clientSecret": other_secret}),
    )
    .await;
    h.apply_connection("c1-wrong", json!({"conductorOne": {"serverUrl": c1.base_url(), "credentialsSecretRef": {"name": "c1-wrong"}}})).await;
    h.reconcile_connection("c1-wrong").await;
    assert_eq!(h.connection_ready("c1-wrong").1, "AuthenticationFailed");

    // A malformed secret: named, never echoed.
    h.put_secret(
        "c1-bad",
        json!({"clientId": client_id, "clientSecret": "SENTINEL-garbage"}),
    )
    .await;
    h.apply_connection("c1-bad", json!({"conductorOne": {"serverUrl": c1.base_url(), "credentialsSecretRef": {"name": "c1-bad"}}})).await;
    h.reconcile_connection("c1-bad").await;
    assert_eq!(h.connection_ready("c1-bad").1, "SecretKeyInvalid");
    let obj = h
        .kube
        .get("accessplane.io/v1alpha1", "connections", NS, "c1-bad")
        .unwrap();
    let message = obj["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("clientSecret") && message.contains("secret-token:conductorone.com:v1"),
        "{message}"
    );
    assert!(!obj.to_string().contains("SENTINEL"));
}

#[tokio::test]
async fn instaclustr_basic_auth() {
    let h = Harness::new().await;
    let ic = FakeInstaclustr::start().await;
    ic.add_account("ops", "SENTINEL-api-key");
    h.put_secret(
        "ic",
        json!({"username": "ops", "apiKey": "SENTINEL-api-key"}),
    )
    .await;
    h.apply_connection(
        "ic",
        json!({"instaclustr": {"baseUrl": ic.base_url(), "credentialsSecretRef": {"name": "ic"}}}),
    )
    .await;
    h.reconcile_connection("ic").await;
    assert_eq!(h.connection_ready("ic"), ("True".into(), "Verified".into()));

    h.put_secret("ic-wrong", json!({"username": "ops", "apiKey": "nope"}))
        .await;
    h.apply_connection("ic-wrong", json!({"instaclustr": {"baseUrl": ic.base_url(), "credentialsSecretRef": {"name": "ic-wrong"}}})).await;
    h.reconcile_connection("ic-wrong").await;
    assert_eq!(h.connection_ready("ic-wrong").1, "AuthenticationFailed");
}

#[tokio::test]
async fn conductorone_pre_issued_access_token() {
    let h = Harness::new().await;
    let c1 = FakeC1::start().await;
    let token = c1.issue_bearer_token();
    h.put_secret("c1-token", json!({"accessToken": token}))
        .await;
    h.apply_connection("c1-token", json!({"conductorOne": {"serverUrl": c1.base_url(), "credentialsSecretRef": {"name": "c1-token"}}}))
        .await;
    h.reconcile_connection("c1-token").await;
    assert_eq!(
        h.connection_ready("c1-token"),
        ("True".into(), "Verified".into())
    );
    assert_eq!(c1.token_exchanges(), 0, "sent as is, no exchange");

    // Without serverUrl there is no client id to take the tenant host from.
    h.apply_connection(
        "c1-token-nohost",
        json!({"conductorOne": {"credentialsSecretRef": {"name": "c1-token"}}}),
    )
    .await;
    h.reconcile_connection("c1-token-nohost").await;
    let obj = h
        .kube
        .get(
            "accessplane.io/v1alpha1",
            "connections",
            NS,
            "c1-token-nohost",
        )
        .unwrap();
    let message = obj["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(h.connection_ready("c1-token-nohost").1, "InvalidSpec");
    assert!(message.contains("spec.conductorOne.serverUrl"), "{message}");
}
