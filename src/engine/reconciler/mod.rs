//! The reconciler: one pass of one object, written once for every kind. It takes the
//! decision ([`super::decision`], [`super::deletion`]) and executes it, by stage:
//!
//! - this file: the [`Engine`], and the start of a pass (finalizer, holds, the echo of
//!   the engine's own writes, resync slots);
//! - [`read`]: how a pass reads (one List per scope where that pays off);
//! - [`converge`]: executing a [`super::decision::Step`] (create mark, send, record);
//! - [`finalize`]: executing a deletion;
//! - [`status`]: the pass's verdict written to status, events, requeue.

mod converge;
mod finalize;
mod read;
mod status;

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use tracing::Instrument;

use super::decision::Given;
use super::identity::ObjectKey;
use super::memory::{Memory, Record};
use super::observation::{Observations, Purpose};
use super::ownership::{self, Claim, OwnerOf, Ownership};
use super::requeue::{RESYNC_ANNOTATION, Timing, wave_delay};
use super::schedule::ResyncSlots;
use super::{
    CreateMark, EngineError, ManagedObject, Provider, annotation, create_in_doubt, create_mark,
    effective_deletion_policy, metrics::ReconcileMetrics, recorded_id,
};
use crate::api::envelope::{ConnectionKind, DeletionPolicy, ManagementPolicy};
use crate::base::clock::{Clock, elapsed};
use crate::base::conditions::{self, READY, SYNCED};
use crate::base::events::{EventPublisher, Note};
use crate::base::kube_ops::{self, has_finalizer};
use crate::connections::{Connections, Unusable};
use crate::fence::Fence;
use crate::upstream::UpstreamClient;

/// Everything a kind's controller needs; one per kind.
pub struct Engine<K: ManagedObject, P: Provider<K>> {
    pub kube: kube::Client,
    pub provider: P,
    pub connections: Arc<Connections>,
    pub events: EventPublisher,
    pub clock: Arc<dyn Clock>,
    pub timing: Timing,
    pub metrics: ReconcileMetrics,
    /// Per-object bookkeeping (see [`Memory`]).
    memory: Memory,
    observations: Observations<P::Observed>,
    /// The controller's cache of objects, to count the members of a list scope.
    store: OnceLock<Store<K>>,
    /// Which resource records which upstream id (one owner per upstream object).
    pub ownership: Ownership,
    /// Members per scope key, counted at most once per list window.
    members: Mutex<Option<(Instant, HashMap<String, usize>)>>,
    /// Spreads resyncs at their own rate (fair scheduling, see [`ResyncSlots`]).
    resync_slots: ResyncSlots,
    /// When the memory was last pruned of objects gone from the cache.
    pruned: Mutex<Timestamp>,
    /// Lets upstream writes go only while this replica leads (see [`crate::fence`]); the
    /// Kubernetes client is fenced by whoever builds it.
    fence: Fence,
    kind: PhantomData<fn() -> K>,
}

/// Reconciles one object: the entry point given to the kube-runtime controller.
pub async fn reconcile<K: ManagedObject, P: Provider<K>>(
    obj: Arc<K>,
    engine: Arc<Engine<K, P>>,
) -> Result<Action, EngineError> {
    let kind = K::kind(&());
    let span = tracing::info_span!("reconcile", kind = %kind, namespace = %obj.namespace().unwrap_or_default(), object = %obj.name_any());
    let started = Instant::now();
    let result = engine.reconcile_object(&obj).instrument(span).await;
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.metric_label(),
    };
    engine
        .metrics
        .observe(&kind, label, started.elapsed().as_secs_f64());
    result
}

impl<K: ManagedObject, P: Provider<K>> Engine<K, P> {
    pub fn new(
        kube: kube::Client,
        provider: P,
        connections: Arc<Connections>,
        events: EventPublisher,
        clock: Arc<dyn Clock>,
        timing: Timing,
        metrics: ReconcileMetrics,
    ) -> Self {
        let observations = Observations::new(
            timing.list_window,
            timing.resync_snapshot_age(),
            timing.confirming(),
        );
        let resync_slots = ResyncSlots::new(timing.resync_rate);
        let pruned = Mutex::new(clock.now());
        Self {
            kube,
            provider,
            connections,
            events,
            clock,
            timing,
            metrics,
            memory: Memory::default(),
            observations,
            store: OnceLock::new(),
            ownership: Ownership::default(),
            members: Mutex::default(),
            resync_slots,
            pruned,
            fence: Fence::open(),
            kind: PhantomData,
        }
    }

