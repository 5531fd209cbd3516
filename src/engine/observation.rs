//! List-coalesced observation: when many objects of one scope (a
//! Serval team, a ConductorOne app or connector, a gateway cluster) need observing at
//! about the same time, one paged List answers them instead of one GET each.
//!
//! Three kinds of observe use it, with different rules:
//! - **Resync** of a converged object. Resyncs of a scope are aligned into waves (see
//!   `Engine::resync`), so a whole scope comes due together; the first resync of a wave
//!   lists the scope when the scope has enough members to beat single GETs
//!   (`members ≥ max(2, pages)`), and the snapshot then answers the rest of the wave for
//!   up to `Timing::resync_snapshot_age` — a wave is spread over time by the resync rate.
//! - **Current** reads (start-up of unconverged objects, user edits) accept a snapshot
//!   only within `Timing::list_window`, and list only when at least `max(2, pages)`
//!   current reads of the scope arrived in that window; a lone read is a GET.
//! - **Confirm** reads (read-backs of the operator's own accepted asynchronous writes;
//!   a current read of an object awaiting one is taken for one too: typically the echo of
//!   the write, through a cache that does not show it yet) wait — by requeueing, never
//!   holding a worker — until the write is due to show: the delay the upstream has lately
//!   been showing on this Connection (see `visibility`), then a step at a time while it
//!   does not show. A due write whose scope has other writes due at about the same time is
//!   answered by one List they share, at most one per `Timing::confirm_round` per scope,
//!   which also answers every earlier write it shows; a write due alone is read with a
//!   GET. The engine says what each read-back found ([`Observations::looked`]): the
//!   object may be listed but not updated yet, which only it can tell.
//!
//! A snapshot answers "found, and this is its state" for what it lists. Objects the
//! operator wrote since the List started, or wrote before it but do not appear in it (an
//! asynchronous upstream may list an accepted create late), are not answered from it:
//! resyncs read them with a GET, current reads may ask for a newer List. An object absent
//! from it is reported `Absent` only to current and confirm reads (the List is at most a
//! list window old); the engine trusts that only for deterministic ids, where a wrong
//! "absent" cannot duplicate anything, and confirms it with a GET otherwise (Lists may lag
//! behind creates). Resyncs always confirm a miss with a GET, and the engine reads an
//! object again before correcting drift a resync's snapshot showed (updates complete
//! replace-all sub-objects from the observed state, which must be current).

use std::collections::HashMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod confirm;

use super::visibility::Visibility;
use crate::upstream::UpstreamError;
pub use confirm::Confirming;
use confirm::{Awaited, ConfirmRead};

/// Why an object is observed; decides how old a snapshot may be and when to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Periodic check of an object that was converged at its current generation.
    Resync,
    /// Anything else: the state must be current.
    Current,
    /// Reading back an accepted asynchronous write of the object: current, and it may
    /// wait for the scope's next List (see the module documentation).
    Confirm,
}

/// What a snapshot says about one object.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<O> {
    /// Listed, and not written by the operator since.
    Found(O),
    /// Absent from a List taken within the list window for a current read, and not
    /// written by the operator: trusted only where a wrong "absent" cannot duplicate
    /// anything (see `Engine::observe`); otherwise read it directly.
    Absent,
    /// The snapshot cannot vouch for it (or there is none): read it directly.
    Unknown,
    /// Not for resyncs: the object reads back a write of the operator, and a List of the
    /// scope due after this delay will answer it; look again then (without reading it now).
    Later(Duration),
}

/// One List of a scope.
pub struct Listed<O> {
    pub items: Vec<(String, O)>,
    /// Upstream calls the List took (pages).
    pub pages: usize,
}

struct Snapshot<O> {
    /// When the List started: writes after this instant are not reflected in it.
    started: Instant,
    /// Sorted by id: a scope can hold thousands, and a sorted slice keeps them in about
    /// half the memory of a hash map (no spare buckets), found by binary search.
    items: Box<[(String, O)]>,
}

impl<O> Snapshot<O> {
    fn new(started: Instant, mut items: Vec<(String, O)>) -> Self {
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        items.dedup_by(|a, b| a.0 == b.0);
        Self {
            started,
            items: items.into_boxed_slice(),
        }
    }

