//! The generic managed-resource reconciler (design §2). Every kind goes through it; a
//! kind only supplies a [`Provider`]: how to observe, diff, create, update and delete
//! its upstream object. Finalizers, policies, adoption, crash-safe create, drift,
//! asynchronous completion, conditions, events, status and requeue timing live here once.

mod create_mark;
pub mod error;
pub mod identity;
pub mod metrics;
pub mod observation;
pub mod plan;
pub mod reconciler;
pub mod requeue;
pub mod schedule;
pub mod visibility;

pub use crate::base::{clock, conditions, events, kube_ops};

use std::fmt::Debug;
use std::future::Future;

use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::connection::UpstreamKind;
use crate::api::envelope::{DeletionPolicy, ManagedFields, ManagedStatus};
use crate::upstream::{Call, UpstreamClient, UpstreamError};

pub use create_mark::CreateMark;
pub use error::EngineError;
pub use reconciler::{Engine, reconcile};

/// Finalizer on every managed resource (and on Connections still in use).
pub const FINALIZER: &str = "accessplane.io/finalizer";
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

/// What a provider call sees: the object, the Connection's upstream client and the
/// inputs the provider resolved from Kubernetes (references, Secrets).
pub struct Cx<'a, K, I = ()> {
    pub obj: &'a K,
    pub upstream: &'a UpstreamClient,
    pub inputs: &'a I,
}

/// How the upstream object differs from the spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Managed fields (lowerCamelCase spec names) whose upstream value differs.
    pub fields: Vec<&'static str>,
    /// Parts of the spec no update can achieve (e.g. a tool that is not approved); each
    /// entry names what and why. Reported as `Synced=False/TerminalError`, not retried hot,
    /// and as `Ready=False` with the first entry's reason (the message names them all).
    pub unresolved: Vec<Unresolved>,
}

/// A part of the spec that no update can achieve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// The `Ready=False` reason: one of [`conditions::reason`], e.g. `ToolNotApproved`.
    pub reason: &'static str,
    /// What cannot be achieved and why, e.g. `tool "x" is not approved (…)`.
    pub message: String,
}

impl Unresolved {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl Diff {
    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The `Ready` reason (the first entry's) and the message naming every part no
    /// update can achieve, if any.
    pub fn unresolved_summary(&self) -> Option<(&'static str, String)> {
        let first = self.unresolved.first()?;
        let messages: Vec<&str> = self.unresolved.iter().map(|u| u.message.as_str()).collect();
        Some((first.reason, messages.join("; ")))
    }

    /// Records `field` when `differs`.
    pub fn check(&mut self, field: &'static str, differs: bool) {
        if differs {
            self.fields.push(field);
        }
    }
}

/// Result of a create.
pub enum Created<O> {
    /// The upstream created it and answered with its state.
    Done(O),
    /// The upstream accepted the request (HTTP 202); confirmed later by reading back.
    Accepted { id: String },
}

/// Result of an update or delete.
pub enum Written<O> {
    /// Applied; the new state when the response carried it.
    Done(Option<O>),
    /// Accepted (HTTP 202/204 on an asynchronous upstream); confirmed by reading back.
    Accepted,
}

/// Another kind of object (same namespace) a provider's [`Provider::resolve`] reads, e.g.
/// a `Connector` whose id a toolset needs. The runtime watches the kind and re-reconciles
/// the objects waiting for the one that changed.
pub struct Reference<K> {
    /// The referenced kind.
    pub kind: kube::core::ApiResource,
    /// The name of the object of that kind an object refers to, if any.
    pub name: fn(&K) -> Option<&str>,
}

/// The upstream-specific part of one kind.
pub trait Provider<K: ManagedObject>: Send + Sync + 'static {
    /// The upstream object as read.
    type Observed: Clone + Debug + Send + Sync;

    /// What the provider needs from Kubernetes besides the object itself (a referenced
    /// resource's id, a Secret's content), resolved before any upstream call.
    type Inputs: Default + Send + Sync;

    /// Which upstream the kind's Connection must point at.
    const UPSTREAM: UpstreamKind;

    /// For kinds whose objects read Secrets (in [`Self::resolve`]): the names of the
    /// Secrets an object reads, in its namespace. `Some` makes the kind's controller watch
    /// Secrets (metadata only) and reconcile the objects naming a Secret that changed.
    const SECRET_REFS: Option<fn(&K) -> Vec<String>> = None;

