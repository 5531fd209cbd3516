//! How a pass reads its object: from a List of its scope when that pays off (see
//! [`Observations`]), else one GET; and the bookkeeping that makes a List answer for
//! the operator's own writes only once they show.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use super::Engine;
use crate::api::envelope::{ManagementPolicy, PendingOperation, PendingWrite};
use crate::base::clock::elapsed;
use crate::engine::decision::{Given, Read, Reader, absent_when_unlisted};
use crate::engine::observation::{Listed, Lookup, Purpose};
use crate::engine::{Cx, EngineError, ManagedObject, Provider, recorded_id};

/// The reads of a live object's pass, for `purpose`.
pub(super) struct PassReader<'a, K: ManagedObject, P: Provider<K>> {
    pub engine: &'a Engine<K, P>,
    pub purpose: Purpose,
    pub given: &'a Given<'a>,
}

impl<K: ManagedObject, P: Provider<K>> Reader<K, P> for PassReader<'_, K, P> {
    async fn read(
        &self,
        cx: &Cx<'_, K, P::Inputs>,
        id: &str,
    ) -> Result<Read<P::Observed>, EngineError> {
        let engine = self.engine;
        // Reading back an accepted write waits until it is due to show.
        let purpose = match self.purpose {
            Purpose::Current if engine.reads_back_accepted_write(cx.obj, id, self.given) => {
                engine.awaiting(cx.obj, id, self.given);
                Purpose::Confirm
            }
            other => other,
        };
        let (mut observed, from_snapshot) = match engine.observe_or_wait(cx, id, purpose).await? {
            Observation::Now {
                observed,
                from_snapshot,
            } => (observed, from_snapshot),
            Observation::Later(wait) => return Ok(Read::Later(wait)),
        };
        // Updates send whole sub-objects completed from the observed state (Serval grants,
        // gateway tool lists), so no write may rest on a resync's snapshot, which can be
        // minutes old: drift found in one is read again before it is corrected. (Other
        // reads take snapshots at most a list window old.)
        if from_snapshot
            && purpose == Purpose::Resync
            && cx.obj.managed().management() != ManagementPolicy::Observe
            && observed
                .as_ref()
                .is_some_and(|o| !engine.provider.diff(cx, o).is_empty())
        {
            observed = engine.provider.observe(cx, id).await?;
        }
        Ok(Read::Now(observed))
    }
}

/// The reads of a deletion: current, never waiting for a List.
pub(super) struct CurrentReader<'a, K: ManagedObject, P: Provider<K>> {
    pub engine: &'a Engine<K, P>,
}

impl<K: ManagedObject, P: Provider<K>> Reader<K, P> for CurrentReader<'_, K, P> {
    async fn read(
        &self,
        cx: &Cx<'_, K, P::Inputs>,
        id: &str,
    ) -> Result<Read<P::Observed>, EngineError> {
        let observed = match self
            .engine
            .observe_or_wait(cx, id, Purpose::Current)
            .await?
        {
            Observation::Now { observed, .. } => observed,
            // This read cannot wait for the scope's next List: read the object now.
            Observation::Later(_) => self.engine.provider.observe(cx, id).await?,
        };
        Ok(Read::Now(observed))
    }
}

/// What observing found, or when to look again (see [`Engine::observe_or_wait`]).
pub(super) enum Observation<O> {
    /// The state now; `from_snapshot` when a List snapshot answered (for a resync, up to
    /// `Timing::resync_snapshot_age` old).
    Now {
        observed: Option<O>,
        from_snapshot: bool,
    },
    Later(Duration),
}

impl<K: ManagedObject, P: Provider<K>> Engine<K, P> {
    /// Reads one object, from a List of its scope when that pays off, or — when it reads
    /// back the operator's own write — says when the List of its scope that will answer
    /// it is due.
    async fn observe_or_wait(
        &self,
        cx: &Cx<'_, K, P::Inputs>,
        id: &str,
        purpose: Purpose,
    ) -> Result<Observation<P::Observed>, EngineError> {
        let (Some(scope), Some(key)) = (self.provider.list_scope(cx.obj), self.scope_key(cx.obj))
        else {
            return Ok(Observation::Now {
                observed: self.provider.observe(cx, id).await?,
                from_snapshot: false,
            });
        };
        let list = || async {
            let items = self.provider.list(cx, &scope).await?;
            let pages = items.len().div_ceil(P::LIST_PAGE_SIZE).max(1);
            let items = items
                .into_iter()
                .map(|o| (self.provider.id_of(&o), o))
                .collect();
            Ok(Listed { items, pages })
        };
        let members = match purpose {
            Purpose::Resync => self.members(&key).await,
            Purpose::Current | Purpose::Confirm => 0,
        };
        let members = || members;
        let lookup = self
            .observations
            .get(&key, id, purpose, members, list)
            .await?;
        let from_snapshot = matches!(lookup, Lookup::Found(_));
        let observed = match lookup {
            Lookup::Found(listed) => Some(self.provider.complete(cx, listed).await?),
            Lookup::Absent if absent_when_unlisted(&self.provider, cx.obj) => None,
            Lookup::Absent | Lookup::Unknown => self.provider.observe(cx, id).await?,
            Lookup::Later(wait) => return Ok(Observation::Later(wait)),
        };
        Ok(Observation::Now {
            observed,
            from_snapshot,
        })
    }

