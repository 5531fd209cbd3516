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
//! - **Confirm** reads (read-backs of the operator's own accepted asynchronous writes)
//!   are current reads that need a List newer than their object's write. While the
//!   scope is being written (a create burst), such a List taken at once would answer
//!   only the writes made so far, and the next confirmation would need another one; so
//!   the confirmations of a scope instead wait — by requeueing, never holding a worker —
//!   for one List taken at a shared instant (`Lookup::Later`), at most
//!   `Timing::confirm_list_delay` away, which confirms every write made before it. The
//!   demand that makes this worth a List also counts the scope's recently accepted
//!   writes (each is a confirmation to come). A lone write is still confirmed with one
//!   GET, and once the scope's writes have stopped a confirmation lists at once. A
//!   current read of an object whose write was accepted moments ago is taken for a
//!   confirmation too: it is typically the echo of that write, through a cache that does
//!   not show it yet.
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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    written: HashMap<String, Instant>,
    /// Objects whose last write the upstream accepted to apply later, and when.
    accepted: HashMap<String, Instant>,
    /// When the upstream accepted writes to the scope within the last list window,
    /// oldest first: each is a confirmation to come.
    recent_writes: VecDeque<Instant>,
    /// Objects with a recent current read, and when.
    current_reads: HashMap<String, Instant>,
    /// When the List that waiting confirmations were told to come back for is due.
    due: Option<Instant>,
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
            recent_writes: VecDeque::new(),
            current_reads: HashMap::new(),
            due: None,
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

    /// Forgets writes older than `window`; returns how many remain.
    fn recent_writes(&mut self, window: Duration) -> usize {
        while self
            .recent_writes
            .front()
            .is_some_and(|at| at.elapsed() >= window)
        {
            self.recent_writes.pop_front();
        }
        self.recent_writes.len()
    }
}

struct Scope<O> {
    state: Mutex<ScopeState<O>>,
    /// Held while listing, so observes arriving meanwhile wait for that List.
    listing: tokio::sync::Mutex<()>,
}

/// What a confirm read that the snapshot cannot answer does.
enum Plan {
    /// Read the object alone (a GET).
    Read,
    /// List now (or use a List someone takes meanwhile).
    List,
    /// Use the List under way, which started at this instant.
    Join(Instant),
    /// Come back for the List due after this delay.
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
    /// Longest a confirm read waits for the scope's next List.
    confirm_delay: Duration,
}

