//! kube-runtime Controllers: the Connection and ClusterConnection controllers, the
//! namespace watch, and one generic controller per managed kind. Adding a kind is one `managed_controller::<Kind, _>(…)` call in `run`.

use std::fmt::Debug;
use std::sync::Arc;

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::core::NamespaceResourceScope;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};

use super::changes::Changes;
use super::trim::trim_managed;
use crate::api::envelope::ConnectionKind;
use crate::api::{ClusterConnection, Connection};
use crate::base::conditions::{self, READY, reason};
use crate::connections::controller::{
    self as connection, ConnectionContext, ConnectionObject, credentials_secret,
};
use crate::connections::{AccessChange, Connections};
use crate::engine::{self, Engine, ManagedObject, Provider, Reference};

/// Resolves once, when the process is asked to stop; every controller and the server share it.
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

/// What the controllers watch: one namespace or all of them, and which kinds beside the
/// managed ones (ClusterConnections, Secrets).
#[derive(Clone)]
pub struct Watched {
    pub client: kube::Client,
    pub namespace: Option<String>,
    /// Whether resources may use ClusterConnections (watched cluster-wide).
    pub cluster_connections: bool,
    /// Whether the operator reads Secrets where resources live (else only in the
    /// credentials namespace, through ClusterConnections).
    pub read_secrets: bool,
}

impl Watched {
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Where Secrets that resources and Connections name are watched, if anywhere.
    pub fn secrets_api(&self) -> Option<Api<PartialObjectMeta<Secret>>> {
        self.read_secrets.then(|| self.api())
    }

    /// [`Watched::api`] for the metadata of a kind known only at run time.
    pub fn metadata_api(&self, kind: &ApiResource) -> Api<PartialObjectMeta<DynamicObject>> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, kind),
            None => Api::all_with(self.client.clone(), kind),
        }
    }
}

/// A controller ready to run.
pub struct Wired {
    /// Drives the controller until shutdown.
    pub run: BoxFuture<'static, ()>,
    /// Resolves to `true` once the controller's cache holds the initial list.
    pub synced: BoxFuture<'static, bool>,
}

fn synced<K: Resource + Clone + Send + Sync + 'static>(store: Store<K>) -> BoxFuture<'static, bool>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    async move { store.wait_until_ready().await.is_ok() }.boxed()
}

/// The controller of one Connection kind, also triggered when a credentials Secret
/// changes (`secrets`: where they are watched; `None` when the operator may not read
/// them) and, for ClusterConnections, when namespaces change (to count the allowed ones);
/// with its cache.
pub fn connection_controller<C: ConnectionObject>(
    api: Api<C>,
    secrets: Option<Api<PartialObjectMeta<Secret>>>,
    cx: Arc<ConnectionContext>,
    config: controller::Config,
    shutdown: Shutdown,
) -> (Wired, Store<C>) {
    let mut controller = Controller::new(api, watcher::Config::default())
        .with_config(config)
        .graceful_shutdown_on(shutdown);
    let store = controller.store();
    if let Some(secrets) = secrets {
        let mapper_store = store.clone();
        controller = controller.watches_stream(secret_changes(secrets), move |secret| {
            connections_using(&mapper_store, &secret)
        });
    }
    let run = controller
        .run(connection::reconcile, connection::error_policy, cx)
        .for_each(log_result)
        .boxed();
    let wired = Wired {
        run,
        synced: synced(store.clone()),
    };
    (wired, store)
}

