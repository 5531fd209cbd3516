//! `AccessProfile`: a Serval access profile (`/v2/access-profiles`).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::SharedStr;
use super::envelope::{ManagedFields, ManagedStatus};

/// A Serval access profile: which groups of a team get which app resource roles and workflows.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "accessplane.io",
    version = "v1alpha1",
    kind = "AccessProfile",
    namespaced,
    status = "AccessProfileStatus",
    shortname = "sap",
    doc = "A Serval access profile: which groups of a team get which app resource roles and workflows.",
    category = "accessplane",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"ID","type":"string","jsonPath":".status.id"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new(super::EXTERNAL_ID_IMMUTABLE).message("spec.externalId is immutable once set").field_path(".externalId"),
    validation = Rule::new("has(self.externalId) || has(self.name)").message("spec.name is required unless spec.externalId adopts an existing profile").field_path(".name")
)]
#[serde(rename_all = "camelCase")]
pub struct AccessProfileSpec {
    #[serde(flatten)]
    pub managed: ManagedFields,
    /// The Serval team that owns the profile. Immutable: a different team means a different profile.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.teamId is immutable"))]
    #[schemars(length(min = 1, max = 128), regex(pattern = super::OPAQUE_ID))]
    pub team_id: SharedStr,
    /// Display name of the profile. Required to create; with `externalId` it may be omitted (unmanaged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = super::DISPLAY_NAME))]
    pub name: Option<String>,
    /// Description. Omitted = unmanaged; `""` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,
    /// Which users the profile applies to. Replaced as a whole upstream when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching_criteria: Option<MatchingCriteria>,
    /// What the profile grants. Replaced as a whole upstream when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Grants>,
}

/// The rules that decide which users the profile applies to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchingCriteria {
    /// Group-based matching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<GroupCriteria>,
}

/// Group-based matching criteria.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupCriteria {
    /// How groups are matched. Only `ACCESS_PROFILE_GROUP_MATCH_TYPE_UNSPECIFIED` is published;
    /// other values are passed through as-is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^ACCESS_PROFILE_GROUP_MATCH_TYPE_[A-Z_]+$"))]
    pub match_type: Option<String>,
    /// Groups whose members the profile applies to (compared as a set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 256), regex(pattern = super::OPAQUE_ID)))]
    pub included_group_ids: Option<Vec<String>>,
    /// Groups whose members are excluded (compared as a set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 256), regex(pattern = super::OPAQUE_ID)))]
    pub excluded_group_ids: Option<Vec<String>>,
}

/// What the profile grants.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Grants {
    /// App resource roles (compared as a set of ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub app_resource_roles: Option<Vec<AppResourceRoleGrant>>,
    /// Workflows that apply (compared as a set of ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub workflows: Option<Vec<WorkflowGrant>>,
}

/// One granted app resource role.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct AppResourceRoleGrant {
    /// Serval app resource role id.
    #[schemars(length(min = 1, max = 256), regex(pattern = super::OPAQUE_ID))]
    pub app_resource_role_id: String,
}

/// One workflow that applies to the profile.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowGrant {
    /// Serval workflow id.
    #[schemars(length(min = 1, max = 256), regex(pattern = super::OPAQUE_ID))]
    pub workflow_id: String,
}

/// Observed state of an `AccessProfile`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessProfileStatus {
    #[serde(flatten)]
    pub managed: ManagedStatus,
    /// True when Serval marks this profile as its team's default (it is then never deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_team_default: Option<bool>,
}

// Its spec carries the common envelope (`spec.managed`), its status `status.managed`.
crate::managed_object!(AccessProfile);
