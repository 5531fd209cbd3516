//! The plan of a whole input: for every accessplane resource of it, its Connection, the
//! inputs its provider resolves and the engine's own decision ([`crate::engine::plan`],
//! which runs [`crate::engine::decision::decide`]) — against the
//! cluster as it would be once the input is applied ([`KubeView`]), with no write
//! anywhere: upstream clients are read-only, the Kubernetes client refuses anything but
//! a GET.
//!
//! Resources are planned kind by kind, referenced kinds first (Connectors before the
//! toolsets naming them), so a toolset whose Connector this plan creates is shown as a
//! create that follows it rather than as blocked. Objects sharing a list scope (a Serval
//! team, a ConductorOne connector, a gateway cluster) are read with one List of the
//! scope, as a resync wave is ([`Provider::list`]), not one GET each.

use std::collections::{HashMap, HashSet};

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::Value;

mod admission;
mod entry;
mod prune;

use admission::{compiled_rules, validate_rules};
use entry::planned_entry;

use super::connections::PlanConnections;
use super::kube_view::{KubeView, merge_cluster_state};
use super::manifests::Loaded;
use super::report::{Action, Entry, Report};
use crate::api::GROUP_VERSION;
use crate::engine::ownership::{self, owns_rather};
use crate::engine::plan::{Planned, plan as plan_one};
use crate::engine::{Cx, ManagedObject, Provider, scope_key};
use crate::upstream::UpstreamClient;

/// Reason of a resource the apiserver would refuse (it would never show a condition).
pub const INVALID: &str = "Invalid";

/// How to plan.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespace of input objects that name none (kubectl's current namespace).
    pub default_namespace: String,
    /// Where ClusterConnections' Secrets live (the operator's `--credentials-namespace`).
    pub credentials_namespace: String,
    /// `--prune`: resources in the cluster matching this label selector that the input
    /// does not contain are planned for deletion (by their deletion policy), in the
    /// namespaces of the input and the default one.
    pub prune_selector: Option<String>,
}

/// A plan that could not be made (as opposed to a resource that is blocked).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "--prune: listing {kind} in namespace {namespace} with selector {selector:?}: {source}"
    )]
    Prune {
        kind: String,
        namespace: String,
        selector: String,
        #[source]
        source: kube::Error,
    },
}

/// Plans every accessplane resource of `input` (with `cluster`, or offline with `None`).
pub async fn plan(
    input: &[Loaded],
    cluster: Option<kube::Client>,
    options: &Options,
) -> Result<Report, PlanError> {
    let view = KubeView::new(input, cluster.clone(), &options.default_namespace);
    let kube = view.client(&options.default_namespace);
    let mut planner = Planner {
        input,
        options,
        cluster,
        connections: PlanConnections::new(
            input,
            Some(kube.clone()),
            &options.default_namespace,
            &options.credentials_namespace,
        ),
        kube,
        entries: vec![],
        creates: HashSet::new(),
    };
    planner.unknown_kinds();
    for plan_kind in kind_planners() {
        plan_kind(&mut planner).await?;
    }
    planner.entries.sort_by_key(|(at, _)| *at);
    Ok(Report {
        entries: planner.entries.into_iter().map(|(_, e)| e).collect(),
    })
}

/// Plans every resource of one kind in the input.
type PlanKind = for<'p, 'a> fn(&'p mut Planner<'a>) -> LocalBoxFuture<'p, Result<(), PlanError>>;

/// [`Planner::kind`] for every managed kind, in [`crate::kinds::each_kind`]'s order
/// (a resource's dependencies are planned before it). Connections change nothing
/// upstream and are not planned.
fn kind_planners() -> Vec<PlanKind> {
    struct Planners(Vec<PlanKind>);
    impl crate::kinds::EachKind for Planners {
        fn kind<K, P>(&mut self)
        where
            K: ManagedObject + kube::CustomResourceExt,
            P: Provider<K> + Default,
        {
            self.0.push(|planner| {
                async move { planner.kind::<K, P>(&P::default()).await }.boxed_local()
            });
        }
    }
    let mut planners = Planners(vec![]);
    crate::kinds::each_kind(&mut planners);
    planners.0
}

