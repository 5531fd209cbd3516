//! Upstream clients of ready Connections and ClusterConnections, shared by every
//! controller, and the hub that tells them when who may use a ClusterConnection changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};

use futures::Stream;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::broadcast;

use super::resolution::{self, check_allowed};
use crate::api::Connection;
use crate::api::cluster_connection::{AllowedNamespaces, ClusterConnection};
use crate::api::connection::UpstreamKind;
use crate::api::envelope::{ConnectionKind, ConnectionRef};
use crate::upstream::UpstreamClient;

/// The state of one Connection as the managed-resource controllers see it.
#[derive(Clone)]
enum Entry {
    Ready {
        kind: UpstreamKind,
        client: UpstreamClient,
    },
    NotReady {
        message: String,
    },
}

/// Why a resource cannot use the Connection it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// Missing, not verified yet, failing, or of another upstream: wait for it.
    NotReady(String),
    /// A ClusterConnection that does not allow the resource's namespace.
    NotAllowed(String),
}

/// Something that changes which resources may use a ClusterConnection, announced once
/// the registry reflects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessChange {
    /// A namespace's labels changed (or it appeared or went).
    Namespace(String),
    /// The namespace watch holds every namespace (at start-up): allowed namespaces can be
    /// counted.
    NamespacesListed,
    /// A ClusterConnection's `allowedNamespaces` changed (`rule`) or it became ready or
    /// not ready.
    ClusterConnection { name: String, rule: bool },
}

/// Labels of the cluster's namespaces (metadata only).
pub type NamespaceStore = Store<PartialObjectMeta<Namespace>>;

/// Connections by (namespace, name); ClusterConnections under the namespace "" (no
/// namespace has an empty name).
pub struct Connections {
    entries: RwLock<HashMap<(String, String), Entry>>,
    /// Who may use each ClusterConnection, as last reconciled.
    allowed: RwLock<HashMap<String, AllowedNamespaces>>,
    /// Per ClusterConnection, the scopes its users may touch (absent or empty: all).
    scopes: RwLock<HashMap<String, Vec<String>>>,
    /// The Connection controller's cache: a Connection that is gone from it is not used,
    /// even if it vanished without a reconcile (its finalizer stripped by hand).
    cache: OnceLock<Store<Connection>>,
    cluster_cache: OnceLock<Store<ClusterConnection>>,
    namespaces: OnceLock<NamespaceStore>,
    /// Why ClusterConnections cannot be used at all (the operator watches one namespace).
    cluster_disabled: OnceLock<String>,
    /// The namespace cache held every namespace once (counts are meaningful).
    namespaces_listed: AtomicBool,
    changes: broadcast::Sender<AccessChange>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            entries: RwLock::default(),
            allowed: RwLock::default(),
            scopes: RwLock::default(),
            cache: OnceLock::new(),
            cluster_cache: OnceLock::new(),
            namespaces: OnceLock::new(),
            cluster_disabled: OnceLock::new(),
            namespaces_listed: AtomicBool::new(false),
            // Changes are rare; a subscriber that lags behind 1024 of them re-checks all.
            changes: broadcast::channel(1024).0,
        }
    }
}

impl Connections {
    /// Lets lookups check that a Connection still exists.
    pub fn watch_cache(&self, cache: Store<Connection>) {
        let _ = self.cache.set(cache);
    }

    /// Lets lookups check that a ClusterConnection still exists.
    pub fn watch_cluster_cache(&self, cache: Store<ClusterConnection>) {
        let _ = self.cluster_cache.set(cache);
    }

    /// Lets lookups read namespace labels.
    pub fn watch_namespaces(&self, store: NamespaceStore) {
        let _ = self.namespaces.set(store);
    }

    /// The namespace cache, once set.
    pub fn namespaces(&self) -> Option<&NamespaceStore> {
        self.namespaces.get()
    }

    /// ClusterConnections cannot be used; `why` is told to every resource naming one.
    pub fn disable_cluster_connections(&self, why: String) {
        let _ = self.cluster_disabled.set(why);
    }

    /// The client for a resource in `namespace` with this `connectionRef`, or why there
    /// is none.
    pub fn resolve(
        &self,
        namespace: &str,
        reference: &ConnectionRef,
        want: UpstreamKind,
    ) -> Result<UpstreamClient, Unusable> {
        let name = &*reference.name;
        match reference.kind() {
            ConnectionKind::Connection => {
                self.resolve_entry(ConnectionKind::Connection, namespace, name, want)
            }
            ConnectionKind::ClusterConnection => {
                if let Some(why) = self.cluster_disabled.get() {
                    return Err(Unusable::NotAllowed(format!(
                        "ClusterConnection {name} cannot be used: {why}"
                    )));
                }
                // Access first: a refused namespace learns nothing of the ClusterConnection's
                // state. A namespace not in the cache yet is not judged (its labels are
                // unknown, and a selector with NotIn or DoesNotExist would match an empty
                // set); its arrival is announced.
                let Some(labels) = self.labels_of(namespace) else {
                    return Err(Unusable::NotReady(format!(
                        "namespace {namespace} is not in the operator's namespace cache yet; ClusterConnection {name} is checked once it is"
                    )));
                };
                match self.allowed.read().unwrap().get(name) {
                    None => {
                        let label = resolution::label(ConnectionKind::ClusterConnection, "", name);
                        return Err(not_verified(&label));
                    }
                    Some(rule) => check_allowed(name, rule, namespace, &labels)?,
                }
                self.resolve_entry(ConnectionKind::ClusterConnection, "", name, want)
            }
        }
    }