/// Watches namespace labels for the registry (which namespaces a ClusterConnection
/// allows) and announces the namespaces whose labels changed, once the cache shows them.
pub fn namespace_watch(
    client: kube::Client,
    connections: Arc<Connections>,
    shutdown: Shutdown,
) -> Wired {
    let (store, writer) = reflector::store();
    connections.watch_namespaces(store.clone());
    let mut labels = Changes::new(predicates::labels);
    // A (re)list announces its namespaces once it is complete: the first one as a whole
    // (everything is new then), later ones each namespace whose labels changed meanwhile.
    let mut relisted = vec![];
    let mut listed_once = false;
    let run = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|ns| {
        ns.metadata.managed_fields = None;
        ns.metadata.annotations = None;
    })
    .reflect(writer)
    .take_until(shutdown)
    .for_each(move |event| {
        match &event {
            Ok(watcher::Event::Apply(ns)) => {
                if labels.changed(ns) {
                    connections.announce(AccessChange::Namespace(ns.name_any()));
                }
            }
            Ok(watcher::Event::Delete(ns)) => {
                connections.announce(AccessChange::Namespace(ns.name_any()));
            }
            Ok(watcher::Event::Init) => relisted.clear(),
            Ok(watcher::Event::InitApply(ns)) => {
                if labels.changed(ns) && listed_once {
                    relisted.push(ns.name_any());
                }
            }
            Ok(watcher::Event::InitDone) => {
                for name in relisted.drain(..) {
                    connections.announce(AccessChange::Namespace(name));
                }
                listed_once = true;
                connections.announce(AccessChange::NamespacesListed);
            }
            Err(error) => tracing::warn!(%error, "namespace watch failed; retrying"),
        }
        future::ready(())
    })
    .boxed();
    Wired {
        run,
        synced: synced(store),
    }
}

/// Keeps each ClusterConnection's `status.allowedNamespaces` current as namespaces come,
/// go and are relabelled: a count from the caches and a merge patch of that one field
/// when it changed (no Secret read, no upstream call, no reconcile).
pub fn allowed_counts(
    client: kube::Client,
    store: Store<ClusterConnection>,
    connections: Arc<Connections>,
    shutdown: Shutdown,
) -> Wired {
    let api: Api<ClusterConnection> = Api::all(client);
    let changes = connections.subscribe();
    let run = changes
        .take_until(shutdown)
        .filter(|change| {
            future::ready(!matches!(
                change,
                Some(AccessChange::ClusterConnection { rule: false, .. })
            ))
        })
        .for_each(move |_| {
            let (api, store, connections) = (api.clone(), store.clone(), connections.clone());
            async move {
                for cc in store.state() {
                    let Some(count) = connections.count_allowed(&cc.spec.allowed_namespaces) else {
                        return;
                    };
                    let shown = cc.status.as_ref().and_then(|s| s.allowed_namespaces);
                    // Not before the controller wrote a status (it owns the conditions).
                    if shown.is_none() || shown == Some(count) {
                        continue;
                    }
                    let patch = serde_json::json!({"status": {"allowedNamespaces": count}});
                    let params = kube::api::PatchParams::default();
                    if let Err(error) = api
                        .patch_status(&cc.name_any(), &params, &kube::api::Patch::Merge(&patch))
                        .await
                    {
                        tracing::warn!(%error, name = %cc.name_any(), "updating allowedNamespaces");
                    }
                }
            }
        })
        .boxed();
    Wired {
        run,
        synced: future::ready(true).boxed(),
    }
}