    /// The upstream id of an observed object.
    fn id_of(&self, observed: &Self::Observed) -> String;

    /// Resolves [`Self::Inputs`]; `EngineError::Dependency` when something is not ready yet.
    fn resolve(
        &self,
        _kube: &kube::Client,
        _obj: &K,
    ) -> impl Future<Output = Result<Self::Inputs, EngineError>> + Send {
        async { Ok(Self::Inputs::default()) }
    }

    /// The other objects [`Self::resolve`] reads, by kind.
    fn references(&self) -> Vec<Reference<K>> {
        vec![]
    }

    /// For upstreams whose ids follow from the spec (no crash-recovery lookup needed).
    fn deterministic_id(&self, _obj: &K) -> Option<String> {
        None
    }

    /// Reads the object; `None` when it does not exist (or is soft-deleted).
    fn observe(
        &self,
        cx: &Cx<'_, K, Self::Inputs>,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self::Observed>, UpstreamError>> + Send;

    /// Finds upstream objects matching the resource's natural key (crash recovery, Observe without id).
    fn find(
        &self,
        cx: &Cx<'_, K, Self::Inputs>,
    ) -> impl Future<Output = Result<Vec<Self::Observed>, UpstreamError>> + Send;

    /// Compares the managed (non-omitted) spec fields with the upstream object.
    fn diff(&self, cx: &Cx<'_, K, Self::Inputs>, observed: &Self::Observed) -> Diff;

    /// The requests a create sends, in order: what [`Self::create`] sends, and what
    /// `accessplane plan` shows without sending.
    fn create_calls(&self, cx: &Cx<'_, K, Self::Inputs>) -> Vec<Call>;

    /// What the upstream holds right after [`Self::create_calls`] as far as a plan can
    /// know it (the create body, stored under [`plan::CREATED_ID`]), for kinds whose
    /// reconciles update after the create (fields only an update can set, a toolset's tool
    /// bindings): the plan of a create then shows that update too. It may read (a
    /// toolset's tool catalogue), never write. `None`: the create is all.
    fn created_state(
        &self,
        _cx: &Cx<'_, K, Self::Inputs>,
    ) -> impl Future<Output = Result<Option<Self::Observed>, UpstreamError>> + Send {
        async { Ok(None) }
    }

    /// The requests an update of `diff` sends, in order (see [`Self::create_calls`]).
    fn update_calls(
        &self,
        cx: &Cx<'_, K, Self::Inputs>,
        observed: &Self::Observed,
        diff: &Diff,
    ) -> Vec<Call>;

    /// Sends [`Self::create_calls`].
    fn create(
        &self,
        cx: &Cx<'_, K, Self::Inputs>,
    ) -> impl Future<Output = Result<Created<Self::Observed>, UpstreamError>> + Send;

    /// Sends [`Self::update_calls`]: only the fields named in `diff`.
    fn update(
        &self,
        cx: &Cx<'_, K, Self::Inputs>,
        observed: &Self::Observed,
        diff: &Diff,
    ) -> impl Future<Output = Result<Written<Self::Observed>, UpstreamError>> + Send;

    /// Deletes; a 404 must be reported as `Done`.
    fn delete(
        &self,
        cx: &Cx<'_, K, Self::Inputs>,
        id: &str,
    ) -> impl Future<Output = Result<Written<()>, UpstreamError>> + Send;

    /// The upstream value of the managed field `field` (a spec name), as `accessplane
    /// plan` shows it next to the spec's value; `None` when not shown (unknown, or never
    /// printed: a Connector's configuration).
    fn observed_value(
        &self,
        _observed: &Self::Observed,
        _field: &str,
    ) -> Option<serde_json::Value> {
        None
    }

    /// Why this upstream object must never be updated, if so.
    fn refuse_update(&self, _observed: &Self::Observed) -> Option<String> {
        None
    }

    /// Why this upstream object must never be deleted, if so.
    fn refuse_delete(&self, _observed: &Self::Observed) -> Option<String> {
        None
    }

    /// For upstreams that list a whole scope in one (paged) call: the scope of this
    /// object (its Serval team, ConductorOne app or connector, gateway cluster). Objects
    /// of one scope observed together are then answered from one List
    /// (see [`observation`]). Computed from the object alone: the engine groups its
    /// cached objects by it.
    fn list_scope(&self, _obj: &K) -> Option<String> {
        None
    }

    /// Items per page of [`Self::list`] (to weigh one List against single GETs).
    const LIST_PAGE_SIZE: usize = usize::MAX;

    /// Every object of `scope` (called only when [`Self::list_scope`] names one).
    fn list(
        &self,
        _cx: &Cx<'_, K, Self::Inputs>,
        _scope: &str,
    ) -> impl Future<Output = Result<Vec<Self::Observed>, UpstreamError>> + Send {
        async { Ok(vec![]) }
    }

    /// Turns a listed item, or what [`Self::create`] returned, into what
    /// [`Self::observe`] would have returned, for kinds whose List or create response
    /// leaves parts out (a toolset's tool bindings). The engine completes a created object
    /// only once its id is recorded: reads after the create belong here, not in
    /// [`Self::create`], where their failure would leave the create in doubt.
    fn complete(
        &self,
        _cx: &Cx<'_, K, Self::Inputs>,
        listed: Self::Observed,
    ) -> impl Future<Output = Result<Self::Observed, UpstreamError>> + Send {
        async { Ok(listed) }
    }

    /// Checked before every write: `Err(EngineError::Dependency)` while the upstream
    /// cannot take writes (e.g. its cluster is busy), so nothing is sent.
    fn write_gate(
        &self,
        _cx: &Cx<'_, K, Self::Inputs>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send {
        async { Ok(()) }
    }

    /// Kind-specific observed facts merged into `status` (camelCase keys).
    fn facts(
        &self,
        _cx: &Cx<'_, K, Self::Inputs>,
        _observed: &Self::Observed,
    ) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
}

/// Where a resource's upstream object stands once its id (if any) has been read: the
/// step of the decision the reconciler and `accessplane plan` share.
pub enum Located<O> {
    /// The object (`recovered`: found by natural key after an interrupted create — it is
    /// the resource's own, and its id is to be recorded).
    Found { observed: O, recovered: bool },
    /// Nothing upstream: the resource creates it.
    Create,
    /// Adopted or observed, and absent: `Ready=False/NotFound` with this message.
    NotFound(String),
}

/// Decides what an object whose read found `observed` (under `id`, the id it records,
/// adopts or follows from its spec) faces. Without an object: an adoption or `Observe`
/// with an id is not found; a create in doubt (`in_doubt`) or `Observe` without id
/// looks the natural key up (never for deterministic ids, which cannot duplicate).
pub async fn locate<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    cx: &Cx<'_, K, P::Inputs>,
    id: Option<&str>,
    observed: Option<P::Observed>,
    in_doubt: bool,
) -> Result<Located<P::Observed>, EngineError> {
    if let Some(observed) = observed {
        return Ok(Located::Found {
            observed,
            recovered: false,
        });
    }
    let managed = cx.obj.managed();
    let observe_only = managed.management() == crate::api::envelope::ManagementPolicy::Observe;
    if id.is_some() && (managed.external_id.is_some() || observe_only) {
        return Ok(Located::NotFound(not_found_message(id)));
    }
    let deterministic = provider.deterministic_id(cx.obj).is_some();
    let mut candidates = if (in_doubt || observe_only) && !deterministic {
        provider.find(cx).await?
    } else {
        vec![]
    };
    match candidates.len() {
        0 if observe_only => Ok(Located::NotFound(not_found_message(None))),
        0 => Ok(Located::Create),
        1 => Ok(Located::Found {
            observed: candidates.pop().expect("one candidate"),
            recovered: !observe_only,
        }),
        _ => {
            let ids: Vec<String> = candidates.iter().map(|c| provider.id_of(c)).collect();
            Err(ambiguous_create(&ids))
        }
    }
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

/// Why an adopted or observed resource shows `NotFound`: no object under `id`, or (no
/// id) none matching its natural key.
pub fn not_found_message(id: Option<&str>) -> String {
    match id {
        Some(id) => format!("upstream object {id} does not exist"),
        None => "no upstream object matches this resource; set spec.externalId to observe a specific one".into(),
    }
}

/// More than one upstream object matches a resource whose create was interrupted.
pub fn ambiguous_create(ids: &[String]) -> EngineError {
    EngineError::CreateAmbiguous(format!(
        "{} upstream objects match this resource after an interrupted create ({}); delete the duplicates upstream, or set spec.externalId to the one to keep",
        ids.len(),
        ids.join(", ")
    ))
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
