//! How long an asynchronous upstream (the Instaclustr gateway) takes to show the writes it
//! accepted, learned per Connection from the read-backs themselves. The first read-back
//! of a write is scheduled for when writes have lately been showing, not after a fixed
//! poll: looking earlier costs a read that finds nothing, looking much later delays
//! `Ready`.
//!
//! The estimate follows the evidence with a bias to stay just above the true delay:
//! - a look that finds the write not visible yet proves the delay is longer: the
//!   estimate rises to that look's age plus a step, and the write is looked at again one
//!   step later (a quarter of its age, 0.25–0.5 s while it is young, so that it is seen
//!   within about a second of showing; growing with its age once it is late);
//! - a first look that finds the write visible proves the delay is at most its age: the
//!   estimate drifts a little below it, so that it follows a gateway that got faster
//!   (the occasional look that comes too early then pushes it back up).
//!
//! Looks are jittered by up to 10 % later, so that writes accepted together do not all
//! look at once.
//! In memory only: after a restart the first writes start from the default again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

/// Shortest step between two looks at a write that was not visible yet.
const MIN_STEP: Duration = Duration::from_millis(250);
/// Longest step while a write is young: with the wait for a shared List (a quarter list
/// window), a write is seen within about a second of showing.
const YOUNG_STEP: Duration = Duration::from_millis(500);
/// Age after which a write that still does not show is looked at less and less often.
const LATE: Duration = Duration::from_secs(30);
/// How far each confirming first look pulls the estimate towards (a little below) its age.
const DRIFT: f64 = 0.3;
/// Where below the observed age the drift aims.
const BELOW: f64 = 0.9;

/// Visibility delays by Connection.
pub struct Visibility {
    estimates: Mutex<HashMap<String, Duration>>,
    /// The estimate before anything was observed.
    initial: Duration,
    /// Longest step between looks at a write that is late (`Timing::pending_poll_max`).
    max_step: Duration,
}

impl Visibility {
    pub fn new(initial: Duration, max_step: Duration) -> Self {
        Self {
            estimates: Mutex::default(),
            initial,
            max_step: max_step.max(YOUNG_STEP),
        }
    }

    /// The current estimate for `connection`.
    pub fn estimate(&self, connection: &str) -> Duration {
        let estimates = self.estimates.lock().unwrap();
        estimates.get(connection).copied().unwrap_or(self.initial)
    }

    /// How long after a write was accepted on `connection` to look at it first.
    pub fn first_look(&self, connection: &str) -> Duration {
        jitter(self.estimate(connection))
    }

    /// A look `age` after the write found it not visible yet. Returns the age at which
    /// to look again.
    pub fn not_yet(&self, connection: &str, age: Duration) -> Duration {
        let step = self.step(age);
        let mut estimates = self.estimates.lock().unwrap();
        let estimate = estimates
            .entry(connection.to_string())
            .or_insert(self.initial);
        // Only young writes say how long writes take; a late one is an outlier.
        if age < LATE {
            *estimate = (*estimate).max(age + step);
        }
        age + jitter(step)
    }

    /// A look `age` after the write found it visible; `first`: no earlier look missed it.
    pub fn visible(&self, connection: &str, age: Duration, first: bool) {
        if !first || age >= LATE {
            return;
        }
        let mut estimates = self.estimates.lock().unwrap();
        let estimate = estimates
            .entry(connection.to_string())
            .or_insert(self.initial);
        let aim = age.mul_f64(BELOW).as_secs_f64();
        let now = estimate.as_secs_f64();
        *estimate = Duration::from_secs_f64(now + (aim - now) * DRIFT);
    }

    /// The step after a look at `age` that found nothing.
    fn step(&self, age: Duration) -> Duration {
        if age < LATE {
            (age / 4).clamp(MIN_STEP, YOUNG_STEP)
        } else {
            (age / 2).min(self.max_step)
        }
    }
}

/// Up to 10 % later: spreads looks without making them early.
fn jitter(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(1.0..=1.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn an_early_look_raises_the_estimate_and_looks_again_within_a_second() {
        let v = Visibility::new(secs(1.0), secs(60.0));
        let again = v.not_yet("ns/ic", secs(1.0));
        assert!(again >= secs(1.25) && again <= secs(1.28), "{again:?}");
        assert_eq!(v.estimate("ns/ic"), secs(1.25));
        // Another Connection is not affected.
        assert_eq!(v.estimate("ns/other"), secs(1.0));
        // A young write is never left unlooked-at for more than a second (+ jitter).
        let again = v.not_yet("ns/ic", secs(8.0));
        assert!(again >= secs(8.5) && again <= secs(8.55), "{again:?}");
        assert_eq!(v.estimate("ns/ic"), secs(8.5));
    }

    #[test]
    fn late_writes_are_looked_at_less_often_and_do_not_move_the_estimate() {
        let v = Visibility::new(secs(1.0), secs(60.0));
        let again = v.not_yet("ns/ic", secs(100.0));
        assert!(again >= secs(100.0) + secs(45.0), "{again:?}");
        let again = v.not_yet("ns/ic", secs(400.0));
        assert!(again <= secs(400.0) + secs(66.0), "{again:?}");
        assert_eq!(v.estimate("ns/ic"), secs(1.0));
    }

    #[test]
    fn confirming_first_looks_drift_the_estimate_towards_a_faster_gateway() {
        let v = Visibility::new(secs(3.0), secs(60.0));
        // The gateway now shows writes within 1 s: first looks at ~3 s all find them.
        let mut estimate = v.estimate("ns/ic");
        for _ in 0..60 {
            v.visible("ns/ic", estimate, true);
            let next = v.estimate("ns/ic");
            assert!(next < estimate);
            estimate = next;
            // Until a look comes too early.
            if estimate < secs(1.0) {
                v.not_yet("ns/ic", estimate);
                break;
            }
        }
        let settled = v.estimate("ns/ic");
        assert!(settled >= secs(1.0) && settled < secs(2.0), "{settled:?}");
        // A look that had missed it first says nothing about the delay.
        v.visible("ns/ic", secs(0.1), false);
        assert_eq!(v.estimate("ns/ic"), settled);
    }

    #[test]
    fn first_looks_are_jittered_around_the_estimate() {
        let v = Visibility::new(secs(2.0), secs(60.0));
        let looks: Vec<Duration> = (0..50).map(|_| v.first_look("ns/ic")).collect();
        assert!(looks.iter().all(|l| *l >= secs(2.0) && *l <= secs(2.2)));
        assert!(looks.iter().any(|l| *l != looks[0]));
    }
}