impl<O: Clone> Observations<O> {
    pub fn new(window: Duration, resync_age: Duration, confirm_delay: Duration) -> Self {
        Self {
            scopes: Mutex::default(),
            swept: Mutex::new(Instant::now()),
            window,
            resync_age: resync_age.max(window),
            confirm_delay: confirm_delay.min(window),
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
            let window = self.window;
            state.accepted.retain(|_, at| at.elapsed() < window);
            state.current_reads.retain(|_, at| at.elapsed() < window);
            let idle = state.snapshot.is_none()
                && state.written.is_empty()
                && state.accepted.is_empty()
                && state.current_reads.is_empty()
                && state.recent_writes(window) == 0
                && state.due.is_none()
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
            let answered = answer(&state, id, max_age);
            let unlisted = matches!(answered, Answer::Unlisted);
            match answered {
                Answer::Found(item) => return Ok(Lookup::Found(item)),
                // Absent from a List of the last moments (current reads), or of a whole
                // wave (resyncs: maybe created since; a GET settles it).
                Answer::Absent => {
                    return Ok(if current {
                        Lookup::Absent
                    } else {
                        Lookup::Unknown
                    });
                }
                // Written since a fresh List: one resync is not worth a new List, but
                // current reads of many written objects (accepted writes being
                // confirmed) may be.
                Answer::Written | Answer::Unlisted if purpose == Purpose::Resync => {
                    return Ok(Lookup::Unknown);
                }
                Answer::Written | Answer::Unlisted | Answer::NoSnapshot => {}
            }
            let needed = state.pages.max(2);
            match purpose {
                Purpose::Resync => members() >= needed,
                // Demand is counted in distinct objects: one object polled twice is no reason to list.
                Purpose::Current | Purpose::Confirm => {
                    let reads = &mut state.current_reads;
                    if reads.len() > 4 * needed + 64 {
                        reads.retain(|_, at| at.elapsed() < self.window);
                    }
                    reads.insert(id.to_string(), Instant::now());
                    let demand = reads
                        .values()
                        .filter(|at| at.elapsed() < self.window)
                        .take(needed)
                        .count();
                    let written = state.written.get(id).copied();
                    // A current read of an object whose write the upstream accepted moments
                    // ago reads that write back too (typically the echo of it, seen through
                    // a cache that does not show the write yet).
                    let confirm = purpose == Purpose::Confirm
                        || state
                            .accepted
                            .get(id)
                            .is_some_and(|at| at.elapsed() < self.confirm_delay);
                    // Confirmations of writes the last List came too early for (those it
                    // does not show although it started after them) go as current reads.
                    if !confirm || unlisted {
                        demand >= needed
                    } else {
                        match self.plan_confirm(&mut state, written, demand, needed) {
                            Plan::Read => false,
                            Plan::List => true,
                            Plan::Join(since) => {
                                fresh_from = since;
                                true
                            }
                            Plan::Wait(wait) => return Ok(Lookup::Later(wait)),
                        }
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
            let state = scope.state.lock().unwrap();
            let listed_since = state
                .snapshot
                .as_ref()
                .is_some_and(|s| s.started >= fresh_from);
            match answer(&state, id, max_age) {
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
        {
            let mut state = scope.state.lock().unwrap();
            // This List answers every confirmation that was waiting for one.
            state.due = None;
            state.listing_since = Some(started);
        }
        let listed = list().await;
        let mut state = scope.state.lock().unwrap();
        state.listing_since = None;
        let listed = listed?;
        state.pages = listed.pages.max(1);
        state.current_reads.clear();
        let oldest_useful = started.checked_sub(self.resync_age).unwrap_or(started);
        state.written.retain(|_, at| *at >= oldest_useful);
        state.accepted.retain(|_, at| at.elapsed() < self.window);
        state.snapshot = Some(Snapshot::new(started, listed.items));
        Ok(match answer(&state, id, Duration::MAX) {
            Answer::Found(item) => Lookup::Found(item),
            Answer::Absent if current => Lookup::Absent,
            _ => Lookup::Unknown,
        })
    }

    /// A confirm read of an object written at `written` that no snapshot answers yet:
    /// read it alone when there is no demand for a List; wait for the List under way
    /// when it started after that write; otherwise come back for the scope's next List —
    /// scheduled now while the scope is being written, so that it confirms the writes
    /// still to come too — or list now (the List is due, or the writes have stopped).
    fn plan_confirm(
        &self,
        state: &mut ScopeState<O>,
        written: Option<Instant>,
        reads: usize,
        needed: usize,
    ) -> Plan {
        if reads.max(state.recent_writes(self.window)) < needed {
            return Plan::Read;
        }
        if let Some(since) = state.listing_since
            && written.is_some_and(|at| at <= since)
        {
            return Plan::Join(since);
        }
        let now = Instant::now();
        match state.due {
            Some(due) if due > now + DUE_SLACK => Plan::Wait(due - now),
            Some(_) => Plan::List,
            None => {
                let writing = state
                    .recent_writes
                    .back()
                    .is_some_and(|at| at.elapsed() < self.confirm_delay);
                if writing {
                    state.due = Some(now + self.confirm_delay);
                    Plan::Wait(self.confirm_delay)
                } else {
                    Plan::List
                }
            }
        }
    }

    /// Records a write to object `id` of scope `key`: snapshots taken before it no
    /// longer answer for that object. `accepted`: the upstream accepted it to apply later,
    /// so it is to be read back (confirmed).
    pub fn wrote(&self, key: &str, id: &str, accepted: bool) {
        let scope = self.scope(key);
        let mut state = scope.state.lock().unwrap();
        let now = Instant::now();
        state.written.insert(id.to_string(), now);
        if accepted {
            state.accepted.insert(id.to_string(), now);
            state.recent_writes(self.window);
            state.recent_writes.push_back(now);
        } else {
            state.accepted.remove(id);
        }
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
    let written = state.written.get(id);
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

    fn observations() -> Observations<u32> {
        Observations::new(
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
        let observations: Observations<u32> = Observations::new(
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
        let observations: Observations<u32> = Observations::new(
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
        // Current reads of several written objects list again (confirming accepted
        // writes), once the writes are over (see the confirmation tests below for reads
        // while a scope is being written).
        observations.wrote("team-a", "id-2", true);
        tokio::time::sleep(Duration::from_millis(60)).await;
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

    /// A list window of 400 ms: confirmations wait at most 200 ms for a List.
    /// A short confirmation delay, but a list window that a starved machine cannot
    /// outrun between a test's writes and its lookups.
    fn short_observations() -> Observations<u32> {
        Observations::new(
            Duration::from_secs(5),
            Duration::from_secs(300),
            Duration::from_millis(200),
        )
    }

    #[tokio::test]
    async fn confirmations_of_a_write_burst_share_one_list_taken_after_it() {
        let observations = short_observations();
        let lists = Arc::new(AtomicU32::new(0));
        // Writes and their read-backs interleave, as in a create burst.
        let mut waits = vec![];
        for i in 0..5 {
            let id = format!("id-{i}");
            observations.wrote("team-a", &id, true);
            match look(&observations, &lists, &id, Purpose::Confirm, 0).await {
                Lookup::Later(wait) => waits.push(wait),
                // The first read-back, before a second write shows demand, reads alone.
                Lookup::Unknown if i == 0 => {}
                other => panic!("id-{i}: {other:?}"),
            }
        }
        assert_eq!(waits.len(), 4);
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(200)));
        // The later ones wait for the same List: their waits end at the same instant.
        assert!(waits.windows(2).all(|w| w[1] <= w[0]), "{waits:?}");
        // An echo of a write (a current read moments after it) waits for it too.
        assert!(matches!(
            look(&observations, &lists, "id-4", Purpose::Current, 0).await,
            Lookup::Later(_)
        ));
        assert_eq!(lists.load(Ordering::SeqCst), 0);

        tokio::time::sleep(waits[0]).await;
        let ids: Vec<String> = (0..5).map(|i| format!("id-{i}")).collect();
        let found = futures::future::join_all(
            ids.iter()
                .map(|id| look(&observations, &lists, id, Purpose::Confirm, 0)),
        )
        .await;
        assert_eq!(
            found,
            (0..5).map(Lookup::Found).collect::<Vec<_>>(),
            "one List confirms the whole burst"
        );
        assert_eq!(lists.load(Ordering::SeqCst), 1);

        // A write after that List needs a newer one: it is scheduled anew.
        observations.wrote("team-a", "id-5", true);
        assert!(matches!(
            look(&observations, &lists, "id-5", Purpose::Confirm, 0).await,
            Lookup::Later(_)
        ));
        assert_eq!(lists.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_lone_write_is_confirmed_alone_and_a_finished_burst_at_once() {
        let observations = short_observations();
        let lists = Arc::new(AtomicU32::new(0));
        observations.wrote("team-a", "id-1", true);
        let lookup = look(&observations, &lists, "id-1", Purpose::Confirm, 0).await;
        assert_eq!(lookup, Lookup::Unknown, "one write: a GET");
        assert_eq!(lists.load(Ordering::SeqCst), 0);

        // Writes that stopped a while ago: nothing more to wait for, list now.
        observations.wrote("team-b", "id-1", true);
        observations.wrote("team-b", "id-2", true);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let lookup = look_in(&observations, &lists, "team-b", "id-1", Purpose::Confirm, 0);
        assert_eq!(lookup.await, Lookup::Found(1));
        assert_eq!(lists.load(Ordering::SeqCst), 1);
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
