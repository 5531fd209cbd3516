//! Credentials, OAuth token exchange and the single-flight token cache.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::time::Instant;

use super::error::{UpstreamError, parse_structured_error, transport_error};
use super::metrics::UpstreamMetrics;
use super::ratelimit::RateLimiter;
use super::retry::parse_retry_after;

/// Operation label of token requests in errors and metrics.
pub const TOKEN_OPERATION: &str = "token";
/// Lifetime assumed when a token response has no `expires_in`.
const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(300);
/// Refresh this long before the token expires, so in-flight calls do not see it lapse.
const REFRESH_MARGIN: Duration = Duration::from_secs(10);
/// Shortest time a token is cached, so a tiny `expires_in` cannot cause a refresh storm.
const MIN_CACHE: Duration = Duration::from_secs(1);

/// An access token issued by a token endpoint.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The bearer token.
    pub access_token: SecretString,
    /// Lifetime from the moment it was issued.
    pub expires_in: Duration,
}

/// A provider-specific way of obtaining an access token.
pub trait TokenExchange: Send + Sync + 'static {
    /// Requests a fresh token using `http` (the Connection's client).
    fn exchange<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<IssuedToken, UpstreamError>>;

    /// Who the credentials are (a client id), to tell tenants apart; never a secret.
    fn principal(&self) -> Option<String> {
        None
    }
}

/// How requests of one Connection authenticate.
#[derive(Clone)]
pub enum Credentials {
    /// Bearer tokens obtained (and refreshed) through a token exchange.
    Exchange(Arc<dyn TokenExchange>),
    /// A pre-issued bearer token, sent as is.
    StaticBearer(SecretString),
    /// HTTP Basic on every request.
    Basic {
        /// Account user name.
        username: String,
        /// API key used as the password.
        api_key: SecretString,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exchange(_) => f.write_str("Credentials::Exchange"),
            Self::StaticBearer(_) => f.write_str("Credentials::StaticBearer([REDACTED])"),
            Self::Basic { username, .. } => f
                .debug_struct("Credentials::Basic")
                .field("username", username)
                .field("api_key", &"[REDACTED]")
                .finish(),
        }
    }
}

/// POSTs an OAuth2 form to `url` and parses `{"access_token","token_type","expires_in"}`.
///
/// `basic` adds HTTP Basic client authentication. 400/401/403 become
/// [`UpstreamError::Authentication`]. Neither the form nor headers ever reach an error.
pub async fn oauth_token_request(
    http: &reqwest::Client,
    provider: &'static str,
    url: &url::Url,
    form: &[(&str, &str)],
    basic: Option<(&str, &SecretString)>,
) -> Result<IssuedToken, UpstreamError> {
    let mut request = http.post(url.clone()).form(form);
    if let Some((user, secret)) = basic {
        request = request.basic_auth(user, Some(secret.expose_secret()));
    }
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(provider, TOKEN_OPERATION, &e))?;
    let status = response.status().as_u16();
    let retry_after = parse_retry_after(response.headers());
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(provider, TOKEN_OPERATION, &e))?;

    if !(200..300).contains(&status) {
        // Only structured messages: a raw body might echo the submitted form.
        let (code, message) = parse_structured_error(&body)
            .unwrap_or_else(|| (None, format!("token endpoint answered HTTP {status}")));
        return Err(match status {
            400 | 401 | 403 => UpstreamError::Authentication {
                provider,
                message: match code {
                    Some(code) if code != message => format!("HTTP {status} {code}: {message}"),
                    _ => format!("HTTP {status}: {message}"),
                },
            },
            _ => UpstreamError::Api {
                provider,
                operation: TOKEN_OPERATION,
                status,
                code,
                message,
                retry_after,
            },
        });
    }
    parse_token_response(provider, &body)
}

