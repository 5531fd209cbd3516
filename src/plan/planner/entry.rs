//! The report entry of the engine's decision for one resource.

use super::super::report::{Action, Entry, PlannedRequest};
use crate::engine::plan::Planned;

/// The report entry of the engine's decision.
pub(super) fn planned_entry(mut entry: Entry, planned: Planned) -> Entry {
    let requests =
        |calls: Vec<crate::upstream::Call>| calls.iter().map(PlannedRequest::from).collect();
    match planned {
        Planned::Create { requests: calls } => {
            entry.action = Action::Create;
            entry.requests = requests(calls);
        }
        Planned::Update {
            id,
            fields,
            changes,
            requests: calls,
            adopted,
            unresolved,
        } => {
            entry.changes = changes;
            entry.action = if adopted {
                Action::Adopt
            } else {
                Action::Update
            };
            entry.id = Some(id);
            entry.fields = fields.iter().map(|f| f.to_string()).collect();
            entry.requests = requests(calls);
            if let Some((reason, message)) = unresolved {
                entry.reason = Some(reason.into());
                entry.message = Some(format!("after the update, still: {message}"));
            }
        }
        Planned::NoOp { id, adopted } => {
            entry.action = if adopted { Action::Adopt } else { Action::NoOp };
            entry.id = Some(id);
            if adopted {
                entry.message = Some("an existing upstream object is taken over unchanged".into());
            }
        }
        Planned::Drifted {
            id,
            fields,
            changes,
        } => {
            entry.changes = changes;
            entry.action = Action::NoOp;
            entry.id = Some(id);
            entry.reason = Some(crate::base::conditions::reason::DRIFTED.into());
            entry.message = Some(format!(
                "managementPolicy Observe: upstream differs in {}; nothing is written",
                fields.join(", ")
            ));
            entry.fields = fields.iter().map(|f| f.to_string()).collect();
        }
        Planned::Pending { message } => {
            entry.action = Action::NoOp;
            entry.reason = Some(crate::base::conditions::reason::PENDING.into());
            entry.message = Some(message);
        }
        Planned::Blocked { reason, message } => {
            entry.action = Action::Blocked;
            entry.reason = Some(reason.into());
            entry.message = Some(message);
        }
    }
    entry
}
