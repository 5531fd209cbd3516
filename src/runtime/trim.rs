//! What the controllers' caches keep of each object: only what the operator reads.

use kube::Resource;

use crate::engine::{self, ManagedObject};

/// Annotations the operator reads (`accessplane.io/external-id`, `…/create-pending`, …).
const OWN_ANNOTATIONS: &str = "accessplane.io/";

/// Drops what the operator never reads from cached objects: managed fields, labels and
/// other tools' annotations (kubectl's copy of the last applied object, Argo CD's
/// tracking id, …) are often larger than the rest of the object, and the cache holds
/// every object of the kind. (Writes are patches of the operator's own fields, so
/// nothing dropped here is ever written back.)
pub fn trim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with(OWN_ANNOTATIONS));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// [`trim`], and the engine's create bookkeeping once the status records its outcome:
/// the create mark and an id annotation equal to `status.id` say nothing then that the
/// status does not (docs/src/performance.md: a one-entry annotation map costs ≈ 0.5 KiB per
/// cached object). Kept while the status has no id or a write is pending.
pub fn trim_managed<K: ManagedObject>(obj: &mut K) {
    let settled_id = obj
        .managed_status()
        .filter(|s| s.pending.is_none())
        .and_then(|s| s.id.clone());
    trim(obj);
    let (Some(id), Some(annotations)) = (settled_id, obj.meta_mut().annotations.as_mut()) else {
        return;
    };
    annotations.remove(engine::CREATE_MARK_ANNOTATION);
    annotations.remove(engine::LEGACY_CREATE_PENDING_ANNOTATION);
    if annotations.get(engine::EXTERNAL_ID_ANNOTATION) == Some(&id) {
        annotations.remove(engine::EXTERNAL_ID_ANNOTATION);
    }
    if annotations.is_empty() {
        obj.meta_mut().annotations = None;
    }
}

#[cfg(test)]
mod tests;