const OTHER_KINDS: [&str; 2] = ["Connection", "ClusterConnection"];

struct Planner<'a> {
    input: &'a [Loaded],
    options: &'a Options,
    cluster: Option<kube::Client>,
    kube: kube::Client,
    connections: PlanConnections<'a>,
    /// Entries with the input position they sort by (`--prune` entries after the input).
    entries: Vec<(usize, Entry)>,
    /// Resources this plan creates, as (kind, namespace, name).
    creates: HashSet<(String, String, String)>,
}

/// A resource ready for the engine's decision.
struct Prepared<K, I> {
    at: usize,
    obj: K,
    client: UpstreamClient,
    inputs: I,
    /// List scope and its key (see [`scope_key`]): resources sharing it are read with
    /// one List.
    scope: Option<(String, String)>,
}

/// Why a resource is not planned by the engine.
struct Settled {
    action: Action,
    reason: &'static str,
    message: String,
}

impl Settled {
    fn blocked(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            action: Action::Blocked,
            reason,
            message: message.into(),
        }
    }
}

impl Planner<'_> {
    /// Input objects of the accessplane group that are no kind of it.
    fn unknown_kinds(&mut self) {
        for (at, loaded) in self.input.iter().enumerate() {
            let group = loaded.api_version().split('/').next() == Some("accessplane.io");
            let mut kinds = crate::kinds::names();
            kinds.extend(OTHER_KINDS.map(String::from));
            let known =
                loaded.api_version() == GROUP_VERSION && kinds.iter().any(|k| k == loaded.kind());
            if group && !known {
                let message = format!(
                    "{} {} is not an accessplane kind (kinds of {GROUP_VERSION}: {})",
                    loaded.api_version(),
                    loaded.kind(),
                    kinds.join(", ")
                );
                let entry = self.entry_of(loaded, Settled::blocked(INVALID, message));
                self.entries.push((at, entry));
            }
        }
    }

    /// Plans every resource of kind `K` in the input (and `--prune` candidates).
    async fn kind<K: ManagedObject, P: Provider<K>>(
        &mut self,
        provider: &P,
    ) -> Result<(), PlanError> {
        let kind = K::kind(&()).to_string();
        let mut prepared = vec![];
        let mut rules = None;
        for (at, loaded) in self.input.iter().enumerate() {
            if loaded.api_version() != GROUP_VERSION || loaded.kind() != kind {
                continue;
            }
            let rules = rules.get_or_insert_with(|| compiled_rules(&kind));
            match self
                .prepare::<K, P>(provider, loaded, at, rules.as_ref())
                .await
            {
                Ok(ready) => prepared.push(ready),
                Err(settled) => {
                    if settled.action == Action::Create {
                        self.note_create(loaded);
                    }
                    let entry = self.entry_of(loaded, settled);
                    self.entries.push((at, entry));
                }
            }
        }
        let lists = list_scopes(provider, &prepared).await;
        let recorded = self.recorded::<K>().await;
        for ready in &prepared {
            let listed = ready.scope.as_ref().and_then(|scope| lists.get(scope));
            let owner = |id: &str| {
                let owner = recorded.iter().find(|o| owns_rather(*o, &ready.obj, id));
                owner.map(ownership::label)
            };
            let (obj, client, inputs) = (&ready.obj, &ready.client, &ready.inputs);
            let planned = plan_one(provider, obj, client, inputs, listed, Some(&owner)).await;
            let loaded = &self.input[ready.at];
            if matches!(planned, Planned::Create { .. }) {
                self.note_create(loaded);
            }
            let entry = planned_entry(self.base_entry(loaded), planned);
            self.entries.push((ready.at, entry));
        }
        if self.options.prune_selector.is_some() {
            self.prune::<K, P>(provider).await?;
        }
        Ok(())
    }

    /// Everything the engine's decision needs, or why there is no decision to make.
    async fn prepare<K: ManagedObject, P: Provider<K>>(
        &mut self,
        provider: &P,
        loaded: &Loaded,
        at: usize,
        rules: Option<&kube::core::cel::CompiledSchema>,
    ) -> Result<Prepared<K, P::Inputs>, Settled> {
        let (namespace, name) = self.identity(loaded);
        let mut manifest = loaded.object.clone();
        manifest["metadata"]["namespace"] = Value::String(namespace.clone());
        serde_json::from_value::<K>(manifest.clone())
            .map_err(|e| Settled::blocked(INVALID, format!("{}: {e}", loaded.source)))?;
        let cluster_copy = self.cluster_copy::<K>(&namespace, &name).await?;
        validate_rules(rules, &manifest, cluster_copy.as_ref())
            .map_err(|message| Settled::blocked(INVALID, message))?;
        // The resource as the operator will see it after the apply: the input's spec,
        // the cluster's status and the operator's own annotations (as the view serves it
        // to the providers).
        let mut merged = manifest;
        if let Some(copy) = &cluster_copy {
            merge_cluster_state(&mut merged, copy);
        }
        let obj: K = serde_json::from_value(merged).map_err(|e| {
            Settled::blocked(
                crate::base::conditions::reason::ERROR,
                format!("{}: with the cluster copy's status: {e}", loaded.source),
            )
        })?;
        if let Some(after) = self.created_first(provider, &obj) {
            return Err(after);
        }
        let reference = &obj.managed().connection_ref;
        let client = self
            .connections
            .resolve(&namespace, reference, P::UPSTREAM)
            .await
            .map_err(|b| Settled::blocked(b.reason, b.message))?;
        let inputs = provider
            .resolve(&self.kube, &obj)
            .await
            .map_err(|e| Settled::blocked(e.ready_reason(), e.to_string()))?;
        if let Some(scope) = provider.allowed_scope_of(&obj, Some(&inputs)) {
            self.connections
                .check_scope(reference, &scope)
                .await
                .map_err(|b| Settled::blocked(b.reason, b.message))?;
        }
        let scope = provider.list_scope(&obj).zip(scope_key(provider, &obj));
        Ok(Prepared {
            at,
            obj,
            client,
            inputs,
            scope,
        })
    }

    /// The resources of kind `K` that record an upstream id, in the namespaces the plan
    /// reads (the input's and the default one, as `--prune`: a namespaced Role is enough),
    /// to tell which resource owns which object as the operator does. Offline, or
    /// without the right to list, none (with a warning).
    async fn recorded<K: ManagedObject>(&self) -> Vec<K> {
        let Some(cluster) = &self.cluster else {
            return vec![];
        };
        let mut recorded = vec![];
        for namespace in self.prune_namespaces() {
            match Api::<K>::namespaced(cluster.clone(), &namespace)
                .list(&Default::default())
                .await
            {
                Ok(list) => recorded.extend(
                    list.items
                        .into_iter()
                        .filter(|o| o.managed_status().is_some_and(|s| s.id.is_some())),
                ),
                Err(error) => tracing::warn!(
                    kind = K::kind(&()).as_ref(),
                    %namespace,
                    %error,
                    "cannot list the resources: one naming an object they manage is not shown as AlreadyManaged"
                ),
            }
        }
        recorded
    }

    /// A resource referencing one this plan creates (a toolset under a new Connector):
    /// it cannot exist upstream yet, so it is created after that one.
    fn created_first<K: ManagedObject, P: Provider<K>>(
        &self,
        provider: &P,
        obj: &K,
    ) -> Option<Settled> {
        let namespace = obj.namespace().unwrap_or_default();
        provider.references().into_iter().find_map(|reference| {
            let name = (reference.name)(obj)?;
            let key = (reference.kind.kind.clone(), namespace.clone(), name.to_string());
            self.creates.contains(&key).then(|| Settled {
                action: Action::Create,
                reason: "",
                message: format!(
                    "created after {} {namespace}/{name}, which this plan creates: its requests are known once that one has an upstream id",
                    reference.kind.kind
                ),
            })
        })
    }

    /// The cluster's copy of a resource, if any: its status and the operator's marks, and
    /// the old object of rules about changes (an immutable field). A GET: reads only.
    async fn cluster_copy<K: ManagedObject>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, Settled> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let found = Api::<K>::namespaced(cluster.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| {
                Settled::blocked(
                    crate::base::conditions::reason::ERROR,
                    format!(
                        "cannot read {} {namespace}/{name} from the cluster: {e}",
                        K::kind(&())
                    ),
                )
            })?;
        Ok(found.map(|obj| serde_json::to_value(obj).expect("a resource serializes")))
    }

    /// Where `--prune` looks, as `kubectl apply --prune`, and where owners of upstream
    /// objects are looked for: the namespaces of the input's resources and the default
    /// one (a namespaced Role is then enough to plan).
    fn prune_namespaces(&self) -> std::collections::BTreeSet<String> {
        let managed = crate::kinds::names();
        let mut namespaces: std::collections::BTreeSet<String> = self
            .input
            .iter()
            .filter(|l| l.api_version() == GROUP_VERSION && managed.iter().any(|k| k == l.kind()))
            .map(|l| self.identity(l).0)
            .collect();
        namespaces.insert(self.options.default_namespace.clone());
        namespaces
    }

    fn note_create(&mut self, loaded: &Loaded) {
        let (namespace, name) = self.identity(loaded);
        self.creates
            .insert((loaded.kind().to_string(), namespace, name));
    }

    /// Namespace (the default one when the manifest names none) and name.
    fn identity(&self, loaded: &Loaded) -> (String, String) {
        let meta = &loaded.object["metadata"];
        let namespace = meta["namespace"]
            .as_str()
            .unwrap_or(&self.options.default_namespace);
        (
            namespace.to_string(),
            meta["name"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// The entry of a resource of the input, before its outcome is known.
    fn base_entry(&self, loaded: &Loaded) -> Entry {
        let (namespace, name) = self.identity(loaded);
        let kind = loaded.kind().to_string();
        Entry::new(loaded.source.clone(), kind, namespace, name, Action::NoOp)
    }

    fn entry_of(&self, loaded: &Loaded, settled: Settled) -> Entry {
        Entry {
            action: settled.action,
            reason: (!settled.reason.is_empty()).then(|| settled.reason.to_string()),
            message: Some(settled.message),
            ..self.base_entry(loaded)
        }
    }
}

/// One List per scope with at least two resources to plan (a lone resource is one GET).
/// A List that fails leaves its resources to be read alone.
async fn list_scopes<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    prepared: &[Prepared<K, P::Inputs>],
) -> HashMap<(String, String), HashMap<String, P::Observed>> {
    type Members<'a, K, I> = HashMap<&'a (String, String), Vec<&'a Prepared<K, I>>>;
    let mut members: Members<K, P::Inputs> = HashMap::new();
    for ready in prepared {
        if let Some(scope) = &ready.scope {
            members.entry(scope).or_default().push(ready);
        }
    }
    let mut lists = HashMap::new();
    for (scope, group) in members {
        if group.len() < 2 {
            continue;
        }
        let first = group[0];
        let cx = Cx {
            obj: &first.obj,
            upstream: &first.client,
            inputs: &first.inputs,
        };
        match provider.list(&cx, &scope.0).await {
            Ok(items) => {
                let items = items.into_iter().map(|o| (provider.id_of(&o), o)).collect();
                lists.insert(scope.clone(), items);
            }
            Err(error) => {
                tracing::warn!(scope = %scope.0, %error, "listing the scope failed; reading its objects one by one");
            }
        }
    }
    lists
}