    fn get(&self, id: &str) -> Option<&O> {
        let found = self.items.binary_search_by(|(key, _)| key.as_str().cmp(id));
        found.ok().map(|at| &self.items[at].1)
    }
}

struct ScopeState<O> {
    snapshot: Option<Snapshot<O>>,
    /// Objects the operator wrote, and when (pruned at each List to those younger than
    /// the oldest snapshot a resync accepts).
    written: HashMap<IdKey, Instant>,
    /// Objects whose last write the upstream accepted to apply later and that have not
    /// been confirmed yet.
    accepted: HashMap<IdKey, Awaited>,
    /// Objects with a recent current read, and when.
    current_reads: HashMap<IdKey, Instant>,
    /// When the List under way, if any, started.
    listing_since: Option<Instant>,
    /// Pages of the last List (1 until a List has run).
    pages: usize,
}

impl<O> Default for ScopeState<O> {
    fn default() -> Self {
        Self {
            snapshot: None,
            written: HashMap::new(),
            accepted: HashMap::new(),
            current_reads: HashMap::new(),
            listing_since: None,
            pages: 1,
        }
    }
}

impl<O> ScopeState<O> {
    fn drop_snapshot_older_than(&mut self, age: Duration) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.started.elapsed() >= age)
        {
            self.snapshot = None;
        }
    }
}

/// An upstream id in the per-scope bookkeeping: a 64-bit hash instead of a String (the
/// maps hold every object written in the last half resync interval — at 10,000 objects
/// about a MiB as Strings). A collision would at worst read one object directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct IdKey(u64);

impl IdKey {
    fn of(id: &str) -> Self {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        Self(hasher.finish())
    }
}

struct Scope<O> {
    state: Mutex<ScopeState<O>>,
    /// Held while listing, so observes arriving meanwhile wait for that List.
    listing: tokio::sync::Mutex<()>,
}

/// Snapshots by scope key; one per engine (so per kind).
pub struct Observations<O> {
    scopes: Mutex<HashMap<String, Arc<Scope<O>>>>,
    /// When idle scopes were last swept away (see [`Observations::sweep`]).
    swept: Mutex<Instant>,
    /// Oldest snapshot a current read accepts.
    window: Duration,
    /// Oldest snapshot a resync accepts.
    resync_age: Duration,
    /// Shortest interval between two Lists answering a scope's confirmations.
    confirm_round: Duration,
    /// How long an accepted write is awaited at most (`Timing::pending_grace`).
    grace: Duration,
    /// How long accepted writes take to show, per Connection.
    visibility: Visibility,
}

impl<O: Clone> Observations<O> {
    pub fn new(window: Duration, resync_age: Duration, confirm: Confirming) -> Self {
        Self {
            scopes: Mutex::default(),
            swept: Mutex::new(Instant::now()),
            window,
            resync_age: resync_age.max(window),
            confirm_round: confirm.round.min(window),
            grace: confirm.grace,
            visibility: Visibility::new(confirm.first_look, confirm.max_step),
        }
    }

