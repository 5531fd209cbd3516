//! `McpToolset`: a ConductorOne MCP toolset and its tool bindings.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::envelope::{LocalRef, ManagedFields, ManagedStatus};

/// A ConductorOne MCP toolset under one connector, and which tools it binds.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "accessplane.io",
    version = "v1alpha1",
    kind = "McpToolset",
    namespaced,
    status = "McpToolsetStatus",
    shortname = "mcpts",
    category = "accessplane",
    doc = "A ConductorOne MCP toolset and its tool bindings.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"ID","type":"string","jsonPath":".status.id"}"#,
    printcolumn = r#"{"name":"Tools","type":"integer","jsonPath":".status.toolCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new(super::EXTERNAL_ID_IMMUTABLE).message("spec.externalId is immutable once set").field_path(".externalId"),
    validation = Rule::new("has(self.connectorRef) != (has(self.appId) && has(self.connectorId))").message("set either spec.connectorRef or both spec.appId and spec.connectorId").field_path(".connectorRef"),
    validation = Rule::new("has(self.appId) == has(self.connectorId)").message("spec.appId and spec.connectorId must be set together").field_path(".appId"),
    validation = Rule::new("has(self.externalId) || has(self.displayName)").message("spec.displayName is required unless spec.externalId adopts an existing toolset").field_path(".displayName")
)]
#[serde(rename_all = "camelCase")]
pub struct McpToolsetSpec {
    #[serde(flatten)]
    pub managed: ManagedFields,
    /// A `Connector` resource in the same namespace (its app and id are used once it has an id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_ref: Option<LocalRef>,
    /// ConductorOne app id (with `connectorId`, instead of `connectorRef`). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.appId is immutable"))]
    #[schemars(length(min = 1, max = 128), regex(pattern = super::OPAQUE_ID))]
    pub app_id: Option<String>,
    /// ConductorOne connector id (with `appId`, instead of `connectorRef`). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.connectorId is immutable"))]
    #[schemars(length(min = 1, max = 128), regex(pattern = super::OPAQUE_ID))]
    pub connector_id: Option<String>,
    /// Display name (required to create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = super::DISPLAY_NAME))]
    pub display_name: Option<String>,
    /// Description; `""` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub description: Option<String>,
    /// Tools bound to the toolset. Omitted = bindings unmanaged; `[]` = no tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    pub tools: Option<Vec<ToolSelector>>,
}

/// A tool, by ConductorOne tool id or by its native MCP tool name (exactly one).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[x_kube(validation = Rule::new("has(self.id) != has(self.toolName)").message("each spec.tools entry needs exactly one of id or toolName"))]
#[serde(rename_all = "camelCase")]
pub struct ToolSelector {
    /// ConductorOne MCP tool id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = super::OPAQUE_ID))]
    pub id: Option<String>,
    /// Native MCP tool name, resolved through the connector's tool list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = super::OPAQUE_ID))]
    pub tool_name: Option<String>,
}

/// Observed state of an `McpToolset`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpToolsetStatus {
    #[serde(flatten)]
    pub managed: ManagedStatus,
    /// The app the toolset lives in (kept so deletion works once a referenced `Connector` is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The connector the toolset lives under (kept for the same reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<String>,
    /// The app entitlement ConductorOne created for the toolset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_entitlement_id: Option<String>,
    /// Number of tools in the toolset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_count: Option<i64>,
    /// Ids of the bound tools (sorted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_tool_ids: Option<Vec<String>>,
}

// Its spec carries the common envelope (`spec.managed`), its status `status.managed`.
crate::managed_object!(McpToolset);
