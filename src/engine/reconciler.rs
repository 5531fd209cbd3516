//! The reconcile flow of design §2, written once for every kind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use serde_json::{Map, Value};
use tracing::Instrument;

use super::Located;
use super::conditions::{self, ConditionValue, READY, SYNCED, reason};
use super::events::{EventPublisher, Note};
use super::identity::ObjectKey;
use super::kube_ops::{self, has_finalizer};
use super::observation::{Listed, Lookup, Observations, Purpose};
use super::requeue::{RESYNC_ANNOTATION, Timing, wave_delay};
use super::schedule::ResyncSlots;
use super::{
    ADOPTED_ANNOTATION, CREATE_MARK_ANNOTATION, CreateMark, Created, Cx, EXTERNAL_ID_ANNOTATION,
    EngineError, LEGACY_CREATE_PENDING_ANNOTATION, ManagedObject, Provider, Written, annotation,
    clock::Clock, clock::elapsed, create_in_doubt, create_mark, effective_deletion_policy,
    metrics::ReconcileMetrics, recorded_id,
};
use crate::api::envelope::{
    ConnectionKind, DeletionPolicy, ManagedStatus, ManagementPolicy, PendingWrite,
};
use crate::connections::{Connections, Unusable};
use crate::fence::Fence;
use crate::upstream::{ErrorClass, UpstreamClient};

/// Everything a kind's controller needs; one per kind.
pub struct Engine<K: ManagedObject, P: Provider<K>> {
    pub kube: kube::Client,
    pub provider: P,
    pub connections: Arc<Connections>,
    pub events: EventPublisher,
    pub clock: Arc<dyn Clock>,
    pub timing: Timing,
    pub metrics: ReconcileMetrics,
    /// Consecutive retryable failures and terminal holds, by object. In memory only:
    /// after a restart every object is simply tried once more.
    failures: Mutex<HashMap<ObjectKey, Failure>>,
    observations: Observations<P::Observed>,
    /// The controller's cache of objects, to count the members of a list scope.
    store: OnceLock<Store<K>>,
    /// Members per scope key, counted at most once per list window.
    members: Mutex<Option<(Instant, HashMap<String, usize>)>>,
    /// Spreads resyncs at their own rate (fair scheduling, see [`ResyncSlots`]).
    resync_slots: ResyncSlots,
    /// When each object was last found converged, at which generation: a pass that our
    /// own bookkeeping writes trigger right after (finalizer, annotations) has nothing
    /// to check upstream. In memory only: after a restart every object is checked.
    confirmed: Mutex<HashMap<ObjectKey, Confirmed>>,
    /// Recheck requests per object (see [`Engine::recheck`]), counted: a pass remembers the
    /// count it started with, so a request arriving while it runs outdates its result.
    rechecks: Mutex<HashMap<ObjectKey, u64>>,
    /// What passes learned of objects' upstream twins that their status must record (see
    /// [`Learned`]), until the cached object shows it.
    learned: Mutex<HashMap<ObjectKey, Learned>>,
    /// When the per-object maps were last pruned of objects gone from the cache.
    pruned: Mutex<Timestamp>,
    /// Lets upstream writes go only while this replica leads (see [`crate::fence`]); the
    /// Kubernetes client is fenced by whoever builds it.
    fence: Fence,
    kind: PhantomData<fn() -> K>,
}

/// What a pass learned of an object's upstream twin that its status must record: the id
/// (it created or recovered the object) and an accepted create still to be confirmed.
/// Kept until the cached object's status shows it, so that a failed status write, or a
/// cache that lags behind the write, neither loses it nor makes the next pass act as if
/// it did not know (look the object up again, or send an accepted create once more).
/// In memory only: after a restart the create mark and the natural-key lookup (or, for
/// deterministic ids, the upstream's 409 to a repeated create) stand in for it.
#[derive(Clone)]
struct Learned {
    id: String,
    pending_create: Option<PendingWrite>,
}

/// An object found converged: at which generation, when, and after how many rechecks.
struct Confirmed {
    generation: i64,
    at: Timestamp,
    rechecks: u64,
}

#[derive(Default)]
struct Failure {
    retryable: u32,
    /// A terminal error at this generation: do not call the upstream again before `until`.
    /// The flag says whether it happened while deleting: a hold from before the deletion
    /// must not delay it (deleting may need no upstream call at all), and vice versa.
    terminal: Option<(i64, bool, Timestamp)>,
}

/// The outcome of one pass, before it is written to status.
struct Verdict {
    ready: ConditionValue,
    requeue: Duration,
    id: Option<String>,
    facts: Option<Map<String, Value>>,
    pending: Option<PendingWrite>,
    event: Option<(&'static str, String)>,
    /// The finalizer was removed: the object is gone or going, nothing more to write.
    released: bool,
    /// Parts of the spec that cannot be achieved (see [`super::Diff::unresolved`]).
    unresolved: Option<String>,
    /// A read-back of the operator's own write that waits for its scope's next List:
    /// nothing was learned, so the status (Pending since the write was accepted) is left
    /// as is — the cached copy may not show it yet, and rewriting it would be a wasted
    /// write. Only the requeue counts.
    waiting: bool,
}

impl Verdict {
    fn new(ready: ConditionValue, requeue: Duration) -> Self {
        Self {
            ready,
            requeue,
            id: None,
            facts: None,
            pending: None,
            event: None,
            released: false,
            unresolved: None,
            waiting: false,
        }
    }

    /// A pass that waits for its scope's next List (see the `waiting` field).
    fn waiting(requeue: Duration) -> Self {
        let mut v = Self::new(
            ConditionValue::new(false, reason::PENDING, ACCEPTED_CREATE),
            requeue,
        );
        v.waiting = true;
        v
    }

