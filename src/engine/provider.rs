//! What a kind supplies to the engine: a [`Provider`] says how to read, compare, create,
//! update and delete its upstream object. Everything else (finalizers, policies,
//! adoption, crash-safe create, drift, status) is the engine's, written once.

use std::fmt::Debug;
use std::future::Future;

use super::{EngineError, ManagedObject};
use crate::api::connection::UpstreamKind;
use crate::upstream::{Call, UpstreamClient, UpstreamError};

/// What a provider call sees: the object, the Connection's upstream client and the
/// inputs the provider resolved from Kubernetes (references, Secrets).
pub struct Cx<'a, K, I = ()> {
    pub obj: &'a K,
    pub upstream: &'a UpstreamClient,
    pub inputs: &'a I,
}

impl<'a, K, I> Cx<'a, K, I> {
    pub fn new(obj: &'a K, upstream: &'a UpstreamClient, inputs: &'a I) -> Self {
        Self {
            obj,
            upstream,
            inputs,
        }
    }
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
    /// The `Ready=False` reason: one of [`crate::base::conditions::reason`], e.g. `ToolNotApproved`.
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

/// A flag of `accessplane import` and the spec field it fills: `--team` fills `teamId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeFlag {
    pub flag: &'static str,
    pub field: &'static str,
}

/// One list scope to import, as the values of its spec fields (`teamId` → `team-a`).
pub type ImportScope = std::collections::BTreeMap<&'static str, String>;

/// The import's scope flags and their values (`team` → the `--team` values).
pub type ScopeValues = std::collections::BTreeMap<&'static str, Vec<String>>;

/// Finds the scopes to import through an upstream that lists them: the flags' values
/// and whether `--all` was given; `Err` says why not, in words for the user.
pub type ScopeLister =
    for<'a> fn(
        &'a UpstreamClient,
        &'a ScopeValues,
        bool,
    ) -> futures::future::BoxFuture<'a, Result<Vec<ImportScope>, String>>;

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

    /// The requests a create sends, in order: the engine's decision carries them, the
    /// reconciler hands them to [`Self::create`] and `accessplane plan` prints them.
    fn create_calls(&self, cx: &Cx<'_, K, Self::Inputs>) -> Vec<Call>;

    /// What the upstream holds right after [`Self::create_calls`] as far as a plan can
    /// know it (the create body, stored under [`super::plan::CREATED_ID`]), for kinds whose
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

    /// The requests deleting the object `id` sends, in order (see [`Self::create_calls`]).
    fn delete_calls(&self, cx: &Cx<'_, K, Self::Inputs>, id: &str) -> Vec<Call>;

    /// Sends `calls` (what [`Self::create_calls`] gave) and reads the answer.
    fn create(
        &self,
        cx: &Cx<'_, K, Self::Inputs>,
        calls: Vec<Call>,
    ) -> impl Future<Output = Result<Created<Self::Observed>, UpstreamError>> + Send;

    /// Sends `calls` (what [`Self::update_calls`] gave for `diff`) and reads the answer.
    fn update(
        &self,
        cx: &Cx<'_, K, Self::Inputs>,
        observed: &Self::Observed,
        diff: &Diff,
        calls: Vec<Call>,
    ) -> impl Future<Output = Result<Written<Self::Observed>, UpstreamError>> + Send;

    /// Sends `calls` (what [`Self::delete_calls`] gave); a 404 must be reported as `Done`.
    fn delete(
        &self,
        cx: &Cx<'_, K, Self::Inputs>,
        calls: Vec<Call>,
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
    /// (see [`super::observation`]). Computed from the object alone: the engine groups its
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

    /// What a ClusterConnection's `allowedScopes` is checked against for this object: its
    /// Serval team, ConductorOne app or gateway cluster id. `inputs`: when resolved (a
    /// toolset naming a Connector learns its app from it); `None` when not known yet.
    fn allowed_scope_of(&self, _obj: &K, _inputs: Option<&Self::Inputs>) -> Option<String> {
        None
    }

    /// `accessplane import` ([`crate::import`]): the flags naming a list scope, in the
    /// order a scope nests (a ConductorOne app, then a connector in it). Empty: the kind
    /// cannot be imported.
    const IMPORT_SCOPE: &'static [ScopeFlag] = &[];

    /// For upstreams that list their scopes (ConductorOne's apps and connectors): how the
    /// import finds its scopes, from the flags or, with `--all`, by listing them. `None`:
    /// the given values of a one-flag scope, and `--all` refused (nothing lists them).
    const IMPORT_SCOPE_LISTER: Option<ScopeLister> = None;

    /// Spec fields every resource of the kind must have that no list scope names, as a
    /// stand-in for the object that the import lists a scope through (a persona access
    /// control's virtual server and role). Listing never reads them.
    fn import_stand_in(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// The managed spec fields [`Self::imported_fields`] reads with
    /// [`Self::observed_value`] by default.
    const IMPORTED_FIELDS: &'static [&'static str] = &[];

    /// The managed spec fields of a resource that would manage `observed` exactly as it
    /// is (the import adds `connectionRef`, the scope fields, `externalId` and the
    /// policies, and keeps the object only when [`Self::diff`] of the result is empty).
    /// May read (a toolset's tool catalogue, to name its tools). Default: the upstream
    /// value of each of [`Self::IMPORTED_FIELDS`] that is set.
    fn imported_fields(
        &self,
        _cx: &Cx<'_, K, Self::Inputs>,
        observed: &Self::Observed,
    ) -> impl Future<Output = Result<serde_json::Map<String, serde_json::Value>, UpstreamError>> + Send
    {
        let fields = Self::IMPORTED_FIELDS
            .iter()
            .filter_map(|field| {
                let value = self.observed_value(observed, field)?;
                (!value.is_null()).then(|| (field.to_string(), value))
            })
            .collect();
        async { Ok(fields) }
    }

    /// The upstream object's display name, which an imported resource's name is derived
    /// from.
    fn display_name(&self, _observed: &Self::Observed) -> Option<String> {
        None
    }

    /// A note `accessplane import` writes above every manifest of the kind: what it
    /// leaves unmanaged because no read returns it (a Connector's configuration).
    fn import_note(&self) -> Option<&'static str> {
        None
    }

    /// Objects of `scope` that `accessplane import` leaves out because another kind's
    /// resource manages them (a ConductorOne toolset's backing app entitlement), by
    /// upstream id, with the reason. Read once per scope.
    fn import_exclusions(
        &self,
        _upstream: &UpstreamClient,
        _scope: &ImportScope,
    ) -> impl Future<Output = Result<std::collections::HashMap<String, String>, UpstreamError>> + Send
    {
        async { Ok(std::collections::HashMap::new()) }
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
