//! List-coalesced observation (design §2, Scale): when an upstream can list every object
//! of a scope in one call (all persona access controls of a gateway cluster), objects of
//! that scope observed at about the same time are answered from one List instead of one
//! GET each. A snapshot is shared for a short window, fetched single-flight, and dropped
//! as soon as the operator writes into its scope.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::upstream::UpstreamError;

/// One scope's latest List, shared by the observes that wait for it.
type Slot<O> = Arc<tokio::sync::Mutex<Option<Snapshot<O>>>>;

struct Snapshot<O> {
    taken: Instant,
    items: HashMap<String, O>,
}

/// Snapshots by scope key; one per engine (so per kind).
pub struct Observations<O> {
    scopes: Mutex<HashMap<String, Slot<O>>>,
    window: Duration,
}

impl<O: Clone> Observations<O> {
    /// Snapshots answer observes for `window` after their List.
    pub fn new(window: Duration) -> Self {
        Self {
            scopes: Mutex::default(),
            window,
        }
    }

    fn slot(&self, scope: &str) -> Slot<O> {
        self.scopes
            .lock()
            .unwrap()
            .entry(scope.to_string())
            .or_default()
            .clone()
    }

    /// The object `id` of `scope`, from a fresh snapshot or from one new List (callers
    /// that arrive while it runs wait for it instead of listing again).
    pub async fn get<F, Fut>(
        &self,
        scope: &str,
        id: &str,
        list: F,
    ) -> Result<Option<O>, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<(String, O)>, UpstreamError>>,
    {
        let slot = self.slot(scope);
        let mut snapshot = slot.lock().await;
        let fresh = snapshot
            .as_ref()
            .is_some_and(|s| s.taken.elapsed() < self.window);
        if !fresh {
            let items = list().await?.into_iter().collect();
            *snapshot = Some(Snapshot {
                taken: Instant::now(),
                items,
            });
        }
        Ok(snapshot.as_ref().and_then(|s| s.items.get(id).cloned()))
    }

    /// Forgets the snapshot of `scope` after a write into it.
    pub fn invalidate(&self, scope: &str) {
        let mut scopes = self.scopes.lock().unwrap();
        let listing = scopes.get(scope).is_some_and(|slot| match slot.try_lock() {
            Ok(mut snapshot) => {
                *snapshot = None;
                false
            }
            Err(_) => true,
        });
        if listing {
            // A List is running right now; its result predates the write, so drop the slot.
            scopes.remove(scope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn concurrent_observes_share_one_list_and_writes_invalidate() {
        let observations = Arc::new(Observations::<u32>::new(Duration::from_secs(2)));
        let lists = Arc::new(AtomicU32::new(0));
        let list = |lists: Arc<AtomicU32>| async move {
            lists.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok((0..50).map(|i| (format!("id-{i}"), i)).collect())
        };
        let observes = (0..50).map(|i| {
            let (observations, lists) = (observations.clone(), lists.clone());
            async move {
                observations
                    .get("cluster-a", &format!("id-{i}"), || list(lists))
                    .await
                    .unwrap()
            }
        });
        let found = futures::future::join_all(observes).await;
        assert_eq!(found.iter().flatten().count(), 50);
        assert_eq!(lists.load(Ordering::SeqCst), 1);

        observations.invalidate("cluster-a");
        observations
            .get("cluster-a", "id-1", || list(lists.clone()))
            .await
            .unwrap();
        assert_eq!(lists.load(Ordering::SeqCst), 2);
        // Another scope lists on its own.
        observations
            .get("cluster-b", "id-1", || list(lists.clone()))
            .await
            .unwrap();
        assert_eq!(lists.load(Ordering::SeqCst), 3);
    }
}
