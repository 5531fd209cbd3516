//! `PersonaAccessControl`: an Instaclustr MCP Gateway persona access control.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::SharedStr;
use super::envelope::{ManagedFields, ManagedStatus};

/// Instaclustr's `[^"'\\]+`, minus control characters and leading/trailing whitespace
/// (a blank or padded role cannot match a persona and is awkward in the composite id).
const PERSONA_ROLE: &str = r#"^[^"'\\\p{Cc}\p{Z}]([^"'\\\p{Cc}]*[^"'\\\p{Cc}\p{Z}])?$"#;

/// Which tools of an MCP Gateway virtual server a persona role may use.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "accessplane.io",
    version = "v1alpha1",
    kind = "PersonaAccessControl",
    namespaced,
    status = "PersonaAccessControlStatus",
    shortname = "pac",
    category = "accessplane",
    doc = "An Instaclustr MCP Gateway persona access control (asynchronous upstream).",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"ID","type":"string","jsonPath":".status.id"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(super::EXTERNAL_ID_IMMUTABLE).message("spec.externalId is immutable once set").field_path(".externalId"))]
#[serde(rename_all = "camelCase")]
pub struct PersonaAccessControlSpec {
    #[serde(flatten)]
    pub managed: ManagedFields,
    /// The MCP Gateway cluster.
    #[schemars(length(min = 1, max = 128), regex(pattern = super::OPAQUE_ID))]
    pub cluster_id: SharedStr,
    /// The virtual server (uuid). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.virtualServerId is immutable"))]
    #[schemars(regex(pattern = super::UUID))]
    pub virtual_server_id: SharedStr,
    /// The persona role: no quotes, backslashes or control characters, and no leading or
    /// trailing whitespace (so never blank). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.personaRole is immutable"))]
    #[schemars(regex(pattern = PERSONA_ROLE), length(min = 1, max = 256))]
    pub persona_role: String,
    /// `ALLOWLIST`: only `tools` are allowed; `DENYLIST`: everything but `tools`.
    #[serde(rename = "type")]
    pub type_: AccessControlType,
    /// Tool uuids (compared as a set). Omitted = unmanaged; `[]` = the rule applies to all tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 1000),
        inner(regex(pattern = super::UUID))
    )]
    pub tools: Option<Vec<String>>,
}

/// Allow-list or deny-list.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AccessControlType {
    #[serde(rename = "ALLOWLIST")]
    Allowlist,
    #[serde(rename = "DENYLIST")]
    Denylist,
}

/// Observed state of a `PersonaAccessControl`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersonaAccessControlStatus {
    #[serde(flatten)]
    pub managed: ManagedStatus,
    /// The gateway cluster the control lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

// Its spec carries the common envelope (`spec.managed`), its status `status.managed`.
crate::managed_object!(PersonaAccessControl);
