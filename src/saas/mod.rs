//! How to reach each SaaS: credentials from a Connection's Secret become an authenticated
//! upstream client, and one cheap call verifies them. Nothing here knows the engine.

pub mod conductorone;
pub mod instaclustr;
pub mod serval;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use secrecy::SecretString;

use crate::api::connection::{ConnectionSpec, UpstreamKind};
use crate::upstream::{RateLimit, UpstreamClient, UpstreamConfig, UpstreamError, UpstreamMetrics};

/// Why a Connection's configuration cannot produce a client. Messages name keys and
/// fields, never values.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("Secret key {key} is missing (expected: {expected})")]
    SecretKeyMissing {
        key: &'static str,
        expected: &'static str,
    },
    #[error("Secret key {key} is not valid: {problem}")]
    SecretKeyInvalid { key: &'static str, problem: String },
    #[error("{field}: {problem}")]
    InvalidSpec {
        field: &'static str,
        problem: String,
    },
    #[error(transparent)]
    Client(#[from] UpstreamError),
}

/// The data of a credentials Secret. Values are only ever handed out as `SecretString`,
/// except identifiers such as client ids and user names.
pub struct SecretData(BTreeMap<String, ByteString>);

impl SecretData {
    pub fn new(data: BTreeMap<String, ByteString>) -> Self {
        Self(data)
    }

    fn text(&self, key: &'static str) -> Result<Option<String>, ConnectError> {
        let Some(bytes) = self.0.get(key) else {
            return Ok(None);
        };
        let text =
            String::from_utf8(bytes.0.clone()).map_err(|_| ConnectError::SecretKeyInvalid {
                key,
                problem: "not UTF-8".into(),
            })?;
        let trimmed = text.trim();
        Ok((!trimmed.is_empty()).then(|| trimmed.to_string()))
    }

    /// A secret value, if present and non-empty.
    pub fn optional(&self, key: &'static str) -> Result<Option<SecretString>, ConnectError> {
        Ok(self.text(key)?.map(SecretString::from))
    }

    /// A secret value that must be present.
    pub fn required(
        &self,
        key: &'static str,
        expected: &'static str,
    ) -> Result<SecretString, ConnectError> {
        self.optional(key)?
            .ok_or(ConnectError::SecretKeyMissing { key, expected })
    }

    /// A non-secret identifier (client id, user name) that must be present.
    pub fn required_plain(
        &self,
        key: &'static str,
        expected: &'static str,
    ) -> Result<String, ConnectError> {
        self.text(key)?
            .ok_or(ConnectError::SecretKeyMissing { key, expected })
    }
}

/// The `provider` label of an upstream's metrics.
pub fn provider_name(kind: UpstreamKind) -> &'static str {
    match kind {
        UpstreamKind::Serval => serval::PROVIDER,
        UpstreamKind::ConductorOne => conductorone::PROVIDER,
        UpstreamKind::Instaclustr => instaclustr::PROVIDER,
    }
}

/// Builds the upstream client of a Connection.
pub fn connect(
    spec: &ConnectionSpec,
    secret: &SecretData,
    metrics: Arc<UpstreamMetrics>,
) -> Result<(UpstreamKind, UpstreamClient), ConnectError> {
    let kind = spec.upstream_kind().ok_or(ConnectError::InvalidSpec {
        field: "spec",
        problem: "exactly one of conductorOne, serval, instaclustr must be set".into(),
    })?;
    let provider = provider_name(kind);
    let (base_url, credentials) = match kind {
        UpstreamKind::Serval => serval::credentials(spec.serval.as_ref().unwrap(), secret)?,
        UpstreamKind::ConductorOne => {
            conductorone::credentials(spec.conductor_one.as_ref().unwrap(), secret)?
        }
        UpstreamKind::Instaclustr => {
            instaclustr::credentials(spec.instaclustr.as_ref().unwrap(), secret)?
        }
    };
    let mut config = UpstreamConfig::new(provider, base_url, credentials);
    config.metrics = metrics;
    // The Instaclustr API asks for `Content-Type: application/json` on every request.
    config.json_content_type_always = kind == UpstreamKind::Instaclustr;
    if let Some(limit) = &spec.rate_limit {
        config.rate_limit = rate_limit(limit.requests_per_second, limit.burst)?;
    }
    if let Some(seconds) = spec.timeout_seconds {
        if seconds == 0 {
            return Err(ConnectError::InvalidSpec {
                field: "spec.timeoutSeconds",
                problem: "must be at least 1".into(),
            });
        }
        config.timeout = std::time::Duration::from_secs(seconds.into());
    }
    Ok((kind, UpstreamClient::new(config)?))
}

/// Proves a client's credentials work with one cheap authenticated call.
pub async fn verify(kind: UpstreamKind, client: &UpstreamClient) -> Result<(), UpstreamError> {
    match kind {
        UpstreamKind::Serval => serval::verify(client).await,
        UpstreamKind::ConductorOne => conductorone::verify(client).await,
        UpstreamKind::Instaclustr => instaclustr::verify(client).await,
    }
}

/// A verification read of an id that cannot exist: 404 proves authentication worked.
fn expect_not_found(
    result: Result<crate::upstream::UpstreamResponse, UpstreamError>,
) -> Result<(), UpstreamError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

fn rate_limit(rps: u32, burst: Option<u32>) -> Result<RateLimit, ConnectError> {
    let invalid = |problem: &str| ConnectError::InvalidSpec {
        field: "spec.rateLimit",
        problem: problem.into(),
    };
    let rps = std::num::NonZeroU32::new(rps)
        .ok_or_else(|| invalid("requestsPerSecond must be at least 1"))?;
    let burst = std::num::NonZeroU32::new(burst.unwrap_or(rps.get().saturating_mul(2)))
        .ok_or_else(|| invalid("burst must be at least 1"))?;
    Ok(RateLimit {
        requests_per_second: rps,
        burst,
    })
}

fn parse_base_url(text: &str, field: &'static str) -> Result<url::Url, ConnectError> {
    let mut url = url::Url::parse(text).map_err(|e| ConnectError::InvalidSpec {
        field,
        problem: e.to_string(),
    })?;
    if !url.path().ends_with('/') {
        // Paths are joined below the base, which needs a trailing slash.
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

fn join(base: &url::Url, path: &str) -> Result<url::Url, ConnectError> {
    base.join(path).map_err(|e| ConnectError::InvalidSpec {
        field: "baseUrl",
        problem: e.to_string(),
    })
}
