//! When to look at an object again: resync with jitter when converged, growing
//! backoff while an asynchronous write is confirmed or an error is retried.

use std::time::Duration;

use rand::Rng;

/// Annotation overriding the resync interval of one resource (Go duration syntax, e.g. `30m`).
pub const RESYNC_ANNOTATION: &str = "accessplane.io/resync-interval";

/// Requeue timing knobs, set from the command line.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Resync interval of converged objects.
    pub resync: Duration,
    /// First retry delay after a retryable error; doubles per consecutive failure.
    pub error_backoff_base: Duration,
    /// Longest retry delay after retryable errors.
    pub error_backoff_max: Duration,
    /// Delay before a spec that the upstream refused is tried again unchanged.
    pub terminal_retry: Duration,
    /// Longest delay between read-backs of an accepted asynchronous write.
    pub pending_poll_max: Duration,
    /// How long an accepted write may stay invisible before it is sent again.
    pub pending_grace: Duration,
    /// How long one List of a scope answers the observes of that scope.
    pub list_window: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(600),
            error_backoff_base: Duration::from_secs(5),
            error_backoff_max: Duration::from_secs(300),
            terminal_retry: Duration::from_secs(900),
            pending_poll_max: Duration::from_secs(60),
            pending_grace: Duration::from_secs(600),
            list_window: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// The resync delay for an object: its annotation if valid, else the default, ±10 % jitter
    /// so a fleet created together does not resync together.
    pub fn resync_for(&self, annotation: Option<&str>) -> Duration {
        let base = annotation
            .and_then(parse_interval)
            .filter(|d| *d >= Duration::from_secs(10))
            .unwrap_or(self.resync);
        jitter(base, 0.1)
    }

    /// Delay after the n-th consecutive retryable failure (n ≥ 1), with ±20 % jitter.
    pub fn error_backoff(&self, failures: u32) -> Duration {
        let exp = self
            .error_backoff_base
            .saturating_mul(1 << failures.saturating_sub(1).min(16));
        jitter(exp.min(self.error_backoff_max), 0.2)
    }

    /// Delay before reading back an accepted write, growing with the time already waited:
    /// quick confirmation for fast upstreams, few calls for slow ones.
    pub fn pending_poll(&self, waited: Duration) -> Duration {
        (waited / 2).clamp(Duration::from_secs(2), self.pending_poll_max)
    }
}

/// Parses a Go-style duration such as `90s`, `15m` or `1h30m`.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let parsed: kube::core::Duration = text.trim().parse().ok()?;
    Some(Duration::from(parsed))
}

fn jitter(base: Duration, fraction: f64) -> Duration {
    let factor = rand::rng().random_range((1.0 - fraction)..=(1.0 + fraction));
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_uses_annotation_and_jitters() {
        let t = Timing::default();
        let d = t.resync_for(Some("2m"));
        assert!(
            d >= Duration::from_secs(108) && d <= Duration::from_secs(132),
            "{d:?}"
        );
        let d = t.resync_for(Some("garbage"));
        assert!(
            d >= Duration::from_secs(540) && d <= Duration::from_secs(660),
            "{d:?}"
        );
        // Below 10 s would hammer the upstream: ignored.
        assert!(t.resync_for(Some("1s")) >= Duration::from_secs(540));
    }

    #[test]
    fn error_backoff_grows_and_caps() {
        let t = Timing::default();
        assert!(t.error_backoff(1) <= Duration::from_secs(6));
        assert!(t.error_backoff(3) >= Duration::from_secs(16));
        assert!(t.error_backoff(30) <= Duration::from_secs(360));
    }

    #[test]
    fn pending_poll_grows_with_wait() {
        let t = Timing::default();
        assert_eq!(t.pending_poll(Duration::ZERO), Duration::from_secs(2));
        assert_eq!(
            t.pending_poll(Duration::from_secs(20)),
            Duration::from_secs(10)
        );
        assert_eq!(
            t.pending_poll(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }
}
