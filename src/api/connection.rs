//! `Connection`: where an upstream is and which Secret holds its credentials.

use super::condition::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::envelope::LocalRef;

/// Where one upstream tenant is and how to authenticate to it. Exactly one of
/// `conductorOne`, `serval`, `instaclustr`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "accessplane.io",
    version = "v1alpha1",
    kind = "Connection",
    namespaced,
    status = "ConnectionStatus",
    shortname = "apconn",
    category = "accessplane",
    doc = "Where an upstream SaaS tenant is and which Secret holds its credentials.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".status.provider"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("[has(self.conductorOne), has(self.serval), has(self.instaclustr)].filter(x, x).size() == 1").message("exactly one of spec.conductorOne, spec.serval, spec.instaclustr must be set"))]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// A ConductorOne tenant. Secret keys: `clientId` + `clientSecret`, or `accessToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conductor_one: Option<ConductorOneConnection>,
    /// A Serval tenant. Secret keys: `clientId` + `clientSecret`, or `bearerToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serval: Option<ServalConnection>,
    /// An Instaclustr account. Secret keys: `username` + `apiKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instaclustr: Option<InstaclustrConnection>,
    /// Client-side rate limit shared by every resource using this Connection.
    /// Unset: 5 requests/s with a burst of 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Longest wait for one HTTP request, response body included. A request that times
    /// out is retried like a dropped connection (a create is never re-sent blindly: the
    /// operator looks it up first). Unset: 30 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<u32>,
}

/// A ConductorOne tenant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConductorOneConnection {
    /// Tenant URL, e.g. `https://acme.conductor.one`. Unset: derived from the client id's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::BASE_URL), length(max = 2048))]
    pub server_url: Option<String>,
    /// Secret (same namespace) with `clientId` + `clientSecret`, or `accessToken`.
    pub credentials_secret_ref: LocalRef,
    /// How the client secret obtains tokens. Unset: `PrivateKeyJWT` (a signed client
    /// assertion, what ConductorOne's SDKs use; the secret never leaves the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<ConductorOneAuthMethod>,
}

/// Token grant used with a ConductorOne client secret.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConductorOneAuthMethod {
    /// Sign an EdDSA client assertion with the secret's private key.
    #[serde(rename = "PrivateKeyJWT")]
    PrivateKeyJwt,
    /// Send the whole client secret in the token request body.
    ClientSecretPost,
}

/// A Serval tenant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServalConnection {
    /// API base URL. Unset: `https://public.api.serval.com` (US); EU tenants use `https://public.eu1.serval.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::BASE_URL), length(max = 2048))]
    pub base_url: Option<String>,
    /// Secret (same namespace) with `clientId` + `clientSecret`, or `bearerToken`.
    pub credentials_secret_ref: LocalRef,
}

/// An Instaclustr account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstaclustrConnection {
    /// API base URL. Unset: `https://api.instaclustr.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::BASE_URL), length(max = 2048))]
    pub base_url: Option<String>,
    /// Secret (same namespace) with `username` + `apiKey` (a provisioning API key).
    pub credentials_secret_ref: LocalRef,
}

/// A token-bucket rate limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Sustained requests per second.
    #[schemars(range(min = 1, max = 1000))]
    pub requests_per_second: u32,
    /// Requests that may be sent at once after a quiet period. Unset: twice `requestsPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub burst: Option<u32>,
}

/// Observed state of a `Connection`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `conductorOne`, `serval` or `instaclustr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `Ready`: True once the credentials were used successfully.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The upstreams a Connection can point at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamKind {
    ConductorOne,
    Serval,
    Instaclustr,
}

impl UpstreamKind {
    /// The spec field naming this upstream.
    pub fn field(self) -> &'static str {
        match self {
            Self::ConductorOne => "conductorOne",
            Self::Serval => "serval",
            Self::Instaclustr => "instaclustr",
        }
    }
}

impl ConnectionSpec {
    /// The configured upstream; `None` when the spec sets none or several (refused at admission).
    pub fn upstream_kind(&self) -> Option<UpstreamKind> {
        match (&self.conductor_one, &self.serval, &self.instaclustr) {
            (Some(_), None, None) => Some(UpstreamKind::ConductorOne),
            (None, Some(_), None) => Some(UpstreamKind::Serval),
            (None, None, Some(_)) => Some(UpstreamKind::Instaclustr),
            _ => None,
        }
    }
}
