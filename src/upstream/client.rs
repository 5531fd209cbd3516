//! The per-Connection HTTP client: auth, rate limit, retries, metrics and tracing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::auth::{Credentials, ExchangeHooks, TokenCache};
use super::call::{Call, RetryMode};
use super::error::{ErrorClass, UpstreamError, parse_error_body, transport_error};
use super::metrics::UpstreamMetrics;
use super::ratelimit::{RateLimit, RateLimiter};
use super::retry::{Decision, RetryPolicy, RetryState, parse_retry_after};
use crate::fence::Fence;

/// Longest time spent establishing a connection, whatever the request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to build an [`UpstreamClient`] for one Connection.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Provider name used in errors, metrics and logs (`conductorone`, `serval`, ...).
    pub provider: &'static str,
    /// API root; call paths are appended to its path.
    pub base_url: url::Url,
    /// How requests authenticate.
    pub credentials: Credentials,
    /// Token bucket shared by all calls (and token requests) of the Connection.
    pub rate_limit: RateLimit,
    /// Retry schedule of each call.
    pub retry: RetryPolicy,
    /// Timeout of one HTTP attempt, including reading the body.
    pub timeout: Duration,
    /// Send `Content-Type: application/json` on every request, bodiless ones too (for
    /// APIs whose contract asks for it on every request).
    pub json_content_type_always: bool,
    /// Shared metric families.
    pub metrics: Arc<UpstreamMetrics>,
}

impl UpstreamConfig {
    /// A config with default rate limit, retry policy, 30 s timeout and private metrics.
    pub fn new(provider: &'static str, base_url: url::Url, credentials: Credentials) -> Self {
        Self {
            provider,
            base_url,
            credentials,
            rate_limit: RateLimit::default(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
            json_content_type_always: false,
            metrics: Arc::new(UpstreamMetrics::default()),
        }
    }
}

/// A successful (2xx) response.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    /// HTTP status code.
    pub status: u16,
    /// Raw body.
    pub body: Bytes,
}

/// HTTP client of one Connection; cheap to clone and shared by all controllers.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<Inner>,
    /// Refuses every call that is not a read (`accessplane plan`): see [`Self::read_only`].
    read_only: bool,
    /// Lets a write go only while this replica leads: see [`Self::fenced`].
    fence: Fence,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("provider", &self.inner.provider)
            .field("base_url", &self.inner.base_url.as_str())
            .finish_non_exhaustive()
    }
}

struct Inner {
    provider: &'static str,
    base_url: url::Url,
    /// Who the credentials are (a client id, a user name), when they say.
    principal: Option<String>,
    /// One request's time limit (the Connection's `timeoutSeconds`).
    timeout: Duration,
    http: reqwest::Client,
    auth: Auth,
    limiter: Arc<RateLimiter>,
    retry: RetryPolicy,
    metrics: Arc<UpstreamMetrics>,
}

enum Auth {
    Tokens(TokenCache),
    StaticBearer(SecretString),
    Basic {
        username: String,
        api_key: SecretString,
    },
}

/// Why one attempt failed, and whether its request could have reached the server.
struct Failure {
    error: UpstreamError,
    /// False when it failed while obtaining a token, before the request was sent.
    reached_request: bool,
    /// Generation of the bearer token used, for a targeted refresh on 401.
    token_generation: Option<u64>,
}

