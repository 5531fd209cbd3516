//! HTTP core shared by all providers: auth, rate limiting, retries, errors, metrics.

mod auth;
mod call;
mod client;
mod error;
mod metrics;
mod ratelimit;
mod retry;

pub use auth::{
    Credentials, IssuedToken, TOKEN_OPERATION, TokenCache, TokenExchange, oauth_token_request,
};
pub use call::{Call, RetryMode};
pub use client::{UpstreamClient, UpstreamConfig, UpstreamResponse};
pub use error::{ErrorClass, UpstreamError, parse_error_body};
pub use metrics::UpstreamMetrics;
pub use ratelimit::{RateLimit, RateLimiter};
pub use retry::{RetryPolicy, parse_retry_after};
