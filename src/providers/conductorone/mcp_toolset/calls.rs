//! A toolset's reads (the connector's tool catalogue, the bound tools) and the requests
//! that change its profile and bindings.

use super::*;

impl McpToolsetProvider {
    /// Every toolset profile under the connector.
    pub(super) async fn list_profiles(
        &self,
        cx: &Cx<'_, McpToolset, ConnectorIds>,
    ) -> Result<Vec<Profile>, UpstreamError> {
        api::list_all(
            cx.upstream,
            "list_mcp_toolsets",
            &cx.inputs.path("mcp_toolsets"),
            "profiles",
        )
        .await
    }

    /// The observed toolset: the profile plus, while the spec manages `tools` and the
    /// resource is not being deleted, its bindings and the catalogue.
    /// The connector's tool catalogue.
    pub(super) async fn catalogue(
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

    pub(super) async fn load(
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
    pub(super) fn profile_call(
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
    pub(super) fn bind_calls(
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
