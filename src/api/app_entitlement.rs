//! `AppEntitlement`: a ConductorOne app entitlement (custom or adopted connector-synced).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::SharedStr;
use super::envelope::{Empty, FreeformObject, ManagedFields, ManagedStatus};

/// A ConductorOne app entitlement. Every optional field left out is unmanaged.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "accessplane.io",
    version = "v1alpha1",
    kind = "AppEntitlement",
    namespaced,
    status = "AppEntitlementStatus",
    shortname = "c1ent",
    category = "accessplane",
    doc = "A ConductorOne app entitlement, created by the operator or adopted by externalId.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"ID","type":"string","jsonPath":".status.id"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new(super::EXTERNAL_ID_IMMUTABLE).message("spec.externalId is immutable once set").field_path(".externalId"),
    validation = Rule::new("has(self.externalId) || has(self.displayName)").message("spec.displayName is required unless spec.externalId adopts an existing entitlement").field_path(".displayName"),
    validation = Rule::new("!(has(self.durationGrant) && has(self.durationUnset))").message("at most one of spec.durationGrant and spec.durationUnset may be set").field_path(".durationGrant")
)]
#[serde(rename_all = "camelCase")]
pub struct AppEntitlementSpec {
    #[serde(flatten)]
    pub managed: ManagedFields,
    /// The ConductorOne app the entitlement belongs to. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.appId is immutable"))]
    #[schemars(length(min = 1, max = 128), regex(pattern = super::OPAQUE_ID))]
    pub app_id: SharedStr,
    /// Display name (required to create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = super::DISPLAY_NAME))]
    pub display_name: Option<String>,
    /// Description; `""` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub description: Option<String>,
    /// Short alias users can search for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub alias: Option<String>,
    /// Slug shown in the UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub slug: Option<String>,
    /// What the entitlement represents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<EntitlementPurpose>,
    /// Policy applied to access requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub grant_policy_id: Option<String>,
    /// Policy applied to revocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub revoke_policy_id: Option<String>,
    /// Policy applied to certifications (access reviews).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub certify_policy_id: Option<String>,
    /// Whether emergency (break-glass) grants are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_grant_enabled: Option<bool>,
    /// Policy applied to emergency grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub emergency_grant_policy_id: Option<String>,
    /// Risk level attribute value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub risk_level_value_id: Option<String>,
    /// Compliance framework attribute values (compared as a set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 128)))]
    pub compliance_framework_value_ids: Option<Vec<String>>,
    /// Maximum grant duration as a protobuf duration, e.g. `28800s`. At most one of this and `durationUnset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,12}(\.[0-9]{1,9})?s$"))]
    pub duration_grant: Option<String>,
    /// Set to `{}` for grants without a maximum duration. At most one of this and `durationGrant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_unset: Option<Empty>,
    // The policies are boxed: they are large and often unset, and every cached object
    // would otherwise carry their space (schema and JSON are the same).
    /// How access is provisioned (exactly one arm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioner_policy: Option<Box<ProvisionPolicy>>,
    /// How access is deprovisioned (exactly one arm). Applied by an update right after create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprovisioner_policy: Option<Box<ProvisionPolicy>>,
    /// Request schema (form) shown when requesting access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub request_schema_id: Option<String>,
    /// Baton id used to match the entitlement to a connector resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub match_baton_id: Option<String>,
    /// Override the app's access-request defaults for this entitlement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_access_requests_defaults: Option<bool>,
    /// Whether the entitlement is managed manually rather than by a connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_manually_managed: Option<bool>,
    /// Free-form annotations (≤ 16; keys not starting with `c1/`). The operator adds
    /// `managed_by` and `iac_resource_address` to entitlements it creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 14))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z][A-Za-z0-9._/-]{0,127}$') && !k.startsWith('c1/'))").message("spec.annotations keys must match ^[A-Za-z][A-Za-z0-9._/-]{0,127}$ and must not start with c1/"))]
    pub annotations: Option<BTreeMap<String, String>>,
    /// App resource type (create only; immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.appResourceTypeId is immutable"))]
    #[schemars(length(max = 128))]
    pub app_resource_type_id: Option<String>,
    /// App resource (create only; immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.appResourceId is immutable"))]
    #[schemars(length(max = 128))]
    pub app_resource_id: Option<String>,
}