/// Parses a token response without ever quoting it (it contains the token).
fn parse_token_response(provider: &'static str, body: &[u8]) -> Result<IssuedToken, UpstreamError> {
    let decode = |message: &str| UpstreamError::Decode {
        provider,
        operation: TOKEN_OPERATION,
        message: message.to_owned(),
    };
    let value: Value =
        serde_json::from_slice(body).map_err(|_| decode("token response is not JSON"))?;
    let access_token = value
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| decode("token response has no access_token"))?;
    let expires_in = match value.get("expires_in") {
        None | Some(Value::Null) => Some(DEFAULT_EXPIRES_IN),
        Some(Value::Number(n)) => n.as_f64().and_then(seconds),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok().and_then(seconds),
        Some(_) => None,
    }
    .ok_or_else(|| decode("token response has an invalid expires_in"))?;
    Ok(IssuedToken {
        access_token: SecretString::from(access_token),
        expires_in,
    })
}

fn seconds(value: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(value).ok()
}

/// A bearer token handed out by the cache, with the generation it belongs to.
pub(crate) struct Lease {
    pub(crate) token: SecretString,
    pub(crate) generation: u64,
}

struct CachedToken {
    token: SecretString,
    refresh_at: Instant,
    generation: u64,
}

/// What a refresh reports to: the Connection's rate limiter and metrics.
pub(crate) struct ExchangeHooks {
    pub(crate) provider: &'static str,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) metrics: Arc<UpstreamMetrics>,
}

/// Caches one credential's token until shortly before expiry; refreshes single-flight.
pub struct TokenCache {
    exchange: Arc<dyn TokenExchange>,
    current: Mutex<Option<CachedToken>>,
    // Held across an exchange so concurrent callers wait for its result instead of
    // starting their own.
    refresh: tokio::sync::Mutex<()>,
    generations: AtomicU64,
    hooks: Option<ExchangeHooks>,
}

impl TokenCache {
    /// Creates an empty cache around `exchange`.
    pub fn new(exchange: Arc<dyn TokenExchange>) -> Self {
        Self {
            exchange,
            current: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
            hooks: None,
        }
    }

    /// Routes exchanges through a rate limiter and records them in metrics.
    pub(crate) fn with_hooks(mut self, hooks: ExchangeHooks) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Returns a valid bearer token, exchanging for a new one if needed.
    pub async fn bearer(&self, http: &reqwest::Client) -> Result<SecretString, UpstreamError> {
        self.lease(http).await.map(|lease| lease.token)
    }

    /// Forgets the cached token so the next call exchanges a new one.
    pub fn invalidate(&self) {
        *self.lock_current() = None;
    }

