//! The decision of one pass: what the reconciler does with a resource's upstream object,
//! made from reads alone. It picks the id, reads the object, locates it (found,
//! recovered after an interrupted create, not found, or to be created), and compares
//! it with the spec (refusal, diff, unresolved parts, the `Observe` policy, an awaited
//! asynchronous write, the write gate), down to the requests a create or an update sends.
//!
//! It never writes. [`decide`] returns a [`Step`]: `Engine::converge` executes it (create
//! mark, send, record, status) and `accessplane plan` prints it, so the plan shows what
//! the operator does because both run this one function. Deletion has its counterpart in
//! [`super::deletion`].
//!
//! What differs between the two callers is given, not decided: how the object is read
//! (a [`Reader`]: the engine's coalesced observation, or the plan's one List per scope)
//! and what the caller knows besides the object ([`Given`]: the engine's memory of the
//! object and another replica's create in flight; a plan knows neither).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::memory::Learned;
use super::ownership::OwnerOf;
use super::requeue::Timing;
use super::{
    CreateMark, Cx, Diff, EXTERNAL_ID_ANNOTATION, EngineError, ManagedObject, Provider, annotation,
    create_mark, recorded_id,
};
use crate::api::envelope::{ManagementPolicy, PendingOperation, PendingWrite};
use crate::base::clock::elapsed;
use crate::upstream::Call;

/// What a reader found under an id.
pub enum Read<O> {
    /// The object as it is now (`None`: absent).
    Now(Option<O>),
    /// Reading back the operator's own accepted write waits for the List of its scope
    /// that is due in this long (see [`super::observation`]).
    Later(Duration),
}

/// How a decision reads the object under an id.
pub trait Reader<K: ManagedObject, P: Provider<K>>: Sync {
    fn read(
        &self,
        cx: &Cx<'_, K, P::Inputs>,
        id: &str,
    ) -> impl Future<Output = Result<Read<P::Observed>, EngineError>> + Send;
}

/// Whether an object missing from a List of the last moments is absent without a GET
/// to confirm it: for deterministic ids a wrong "absent" is harmless (a create of an
/// existing id is a conflict, not a duplicate; an accepted create is waited for). Ids
/// the server assigns are confirmed: Lists may lag behind creates.
pub fn absent_when_unlisted<K: ManagedObject, P: Provider<K>>(provider: &P, obj: &K) -> bool {
    provider.deterministic_id(obj).is_some()
}

/// What the decision knows besides the object and the upstream.
pub struct Given<'a> {
    pub now: Timestamp,
    pub timing: &'a Timing,
    /// What the engine learned of the object that its status does not show yet.
    pub learned: Option<&'a Learned>,
    /// A create mark of another replica whose create may still arrive: how long to wait
    /// before looking up what it made (see `Engine::create_of_another_replica_in_flight`).
    pub create_in_flight: Option<Duration>,
    /// Which other resource (`namespace/name`) owns an upstream id, if any (see
    /// [`super::ownership`]); `None`: not known to this caller.
    pub owner: Option<OwnerOf<'a>>,
}

impl Given<'_> {
    /// What a plan knows at `now`: the object alone.
    pub fn object_only(now: Timestamp, timing: &Timing) -> Given<'_> {
        Given {
            now,
            timing,
            learned: None,
            create_in_flight: None,
            owner: None,
        }
    }

    /// The other resource that owns the upstream object `id`, if any.
    pub fn owner_of(&self, id: &str) -> Option<String> {
        self.owner.and_then(|owner| owner(id))
    }

    /// The upstream id the resource points at, if known: recorded, learned, or following
    /// from its spec.
    pub fn known_id<K: ManagedObject, P: Provider<K>>(
        &self,
        provider: &P,
        obj: &K,
    ) -> Option<String> {
        recorded_id(obj)
            .or_else(|| self.learned.map(|l| l.id.clone()))
            .or_else(|| provider.deterministic_id(obj))
    }

    /// A create was attempted whose outcome neither the resource nor the engine knows.
    pub fn create_in_doubt<K: ManagedObject>(&self, obj: &K) -> bool {
        super::create_in_doubt(obj) && self.learned.is_none()
    }

    /// An accepted `operation` still within its grace period, as the status records it
    /// (or, for a create, as the engine learned it).
    pub fn pending_within_grace<K: ManagedObject>(
        &self,
        obj: &K,
        operation: PendingOperation,
    ) -> Option<PendingWrite> {
        let recorded = obj.managed_status().and_then(|s| s.pending.clone());
        let pending = recorded
            .or_else(|| self.learned.and_then(|l| l.pending_create.clone()))
            .filter(|p| p.operation == operation)?;
        let requested: Timestamp = pending.requested_at.parse().ok()?;
        (elapsed(requested, self.now) < self.timing.pending_grace).then_some(pending)
    }

    /// When the create mark says a create went out, if that is within [`Self::create_wait`]
    /// and the status does not show the object upstream yet (no id, or an accepted create
    /// still pending).
    pub fn create_sent_within_grace<K: ManagedObject>(&self, obj: &K) -> Option<Timestamp> {
        let seen = obj.managed_status().is_some_and(|s| {
            s.id.is_some()
                && s.pending
                    .as_ref()
                    .is_none_or(|p| p.operation != PendingOperation::Create)
        });
        if seen || self.learned.is_some() {
            return None;
        }
        let sent = CreateMark::parse(create_mark(obj)?).at?;
        (elapsed(sent, self.now) < self.create_wait(obj)).then_some(sent)
    }

    /// How long a create named by the create mark is waited for: the grace of an accepted
    /// write when the status records its acceptance; otherwise the create may never have
    /// been sent (a stop right after the mark), and a shorter wait covers one that was.
    pub fn create_wait<K: ManagedObject>(&self, obj: &K) -> Duration {
        let accepted = obj
            .managed_status()
            .and_then(|s| s.pending.as_ref())
            .is_some_and(|p| p.operation == PendingOperation::Create);
        if accepted {
            self.timing.pending_grace
        } else {
            self.timing.unrecorded_create_wait
        }
    }
}

