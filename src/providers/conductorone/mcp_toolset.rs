//! `McpToolset` ↔ ConductorOne `/api/v1/apps/{app_id}/connectors/{connector_id}/mcp_toolsets`
//! and the toolset's tool bindings.
//!
//! `displayName` and `description` are updated with a mask of the differing ones. Tool
//! bindings have no "set the list" call: they are listed and compared with the spec, then
//! the missing tools are added and the extra ones removed (one call each). Deleting a
//! toolset cascades upstream to its bindings and its backing app entitlement, which is
//! therefore never deleted on its own.
//!
//! Built-in toolsets: ConductorOne keeps "All approved" and "Read-only" on every
//! connector and no field flags them. A toolset with one of those names that this
//! resource did not create (it adopted it by `externalId`) is taken to be built in and
//! is never updated or deleted; crash recovery never picks a toolset with those names.

use std::collections::BTreeSet;

use kube::api::{Api, ApiResource};
use kube::{Resource, ResourceExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::api::{self, is_deleted};
use crate::api::connection::UpstreamKind;
use crate::api::mcp_toolset::ToolSelector;
use crate::api::{Connector, McpToolset};
use crate::base::conditions::reason;
use crate::engine::{
    Created, Cx, Diff, EngineError, Provider, Reference, Unresolved, Written, is_adopted,
};
use crate::providers::{segment, send_delete, single};
use crate::upstream::{Call, UpstreamError};

/// Names of the toolsets ConductorOne maintains on every connector.
const BUILTIN_TOOLSETS: [&str; 2] = ["All approved", "Read-only"];
/// The only state in which a tool can be bound.
const TOOL_APPROVED: &str = "MCP_TOOL_STATE_APPROVED";
/// The diff field of the tool bindings.
const TOOLS: &str = "tools";

/// The connector a toolset lives under.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectorIds {
    app_id: String,
    connector_id: String,
}

impl ConnectorIds {
    /// `api/v1/apps/{app_id}/connectors/{connector_id}/{tail}`.
    fn path(&self, tail: &str) -> String {
        format!(
            "api/v1/apps/{}/connectors/{}/{tail}",
            segment(&self.app_id),
            segment(&self.connector_id)
        )
    }

    fn toolset(&self, id: &str) -> String {
        self.path(&format!("mcp_toolsets/{}", segment(id)))
    }

    fn bindings(&self, id: &str) -> String {
        format!("{}/tool_bindings", self.toolset(id))
    }
}

/// A toolset (`MCPAccessProfile`) as ConductorOne returns it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(default)]
    id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    app_entitlement_id: Option<String>,
    #[serde(default)]
    tool_count: Value,
    #[serde(default)]
    deleted_at: Option<String>,
}