    /// Forgets the token of `generation` only: a 401 on an old token must not throw
    /// away one that a concurrent caller has just refreshed.
    pub(crate) fn reject(&self, generation: u64) {
        let mut current = self.lock_current();
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            *current = None;
        }
    }

    pub(crate) async fn lease(&self, http: &reqwest::Client) -> Result<Lease, UpstreamError> {
        if let Some(lease) = self.fresh() {
            return Ok(lease);
        }
        let _refreshing = self.refresh.lock().await;
        // Someone else may have refreshed while we waited for the lock.
        if let Some(lease) = self.fresh() {
            return Ok(lease);
        }
        let issued = self.exchange_observed(http).await?;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let lifetime = issued
            .expires_in
            .saturating_sub(REFRESH_MARGIN)
            .max(MIN_CACHE);
        *self.lock_current() = Some(CachedToken {
            token: issued.access_token.clone(),
            refresh_at: Instant::now() + lifetime,
            generation,
        });
        Ok(Lease {
            token: issued.access_token,
            generation,
        })
    }

    async fn exchange_observed(
        &self,
        http: &reqwest::Client,
    ) -> Result<IssuedToken, UpstreamError> {
        let Some(hooks) = &self.hooks else {
            return self.exchange.exchange(http).await;
        };
        let waited = hooks.limiter.acquire().await;
        hooks
            .metrics
            .observe_rate_limit_wait(hooks.provider, waited);
        let start = std::time::Instant::now();
        let result = self.exchange.exchange(http).await;
        let status = match &result {
            Ok(_) => "200".into(),
            Err(e) => e.status_label(),
        };
        hooks
            .metrics
            .observe_request(hooks.provider, TOKEN_OPERATION, status, start.elapsed());
        tracing::debug!(
            provider = hooks.provider,
            ok = result.is_ok(),
            latency_ms = start.elapsed().as_millis() as u64,
            "token exchange"
        );
        result
    }

    fn fresh(&self) -> Option<Lease> {
        let current = self.lock_current();
        let cached = current.as_ref()?;
        (Instant::now() < cached.refresh_at).then(|| Lease {
            token: cached.token.clone(),
            generation: cached.generation,
        })
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<CachedToken>> {
        // The guarded data is always consistent, so a poisoned lock is still usable.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    struct CountingExchange {
        calls: AtomicU32,
        expires_in: Duration,
    }

    impl TokenExchange for CountingExchange {
        fn exchange<'a>(
            &'a self,
            _http: &'a reqwest::Client,
        ) -> BoxFuture<'a, Result<IssuedToken, UpstreamError>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                // Long enough for all concurrent callers to pile up behind the lock.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(IssuedToken {
                    access_token: SecretString::from(format!("token-{n}")),
                    expires_in: self.expires_in,
                })
            })
        }
    }

    fn http() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    fn cache(expires_in: Duration) -> (Arc<CountingExchange>, Arc<TokenCache>) {
        let exchange = Arc::new(CountingExchange {
            calls: AtomicU32::new(0),
            expires_in,
        });
        (exchange.clone(), Arc::new(TokenCache::new(exchange)))
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_exchange() {
        let (exchange, cache) = cache(Duration::from_secs(3600));
        let http = http();
        let tokens = futures::future::join_all((0..20).map(|_| cache.bearer(&http))).await;
        assert_eq!(exchange.calls.load(Ordering::SeqCst), 1);
        for token in tokens {
            assert_eq!(token.unwrap().expose_secret(), "token-1");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_ten_seconds_before_expiry() {
        let (exchange, cache) = cache(Duration::from_secs(60));
        let http = http();
        cache.bearer(&http).await.unwrap();
        tokio::time::advance(Duration::from_secs(49)).await;
        assert_eq!(
            cache.bearer(&http).await.unwrap().expose_secret(),
            "token-1"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            cache.bearer(&http).await.unwrap().expose_secret(),
            "token-2"
        );
        assert_eq!(exchange.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn tiny_lifetimes_are_cached_for_a_second() {
        let (exchange, cache) = cache(Duration::from_secs(3));
        let http = http();
        cache.bearer(&http).await.unwrap();
        cache.bearer(&http).await.unwrap();
        assert_eq!(exchange.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalidate_and_reject() {
        let (exchange, cache) = cache(Duration::from_secs(3600));
        let http = http();
        let first = cache.lease(&http).await.unwrap();
        cache.invalidate();
        let second = cache.lease(&http).await.unwrap();
        assert_eq!(second.token.expose_secret(), "token-2");
        // A stale generation does not evict the newer token.
        cache.reject(first.generation);
        assert_eq!(
            cache.bearer(&http).await.unwrap().expose_secret(),
            "token-2"
        );
        cache.reject(second.generation);
        assert_eq!(
            cache.bearer(&http).await.unwrap().expose_secret(),
            "token-3"
        );
        assert_eq!(exchange.calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn parses_token_responses() {
        let t = parse_token_response(
            "p",
            br#"{"access_token":"a","token_type":"Bearer","expires_in":600}"#,
        )
        .unwrap();
        assert_eq!(t.expires_in, Duration::from_secs(600));
        let t = parse_token_response("p", br#"{"access_token":"a","expires_in":"1800"}"#).unwrap();
        assert_eq!(t.expires_in, Duration::from_secs(1800));
        let t = parse_token_response("p", br#"{"access_token":"a"}"#).unwrap();
        assert_eq!(t.expires_in, DEFAULT_EXPIRES_IN);
        let err = parse_token_response("p", br#"{"access_token":"SENTINEL","expires_in":"x"}"#)
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("SENTINEL"));
        assert!(parse_token_response("p", br#"{"token_type":"Bearer"}"#).is_err());
    }

    #[test]
    fn debug_never_prints_secrets() {
        let creds = [
            Credentials::StaticBearer("SENTINEL".into()),
            Credentials::Basic {
                username: "u".into(),
                api_key: "SENTINEL".into(),
            },
        ];
        for c in creds {
            assert!(!format!("{c:?}").contains("SENTINEL"));
        }
        let token = IssuedToken {
            access_token: "SENTINEL".into(),
            expires_in: Duration::from_secs(1),
        };
        assert!(!format!("{token:?}").contains("SENTINEL"));
    }
}
