//! The engine's preview of one resource (`accessplane plan`): the reconciler's decision
//! — which upstream object the resource names, whether it exists, how it differs — made
//! with the provider's own reads, diff and request planning, and nothing sent. Writes
//! cannot happen: the client given is read-only ([`UpstreamClient::read_only`]) and
//! nothing here calls a provider's `create`, `update` or `delete`.
//!
//! The decision is the reconciler's: the id the resource records (or adopts with
//! `externalId`, or follows from its spec), the upstream object under that id, then the
//! shared [`super::locate`] step (found, recovered after an interrupted create, not
//! found, or to be created), the provider's refusal, diff and unresolved parts, and its
//! write gate. What the reconciler adds around it — purposes and snapshots of the
//! observation, pending-write timing, crash-safe marks, status — has no place in a plan.

use std::collections::HashMap;

use super::conditions::reason;
use super::{Cx, EngineError, Located, ManagedObject, Provider, recorded_id};
use crate::api::envelope::ManagementPolicy;
use crate::upstream::{Call, UpstreamClient};

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

/// Plans `obj` through `upstream` (read-only). `obj` is the manifest's resource, with
/// the status and annotations of the cluster's copy when it has one. `inputs` are what
/// the provider's `resolve` would give (a referenced Connector's ids, a config Secret).
/// `listed`: the objects of the resource's list scope from one List taken for the whole
/// plan ([`Provider::list`]), as the reconciler's coalesced observation answers a resync
/// wave; `None` reads the object alone.
pub async fn plan<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    obj: &K,
    upstream: &UpstreamClient,
    inputs: &P::Inputs,
    listed: Option<&HashMap<String, P::Observed>>,
) -> Planned {
    let cx = Cx {
        obj,
        upstream,
        inputs,
    };
    match decide(provider, &cx, listed).await {
        Ok(planned) => planned,
        Err(error) => Planned::Blocked {
            reason: error.ready_reason(),
            message: error.to_string(),
        },
    }
}

async fn decide<K: ManagedObject, P: Provider<K>>(
    provider: &P,
    cx: &Cx<'_, K, P::Inputs>,
    listed: Option<&HashMap<String, P::Observed>>,
) -> Result<Planned, EngineError> {
    let obj = cx.obj;
    let managed = obj.managed();
    let observe_only = managed.management() == ManagementPolicy::Observe;
    let recorded = recorded_id(obj);
    let deterministic = provider.deterministic_id(obj);
    // Adopted: named by externalId, or existing under the id the spec names before this
    // resource ever created it (the reconciler then marks it adopted).
    let ours = obj.managed_status().and_then(|s| s.id.clone()).is_some()
        || super::create_mark(obj).is_some();
    let is_deterministic = deterministic.is_some();
    let id = recorded.clone().or(deterministic);
    let observed = match (&id, listed) {
        (Some(id), Some(listed)) => match listed.get(id) {
            Some(item) => Some(provider.complete(cx, item.clone()).await?),
            // As the reconciler: a deterministic id absent from a fresh List is absent;
            // a server-assigned one is confirmed (Lists may lag behind creates).
            None if is_deterministic => None,
            None => provider.observe(cx, id).await?,
        },
        (Some(id), None) => provider.observe(cx, id).await?,
        (None, _) => None,
    };
    // An accepted asynchronous create not visible yet: the operator waits for it (and
    // re-sends only if it never shows); nothing new would be sent now.
    if observed.is_none()
        && let Some(pending) = obj
            .managed_status()
            .and_then(|s| s.pending.as_ref())
            .filter(|p| p.operation == "Create")
    {
        return Ok(Planned::Pending {
            message: format!(
                "a create accepted upstream at {} is not visible yet; the operator waits for it",
                pending.requested_at
            ),
        });
    }
    let in_doubt = super::create_in_doubt(obj);
    let observed = match super::locate(provider, cx, id.as_deref(), observed, in_doubt).await? {
        Located::Found { observed, .. } => observed,
        Located::NotFound(message) => {
            return Ok(Planned::Blocked {
                reason: reason::NOT_FOUND,
                message,
            });
        }
        Located::Create => {
            // Writes wait for the provider's gate (a busy gateway cluster), as they would.
            provider.write_gate(cx).await?;
            // As the reconciler, which compares what the create answered with the spec
            // and updates what a create cannot set.
            let mut requests = provider.create_calls(cx);
            if let Some(created) = provider.created_state(cx).await? {
                let diff = provider.diff(cx, &created);
                if !diff.is_empty() {
                    requests.extend(provider.update_calls(cx, &created, &diff));
                }
            }
            return Ok(Planned::Create { requests });
        }
    };
    let id = provider.id_of(&observed);
    let adopted = !ours;
    if let Some(why) = provider.refuse_update(&observed) {
        return Err(EngineError::Refused(why));
    }
    let diff = provider.diff(cx, &observed);
    // As in the reconciler: what can be done is sent, what cannot is reported.
    let unresolved = diff.unresolved_summary();
    if diff.is_empty() {
        return Ok(match unresolved {
            Some((reason, message)) => Planned::Blocked { reason, message },
            None => Planned::NoOp { id, adopted },
        });
    }
    if observe_only {
        return Ok(Planned::Drifted {
            id,
            changes: changes(provider, obj, &observed, &diff.fields),
            fields: diff.fields,
        });
    }
    provider.write_gate(cx).await?;
    Ok(Planned::Update {
        requests: provider.update_calls(cx, &observed, &diff),
        changes: changes(provider, obj, &observed, &diff.fields),
        id,
        fields: diff.fields,
        adopted,
        unresolved,
    })
}
