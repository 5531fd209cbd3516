//! Random spread of delays, so that objects handled together are not all looked at
//! again at the same instant.

use std::time::Duration;

use rand::Rng;

/// `base` spread by ±`fraction` (0.1: ±10 %).
pub fn jitter(base: Duration, fraction: f64) -> Duration {
    let factor = rand::rng().random_range((1.0 - fraction)..=(1.0 + fraction));
    base.mul_f64(factor)
}