/// What one pass does.
pub enum Step<O> {
    /// Nothing now, and no status to write: the read waits for its scope's next List, or
    /// another replica's create may still arrive.
    Wait(Duration),
    /// An accepted asynchronous create of `id` is not visible yet: waited for, not sent again.
    AwaitCreate { id: String, pending: PendingWrite },
    /// Adopted or observed, and absent: `Ready=False/NotFound` with this message.
    NotFound(String),
    /// Another resource (`owner`, `namespace/name`) manages the upstream object `id`:
    /// nothing is sent upstream, `Ready=False/AlreadyManaged`.
    AlreadyManaged { id: String, owner: String },
    /// Nothing upstream: these requests create it.
    Create { calls: Vec<Call> },
    /// The upstream object exists.
    Existing(Existing<O>),
}

/// An existing upstream object, and what to do about it.
pub struct Existing<O> {
    pub observed: O,
    pub id: String,
    pub found: Found,
    pub diff: Diff,
    pub change: Change,
}

/// How the resource came to its upstream object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Under the id it records, or the engine learned: its own, or adopted before.
    Recorded,
    /// By natural key after an interrupted create: its own; the status records its id.
    Recovered,
    /// Taken over now: named by `spec.externalId`, or existing under the id its spec
    /// names before it ever created one. `mark`: the adoption is written in metadata
    /// (deterministic ids; it makes the deletion default `Orphan`).
    Adopted { mark: bool },
    /// Made by this pass's create.
    Created,
}

/// What an existing object needs.
#[derive(Debug)]
pub enum Change {
    /// Matches the spec (parts no update can achieve aside: [`Diff::unresolved`]).
    None,
    /// `Observe` policy: differs, and is never written to.
    Drifted,
    /// An accepted asynchronous update of this generation is not visible yet.
    Awaited(PendingWrite),
    /// Differs: these requests update it (after the write gate let them).
    Update { calls: Vec<Call> },
}

/// Decides one pass of `cx.obj` (see the module documentation).
pub async fn decide<K: ManagedObject, P: Provider<K>, R: Reader<K, P>>(
    provider: &P,
    cx: &Cx<'_, K, P::Inputs>,
    reader: &R,
    given: &Given<'_>,
) -> Result<Step<P::Observed>, EngineError> {
    let obj = cx.obj;
    let known_id = given.known_id(provider, obj);
    // Before any upstream call: an object another resource manages is not touched.
    if let Some(id) = &known_id
        && let Some(owner) = given.owner_of(id)
    {
        return Ok(Step::AlreadyManaged {
            id: id.clone(),
            owner,
        });
    }
    let mut observed = None;
    if let Some(id) = &known_id {
        observed = match reader.read(cx, id).await? {
            Read::Now(observed) => observed,
            Read::Later(wait) => return Ok(Step::Wait(wait)),
        };
        // An accepted create is remembered in status. (Where that status write failed,
        // the create is sent again: only deterministic ids are created asynchronously,
        // and their upstream answers a repeated create with 409.)
        if observed.is_none()
            && let Some(pending) = given.pending_within_grace(obj, PendingOperation::Create)
        {
            return Ok(Step::AwaitCreate {
                id: id.clone(),
                pending,
            });
        }
    }
    let in_doubt = given.create_in_doubt(obj);
    if in_doubt && let Some(wait) = given.create_in_flight {
        return Ok(Step::Wait(wait));
    }
    let (observed, recovered) =
        match locate(provider, cx, known_id.as_deref(), observed, in_doubt).await? {
            Located::Found {
                observed,
                recovered,
            } => (observed, recovered),
            Located::NotFound(message) => return Ok(Step::NotFound(message)),
            Located::Create => {
                // Gate first: a create that waits for a dependency has not been attempted.
                provider.write_gate(cx).await?;
                return Ok(Step::Create {
                    calls: provider.create_calls(cx),
                });
            }
        };
    let id = provider.id_of(&observed);
    // Found by natural key (an interrupted create, `Observe` without id): it may be
    // another resource's.
    if known_id.is_none()
        && let Some(owner) = given.owner_of(&id)
    {
        return Ok(Step::AlreadyManaged { id, owner });
    }
    let found = found(provider, obj, &id, recovered, given);
    Ok(Step::Existing(
        compare(provider, cx, observed, found, given).await?,
    ))
}

