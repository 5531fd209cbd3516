//! Token-bucket rate limiting per Connection, shared by every kind using it.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota};

/// Rate limit settings: sustained requests per second and burst size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate.
    pub requests_per_second: NonZeroU32,
    /// Requests allowed at once after an idle period.
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    /// Conservative: no upstream publishes limits, and some are shared per account.
    fn default() -> Self {
        Self {
            requests_per_second: NonZeroU32::new(5).expect("non-zero"),
            burst: NonZeroU32::new(10).expect("non-zero"),
        }
    }
}

/// An async token bucket built from a [`RateLimit`].
#[derive(Debug)]
pub struct RateLimiter {
    inner: DefaultDirectRateLimiter,
}

impl RateLimiter {
    /// Creates a full bucket.
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.requests_per_second).allow_burst(limit.burst);
        Self {
            inner: DefaultDirectRateLimiter::direct(quota),
        }
    }

    /// Waits for one permit and returns how long that took.
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        self.inner.until_ready().await;
        start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimit {
            requests_per_second: NonZeroU32::new(rps).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        })
    }

    #[tokio::test]
    async fn burst_is_immediate() {
        let limiter = limiter(1, 5);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn requests_beyond_burst_wait_for_refill() {
        // 20 rps, burst 2: 6 requests need 4 refills of 50ms each = 200ms.
        let limiter = limiter(20, 2);
        let start = Instant::now();
        let mut waited = Duration::ZERO;
        for _ in 0..6 {
            waited += limiter.acquire().await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(180), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        assert!(waited >= Duration::from_millis(180), "{waited:?}");
    }
}
