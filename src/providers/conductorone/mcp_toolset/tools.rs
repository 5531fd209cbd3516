//! A toolset's tools: the connector's catalogue, the bindings, and which tools the
//! spec's selectors name that can be bound (and why the others cannot).

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::api::mcp_toolset::ToolSelector;
use crate::base::conditions::reason;
use crate::engine::Unresolved;

/// The only state in which a tool can be bound.
const TOOL_APPROVED: &str = "MCP_TOOL_STATE_APPROVED";

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Tool {
    pub(super) id: String,
    #[serde(default)]
    pub(super) tool_name: Option<String>,
    #[serde(default)]
    pub(super) state: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Binding {
    pub(super) mcp_tool_id: String,
    #[serde(default)]
    pub(super) deleted_at: Option<String>,
}

/// The toolset's bound tools and the connector's tool catalogue.
#[derive(Clone, Debug)]
pub(super) struct Tools {
    pub(super) bound: BTreeSet<String>,
    pub(super) catalogue: Vec<Tool>,
}

impl Tools {
    /// The bound tools as `spec.tools` selectors: by `toolName` where exactly one tool of
    /// the catalogue has that name, else by `id` (what `accessplane import` writes).
    pub(super) fn bound_as_selectors(&self) -> serde_json::Value {
        let selectors = self.bound.iter().map(|id| match self.unique_name(id) {
            Some(name) => serde_json::json!({"toolName": name}),
            None => serde_json::json!({"id": id}),
        });
        serde_json::Value::Array(selectors.collect())
    }

    /// The tool's native name, when no other tool of the catalogue has it (a selector by
    /// that name then picks exactly this tool).
    fn unique_name(&self, id: &str) -> Option<&str> {
        let name = self
            .catalogue
            .iter()
            .find(|t| t.id == id)?
            .tool_name
            .as_deref()?;
        let named = self
            .catalogue
            .iter()
            .filter(|t| t.tool_name.as_deref() == Some(name))
            .count();
        (named == 1).then_some(name)
    }
}

/// Which tools the spec asks for that can be bound, and why the others cannot.
pub(super) struct ToolSelection {
    pub(super) wanted: BTreeSet<String>,
    pub(super) unresolved: Vec<Unresolved>,
}

/// Resolves the spec's tools against the catalogue. A tool that is already bound stays
/// wanted whatever its state now (ConductorOne keeps such bindings too).
pub(super) fn select_tools(
    selectors: &[ToolSelector],
    tools: &Tools,
    connector_id: &str,
) -> ToolSelection {
    let mut selection = ToolSelection {
        wanted: BTreeSet::new(),
        unresolved: vec![],
    };
    for selector in selectors {
        let (label, found) = match (&selector.id, &selector.tool_name) {
            (Some(id), _) => (id, tools.catalogue.iter().find(|t| &t.id == id)),
            (None, Some(name)) => (
                name,
                tools
                    .catalogue
                    .iter()
                    .find(|t| t.tool_name.as_ref() == Some(name)),
            ),
            // The CRD requires exactly one of the two.
            (None, None) => continue,
        };
        let id = found.map(|t| &t.id).or(selector.id.as_ref());
        match (found, id) {
            (_, Some(id)) if tools.bound.contains(id) => {
                selection.wanted.insert(id.clone());
            }
            (Some(tool), _) if tool.state.as_deref() == Some(TOOL_APPROVED) => {
                selection.wanted.insert(tool.id.clone());
            }
            (Some(tool), _) => selection.unresolved.push(Unresolved::new(
                reason::TOOL_NOT_APPROVED,
                format!(
                    "tool \"{label}\" is not approved ({})",
                    tool.state.as_deref().unwrap_or("no state")
                ),
            )),
            (None, _) => selection.unresolved.push(Unresolved::new(
                reason::TOOL_NOT_FOUND,
                format!("tool \"{label}\" does not exist on connector {connector_id}"),
            )),
        }
    }
    selection
}

#[cfg(test)]
mod tests;