/// `APP_ENTITLEMENT_PURPOSE_VALUE_*`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(clippy::enum_variant_names)]
pub enum EntitlementPurpose {
    #[serde(rename = "APP_ENTITLEMENT_PURPOSE_VALUE_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "APP_ENTITLEMENT_PURPOSE_VALUE_ASSIGNMENT")]
    Assignment,
    #[serde(rename = "APP_ENTITLEMENT_PURPOSE_VALUE_PERMISSION")]
    Permission,
    #[serde(rename = "APP_ENTITLEMENT_PURPOSE_VALUE_OWNERSHIP")]
    Ownership,
}

/// A ConductorOne provision policy: exactly one arm.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.connector), has(self.manual), has(self.delegated), has(self.webhook), has(self.multiStep), has(self.externalTicket), has(self.unconfigured)].filter(x, x).size() == 1").message("exactly one of connector, manual, delegated, webhook, multiStep, externalTicket, unconfigured must be set"))]
#[serde(rename_all = "camelCase")]
pub struct ProvisionPolicy {
    /// Provision through a connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<ConnectorProvision>,
    /// Manual provisioning by assigned users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<ManualProvision>,
    /// Delegate to another entitlement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated: Option<DelegatedProvision>,
    /// Call a webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookProvision>,
    /// Several steps in order; each step is a provision policy object (passed through as-is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_step: Option<MultiStepProvision>,
    /// Open an external ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ticket: Option<ExternalTicketProvision>,
    /// Not configured: set to `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfigured: Option<Empty>,
}

/// Connector provisioning: exactly one of `defaultBehavior`, `account`, `deleteAccount`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.defaultBehavior), has(self.account), has(self.deleteAccount)].filter(x, x).size() == 1").message("exactly one of defaultBehavior, account, deleteAccount must be set"))]
#[serde(rename_all = "camelCase")]
pub struct ConnectorProvision {
    /// The connector's default provisioning behaviour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_behavior: Option<ConnectorIdRef>,
    /// Create an account through the connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountProvision>,
    /// Delete the account through the connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_account: Option<ConnectorIdRef>,
}

/// A connector id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorIdRef {
    /// ConductorOne connector id.
    #[schemars(length(min = 1, max = 128))]
    pub connector_id: String,
}

/// Account creation through a connector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!(has(self.saveToVault) && has(self.doNotSave))").message("at most one of saveToVault and doNotSave may be set"))]
#[serde(rename_all = "camelCase")]
pub struct AccountProvision {
    /// ConductorOne connector id.
    #[schemars(length(min = 1, max = 128))]
    pub connector_id: String,
    /// Account schema id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<String>,
    /// Account fields (passed through as-is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<FreeformObject>,
    /// Save the generated credentials to these vaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_to_vault: Option<SaveToVault>,
    /// Do not save generated credentials: `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_not_save: Option<Empty>,
}

/// Vaults that receive generated credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaveToVault {
    /// Vault ids.
    #[schemars(length(max = 100), inner(length(min = 1, max = 128)))]
    pub vault_ids: Vec<String>,
}

/// Manual provisioning.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualProvision {
    /// Instructions shown to the provisioners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub instructions: Option<String>,
    /// Users who provision access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 128)))]
    pub user_ids: Option<Vec<String>>,
}

/// Delegated provisioning.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelegatedProvision {
    /// App of the entitlement delegated to.
    #[schemars(length(min = 1, max = 128))]
    pub app_id: String,
    /// Entitlement delegated to.
    #[schemars(length(min = 1, max = 128))]
    pub entitlement_id: String,
    /// Whether the delegation is implicit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implicit: Option<bool>,
}

/// Webhook provisioning.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookProvision {
    /// ConductorOne webhook id.
    #[schemars(length(min = 1, max = 128))]
    pub webhook_id: String,
}

/// Multi-step provisioning.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiStepProvision {
    /// Steps, each a provision policy object in ConductorOne's JSON form.
    #[schemars(length(max = 20))]
    pub provision_steps: Vec<FreeformObject>,
}

/// External ticket provisioning.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalTicketProvision {
    /// App of the ticketing connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Ticketing connector id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<String>,
    /// External ticket provisioner configuration id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ticket_provisioner_config_id: Option<String>,
    /// Instructions added to the ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

/// Observed state of an `AppEntitlement`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppEntitlementStatus {
    #[serde(flatten)]
    pub managed: ManagedStatus,
    /// Number of current grants of the entitlement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_count: Option<i64>,
}

// Its spec carries the common envelope (`spec.managed`), its status `status.managed`.
crate::managed_object!(AppEntitlement);
