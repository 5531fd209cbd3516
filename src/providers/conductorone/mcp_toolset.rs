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

mod calls;
mod tools;

use super::api::{self, is_deleted};
use crate::api::connection::UpstreamKind;
use crate::api::{Connector, McpToolset};
use crate::engine::{
    Created, Cx, Diff, EngineError, Provider, Reference, ScopeFlag, ScopeLister, Written,
    is_adopted,
};
use crate::providers::{segment, send_delete, single};
use crate::upstream::{Call, UpstreamError};
use tools::{Binding, Tool, Tools, select_tools};

/// Names of the toolsets ConductorOne maintains on every connector.
const BUILTIN_TOOLSETS: [&str; 2] = ["All approved", "Read-only"];
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

/// The observed toolset.
#[derive(Clone, Debug)]
pub struct Toolset {
    profile: Profile,
    /// Built into ConductorOne (see the module docs).
    builtin: bool,
    /// Read only when the spec manages `tools` (otherwise a resync is one GET).
    tools: Option<Tools>,
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
        let profiles = self.list_profiles(cx).await?;
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
        let profiles = self.list_profiles(cx).await?;
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

    /// The app: written in the spec, or the referenced Connector's once resolved.
    fn allowed_scope_of(&self, obj: &McpToolset, inputs: Option<&ConnectorIds>) -> Option<String> {
        obj.spec
            .app_id
            .clone()
            .or_else(|| inputs.map(|ids| ids.app_id.clone()))
    }

    const IMPORT_SCOPE: &'static [ScopeFlag] = &[
        ScopeFlag {
            flag: "app",
            field: "appId",
        },
        ScopeFlag {
            flag: "connector",
            field: "connectorId",
        },
    ];

    const IMPORT_SCOPE_LISTER: Option<ScopeLister> = Some(super::import::connector_scopes);

    /// Adopted (so a built-in toolset is recognised and skipped) and managing a tool
    /// (so reading a toolset reads its bindings and the catalogue that names them).
    fn import_stand_in(&self) -> Map<String, Value> {
        Map::from_iter([
            ("externalId".into(), json!("import")),
            ("tools".into(), json!([{"id": "import"}])),
        ])
    }

    /// The tools by `toolName` where exactly one tool of the catalogue has that name,
    /// else by id.
    async fn imported_fields(
        &self,
        _cx: &Cx<'_, McpToolset, ConnectorIds>,
        observed: &Toolset,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let profile = &observed.profile;
        let mut fields = Map::new();
        if let Some(name) = &profile.display_name {
            fields.insert("displayName".into(), json!(name));
        }
        if let Some(description) = &profile.description {
            fields.insert("description".into(), json!(description));
        }
        if let Some(tools) = &observed.tools {
            fields.insert(TOOLS.into(), tools.bound_as_selectors());
        }
        Ok(fields)
    }

    fn display_name(&self, observed: &Toolset) -> Option<String> {
        observed.profile.display_name.clone()
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
