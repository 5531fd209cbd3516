//! ConductorOne: service-principal auth (a client secret or an access token) and the
//! verification read.

pub mod auth;

use std::sync::Arc;

use auth::{ClientCredentials, ClientKey, Grant, tenant_host};

use super::{ConnectError, SecretData};
use crate::api::connection::{ConductorOneAuthMethod, ConductorOneConnection};
use crate::upstream::{Call, Credentials, UpstreamClient, UpstreamError};

/// Provider label in metrics, logs and errors.
pub const PROVIDER: &str = "conductorone";

const EXPECTED_KEYS: &str = "clientId + clientSecret, or accessToken";

/// The base URL and credentials of a ConductorOne Connection. Secret keys: `clientId` +
/// `clientSecret`, or `accessToken`. The tenant host comes from the client id unless
/// `serverUrl` is set.
pub fn credentials(
    spec: &ConductorOneConnection,
    secret: &SecretData,
) -> Result<(url::Url, Credentials), ConnectError> {
    let server_url = |client_id: Option<&str>| -> Result<url::Url, ConnectError> {
        let text = match (&spec.server_url, client_id.and_then(tenant_host)) {
            (Some(url), _) => url.clone(),
            (None, Some(host)) => format!("https://{host}"),
            (None, None) => {
                return Err(ConnectError::InvalidSpec {
                    field: "spec.conductorOne.serverUrl",
                    problem: "required when the client id does not name the tenant host (<name>@<host>/<suffix>)".into(),
                });
            }
        };
        super::parse_base_url(&text, "spec.conductorOne.serverUrl")
    };
    if let Some(token) = secret.optional("accessToken")? {
        return Ok((server_url(None)?, Credentials::StaticBearer(token)));
    }
    let client_id = secret.required_plain("clientId", EXPECTED_KEYS)?;
    let client_secret = secret.required("clientSecret", EXPECTED_KEYS)?;
    let base_url = server_url(Some(&client_id))?;
    let grant = match spec
        .auth_method
        .unwrap_or(ConductorOneAuthMethod::PrivateKeyJwt)
    {
        ConductorOneAuthMethod::PrivateKeyJwt => {
            Grant::PrivateKeyJwt(ClientKey::parse(&client_secret)?)
        }
        ConductorOneAuthMethod::ClientSecretPost => Grant::ClientSecret(client_secret),
    };
    let exchange = ClientCredentials {
        token_url: super::join(&base_url, "auth/v1/token")?,
        audience: base_url.host_str().unwrap_or_default().to_string(),
        client_id,
        grant,
    };
    Ok((base_url, Credentials::Exchange(Arc::new(exchange))))
}

/// Proves the credentials work: an authenticated read of an app that cannot exist.
pub async fn verify(client: &UpstreamClient) -> Result<(), UpstreamError> {
    let call = Call::get(
        "verify",
        "api/v1/apps/accessplane-connection-check/entitlements/none",
    );
    super::expect_not_found(client.send(call).await)
}