impl UpstreamClient {
    /// Builds the client; fails on an unusable base URL or a missing rustls crypto
    /// provider (install one process-wide first).
    pub fn new(config: UpstreamConfig) -> Result<Self, UpstreamError> {
        let base_url = config.base_url;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(UpstreamError::Config {
                message: format!("{}: base URL must be http(s)", config.provider),
            });
        }
        // URLs end up in logs; credentials belong in the Secret, not in the URL.
        if !base_url.username().is_empty() || base_url.password().is_some() {
            return Err(UpstreamError::Config {
                message: format!("{}: base URL must not contain credentials", config.provider),
            });
        }
        // reqwest would panic without one; the binary installs it at startup.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            return Err(UpstreamError::Config {
                message: "no rustls crypto provider installed".to_owned(),
            });
        }
        let mut headers = header::HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            header::HeaderValue::from_static("application/json"),
        );
        if config.json_content_type_always {
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(crate::USER_AGENT)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(MAX_CONNECT_TIMEOUT))
            // APIs do not redirect; following one could carry credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamError::Config {
                message: format!("{}: cannot build HTTP client: {e}", config.provider),
            })?;
        let limiter = Arc::new(RateLimiter::new(config.rate_limit));
        let principal = match &config.credentials {
            Credentials::Exchange(exchange) => exchange.principal(),
            Credentials::StaticBearer(_) => None,
            Credentials::Basic { username, .. } => Some(username.clone()),
        };
        let auth = match config.credentials {
            Credentials::Exchange(exchange) => {
                Auth::Tokens(TokenCache::new(exchange).with_hooks(ExchangeHooks {
                    provider: config.provider,
                    limiter: limiter.clone(),
                    metrics: config.metrics.clone(),
                }))
            }
            Credentials::StaticBearer(token) => Auth::StaticBearer(token),
            Credentials::Basic { username, api_key } => Auth::Basic { username, api_key },
        };
        Ok(Self {
            read_only: false,
            fence: Fence::open(),
            inner: Arc::new(Inner {
                provider: config.provider,
                base_url,
                principal,
                timeout: config.timeout,
                http,
                auth,
                limiter,
                retry: config.retry,
                metrics: config.metrics,
            }),
        })
    }

    /// How long one request may take before the client gives up on it.
    pub fn request_timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Which tenant the client reaches: its base URL and, when the credentials say, who
    /// they are (a client id, a user name; never a secret). Upstream ids are unique
    /// within one tenant.
    pub fn tenant(&self) -> String {
        let principal = self.inner.principal.as_deref().unwrap_or_default();
        format!("{} {principal}", self.inner.base_url)
    }

    /// The provider name given in the config.
    pub fn provider(&self) -> &'static str {
        self.inner.provider
    }

    /// Drops the cached token (e.g. after the credentials Secret changed).
    pub fn invalidate_token(&self) {
        if let Auth::Tokens(cache) = &self.inner.auth {
            cache.invalidate();
        }
    }

    /// The same client (tokens, rate limit) refusing every call that is not a read: what
    /// `accessplane plan` uses, so that no write can leave the process whatever the code
    /// above it does. A refused write is a bug and says so loudly (an error log and
    /// [`UpstreamError::WriteRefused`]); token exchanges are not calls and still happen.
    pub fn read_only(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            read_only: true,
            fence: self.fence.clone(),
        }
    }

    /// The same client (tokens, rate limit) sending a write only while `fence` is open,
    /// checked right before each attempt goes out (after any rate-limit wait or retry
    /// backoff): a replica that lost the leader-election lease sends nothing.
    pub fn fenced(&self, fence: &Fence) -> Self {
        Self {
            inner: self.inner.clone(),
            read_only: self.read_only,
            fence: fence.clone(),
        }
    }

    /// Performs `call` with auth, rate limiting and retries; non-2xx becomes an error.
    pub async fn send(&self, call: Call) -> Result<UpstreamResponse, UpstreamError> {
        if self.read_only && !call.reads {
            tracing::error!(
                provider = self.inner.provider,
                operation = call.operation,
                method = %call.method,
                "BUG: a write was attempted through a read-only (plan) client; not sent"
            );
            return Err(UpstreamError::WriteRefused {
                provider: self.inner.provider,
                operation: call.operation,
                method: call.method.to_string(),
            });
        }
        let span = tracing::info_span!(
            "upstream",
            provider = self.inner.provider,
            operation = call.operation,
            method = %call.method,
        );
        self.send_with_retries(&call).instrument(span).await
    }

    /// Like [`UpstreamClient::send`], then decodes the JSON body (empty body = `null`).
    pub async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T, UpstreamError> {
        let operation = call.operation;
        let response = self.send(call).await?;
        let body: &[u8] = if response.body.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &response.body
        };
        serde_json::from_slice(body).map_err(|e| UpstreamError::Decode {
            provider: self.inner.provider,
            operation,
            message: e.to_string(),
        })
    }

    async fn send_with_retries(&self, call: &Call) -> Result<UpstreamResponse, UpstreamError> {
        let inner = &self.inner;
        let url = self.url_for(&call.path);
        let mut retry = RetryState::new(inner.retry);
        let mut attempts = 0;
        let mut replayed_unauthorized = false;
        loop {
            attempts += 1;
            let failure = match self.attempt(call, &url).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            let error = failure.error.redact(&call.redact);
            // Retry-After speaks for the tenant, not for this request: hold back every
            // call of the Connection (other controllers' too) until it has passed.
            if let Some(wait) = error.retry_after() {
                inner.limiter.pause_until(Instant::now() + wait);
            }

            // An expired or revoked token: refresh and replay exactly once.
            if let (Some(401), Some(generation), false) = (
                error.status(),
                failure.token_generation,
                replayed_unauthorized,
            ) {
                replayed_unauthorized = true;
                if let Auth::Tokens(cache) = &inner.auth {
                    cache.reject(generation);
                }
                inner
                    .metrics
                    .observe_retry(inner.provider, call.operation, "401".into());
                tracing::debug!("token rejected, refreshing once");
                continue;
            }
            retry.record_attempt();

            let answer = error.status().is_some_and(|s| call.answers.contains(&s));
            if answer || error.class() != ErrorClass::Retryable {
                return Err(error);
            }
            if call.retry == RetryMode::NonIdempotent
                && failure.reached_request
                && error.may_have_applied()
            {
                tracing::warn!(error = %error, "not retrying a non-idempotent call that may have been applied");
                return Err(error);
            }
            match retry.decide(error.retry_after()) {
                Decision::GiveUp => {
                    return Err(UpstreamError::RetriesExhausted {
                        provider: inner.provider,
                        operation: call.operation,
                        attempts,
                        last: Box::new(error),
                    });
                }
                Decision::RetryAfter(delay) => {
                    let reason = error.status_label();
                    inner
                        .metrics
                        .observe_retry(inner.provider, call.operation, reason.clone());
                    // The upstream's own words say why (throttled, maintenance, …);
                    // error messages never hold credentials (see upstream::error).
                    tracing::info!(
                        attempt = attempts,
                        delay_ms = delay.as_millis() as u64,
                        %reason,
                        %error,
                        "retrying upstream call"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One HTTP attempt: token, rate-limit permit, request, body.
    async fn attempt(&self, call: &Call, url: &url::Url) -> Result<UpstreamResponse, Failure> {
        let inner = &self.inner;
        let mut request = inner.http.request(call.method.clone(), url.clone());
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let mut token_generation = None;
        request = match &inner.auth {
            Auth::Tokens(cache) => {
                let lease = cache.lease(&inner.http).await.map_err(|error| Failure {
                    error,
                    reached_request: false,
                    token_generation: None,
                })?;
                token_generation = Some(lease.generation);
                request.bearer_auth(lease.token.expose_secret())
            }
            Auth::StaticBearer(token) => request.bearer_auth(token.expose_secret()),
            Auth::Basic { username, api_key } => {
                request.basic_auth(username, Some(api_key.expose_secret()))
            }
        };

        let waited = inner.limiter.acquire().await;
        inner
            .metrics
            .observe_rate_limit_wait(inner.provider, waited);
        // The last moment before the request leaves: a frozen-and-woken replica, or one
        // whose renewals failed while it waited, stops here.
        if !call.reads
            && let Err(fenced) = self.fence.check()
        {
            tracing::warn!("{fenced}; not sent");
            return Err(Failure {
                error: UpstreamError::Fenced {
                    provider: inner.provider,
                    operation: call.operation,
                    fenced,
                },
                reached_request: false,
                token_generation,
            });
        }
        let start = Instant::now();
        let result = self.execute(request, call.operation).await;
        let latency = start.elapsed();
        let status = match &result {
            Ok(response) => response.status.to_string().into(),
            Err(error) => error.status_label(),
        };
        tracing::debug!(
            %status,
            latency_ms = latency.as_millis() as u64,
            "upstream attempt"
        );
        inner
            .metrics
            .observe_request(inner.provider, call.operation, status, latency);
        result.map_err(|error| Failure {
            error,
            reached_request: true,
            token_generation,
        })
    }

    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
        operation: &'static str,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let provider = self.inner.provider;
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(provider, operation, &e))?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(provider, operation, &e))?;
        if (200..300).contains(&status) {
            return Ok(UpstreamResponse { status, body });
        }
        let (code, message) = parse_error_body(&body);
        Err(UpstreamError::Api {
            provider,
            operation,
            status,
            code,
            message,
            retry_after,
        })
    }

    fn url_for(&self, path: &str) -> url::Url {
        let mut url = self.inner.base_url.clone();
        if !path.is_empty() {
            let joined = format!(
                "{}/{}",
                url.path().trim_end_matches('/'),
                path.trim_start_matches('/')
            );
            // `set_path` keeps existing %-escapes, so callers' encoding survives.
            url.set_path(&joined);
        }
        url
    }
}

#[cfg(test)]
mod tests;
