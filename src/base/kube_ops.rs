//! The controllers' writes to the Kubernetes object: finalizer, bookkeeping annotations,
//! status (only when it changed) and events. The operator never writes `spec`.

use std::collections::BTreeMap;

use json_patch::{
    AddOperation, Patch as JsonPatch, PatchOperation, RemoveOperation, TestOperation,
};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::KubeError;

/// Finalizer on every managed resource (and on Connections still in use). The engine
/// repeats it as `engine::FINALIZER` until its imports point here.
pub const FINALIZER: &str = "accessplane.io/finalizer";

/// What the helpers below need of a resource.
pub trait Object:
    Resource<DynamicType = ()> + Clone + std::fmt::Debug + Serialize + DeserializeOwned
{
}
impl<K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Serialize + DeserializeOwned> Object
    for K
{
}

pub fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

pub async fn add_finalizer<K: Object>(api: &Api<K>, obj: &K) -> Result<K, KubeError> {
    // A JSON patch guarded by the resourceVersion: a concurrent edit makes it fail
    // (and the reconcile retry) instead of clobbering someone else's finalizer list.
    let mut ops = vec![PatchOperation::Test(TestOperation {
        path: "/metadata/resourceVersion".try_into().unwrap(),
        value: json!(obj.resource_version()),
    })];
    ops.push(if obj.finalizers().is_empty() {
        PatchOperation::Add(AddOperation {
            path: "/metadata/finalizers".try_into().unwrap(),
            value: json!([FINALIZER]),
        })
    } else {
        PatchOperation::Add(AddOperation {
            path: "/metadata/finalizers/-".try_into().unwrap(),
            value: json!(FINALIZER),
        })
    });
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(JsonPatch(ops)),
    )
    .await
    .map_err(KubeError::at("adding finalizer"))
}

pub async fn remove_finalizer<K: Object>(api: &Api<K>, obj: &K) -> Result<(), KubeError> {
    let Some(index) = obj.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let ops = vec![
        PatchOperation::Test(TestOperation {
            path: path.as_str().try_into().unwrap(),
            value: json!(FINALIZER),
        }),
        PatchOperation::Remove(RemoveOperation {
            path: path.as_str().try_into().unwrap(),
        }),
    ];
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(JsonPatch(ops)),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: the deletion completed.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(KubeError::at("removing finalizer")(e)),
    }
}

/// Sets (`Some`) or removes (`None`) annotations with one merge patch.
pub async fn set_annotations<K: Object>(
    api: &Api<K>,
    obj: &K,
    changes: BTreeMap<&str, Option<String>>,
) -> Result<K, KubeError> {
    let patch = json!({"metadata": {"annotations": changes}});
    merge_metadata(api, obj, patch).await
}

/// Sets annotations, and adds the finalizer when it is missing, in one write, only if the
/// object is still at `obj`'s resourceVersion (409 otherwise): a decision taken on a
/// stale cached copy must not be acted upon (and the finalizer list it replaces is current).
pub async fn mark_if_unchanged<K: Object>(
    api: &Api<K>,
    obj: &K,
    changes: BTreeMap<&str, Option<String>>,
) -> Result<K, KubeError> {
    let mut patch = json!({"metadata": {
        "resourceVersion": obj.resource_version(),
        "annotations": changes,
    }});
    if !has_finalizer(obj) {
        let mut finalizers = obj.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        patch["metadata"]["finalizers"] = json!(finalizers);
    }
    merge_metadata(api, obj, patch).await
}

/// Sends the merge patch `patch` of `obj`'s metadata (the annotations, maybe the finalizers).
async fn merge_metadata<K: Object>(api: &Api<K>, obj: &K, patch: Value) -> Result<K, KubeError> {
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map_err(KubeError::at("writing annotations"))
}

/// Writes `status` when it differs from the object's current status; returns whether it wrote.
pub async fn write_status<K: Object>(
    api: &Api<K>,
    obj: &K,
    status: Value,
) -> Result<bool, KubeError> {
    // Cannot fail for a Kubernetes object (no map has non-string keys).
    let current = serde_json::to_value(obj)
        .map_err(|e| KubeError::at("writing status")(kube::Error::SerdeError(e)))?;
    let current_status = current.get("status").cloned().unwrap_or(Value::Null);
    if current_status == status {
        return Ok(false);
    }
    // Replaces the whole status: the outcome must not depend on the cached copy it was
    // computed from, which may be stale (a diff against it — JSON patch indexes into
    // conditions, or a merge patch's removals — would be applied to a newer status).
    let patch = Patch::Json::<()>(JsonPatch(vec![PatchOperation::Add(AddOperation {
        path: "/status".try_into().unwrap(),
        value: status,
    })]));
    api.patch_status(&obj.name_any(), &PatchParams::default(), &patch)
        .await
        .map_err(KubeError::at("writing status"))?;
    Ok(true)
}
