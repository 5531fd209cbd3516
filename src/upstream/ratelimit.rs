//! Token-bucket rate limiting per Connection, shared by every kind using it.

use std::num::NonZeroU32;
use std::sync::Mutex;
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

/// An async token bucket built from a [`RateLimit`], which the upstream can also pause.
#[derive(Debug)]
pub struct RateLimiter {
    inner: DefaultDirectRateLimiter,
    /// No permit before this instant: the upstream asked (Retry-After) the whole
    /// Connection to wait, not just the request it answered.
    paused_until: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// Creates a full bucket.
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.requests_per_second).allow_burst(limit.burst);
        Self {
            inner: DefaultDirectRateLimiter::direct(quota),
            paused_until: Mutex::new(None),
        }
    }

    /// Hands out no permit before `until`; a later pause extends it, an earlier one
    /// does not shorten it.
    pub fn pause_until(&self, until: Instant) {
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
    }

    /// The end of the pause in force, if any.
    pub(super) fn paused(&self) -> Option<Instant> {
        let paused = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        paused.filter(|until| *until > Instant::now())
    }

    /// Waits for one permit (and the end of any pause) and returns how long that took.
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(until) = self.paused() {
                tokio::time::sleep_until(until.into()).await;
            }
            self.inner.until_ready().await;
            // A pause may have begun while this caller waited for its permit.
            if self.paused().is_none() {
                return start.elapsed();
            }
        }
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

    #[tokio::test]
    async fn a_pause_holds_back_every_caller_until_it_ends() {
        let limiter = std::sync::Arc::new(limiter(1000, 1000));
        let start = Instant::now();
        limiter.pause_until(start + Duration::from_millis(300));
        // An earlier pause does not shorten the one in force.
        limiter.pause_until(start + Duration::from_millis(100));
        let callers: Vec<_> = (0..3)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        for caller in callers {
            let at = caller.await.unwrap();
            assert!(at - start >= Duration::from_millis(300), "{:?}", at - start);
        }
        // Once it is over, permits are immediate again.
        assert!(limiter.acquire().await < Duration::from_millis(100));
    }
}