    /// Sends upstream writes only while `fence` is open and tells create marks of other
    /// replicas apart (leader election); without it the engine writes freely.
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
    }

    /// How many objects the engine keeps per-object bookkeeping for.
    #[doc(hidden)]
    pub fn tracked_objects(&self) -> usize {
        self.memory.tracked()
    }

    /// An object deleted without a last pass through the engine (its finalizer removed by
    /// hand, so no reconcile sees it go) would keep its record for good; once per resync
    /// interval, those of objects no longer in the cache are dropped.
    fn prune_vanished(&self) {
        let Some(store) = self.store.get() else {
            return;
        };
        let now = self.clock.now();
        {
            let mut pruned = self.pruned.lock().unwrap();
            if elapsed(*pruned, now) < self.timing.resync {
                return;
            }
            *pruned = now;
        }
        let live: HashSet<ObjectKey> = store
            .state()
            .iter()
            .map(|obj| ObjectKey::of(obj.meta()))
            .collect();
        // An empty cache is one not filled yet, not a kind without objects to keep.
        if live.is_empty() {
            return;
        }
        self.memory.retain(&live);
        self.resync_slots.retain(|key| live.contains(key));
    }

    /// Gives the engine the controller's object cache (it groups objects by list scope).
    pub fn watch_store(&self, store: Store<K>) {
        let _ = self.store.set(store);
    }

    /// The resource (`namespace/name`) other than `obj` that owns the upstream object
    /// `id` of the tenant `tenant`, if any: from the cache alone (see [`Ownership`]).
    /// `tenant`: `None` when `obj`'s own Connection is not usable (then any tenant's).
    pub(super) fn owner_of(&self, obj: &K, tenant: Option<&str>, id: &str) -> Option<String> {
        if self.ownership.claim(obj, id) == Claim::Free {
            return None;
        }
        let store = self.store.get()?;
        let records = |o: &K| o.managed_status().and_then(|s| s.id.as_deref()) == Some(id);
        let others: Vec<Arc<K>> = store
            .state()
            .into_iter()
            .filter(|o| records(o) && ownership::label(&**o) != ownership::label(obj))
            .collect();
        if others.is_empty() {
            self.ownership.settle(obj, id);
            return None;
        }
        others
            .iter()
            .filter(|other| ownership::owns_rather(&***other, obj, id))
            .find(|other| match (tenant, self.tenant_of(other)) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            })
            .map(|owner| ownership::label(&**owner))
    }

    /// Which other resource owns an upstream id, for the decisions about `obj` (whose
    /// Connection reaches `tenant`; `None`: not usable now, any tenant counts).
    pub(super) fn owners<'a>(
        &'a self,
        obj: &'a K,
        tenant: Option<String>,
    ) -> impl Fn(&str) -> Option<String> + Sync + 'a {
        move |id: &str| self.owner_of(obj, tenant.as_deref(), id)
    }

    /// The tenant of `obj`'s Connection, when it is usable.
    pub(super) fn tenant_of(&self, obj: &K) -> Option<String> {
        let ns = obj.namespace().unwrap_or_default();
        let reference = &obj.managed().connection_ref;
        let client = self.connections.resolve(&ns, reference, P::UPSTREAM).ok()?;
        Some(client.tenant())
    }

    /// Makes the next pass of `obj` read the upstream even if it was found converged a
    /// moment ago: something it depends on (a Secret it reads) changed. Also when a pass
    /// of it is running: that pass may have read the old content.
    pub fn recheck(&self, obj: &K) {
        self.memory.update(Self::key(obj), |record| {
            record.confirmed = None;
            record.rechecks += 1;
        });
    }

    /// Requeue delay after a Kubernetes API error (the only errors returned to the controller).
    pub fn error_policy(&self, obj: &K, error: &EngineError) -> Action {
        if error.is_fenced() {
            // Not the leader any more: the process is on its way out; nothing to retry.
            tracing::warn!(name = %obj.name_any(), "pass stopped: {error}");
            return Action::await_change();
        }
        tracing::warn!(%error, name = %obj.name_any(), "reconcile failed");
        Action::requeue(self.timing.error_backoff(self.bump_failures(obj)))
    }

    async fn reconcile_object(&self, obj: &K) -> Result<Action, EngineError> {
        self.prune_vanished();
        let api: Api<K> = Api::namespaced(self.kube.clone(), &obj.namespace().unwrap_or_default());
        // Read once: everything this pass decides on. A recheck asked for from now on
        // outdates the pass.
        let record = self.memory.begin(Self::key(obj), obj.managed_status());
        if obj.meta().deletion_timestamp.is_some() {
            if !has_finalizer(obj) {
                return Ok(Action::await_change());
            }
            if effective_deletion_policy(obj) == DeletionPolicy::Delete
                && let Some(wait) = self.terminal_hold(obj, &record)
            {
                tracing::debug!(
                    ?wait,
                    "the upstream refused the deletion at this generation; not calling it yet"
                );
                return Ok(Action::requeue(wait));
            }
            let verdict = self.finalize(&api, obj, &record).await;
            return self.finish(&api, obj, &record, verdict).await;
        }
        // A new resource gets its finalizer in the same write as its create mark (or its
        // adoption mark): until then nothing upstream depends on it. One metadata write
        // per created resource.
        let obj = if has_finalizer(obj) || brand_new(obj) {
            obj.clone()
        } else {
            kube_ops::add_finalizer(&api, obj).await?
        };
        if let Some(wait) = self.terminal_hold(&obj, &record) {
            tracing::debug!(
                ?wait,
                "terminal error at this generation; not calling the upstream yet"
            );
            return Ok(Action::requeue(wait));
        }
        // Losing access to a ClusterConnection (a relabelled namespace) is said at once,
        // even by an object found converged a moment ago.
        if obj.managed().connection_ref.kind() == ConnectionKind::ClusterConnection
            && let Err(refused @ EngineError::ConnectionNotAllowed(_)) = self.upstream(&obj)
        {
            return self.finish(&api, &obj, &record, Err(refused)).await;
        }
        // So is a slice of the tenant that no longer holds the object (`allowedScopes`).
        if let Err(refused) = self.check_scope(&obj, None) {
            return self.finish(&api, &obj, &record, Err(refused)).await;
        }
        // The echo of this engine's own writes (finalizer, annotations, status), possibly
        // seen through a cache that does not show the status yet: nothing to check.
        if self.recently_confirmed(&obj, &record) {
            tracing::trace!("found converged a moment ago; nothing to check before the next wave");
            return Ok(Action::requeue(self.resync(&obj)));
        }
        let purpose = if converged(&obj) {
            Purpose::Resync
        } else {
            Purpose::Current
        };
        match purpose {
            Purpose::Resync => {
                if let Some(wait) = self.resync_slots.reserve(Self::key(&obj)) {
                    tracing::trace!(?wait, "resync deferred to its slot");
                    return Ok(Action::requeue(wait));
                }
            }
            // A change is handled now; any resync slot it held is moot.
            Purpose::Current | Purpose::Confirm => self.resync_slots.forget(Self::key(&obj)),
        }
        let verdict = self.converge(&api, &obj, &record, purpose).await;
        self.finish(&api, &obj, &record, verdict).await
    }

    /// What a pass starting now knows besides the object: its record and, when a create
    /// is in doubt, how long another replica's create may still take to arrive.
    fn given<'a>(
        &'a self,
        obj: &K,
        record: &'a Record,
        upstream: &UpstreamClient,
        owner: OwnerOf<'a>,
    ) -> Given<'a> {
        let now = self.clock.now();
        let mut given = Given {
            now,
            timing: &self.timing,
            learned: record.learned.as_deref(),
            create_in_flight: None,
            owner: Some(owner),
        };
        if given.create_in_doubt(obj) {
            given.create_in_flight = self.create_of_another_replica_in_flight(obj, upstream, now);
        }
        given
    }

    /// What a pass needs to reach the upstream: the Connection's client and the inputs
    /// the provider resolves from Kubernetes.
    async fn reach(&self, obj: &K) -> Result<(UpstreamClient, P::Inputs), EngineError> {
        let upstream = self.upstream(obj)?;
        let inputs = self.provider.resolve(&self.kube, obj).await?;
        self.check_scope(obj, Some(&inputs))?;
        Ok((upstream, inputs))
    }

    /// Whether `obj`'s team, app or gateway cluster is in the slice of the tenant its
    /// ClusterConnection hands out (`allowedScopes`); namespaced Connections hand out
    /// the whole tenant.
    fn check_scope(&self, obj: &K, inputs: Option<&P::Inputs>) -> Result<(), EngineError> {
        let reference = &obj.managed().connection_ref;
        if reference.kind() != ConnectionKind::ClusterConnection {
            return Ok(());
        }
        let Some(scope) = self.provider.allowed_scope_of(obj, inputs) else {
            return Ok(());
        };
        self.connections
            .check_scope(&reference.name, &scope)
            .map_err(EngineError::ScopeNotAllowed)
    }

    fn upstream(&self, obj: &K) -> Result<UpstreamClient, EngineError> {
        let ns = obj.namespace().unwrap_or_default();
        let client = self
            .connections
            .resolve(&ns, &obj.managed().connection_ref, P::UPSTREAM)
            .map_err(|unusable| match unusable {
                Unusable::NotReady(message) => EngineError::Dependency(message),
                Unusable::NotAllowed(message) => EngineError::ConnectionNotAllowed(message),
            })?;
        Ok(client.fenced(&self.fence))
    }

    /// How long to wait before taking a create mark that is not this replica's for an
    /// interrupted create (leader election only): the replica that wrote it may have been
    /// frozen between its mark and its request, which may still arrive. Two bounds, both
    /// kept: every write of an earlier leader was sent before this replica started leading
    /// (that leader's fence had closed), so none arrives later than one request timeout
    /// after that, however long it waited behind a rate limit; and a mark of another
    /// replica younger than 2 × the lease duration + one request timeout is still in
    /// flight (twice the lease covers the wall-clock skew between the two replicas).
    /// `None`: the mark is this replica's own, or old enough.
    fn create_of_another_replica_in_flight(
        &self,
        obj: &K,
        upstream: &UpstreamClient,
        now: Timestamp,
    ) -> Option<Duration> {
        let (identity, lease) = (self.fence.identity()?, self.fence.lease_duration()?);
        let mark = CreateMark::parse(create_mark(obj)?);
        if mark.writer == Some(identity) {
            return None;
        }
        let timeout = upstream.request_timeout();
        let since_leading = self
            .fence
            .leading_since()
            .and_then(|at| (at + timeout).checked_duration_since(tokio::time::Instant::now()));
        let since_mark = match (mark.at, mark.writer) {
            (Some(at), Some(_)) => (2 * lease + timeout).checked_sub(elapsed(at, now)),
            _ => None,
        };
        let wait = since_leading.max(since_mark).filter(|w| !w.is_zero())?;
        tracing::info!(
            writer = mark.writer.unwrap_or("an earlier release"),
            wait_s = wait.as_secs_f64(),
            "a create by another replica may still be in flight; looking it up once it cannot be"
        );
        Some(wait)
    }

    /// Found converged at this generation within [`Timing::converged_quiet`], with no
    /// recheck asked for since.
    fn recently_confirmed(&self, obj: &K, record: &Record) -> bool {
        let generation = obj.meta().generation.unwrap_or_default();
        let interval = self
            .timing
            .resync_interval(annotation(obj, RESYNC_ANNOTATION));
        let quiet = self.timing.converged_quiet.min(interval / 2);
        record.confirmed.is_some_and(|c| {
            c.generation == generation
                && c.rechecks == record.rechecks
                && elapsed(c.at, self.clock.now()) < quiet
        })
    }

    /// When to look at a converged object again: at its scope's next resync wave, so
    /// that one List answers the whole scope; objects without a scope are jittered.
    fn resync(&self, obj: &K) -> Duration {
        let asked = annotation(obj, RESYNC_ANNOTATION);
        match self.scope_key(obj) {
            Some(key) => wave_delay(
                self.timing.resync_interval(asked),
                &key,
                self.clock.now().as_millisecond(),
            ),
            None => self.timing.resync_for(asked),
        }
    }

    /// Snapshots are per Connection and scope: every namespace using one ClusterConnection
    /// shares its Lists (`*` is no namespace name).
    fn scope_key(&self, obj: &K) -> Option<String> {
        super::scope_key(&self.provider, obj)
    }

    async fn publish(&self, obj: &K, warning: bool, reason: &str, note: String) {
        let note = Note {
            warning,
            reason,
            text: note,
        };
        self.events.publish(&obj.object_ref(&()), note).await;
    }

    fn key(obj: &K) -> ObjectKey {
        ObjectKey::of(obj.meta())
    }
}

/// Converged at its current generation with nothing in flight: a pass now is a resync.
fn converged<K: ManagedObject>(obj: &K) -> bool {
    let Some(status) = obj.managed_status() else {
        return false;
    };
    let is_true =
        |type_| conditions::get(&status.conditions, type_).is_some_and(|c| c.status == "True");
    status.observed_generation == obj.meta().generation
        && status.pending.is_none()
        && !create_in_doubt(obj)
        && is_true(READY)
        && is_true(SYNCED)
}

/// Never marked nor given an id: the pass may create it, and the finalizer comes with the
/// create mark (see [`Engine::create`]).
fn brand_new<K: ManagedObject>(obj: &K) -> bool {
    create_mark(obj).is_none()
        && recorded_id(obj).is_none()
        && obj.managed().management() == ManagementPolicy::Manage
}

fn deleting<K: ManagedObject>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
}
