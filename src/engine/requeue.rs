//! When to look at an object again: resync with jitter when converged, growing
//! backoff while an asynchronous write is confirmed or an error is retried.

use std::time::Duration;

use crate::base::jitter::jitter;
use crate::connections::Recheck;

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
    /// How long after an asynchronous write was accepted to read it back first, until
    /// the upstream's own delay is known (it is then learned per Connection).
    pub first_look: Duration,
    /// How long an accepted write may stay invisible before it is sent again.
    pub pending_grace: Duration,
    /// How long a create whose acceptance was never recorded (the operator stopped
    /// between its create mark and the status write) is waited for by a delete: the
    /// create may not have been sent at all, so a 404 is believed after this long.
    pub unrecorded_create_wait: Duration,
    /// How long one List of a scope answers current reads of that scope.
    pub list_window: Duration,
    /// How long after an object was found converged a pass without a change (the echo
    /// of the operator's own finalizer/annotation writes) skips the upstream; at most
    /// half the object's resync interval.
    pub converged_quiet: Duration,
    /// Resyncs per second per kind; resyncs due beyond it wait for a slot, user changes
    /// never do. 0 means unlimited.
    pub resync_rate: f64,
    /// How often ClusterConnections' `status.scopesInUse` is counted from the caches.
    pub scopes_in_use_every: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(600),
            error_backoff_base: Duration::from_secs(5),
            error_backoff_max: Duration::from_secs(300),
            terminal_retry: Duration::from_secs(900),
            pending_poll_max: Duration::from_secs(60),
            first_look: Duration::from_secs(1),
            pending_grace: Duration::from_secs(600),
            unrecorded_create_wait: Duration::from_secs(60),
            list_window: Duration::from_secs(2),
            resync_rate: 50.0,
            converged_quiet: Duration::from_secs(60),
            scopes_in_use_every: Duration::from_secs(30),
        }
    }
}

impl Timing {
    /// The resync delay for an object: its annotation if valid, else the default, ±10 % jitter
    /// so a fleet created together does not resync together.
    pub fn resync_for(&self, annotation: Option<&str>) -> Duration {
        jitter(self.resync_interval(annotation), 0.1)
    }

    /// The resync interval of an object: its annotation if valid, else the default.
    pub fn resync_interval(&self, annotation: Option<&str>) -> Duration {
        annotation
            .and_then(parse_interval)
            .filter(|d| *d >= MIN_RESYNC_ANNOTATION)
            .unwrap_or(self.resync)
    }

    /// How old a List snapshot may be and still answer resyncs: a wave of resyncs is
    /// spread over time by [`Self::resync_rate`], and one List should serve all of it.
    /// Drift that happens after the List is seen one interval later.
    pub fn resync_snapshot_age(&self) -> Duration {
        self.resync / 2
    }

    /// Delay after the n-th consecutive retryable failure (n ≥ 1), with ±20 % jitter.
    pub fn error_backoff(&self, failures: u32) -> Duration {
        let exp = self
            .error_backoff_base
            .saturating_mul(1 << failures.saturating_sub(1).min(16));
        jitter(exp.min(self.error_backoff_max), 0.2)
    }

    /// How read-backs of accepted writes are timed (see `observation`, `visibility`):
    /// one shared List per quarter list window while many are due.
    pub fn confirming(&self) -> super::observation::Confirming {
        super::observation::Confirming {
            round: self.list_window / 4,
            first_look: self.first_look,
            max_step: self.pending_poll_max,
            grace: self.pending_grace,
        }
    }

    /// Delay before reading back an accepted write, growing with the time already waited:
    /// quick confirmation for fast upstreams, few calls for slow ones.
    pub fn pending_poll(&self, waited: Duration) -> Duration {
        (waited / 2).clamp(Duration::from_secs(2), self.pending_poll_max)
    }
}

/// The part of these knobs the Connection controller uses.
impl From<&Timing> for Recheck {
    fn from(timing: &Timing) -> Self {
        Self {
            resync: timing.resync,
            terminal_retry: timing.terminal_retry,
        }
    }
}

/// Shortest resync interval an annotation may ask for: shorter would hammer the upstream.
const MIN_RESYNC_ANNOTATION: Duration = Duration::from_secs(10);

/// Delay until the next resync wave of a scope: waves come every `interval` at a phase
/// derived from the scope (so scopes do not all resync together), and the delay is at
/// least half an interval (so an object that just converged is not checked at once).
/// Objects of one scope thus resync together and share one List (see `observation`).
pub fn wave_delay(interval: Duration, scope: &str, now_ms: i64) -> Duration {
    let period = (interval.as_millis() as i64).max(1);
    let phase = (fnv1a(scope) % period as u64) as i64;
    let earliest = now_ms + period / 2;
    // The first instant phase + k·period at or after `earliest`.
    let wave = phase + (earliest - phase).div_euclid(period) * period;
    let wave = if wave < earliest { wave + period } else { wave };
    Duration::from_millis((wave - now_ms) as u64)
}

/// A stable hash (the same in every process and release, unlike `DefaultHasher`).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Parses a Go-style duration such as `90s`, `15m` or `1h30m`.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let parsed: kube::core::Duration = text.trim().parse().ok()?;
    Some(Duration::from(parsed))
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
    fn waves_align_a_scope_and_spread_scopes() {
        let interval = Duration::from_secs(600);
        let now = 1_700_000_000_000;
        // Objects of one scope converging at different times resync at the same instant.
        let a = wave_delay(interval, "team-a", now);
        let b = wave_delay(interval, "team-a", now + 7_000);
        assert_eq!(a, b + Duration::from_secs(7));
        assert!(a >= Duration::from_secs(300) && a < Duration::from_secs(900));
        // At its wave, the next one is exactly one interval away.
        let at_wave = now + a.as_millis() as i64;
        assert_eq!(wave_delay(interval, "team-a", at_wave), interval);
        // Other scopes are at other phases.
        let phases: std::collections::BTreeSet<_> = (0..20)
            .map(|i| wave_delay(interval, &format!("team-{i}"), now))
            .collect();
        assert!(phases.len() > 15, "{phases:?}");
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
