//! The generic managed-resource reconciler. Every kind goes through it; a kind only
//! supplies a [`Provider`]: how to observe, diff, create, update and delete its upstream
//! object. Finalizers, policies, adoption, crash-safe create, drift, asynchronous
//! completion, conditions, events, status and requeue timing live here once.
//!
//! A pass is a decision ([`decision`], [`deletion`]: reads only, shared with
//! `accessplane plan`) and its execution ([`reconciler`]: marks, writes, status). The
//! words used here (mark, in doubt, echo, wave, scope, list window, ...) are defined in
//! the glossary of `docs/src/architecture.md`.

mod create_mark;
pub mod decision;
pub mod deletion;
pub mod error;
pub mod identity;
pub mod memory;
pub mod metrics;
pub mod observation;
pub mod ownership;
pub mod plan;
mod provider;
pub mod reconciler;
pub mod requeue;
pub mod schedule;
pub mod visibility;

use std::fmt::Debug;

use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::envelope::{DeletionPolicy, ManagedFields, ManagedStatus};

pub use create_mark::CreateMark;
pub use decision::{Located, ambiguous_create, locate, not_found_message};
pub use error::EngineError;
pub use provider::{
    Created, Cx, Diff, ImportScope, Provider, Reference, ScopeFlag, ScopeLister, ScopeValues,
    Unresolved, Written,
};
pub use reconciler::{Engine, reconcile};

pub use crate::base::kube_ops::FINALIZER;
/// The create mark: written together with the finalizer, in the resource's one metadata
/// write, just before a create is sent (its value: when), and kept. While the status
/// records no id it says a create may have made an upstream object whose id was lost (a
/// crash, a lost response): the natural-key lookup recovers it instead of creating twice.
/// Afterwards it says the operator made the upstream object (not adopted it).
pub const CREATE_MARK_ANNOTATION: &str = "accessplane.io/create-attempted";
/// The create mark of earlier versions, removed once the id was recorded: read as the
/// mark, so that a create in doubt across an upgrade is still recovered.
pub const LEGACY_CREATE_PENDING_ANNOTATION: &str = "accessplane.io/create-pending";
/// An upstream object's id recorded in metadata: written when a deterministic id is
/// adopted; earlier versions wrote it after every create. Read like `status.id`.
pub const EXTERNAL_ID_ANNOTATION: &str = "accessplane.io/external-id";
/// Marks an object whose upstream twin existed before the operator looked for it.
pub const ADOPTED_ANNOTATION: &str = "accessplane.io/adopted";

/// A custom resource kind the engine can reconcile.
pub trait ManagedObject:
    kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The envelope fields of the spec.
    fn managed(&self) -> &ManagedFields;
    /// The common status fields, if a status exists.
    fn managed_status(&self) -> Option<&ManagedStatus>;
}

/// Implements [`ManagedObject`] for kinds whose spec and status flatten the envelope.
#[macro_export]
macro_rules! managed_object {
    ($($kind:ty),+ $(,)?) => {$(
        impl $crate::engine::ManagedObject for $kind {
            fn managed(&self) -> &$crate::api::envelope::ManagedFields {
                &self.spec.managed
            }
            fn managed_status(&self) -> Option<&$crate::api::envelope::ManagedStatus> {
                self.status.as_ref().map(|s| &s.managed)
            }
        }
    )+};
}

/// The key of the objects one List answers: the Connection (per namespace; one
/// ClusterConnection's across namespaces, `*` being no namespace name) and the
/// provider's list scope. `None` for kinds that read objects one by one.
pub fn scope_key<K: ManagedObject, P: Provider<K>>(provider: &P, obj: &K) -> Option<String> {
    let scope = provider.list_scope(obj)?;
    let reference = &obj.managed().connection_ref;
    let home = match reference.kind() {
        crate::api::envelope::ConnectionKind::Connection => {
            obj.meta().namespace.clone().unwrap_or_default()
        }
        crate::api::envelope::ConnectionKind::ClusterConnection => "*".into(),
    };
    Some(format!("{home}/{}/{scope}", reference.name))
}

/// The deletion policy in force: explicit, else `Delete` for objects the operator
/// created and `Orphan` for adopted ones. `Observe` never deletes.
pub fn effective_deletion_policy<K: ManagedObject>(obj: &K) -> DeletionPolicy {
    let managed = obj.managed();
    if managed.management() == crate::api::envelope::ManagementPolicy::Observe {
        return DeletionPolicy::Orphan;
    }
    managed.deletion_policy.unwrap_or_else(|| {
        if is_adopted(obj) {
            DeletionPolicy::Orphan
        } else {
            DeletionPolicy::Delete
        }
    })
}

/// Whether the upstream object existed before the operator looked for it.
pub fn is_adopted<K: ManagedObject>(obj: &K) -> bool {
    obj.managed().external_id.is_some() || annotation(obj, ADOPTED_ANNOTATION) == Some("true")
}

/// An annotation's value.
/// When a create was attempted (the create mark), if ever.
pub fn create_mark<K: kube::Resource>(obj: &K) -> Option<&str> {
    annotation(obj, CREATE_MARK_ANNOTATION)
        .or_else(|| annotation(obj, LEGACY_CREATE_PENDING_ANNOTATION))
}

/// The id of an upstream object this resource was given, adopted or created.
pub fn recorded_id<K: ManagedObject>(obj: &K) -> Option<String> {
    obj.managed()
        .external_id
        .clone()
        .or_else(|| annotation(obj, EXTERNAL_ID_ANNOTATION).map(str::to_string))
        .or_else(|| obj.managed_status().and_then(|s| s.id.clone()))
}

/// A create was attempted whose outcome the resource does not record (no id): it may
/// have made an upstream object that only the natural-key lookup can find.
pub fn create_in_doubt<K: ManagedObject>(obj: &K) -> bool {
    create_mark(obj).is_some() && recorded_id(obj).is_none()
}

pub fn annotation<'a, K: kube::Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta()
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}
