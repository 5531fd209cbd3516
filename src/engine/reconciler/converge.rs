//! Executing a live object's [`Step`]: the create mark before a create, the requests the
//! decision carries, what was learned (ids, accepted writes), and the verdict the status
//! shows. Nothing here chooses what to send: [`decision::decide`] did.

use std::collections::BTreeMap;

use kube::api::Api;

use super::Engine;
use super::read::PassReader;
use super::status::{ACCEPTED_CREATE, ACCEPTED_UPDATE, Verdict};
use crate::api::envelope::{PendingOperation, PendingWrite};
use crate::base::conditions::{self, ConditionValue, READY, reason};
use crate::base::kube_ops;
use crate::engine::decision::{self, Change, Existing, Found, Given, Step};
use crate::engine::memory::Learned;
use crate::engine::metrics::{CORRECTED, REPORTED};
use crate::engine::observation::Purpose;
use crate::engine::ownership;
use crate::engine::{
    ADOPTED_ANNOTATION, CREATE_MARK_ANNOTATION, CreateMark, Created, Cx, EXTERNAL_ID_ANNOTATION,
    EngineError, LEGACY_CREATE_PENDING_ANNOTATION, ManagedObject, Provider, Written,
    memory::Record, recorded_id,
};
use crate::upstream::{Call, ErrorClass};

impl<K: ManagedObject, P: Provider<K>> Engine<K, P> {
    /// Brings the upstream object in line with the spec (or reports how it differs).
    pub(super) async fn converge(
        &self,
        api: &Api<K>,
        obj: &K,
        record: &Record,
        purpose: Purpose,
    ) -> Result<Verdict, EngineError> {
        let (upstream, inputs) = self.reach(obj).await?;
        let cx = Cx::new(obj, &upstream, &inputs);
        let owner = self.owners(obj, Some(upstream.tenant()));
        let given = self.given(obj, record, &upstream, &owner);
        let reader = PassReader {
            engine: self,
            purpose,
            given: &given,
        };
        match decision::decide(&self.provider, &cx, &reader, &given).await? {
            Step::Wait(wait) => Ok(Verdict::waiting(wait)),
            Step::AwaitCreate { id, pending } => {
                let mut v = Verdict::new(
                    ConditionValue::new(false, reason::PENDING, ACCEPTED_CREATE),
                    self.not_visible_yet(obj, &id, &pending, given.now),
                );
                v.id = Some(id);
                v.pending = Some(pending);
                Ok(v)
            }
            Step::NotFound(message) => Ok(Verdict::new(
                ConditionValue::new(false, reason::NOT_FOUND, message),
                self.resync(obj),
            )),
            Step::AlreadyManaged { id, owner } => Ok(Verdict::new(
                ConditionValue::new(
                    false,
                    reason::ALREADY_MANAGED,
                    ownership::already_managed(&K::kind(&()), &id, &owner),
                ),
                self.resync(obj),
            )),
            Step::Create { calls } => {
                if recorded_id(obj).is_some() {
                    // The object the operator created is gone (deleted out of band).
                    tracing::info!("upstream object is gone; creating it again");
                }
                self.create(api, &cx, calls, &given).await
            }
            Step::Existing(existing) => {
                match existing.found {
                    Found::Recovered => {
                        // A create whose response was lost: the object is ours; the status
                        // records its id.
                        tracing::info!(id = existing.id, "recovered an interrupted create");
                        self.learned(obj, &existing.id, None);
                    }
                    Found::Adopted { mark: true } => {
                        self.mark_adopted(api, obj, &existing.id).await?
                    }
                    Found::Adopted { mark: false } | Found::Recorded | Found::Created => {}
                }
                self.apply(&cx, existing, &given).await
            }
        }
    }

