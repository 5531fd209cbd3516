//! What the cache keeps.

use super::*;
use crate::api::AccessProfile;

#[test]
fn trim_keeps_only_what_the_operator_reads() {
    let mut obj: AccessProfile = serde_json::from_value(serde_json::json!({
        "apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
        "metadata": {
            "name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7", "generation": 2,
            "finalizers": ["accessplane.io/finalizer"],
            "labels": {"app.kubernetes.io/instance": "access"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}",
                "argocd.argoproj.io/tracking-id": "access:accessplane.io/AccessProfile:ns/p",
                "accessplane.io/external-id": "ap-1",
                "accessplane.io/resync-interval": "5m"
            },
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
        },
        "spec": {"connectionRef": {"name": "serval"}, "teamId": "t", "name": "p"}
    }))
    .unwrap();
    trim(&mut obj);
    let meta = &obj.metadata;
    assert!(meta.managed_fields.is_none());
    assert!(meta.labels.is_none());
    let kept: Vec<&str> = meta
        .annotations
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        kept,
        [
            "accessplane.io/external-id",
            "accessplane.io/resync-interval"
        ]
    );
    assert_eq!(
        meta.finalizers.as_deref(),
        Some(&["accessplane.io/finalizer".to_string()][..])
    );
    assert_eq!(
        (meta.generation, meta.resource_version.as_deref()),
        (Some(2), Some("7"))
    );

    let mut bare = obj.clone();
    bare.metadata.annotations = Some(
        [(
            "argocd.argoproj.io/tracking-id".to_string(),
            "x".to_string(),
        )]
        .into(),
    );
    trim(&mut bare);
    assert!(bare.metadata.annotations.is_none());
}

#[test]
fn the_cache_drops_create_bookkeeping_once_the_status_records_the_outcome() {
    let object = |status: serde_json::Value| -> AccessProfile {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
            "metadata": {"name": "p", "namespace": "ns", "annotations": {
                "accessplane.io/create-attempted": "2026-12-03T10:00:00Z",
                "accessplane.io/external-id": "ap-1",
                "accessplane.io/resync-interval": "5m"}},
            "spec": {"connectionRef": {"name": "serval"}, "teamId": "t", "name": "p"},
            "status": status
        }))
        .unwrap()
    };
    let keys = |obj: &AccessProfile| -> Vec<String> {
        obj.metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect()
    };
    // No id yet, or a write pending: the mark is what crash recovery needs.
    for status in [
        serde_json::json!({}),
        serde_json::json!({"id": "ap-1", "pending": {"operation": "Create", "generation": 1, "requestedAt": "2026-12-03T10:00:00Z"}}),
    ] {
        let mut obj = object(status);
        trim_managed(&mut obj);
        assert_eq!(keys(&obj).len(), 3, "{:?}", keys(&obj));
    }
    let mut settled = object(serde_json::json!({"id": "ap-1"}));
    trim_managed(&mut settled);
    assert_eq!(keys(&settled), ["accessplane.io/resync-interval"]);
    // An id annotation that says something else than the status is kept.
    let mut other = object(serde_json::json!({"id": "ap-2"}));
    trim_managed(&mut other);
    assert_eq!(
        keys(&other),
        [
            "accessplane.io/external-id",
            "accessplane.io/resync-interval"
        ]
    );
    let mut bare = object(serde_json::json!({"id": "ap-1"}));
    bare.metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove("accessplane.io/resync-interval");
    trim_managed(&mut bare);
    assert!(bare.metadata.annotations.is_none());
}