/// Resolves once every cached Connection and ClusterConnection has been reconciled
/// since start-up (so its client is registered, or why not), or after `limit`. Managed
/// controllers start after it: otherwise every resource reconciled before its Connection
/// would flip to `WaitingForDependency` and back on each restart.
pub async fn connections_settled(
    store: Store<Connection>,
    cluster: Option<Store<ClusterConnection>>,
    connections: Arc<Connections>,
    limit: std::time::Duration,
) {
    let settled = async {
        if store.wait_until_ready().await.is_err() {
            return;
        }
        if let Some(cluster) = &cluster {
            let namespaces = connections.namespaces().cloned();
            if cluster.wait_until_ready().await.is_err() {
                return;
            }
            if let Some(namespaces) = namespaces
                && namespaces.wait_until_ready().await.is_err()
            {
                return;
            }
        }
        let known = |home: String, name: String| connections.is_known(&home, &name);
        while !store.state().iter().all(|c| known(c.home(), c.name_any()))
            || !cluster.iter().all(|cluster| {
                cluster
                    .state()
                    .iter()
                    .all(|c| known(c.home(), c.name_any()))
            })
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(limit, settled).await.is_err() {
        tracing::warn!(
            ?limit,
            "not every Connection was verified in time; starting the resource controllers anyway"
        );
    }
}

/// Secrets that were created, changed or deleted. Metadata only: Secret values never flow
/// through this watch.
fn secret_changes(
    api: Api<PartialObjectMeta<Secret>>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
}

/// Connections whose credentials are this Secret: a namespaced Connection's live in its
/// namespace, a ClusterConnection's in the credentials namespace (the only one watched).
fn connections_using<C: ConnectionObject>(
    store: &Store<C>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<C>> {
    let name = secret.name_any();
    store
        .state()
        .iter()
        .filter(|conn| {
            (C::KIND == ConnectionKind::ClusterConnection || conn.namespace() == secret.namespace())
                && credentials_secret(&***conn).as_deref() == Some(name.as_str())
        })
        .map(|conn| ObjectRef::from_obj(&**conn))
        .collect()
}

/// The controller of one managed kind `K`, reconciled by the engine with provider `P`;
/// with its cache.
pub fn managed_controller<K, P>(
    watched: &Watched,
    engine: Arc<Engine<K, P>>,
    config: controller::Config,
    shutdown: Shutdown,
) -> (Wired, Store<K>)
where
    K: ManagedObject,
    P: Provider<K>,
{
    let (store, writer) = reflector::store();
    // The engine's own status writes change neither generation, finalizers, annotations
    // nor the deletion mark, so they do not trigger another reconcile; resyncs come from
    // requeues. (Whether setting deletionTimestamp bumps the generation is up to the
    // apiserver, so deletion is watched explicitly.)
    // Of the annotations only the user's resync interval: the operator's own are echoes
    // of its writes (and the cache drops them once they are moot, see `trim_managed`).
    let changes = predicates::generation
        .combine(predicates::finalizers)
        .combine(resync_annotation::<K>)
        .combine(being_deleted::<K>);
    let mut changes = Changes::new(changes);
    let objects = watcher(
        watched.api::<K>(),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify({
        let engine = engine.clone();
        move |obj| {
            trim_managed(obj);
            // Which resource records which upstream id, as the cache sees them.
            engine.ownership.saw(obj);
        }
    })
    .reflect(writer)
    .applied_objects()
    .try_filter(move |obj| future::ready(changes.changed(obj)));
    engine.watch_store(store.clone());
    let mapper_store = store.clone();
    let mut controller = Controller::for_stream(objects, store.clone())
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .watches(
            watched.api::<Connection>(),
            watcher::Config::default(),
            move |conn| waiting_on(&mapper_store, &conn),
        );
    if watched.cluster_connections {
        let mapper_store = store.clone();
        let affected = engine.connections.subscribe().flat_map(move |change| {
            futures::stream::iter(affected_by(&mapper_store, change.as_ref()))
        });
        controller = controller.reconcile_on(affected);
    }
    if let (Some(secret_refs), Some(secrets)) = (P::SECRET_REFS, watched.secrets_api()) {
        let (mapper_store, engine) = (store.clone(), engine.clone());
        controller = controller.watches_stream(secret_changes(secrets), move |secret| {
            let readers = reading(&mapper_store, secret_refs, &secret);
            // Their upstream state must be compared with the new Secret content now,
            // even if they were found converged a moment ago.
            readers.iter().for_each(|obj| engine.recheck(obj));
            readers
                .iter()
                .map(|obj| ObjectRef::from_obj(&**obj))
                .collect::<Vec<_>>()
        });
    }
    // Metadata only: the mapper needs only names, and whole objects of the referenced
    // kind (a page of them at a time while the watch lists) would be decoded for nothing.
    for reference in engine.provider.references() {
        let mapper_store = store.clone();
        controller = controller.watches_with(
            watched.metadata_api(&reference.kind),
            reference.kind.clone(),
            watcher::Config::default(),
            move |referenced| waiting_for(&mapper_store, &reference, &referenced),
        );
    }
    let run = controller
        .run(
            engine::reconcile,
            |obj, error, engine| engine.error_policy(&obj, error),
            engine,
        )
        .for_each(log_result)
        .boxed();
    let wired = Wired {
        run,
        synced: synced(store.clone()),
    };
    (wired, store)
}

/// Predicate value of the resync-interval annotation, the one a user sets.
fn resync_annotation<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    obj.annotations()
        .get(engine::requeue::RESYNC_ANNOTATION)
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Objects of `K` that read this Secret.
fn reading<K: ManagedObject>(
    store: &Store<K>,
    secret_refs: fn(&K) -> Vec<String>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<Arc<K>> {
    let name = secret.name_any();
    store
        .state()
        .into_iter()
        .filter(|obj| obj.namespace() == secret.namespace() && secret_refs(obj).contains(&name))
        .collect()
}

/// Objects of `K` that wait for this Connection. Only those: a Connection's status
/// changes must not re-observe every object that uses it.
fn waiting_on<K: ManagedObject>(store: &Store<K>, conn: &Connection) -> Vec<ObjectRef<K>> {
    let name = conn.name_any();
    store
        .state()
        .iter()
        .filter(|obj| {
            let reference = &obj.managed().connection_ref;
            obj.namespace() == conn.namespace()
                && reference.kind() == ConnectionKind::Connection
                && *reference.name == *name
        })
        .filter(|obj| is_waiting_for_dependency(&***obj))
        .map(|obj| ObjectRef::from_obj(&**obj))
        .collect()
}

/// Objects of `K` whose access to a ClusterConnection may have changed: in a relabelled
/// namespace, or using a ClusterConnection whose rule changed (all its users) or that
/// became ready or not (those waiting). `None` (changes were missed): every user of a
/// ClusterConnection.
fn affected_by<K: ManagedObject>(
    store: &Store<K>,
    change: Option<&AccessChange>,
) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|obj| {
            let reference = &obj.managed().connection_ref;
            if reference.kind() != ConnectionKind::ClusterConnection {
                return false;
            }
            match change {
                None => true,
                Some(AccessChange::Namespace(ns)) => obj.namespace().as_ref() == Some(ns),
                // Every namespace (re)listed: resources are reconciled at start-up anyway.
                Some(AccessChange::NamespacesListed) => false,
                Some(AccessChange::ClusterConnection { name, rule }) => {
                    *reference.name == **name && (*rule || is_waiting_for_dependency(&***obj))
                }
            }
        })
        .map(|obj| ObjectRef::from_obj(&**obj))
        .collect()
}

/// Objects of `K` that wait for this referenced object (see [`Reference`]); like
/// [`waiting_on`], only those, so a busy referenced object costs no upstream reads.
fn waiting_for<K: ManagedObject>(
    store: &Store<K>,
    reference: &Reference<K>,
    referenced: &PartialObjectMeta<DynamicObject>,
) -> Vec<ObjectRef<K>> {
    let name = referenced.name_any();
    store
        .state()
        .iter()
        .filter(|obj| {
            obj.namespace() == referenced.namespace()
                && (reference.name)(obj) == Some(name.as_str())
        })
        .filter(|obj| is_waiting_for_dependency(&***obj))
        .map(|obj| ObjectRef::from_obj(&**obj))
        .collect()
}

fn is_waiting_for_dependency<K: ManagedObject>(obj: &K) -> bool {
    obj.managed_status()
        .and_then(|status| conditions::get(&status.conditions, READY))
        .is_some_and(|ready| {
            ready.reason == reason::WAITING_FOR_DEPENDENCY
                || ready.reason == reason::CONNECTION_NOT_ALLOWED
        })
}

async fn log_result<K, E>(
    result: Result<(ObjectRef<K>, Action), controller::Error<E, watcher::Error>>,
) where
    K: Resource,
    K::DynamicType: Debug,
    E: std::error::Error,
{
    match result {
        Ok((obj, action)) => tracing::debug!(object = %obj, ?action, "reconciled"),
        // Reconcile failures were already logged (at warn) by the error policy.
        Err(
            error @ (controller::Error::ReconcilerFailed(..)
            | controller::Error::ObjectNotFound(..)),
        ) => {
            tracing::debug!(%error, "reconcile failed")
        }
        Err(error) => tracing::warn!(%error, "controller"),
    }
}

/// Predicate value that changes when an object is marked for deletion.
fn being_deleted<K: Resource>(obj: &K) -> Option<u64> {
    Some(u64::from(obj.meta().deletion_timestamp.is_some()))
}
