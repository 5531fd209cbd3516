//! Upstream clients of ready Connections, shared by every controller.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::Connection;

use crate::api::connection::UpstreamKind;
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

/// Connections by (namespace, name).
#[derive(Default)]
pub struct Connections {
    entries: RwLock<HashMap<(String, String), Entry>>,
    /// The Connection controller's cache: a Connection that is gone from it is not used,
    /// even if it vanished without a reconcile (its finalizer stripped by hand).
    cache: OnceLock<Store<Connection>>,
}

impl Connections {
    /// Lets lookups check that a Connection still exists.
    pub fn watch_cache(&self, cache: Store<Connection>) {
        let _ = self.cache.set(cache);
    }

    /// The client of a ready Connection of the wanted upstream, or why there is none.
    pub fn resolve(
        &self,
        namespace: &str,
        name: &str,
        want: UpstreamKind,
    ) -> Result<UpstreamClient, String> {
        let gone = self
            .cache
            .get()
            .is_some_and(|cache| cache.get(&ObjectRef::new(name).within(namespace)).is_none());
        if gone {
            self.remove(namespace, name);
            return Err(format!("Connection {namespace}/{name} does not exist"));
        }
        let entries = self.entries.read().unwrap();
        match entries.get(&(namespace.to_string(), name.to_string())) {
            None => Err(format!(
                "Connection {namespace}/{name} is not ready (not found or not yet verified)"
            )),
            Some(Entry::NotReady { message }) => Err(format!(
                "Connection {namespace}/{name} is not ready: {message}"
            )),
            Some(Entry::Ready { kind, .. }) if *kind != want => Err(format!(
                "Connection {namespace}/{name} points at {}, but this kind needs spec.{}",
                kind.field(),
                want.field()
            )),
            Some(Entry::Ready { client, .. }) => Ok(client.clone()),
        }
    }

    /// Records a verified Connection.
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
    }

    /// Whether the Connection was reconciled since start-up (verified or not).
    pub fn is_known(&self, namespace: &str, name: &str) -> bool {
        self.entries
            .read()
            .unwrap()
            .contains_key(&(namespace.to_string(), name.to_string()))
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
}
