//! List-coalesced observation (design §2, Scale): when many objects of one scope (a
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::visibility::Visibility;
use crate::upstream::UpstreamError;

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

/// An accepted write awaiting its read-back.
#[derive(Clone, Copy, Debug)]
struct Awaited {
    /// When the upstream accepted it.
    at: Instant,
    /// When it is due to be looked at (again).
    next_look: Instant,
    /// An earlier look did not find it applied.
    missed: bool,
}

struct Scope<O> {
    state: Mutex<ScopeState<O>>,
    /// Held while listing, so observes arriving meanwhile wait for that List.
    listing: tokio::sync::Mutex<()>,
}

/// What a confirm read does.
enum ConfirmRead<O> {
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
        let current = purpose != Purpose::Resync;
        let scope = self.scope(key);
        let asked = Instant::now();
        // A List that started at or after this instant answers the read.
        let mut fresh_from = asked;
        let worth_listing = {
            let mut state = scope.state.lock().unwrap();
            // Too old for any read: free it rather than keep it until the next List.
            state.drop_snapshot_older_than(self.resync_age);
            let awaited = purpose != Purpose::Resync
                && (purpose == Purpose::Confirm || state.accepted.contains_key(&IdKey::of(id)));
            if awaited {
                match self.confirm_read(&mut state, key, id) {
                    ConfirmRead::Found(item) => return Ok(Lookup::Found(item)),
                    ConfirmRead::Read => return Ok(Lookup::Unknown),
                    ConfirmRead::Wait(wait) => return Ok(Lookup::Later(wait)),
                    ConfirmRead::List => true,
                    ConfirmRead::Join(since) => {
                        fresh_from = since;
                        true
                    }
                }
            } else {
                let answered = answer(&state, id, max_age);
                match answered {
                    Answer::Found(item) => return Ok(Lookup::Found(item)),
                    // Absent from a List of the last moments (current reads), or of a
                    // whole wave (resyncs: maybe created since; a GET settles it).
                    Answer::Absent => {
                        return Ok(if current {
                            Lookup::Absent
                        } else {
                            Lookup::Unknown
                        });
                    }
                    // Written since a fresh List: one resync is not worth a new List.
                    Answer::Written | Answer::Unlisted if purpose == Purpose::Resync => {
                        return Ok(Lookup::Unknown);
                    }
                    Answer::Written | Answer::Unlisted | Answer::NoSnapshot => {}
                }
                let needed = state.pages.max(2);
                match purpose {
                    Purpose::Resync => members() >= needed,
                    // Demand is counted in distinct objects: one object polled twice is
                    // no reason to list.
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
                }
            }
        };
        if !worth_listing {
            return Ok(Lookup::Unknown);
        }
        let _listing = scope.listing.lock().await;
        {
            // Someone may have listed while this observe waited: use that List.
            let mut state = scope.state.lock().unwrap();
            if state.accepted.contains_key(&IdKey::of(id)) {
                // A read-back: what that List says of it, or when to look again.
                match self.confirm_read(&mut state, key, id) {
                    ConfirmRead::Found(item) => return Ok(Lookup::Found(item)),
                    ConfirmRead::Wait(wait) => return Ok(Lookup::Later(wait)),
                    ConfirmRead::Read => return Ok(Lookup::Unknown),
                    // No List since its write: take one.
                    ConfirmRead::List | ConfirmRead::Join(_) => {}
                }
            }
            let listed_since = state
                .snapshot
                .as_ref()
                .is_some_and(|s| s.started >= fresh_from);
            match answer(&state, id, max_age) {
                _ if state.accepted.contains_key(&IdKey::of(id)) => {}
                Answer::Found(item) => return Ok(Lookup::Found(item)),
                // As on entry: a List that started just before this read is as good as one
                // taken for it.
                Answer::Absent if current => return Ok(Lookup::Absent),
                Answer::Absent => return Ok(Lookup::Unknown),
                _ if listed_since => return Ok(Lookup::Unknown),
                _ => {}
            }
        }
        let started = Instant::now();
        scope.state.lock().unwrap().listing_since = Some(started);
        let listed = list().await;
        let mut state = scope.state.lock().unwrap();
        state.listing_since = None;
        let listed = listed?;
        state.pages = listed.pages.max(1);
        state.current_reads.clear();
        let oldest_useful = started.checked_sub(self.resync_age).unwrap_or(started);
        state.written.retain(|_, at| *at >= oldest_useful);
        let grace = self.grace;
        state.accepted.retain(|_, a| a.at.elapsed() < grace);
        state.snapshot = Some(Snapshot::new(started, listed.items));
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
            Answer::Absent if current => Lookup::Absent,
            _ => Lookup::Unknown,
        })
    }

    /// A read-back of object `id` of scope `key`: found in a List taken after its write;
    /// not due yet (come back then); or due, and then read alone, or listed with the
    /// scope's other due writes (at most one List per round).
    fn confirm_read(&self, state: &mut ScopeState<O>, key: &str, id: &str) -> ConfirmRead<O> {
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
fn connection_of(key: &str) -> &str {
    let mut slashes = key.match_indices('/').map(|(at, _)| at);
    let _namespace_end = slashes.next();
    match slashes.next() {
        Some(end) => &key[..end],
        None => key,
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
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    async fn counting_list(lists: Arc<AtomicU32>) -> Result<Listed<u32>, UpstreamError> {
        lists.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(Listed {
            items: (0..50).map(|i| (format!("id-{i}"), i)).collect(),
            pages: 1,
        })
    }

    /// Observations with a list window, a resync age and read-backs first looked at
    /// after `first_look`, in rounds of 50 ms.
    fn observations_with(
        window: Duration,
        resync_age: Duration,
        first_look: Duration,
    ) -> Observations<u32> {
        let confirming = Confirming {
            round: Duration::from_millis(50),
            first_look,
            max_step: Duration::from_secs(60),
            grace: Duration::from_secs(600),
        };
        Observations::new(window, resync_age, confirming)
    }

    fn observations() -> Observations<u32> {
        observations_with(
            Duration::from_secs(2),
            Duration::from_secs(300),
            Duration::from_millis(50),
        )
    }

    /// One lookup of `id` in scope "team-a", listing with `counting_list`.
    async fn look(
        observations: &Observations<u32>,
        lists: &Arc<AtomicU32>,
        id: &str,
        purpose: Purpose,
        members: usize,
    ) -> Lookup<u32> {
        look_in(observations, lists, "team-a", id, purpose, members).await
    }

    async fn look_in(
        observations: &Observations<u32>,
        lists: &Arc<AtomicU32>,
        scope: &str,
        id: &str,
        purpose: Purpose,
        members: usize,
    ) -> Lookup<u32> {
        observations
            .get(
                scope,
                id,
                purpose,
                || members,
                || counting_list(lists.clone()),
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_resync_wave_shares_one_list() {
        let observations = Arc::new(observations());
        let lists = Arc::new(AtomicU32::new(0));
        let observes = (0..50).map(|i| {
            let (observations, lists) = (observations.clone(), lists.clone());
            async move {
                observations
                    .get(
                        "team-a",
                        &format!("id-{i}"),
                        Purpose::Resync,
                        || 50,
                        || counting_list(lists),
                    )
                    .await
                    .unwrap()
            }
        });
        let found = futures::future::join_all(observes).await;
        assert!(found.iter().all(|f| matches!(f, Lookup::Found(_))));
        assert_eq!(lists.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn snapshots_answer_by_id_in_any_list_order_and_are_freed_once_too_old() {
        let observations = observations_with(
            Duration::from_millis(20),
            Duration::from_millis(40),
            Duration::from_millis(10),
        );
        let list = || async {
            Ok(Listed {
                // Unsorted, with one id listed twice (pages shifting under a List).
                items: ["c", "a", "b", "a"]
                    .iter()
                    .enumerate()
                    .map(|(i, id)| (id.to_string(), i as u32))
                    .collect(),
                pages: 1,
            })
        };
        let get = |id: &'static str| observations.get("s", id, Purpose::Resync, || 3, list);
        assert_eq!(get("b").await.unwrap(), Lookup::Found(2));
        assert_eq!(get("c").await.unwrap(), Lookup::Found(0));
        assert!(matches!(get("a").await.unwrap(), Lookup::Found(1 | 3)));
        assert_eq!(
            get("d").await.unwrap(),
            Lookup::Unknown,
            "a miss is confirmed"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        // A lone member does not list; the expired snapshot is dropped, not kept.
        let lone = observations.get("s", "b", Purpose::Resync, || 1, list);
        assert_eq!(lone.await.unwrap(), Lookup::Unknown);
        let scope = observations.scope("s");
        assert!(scope.state.lock().unwrap().snapshot.is_none());
    }

    /// A scope that is never read again (its objects are gone) does not keep its last
    /// snapshot: idle scopes are swept away once too old, while a scope still being
    /// written is kept.
    #[tokio::test]
    async fn scopes_nobody_reads_any_more_are_freed() {
        let observations = observations_with(
            Duration::from_millis(20),
            Duration::from_millis(300),
            Duration::from_millis(10),
        );
        let lists = Arc::new(AtomicU32::new(0));
        for scope in ["gone-1", "gone-2", "busy"] {
            let lookup = look_in(&observations, &lists, scope, "id-1", Purpose::Resync, 3);
            assert_eq!(lookup.await, Lookup::Found(1));
        }
        assert_eq!(observations.scope_count(), 3);
        tokio::time::sleep(Duration::from_millis(320)).await;
        observations.wrote("busy", "id-1", true);
        // Any read sweeps; only the scope read and the one being written remain.
        let lookup = look(&observations, &lists, "id-1", Purpose::Current, 0).await;
        assert_eq!(lookup, Lookup::Unknown);
        assert_eq!(observations.scope_count(), 2);
        assert!(observations.scopes.lock().unwrap().contains_key("busy"));
    }

    #[tokio::test]
    async fn a_lone_object_or_a_lone_read_is_not_listed() {
        let observations = observations();
        let lists = Arc::new(AtomicU32::new(0));
        let lookup = look(&observations, &lists, "id-1", Purpose::Resync, 1).await;
        assert_eq!(lookup, Lookup::Unknown);
        let lookup = look(&observations, &lists, "id-1", Purpose::Current, 50).await;
        assert_eq!(lookup, Lookup::Unknown);
        assert_eq!(lists.load(Ordering::SeqCst), 0);
        // The same object again is no demand.
        let lookup = look(&observations, &lists, "id-1", Purpose::Current, 50).await;
        assert_eq!(lookup, Lookup::Unknown);
        // A second object in the window lists: from then on the snapshot answers.
        let lookup = look(&observations, &lists, "id-2", Purpose::Current, 50).await;
        assert_eq!(lookup, Lookup::Found(2));
        assert_eq!(lists.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn own_writes_and_absent_objects_are_read_directly() {
        let observations = observations();
        let lists = Arc::new(AtomicU32::new(0));
        let get = |id: &'static str| {
            let lists = lists.clone();
            let observations = &observations;
            async move {
                observations
                    .get(
                        "team-a",
                        id,
                        Purpose::Resync,
                        || 50,
                        || counting_list(lists),
                    )
                    .await
                    .unwrap()
            }
        };
        assert_eq!(get("id-1").await, Lookup::Found(1));
        observations.wrote("team-a", "id-1", false);
        assert_eq!(get("id-1").await, Lookup::Unknown);
        assert_eq!(get("id-2").await, Lookup::Found(2));
        // Current reads of several written objects list again (see the confirmation
        // tests below for read-backs of accepted writes).
        observations.wrote("team-a", "id-2", false);
        let current = |id: &'static str| {
            let lists = lists.clone();
            let observations = &observations;
            async move {
                observations
                    .get(
                        "team-a",
                        id,
                        Purpose::Current,
                        || 50,
                        || counting_list(lists),
                    )
                    .await
                    .unwrap()
            }
        };
        assert_eq!(current("id-1").await, Lookup::Unknown);
        assert_eq!(current("id-2").await, Lookup::Found(2));
        assert_eq!(lists.load(Ordering::SeqCst), 2);
        assert_eq!(current("id-1").await, Lookup::Found(1));
        assert_eq!(get("id-999").await, Lookup::Unknown);
        assert_eq!(lists.load(Ordering::SeqCst), 2);
        // Another scope lists on its own.
        observations
            .get(
                "team-b",
                "id-1",
                Purpose::Resync,
                || 50,
                || counting_list(lists.clone()),
            )
            .await
            .unwrap();
        assert_eq!(lists.load(Ordering::SeqCst), 3);
    }

    /// A List of ids 0–49 without `missing`.
    async fn list_without(
        lists: Arc<AtomicU32>,
        missing: &'static str,
    ) -> Result<Listed<u32>, UpstreamError> {
        let mut listed = counting_list(lists).await?;
        listed.items.retain(|(id, _)| id != missing);
        Ok(listed)
    }

    async fn confirm(
        observations: &Observations<u32>,
        lists: &Arc<AtomicU32>,
        scope: &str,
        id: &str,
        missing: &'static str,
    ) -> Lookup<u32> {
        observations
            .get(
                scope,
                id,
                Purpose::Confirm,
                || 0,
                || list_without(lists.clone(), missing),
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_write_is_read_back_only_once_it_is_due_to_show() {
        let observations = observations_with(
            Duration::from_secs(5),
            Duration::from_secs(300),
            Duration::from_millis(300),
        );
        let lists = Arc::new(AtomicU32::new(0));
        observations.wrote("ns/ic/gw", "id-1", true);
        let Lookup::Later(wait) = confirm(&observations, &lists, "ns/ic/gw", "id-1", "").await
        else {
            panic!("not due yet")
        };
        assert!(wait > Duration::from_millis(250) && wait <= Duration::from_millis(330));
        // Its echo (a current read moments later) waits too.
        let echo = look_in(
            &observations,
            &lists,
            "ns/ic/gw",
            "id-1",
            Purpose::Current,
            0,
        );
        assert!(matches!(echo.await, Lookup::Later(_)));
        assert_eq!(lists.load(Ordering::SeqCst), 0);
        let due = observations.next_look("ns/ic/gw", "id-1").unwrap();
        assert!(due <= wait);

        // Due, and alone in its scope: read with a GET.
        tokio::time::sleep(wait).await;
        let lookup = confirm(&observations, &lists, "ns/ic/gw", "id-1", "").await;
        assert_eq!(lookup, Lookup::Unknown);
        // The GET found it applied: it is no longer awaited, and reads are plain again.
        observations.looked("ns/ic/gw", "id-1", true);
        assert_eq!(observations.next_look("ns/ic/gw", "id-1"), None);
        // A read-back the engine asks for without a write of this process (a restart):
        // awaited from its age.
        observations.awaiting("ns/ic/gw", "id-2", Duration::from_secs(10));
        assert_eq!(
            observations.next_look("ns/ic/gw", "id-2"),
            Some(Duration::ZERO)
        );
    }

    #[tokio::test]
    async fn due_writes_of_a_scope_share_one_list_per_round() {
        let observations = observations_with(
            Duration::from_secs(5),
            Duration::from_secs(300),
            Duration::from_millis(100),
        );
        let lists = Arc::new(AtomicU32::new(0));
        for i in 0..5 {
            observations.wrote("ns/ic/gw", &format!("id-{i}"), true);
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
        let ids: Vec<String> = (0..5).map(|i| format!("id-{i}")).collect();
        let found = futures::future::join_all(
            ids.iter()
                .map(|id| confirm(&observations, &lists, "ns/ic/gw", id, "")),
        )
        .await;
        assert_eq!(
            found,
            (0..5).map(Lookup::Found).collect::<Vec<_>>(),
            "one List answers the writes due together"
        );
        assert_eq!(lists.load(Ordering::SeqCst), 1);

        // Writes made after that List need a newer one.
        observations.wrote("ns/ic/gw", "id-5", true);
        observations.wrote("ns/ic/gw", "id-6", true);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            confirm(&observations, &lists, "ns/ic/gw", "id-5", "").await,
            Lookup::Found(5)
        );
        assert_eq!(lists.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_due_write_a_list_does_not_show_is_looked_at_a_step_later() {
        let observations = observations_with(
            Duration::from_secs(5),
            Duration::from_secs(300),
            Duration::from_millis(100),
        );
        let lists = Arc::new(AtomicU32::new(0));
        observations.wrote("ns/ic/gw", "id-1", true);
        observations.wrote("ns/ic/gw", "id-2", true);
        tokio::time::sleep(Duration::from_millis(120)).await;
        // The List shows id-2 but not id-1 yet.
        let lookup = confirm(&observations, &lists, "ns/ic/gw", "id-1", "id-1").await;
        let Lookup::Later(wait) = lookup else {
            panic!("{lookup:?}")
        };
        // Looked at again one step (at least 250 ms) later; the Connection's estimate
        // rose to the age of the miss plus that step.
        assert!(wait >= Duration::from_millis(200), "{wait:?}");
        let estimate = observations.visibility.estimate("ns/ic");
        assert!(estimate >= Duration::from_millis(350), "{estimate:?}");
        assert_eq!(
            confirm(&observations, &lists, "ns/ic/gw", "id-2", "id-1").await,
            Lookup::Found(2)
        );
        assert_eq!(lists.load(Ordering::SeqCst), 1);
        // The next write of that Connection (another scope too) is first looked at later.
        observations.wrote("ns/ic/other", "id-3", true);
        let first = observations.next_look("ns/ic/other", "id-3").unwrap();
        assert!(first >= Duration::from_millis(340), "{first:?}");
    }

    #[test]
    fn visibility_is_learned_per_connection() {
        assert_eq!(connection_of("ns/ic/gw-1"), "ns/ic");
        assert_eq!(connection_of("ns/ic"), "ns/ic");
    }

    #[tokio::test]
    async fn a_scope_bigger_than_its_due_objects_is_not_listed() {
        let observations = observations();
        let lists = Arc::new(AtomicU32::new(0));
        let big = |lists: Arc<AtomicU32>| async move {
            lists.fetch_add(1, Ordering::SeqCst);
            Ok(Listed {
                items: vec![("id-1".to_string(), 1)],
                pages: 40,
            })
        };
        observations
            .get(
                "app",
                "id-1",
                Purpose::Resync,
                || 100,
                || big(lists.clone()),
            )
            .await
            .unwrap();
        assert_eq!(lists.load(Ordering::SeqCst), 1);
        // Once the List is known to take 40 pages, 10 members are cheaper with GETs.
        observations.scope("app").state.lock().unwrap().snapshot = None;
        let lookup = observations
            .get("app", "id-1", Purpose::Resync, || 10, || big(lists.clone()))
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Unknown);
        assert_eq!(lists.load(Ordering::SeqCst), 1);
    }
}