    /// `namespace` "" for a ClusterConnection.
    fn resolve_entry(
        &self,
        kind: ConnectionKind,
        namespace: &str,
        name: &str,
        want: UpstreamKind,
    ) -> Result<UpstreamClient, Unusable> {
        // Only failures are described (a resolve happens on every reconcile).
        let label = || resolution::label(kind, namespace, name);
        let gone = if namespace.is_empty() {
            self.cluster_cache
                .get()
                .is_some_and(|cache| cache.get(&ObjectRef::new(name)).is_none())
        } else {
            self.cache
                .get()
                .is_some_and(|cache| cache.get(&ObjectRef::new(name).within(namespace)).is_none())
        };
        if gone {
            self.remove(namespace, name);
            return Err(Unusable::NotReady(format!("{} does not exist", label())));
        }
        let entries = self.entries.read().unwrap();
        match entries.get(&(namespace.to_string(), name.to_string())) {
            None => Err(not_verified(&label())),
            Some(Entry::NotReady { message }) => Err(resolution::not_ready(&label(), message)),
            Some(Entry::Ready { kind, .. }) if *kind != want => {
                Err(resolution::wrong_upstream(&label(), *kind, want))
            }
            Some(Entry::Ready { client, .. }) => Ok(client.clone()),
        }
    }

    /// How many namespaces `rule` allows now; `None` until the namespace cache is full.
    pub fn count_allowed(&self, rule: &AllowedNamespaces) -> Option<u32> {
        if !self.namespaces_listed.load(Ordering::Acquire) {
            return None;
        }
        let store = self.namespaces.get()?;
        let allowed = store
            .state()
            .iter()
            .filter(|ns| {
                let name = ns.metadata.name.as_deref().unwrap_or_default();
                rule.allows(
                    name,
                    ns.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
                )
            })
            .count();
        Some(u32::try_from(allowed).unwrap_or(u32::MAX))
    }

    /// The labels of `namespace`, if the cache holds it.
    fn labels_of(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        let ns = self.namespaces.get()?.get(&ObjectRef::new(namespace))?;
        Some(ns.metadata.labels.clone().unwrap_or_default())
    }

    /// Records who may use the ClusterConnection `name`; true when that changed.
    pub fn set_allowed(&self, name: &str, rule: &AllowedNamespaces) -> bool {
        let mut allowed = self.allowed.write().unwrap();
        if allowed.get(name) == Some(rule) {
            return false;
        }
        allowed.insert(name.to_string(), rule.clone());
        true
    }

    /// Records the scopes the ClusterConnection `name` allows; true when that changed.
    pub fn set_scopes(&self, name: &str, scopes: Vec<String>) -> bool {
        let mut all = self.scopes.write().unwrap();
        if all.get(name) == Some(&scopes) {
            return false;
        }
        all.insert(name.to_string(), scopes);
        true
    }

    /// Whether a resource of scope `scope` (its team, app or gateway cluster) may use the
    /// ClusterConnection `name`; `Err` says why not.
    pub fn check_scope(&self, name: &str, scope: &str) -> Result<(), String> {
        let all = self.scopes.read().unwrap();
        let allowed = all.get(name).map(Vec::as_slice).unwrap_or_default();
        super::resolution::check_scope(name, allowed, scope)
    }

    /// Records a verified Connection (`namespace` "" for a ClusterConnection).
    pub fn set_ready(
        &self,
        namespace: &str,
        name: &str,
        kind: UpstreamKind,
        client: UpstreamClient,
    ) {
        self.insert(namespace, name, Entry::Ready { kind, client });
    }

    /// Records a Connection that cannot be used, with the reason shown to dependants.
    pub fn set_not_ready(&self, namespace: &str, name: &str, message: String) {
        self.insert(namespace, name, Entry::NotReady { message });
    }

    /// Forgets a deleted Connection.
    pub fn remove(&self, namespace: &str, name: &str) {
        self.entries
            .write()
            .unwrap()
            .remove(&(namespace.to_string(), name.to_string()));
        if namespace.is_empty() {
            self.allowed.write().unwrap().remove(name);
        }
    }

