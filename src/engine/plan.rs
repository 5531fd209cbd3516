//! The engine's side of `accessplane plan`: the decision of one pass
//! ([`super::decision::decide`]) or of a deletion ([`super::deletion`]), the very
//! functions the reconciler executes, made with the provider's own reads and printed
//! instead of executed. Writes cannot happen: the client given is read-only
//! ([`UpstreamClient::read_only`]) and a decision never writes.
//!
//! What only a plan adds: the requests that follow a create (the comparison of what the
//! create is expected to leave, [`Provider::created_state`], with the spec), and the
//! values of the differing fields.

use std::collections::HashMap;

use k8s_openapi::jiff::Timestamp;

use super::decision::{self, Change, Found, Given, Read, Reader, Step, absent_when_unlisted};
use super::deletion::{self, Reach, Removal};
use super::requeue::Timing;
use super::{Cx, EngineError, ManagedObject, Provider};
use crate::base::conditions::reason;
use crate::upstream::{Call, UpstreamClient};

/// A plan's timing: the operator's defaults (how long an accepted write is awaited).
static TIMING: std::sync::LazyLock<Timing> = std::sync::LazyLock::new(Timing::default);

/// Stands for the id the upstream assigns to an object a plan creates, in the paths of
/// requests that follow the create.
pub const CREATED_ID: &str = "CREATED_ID";

/// One differing managed field: its upstream value now and the spec's (`None` where not
/// shown: unknown, or never printed, as a Connector's configuration).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<serde_json::Value>,
}

/// The values of the differing `fields`, upstream and in the spec.
fn changes<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    obj: &K,
    observed: &P::Observed,
    fields: &[&'static str],
) -> Vec<FieldChange> {
    let spec = serde_json::to_value(obj)
        .ok()
        .and_then(|o| o.get("spec").cloned())
        .unwrap_or_default();
    fields
        .iter()
        .map(|field| FieldChange {
            field,
            from: provider.observed_value(observed, field),
            to: spec.get(*field).cloned(),
        })
        .collect()
}

/// What the reconciler would do with one resource.
#[derive(Debug)]
pub enum Planned {
    /// No upstream object yet: these requests create it.
    Create { requests: Vec<Call> },
    /// The upstream object `id` differs in `fields`; `adopted` when the resource would
    /// take over an object it did not create (`externalId`, or one that exists under the
    /// id its spec names).
    Update {
        id: String,
        fields: Vec<&'static str>,
        changes: Vec<FieldChange>,
        requests: Vec<Call>,
        adopted: bool,
        /// Parts no update achieves (e.g. a tool that is not approved): the reason and
        /// message `Ready` would show after the update.
        unresolved: Option<(&'static str, String)>,
    },
    /// Matches the spec (`adopted`: an existing object taken over without a change).
    NoOp { id: String, adopted: bool },
    /// `Observe` policy: differs in `fields`, and is never written to.
    Drifted {
        id: String,
        fields: Vec<&'static str>,
        changes: Vec<FieldChange>,
    },
    /// An accepted asynchronous write is awaited: nothing is sent now.
    Pending { message: String },
    /// Cannot proceed: the `Ready` reason and message the resource would show.
    Blocked {
        reason: &'static str,
        message: String,
    },
}

/// What deleting one resource would do (`--prune`).
#[derive(Debug)]
pub enum PlannedDeletion {
    /// The upstream object `id` is deleted with these requests.
    Delete { id: String, requests: Vec<Call> },
    /// Nothing is sent upstream: `orphaned` when the deletion policy keeps the upstream
    /// object, else there is none (never created, or already gone).
    Release { orphaned: bool },
    /// An accepted asynchronous delete is awaited: nothing is sent now.
    Pending { message: String },
    /// The finalizer would stay: the `Ready` reason and message the resource would show.
    Blocked {
        reason: &'static str,
        message: String,
    },
}

/// Reads for a plan: from the one List of the resource's scope taken for the whole plan
/// (as a resync wave reads), else one GET.
struct PlanReader<'a, P, O> {
    provider: &'a P,
    listed: Option<&'a HashMap<String, O>>,
}

impl<K: ManagedObject, P: Provider<K>> Reader<K, P> for PlanReader<'_, P, P::Observed> {
    async fn read(
        &self,
        cx: &Cx<'_, K, P::Inputs>,
        id: &str,
    ) -> Result<Read<P::Observed>, EngineError> {
        let provider = self.provider;
        let observed = match self.listed.map(|listed| listed.get(id)) {
            Some(Some(item)) => Some(provider.complete(cx, item.clone()).await?),
            Some(None) if absent_when_unlisted(provider, cx.obj) => None,
            Some(None) | None => provider.observe(cx, id).await?,
        };
        Ok(Read::Now(observed))
    }
}

