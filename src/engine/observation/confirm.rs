//! Read-backs of the operator's own accepted asynchronous writes (confirm reads): when
//! each is due, and whether one List of the scope answers several (see the module
//! documentation of [`super`]).

use std::time::{Duration, Instant};

use super::{IdKey, Observations, ScopeState};

/// An accepted write awaiting its read-back.
#[derive(Clone, Copy, Debug)]
pub(super) struct Awaited {
    /// When the upstream accepted it.
    pub(super) at: Instant,
    /// When it is due to be looked at (again).
    next_look: Instant,
    /// An earlier look did not find it applied.
    missed: bool,
}

/// What a confirm read does.
pub(super) enum ConfirmRead<O> {
    /// A List taken after the write shows the object.
    Found(O),
    /// Read the object alone (a GET).
    Read,
    /// List now (or use a List someone takes meanwhile).
    List,
    /// Use the List under way, which started at this instant.
    Join(Instant),
    /// Not due yet, or waiting for the scope's next shared List: come back after this.
    Wait(Duration),
}

/// A List due within this margin is taken now (timers are not exact).
const DUE_SLACK: Duration = Duration::from_millis(10);
impl<O: Clone> Observations<O> {
    /// A read-back of object `id` of scope `key`: found in a List taken after its write;
    /// not due yet (come back then); or due, and then read alone, or listed with the
    /// scope's other due writes (at most one List per round).
    pub(super) fn confirm_read(
        &self,
        state: &mut ScopeState<O>,
        key: &str,
        id: &str,
    ) -> ConfirmRead<O> {
        let now = Instant::now();
        // A read-back the engine asked for that no write of this process announced (after
        // a restart): awaited from now on.
        let mut awaited = *state
            .accepted
            .entry(IdKey::of(id))
            .or_insert_with(|| Awaited {
                at: now,
                next_look: now,
                missed: false,
            });
        if let Some(snapshot) = state
            .snapshot
            .as_ref()
            .filter(|s| s.started >= awaited.at && s.started.elapsed() < self.window)
        {
            if let Some(item) = snapshot.get(id) {
                return ConfirmRead::Found(item.clone());
            }
            // Not shown by a List taken when it was due: not visible yet.
            if snapshot.started + DUE_SLACK >= awaited.next_look {
                let age = snapshot.started - awaited.at;
                let again = self.visibility.not_yet(connection_of(key), age);
                awaited.missed = true;
                awaited.next_look = awaited.at + again;
                state.accepted.insert(IdKey::of(id), awaited);
            }
        }
        if awaited.next_look > now + DUE_SLACK {
            return ConfirmRead::Wait(awaited.next_look - now);
        }
        if let Some(since) = state.listing_since
            && since >= awaited.at
        {
            return ConfirmRead::Join(since);
        }
        let round = self.confirm_round;
        let others_due = state
            .accepted
            .iter()
            .any(|(other, a)| *other != IdKey::of(id) && a.next_look <= now + round);
        if !others_due {
            return ConfirmRead::Read;
        }
        let last_list = state.snapshot.as_ref().map(|s| s.started);
        match last_list {
            Some(last) if last + round > now + DUE_SLACK => ConfirmRead::Wait(last + round - now),
            _ => ConfirmRead::List,
        }
    }

    /// Records a write to object `id` of scope `key`: snapshots taken before it no
    /// longer answer for that object. `accepted`: the upstream accepted it to apply later,
    /// so it is to be read back (confirmed) once it is due to show.
    pub fn wrote(&self, key: &str, id: &str, accepted: bool) {
        let scope = self.scope(key);
        let mut state = scope.state.lock().unwrap();
        let now = Instant::now();
        state.written.insert(IdKey::of(id), now);
        if accepted {
            let first_look = self.visibility.first_look(connection_of(key));
            let awaited = Awaited {
                at: now,
                next_look: now + first_look,
                missed: false,
            };
            state.accepted.insert(IdKey::of(id), awaited);
        } else {
            state.accepted.remove(&IdKey::of(id));
        }
    }

    /// A read-back the engine is about to make of a write accepted `age` ago that this
    /// process did not announce with [`Observations::wrote`] (it was made before a
    /// restart): it is awaited like one.
    pub fn awaiting(&self, key: &str, id: &str, age: Duration) {
        let scope = self.scope(key);
        let mut state = scope.state.lock().unwrap();
        let now = Instant::now();
        state.accepted.entry(IdKey::of(id)).or_insert_with(|| {
            let at = now.checked_sub(age).unwrap_or(now);
            let first_look = self.visibility.first_look(connection_of(key));
            Awaited {
                at,
                next_look: (at + first_look).max(now),
                missed: false,
            }
        });
    }

    /// What a read-back of `id` found: the accepted write applied (`visible`), or not yet
    /// (then it is looked at again a step later). Only the engine can tell: the object
    /// may be listed, or read, with its old content.
    pub fn looked(&self, key: &str, id: &str, visible: bool) {
        let scope = self.scope(key);
        let mut state = scope.state.lock().unwrap();
        let Some(mut awaited) = state.accepted.get(&IdKey::of(id)).copied() else {
            return;
        };
        let age = awaited.at.elapsed();
        let connection = connection_of(key);
        if visible {
            self.visibility.visible(connection, age, !awaited.missed);
            state.accepted.remove(&IdKey::of(id));
        } else if awaited.next_look <= Instant::now() + DUE_SLACK {
            // Looked at when due (not a passing echo): the write does not show yet.
            awaited.missed = true;
            awaited.next_look = awaited.at + self.visibility.not_yet(connection, age);
            state.accepted.insert(IdKey::of(id), awaited);
        }
    }

    /// How long until an awaited write of `id` is due to be looked at, if one is awaited.
    pub fn next_look(&self, key: &str, id: &str) -> Option<Duration> {
        let scope = self.scope(key);
        let state = scope.state.lock().unwrap();
        let awaited = state.accepted.get(&IdKey::of(id))?;
        Some(awaited.next_look.saturating_duration_since(Instant::now()))
    }
}

/// Confirmation timing (from `Timing`).
#[derive(Clone, Copy, Debug)]
pub struct Confirming {
    /// Shortest interval between two Lists answering a scope's confirmations.
    pub round: Duration,
    /// The first look's delay before anything was observed.
    pub first_look: Duration,
    /// Longest step between looks at a write that is late.
    pub max_step: Duration,
    /// How long an accepted write is awaited at most.
    pub grace: Duration,
}

/// The Connection part of a scope key (`namespace/connection/scope`): visibility delays
/// are learned per Connection.
pub(super) fn connection_of(key: &str) -> &str {
    let mut slashes = key.match_indices('/').map(|(at, _)| at);
    let _namespace_end = slashes.next();
    match slashes.next() {
        Some(end) => &key[..end],
        None => key,
    }
}
