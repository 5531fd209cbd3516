//! Executing a deletion ([`deletion`]): the finalizer goes only once the upstream object
//! is gone, or was never the operator's to delete.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;

use super::Engine;
use super::read::{CurrentReader, pending_wait};
use super::status::Verdict;
use crate::api::envelope::{PendingOperation, PendingWrite};
use crate::base::clock::elapsed;
use crate::base::conditions::{ConditionValue, reason};
use crate::base::kube_ops;
use crate::engine::decision::Given;
use crate::engine::deletion::{self, Reach, Removal};
use crate::engine::memory::Record;
use crate::engine::{Cx, EngineError, ManagedObject, Provider, Written};
use crate::upstream::Call;

/// Ready message while an accepted delete is not done.
const ACCEPTED_DELETE: &str = "delete accepted upstream; waiting for the object to disappear";

impl<K: ManagedObject, P: Provider<K>> Engine<K, P> {
    /// Deletion per policy; the finalizer goes only once the upstream object is gone.
    pub(super) async fn finalize(
        &self,
        api: &Api<K>,
        obj: &K,
        record: &Record,
    ) -> Result<Verdict, EngineError> {
        let now = self.clock.now();
        let owner = self.owners(obj, self.tenant_of(obj));
        let given = Given {
            now,
            timing: &self.timing,
            learned: record.learned.as_deref(),
            create_in_flight: None,
            owner: Some(&owner),
        };
        match deletion::reach(&self.provider, obj, &given) {
            Reach::Release { .. } => {
                kube_ops::remove_finalizer(api, obj).await?;
                Ok(Verdict::released(None))
            }
            Reach::Upstream { known_id } => self
                .delete_upstream(api, obj, record, known_id)
                .await
                .map_err(deletion::explain),
        }
    }

    /// Deletes the upstream object (`known_id`, or what an interrupted create made).
    async fn delete_upstream(
        &self,
        api: &Api<K>,
        obj: &K,
        record: &Record,
        known_id: Option<String>,
    ) -> Result<Verdict, EngineError> {
        let (upstream, inputs) = self.reach(obj).await?;
        let cx = Cx::new(obj, &upstream, &inputs);
        let owner = self.owners(obj, Some(upstream.tenant()));
        let given = self.given(obj, record, &upstream, &owner);
        let reader = CurrentReader { engine: self };
        match deletion::decide(&self.provider, &cx, &reader, &given, known_id).await? {
            Removal::Release { gone } => {
                kube_ops::remove_finalizer(api, obj).await?;
                Ok(Verdict::released(gone.map(|id| {
                    ("Deleted", format!("upstream object {id} is gone"))
                })))
            }
            Removal::Wait(wait) => Ok(Verdict::waiting(wait)),
            Removal::AwaitDelete(pending) => {
                let mut v = Verdict::new(
                    ConditionValue::new(false, reason::DELETING, ACCEPTED_DELETE),
                    self.timing.pending_poll(pending_wait(&pending, given.now)),
                );
                v.pending = Some(pending);
                Ok(v)
            }
            Removal::Delete {
                id,
                calls,
                create_sent,
            } => {
                self.request_delete(api, &cx, &id, calls, &given, create_sent)
                    .await
            }
        }
    }

    /// Sends the delete; the finalizer goes once the upstream has done it. `create_sent`:
    /// a create that may not be visible yet, so that "done" (a 404) proves nothing.
    async fn request_delete(
        &self,
        api: &Api<K>,
        cx: &Cx<'_, K, P::Inputs>,
        id: &str,
        calls: Vec<Call>,
        given: &Given<'_>,
        create_sent: Option<Timestamp>,
    ) -> Result<Verdict, EngineError> {
        let (obj, now) = (cx.obj, given.now);
        let deleted = self.provider.delete(cx, calls).await;
        // An accepted delete is read back by GETs (deleting never waits for a List).
        self.wrote(obj, id, false);
        let deleted = deleted?;
        if let (Written::Done(_), Some(sent)) = (&deleted, create_sent) {
            return Ok(Verdict::new(
                ConditionValue::new(
                    false,
                    reason::DELETING,
                    format!(
                        "the create attempted at {sent} is not visible upstream yet, so there was nothing to delete; the delete is sent again until it shows or {} s have passed",
                        given.create_wait(obj).as_secs()
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
                    ConditionValue::new(false, reason::DELETING, ACCEPTED_DELETE),
                    self.timing.pending_poll(Duration::ZERO),
                );
                v.pending = Some(PendingWrite {
                    operation: PendingOperation::Delete,
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
}
