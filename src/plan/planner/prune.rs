//! `--prune`: the resources under the selector that the input no longer holds are
//! planned as the finalizer deletes them ([`crate::engine::deletion`]): kept upstream
//! (`deletionPolicy: Orphan`, adopted or observed), nothing to delete, the requests of
//! the delete, or blocked as the finalizer would be.

use std::collections::HashSet;

use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::{PlanError, Planner};
use crate::api::GROUP_VERSION;
use crate::engine::deletion::{ORPHAN_HINT, Reach, explain};
use crate::engine::plan::{PlannedDeletion, deletion_reach, plan_deletion};
use crate::engine::{ManagedObject, Provider, recorded_id};
use crate::plan::report::{Action, Entry, PlannedRequest};

impl Planner<'_> {
    /// `--prune`: resources of kind `K` under the selector that the input does not hold.
    pub(super) async fn prune<K: ManagedObject, P: Provider<K>>(
        &mut self,
        provider: &P,
    ) -> Result<(), PlanError> {
        let kind = K::kind(&()).to_string();
        let in_input: HashSet<(String, String)> = self
            .input
            .iter()
            .filter(|l| l.api_version() == GROUP_VERSION && l.kind() == kind)
            .map(|l| self.identity(l))
            .collect();
        for obj in self.list_selected::<K>().await? {
            let namespace = obj.namespace().unwrap_or_default();
            if in_input.contains(&(namespace.clone(), obj.name_any())) {
                continue;
            }
            let mut entry = Entry::new(
                String::new(),
                kind.clone(),
                namespace,
                obj.name_any(),
                Action::Orphan,
            );
            entry.id = recorded_id(&obj);
            let deletion = self.plan_deletion(provider, &obj).await;
            describe(&mut entry, deletion);
            self.entries.push((usize::MAX, entry));
        }
        Ok(())
    }

    /// The resources of kind `K` under the selector, in the namespaces `--prune` looks at.
    async fn list_selected<K: ManagedObject>(&self) -> Result<Vec<K>, PlanError> {
        let selector = self.options.prune_selector.clone().unwrap_or_default();
        let mut listed = vec![];
        for namespace in self.prune_namespaces() {
            let found = Api::<K>::namespaced(self.kube.clone(), &namespace)
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|source| PlanError::Prune {
                    kind: K::kind(&()).to_string(),
                    namespace: namespace.clone(),
                    selector: selector.clone(),
                    source,
                })?;
            listed.extend(found.items);
        }
        Ok(listed)
    }

    /// What deleting `obj` does: without the upstream when that is enough, else through
    /// its Connection (read-only), as the finalizer would.
    async fn plan_deletion<K: ManagedObject, P: Provider<K>>(
        &mut self,
        provider: &P,
        obj: &K,
    ) -> PlannedDeletion {
        let known_id = match deletion_reach(provider, obj) {
            Reach::Release { orphaned } => return PlannedDeletion::Release { orphaned },
            Reach::Upstream { known_id } => known_id,
        };
        let namespace = obj.namespace().unwrap_or_default();
        let client = match self
            .connections
            .resolve(&namespace, &obj.managed().connection_ref, P::UPSTREAM)
            .await
        {
            Ok(client) => client,
            Err(blocked) => {
                return PlannedDeletion::Blocked {
                    reason: blocked.reason,
                    message: format!(
                        "cannot delete the upstream object: {}; {ORPHAN_HINT}",
                        blocked.message
                    ),
                };
            }
        };
        match provider.resolve(&self.kube, obj).await {
            Ok(inputs) => plan_deletion(provider, obj, &client, &inputs, known_id).await,
            Err(error) => {
                let error = explain(error);
                PlannedDeletion::Blocked {
                    reason: error.ready_reason(),
                    message: error.to_string(),
                }
            }
        }
    }
}

/// The report's words for a planned deletion.
fn describe(entry: &mut Entry, deletion: PlannedDeletion) {
    let (action, message) = match deletion {
        PlannedDeletion::Delete { id, requests } => {
            entry.requests = requests.iter().map(PlannedRequest::from).collect();
            let message = format!(
                "not in the input: deleting the resource deletes upstream object {id} (deletionPolicy Delete)"
            );
            entry.id = Some(id);
            (Action::Delete, message)
        }
        PlannedDeletion::Release { orphaned: true } => (
            Action::Orphan,
            "not in the input: the upstream object is kept (deletionPolicy Orphan, or adopted or observed)".into(),
        ),
        PlannedDeletion::Release { orphaned: false } => (
            Action::Orphan,
            match &entry.id {
                Some(id) => format!(
                    "not in the input: upstream object {id} is gone already, nothing is deleted upstream"
                ),
                None => "not in the input: no upstream object is recorded, nothing is deleted upstream".into(),
            },
        ),
        PlannedDeletion::Pending { message } => {
            entry.reason = Some(crate::base::conditions::reason::DELETING.into());
            (Action::NoOp, format!("not in the input: {message}"))
        }
        PlannedDeletion::Blocked { reason, message } => {
            entry.reason = Some(reason.into());
            (Action::Blocked, format!("not in the input, and the deletion would stay blocked: {message}"))
        }
    };
    entry.action = action;
    entry.message = Some(message);
}
