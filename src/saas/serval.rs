//! Serval public API v2: client-credentials auth and the verification read.

use std::sync::Arc;

use futures::future::BoxFuture;
use secrecy::SecretString;

use super::{ConnectError, SecretData};
use crate::api::connection::ServalConnection;
use crate::upstream::{
    Call, Credentials, IssuedToken, TokenExchange, UpstreamClient, UpstreamError,
    oauth_token_request,
};

/// Provider label in metrics, logs and errors.
pub const PROVIDER: &str = "serval";
/// US region; EU tenants set `baseUrl`.
pub const DEFAULT_BASE_URL: &str = "https://public.api.serval.com";

/// `POST /v2/auth/token` with the client id and secret in HTTP Basic.
struct ClientCredentials {
    token_url: url::Url,
    client_id: String,
    client_secret: SecretString,
}

impl TokenExchange for ClientCredentials {
    fn principal(&self) -> Option<String> {
        Some(self.client_id.clone())
    }

    fn exchange<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<IssuedToken, UpstreamError>> {
        Box::pin(oauth_token_request(
            http,
            PROVIDER,
            &self.token_url,
            &[("grant_type", "client_credentials")],
            Some((&self.client_id, &self.client_secret)),
        ))
    }
}

/// The base URL and credentials of a Serval Connection. Secret keys: `clientId` +
/// `clientSecret`, or `bearerToken`.
pub fn credentials(
    spec: &ServalConnection,
    secret: &SecretData,
) -> Result<(url::Url, Credentials), ConnectError> {
    let base_url = super::parse_base_url(
        spec.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
        "spec.serval.baseUrl",
    )?;
    if let Some(token) = secret.optional("bearerToken")? {
        return Ok((base_url, Credentials::StaticBearer(token)));
    }
    let client_id = secret.required_plain("clientId", "clientId + clientSecret, or bearerToken")?;
    let client_secret =
        secret.required("clientSecret", "clientId + clientSecret, or bearerToken")?;
    let token_url = super::join(&base_url, "v2/auth/token")?;
    let exchange = ClientCredentials {
        token_url,
        client_id,
        client_secret,
    };
    Ok((base_url, Credentials::Exchange(Arc::new(exchange))))
}

/// Proves the credentials work: an authenticated read of an id that cannot exist
/// (404 = authenticated; 401/403 = refused).
pub async fn verify(client: &UpstreamClient) -> Result<(), UpstreamError> {
    match client
        .send(Call::get(
            "verify",
            "v2/access-profiles/accessplane-connection-check",
        ))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}
