//! Instaclustr API v2: Basic auth and the verification read.

use super::{ConnectError, SecretData};
use crate::api::connection::InstaclustrConnection;
use crate::upstream::{Call, Credentials, UpstreamClient, UpstreamError};

/// Provider label in metrics, logs and errors.
pub const PROVIDER: &str = "instaclustr";
/// Instaclustr's public API.
pub const DEFAULT_BASE_URL: &str = "https://api.instaclustr.com";

/// The base URL and credentials of an Instaclustr Connection. Secret keys: `username` +
/// `apiKey` (a provisioning API key).
pub fn credentials(
    spec: &InstaclustrConnection,
    secret: &SecretData,
) -> Result<(url::Url, Credentials), ConnectError> {
    let base_url = super::parse_base_url(
        spec.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
        "spec.instaclustr.baseUrl",
    )?;
    let username = secret.required_plain("username", "username + apiKey")?;
    let api_key = secret.required("apiKey", "username + apiKey")?;
    Ok((base_url, Credentials::Basic { username, api_key }))
}

/// Proves the credentials work: an authenticated read of a cluster that cannot exist.
pub async fn verify(client: &UpstreamClient) -> Result<(), UpstreamError> {
    let call = Call::get(
        "verify",
        "cluster-management/v2/resources/applications/mcp-gateway/clusters/v1/accessplane-connection-check",
    );
    super::expect_not_found(client.send(call).await)
}