    fn scope(&self, key: &str) -> Arc<Scope<O>> {
        let mut scopes = self.scopes.lock().unwrap();
        let now = Instant::now();
        let mut swept = self.swept.lock().unwrap();
        if now.duration_since(*swept) >= self.resync_age {
            *swept = now;
            self.sweep(&mut scopes);
        }
        drop(swept);
        scopes
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Scope {
                    state: Mutex::default(),
                    listing: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// Frees what no read can use any more: snapshots too old for any read (a scope whose
    /// objects are all gone is never read again, so its last snapshot would stay), the
    /// bookkeeping the next List would prune, and then scopes with nothing left. Scopes
    /// in use by a read are left alone.
    fn sweep(&self, scopes: &mut HashMap<String, Arc<Scope<O>>>) {
        scopes.retain(|_, scope| {
            if Arc::strong_count(scope) > 1 {
                return true;
            }
            let mut state = scope.state.lock().unwrap();
            state.drop_snapshot_older_than(self.resync_age);
            // As at a List: writes too old to matter to the snapshot (or to a List now).
            let since = state
                .snapshot
                .as_ref()
                .map_or_else(Instant::now, |s| s.started);
            let oldest_useful = since.checked_sub(self.resync_age).unwrap_or(since);
            state.written.retain(|_, at| *at >= oldest_useful);
            let (window, grace) = (self.window, self.grace);
            state.accepted.retain(|_, a| a.at.elapsed() < grace);
            state.current_reads.retain(|_, at| at.elapsed() < window);
            let idle = state.snapshot.is_none()
                && state.written.is_empty()
                && state.accepted.is_empty()
                && state.current_reads.is_empty()
                && state.listing_since.is_none();
            !idle
        });
    }

    #[cfg(test)]
    fn scope_count(&self) -> usize {
        self.scopes.lock().unwrap().len()
    }

    /// Object `id` of scope `key` from a snapshot, listing the scope first when the rules
    /// of [`Purpose`] say a List pays off. `members` counts the scope's managed objects.
    pub async fn get<F, Fut>(
        &self,
        key: &str,
        id: &str,
        purpose: Purpose,
        members: impl FnOnce() -> usize,
        list: F,
    ) -> Result<Lookup<O>, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Listed<O>, UpstreamError>>,
    {
        let max_age = match purpose {
            Purpose::Resync => self.resync_age,
            Purpose::Current | Purpose::Confirm => self.window,
        };
        let scope = self.scope(key);
        // A List that started at or after this instant answers the read.
        let fresh_from = match self.before_listing(&scope, key, id, purpose, max_age, members) {
            ControlFlow::Break(lookup) => return Ok(lookup),
            ControlFlow::Continue(fresh_from) => fresh_from,
        };
        let _listing = scope.listing.lock().await;
        {
            // Someone may have listed while this observe waited: use that List.
            let mut state = scope.state.lock().unwrap();
            let current = purpose != Purpose::Resync;
            if let Some(lookup) =
                self.listed_meanwhile(&mut state, key, id, current, max_age, fresh_from)
            {
                return Ok(lookup);
            }
        }
        let started = Instant::now();
        scope.state.lock().unwrap().listing_since = Some(started);
        let listed = list().await;
        let mut state = scope.state.lock().unwrap();
        state.listing_since = None;
        self.keep_snapshot(&mut state, started, listed?);
        if state.accepted.contains_key(&IdKey::of(id)) {
            // A read-back: what this List says of it, or when to look again.
            return Ok(match self.confirm_read(&mut state, key, id) {
                ConfirmRead::Found(item) => Lookup::Found(item),
                ConfirmRead::Wait(wait) => Lookup::Later(wait),
                ConfirmRead::Read | ConfirmRead::List | ConfirmRead::Join(_) => Lookup::Unknown,
            });
        }
        Ok(match answer(&state, id, Duration::MAX) {
            Answer::Found(item) => Lookup::Found(item),
            Answer::Absent if purpose != Purpose::Resync => Lookup::Absent,
            _ => Lookup::Unknown,
        })
    }

    /// Before listing: the answer, when the snapshot (or the read-back's timing) gives
    /// one or a List is not worth it; else the instant from which a List answers.
    fn before_listing(
        &self,
        scope: &Scope<O>,
        key: &str,
        id: &str,
        purpose: Purpose,
        max_age: Duration,
        members: impl FnOnce() -> usize,
    ) -> ControlFlow<Lookup<O>, Instant> {
        let mut fresh_from = Instant::now();
        let mut state = scope.state.lock().unwrap();
        // Too old for any read: free it rather than keep it until the next List.
        state.drop_snapshot_older_than(self.resync_age);
        let awaited = purpose != Purpose::Resync
            && (purpose == Purpose::Confirm || state.accepted.contains_key(&IdKey::of(id)));
        if awaited {
            match self.confirm_read(&mut state, key, id) {
                ConfirmRead::Found(item) => return ControlFlow::Break(Lookup::Found(item)),
                ConfirmRead::Read => return ControlFlow::Break(Lookup::Unknown),
                ConfirmRead::Wait(wait) => return ControlFlow::Break(Lookup::Later(wait)),
                ConfirmRead::List => {}
                ConfirmRead::Join(since) => fresh_from = since,
            }
            return ControlFlow::Continue(fresh_from);
        }
        match answer(&state, id, max_age) {
            Answer::Found(item) => return ControlFlow::Break(Lookup::Found(item)),
            // Absent from a List of the last moments (current reads), or of a whole wave
            // (resyncs: maybe created since; a GET settles it).
            Answer::Absent if purpose == Purpose::Resync => {
                return ControlFlow::Break(Lookup::Unknown);
            }
            Answer::Absent => return ControlFlow::Break(Lookup::Absent),
            // Written since a fresh List: one resync is not worth a new List.
            Answer::Written | Answer::Unlisted if purpose == Purpose::Resync => {
                return ControlFlow::Break(Lookup::Unknown);
            }
            Answer::Written | Answer::Unlisted | Answer::NoSnapshot => {}
        }
        let needed = state.pages.max(2);
        let worth_listing = match purpose {
            Purpose::Resync => members() >= needed,
            // Demand is counted in distinct objects: one object polled twice is no reason
            // to list.
            Purpose::Current | Purpose::Confirm => {
                let reads = &mut state.current_reads;
                if reads.len() > 4 * needed + 64 {
                    reads.retain(|_, at| at.elapsed() < self.window);
                }
                reads.insert(IdKey::of(id), Instant::now());
                let demand = reads
                    .values()
                    .filter(|at| at.elapsed() < self.window)
                    .take(needed)
                    .count();
                demand >= needed
            }
        };
        if worth_listing {
            ControlFlow::Continue(fresh_from)
        } else {
            ControlFlow::Break(Lookup::Unknown)
        }
    }

    /// After waiting for the scope's List lock: the answer of a List someone took
    /// meanwhile (from `fresh_from` on), if it gives one.
    fn listed_meanwhile(
        &self,
        state: &mut ScopeState<O>,
        key: &str,
        id: &str,
        current: bool,
        max_age: Duration,
        fresh_from: Instant,
    ) -> Option<Lookup<O>> {
        if state.accepted.contains_key(&IdKey::of(id)) {
            // A read-back: what that List says of it, or when to look again.
            return match self.confirm_read(state, key, id) {
                ConfirmRead::Found(item) => Some(Lookup::Found(item)),
                ConfirmRead::Wait(wait) => Some(Lookup::Later(wait)),
                ConfirmRead::Read => Some(Lookup::Unknown),
                // No List since its write: take one.
                ConfirmRead::List | ConfirmRead::Join(_) => None,
            };
        }
        let listed_since = state
            .snapshot
            .as_ref()
            .is_some_and(|s| s.started >= fresh_from);
        match answer(state, id, max_age) {
            Answer::Found(item) => Some(Lookup::Found(item)),
            // As on entry: a List that started just before this read is as good as one
            // taken for it.
            Answer::Absent if current => Some(Lookup::Absent),
            Answer::Absent => Some(Lookup::Unknown),
            _ if listed_since => Some(Lookup::Unknown),
            _ => None,
        }
    }

    /// Keeps the List that `started` then as the scope's snapshot, and forgets what it
    /// makes useless.
    fn keep_snapshot(&self, state: &mut ScopeState<O>, started: Instant, listed: Listed<O>) {
        state.pages = listed.pages.max(1);
        state.current_reads.clear();
        let oldest_useful = started.checked_sub(self.resync_age).unwrap_or(started);
        state.written.retain(|_, at| *at >= oldest_useful);
        let grace = self.grace;
        state.accepted.retain(|_, a| a.at.elapsed() < grace);
        state.snapshot = Some(Snapshot::new(started, listed.items));
    }
}

/// What the current snapshot can say about one object.
enum Answer<O> {
    Found(O),
    /// Not in a fresh snapshot, and not written by the operator since it was taken.
    Absent,
    /// Written by the operator after the fresh snapshot was taken.
    Written,
    /// Written by the operator before the fresh snapshot was taken, and absent from it.
    Unlisted,
    /// No fresh snapshot.
    NoSnapshot,
}

fn answer<O: Clone>(state: &ScopeState<O>, id: &str, max_age: Duration) -> Answer<O> {
    let Some(snapshot) = state
        .snapshot
        .as_ref()
        .filter(|s| s.started.elapsed() < max_age)
    else {
        return Answer::NoSnapshot;
    };
    let written = state.written.get(&IdKey::of(id));
    match snapshot.get(id) {
        _ if written.is_some_and(|at| *at >= snapshot.started) => Answer::Written,
        Some(item) => Answer::Found(item.clone()),
        // Written a little before the List yet absent: an asynchronous upstream may not
        // show an accepted create in a List taken just after it; a newer List may.
        None if written.is_some() => Answer::Unlisted,
        None => Answer::Absent,
    }
}

#[cfg(test)]
mod tests;