/// How the resource came to the object `id` it found.
fn found<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    obj: &K,
    id: &str,
    recovered: bool,
    given: &Given<'_>,
) -> Found {
    if recovered {
        return Found::Recovered;
    }
    let observe_only = obj.managed().management() == ManagementPolicy::Observe;
    let recorded = obj.managed_status().and_then(|s| s.id.as_deref()) == Some(id)
        || annotation(obj, EXTERNAL_ID_ANNOTATION) == Some(id);
    // Deterministic ids need no recovery lookup, but provenance still matters for the
    // deletion default: an object that existed before any create of ours is adopted.
    // Ours when we tried to create it, whether or not it is visible yet.
    let mark = !observe_only
        && provider.deterministic_id(obj).is_some()
        && create_mark(obj).is_none()
        && !recorded;
    let ours = obj.managed_status().and_then(|s| s.id.as_ref()).is_some()
        || create_mark(obj).is_some()
        || given.learned.is_some();
    if mark || !ours {
        Found::Adopted { mark }
    } else {
        Found::Recorded
    }
}

/// Compares the existing `observed` with the spec: what it needs (see [`Change`]).
pub async fn compare<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    cx: &Cx<'_, K, P::Inputs>,
    observed: P::Observed,
    found: Found,
    given: &Given<'_>,
) -> Result<Existing<P::Observed>, EngineError> {
    let obj = cx.obj;
    if let Some(why) = provider.refuse_update(&observed) {
        return Err(EngineError::Refused(why));
    }
    let diff = provider.diff(cx, &observed);
    let generation = obj.meta().generation.unwrap_or_default();
    let change = if diff.is_empty() {
        Change::None
    } else if obj.managed().management() == ManagementPolicy::Observe {
        Change::Drifted
    } else if let Some(pending) = given
        .pending_within_grace(obj, PendingOperation::Update)
        .filter(|p| p.generation == generation)
    {
        Change::Awaited(pending)
    } else {
        provider.write_gate(cx).await?;
        Change::Update {
            calls: provider.update_calls(cx, &observed, &diff),
        }
    };
    Ok(Existing {
        id: provider.id_of(&observed),
        observed,
        found,
        diff,
        change,
    })
}

/// Where a resource's upstream object stands once its id (if any) has been read.
pub enum Located<O> {
    /// The object (`recovered`: found by natural key after an interrupted create — it is
    /// the resource's own, and its id is to be recorded).
    Found { observed: O, recovered: bool },
    /// Nothing upstream: the resource creates it.
    Create,
    /// Adopted or observed, and absent: `Ready=False/NotFound` with this message.
    NotFound(String),
}

/// Decides what an object whose read found `observed` (under `id`, the id it records,
/// adopts or follows from its spec) faces. Without an object: an adoption or `Observe`
/// with an id is not found; a create in doubt (`in_doubt`) or `Observe` without id
/// looks the natural key up (never for deterministic ids, which cannot duplicate).
pub async fn locate<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    cx: &Cx<'_, K, P::Inputs>,
    id: Option<&str>,
    observed: Option<P::Observed>,
    in_doubt: bool,
) -> Result<Located<P::Observed>, EngineError> {
    if let Some(observed) = observed {
        return Ok(Located::Found {
            observed,
            recovered: false,
        });
    }
    let managed = cx.obj.managed();
    let observe_only = managed.management() == ManagementPolicy::Observe;
    if id.is_some() && (managed.external_id.is_some() || observe_only) {
        return Ok(Located::NotFound(not_found_message(id)));
    }
    let deterministic = provider.deterministic_id(cx.obj).is_some();
    let mut candidates = if (in_doubt || observe_only) && !deterministic {
        provider.find(cx).await?
    } else {
        vec![]
    };
    match candidates.len() {
        0 if observe_only => Ok(Located::NotFound(not_found_message(None))),
        0 => Ok(Located::Create),
        1 => Ok(Located::Found {
            observed: candidates.pop().expect("one candidate"),
            recovered: !observe_only,
        }),
        _ => {
            let ids: Vec<String> = candidates.iter().map(|c| provider.id_of(c)).collect();
            Err(ambiguous_create(&ids))
        }
    }
}

/// Why an adopted or observed resource shows `NotFound`: no object under `id`, or (no
/// id) none matching its natural key.
pub fn not_found_message(id: Option<&str>) -> String {
    match id {
        Some(id) => format!("upstream object {id} does not exist"),
        None => "no upstream object matches this resource; set spec.externalId to observe a specific one".into(),
    }
}

/// More than one upstream object matches a resource whose create was interrupted.
pub fn ambiguous_create(ids: &[String]) -> EngineError {
    EngineError::CreateAmbiguous(format!(
        "{} upstream objects match this resource after an interrupted create ({}); delete the duplicates upstream, or set spec.externalId to the one to keep",
        ids.len(),
        ids.join(", ")
    ))
}
