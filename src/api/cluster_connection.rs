//! `ClusterConnection`: a Connection for many namespaces. Cluster-scoped, like External
//! Secrets' `ClusterSecretStore` or cert-manager's `ClusterIssuer`: its credentials Secret
//! lives in the operator's credentials namespace, and `allowedNamespaces` says whose
//! resources may use it (nobody when unset).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::connection::ConnectionSpec;

/// Where one upstream tenant is and how to authenticate to it, for the namespaces it
/// allows. The same fields as a `Connection`'s spec, plus `allowedNamespaces`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "accessplane.io",
    version = "v1alpha1",
    kind = "ClusterConnection",
    status = "ClusterConnectionStatus",
    shortname = "apcconn",
    category = "accessplane",
    doc = "An upstream SaaS tenant whose credentials (a Secret in the operator's credentials namespace) resources in the allowed namespaces may use.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".status.provider"}"#,
    printcolumn = r#"{"name":"Allowed","type":"integer","description":"Namespaces currently allowed to use it","jsonPath":".status.allowedNamespaces"}"#,
    printcolumn = r#"{"name":"Scopes","type":"string","description":"The teams, apps or gateway clusters its users may touch (empty: the whole tenant)","jsonPath":".spec.allowedScopes"}"#,
    printcolumn = r#"{"name":"In Use","type":"string","description":"The teams, apps or gateway clusters its resources use now","jsonPath":".status.scopesInUse"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConnectionSpec {
    /// The upstream and its credentials, as in a `Connection`; the credentials Secret is
    /// read from the operator's credentials namespace.
    #[serde(flatten)]
    pub connection: ConnectionSpec,
    /// Which namespaces' resources may use this ClusterConnection: those matching
    /// `namespaceSelector` and those listed in `names`. Unset or empty: none.
    #[serde(default, skip_serializing_if = "AllowedNamespaces::is_empty")]
    pub allowed_namespaces: AllowedNamespaces,
    /// The slice of the tenant its users may touch: Serval team ids, ConductorOne app
    /// ids or Instaclustr MCP Gateway cluster ids (whichever upstream it points at). A
    /// resource whose team, app or cluster is not listed is refused
    /// (`ScopeNotAllowed`) before any upstream call. Unset or empty: the whole tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allowed_scopes: Vec<ScopeId>,
}

/// A Serval team id, ConductorOne app id or gateway cluster id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct ScopeId(
    #[schemars(length(min = 1, max = 256), regex(pattern = super::OPAQUE_ID))] pub String,
);

/// Namespaces allowed to use a ClusterConnection (the union of both fields).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespaces whose labels match (a label selector). `{}` matches every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub names: Vec<NamespaceName>,
}

/// A label selector over namespaces, as `metav1.LabelSelector` (the requirements are
/// ANDed), with the bounds the apiserver needs to cost its CEL rules.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Labels a namespace must have, with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": LABEL_KEYS, "message": "label keys must be valid label names (an optional DNS subdomain prefix and '/', then at most 63 characters [A-Za-z0-9._-] starting and ending alphanumeric)"}]))]
    pub match_labels: BTreeMap<String, LabelValue>,
    /// Requirements on a namespace's labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One requirement of a label selector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)").message("values must be non-empty for In and NotIn and empty for Exists and DoesNotExist"))]
pub struct SelectorRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317), regex(pattern = LABEL_KEY))]
    pub key: String,
    /// How the label's value is compared.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub values: Vec<LabelValue>,
}

/// Label selector operators.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectorOperator {
    /// The label has one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// A label value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct LabelValue(
    #[schemars(
        length(max = 63),
        regex(pattern = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    )]
    pub String,
);

/// A namespace name (RFC 1123 label).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct NamespaceName(
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub String,
);

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters.
const LABEL_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/// CEL over `matchLabels`: map keys have no schema of their own.
const LABEL_KEYS: &str = r"self.all(k, k.size() <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))";

impl AllowedNamespaces {
    pub fn is_empty(&self) -> bool {
        self.namespace_selector.is_none() && self.names.is_empty()
    }

    /// Whether the namespace `name` with `labels` may use the ClusterConnection.
    pub fn allows(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.names.iter().any(|n| n.0 == name)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|selector| selector.matches(labels))
    }
}

impl NamespaceSelector {
    /// Whether `labels` satisfy every requirement (as the apiserver's label selectors).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let label = |key: &str| labels.get(key).map(String::as_str);
        let has_value = |values: &[LabelValue], value: Option<&str>| {
            value.is_some_and(|v| values.iter().any(|w| w.0 == v))
        };
        self.match_labels
            .iter()
            .all(|(key, value)| label(key) == Some(value.0.as_str()))
            && self.match_expressions.iter().all(|e| match e.operator {
                SelectorOperator::In => has_value(&e.values, label(&e.key)),
                SelectorOperator::NotIn => !has_value(&e.values, label(&e.key)),
                SelectorOperator::Exists => label(&e.key).is_some(),
                SelectorOperator::DoesNotExist => label(&e.key).is_none(),
            })
    }
}

/// Observed state of a `ClusterConnection`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConnectionStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `conductorOne`, `serval` or `instaclustr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// How many namespaces are allowed to use it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<u32>,
    /// The Serval teams, ConductorOne apps or gateway clusters its resources use now
    /// (sorted; at most 100 shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub scopes_in_use: Vec<String>,
    /// `Ready`: True once the credentials were used successfully.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn allowed(value: serde_json::Value) -> AllowedNamespaces {
        serde_json::from_value(value).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nobody_is_allowed_by_default() {
        let none = AllowedNamespaces::default();
        assert!(!none.allows("team-a", &labels(&[("team", "a")])));
        assert!(!allowed(json!({"names": []})).allows("team-a", &labels(&[])));
    }

    #[test]
    fn names_and_selector_are_a_union() {
        let rule = allowed(json!({
            "namespaceSelector": {"matchLabels": {"access": "c1"}},
            "names": ["platform"],
        }));
        assert!(rule.allows("platform", &labels(&[])));
        assert!(rule.allows("team-a", &labels(&[("access", "c1")])));
        assert!(!rule.allows("team-b", &labels(&[("access", "serval")])));
    }

    #[test]
    fn expressions_match_like_the_apiserver() {
        let rule = allowed(json!({"namespaceSelector": {"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["prod", "staging"]},
            {"key": "frozen", "operator": "DoesNotExist"},
        ]}}));
        assert!(rule.allows("a", &labels(&[("tier", "prod")])));
        assert!(!rule.allows("b", &labels(&[("tier", "prod"), ("frozen", "")])));
        assert!(!rule.allows("c", &labels(&[("tier", "dev")])));
        let everything = allowed(json!({"namespaceSelector": {}}));
        assert!(everything.allows("any", &labels(&[])));
    }

    #[test]
    fn not_in_matches_namespaces_without_the_label() {
        let rule = allowed(json!({"namespaceSelector": {"matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["prod"]},
        ]}}));
        assert!(rule.allows("a", &labels(&[])));
        assert!(rule.allows("b", &labels(&[("tier", "dev")])));
        assert!(!rule.allows("c", &labels(&[("tier", "prod")])));
    }
}
