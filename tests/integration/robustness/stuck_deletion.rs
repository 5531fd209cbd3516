//! Deletions that cannot complete say why and how to get out (`deletionPolicy: Orphan`),
//! and that way out works: the finalizer goes, the upstream object stays untouched.

use std::time::Duration;

use serde_json::json;

use crate::support::fake_http::{Fault, FaultMatch};
use crate::support::fake_serval::PROFILES_PATH;
use crate::support::harness::{Harness, NS, TEAM, requeue_of};

const HINT: &str = "set spec.deletionPolicy: Orphan";

fn spec() -> serde_json::Value {
    json!({"name": "Payments on-call", "description": "Break-glass"})
}

/// A profile the operator created through the `serval` Connection; returns its upstream id.
async fn created(h: &Harness, name: &str) -> String {
    h.apply_profile(name, spec()).await;
    h.settle(name, 4).await;
    assert_eq!(
        h.cond(name, "Ready").0,
        "True",
        "{:?}",
        h.cond(name, "Ready")
    );
    h.status_id(name).unwrap()
}

/// The deletion is blocked: the object stays, `Ready=False` says what blocks it and
/// names the way out.
fn assert_blocked(h: &Harness, name: &str, reason: &str, mentions: &[&str]) -> String {
    let obj = h.object(name).expect("the finalizer keeps the object");
    assert!(obj["metadata"]["deletionTimestamp"].is_string());
    let (status, got, message) = h.cond(name, "Ready");
    assert_eq!(
        (status.as_str(), got.as_str()),
        ("False", reason),
        "{message}"
    );
    assert!(
        message.contains("cannot delete the upstream object"),
        "{message}"
    );
    assert!(message.contains(HINT), "{message}");
    for m in mentions {
        assert!(message.contains(m), "{m:?} not in {message}");
    }
    message
}

/// The documented way out: the finalizer goes without any upstream write.
async fn orphan(h: &Harness, name: &str) {
    let writes = h.serval.writes();
    h.edit_profile_spec(name, json!({"deletionPolicy": "Orphan"}))
        .await;
    h.settle(name, 3).await;
    assert!(h.object(name).is_none(), "released");
    assert_eq!(h.serval.writes(), writes, "upstream untouched");
}

#[tokio::test]
async fn connection_that_never_existed() {
    let h = Harness::new().await;
    let id = h
        .serval
        .seed_profile(json!({"teamId": TEAM, "name": "Seeded"}));
    h.apply_profile(
        "ghostly",
        json!({"connectionRef": {"name": "ghost"}, "externalId": id, "deletionPolicy": "Delete"}),
    )
    .await;
    h.settle("ghostly", 3).await;
    assert_eq!(h.cond("ghostly", "Ready").1, "WaitingForDependency");

    h.delete_profile("ghostly").await;
    h.settle("ghostly", 3).await;
    assert_blocked(
        &h,
        "ghostly",
        "WaitingForDependency",
        &[&format!("Connection {NS}/ghost")],
    );
    assert!(h.event_reasons().iter().any(|r| r == "ReconcileError"));

    orphan(&h, "ghostly").await;
    assert!(h.serval.profile(&id).is_some());
}

#[tokio::test]
async fn connection_force_removed() {
    let h = Harness::new().await;
    let id = created(&h, "oncall").await;
    // Someone stripped the Connection's finalizer; after an operator restart the
    // registry holds only Connections that exist.
    h.kube
        .remove("accessplane.io/v1alpha1", "connections", NS, "serval")
        .unwrap();
    h.engine.connections.remove(NS, "serval");

    h.delete_profile("oncall").await;
    h.settle("oncall", 3).await;
    assert_blocked(&h, "oncall", "WaitingForDependency", &["serval"]);
    orphan(&h, "oncall").await;
    assert!(h.serval.profile(&id).is_some());
}

#[tokio::test]
async fn connection_in_use_keeps_working_for_deletion() {
    let h = Harness::new().await;
    let id = created(&h, "oncall").await;
    let conns: kube::Api<accessplane::api::Connection> = kube::Api::namespaced(h.client(), NS);
    conns.delete("serval", &Default::default()).await.unwrap();
    h.reconcile_connection("serval").await;
    assert_eq!(h.connection_ready("serval").1, "InUse");

    // The Connection is kept (and usable) exactly so that its users can be deleted.
    h.delete_profile("oncall").await;
    h.settle("oncall", 3).await;
    assert!(h.object("oncall").is_none());
    assert!(h.serval.profile(&id).is_none(), "deleted upstream");
    h.reconcile_connection("serval").await;
    assert!(
        h.kube
            .get("accessplane.io/v1alpha1", "connections", NS, "serval")
            .is_none()
    );
}