    fn released(event: Option<(&'static str, String)>) -> Self {
        let mut v = Self::new(
            ConditionValue::new(false, reason::DELETING, ""),
            Duration::ZERO,
        );
        v.event = event;
        v.released = true;
        v
    }
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
            failures: Mutex::default(),
            observations,
            store: OnceLock::new(),
            members: Mutex::default(),
            resync_slots,
            confirmed: Mutex::default(),
            rechecks: Mutex::default(),
            learned: Mutex::default(),
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

    /// How many objects the engine keeps per-object bookkeeping for (convergence marks).
    #[doc(hidden)]
    pub fn tracked_objects(&self) -> usize {
        self.confirmed.lock().unwrap().len()
    }

    /// An object deleted without a last pass through the engine (its finalizer removed by
    /// hand, so no reconcile sees it go) would keep its entries in the per-object maps for
    /// good; once per resync interval, those of objects no longer in the cache are dropped.
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
        self.confirmed
            .lock()
            .unwrap()
            .retain(|key, _| live.contains(key));
        self.failures
            .lock()
            .unwrap()
            .retain(|key, _| live.contains(key));
        self.rechecks
            .lock()
            .unwrap()
            .retain(|key, _| live.contains(key));
        self.learned
            .lock()
            .unwrap()
            .retain(|key, _| live.contains(key));
        self.resync_slots.retain(|key| live.contains(key));
    }

    /// Gives the engine the controller's object cache (it groups objects by list scope).
    pub fn watch_store(&self, store: Store<K>) {
        let _ = self.store.set(store);
    }

    /// Makes the next pass of `obj` read the upstream even if it was found converged a
    /// moment ago: something it depends on (a Secret it reads) changed. Also when a pass
    /// of it is running: that pass may have read the old content.
    pub fn recheck(&self, obj: &K) {
        let key = Self::key(obj);
        self.confirmed.lock().unwrap().remove(&key);
        *self.rechecks.lock().unwrap().entry(key).or_default() += 1;
    }