    /// Crash-safe create: mark the attempt, send `calls`, record the id.
    async fn create(
        &self,
        api: &Api<K>,
        cx: &Cx<'_, K, P::Inputs>,
        calls: Vec<Call>,
        given: &Given<'_>,
    ) -> Result<Verdict, EngineError> {
        let now = given.now;
        // The create mark and the finalizer, in one write before anything is sent.
        // Guarded by the resourceVersion: the decision to create must not rest on a stale
        // cached copy (one that does not show an earlier create's id yet).
        let obj = &kube_ops::mark_if_unchanged(
            api,
            cx.obj,
            BTreeMap::from([
                (
                    CREATE_MARK_ANNOTATION,
                    Some(CreateMark::value(now, self.fence.identity())),
                ),
                (LEGACY_CREATE_PENDING_ANNOTATION, None),
            ]),
        )
        .await?;
        let cx = Cx::new(obj, cx.upstream, cx.inputs);
        let created = match self.provider.create(&cx, calls).await {
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
                self.wrote(obj, &id, false);
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
                // Some fields can only be set by an update after create (e.g. C1
                // deprovisioner policy): the same comparison as for any existing object.
                let existing =
                    decision::compare(&self.provider, &cx, created, Found::Created, given).await?;
                self.apply(&cx, existing, given).await
            }
            Created::Accepted { id } => Ok(self.create_accepted(obj, id, now)),
        }
    }

    /// The upstream accepted the create of `id` to apply later: the status records the id
    /// and the pending create (the request time), so that a later pass waits for it to
    /// become visible instead of re-sending.
    fn create_accepted(&self, obj: &K, id: String, now: k8s_openapi::jiff::Timestamp) -> Verdict {
        self.wrote(obj, &id, true);
        let pending = PendingWrite {
            operation: PendingOperation::Create,
            generation: obj.meta().generation.unwrap_or_default(),
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
        v
    }

    /// Executes what an existing object needs: nothing, a report, a wait, or the update.
    async fn apply(
        &self,
        cx: &Cx<'_, K, P::Inputs>,
        existing: Existing<P::Observed>,
        given: &Given<'_>,
    ) -> Result<Verdict, EngineError> {
        let obj = cx.obj;
        let Existing {
            observed,
            id,
            diff,
            change,
            ..
        } = existing;
        let mut verdict = match change {
            Change::None => {
                // An accepted write awaited for this object shows now.
                self.looked(obj, &id, true);
                Verdict::new(
                    ConditionValue::new(
                        true,
                        reason::AVAILABLE,
                        "upstream object matches the spec",
                    ),
                    self.resync(obj),
                )
            }
            Change::Drifted => {
                let ready = ConditionValue::new(
                    false,
                    reason::DRIFTED,
                    format!("{DRIFTED_IN}{}", diff.fields.join(", ")),
                );
                // Counted when found, not again at each resync that finds it still.
                let new = newly_drifted(obj, &diff.fields);
                self.metrics.drifted(&K::kind(&()), &new, REPORTED);
                Verdict::new(ready, self.resync(obj))
            }
            Change::Awaited(pending) => {
                let mut v = Verdict::new(
                    ConditionValue::new(false, reason::PENDING, ACCEPTED_UPDATE),
                    self.not_visible_yet(obj, &id, &pending, given.now),
                );
                v.pending = Some(pending);
                v
            }
            Change::Update { calls } => {
                let written = self.provider.update(cx, &observed, &diff, calls).await;
                self.wrote(obj, &id, matches!(written, Ok(Written::Accepted)));
                self.updated(cx, &observed, &id, &diff.fields, written?, given)
            }
        };
        if verdict.facts.is_none() {
            verdict.facts = Some(self.provider.facts(cx, &observed));
        }
        verdict.id = Some(id);
        if let Some((reason, message)) = diff.unresolved_summary() {
            verdict.ready = ConditionValue::new(false, reason, message.clone());
            verdict.unresolved = Some(message);
        }
        Ok(verdict)
    }

    /// The verdict of an update of `fields` the upstream answered with `written`; its
    /// event says whether the user's change or drift caused it.
    fn updated(
        &self,
        cx: &Cx<'_, K, P::Inputs>,
        observed: &P::Observed,
        id: &str,
        fields: &[&'static str],
        written: Written<P::Observed>,
        given: &Given<'_>,
    ) -> Verdict {
        let obj = cx.obj;
        let generation = obj.meta().generation.unwrap_or_default();
        let spec_changed = obj.managed_status().and_then(|s| s.observed_generation)
            != Some(generation)
            || obj
                .managed_status()
                .and_then(|s| conditions::get(&s.conditions, READY))
                .is_none_or(|c| c.status != "True");
        if !spec_changed {
            self.metrics.drifted(&K::kind(&()), fields, CORRECTED);
        }
        let fields = fields.join(", ");
        match written {
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
                        .facts(cx, new_state.as_ref().unwrap_or(observed)),
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
                    self.first_look(obj, id),
                );
                v.pending = Some(PendingWrite {
                    operation: PendingOperation::Update,
                    generation,
                    requested_at: given.now.to_string(),
                });
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
    }

    /// Writes the adoption of the existing upstream object `id` (deterministic ids): the
    /// deletion default becomes `Orphan`.
    async fn mark_adopted(&self, api: &Api<K>, obj: &K, id: &str) -> Result<(), EngineError> {
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

    /// This pass learned the id of the object's upstream twin (and, for an accepted
    /// create, that it is pending): the status records it.
    pub(super) fn learned(&self, obj: &K, id: &str, pending_create: Option<PendingWrite>) {
        let learned = Learned {
            id: id.to_string(),
            pending_create,
        };
        self.memory
            .update(Self::key(obj), |r| r.learned = Some(Box::new(learned)));
    }
}

/// An upstream answer (4xx other than 408/409/429) proving the write was not applied.
fn refused_before_applying(e: &crate::upstream::UpstreamError) -> bool {
    e.class() == ErrorClass::Terminal
        && !e.may_have_applied()
        && e.status()
            .is_some_and(|s| (400..500).contains(&s) && s != 409)
}

/// How `Ready=False/Drifted` starts its message; the fields follow, comma-separated.
const DRIFTED_IN: &str = "upstream differs from the spec in: ";

/// The drifted `fields` that the object's `Ready` condition does not report yet (a
/// resync that finds the same drift again is not a new out-of-band change).
fn newly_drifted<K: ManagedObject>(obj: &K, fields: &[&'static str]) -> Vec<&'static str> {
    let reported: Vec<&str> = obj
        .managed_status()
        .and_then(|s| conditions::get(&s.conditions, READY))
        .filter(|c| &*c.reason == reason::DRIFTED)
        .and_then(|c| Some(c.message.strip_prefix(DRIFTED_IN)?.split(", ").collect()))
        .unwrap_or_default();
    fields
        .iter()
        .copied()
        .filter(|f| !reported.contains(f))
        .collect()
}
