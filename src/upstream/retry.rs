//! Retry policy: exponential backoff with jitter, bounded by attempts and a sleep budget,
//! overridden by the server's `Retry-After` / `Retry-After-Ms`.

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// How often and how long one call may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (a 401 refresh replay is extra).
    pub max_attempts: u32,
    /// First backoff delay.
    pub initial: Duration,
    /// Cap of the exponential growth (jitter adds up to 100% on top).
    pub max_delay: Duration,
    /// Total time one call may spend sleeping between attempts; beyond it the error
    /// goes back to the controller's requeue.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    /// The official Serval clients' schedule: 0.5 s · 2^n capped at 8 s.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            budget: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The computed (server-agnostic) delays before each retry.
    pub fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Tracks one call's retries against a [`RetryPolicy`].
pub(crate) struct RetryState {
    policy: RetryPolicy,
    backoff: Box<dyn Iterator<Item = Duration> + Send>,
    attempts: u32,
    slept: Duration,
}

/// What to do after a retryable failure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Sleep this long, then try again.
    RetryAfter(Duration),
    /// Out of attempts or budget.
    GiveUp,
}

impl RetryState {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            backoff: Box::new(policy.backoff()),
            attempts: 0,
            slept: Duration::ZERO,
        }
    }

    /// Records one attempt that counts against `max_attempts`.
    pub(crate) fn record_attempt(&mut self) {
        self.attempts += 1;
    }

    /// Decides after a retryable failure; `server_delay` comes from Retry-After headers.
    pub(crate) fn decide(&mut self, server_delay: Option<Duration>) -> Decision {
        if self.attempts >= self.policy.max_attempts {
            return Decision::GiveUp;
        }
        // The server's wish wins: never retry earlier than it asked.
        let delay = match server_delay {
            Some(d) => d,
            None => self.backoff.next().unwrap_or(self.policy.max_delay),
        };
        if self.slept + delay > self.policy.budget {
            return Decision::GiveUp;
        }
        self.slept += delay;
        Decision::RetryAfter(delay)
    }
}

/// Reads `Retry-After-Ms`, else `Retry-After` (delta seconds or HTTP-date).
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    let millis = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok());
    if let Some(d) = millis.and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok()) {
        return Some(d);
    }
    let value = text(RETRY_AFTER.as_str())?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    // A date in the past means "now".
    Some(
        date.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn parses_seconds_ms_and_dates() {
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after-ms", "250"), ("retry-after", "3")])),
            Some(Duration::from_millis(250))
        );
        let in_ten = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(10));
        let parsed = parse_retry_after(&headers(&[("retry-after", &in_ten)])).unwrap();
        assert!(parsed > Duration::from_secs(8) && parsed <= Duration::from_secs(10));
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(10));
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", &past)])),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "soon")])),
            None
        );
        assert_eq!(parse_retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn backoff_grows_with_jitter_within_bounds() {
        let policy = RetryPolicy::default();
        let delays: Vec<_> = policy.backoff().take(6).collect();
        for (n, d) in delays.iter().enumerate() {
            let base = (policy.initial * 2u32.pow(n as u32)).min(policy.max_delay);
            assert!(
                *d >= base && *d <= base * 2,
                "retry {n}: {d:?} vs base {base:?}"
            );
        }
    }

    #[test]
    fn stops_after_max_attempts() {
        let mut state = RetryState::new(RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        });
        state.record_attempt();
        assert!(matches!(state.decide(None), Decision::RetryAfter(_)));
        state.record_attempt();
        assert_eq!(state.decide(None), Decision::GiveUp);
    }

    #[test]
    fn server_delay_overrides_and_respects_budget() {
        let mut state = RetryState::new(RetryPolicy {
            max_attempts: 10,
            budget: Duration::from_secs(5),
            ..RetryPolicy::default()
        });
        state.record_attempt();
        assert_eq!(
            state.decide(Some(Duration::from_secs(4))),
            Decision::RetryAfter(Duration::from_secs(4))
        );
        state.record_attempt();
        // 4s slept, 2s more would exceed the 5s budget.
        assert_eq!(state.decide(Some(Duration::from_secs(2))), Decision::GiveUp);
    }
}
