//! `Connector`: a ConductorOne connector (e.g. an MCP server connector).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::SharedStr;
use super::envelope::{LocalRef, ManagedFields, ManagedStatus};

/// A ConductorOne connector, created from a catalog entry or adopted by externalId.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "accessplane.io",
    version = "v1alpha1",
    kind = "Connector",
    namespaced,
    status = "ConnectorStatus",
    shortname = "c1conn",
    category = "accessplane",
    doc = "A ConductorOne connector, created from a catalog entry or adopted by externalId.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"ID","type":"string","jsonPath":".status.id"}"#,
    printcolumn = r#"{"name":"Sync","type":"string","jsonPath":".status.syncStatus"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new(super::EXTERNAL_ID_IMMUTABLE).message("spec.externalId is immutable once set").field_path(".externalId"),
    validation = Rule::new("has(self.externalId) || (has(self.catalogId) && has(self.displayName))").message("spec.catalogId and spec.displayName are required unless spec.externalId adopts an existing connector").field_path(".catalogId")
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorSpec {
    #[serde(flatten)]
    pub managed: ManagedFields,
    /// The ConductorOne app the connector belongs to. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.appId is immutable"))]
    #[schemars(length(min = 1, max = 128), regex(pattern = super::OPAQUE_ID))]
    pub app_id: SharedStr,
    /// Connector catalog entry to create from (create only; immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.catalogId is immutable"))]
    #[schemars(length(min = 1, max = 128), regex(pattern = super::OPAQUE_ID))]
    pub catalog_id: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = super::DISPLAY_NAME))]
    pub display_name: Option<String>,
    /// Description; `""` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub description: Option<String>,
    /// Users who own the connector (compared as a set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 128)))]
    pub user_ids: Option<Vec<String>>,
    /// Only sync these profiles (compared as a set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 256)))]
    pub profile_allow_list: Option<Vec<String>>,
    /// Never sync these profiles (compared as a set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 256)))]
    pub profile_ignore_list: Option<Vec<String>>,
    /// Secret (same namespace) whose keys become the connector's configuration fields.
    /// Write-only upstream: re-sent only when the Secret's content changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_secret_ref: Option<LocalRef>,
}

/// Observed state of a `Connector`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorStatus {
    #[serde(flatten)]
    pub managed: ManagedStatus,
    /// The connector's sync status (`SYNC_STATUS_*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_status: Option<String>,
    /// The last sync error reported by ConductorOne.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// HMAC-SHA256 of the configuration last sent, keyed with its Secret's uid (never the
    /// content itself, and no way to test guesses of it without reading the Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

// Its spec carries the common envelope (`spec.managed`), its status `status.managed`.
crate::managed_object!(Connector);