#[derive(Deserialize)]
struct One {
    profile: Profile,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tool {
    id: String,
    #[serde(default)]
    tool_name: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Binding {
    mcp_tool_id: String,
    #[serde(default)]
    deleted_at: Option<String>,
}

/// The observed toolset.
#[derive(Clone, Debug)]
pub struct Toolset {
    profile: Profile,
    /// Built into ConductorOne (see the module docs).
    builtin: bool,
    /// Read only when the spec manages `tools` (otherwise a resync is one GET).
    tools: Option<Tools>,
}

/// The toolset's bound tools and the connector's tool catalogue.
#[derive(Clone, Debug)]
struct Tools {
    bound: BTreeSet<String>,
    catalogue: Vec<Tool>,
}

/// Which tools the spec asks for that can be bound, and why the others cannot.
struct ToolSelection {
    wanted: BTreeSet<String>,
    unresolved: Vec<Unresolved>,
}

/// Resolves the spec's tools against the catalogue. A tool that is already bound stays
/// wanted whatever its state now (ConductorOne keeps such bindings too).
fn select_tools(selectors: &[ToolSelector], tools: &Tools, connector_id: &str) -> ToolSelection {
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

/// The app and connector ids recorded in the object's status.
fn recorded(obj: &McpToolset) -> Option<ConnectorIds> {
    let status = obj.status.as_ref()?;
    Some(ConnectorIds {
        app_id: status.app_id.clone()?,
        connector_id: status.connector_id.clone()?,
    })
}

/// The `McpToolset` provider.
#[derive(Default)]
pub struct McpToolsetProvider;

impl McpToolsetProvider {
    /// The observed toolset: the profile plus, while the spec manages `tools` and the
    /// resource is not being deleted, its bindings and the catalogue.
    /// The connector's tool catalogue.
    async fn catalogue(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
    ) -> Result<Vec<Tool>, UpstreamError> {
        api::list_all(
            cx.upstream,
            "list_mcp_tools",
            &cx.inputs.path("mcp_tools"),
            "tools",
        )
        .await
    }

    async fn load(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
        profile: Profile,
    ) -> Result<Toolset, UpstreamError> {
        let builtin = profile
            .display_name
            .as_deref()
            .is_some_and(|n| BUILTIN_TOOLSETS.contains(&n))
            && is_adopted(cx.obj);
        let tools = match &cx.obj.spec.tools {
            Some(selectors) if cx.obj.meta().deletion_timestamp.is_none() => {
                let bindings: Vec<Binding> = api::list_all(
                    cx.upstream,
                    "list_mcp_tool_bindings",
                    &cx.inputs.bindings(&profile.id),
                    "bindings",
                )
                .await?;
                let catalogue = if selectors.is_empty() {
                    vec![]
                } else {
                    self.catalogue(cx).await?
                };
                Some(Tools {
                    bound: bindings
                        .into_iter()
                        .filter(|b| !is_deleted(&b.deleted_at))
                        .map(|b| b.mcp_tool_id)
                        .collect(),
                    catalogue,
                })
            }
            _ => None,
        };
        Ok(Toolset {
            profile,
            builtin,
            tools,
        })
    }

    /// Sends the differing profile fields (`displayName`, `description`).
    fn profile_call(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
        id: &str,
        fields: &[&str],
    ) -> Call {
        let spec = &cx.obj.spec;
        let mut profile = Map::from_iter([
            ("id".to_string(), json!(id)),
            ("appId".to_string(), json!(cx.inputs.app_id)),
            ("connectorId".to_string(), json!(cx.inputs.connector_id)),
        ]);
        let managed = [
            ("displayName", &spec.display_name),
            ("description", &spec.description),
        ];
        for (field, value) in managed.into_iter().filter(|(f, _)| fields.contains(f)) {
            profile.insert(field.to_string(), json!(value));
        }
        // An update with a mask is a full overwrite of those fields: repeating it is safe.
        Call::post("update_mcp_toolset", cx.inputs.toolset(id))
            .json(json!({"profile": profile, "updateMask": api::update_mask(fields)}))
            .idempotent()
    }

    /// Adds the `wanted` tools that are not bound and removes the bound ones not wanted.
    /// Not marked idempotent: whether a repeated add/remove fails upstream is unknown, so
    /// after a failure the next pass lists the bindings again instead.
    fn bind_calls(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
        id: &str,
        bound: &BTreeSet<String>,
        wanted: &BTreeSet<String>,
    ) -> Vec<Call> {
        let mut calls = vec![];
        let add: Vec<&String> = wanted.difference(bound).collect();
        if !add.is_empty() {
            calls.push(
                Call::post("add_mcp_tool_bindings", cx.inputs.bindings(id))
                    .json(json!({"mcpToolIds": add})),
            );
        }
        let remove: Vec<&String> = bound.difference(wanted).collect();
        if !remove.is_empty() {
            calls.push(
                Call::post(
                    "remove_mcp_tool_bindings",
                    format!("{}/delete", cx.inputs.bindings(id)),
                )
                .json(json!({"mcpToolIds": remove})),
            );
        }
        calls
    }
}

impl Provider<McpToolset> for McpToolsetProvider {
    type Observed = Toolset;
    type Inputs = ConnectorIds;
    const UPSTREAM: UpstreamKind = UpstreamKind::ConductorOne;

    fn id_of(&self, observed: &Toolset) -> String {
        observed.profile.id.clone()
    }

    fn references(&self) -> Vec<Reference<McpToolset>> {
        vec![Reference {
            kind: ApiResource::erase::<Connector>(&()),
            name: |obj| obj.spec.connector_ref.as_ref().map(|r| r.name.as_str()),
        }]
    }

    /// The literal ids, or the referenced Connector's app and upstream id. While being
    /// deleted, the ids recorded in status win: the toolset lives where it was created,
    /// and the Connector may already be gone (both deleted together).
    async fn resolve(
        &self,
        kube: &kube::Client,
        obj: &McpToolset,
    ) -> Result<ConnectorIds, EngineError> {
        let spec = &obj.spec;
        if let (Some(app_id), Some(connector_id)) = (&spec.app_id, &spec.connector_id) {
            return Ok(ConnectorIds {
                app_id: app_id.clone(),
                connector_id: connector_id.clone(),
            });
        }
        if obj.meta().deletion_timestamp.is_some()
            && let Some(ids) = recorded(obj)
        {
            return Ok(ids);
        }
        let Some(reference) = &spec.connector_ref else {
            return Err(EngineError::Refused(
                "set spec.connectorRef, or spec.appId and spec.connectorId".into(),
            ));
        };
        let ns = obj.namespace().unwrap_or_default();
        let connector = Api::<Connector>::namespaced(kube.clone(), &ns)
            .get_opt(&reference.name)
            .await
            .map_err(EngineError::kube("reading the referenced Connector"))?;
        let id = connector
            .as_ref()
            .and_then(|c| c.status.as_ref()?.managed.id.clone())
            .filter(|id| !id.is_empty());
        match (connector, id) {
            (Some(connector), Some(connector_id)) => Ok(ConnectorIds {
                app_id: connector.spec.app_id.to_string(),
                connector_id,
            }),
            _ => Err(EngineError::Dependency(format!(
                "Connector {ns}/{} has no upstream id yet",
                reference.name
            ))),
        }
    }

    async fn observe(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
        id: &str,
    ) -> Result<Option<Toolset>, UpstreamError> {
        let call = Call::get("get_mcp_toolset", cx.inputs.toolset(id));
        let found: Option<One> = api::get_optional(cx.upstream, call).await?;
        match found {
            Some(one) if !is_deleted(&one.profile.deleted_at) => {
                Ok(Some(self.load(cx, one.profile).await?))
            }
            _ => Ok(None),
        }
    }

    /// Natural key: the display name under the connector, never a built-in's name.
    async fn find(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
    ) -> Result<Vec<Toolset>, UpstreamError> {
        let Some(name) = cx.obj.spec.display_name.as_deref() else {
            return Ok(vec![]);
        };
        if BUILTIN_TOOLSETS.contains(&name) {
            return Ok(vec![]);
        }
        let profiles: Vec<Profile> = api::list_all(
            cx.upstream,
            "list_mcp_toolsets",
            &cx.inputs.path("mcp_toolsets"),
            "profiles",
        )
        .await?;
        let mut found = vec![];
        for profile in profiles {
            if !is_deleted(&profile.deleted_at) && profile.display_name.as_deref() == Some(name) {
                found.push(self.load(cx, profile).await?);
            }
        }
        Ok(found)
    }

    /// Toolsets are listed per connector. The key only groups objects, so it is taken
    /// from the spec as written (a reference or the ids); `list` uses the resolved ids.
    /// A reference names a Connector of the object's namespace: the key says which
    /// namespace (a ClusterConnection's scopes are shared by many).
    fn list_scope(&self, obj: &McpToolset) -> Option<String> {
        let spec = &obj.spec;
        match (&spec.app_id, &spec.connector_id, &spec.connector_ref) {
            (Some(app), Some(connector), _) => Some(format!("{app}/{connector}")),
            (_, _, Some(reference)) => Some(format!(
                "ref:{}/{}",
                obj.namespace().unwrap_or_default(),
                reference.name
            )),
            _ => None,
        }
    }

    const LIST_PAGE_SIZE: usize = api::PAGE_SIZE;

    /// The toolsets as listed; their tool bindings are read by [`Self::complete`] for
    /// the objects that are actually observed.
    async fn list(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
        _scope: &str,
    ) -> Result<Vec<Toolset>, UpstreamError> {
        let profiles: Vec<Profile> = api::list_all(
            cx.upstream,
            "list_mcp_toolsets",
            &cx.inputs.path("mcp_toolsets"),
            "profiles",
        )
        .await?;
        Ok(profiles
            .into_iter()
            .filter(|p| !is_deleted(&p.deleted_at))
            .map(|profile| Toolset {
                profile,
                builtin: false,
                tools: None,
            })
            .collect())
    }

    async fn complete(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
        listed: Toolset,
    ) -> Result<Toolset, UpstreamError> {
        self.load(cx, listed.profile).await
    }

    /// Tools as the ids bound now (the spec may select them by name).
    fn observed_value(&self, observed: &Toolset, field: &str) -> Option<Value> {
        let profile = &observed.profile;
        match field {
            "displayName" => Some(json!(profile.display_name)),
            "description" => Some(json!(profile.description)),
            TOOLS => observed.tools.as_ref().map(|t| json!(t.bound)),
            _ => None,
        }
    }

    fn diff(&self, cx: &Cx<'_, McpToolset, ConnectorIds>, observed: &Toolset) -> Diff {
        let spec = &cx.obj.spec;
        let profile = &observed.profile;
        let differs = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_some_and(|w| w != have.as_deref().unwrap_or_default())
        };
        let mut diff = Diff::default();
        diff.check(
            "displayName",
            differs(&spec.display_name, &profile.display_name),
        );
        diff.check(
            "description",
            differs(&spec.description, &profile.description),
        );
        if let (Some(selectors), Some(tools)) = (&spec.tools, &observed.tools) {
            let selection = select_tools(selectors, tools, &cx.inputs.connector_id);
            diff.check(TOOLS, selection.wanted != tools.bound);
            diff.unresolved = selection.unresolved;
        }
        diff
    }

    /// The new toolset without bindings: the next pass (the id recorded) reads the tool
    /// catalogue and binds the spec's tools, which the plan of a create shows too.
    async fn created_state(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
    ) -> Result<Option<Toolset>, UpstreamError> {
        let spec = &cx.obj.spec;
        let profile = Profile {
            id: crate::engine::plan::CREATED_ID.into(),
            display_name: spec.display_name.clone(),
            description: spec.description.clone(),
            ..Profile::default()
        };
        let tools = match &spec.tools {
            Some(selectors) if !selectors.is_empty() => Some(Tools {
                bound: BTreeSet::new(),
                catalogue: self.catalogue(cx).await?,
            }),
            _ => None,
        };
        Ok(Some(Toolset {
            profile,
            builtin: false,
            tools,
        }))
    }

    fn create_calls(&self, cx: &Cx<'_, McpToolset, ConnectorIds>) -> Vec<Call> {
        let spec = &cx.obj.spec;
        let mut body = json!({"displayName": spec.display_name});
        if let Some(description) = &spec.description {
            body["description"] = json!(description);
        }
        vec![Call::post("create_mcp_toolset", cx.inputs.path("mcp_toolsets")).json(body)]
    }

    /// One profile update with the differing fields, then one add and one remove call.
    fn update_calls(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
        observed: &Toolset,
        diff: &Diff,
    ) -> Vec<Call> {
        let id = observed.profile.id.as_str();
        let mut calls = vec![];
        let profile_fields: Vec<&str> = diff
            .fields
            .iter()
            .copied()
            .filter(|f| *f != TOOLS)
            .collect();
        if !profile_fields.is_empty() {
            calls.push(self.profile_call(cx, id, &profile_fields));
        }
        if let (Some(selectors), Some(tools)) = (&cx.obj.spec.tools, &observed.tools)
            && diff.fields.contains(&TOOLS)
        {
            let wanted = select_tools(selectors, tools, &cx.inputs.connector_id).wanted;
            calls.extend(self.bind_calls(cx, id, &tools.bound, &wanted));
        }
        calls
    }

    async fn create(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
        calls: Vec<Call>,
    ) -> Result<Created<Toolset>, UpstreamError> {
        let one: One = cx.upstream.json(single(calls)).await?;
        // Bindings are listed (by `complete`, once the id is recorded) rather than assumed
        // empty: tools are only ever bound after a diff.
        Ok(Created::Done(Toolset {
            profile: one.profile,
            builtin: false,
            tools: None,
        }))
    }

    /// Sends [`Self::update_calls`]; the profile update answers with the new profile.
    async fn update(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
        observed: &Toolset,
        diff: &Diff,
        calls: Vec<Call>,
    ) -> Result<Written<Toolset>, UpstreamError> {
        let mut updated = observed.clone();
        for call in calls {
            if call.operation == "update_mcp_toolset" {
                let one: One = cx.upstream.json(call).await?;
                updated.profile = one.profile;
            } else {
                cx.upstream.send(call).await?;
            }
        }
        if let (Some(selectors), Some(tools)) = (&cx.obj.spec.tools, &mut updated.tools)
            && diff.fields.contains(&TOOLS)
        {
            tools.bound = select_tools(selectors, tools, &cx.inputs.connector_id).wanted;
        }
        Ok(Written::Done(Some(updated)))
    }

    /// Deletes the toolset; ConductorOne deletes its bindings and app entitlement with it.
    fn delete_calls(&self, cx: &Cx<'_, McpToolset, ConnectorIds>, id: &str) -> Vec<Call> {
        vec![api::delete_call(
            "delete_mcp_toolset",
            cx.inputs.toolset(id),
        )]
    }

    async fn delete(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
        calls: Vec<Call>,
    ) -> Result<Written<()>, UpstreamError> {
        send_delete(cx.upstream, calls).await?;
        Ok(Written::Done(None))
    }

    fn refuse_update(&self, observed: &Toolset) -> Option<String> {
        observed.builtin.then(|| {
            format!(
                "MCP toolset {} ({:?}) is built into ConductorOne and cannot be managed",
                observed.profile.id,
                observed.profile.display_name.as_deref().unwrap_or_default()
            )
        })
    }

    fn refuse_delete(&self, observed: &Toolset) -> Option<String> {
        self.refuse_update(observed)
    }

    fn facts(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
        observed: &Toolset,
    ) -> Map<String, Value> {
        let profile = &observed.profile;
        // Bindings are fresher than the profile's count right after an update.
        let (tool_count, bound) = match &observed.tools {
            Some(tools) => (Some(tools.bound.len() as i64), json!(tools.bound)),
            None => (api::int64(&profile.tool_count), Value::Null),
        };
        Map::from_iter([
            ("appId".to_string(), json!(cx.inputs.app_id)),
            ("connectorId".to_string(), json!(cx.inputs.connector_id)),
            (
                "appEntitlementId".to_string(),
                json!(profile.app_entitlement_id),
            ),
            ("toolCount".to_string(), json!(tool_count)),
            ("boundToolIds".to_string(), bound),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(id: &str, name: &str, state: &str) -> Tool {
        Tool {
            id: id.into(),
            tool_name: Some(name.into()),
            state: Some(state.into()),
        }
    }

    fn by_name(name: &str) -> ToolSelector {
        ToolSelector {
            id: None,
            tool_name: Some(name.into()),
        }
    }

    fn by_id(id: &str) -> ToolSelector {
        ToolSelector {
            id: Some(id.into()),
            tool_name: None,
        }
    }

    #[test]
    fn plan_binds_approved_and_bound_tools_and_names_the_rest() {
        let tools = Tools {
            bound: BTreeSet::from(["t-old".to_string()]),
            catalogue: vec![
                tool("t-read", "read_repo", TOOL_APPROVED),
                tool("t-del", "delete_repo", "MCP_TOOL_STATE_PENDING_REVIEW"),
                tool("t-old", "old_tool", "MCP_TOOL_STATE_PENDING_REVIEW"),
            ],
        };
        let selectors = [
            by_name("read_repo"),
            by_name("delete_repo"),
            by_name("nope"),
            by_id("t-old"),
            by_id("t-read"),
        ];
        let selection = select_tools(&selectors, &tools, "conn-1");
        assert_eq!(
            selection.wanted,
            BTreeSet::from(["t-old".to_string(), "t-read".to_string()]),
            "a bound tool stays bound whatever its state; duplicates collapse"
        );
        assert_eq!(
            selection.unresolved,
            vec![
                Unresolved::new(
                    reason::TOOL_NOT_APPROVED,
                    "tool \"delete_repo\" is not approved (MCP_TOOL_STATE_PENDING_REVIEW)"
                ),
                Unresolved::new(
                    reason::TOOL_NOT_FOUND,
                    "tool \"nope\" does not exist on connector conn-1"
                ),
            ]
        );
    }
}