/// Plans `obj` through `upstream` (read-only). `obj` is the manifest's resource, with
/// the status and annotations of the cluster's copy when it has one. `inputs` are what
/// the provider's `resolve` would give (a referenced Connector's ids, a config Secret).
/// `listed`: the objects of the resource's list scope from one List taken for the whole
/// plan ([`Provider::list`]); `None` reads the object alone. `owner`: which other
/// resource of the cluster owns an upstream id (see [`super::ownership`]).
pub async fn plan<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    obj: &K,
    upstream: &UpstreamClient,
    inputs: &P::Inputs,
    listed: Option<&HashMap<String, P::Observed>>,
    owner: Option<super::ownership::OwnerOf<'_>>,
) -> Planned {
    let cx = Cx::new(obj, upstream, inputs);
    let mut given = Given::object_only(Timestamp::now(), &TIMING);
    given.owner = owner;
    let reader = PlanReader { provider, listed };
    let planned = match decision::decide(provider, &cx, &reader, &given).await {
        Ok(step) => planned(provider, &cx, step, &given).await,
        Err(error) => Err(error),
    };
    planned.unwrap_or_else(|error| Planned::Blocked {
        reason: error.ready_reason(),
        message: error.to_string(),
    })
}

/// How the decision `step` is shown.
async fn planned<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    cx: &Cx<'_, K, P::Inputs>,
    step: Step<P::Observed>,
    given: &Given<'_>,
) -> Result<Planned, EngineError> {
    let existing = match step {
        Step::Wait(_) => {
            return Ok(Planned::Pending {
                message: "the operator waits before it acts on this resource".into(),
            });
        }
        Step::AwaitCreate { pending, .. } => {
            return Ok(Planned::Pending {
                message: format!(
                    "a create accepted upstream at {} is not visible yet; the operator waits for it",
                    pending.requested_at
                ),
            });
        }
        Step::NotFound(message) => {
            return Ok(Planned::Blocked {
                reason: reason::NOT_FOUND,
                message,
            });
        }
        Step::AlreadyManaged { id, owner } => {
            return Ok(Planned::Blocked {
                reason: reason::ALREADY_MANAGED,
                message: super::ownership::already_managed(&K::kind(&()), &id, &owner),
            });
        }
        Step::Create { mut calls } => {
            calls.extend(after_create(provider, cx, given).await?);
            return Ok(Planned::Create { requests: calls });
        }
        Step::Existing(existing) => existing,
    };
    let obj = cx.obj;
    let id = existing.id;
    let adopted = matches!(existing.found, Found::Adopted { .. });
    let unresolved = existing.diff.unresolved_summary();
    let fields = existing.diff.fields;
    Ok(match existing.change {
        Change::None => match unresolved {
            Some((reason, message)) => Planned::Blocked { reason, message },
            None => Planned::NoOp { id, adopted },
        },
        Change::Drifted => Planned::Drifted {
            id,
            changes: changes(provider, obj, &existing.observed, &fields),
            fields,
        },
        Change::Awaited(pending) => Planned::Pending {
            message: format!(
                "an update accepted upstream at {} is not visible yet; the operator waits for it",
                pending.requested_at
            ),
        },
        Change::Update { calls } => Planned::Update {
            requests: calls,
            changes: changes(provider, obj, &existing.observed, &fields),
            id,
            fields,
            adopted,
            unresolved,
        },
    })
}

/// The requests the reconciler sends right after a create: the comparison of what the
/// create is expected to leave ([`Provider::created_state`]) with the spec.
async fn after_create<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    cx: &Cx<'_, K, P::Inputs>,
    given: &Given<'_>,
) -> Result<Vec<Call>, EngineError> {
    let Some(created) = provider.created_state(cx).await? else {
        return Ok(vec![]);
    };
    let existing = decision::compare(provider, cx, created, Found::Created, given).await?;
    Ok(match existing.change {
        Change::Update { calls } => calls,
        Change::None | Change::Drifted | Change::Awaited(_) => vec![],
    })
}

/// Where deleting `obj` starts: without the upstream (no Connection needed), or with it.
pub fn deletion_reach<K: ManagedObject, P: Provider<K>>(provider: &P, obj: &K) -> Reach {
    deletion::reach(
        provider,
        obj,
        &Given::object_only(Timestamp::now(), &TIMING),
    )
}

/// Plans the deletion of `obj`, which [`deletion_reach`] sent upstream with `known_id`,
/// through `upstream` (read-only).
pub async fn plan_deletion<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    obj: &K,
    upstream: &UpstreamClient,
    inputs: &P::Inputs,
    known_id: Option<String>,
) -> PlannedDeletion {
    let cx = Cx::new(obj, upstream, inputs);
    let given = Given::object_only(Timestamp::now(), &TIMING);
    let reader = PlanReader {
        provider,
        listed: None,
    };
    match deletion::decide(provider, &cx, &reader, &given, known_id).await {
        Ok(Removal::Delete { id, calls, .. }) => PlannedDeletion::Delete {
            id,
            requests: calls,
        },
        Ok(Removal::Release { .. }) => PlannedDeletion::Release { orphaned: false },
        Ok(Removal::Wait(_)) => PlannedDeletion::Pending {
            message: "the operator waits before it deletes this resource's upstream object".into(),
        },
        Ok(Removal::AwaitDelete(pending)) => PlannedDeletion::Pending {
            message: format!(
                "a delete accepted upstream at {} is not done yet; the operator waits for it",
                pending.requested_at
            ),
        },
        Err(error) => {
            let error = deletion::explain(error);
            PlannedDeletion::Blocked {
                reason: error.ready_reason(),
                message: error.to_string(),
            }
        }
    }
}
