//! The envelope every managed kind shares: where the upstream is, how the
//! operator may act on it, and the common status fields.

use super::condition::{Condition, SharedStr};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to a `Connection` in the same namespace. There is deliberately no
/// namespace field: a resource can only use its own namespace's credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalRef {
    /// Name of the referenced object in the same namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = super::OBJECT_NAME))]
    pub name: SharedStr,
}

/// What the operator may do upstream.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ManagementPolicy {
    /// Create, update and delete the upstream object to match the spec (default).
    #[default]
    Manage,
    /// Read-only: never write upstream; report drift in the `Ready` condition.
    Observe,
}

/// What happens upstream when the custom resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the upstream object and wait until it is gone.
    Delete,
    /// Leave the upstream object in place.
    Orphan,
}

/// Which credentials a managed resource uses: a `Connection` in its own namespace, or a
/// `ClusterConnection` that allows its namespace. There is no namespace field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ConnectionRef {
    /// `Connection` (the default; same namespace) or `ClusterConnection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ConnectionKind>,
    /// Name of the Connection (in the same namespace) or of the ClusterConnection.
    #[schemars(length(min = 1, max = 253), regex(pattern = super::OBJECT_NAME))]
    pub name: SharedStr,
}

/// `Connection` (the default: a Connection in the same namespace) or `ClusterConnection`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum ConnectionKind {
    /// A `Connection` in the resource's namespace.
    #[default]
    Connection,
    /// A cluster-scoped `ClusterConnection` that allows the resource's namespace.
    ClusterConnection,
}

impl ConnectionRef {
    /// A reference to the namespaced `Connection` `name`.
    pub fn local(name: &str) -> Self {
        Self {
            kind: None,
            name: name.into(),
        }
    }

    /// The kind with its default applied.
    pub fn kind(&self) -> ConnectionKind {
        self.kind.unwrap_or_default()
    }
}

/// Fields common to every managed kind's spec. Flattened into each spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedFields {
    /// The `Connection` (same namespace) or `ClusterConnection` that says where the upstream is and holds its credentials.
    pub connection_ref: ConnectionRef,
    /// `Manage` (default) reconciles the upstream object; `Observe` only reads it and reports drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_policy: Option<ManagementPolicy>,
    /// `Delete` or `Orphan`. Unset: `Delete` for objects the operator created, `Orphan` for adopted ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Adopt this existing upstream object instead of creating one. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = super::OPAQUE_ID))]
    pub external_id: Option<String>,
}

impl ManagedFields {
    /// The management policy with its default applied.
    pub fn management(&self) -> ManagementPolicy {
        self.management_policy.unwrap_or_default()
    }
}

/// Status fields common to every managed kind. Flattened into each status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedStatus {
    /// The upstream object's id once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the upstream object matches the managed spec) and `Synced` (the last reconcile succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The ClusterConnection whose credentials it uses (unset for a namespaced Connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_connection: Option<String>,
    /// An asynchronous write the upstream accepted but does not show yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingWrite>,
}

/// A write the upstream accepted (HTTP 202/204) and that is confirmed by reading back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingWrite {
    /// `Create`, `Update` or `Delete`.
    // A string in the schema, as it always was: the enum is the operator's own reading.
    #[schemars(with = "String")]
    pub operation: PendingOperation,
    /// The `metadata.generation` whose desired state was sent.
    pub generation: i64,
    /// When the upstream accepted the write (RFC 3339).
    pub requested_at: String,
}

/// Which write a [`PendingWrite`] awaits.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingOperation {
    Create,
    Update,
    Delete,
    /// Written by no version of the operator (a hand edit): awaited by nothing, so the
    /// write it names is treated as not accepted.
    #[serde(other)]
    Unknown,
}

/// An empty object (`{}`), used for oneof arms that carry no data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct Empty {}

/// A JSON object passed to the upstream as-is (the schema keeps unknown fields).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(transparent)]
pub struct FreeformObject(pub serde_json::Map<String, serde_json::Value>);

impl JsonSchema for FreeformObject {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FreeformObject".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}
