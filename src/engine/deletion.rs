//! The decision of a deletion: what the finalizer does before it goes, made from reads
//! alone. `Engine::finalize` executes it, and `accessplane plan --prune` prints it for
//! the resources the input no longer holds (see [`super::decision`] for the pass of a
//! live resource).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::decision::{Given, Read, Reader};
use super::{Cx, EngineError, ManagedObject, Provider, effective_deletion_policy, recorded_id};
use crate::api::envelope::{DeletionPolicy, PendingOperation, PendingWrite};
use crate::upstream::{Call, ErrorClass};

/// How to get out of a deletion that cannot complete.
pub const ORPHAN_HINT: &str = "set spec.deletionPolicy: Orphan to remove the finalizer and leave the upstream object as it is";

/// Where a deletion starts.
pub enum Reach {
    /// The finalizer goes without asking the upstream: `deletionPolicy` is `Orphan` (or
    /// the resource only observes), or nothing was ever created or adopted upstream (so
    /// neither the Connection nor referenced resources are needed: they may be gone).
    Release { orphaned: bool },
    /// The upstream object `known_id` is deleted; `None`: a create in doubt, whose object
    /// is looked up by natural key first.
    Upstream { known_id: Option<String> },
}

/// What the deletion does upstream.
pub enum Removal {
    /// Nothing (more): the finalizer goes. `gone`: the id of an object whose requested
    /// delete is now seen done.
    Release { gone: Option<String> },
    /// Another replica's create may still arrive: look it up later.
    Wait(Duration),
    /// An accepted asynchronous delete is not done yet.
    AwaitDelete(PendingWrite),
    /// These requests delete the object `id`. `create_sent`: a create that may not be
    /// visible yet, so that a 404 proves nothing (it is sent again until the create's
    /// wait has passed).
    Delete {
        id: String,
        calls: Vec<Call>,
        create_sent: Option<Timestamp>,
    },
}

/// Where the deletion of `obj` starts.
pub fn reach<K: ManagedObject, P: Provider<K>>(provider: &P, obj: &K, given: &Given<'_>) -> Reach {
    if effective_deletion_policy(obj) == DeletionPolicy::Orphan {
        return Reach::Release { orphaned: true };
    }
    let in_doubt = given.create_in_doubt(obj);
    // A deterministic id says where the object would be, not that it was ever made.
    let known_id = recorded_id(obj)
        .or_else(|| given.learned.map(|l| l.id.clone()))
        .or_else(|| in_doubt.then(|| provider.deterministic_id(obj)).flatten());
    if known_id.is_none() && !in_doubt {
        return Reach::Release { orphaned: false };
    }
    // Another resource manages it: deleting this one never deletes it.
    if known_id
        .as_deref()
        .and_then(|id| given.owner_of(id))
        .is_some()
    {
        return Reach::Release { orphaned: true };
    }
    Reach::Upstream { known_id }
}

/// Decides the upstream part of a deletion that [`reach`] sent upstream.
pub async fn decide<K: ManagedObject, P: Provider<K>, R: Reader<K, P>>(
    provider: &P,
    cx: &Cx<'_, K, P::Inputs>,
    reader: &R,
    given: &Given<'_>,
    known_id: Option<String>,
) -> Result<Removal, EngineError> {
    let obj = cx.obj;
    let id = match known_id {
        Some(id) => id,
        // Deleted while a create was in flight: find what it may have made (once another
        // replica's create can no longer arrive).
        None => {
            if let Some(wait) = given.create_in_flight {
                return Ok(Removal::Wait(wait));
            }
            let found = provider.find(cx).await?;
            match found.len() {
                0 => return Ok(Removal::Release { gone: None }),
                // What the natural key finds may be another resource's object.
                1 if given.owner_of(&provider.id_of(&found[0])).is_some() => {
                    return Ok(Removal::Release { gone: None });
                }
                1 => provider.id_of(&found[0]),
                n => {
                    return Err(EngineError::CreateAmbiguous(format!(
                        "{n} upstream objects match this resource; delete them upstream or {ORPHAN_HINT}"
                    )));
                }
            }
        }
    };
    let observed = match reader.read(cx, &id).await? {
        Read::Now(observed) => observed,
        Read::Later(wait) => return Ok(Removal::Wait(wait)),
    };
    let pending_delete = given.pending_within_grace(obj, PendingOperation::Delete);
    let Some(observed) = observed else {
        // An accepted create of an asynchronous upstream may not be visible yet (a crash
        // or a quick delete can come before it is): reading "absent" then proves nothing,
        // and releasing would orphan it. Ask the upstream to delete it by its
        // deterministic id instead; a 404 means nothing was made.
        let create_sent = given.create_sent_within_grace(obj);
        let create_in_flight = provider.deterministic_id(obj).is_some()
            && (create_sent.is_some() || given.create_in_doubt(obj))
            && pending_delete.is_none();
        if create_in_flight {
            return delete(provider, cx, id, create_sent).await;
        }
        let requested = obj
            .managed_status()
            .and_then(|s| s.pending.as_ref())
            .is_some_and(|p| p.operation == PendingOperation::Delete);
        return Ok(Removal::Release {
            gone: requested.then_some(id),
        });
    };
    if let Some(why) = provider.refuse_delete(&observed) {
        return Err(EngineError::Refused(format!("{why}; {ORPHAN_HINT}")));
    }
    if let Some(pending) = pending_delete {
        return Ok(Removal::AwaitDelete(pending));
    }
    delete(provider, cx, id, None).await
}

/// The delete of `id`, once the write gate lets it go.
async fn delete<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    cx: &Cx<'_, K, P::Inputs>,
    id: String,
    create_sent: Option<Timestamp>,
) -> Result<Removal, EngineError> {
    provider.write_gate(cx).await?;
    Ok(Removal::Delete {
        calls: provider.delete_calls(cx, &id),
        id,
        create_sent,
    })
}

/// A deletion that cannot go on, said with how to get out of it: what is missing (the
/// Connection, a referenced resource) or what the upstream refuses (400/403/422,
/// rejected credentials) does not go away by retrying.
pub fn explain(error: EngineError) -> EngineError {
    match error {
        EngineError::Dependency(message) => EngineError::Dependency(format!(
            "cannot delete the upstream object: {message}; {ORPHAN_HINT}"
        )),
        EngineError::ConnectionNotAllowed(message) => EngineError::ConnectionNotAllowed(format!(
            "cannot delete the upstream object: {message}; {ORPHAN_HINT}"
        )),
        EngineError::ScopeNotAllowed(message) => EngineError::ScopeNotAllowed(format!(
            "cannot delete the upstream object: {message}; {ORPHAN_HINT}"
        )),
        EngineError::Upstream(source) if source.class() != ErrorClass::Retryable => {
            EngineError::Delete {
                source,
                hint: ORPHAN_HINT,
            }
        }
        other => other,
    }
}
