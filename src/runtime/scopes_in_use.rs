//! Keeps each ClusterConnection's `status.scopesInUse` current: the Serval teams,
//! ConductorOne apps and gateway clusters its resources use, counted from the
//! controllers' caches every 30 s (`Timing::scopes_in_use_every`) and written (a merge patch of that one field) only
//! when it changed. No upstream call, and no Kubernetes read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;

use super::controllers::{Shutdown, Wired};
use crate::api::ClusterConnection;
use crate::api::envelope::ConnectionKind;
use crate::engine::{Engine, ManagedObject, Provider};

/// The most scopes a status shows.
const SHOWN: usize = 100;

/// ClusterConnection name → the scopes its resources use.
type InUse = BTreeMap<String, BTreeSet<String>>;

/// One managed kind's cache, counted.
type Source = Box<dyn Fn(&mut InUse) + Send + Sync>;

/// The caches to count, filled as controllers start.
#[derive(Clone, Default)]
pub struct ScopesInUse {
    sources: Arc<Mutex<Vec<Source>>>,
}

impl ScopesInUse {
    /// Counts the resources of `K` in `store`, their scopes as `engine`'s provider says.
    pub fn watch_kind<K: ManagedObject, P: Provider<K>>(
        &self,
        store: Store<K>,
        engine: Arc<Engine<K, P>>,
    ) {
        self.sources.lock().unwrap().push(Box::new(move |in_use| {
            for obj in store.state() {
                let reference = &obj.managed().connection_ref;
                if reference.kind() != ConnectionKind::ClusterConnection {
                    continue;
                }
                if let Some(scope) = engine.provider.allowed_scope_of(&obj, None) {
                    let name = reference.name.to_string();
                    in_use.entry(name).or_default().insert(scope);
                }
            }
        }));
    }

    fn count(&self) -> InUse {
        let mut in_use = InUse::new();
        for source in self.sources.lock().unwrap().iter() {
            source(&mut in_use);
        }
        in_use
    }

    /// `every` so often, the ClusterConnections of `store` whose scopes in use changed
    /// get them written. Not at start: the caches are still filling, and a partial count
    /// would be written and corrected (status churn).
    pub fn keep_current(
        self,
        client: kube::Client,
        store: Store<ClusterConnection>,
        every: Duration,
        shutdown: Shutdown,
    ) -> Wired {
        let api: Api<ClusterConnection> = Api::all(client);
        let run = async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                let in_use = self.count();
                for cc in store.state() {
                    let now: Vec<String> = in_use
                        .get(&cc.name_any())
                        .map(|s| s.iter().take(SHOWN).cloned().collect())
                        .unwrap_or_default();
                    let shown = cc.status.as_ref().map(|s| &s.scopes_in_use);
                    // Not before the controller wrote a status (it owns the conditions).
                    if shown.is_none() || shown == Some(&now) {
                        continue;
                    }
                    let patch = serde_json::json!({"status": {"scopesInUse": now}});
                    let params = PatchParams::default();
                    if let Err(error) = api
                        .patch_status(&cc.name_any(), &params, &Patch::Merge(&patch))
                        .await
                    {
                        tracing::warn!(%error, name = %cc.name_any(), "updating scopesInUse");
                    }
                }
            }
        };
        let run = futures::future::select(run.boxed(), shutdown)
            .map(|_| ())
            .boxed();
        Wired {
            run,
            synced: futures::future::ready(true).boxed(),
        }
    }
}
