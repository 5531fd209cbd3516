//! Fair scheduling: periodic resyncs run at a bounded rate of their
//! own, so a user's change is picked up promptly even while thousands of resyncs are due.
//!
//! A resync that comes due takes the next free slot of a per-kind schedule (virtual
//! scheduling, as in GCRA: one slot every `1/rate`, with one second of burst). When its
//! slot is in the future, the pass returns at once and the object is requeued for that
//! slot — it does not hold a reconcile worker while it waits, so workers stay free for
//! changes, which never take a slot. This is a queue discipline rather than a limiter
//! (a limiter would make every waiting resync retry); upstream calls themselves are
//! still bounded by each Connection's rate limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::identity::ObjectKey;

/// How far ahead of its slot a resync may run: a burst of about one second.
const BURST: Duration = Duration::from_secs(1);

pub struct ResyncSlots {
    /// Time between slots; `None`: unlimited.
    spacing: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The next free slot.
    next: Option<Instant>,
    /// Slots handed out to resyncs that were requeued for them, by object.
    reserved: HashMap<ObjectKey, Instant>,
}

impl ResyncSlots {
    /// `rate` resyncs per second; 0 (or less) for unlimited.
    pub fn new(rate: f64) -> Self {
        Self {
            spacing: (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate)),
            state: Mutex::default(),
        }
    }

    /// `None`: resync `object` now. `Some(wait)`: its slot is `wait` away; requeue it then.
    pub fn reserve(&self, object: ObjectKey) -> Option<Duration> {
        let spacing = self.spacing?;
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        if let Some(slot) = state.reserved.get(&object).copied() {
            if slot <= now + spacing {
                state.reserved.remove(&object);
                return None;
            }
            return Some(slot - now);
        }
        let earliest = now.checked_sub(BURST).unwrap_or(now);
        let slot = state.next.map_or(earliest, |next| next.max(earliest));
        state.next = Some(slot + spacing);
        if slot <= now {
            return None;
        }
        state.reserved.insert(object, slot);
        Some(slot - now)
    }

    /// Keeps only the slots of objects `keep` says are still there.
    pub fn retain(&self, keep: impl Fn(&ObjectKey) -> bool) {
        self.state
            .lock()
            .unwrap()
            .reserved
            .retain(|key, _| keep(key));
    }

    /// Drops `object`'s slot (it is being reconciled for a change, or is gone).
    pub fn forget(&self, object: ObjectKey) {
        self.state.lock().unwrap().reserved.remove(&object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn key(uid: impl Into<String>) -> ObjectKey {
        ObjectKey::of(&ObjectMeta {
            uid: Some(uid.into()),
            ..ObjectMeta::default()
        })
    }

    #[test]
    fn a_wave_is_spread_at_the_rate_and_slots_are_kept() {
        let slots = ResyncSlots::new(10.0);
        // About one second of burst runs at once, the rest get slots 100 ms apart.
        let waits: Vec<Option<Duration>> = (0..30)
            .map(|i| slots.reserve(key(format!("uid-{i}"))))
            .collect();
        let immediate = waits.iter().filter(|w| w.is_none()).count();
        assert!((10..=11).contains(&immediate), "{immediate}");
        let last = waits[29].unwrap();
        assert!(
            last > Duration::from_millis(1800) && last <= Duration::from_secs(2),
            "{last:?}"
        );
        // Asking again before the slot keeps the same slot (no queue jumping, no drift).
        let again = slots.reserve(key("uid-29")).unwrap();
        assert!(again <= last && again > last - Duration::from_millis(50));
        // A change drops the slot; the object's next resync queues anew.
        slots.forget(key("uid-29"));
        assert!(slots.reserve(key("uid-29")).unwrap() > last);
    }

    #[test]
    fn unlimited_never_defers() {
        let slots = ResyncSlots::new(0.0);
        assert!((0..1000).all(|i| slots.reserve(key(i.to_string())).is_none()));
    }
}