    /// Whether this pass reads back an accepted asynchronous write of `id`: a create, or
    /// an update of the current generation (or what a stale cached copy shows of one: a
    /// create attempted at the deterministic id).
    fn reads_back_accepted_write(&self, obj: &K, id: &str, given: &Given<'_>) -> bool {
        let generation = obj.meta().generation.unwrap_or_default();
        let attempted = given.create_sent_within_grace(obj).is_some();
        let ours = recorded_id(obj).as_deref() == Some(id)
            || self.provider.deterministic_id(obj).as_deref() == Some(id);
        (attempted && ours)
            || given
                .pending_within_grace(obj, PendingOperation::Create)
                .is_some()
            || given
                .pending_within_grace(obj, PendingOperation::Update)
                .is_some_and(|p| p.generation == generation)
    }

    /// A write (even a failed one) to `id`: Lists taken before it no longer answer for it.
    /// `accepted`: the upstream accepted it to apply later (it is to be read back).
    pub(super) fn wrote(&self, obj: &K, id: &str, accepted: bool) {
        if let Some(key) = self.scope_key(obj) {
            self.observations.wrote(&key, id, accepted);
        }
    }

    /// This pass reads back an accepted write of `id` (its status or this engine says
    /// so); a write made before a restart is awaited from its request time.
    fn awaiting(&self, obj: &K, id: &str, given: &Given<'_>) {
        let Some(key) = self.scope_key(obj) else {
            return;
        };
        let requested = [PendingOperation::Create, PendingOperation::Update]
            .into_iter()
            .find_map(|operation| given.pending_within_grace(obj, operation))
            .map(|pending| pending_wait(&pending, given.now));
        self.observations
            .awaiting(&key, id, requested.unwrap_or_default());
    }

    /// What reading back an awaited write of `id` found (see `Observations::looked`).
    pub(super) fn looked(&self, obj: &K, id: &str, visible: bool) {
        if let Some(key) = self.scope_key(obj) {
            self.observations.looked(&key, id, visible);
        }
    }

    /// When to look first at a write of `id` the upstream just accepted.
    pub(super) fn first_look(&self, obj: &K, id: &str) -> Duration {
        self.scope_key(obj)
            .and_then(|key| self.observations.next_look(&key, id))
            .unwrap_or_else(|| self.timing.pending_poll(Duration::ZERO))
    }

    /// A read-back found the accepted write `pending` not applied yet: when to look again.
    pub(super) fn not_visible_yet(
        &self,
        obj: &K,
        id: &str,
        pending: &PendingWrite,
        now: Timestamp,
    ) -> Duration {
        self.looked(obj, id, false);
        self.scope_key(obj)
            .and_then(|key| self.observations.next_look(&key, id))
            .unwrap_or_else(|| self.timing.pending_poll(pending_wait(pending, now)))
    }

    /// How many cached objects share the scope `key` (recounted once per list window).
    async fn members(&self, key: &str) -> usize {
        let Some(store) = self.store.get() else {
            return 0;
        };
        // At start-up the cache fills only once the initial list is complete, while the
        // first objects are already being reconciled: wait for it (briefly).
        let ready = tokio::time::timeout(self.timing.list_window, store.wait_until_ready())
            .await
            .is_ok_and(|r| r.is_ok());
        if !ready {
            return 0;
        }
        let mut members = self.members.lock().unwrap();
        let stale = members
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= self.timing.list_window);
        if stale {
            let mut counts = HashMap::new();
            for obj in store.state() {
                if let Some(key) = self.scope_key(&obj) {
                    *counts.entry(key).or_insert(0) += 1;
                }
            }
            *members = Some((Instant::now(), counts));
        }
        members
            .as_ref()
            .and_then(|(_, counts)| counts.get(key).copied())
            .unwrap_or(0)
    }
}

/// How long ago `pending` was requested.
pub(super) fn pending_wait(pending: &PendingWrite, now: Timestamp) -> Duration {
    pending
        .requested_at
        .parse()
        .map(|t| elapsed(t, now))
        .unwrap_or_default()
}