#[tokio::test]
async fn connection_secret_gone() {
    let h = Harness::new().await;
    let id = created(&h, "oncall").await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(h.client(), NS);
    secrets
        .delete("serval-credentials", &Default::default())
        .await
        .unwrap();
    h.reconcile_connection("serval").await;
    assert_eq!(h.connection_ready("serval").1, "SecretNotFound");

    h.delete_profile("oncall").await;
    h.settle("oncall", 3).await;
    let message = assert_blocked(&h, "oncall", "WaitingForDependency", &["serval"]);
    assert!(message.contains("SecretNotFound"), "{message}");
    assert_eq!(h.serval.count("DELETE", PROFILES_PATH), 0);

    orphan(&h, "oncall").await;
    assert!(h.serval.profile(&id).is_some());
}

#[tokio::test]
async fn never_created_while_waiting_for_its_connection() {
    let h = Harness::new().await;
    h.apply_profile(
        "early",
        json!({"connectionRef": {"name": "not-yet"}, "name": "Early"}),
    )
    .await;
    h.settle("early", 3).await;
    assert_eq!(h.cond("early", "Ready").1, "WaitingForDependency");
    h.serval.clear_requests();

    h.delete_profile("early").await;
    h.reconcile("early").await;
    assert!(
        h.object("early").is_none(),
        "nothing to delete: released at once"
    );
    assert!(h.serval.requests().is_empty());
}

#[tokio::test]
async fn never_created_because_the_create_was_refused() {
    let h = Harness::new().await;
    h.serval.fail_next("POST", PROFILES_PATH, 400, 1);
    h.apply_profile("refused", spec()).await;
    h.settle("refused", 3).await;
    assert_eq!(h.cond("refused", "Synced").1, "TerminalError");
    let annotations = &h.object("refused").unwrap()["metadata"]["annotations"];
    assert!(
        annotations
            .get("accessplane.io/create-attempted")
            .is_none_or(|v| v.is_null()),
        "a refused create is not in doubt: {annotations}"
    );

    // No working Connection either: deletion must not need one.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(h.client(), NS);
    secrets
        .delete("serval-credentials", &Default::default())
        .await
        .unwrap();
    h.reconcile_connection("serval").await;
    assert_eq!(h.connection_ready("serval").1, "SecretNotFound");
    h.serval.clear_requests();

    h.delete_profile("refused").await;
    h.reconcile("refused").await;
    assert!(h.object("refused").is_none());
    assert!(h.serval.requests().is_empty(), "no upstream call");
    assert!(h.serval.profiles().is_empty());
}

#[tokio::test]
async fn upstream_refuses_the_delete() {
    let h = Harness::new().await;
    let id = created(&h, "oncall").await;
    h.serval.push_fault(
        FaultMatch::new("DELETE", PROFILES_PATH),
        Fault::Status {
            code: 403,
            retry_after: None,
            retry_after_ms: None,
            body: Some(json!({"code": "permission_denied", "message": "caller may not delete access profiles", "detail": ""})),
        },
    );
    h.delete_profile("oncall").await;
    let action = h.reconcile("oncall").await.unwrap();
    assert!(
        requeue_of(&action).unwrap() >= Duration::from_secs(15 * 60),
        "not retried hot: {action:?}"
    );
    let (status, reason, synced) = h.cond("oncall", "Synced");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TerminalError")
    );
    assert!(synced.contains("HTTP 403"), "{synced}");
    assert!(
        synced.contains("caller may not delete access profiles"),
        "{synced}"
    );
    assert!(synced.contains(HINT), "{synced}");
    assert_blocked(
        &h,
        "oncall",
        "PermissionDenied",
        &["caller may not delete access profiles"],
    );
    assert!(h.event_reasons().iter().any(|r| r == "TerminalError"));

    // Another trigger at the same generation does not call the upstream again.
    h.settle("oncall", 3).await;
    h.advance(Duration::from_secs(60));
    h.reconcile("oncall").await;
    assert_eq!(h.serval.count("DELETE", PROFILES_PATH), 1);

    orphan(&h, "oncall").await;
    assert!(h.serval.profile(&id).is_some());
    assert_eq!(h.serval.count("DELETE", PROFILES_PATH), 1);
}