    /// Whether the Connection was reconciled since start-up (verified or not).
    pub fn is_known(&self, namespace: &str, name: &str) -> bool {
        self.entries
            .read()
            .unwrap()
            .contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// Whether the Connection is ready.
    pub fn is_ready(&self, namespace: &str, name: &str) -> bool {
        self.client(namespace, name).is_some()
    }

    /// The client currently registered for a Connection, ready or not.
    pub fn client(&self, namespace: &str, name: &str) -> Option<UpstreamClient> {
        match self
            .entries
            .read()
            .unwrap()
            .get(&(namespace.to_string(), name.to_string()))
        {
            Some(Entry::Ready { client, .. }) => Some(client.clone()),
            _ => None,
        }
    }

    fn insert(&self, namespace: &str, name: &str, entry: Entry) {
        self.entries
            .write()
            .unwrap()
            .insert((namespace.to_string(), name.to_string()), entry);
    }

    /// Tells every subscriber about a change the registry now reflects.
    pub fn announce(&self, change: AccessChange) {
        if change == AccessChange::NamespacesListed {
            self.namespaces_listed.store(true, Ordering::Release);
        }
        // No subscriber (no controller running yet) is fine.
        let _ = self.changes.send(change);
    }

    /// The changes announced from now on. A subscriber that fell behind gets `None` for
    /// what it missed (it should re-check everything).
    pub fn subscribe(&self) -> impl Stream<Item = Option<AccessChange>> + Send + 'static {
        let receiver = self.changes.subscribe();
        futures::stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok(change) => Some((Some(change), receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some((None, receiver)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }
}

/// A Connection the controller has not reconciled (yet) since start-up.
fn not_verified(label: &str) -> Unusable {
    Unusable::NotReady(format!(
        "{label} is not ready (not found or not yet verified)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::connection::ConnectionSpec;
    use crate::saas::{self, SecretData};
    use k8s_openapi::ByteString;
    use kube::runtime::{reflector, watcher};
    use serde_json::json;

    fn client() -> UpstreamClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let spec: ConnectionSpec =
            serde_json::from_value(json!({"serval": {"credentialsSecretRef": {"name": "s"}}}))
                .unwrap();
        let data =
            SecretData::new([("bearerToken".to_string(), ByteString(b"t0ken".to_vec()))].into());
        saas::connect(&spec, &data, Default::default()).unwrap().1
    }

    fn namespace(name: &str, labels: serde_json::Value) -> PartialObjectMeta<Namespace> {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }))
        .unwrap()
    }

    fn shared() -> ConnectionRef {
        ConnectionRef {
            kind: Some(ConnectionKind::ClusterConnection),
            name: "shared".into(),
        }
    }

    /// A namespace the cache does not hold yet is not judged: its labels are unknown and
    /// `DoesNotExist` would match an empty set. A refused namespace is told so before
    /// anything about the ClusterConnection's state.
    #[test]
    fn access_is_decided_on_known_labels_only() {
        let connections = Connections::default();
        let (store, mut writer) = reflector::store();
        connections.watch_namespaces(store);
        let rule: AllowedNamespaces = serde_json::from_value(json!({"namespaceSelector": {
            "matchExpressions": [{"key": "restricted", "operator": "DoesNotExist"}]}}))
        .unwrap();
        connections.set_allowed("shared", &rule);
        connections.set_not_ready("", "shared", "AuthenticationFailed: secret text".into());
        let resolve = |ns: &str| connections.resolve(ns, &shared(), UpstreamKind::Serval);

        assert!(
            matches!(resolve("new"), Err(Unusable::NotReady(m)) if m.contains("namespace cache"))
        );
        writer.apply_watcher_event(&watcher::Event::Apply(namespace(
            "new",
            json!({"restricted": "yes"}),
        )));
        writer.apply_watcher_event(&watcher::Event::Apply(namespace("open", json!({}))));
        let refused = resolve("new");
        assert!(
            matches!(&refused, Err(Unusable::NotAllowed(m)) if !m.contains("secret text")),
            "{refused:?}"
        );
        assert!(
            matches!(resolve("open"), Err(Unusable::NotReady(m)) if m.contains("AuthenticationFailed"))
        );
        connections.set_ready("", "shared", UpstreamKind::Serval, client());
        assert!(resolve("open").is_ok());
        assert!(
            matches!(
                connections.resolve("open", &shared(), UpstreamKind::Instaclustr),
                Err(Unusable::NotReady(_))
            ),
            "a ClusterConnection of another upstream"
        );
        // A namespaced Connection of the same name is another object.
        assert!(matches!(
            connections.resolve("open", &ConnectionRef::local("shared"), UpstreamKind::Serval),
            Err(Unusable::NotReady(m)) if m.starts_with("Connection open/shared")
        ));
    }
}
