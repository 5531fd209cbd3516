//! The end of a pass: its [`Verdict`] (or error) becomes the status patch, events on
//! transitions, what the memory keeps, and when to look again.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use serde_json::{Map, Value};

use super::{Engine, deleting};
use crate::api::envelope::{ConnectionKind, ManagedStatus, PendingWrite};
use crate::base::clock::elapsed;
use crate::base::conditions::{self, ConditionValue, READY, SYNCED, reason};
use crate::base::kube_ops;
use crate::engine::memory::{Confirmed, Learned, Record, TerminalHold};
use crate::engine::{EngineError, ManagedObject, Provider};

/// Ready messages while an accepted write is not visible yet.
pub(super) const ACCEPTED_CREATE: &str =
    "create accepted upstream; waiting for it to become visible";
pub(super) const ACCEPTED_UPDATE: &str =
    "update accepted upstream; waiting for it to become visible";

/// The outcome of one pass, before it is written to status.
pub(super) struct Verdict {
    pub ready: ConditionValue,
    pub requeue: Duration,
    pub id: Option<String>,
    pub facts: Option<Map<String, Value>>,
    pub pending: Option<PendingWrite>,
    pub event: Option<(&'static str, String)>,
    /// The finalizer was removed: the object is gone or going, nothing more to write.
    pub released: bool,
    /// Parts of the spec that cannot be achieved (see [`crate::engine::Diff::unresolved`]).
    pub unresolved: Option<String>,
    /// Nothing was learned, and the status is left as is: a read-back of the operator's
    /// own write that waits for its scope's next List (the status says Pending since the
    /// write was accepted, the cached copy may not show it yet, and rewriting it would be
    /// a wasted write), or a wait for another replica's create. Only the requeue counts.
    pub waiting: bool,
}

impl Verdict {
    pub fn new(ready: ConditionValue, requeue: Duration) -> Self {
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

    /// A pass that leaves the status as is (see the `waiting` field).
    pub fn waiting(requeue: Duration) -> Self {
        let mut v = Self::new(
            ConditionValue::new(false, reason::PENDING, ACCEPTED_CREATE),
            requeue,
        );
        v.waiting = true;
        v
    }

    pub fn released(event: Option<(&'static str, String)>) -> Self {
        let mut v = Self::new(
            ConditionValue::new(false, reason::DELETING, ""),
            Duration::ZERO,
        );
        v.event = event;
        v.released = true;
        v
    }
}

impl<K: ManagedObject, P: Provider<K>> Engine<K, P> {
    /// Writes the pass's outcome to status (when it changed), publishes events on
    /// transitions and decides when to look again. `record`: the object's record when
    /// the pass started.
    pub(super) async fn finish(
        &self,
        api: &Api<K>,
        obj: &K,
        record: &Record,
        outcome: Result<Verdict, EngineError>,
    ) -> Result<Action, EngineError> {
        if let Err(error) = &outcome
            && error.is_fenced()
        {
            // A replica that cannot prove it leads writes nothing more, status included.
            tracing::warn!("pass stopped: {error}");
            return Ok(Action::await_change());
        }
        let key = Self::key(obj);
        let now = self.clock.now();
        let generation = obj.meta().generation;
        let previous = obj.managed_status().cloned().unwrap_or_default();
        let (mut status, learned) = self.status_to_write(obj, &previous);
        let keep_learned = |status: &ManagedStatus| {
            if let Some(learned) = Learned::from_status(status) {
                self.memory
                    .update(key, |r| r.learned = Some(Box::new(learned)));
            }
        };
        // Whether this pass found the object converged (remembered once status says so).
        let mut converged = false;
        let (requeue, facts) = match outcome {
            Ok(verdict) if verdict.released => return Ok(self.released(obj, verdict).await),
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
                self.report_verdict(obj, &previous, &mut status, verdict, now)
                    .await
            }
            Err(EngineError::Kube { context, source }) => {
                if learned.is_some() {
                    keep_learned(&status);
                }
                return Err(EngineError::Kube { context, source });
            }
            Err(error) => {
                let requeue = self.requeue_after_error(obj, &error, now);
                self.report_error(obj, &previous, &mut status, &error, now)
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
        self.time_to_ready(obj, &previous, converged, now);
        if converged {
            let confirmed = Confirmed {
                generation: generation.unwrap_or_default(),
                at: now,
                rechecks: record.rechecks,
            };
            self.memory.update(key, |r| r.confirmed = Some(confirmed));
        }
        Ok(Action::requeue(requeue))
    }

    /// Observes the time to Ready when this pass made the object Ready at its
    /// generation: from its creation for the first generation, else from the first pass
    /// that found the generation not Ready (the memory's `converging`; a restart starts
    /// the clock again, and a change made Ready in the pass that first sees it counts as
    /// instant).
    fn time_to_ready(&self, obj: &K, previous: &ManagedStatus, ready: bool, now: Timestamp) {
        let generation = obj.meta().generation.unwrap_or_default();
        let ready_before = conditions::get(&previous.conditions, READY)
            .is_some_and(|c| &*c.status == "True" && c.observed_generation == Some(generation));
        if ready_before {
            return;
        }
        let key = Self::key(obj);
        if !ready {
            self.memory.update(key, |r| {
                if r.converging.is_none_or(|(seen, _)| seen != generation) {
                    r.converging = Some((generation, now));
                }
            });
            return;
        }
        let since = self.memory.update(key, |r| r.converging.take());
        let start = match (generation, since) {
            (..=1, _) => obj.meta().creation_timestamp.as_ref().map(|t| t.0),
            (_, Some((seen, at))) if seen == generation => Some(at),
            _ => Some(now),
        };
        if let Some(start) = start {
            let seconds = now.duration_since(start).as_secs_f64().max(0.0);
            self.metrics.became_ready(K::kind(&()).as_ref(), seconds);
        }
    }

    /// The status this pass starts from: the cached one, for this generation and
    /// Connection, with what the memory learned and the cache may not show yet (by this
    /// pass or one whose status write did not show yet). What was learned is taken out of
    /// the memory, to be put back while the cache may not show it; it is returned.
    fn status_to_write(
        &self,
        obj: &K,
        previous: &ManagedStatus,
    ) -> (ManagedStatus, Option<Box<Learned>>) {
        let mut status = previous.clone();
        status.observed_generation = obj.meta().generation;
        let reference = &obj.managed().connection_ref;
        status.cluster_connection = (reference.kind() == ConnectionKind::ClusterConnection)
            .then(|| reference.name.to_string());
        let learned = self.memory.update(Self::key(obj), |r| {
            r.confirmed = None;
            r.learned.take()
        });
        if let Some(learned) = &learned {
            status.id = Some(learned.id.clone());
            if status.pending.is_none() {
                status.pending.clone_from(&learned.pending_create);
            }
        }
        (status, learned)
    }

    /// The finalizer is gone: nothing about the object is worth remembering.
    async fn released(&self, obj: &K, verdict: Verdict) -> Action {
        self.memory.forget(Self::key(obj));
        self.resync_slots.forget(Self::key(obj));
        if let Some((reason, note)) = verdict.event {
            self.publish(obj, false, reason, note).await;
        }
        Action::await_change()
    }

    /// Sets the status of a pass that ended with `verdict` (and publishes its event):
    /// when to look again, and the provider's facts to merge.
    async fn report_verdict(
        &self,
        obj: &K,
        previous: &ManagedStatus,
        status: &mut ManagedStatus,
        verdict: Verdict,
        now: Timestamp,
    ) -> (Duration, Option<Map<String, Value>>) {
        let generation = obj.meta().generation;
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
        self.set_synced(obj, previous, status, synced, now).await;
        if let Some((reason, note)) = verdict.event {
            self.publish(obj, false, reason, note).await;
        }
        (requeue, verdict.facts)
    }

    /// Sets the conditions of a pass that failed with `error`.
    async fn report_error(
        &self,
        obj: &K,
        previous: &ManagedStatus,
        status: &mut ManagedStatus,
        error: &EngineError,
        now: Timestamp,
    ) {
        let message = error.to_string();
        let ready = match error {
            // What the resource waits for, or what failed, is always worth saying.
            EngineError::Dependency(_)
            | EngineError::DependencyFailed(_)
            | EngineError::ConnectionNotAllowed(_)
            | EngineError::ScopeNotAllowed(_) => Some(ConditionValue::new(
                false,
                error.ready_reason(),
                message.clone(),
            )),
            // A passing upstream fault says nothing about the object: keep Ready as it was.
            _ if !error.is_terminal() && conditions::get(&previous.conditions, READY).is_some() => {
                None
            }
            // Not created yet and retrying: say so rather than "Error".
            _ if !error.is_terminal() && status.id.is_none() => Some(ConditionValue::new(
                false,
                reason::CREATING,
                message.clone(),
            )),
            _ => Some(ConditionValue::new(
                false,
                error.ready_reason(),
                message.clone(),
            )),
        };
        let generation = obj.meta().generation;
        if let Some(ready) = ready {
            conditions::set(&mut status.conditions, READY, &ready, generation, now);
        }
        let synced = ConditionValue::new(false, error.synced_reason(), message);
        self.set_synced(obj, previous, status, synced, now).await;
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

    pub(super) fn bump_failures(&self, obj: &K) -> u32 {
        self.memory.update(Self::key(obj), |r| {
            r.retryable_failures += 1;
            r.retryable_failures
        })
    }

    fn clear_failures(&self, obj: &K) {
        self.memory.update(Self::key(obj), |r| {
            r.retryable_failures = 0;
            r.terminal = None;
        });
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
        let hold = TerminalHold {
            generation: obj.meta().generation.unwrap_or_default(),
            deleting: deleting(obj),
            until: now + self.timing.terminal_retry,
        };
        self.memory
            .update(Self::key(obj), |r| r.terminal = Some(hold));
        self.timing.terminal_retry
    }

    /// How long to keep away from the upstream after a terminal error at this generation.
    pub(super) fn terminal_hold(&self, obj: &K, record: &Record) -> Option<Duration> {
        let hold = record.terminal?;
        let now = self.clock.now();
        (hold.generation == obj.meta().generation.unwrap_or_default()
            && hold.deleting == deleting(obj)
            && now < hold.until)
            .then(|| elapsed(now, hold.until))
    }
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