    fn rechecks_of(&self, obj: &K) -> u64 {
        let rechecks = self.rechecks.lock().unwrap();
        rechecks.get(&Self::key(obj)).copied().unwrap_or_default()
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
        if obj.meta().deletion_timestamp.is_some() {
            if !has_finalizer(obj) {
                return Ok(Action::await_change());
            }
            if effective_deletion_policy(obj) == DeletionPolicy::Delete
                && let Some(wait) = self.terminal_hold(obj)
            {
                tracing::debug!(
                    ?wait,
                    "the upstream refused the deletion at this generation; not calling it yet"
                );
                return Ok(Action::requeue(wait));
            }
            let rechecks = self.rechecks_of(obj);
            return self
                .finish(&api, obj, rechecks, self.finalize(&api, obj).await)
                .await;
        }
        // A new resource gets its finalizer in the same write as its create mark (or its
        // adoption mark): until then nothing upstream depends on it. One metadata write
        // per created resource.
        let obj = if has_finalizer(obj) || brand_new(obj) {
            obj.clone()
        } else {
            kube_ops::add_finalizer(&api, obj).await?
        };
        if let Some(wait) = self.terminal_hold(&obj) {
            tracing::debug!(
                ?wait,
                "terminal error at this generation; not calling the upstream yet"
            );
            return Ok(Action::requeue(wait));
        }
        // Taken before anything is read: a recheck asked for from now on outdates this pass.
        let rechecks = self.rechecks_of(&obj);
        // Losing access to a ClusterConnection (a relabelled namespace) is said at once,
        // even by an object found converged a moment ago.
        if obj.managed().connection_ref.kind() == ConnectionKind::ClusterConnection
            && let Err(refused @ EngineError::ConnectionNotAllowed(_)) = self.upstream(&obj)
        {
            return self.finish(&api, &obj, rechecks, Err(refused)).await;
        }
        // The echo of this engine's own writes (finalizer, annotations, status), possibly
        // seen through a cache that does not show the status yet: nothing to check.
        if self.recently_confirmed(&obj) {
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
        let verdict = self.converge(&api, &obj, purpose).await;
        self.finish(&api, &obj, rechecks, verdict).await
    }

    /// Brings the upstream object in line with the spec (or reports how it differs).
    async fn converge(
        &self,
        api: &Api<K>,
        obj: &K,
        purpose: Purpose,
    ) -> Result<Verdict, EngineError> {
        let upstream = self.upstream(obj)?;
        let inputs = self.provider.resolve(&self.kube, obj).await?;
        let cx = Cx {
            obj,
            upstream: &upstream,
            inputs: &inputs,
        };
        let managed = obj.managed();
        let observe_only = managed.management() == ManagementPolicy::Observe;
        let now = self.clock.now();

        let known_id = self.known_id(obj);
        let mut observed = None;
        if let Some(id) = &known_id {
            // Reading back an accepted write waits until it is due to show.
            let purpose = match purpose {
                Purpose::Current if self.reads_back_accepted_write(obj, id, now) => {
                    self.awaiting(obj, id, now);
                    Purpose::Confirm
                }
                other => other,
            };
            let from_snapshot;
            (observed, from_snapshot) = match self.observe_or_wait(&cx, id, purpose).await? {
                Observation::Now {
                    observed,
                    from_snapshot,
                } => (observed, from_snapshot),
                Observation::Later(wait) => return Ok(Verdict::waiting(wait)),
            };
            // Updates send whole sub-objects completed from the observed state (Serval
            // grants, gateway tool lists), so no write may rest on a resync's snapshot,
            // which can be minutes old: drift found in one is read again before it is
            // corrected. (Other reads take snapshots at most a list window old.)
            if from_snapshot
                && purpose == Purpose::Resync
                && !observe_only
                && observed
                    .as_ref()
                    .is_some_and(|o| !self.provider.diff(&cx, o).is_empty())
            {
                observed = self.provider.observe(&cx, id).await?;
            }
            if observed.is_none() {
                // An accepted create is remembered in status. (Where that status write
                // failed, the create is sent again: only deterministic ids are created
                // asynchronously, and their upstream answers a repeated create with 409.)
                if let Some(pending) = self.pending_within_grace(obj, "Create", now) {
                    let mut v = Verdict::new(
                        ConditionValue::new(false, reason::PENDING, ACCEPTED_CREATE),
                        self.not_visible_yet(obj, id, &pending, now),
                    );
                    v.id = Some(id.clone());
                    v.pending = Some(pending);
                    return Ok(v);
                }
                if recorded_id(obj).is_some() && managed.external_id.is_none() && !observe_only {
                    // The object the operator created is gone (deleted out of band): recreate it.
                    tracing::info!(id, "upstream object is gone; creating it again");
                }
            }
        }

        let mut recorded_adoption = false;
        let in_doubt = self.create_in_doubt(obj);
        if in_doubt
            && let Some(wait) = self.create_of_another_replica_in_flight(obj, &upstream, now)
        {
            return Ok(Verdict::waiting(wait));
        }
        let observed =
            match super::locate(&self.provider, &cx, known_id.as_deref(), observed, in_doubt)
                .await?
            {
                Located::Found {
                    observed,
                    recovered,
                } => {
                    if recovered {
                        // A create whose response was lost: the object is ours; the
                        // status records its id.
                        let id = self.provider.id_of(&observed);
                        tracing::info!(id, "recovered an interrupted create");
                        self.learned(obj, &id, None);
                        recorded_adoption = true;
                    }
                    observed
                }
                Located::Create => return self.create(api, obj, &cx).await,
                Located::NotFound(message) => {
                    return Ok(Verdict::new(
                        ConditionValue::new(false, reason::NOT_FOUND, message),
                        self.resync(obj),
                    ));
                }
            };
        let id = self.provider.id_of(&observed);
        if !recorded_adoption
            && !observe_only
            && known_id.is_some()
            && self.provider.deterministic_id(obj).is_some()
        {
            self.note_deterministic_owner(api, obj, &id).await?;
        }
        self.compare(&cx, obj, observed, observe_only, now).await
    }

    /// Diff an existing upstream object and update it when it differs.
    async fn compare(
        &self,
        cx: &Cx<'_, K, P::Inputs>,
        obj: &K,
        observed: P::Observed,
        observe_only: bool,
        now: Timestamp,
    ) -> Result<Verdict, EngineError> {
        let id = self.provider.id_of(&observed);
        if let Some(why) = self.provider.refuse_update(&observed) {
            return Err(EngineError::Refused(why));
        }
        let diff = self.provider.diff(cx, &observed);
        let generation = obj.meta().generation.unwrap_or_default();
        if diff.is_empty() {
            // An accepted write awaited for this object shows now.
            self.looked(cx.obj, &id, true);
        }
        let mut verdict = if diff.is_empty() {
            Verdict::new(
                ConditionValue::new(true, reason::AVAILABLE, "upstream object matches the spec"),
                self.resync(obj),
            )
        } else if observe_only {
            Verdict::new(
                ConditionValue::new(
                    false,
                    reason::DRIFTED,
                    format!(
                        "upstream differs from the spec in: {}",
                        diff.fields.join(", ")
                    ),
                ),
                self.resync(obj),
            )
        } else if let Some(pending) = self
            .pending_within_grace(obj, "Update", now)
            .filter(|p| p.generation == generation)
        {
            let mut v = Verdict::new(
                ConditionValue::new(false, reason::PENDING, ACCEPTED_UPDATE),
                self.not_visible_yet(obj, &id, &pending, now),
            );
            v.pending = Some(pending);
            v
        } else {
            let spec_changed = obj.managed_status().and_then(|s| s.observed_generation)
                != Some(generation)
                || obj
                    .managed_status()
                    .and_then(|s| conditions::get(&s.conditions, READY))
                    .is_none_or(|c| c.status != "True");
            let fields = diff.fields.join(", ");
            self.provider.write_gate(cx).await?;
            let written = self.provider.update(cx, &observed, &diff).await;
            self.wrote(cx, &id, matches!(written, Ok(Written::Accepted)));
            match written? {
                Written::Done(new_state) => {
                    let mut v = Verdict::new(
                        ConditionValue::new(
                            true,
                            reason::AVAILABLE,
                            "upstream object matches the spec",
                        ),
                        self.resync(obj),
                    );
                    v.facts = Some(
                        self.provider
                            .facts(cx, new_state.as_ref().unwrap_or(&observed)),
                    );
                    v.event = Some(if spec_changed {
                        ("Updated", format!("updated upstream {id}: {fields}"))
                    } else {
                        (
                            "DriftCorrected",
                            format!("corrected drift of upstream {id}: {fields}"),
                        )
                    });
                    v
                }
                Written::Accepted => {
                    let mut v = Verdict::new(
                        ConditionValue::new(
                            false,
                            reason::PENDING,
                            format!(
                                "update of {fields} accepted upstream; waiting for it to become visible"
                            ),
                        ),
                        self.first_look(obj, &id),
                    );
                    v.pending = Some(PendingWrite {
                        operation: "Update".into(),
                        generation,
                        requested_at: now.to_string(),
                    });
                    // An Event says whether the user's change or drift caused the write.
                    v.event = Some(if spec_changed {
                        (
                            "UpdateRequested",
                            format!("requested update of upstream {id}: {fields}"),
                        )
                    } else {
                        (
                            "DriftCorrectionRequested",
                            format!("requested correction of drift of upstream {id}: {fields}"),
                        )
                    });
                    v
                }
            }
        };
        verdict.id = Some(id);
        if verdict.facts.is_none() {
            verdict.facts = Some(self.provider.facts(cx, &observed));
        }
        if let Some((reason, message)) = diff.unresolved_summary() {
            verdict.ready = ConditionValue::new(false, reason, message.clone());
            verdict.unresolved = Some(message);
        }
        Ok(verdict)
    }

    /// Crash-safe create: mark the attempt, create, record the id.
    async fn create(
        &self,
        api: &Api<K>,
        obj: &K,
        cx: &Cx<'_, K, P::Inputs>,
    ) -> Result<Verdict, EngineError> {
        let now = self.clock.now();
        // Gate first: a create that waits for a dependency has not been attempted.
        self.provider.write_gate(cx).await?;
        // The create mark and the finalizer, in one write before anything is sent.
        // Guarded by the resourceVersion: the decision to create must not rest on a stale
        // cached copy (one that does not show an earlier create's id yet).
        let obj = &kube_ops::mark_if_unchanged(
            api,
            obj,
            BTreeMap::from([
                (
                    CREATE_MARK_ANNOTATION,
                    Some(CreateMark::value(now, self.fence.identity())),
                ),
                (LEGACY_CREATE_PENDING_ANNOTATION, None),
            ]),
        )
        .await?;
        let cx = Cx {
            obj,
            upstream: cx.upstream,
            inputs: cx.inputs,
        };
        let generation = obj.meta().generation.unwrap_or_default();
        let created = self.provider.create(&cx).await;
        let created = match created {
            // Refused outright (400/403/422): nothing was made, so no create is in doubt
            // and deleting the resource needs no upstream lookup. Only terminal refusals:
            // clearing the mark re-triggers a reconcile, which the terminal hold absorbs.
            Err(e) if refused_before_applying(&e) => {
                kube_ops::set_annotations(
                    api,
                    obj,
                    BTreeMap::from([(CREATE_MARK_ANNOTATION, None)]),
                )
                .await?;
                return Err(e.into());
            }
            other => other?,
        };
        match created {
            Created::Done(created) => {
                let id = self.provider.id_of(&created);
                self.wrote(&cx, &id, false);
                // Recorded in status, with the rest of this pass's outcome.
                self.learned(obj, &id, None);
                self.publish(
                    obj,
                    false,
                    "Created",
                    format!("created upstream object {id}"),
                )
                .await;
                let created = self.provider.complete(&cx, created).await?;
                // Some fields can only be set by an update after create (e.g. C1 deprovisioner policy).
                self.compare(&cx, obj, created, false, now).await
            }
            Created::Accepted { id } => {
                self.wrote(&cx, &id, true);
                // The status records the id and the pending create (the request time): a
                // later pass waits for it to become visible instead of re-sending.
                let pending = PendingWrite {
                    operation: "Create".into(),
                    generation,
                    requested_at: now.to_string(),
                };
                self.learned(obj, &id, Some(pending.clone()));
                let mut v = Verdict::new(
                    ConditionValue::new(false, reason::PENDING, ACCEPTED_CREATE),
                    self.first_look(obj, &id),
                );
                v.pending = Some(pending);
                v.id = Some(id.clone());
                v.event = Some((
                    "CreateRequested",
                    format!("requested creation of upstream object {id}"),
                ));
                Ok(v)
            }
        }
    }

    /// Deletion per policy; the finalizer goes only once the upstream object is gone.
    async fn finalize(&self, api: &Api<K>, obj: &K) -> Result<Verdict, EngineError> {
        if effective_deletion_policy(obj) == DeletionPolicy::Orphan {
            kube_ops::remove_finalizer(api, obj).await?;
            return Ok(Verdict::released(None));
        }
        let pending_create = self.create_in_doubt(obj);
        // A deterministic id says where the object would be, not that it was ever made.
        let known_id = recorded_id(obj)
            .or_else(|| self.learned_of(obj).map(|l| l.id))
            .or_else(|| {
                pending_create
                    .then(|| self.provider.deterministic_id(obj))
                    .flatten()
            });
        // Nothing was ever created or adopted upstream: there is nothing to delete, so
        // neither the Connection nor referenced resources are needed (they may be gone).
        if known_id.is_none() && !pending_create {
            kube_ops::remove_finalizer(api, obj).await?;
            return Ok(Verdict::released(None));
        }
        self.delete_upstream(api, obj, known_id)
            .await
            .map_err(|e| match e {
                EngineError::Dependency(message) => EngineError::Dependency(format!(
                    "cannot delete the upstream object: {message}; {ORPHAN_HINT}"
                )),
                EngineError::ConnectionNotAllowed(message) => EngineError::ConnectionNotAllowed(
                    format!("cannot delete the upstream object: {message}; {ORPHAN_HINT}"),
                ),
                // Refusals (400/403/422) and rejected credentials do not go away by
                // retrying: say how to release the resource.
                EngineError::Upstream(source) if source.class() != ErrorClass::Retryable => {
                    EngineError::Delete {
                        source,
                        hint: ORPHAN_HINT,
                    }
                }
                other => other,
            })
    }

    /// Deletes the upstream object (`known_id`, or what an interrupted create made).
    async fn delete_upstream(
        &self,
        api: &Api<K>,
        obj: &K,
        known_id: Option<String>,
    ) -> Result<Verdict, EngineError> {
        let upstream = self.upstream(obj)?;
        let inputs = self.provider.resolve(&self.kube, obj).await?;
        let cx = Cx {
            obj,
            upstream: &upstream,
            inputs: &inputs,
        };
        let id = match known_id {
            Some(id) => Some(id),
            // Deleted while a create was in flight: find what it may have made (once
            // another replica's create can no longer arrive).
            None => {
                let now = self.clock.now();
                if let Some(wait) = self.create_of_another_replica_in_flight(obj, &upstream, now) {
                    return Ok(Verdict::waiting(wait));
                }
                let found = self.provider.find(&cx).await?;
                match found.len() {
                    0 => None,
                    1 => Some(self.provider.id_of(&found[0])),
                    n => {
                        return Err(EngineError::CreateAmbiguous(format!(
                            "{n} upstream objects match this resource; delete them upstream or {ORPHAN_HINT}"
                        )));
                    }
                }
            }
        };
        let Some(id) = id else {
            kube_ops::remove_finalizer(api, obj).await?;
            return Ok(Verdict::released(None));
        };
        let now = self.clock.now();
        let Some(observed) = self.observe(&cx, &id, Purpose::Current).await? else {
            // An accepted create of an asynchronous upstream may not be visible yet (a
            // crash or a quick delete can come before it is): reading "absent" then proves
            // nothing, and releasing would orphan it. Ask the upstream to delete it by its
            // deterministic id instead; a 404 means nothing was made.
            let create_sent = self.create_sent_within_grace(obj, now);
            let create_in_flight = self.provider.deterministic_id(obj).is_some()
                && (create_sent.is_some() || self.create_in_doubt(obj))
                && self.pending_within_grace(obj, "Delete", now).is_none();
            if create_in_flight {
                // Until the create's grace has passed, a 404 to the delete proves as little
                // as the absent read: the create may still be on its way.
                return self
                    .request_delete(api, obj, &cx, &id, now, create_sent)
                    .await;
            }
            kube_ops::remove_finalizer(api, obj).await?;
            let requested = obj
                .managed_status()
                .and_then(|s| s.pending.as_ref())
                .is_some_and(|p| p.operation == "Delete");
            return Ok(Verdict::released(
                requested.then(|| ("Deleted", format!("upstream object {id} is gone"))),
            ));
        };
        if let Some(why) = self.provider.refuse_delete(&observed) {
            return Err(EngineError::Refused(format!("{why}; {ORPHAN_HINT}")));
        }
        if let Some(pending) = self.pending_within_grace(obj, "Delete", now) {
            let mut v = Verdict::new(
                ConditionValue::new(
                    false,
                    reason::DELETING,
                    "delete accepted upstream; waiting for the object to disappear",
                ),
                self.timing.pending_poll(pending_wait(&pending, now)),
            );
            v.pending = Some(pending);
            return Ok(v);
        }
        self.request_delete(api, obj, &cx, &id, now, None).await
    }

    /// Sends the delete; the finalizer goes once the upstream has done it. `create_sent`:
    /// a create that may not be visible yet, so that "done" (a 404) proves nothing.
    async fn request_delete(
        &self,
        api: &Api<K>,
        obj: &K,
        cx: &Cx<'_, K, P::Inputs>,
        id: &str,
        now: Timestamp,
        create_sent: Option<Timestamp>,
    ) -> Result<Verdict, EngineError> {
        self.provider.write_gate(cx).await?;
        let deleted = self.provider.delete(cx, id).await;
        // An accepted delete is read back by GETs (deleting never waits for a List).
        self.wrote(cx, id, false);
        let deleted = deleted?;
        if let (Written::Done(_), Some(sent)) = (&deleted, create_sent) {
            return Ok(Verdict::new(
                ConditionValue::new(
                    false,
                    reason::DELETING,
                    format!(
                        "the create attempted at {sent} is not visible upstream yet, so there was nothing to delete; the delete is sent again until it shows or {} s have passed",
                        self.create_wait(obj).as_secs()
                    ),
                ),
                self.timing.pending_poll(elapsed(sent, now)),
            ));
        }
        match deleted {
            Written::Done(_) => {
                kube_ops::remove_finalizer(api, obj).await?;
                Ok(Verdict::released(Some((
                    "Deleted",
                    format!("deleted upstream object {id}"),
                ))))
            }
            Written::Accepted => {
                let mut v = Verdict::new(
                    ConditionValue::new(
                        false,
                        reason::DELETING,
                        "delete accepted upstream; waiting for the object to disappear",
                    ),
                    self.timing.pending_poll(Duration::ZERO),
                );
                v.pending = Some(PendingWrite {
                    operation: "Delete".into(),
                    generation: obj.meta().generation.unwrap_or_default(),
                    requested_at: now.to_string(),
                });
                v.event = Some((
                    "DeleteRequested",
                    format!("requested deletion of upstream object {id}"),
                ));
                Ok(v)
            }
        }
    }

    /// Writes the pass's outcome to status (when it changed), publishes events on
    /// transitions and decides when to look again.
    /// `rechecks`: the object's recheck count when the pass started.
    async fn finish(
        &self,
        api: &Api<K>,
        obj: &K,
        rechecks: u64,
        outcome: Result<Verdict, EngineError>,
    ) -> Result<Action, EngineError> {
        if let Err(error) = &outcome
            && error.is_fenced()
        {
            // A replica that cannot prove it leads writes nothing more, status included.
            tracing::warn!("pass stopped: {error}");
            return Ok(Action::await_change());
        }
        let now = self.clock.now();
        let generation = obj.meta().generation;
        let previous = obj.managed_status().cloned().unwrap_or_default();
        let mut status = previous.clone();
        status.observed_generation = generation;
        let reference = &obj.managed().connection_ref;
        status.cluster_connection = (reference.kind() == ConnectionKind::ClusterConnection)
            .then(|| reference.name.to_string());
        // What was learned (by this pass or one whose status write did not show yet) is
        // newer than the cached status.
        let learned = self.learned.lock().unwrap().remove(&Self::key(obj));
        if let Some(learned) = &learned {
            status.id = Some(learned.id.clone());
            if status.pending.is_none() {
                status.pending.clone_from(&learned.pending_create);
            }
        }
        let keep_learned = |status: &ManagedStatus| {
            let learned = Learned {
                id: status.id.clone()?,
                pending_create: status.pending.clone().filter(|p| p.operation == "Create"),
            };
            self.learned.lock().unwrap().insert(Self::key(obj), learned);
            Some(())
        };
        // Whether this pass found the object converged (remembered once status says so).
        let mut converged = false;
        self.confirmed.lock().unwrap().remove(&Self::key(obj));
        let (requeue, facts) = match outcome {
            Ok(verdict) if verdict.released => {
                self.clear_failures(obj);
                self.resync_slots.forget(Self::key(obj));
                if let Some((reason, note)) = verdict.event {
                    self.publish(obj, false, reason, note).await;
                }
                return Ok(Action::await_change());
            }
            Ok(verdict) if verdict.waiting => {
                self.clear_failures(obj);
                if learned.is_some() {
                    keep_learned(&status);
                }
                return Ok(Action::requeue(verdict.requeue));
            }
            Ok(verdict) => {
                self.clear_failures(obj);
                converged = verdict.ready.status && verdict.unresolved.is_none();
                if let Some(id) = verdict.id {
                    status.id = Some(id);
                }
                status.pending = verdict.pending;
                conditions::set(
                    &mut status.conditions,
                    READY,
                    &verdict.ready,
                    generation,
                    now,
                );
                let mut requeue = verdict.requeue;
                let synced = match verdict.unresolved {
                    // Everything possible was done; the rest needs the user (or an upstream
                    // change), so it is reported like a terminal error and not retried hot.
                    Some(message) => {
                        requeue = self.hold_terminal(obj, now);
                        ConditionValue::new(false, reason::TERMINAL_ERROR, message)
                    }
                    None => ConditionValue::new(true, reason::RECONCILE_SUCCESS, ""),
                };
                self.set_synced(obj, &previous, &mut status, synced, now)
                    .await;
                if let Some((reason, note)) = verdict.event {
                    self.publish(obj, false, reason, note).await;
                }
                (requeue, verdict.facts)
            }
            Err(EngineError::Kube { context, source }) => {
                if learned.is_some() {
                    keep_learned(&status);
                }
                return Err(EngineError::Kube { context, source });
            }
            Err(error) => {
                let requeue = self.requeue_after_error(obj, &error, now);
                let message = error.to_string();
                let synced_reason = error.synced_reason();
                let ready =
                    match &error {
                        // What the resource waits for, or what failed, is always worth saying.
                        EngineError::Dependency(_)
                        | EngineError::DependencyFailed(_)
                        | EngineError::ConnectionNotAllowed(_) => Some(ConditionValue::new(
                            false,
                            error.ready_reason(),
                            message.clone(),
                        )),
                        // A passing upstream fault says nothing about the object: keep Ready as it was.
                        _ if !error.is_terminal()
                            && conditions::get(&previous.conditions, READY).is_some() =>
                        {
                            None
                        }
                        // Not created yet and retrying: say so rather than "Error".
                        _ if !error.is_terminal() && status.id.is_none() => Some(
                            ConditionValue::new(false, reason::CREATING, message.clone()),
                        ),
                        _ => Some(ConditionValue::new(
                            false,
                            error.ready_reason(),
                            message.clone(),
                        )),
                    };
                if let Some(ready) = ready {
                    conditions::set(&mut status.conditions, READY, &ready, generation, now);
                }
                let synced = ConditionValue::new(false, synced_reason, message);
                self.set_synced(obj, &previous, &mut status, synced, now)
                    .await;
                (requeue, None)
            }
        };
        let written = kube_ops::write_status(api, obj, status_json(obj, &status, facts)).await;
        // Until the cache shows the status, what was learned stays (a converged object
        // needs no more: the next pass of its echo checks nothing).
        if learned.is_some() && (written.is_err() || !converged) {
            keep_learned(&status);
        }
        written?;
        if converged {
            let confirmed = Confirmed {
                generation: generation.unwrap_or_default(),
                at: now,
                rechecks,
            };
            self.confirmed
                .lock()
                .unwrap()
                .insert(Self::key(obj), confirmed);
        }
        Ok(Action::requeue(requeue))
    }

    /// Sets `Synced`, with a warning event when it turns False or its reason changes.
    async fn set_synced(
        &self,
        obj: &K,
        previous: &ManagedStatus,
        status: &mut ManagedStatus,
        synced: ConditionValue,
        now: Timestamp,
    ) {
        let was = conditions::get(&previous.conditions, SYNCED)
            .map(|c| (c.status.clone(), c.reason.clone()));
        conditions::set(
            &mut status.conditions,
            SYNCED,
            &synced,
            obj.meta().generation,
            now,
        );
        if !synced.status && was != Some(("False".into(), synced.reason.into())) {
            self.publish(obj, true, synced.reason, synced.message).await;
        }
    }

    /// Reads one object, from a List of its scope when that pays off (see [`Observations`]).
    async fn observe(
        &self,
        cx: &Cx<'_, K, P::Inputs>,
        id: &str,
        purpose: Purpose,
    ) -> Result<Option<P::Observed>, EngineError> {
        match self.observe_or_wait(cx, id, purpose).await? {
            Observation::Now { observed, .. } => Ok(observed),
            // This read cannot wait for the scope's next List: read the object now.
            Observation::Later(_) => Ok(self.provider.observe(cx, id).await?),
        }
    }

    /// Reads one object like [`Self::observe`], or — when it reads back the operator's
    /// own write — says when the List of its scope that will answer it is due.
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
            // Absent from a List of the last moments: for deterministic ids a wrong
            // "absent" is harmless (a create of an existing id is a conflict, not a
            // duplicate; an accepted create is waited for), so no GET to confirm. Ids the
            // server assigns are confirmed: Lists may lag behind creates.
            Lookup::Absent if self.provider.deterministic_id(cx.obj).is_some() => None,
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
    fn reads_back_accepted_write(&self, obj: &K, id: &str, now: Timestamp) -> bool {
        let generation = obj.meta().generation.unwrap_or_default();
        let attempted = self.create_sent_within_grace(obj, now).is_some();
        let ours = recorded_id(obj).as_deref() == Some(id)
            || self.provider.deterministic_id(obj).as_deref() == Some(id);
        (attempted && ours)
            || self.pending_within_grace(obj, "Create", now).is_some()
            || self
                .pending_within_grace(obj, "Update", now)
                .is_some_and(|p| p.generation == generation)
    }

    /// A write (even a failed one) to `id`: Lists taken before it no longer answer for it.
    /// `accepted`: the upstream accepted it to apply later (it is to be read back).
    fn wrote(&self, cx: &Cx<'_, K, P::Inputs>, id: &str, accepted: bool) {
        if let Some(key) = self.scope_key(cx.obj) {
            self.observations.wrote(&key, id, accepted);
        }
    }

    /// This pass reads back an accepted write of `id` (its status or this engine says
    /// so); a write made before a restart is awaited from its request time.
    fn awaiting(&self, obj: &K, id: &str, now: Timestamp) {
        let Some(key) = self.scope_key(obj) else {
            return;
        };
        let requested = ["Create", "Update"]
            .into_iter()
            .find_map(|operation| self.pending_within_grace(obj, operation, now))
            .map(|pending| pending_wait(&pending, now));
        self.observations
            .awaiting(&key, id, requested.unwrap_or_default());
    }

    /// What reading back an awaited write of `id` found (see [`Observations::looked`]).
    fn looked(&self, obj: &K, id: &str, visible: bool) {
        if let Some(key) = self.scope_key(obj) {
            self.observations.looked(&key, id, visible);
        }
    }

    /// When to look first at a write of `id` the upstream just accepted.
    fn first_look(&self, obj: &K, id: &str) -> Duration {
        self.scope_key(obj)
            .and_then(|key| self.observations.next_look(&key, id))
            .unwrap_or_else(|| self.timing.pending_poll(Duration::ZERO))
    }

    /// A read-back found the accepted write `pending` not applied yet: when to look again.
    fn not_visible_yet(
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

    /// Snapshots are per Connection and scope: every namespace using one ClusterConnection
    /// shares its Lists (`*` is no namespace name).
    fn scope_key(&self, obj: &K) -> Option<String> {
        super::scope_key(&self.provider, obj)
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

    /// The upstream id this resource points at, if known.
    fn known_id(&self, obj: &K) -> Option<String> {
        recorded_id(obj)
            .or_else(|| self.learned_of(obj).map(|l| l.id))
            .or_else(|| self.provider.deterministic_id(obj))
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

    /// A create was attempted whose outcome neither the resource nor this engine knows.
    fn create_in_doubt(&self, obj: &K) -> bool {
        create_in_doubt(obj) && self.learned_of(obj).is_none()
    }

    /// This pass learned the id of the object's upstream twin (and, for an accepted
    /// create, that it is pending): the status records it.
    fn learned(&self, obj: &K, id: &str, pending_create: Option<PendingWrite>) {
        let learned = Learned {
            id: id.to_string(),
            pending_create,
        };
        self.learned.lock().unwrap().insert(Self::key(obj), learned);
    }

    /// What this engine learned of `obj` that its cached status does not show yet.
    fn learned_of(&self, obj: &K) -> Option<Learned> {
        let mut all = self.learned.lock().unwrap();
        let key = Self::key(obj);
        let learned = all.get(&key)?;
        let status = obj.managed_status();
        let shown = status.is_some_and(|s| {
            s.id.as_ref() == Some(&learned.id) && s.pending == learned.pending_create
        });
        if shown {
            all.remove(&key);
            return None;
        }
        Some(learned.clone())
    }

    /// Deterministic ids need no recovery lookup, but provenance still matters for the
    /// deletion default: an object that existed before any create of ours is adopted.
    async fn note_deterministic_owner(
        &self,
        api: &Api<K>,
        obj: &K,
        id: &str,
    ) -> Result<(), EngineError> {
        // Ours when we tried to create it, whether or not it is visible yet; decided
        // before when the id is recorded (adopted objects keep their adoption mark).
        let recorded = obj.managed_status().and_then(|s| s.id.as_deref()) == Some(id)
            || annotation(obj, EXTERNAL_ID_ANNOTATION) == Some(id);
        if create_mark(obj).is_some() || recorded {
            return Ok(());
        }
        // Adopting changes the default deletion policy to Orphan, so it must not rest on a
        // stale cached copy that does not show our own create mark yet: written only if the
        // object is unchanged since it was read (409 otherwise, and the next pass sees the
        // mark). A new resource gets its finalizer with it.
        kube_ops::mark_if_unchanged(
            api,
            obj,
            BTreeMap::from([
                (EXTERNAL_ID_ANNOTATION, Some(id.to_string())),
                (ADOPTED_ANNOTATION, Some("true".into())),
            ]),
        )
        .await?;
        self.publish(
            obj,
            false,
            "Adopted",
            format!("adopted existing upstream object {id}"),
        )
        .await;
        Ok(())
    }

    /// When the create mark (written just before a create is sent) says a create went
    /// out, if that is within the grace period and the status does not show the object
    /// upstream yet (no id, or an accepted create still pending).
    fn create_sent_within_grace(&self, obj: &K, now: Timestamp) -> Option<Timestamp> {
        let seen = obj.managed_status().is_some_and(|s| {
            s.id.is_some() && s.pending.as_ref().is_none_or(|p| p.operation != "Create")
        });
        if seen || self.learned_of(obj).is_some() {
            return None;
        }
        let sent = CreateMark::parse(create_mark(obj)?).at?;
        (elapsed(sent, now) < self.create_wait(obj)).then_some(sent)
    }

    /// How long a create named by the create mark is waited for: the grace of an accepted
    /// write when the status records its acceptance; otherwise the create may never have
    /// been sent (a stop right after the mark), and a shorter wait covers one that was.
    fn create_wait(&self, obj: &K) -> Duration {
        let accepted = obj
            .managed_status()
            .and_then(|s| s.pending.as_ref())
            .is_some_and(|p| p.operation == "Create");
        if accepted {
            self.timing.pending_grace
        } else {
            self.timing.unrecorded_create_wait
        }
    }

    /// Found converged at this generation within [`Timing::converged_quiet`].
    fn recently_confirmed(&self, obj: &K) -> bool {
        let generation = obj.meta().generation.unwrap_or_default();
        let interval = self
            .timing
            .resync_interval(annotation(obj, RESYNC_ANNOTATION));
        let quiet = self.timing.converged_quiet.min(interval / 2);
        let rechecks = self.rechecks_of(obj);
        self.confirmed
            .lock()
            .unwrap()
            .get(&Self::key(obj))
            .is_some_and(|c| {
                c.generation == generation
                    && c.rechecks == rechecks
                    && elapsed(c.at, self.clock.now()) < quiet
            })
    }

    /// An accepted `operation` (Create, Update, Delete) still within its grace period, as
    /// the status records it (or, for a create, as this engine learned it).
    fn pending_within_grace(
        &self,
        obj: &K,
        operation: &str,
        now: Timestamp,
    ) -> Option<PendingWrite> {
        let recorded = obj.managed_status().and_then(|s| s.pending.clone());
        let pending = recorded
            .or_else(|| self.learned_of(obj).and_then(|l| l.pending_create))
            .filter(|p| p.operation == operation)?;
        let requested: Timestamp = pending.requested_at.parse().ok()?;
        (elapsed(requested, now) < self.timing.pending_grace).then_some(pending)
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

    fn bump_failures(&self, obj: &K) -> u32 {
        let mut failures = self.failures.lock().unwrap();
        let entry = failures.entry(Self::key(obj)).or_default();
        entry.retryable += 1;
        entry.retryable
    }

    fn clear_failures(&self, obj: &K) {
        self.failures.lock().unwrap().remove(&Self::key(obj));
    }

    fn requeue_after_error(&self, obj: &K, error: &EngineError, now: Timestamp) -> Duration {
        if error.is_terminal() {
            return self.hold_terminal(obj, now);
        }
        let backoff = self.timing.error_backoff(self.bump_failures(obj));
        let asked = error
            .upstream()
            .and_then(|e| e.retry_after())
            .unwrap_or_default();
        backoff.max(asked)
    }

    /// Keeps away from the upstream for this generation until `terminal_retry` has passed.
    fn hold_terminal(&self, obj: &K, now: Timestamp) -> Duration {
        let until = now + self.timing.terminal_retry;
        let generation = obj.meta().generation.unwrap_or_default();
        self.failures
            .lock()
            .unwrap()
            .entry(Self::key(obj))
            .or_default()
            .terminal = Some((generation, deleting(obj), until));
        self.timing.terminal_retry
    }

    /// How long to keep away from the upstream after a terminal error at this generation.
    fn terminal_hold(&self, obj: &K) -> Option<Duration> {
        let generation = obj.meta().generation.unwrap_or_default();
        let failures = self.failures.lock().unwrap();
        let (at, while_deleting, until) = failures.get(&Self::key(obj))?.terminal?;
        let now = self.clock.now();
        (at == generation && while_deleting == deleting(obj) && now < until)
            .then(|| elapsed(now, until))
    }
}

/// An upstream answer (4xx other than 408/409/429) proving the write was not applied.
fn refused_before_applying(e: &crate::upstream::UpstreamError) -> bool {
    e.class() == ErrorClass::Terminal
        && !e.may_have_applied()
        && e.status()
            .is_some_and(|s| (400..500).contains(&s) && s != 409)
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

/// Ready messages while an accepted write is not visible yet.
const ACCEPTED_CREATE: &str = "create accepted upstream; waiting for it to become visible";
const ACCEPTED_UPDATE: &str = "update accepted upstream; waiting for it to become visible";

/// What observing found, or when to look again (see [`Engine::observe_or_wait`]).
enum Observation<O> {
    /// The state now; `from_snapshot` when a List snapshot answered (for a resync, up to
    /// `Timing::resync_snapshot_age` old).
    Now {
        observed: Option<O>,
        from_snapshot: bool,
    },
    Later(Duration),
}

/// How to get out of a deletion that cannot complete.
const ORPHAN_HINT: &str = "set spec.deletionPolicy: Orphan to remove the finalizer and leave the upstream object as it is";

fn pending_wait(pending: &PendingWrite, now: Timestamp) -> Duration {
    pending
        .requested_at
        .parse()
        .map(|t| elapsed(t, now))
        .unwrap_or_default()
}

/// The full status object: the object's current status with the common fields and the
/// provider's facts written over it.
fn status_json<K: ManagedObject>(
    obj: &K,
    status: &ManagedStatus,
    facts: Option<Map<String, Value>>,
) -> Value {
    let current = serde_json::to_value(obj)
        .ok()
        .and_then(|v| v.get("status").cloned());
    let mut out = match current {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for key in [
        "id",
        "observedGeneration",
        "conditions",
        "pending",
        "clusterConnection",
    ] {
        out.remove(key);
    }
    if let Value::Object(common) = serde_json::to_value(status).expect("status serializes") {
        out.extend(common);
    }
    if let Some(facts) = facts {
        for (key, value) in facts {
            if value.is_null() {
                out.remove(&key);
            } else {
                out.insert(key, value);
            }
        }
    }
    Value::Object(out)
}
