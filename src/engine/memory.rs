//! What the engine remembers of each object between passes: one [`Record`] per object,
//! in one map behind one lock. In memory only: after a restart every object is simply
//! checked and tried once more, and the create mark (see the glossary) stands in for
//! what was learned.
//!
//! A pass takes a copy of its object's record when it starts ([`Memory::begin`]) and
//! decides on that copy; what it learns goes back with [`Memory::update`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use k8s_openapi::jiff::Timestamp;

use super::identity::ObjectKey;
use crate::api::envelope::{ManagedStatus, PendingOperation, PendingWrite};

/// One object's bookkeeping.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// Consecutive retryable failures (for the backoff).
    pub retryable_failures: u32,
    /// A terminal error: keep away from the upstream until its time has passed.
    pub terminal: Option<TerminalHold>,
    /// When the object was last found converged: a pass that our own bookkeeping writes
    /// trigger right after (finalizer, annotations) has nothing to check upstream.
    pub confirmed: Option<Confirmed>,
    /// Recheck requests (see `Engine::recheck`), counted: a pass remembers the count it
    /// started with, so a request arriving while it runs outdates its result.
    pub rechecks: u64,
    /// What a pass learned of the upstream twin that the status must record (boxed: most
    /// objects have nothing here, and 10,000 records should stay small).
    pub learned: Option<Box<Learned>>,
    /// The generation a pass first found not Ready, and when: where the time to Ready of
    /// a changed spec starts (a restart starts it again).
    pub converging: Option<(i64, Timestamp)>,
}

/// What a pass learned of an object's upstream twin that its status must record: the id
/// (it created or recovered the object) and an accepted create still to be confirmed.
/// Kept until the cached object's status shows it, so that a failed status write, or a
/// cache that lags behind the write, neither loses it nor makes the next pass act as if
/// it did not know (look the object up again, or send an accepted create once more).
/// After a restart the create mark and the natural-key lookup (or, for deterministic
/// ids, the upstream's 409 to a repeated create) stand in for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    pub id: String,
    pub pending_create: Option<PendingWrite>,
}

impl Learned {
    /// What `status` says it learned: its id, and an accepted create if one is pending.
    pub fn from_status(status: &ManagedStatus) -> Option<Self> {
        Some(Self {
            id: status.id.clone()?,
            pending_create: status
                .pending
                .clone()
                .filter(|p| p.operation == PendingOperation::Create),
        })
    }

    /// Whether `status` records all of it.
    fn shown_in(&self, status: Option<&ManagedStatus>) -> bool {
        status.is_some_and(|s| s.id.as_ref() == Some(&self.id) && s.pending == self.pending_create)
    }
}

/// An object found converged: at which generation, when, and after how many rechecks.
#[derive(Clone, Copy, Debug)]
pub struct Confirmed {
    pub generation: i64,
    pub at: Timestamp,
    pub rechecks: u64,
}

/// A terminal error at `generation`: no upstream call before `until`. `deleting` says
/// whether it happened while deleting: a hold from before the deletion must not delay it
/// (deleting may need no upstream call at all), and vice versa.
#[derive(Clone, Copy, Debug)]
pub struct TerminalHold {
    pub generation: i64,
    pub deleting: bool,
    pub until: Timestamp,
}

/// Every object's [`Record`].
#[derive(Default)]
pub struct Memory {
    records: Mutex<HashMap<ObjectKey, Record>>,
}

impl Memory {
    /// A copy of the record of `key` for a pass that starts now. What was learned and
    /// that `status` (the cached copy's) shows by now is forgotten.
    pub fn begin(&self, key: ObjectKey, status: Option<&ManagedStatus>) -> Record {
        let mut records = self.records.lock().unwrap();
        let Some(record) = records.get_mut(&key) else {
            return Record::default();
        };
        if record
            .learned
            .as_ref()
            .is_some_and(|learned| learned.shown_in(status))
        {
            record.learned = None;
        }
        record.clone()
    }

    /// Changes the record of `key` (made when missing) and returns what `change` returns.
    pub fn update<R>(&self, key: ObjectKey, change: impl FnOnce(&mut Record) -> R) -> R {
        change(self.records.lock().unwrap().entry(key).or_default())
    }

    /// Forgets `key` (its object is gone).
    pub fn forget(&self, key: ObjectKey) {
        self.records.lock().unwrap().remove(&key);
    }

    /// Keeps only the records of `live` objects.
    pub fn retain(&self, live: &HashSet<ObjectKey>) {
        self.records
            .lock()
            .unwrap()
            .retain(|key, _| live.contains(key));
    }

    /// How many objects have a record.
    pub fn tracked(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// The recheck count of `key` now.
    pub fn rechecks(&self, key: ObjectKey) -> u64 {
        let records = self.records.lock().unwrap();
        records.get(&key).map(|r| r.rechecks).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn key() -> ObjectKey {
        ObjectKey::of(&ObjectMeta {
            name: Some("a".into()),
            ..ObjectMeta::default()
        })
    }

    #[test]
    fn what_was_learned_is_kept_until_the_status_shows_it() {
        let memory = Memory::default();
        let learned = Learned {
            id: "x1".into(),
            pending_create: None,
        };
        memory.update(key(), |r| r.learned = Some(Box::new(learned.clone())));
        let stale = ManagedStatus::default();
        assert_eq!(
            memory.begin(key(), Some(&stale)).learned.as_deref(),
            Some(&learned)
        );
        let shown = ManagedStatus {
            id: Some("x1".into()),
            ..ManagedStatus::default()
        };
        assert!(memory.begin(key(), Some(&shown)).learned.is_none());
        assert!(memory.begin(key(), None).learned.is_none(), "forgotten");
    }

    #[test]
    fn one_record_per_object_and_pruned_in_one_place() {
        let memory = Memory::default();
        memory.update(key(), |r| r.rechecks += 1);
        memory.update(key(), |r| r.retryable_failures += 1);
        assert_eq!(memory.tracked(), 1);
        assert_eq!(memory.rechecks(key()), 1);
        memory.retain(&HashSet::new());
        assert_eq!(memory.tracked(), 0);
    }
}
