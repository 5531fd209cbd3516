//! Kubernetes Events (`events.k8s.io/v1`) about managed objects and Connections.
//!
//! Why not kube's `Recorder`: it keeps a full copy of every Event it published for six
//! minutes and sweeps that whole cache under a write lock on every publish. At 10,000
//! objects a create burst publishes ~25,000 Events, and that cache alone was the largest
//! part of the operator's heap (≈4 KiB per object) and an O(n) step per publish. Here
//! only what a repeat needs is remembered — a hash of the Event's identity, the suffix of
//! its name, its count and when it was last seen (24 bytes) — and the cache is swept at
//! most once a minute and capped.
//!
//! A repeat of the same Event (same object, type, reason and note) within [`SERIES_TTL`]
//! patches the first one's `series` (count, lastObservedTime) instead of creating another,
//! as the Kubernetes event libraries do; unlike kube's `Recorder` the note is part of the
//! identity, so "updated: description" and "updated: members" stay two Events.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::clock::Clock;

/// How long a published Event can grow a series (client-go uses the same six minutes).
pub const SERIES_TTL_MS: i64 = 6 * 60 * 1000;
/// At most this many Events are remembered; beyond it a repeat creates a new Event.
pub const SERIES_CAPACITY: usize = 16_384;
/// Expired entries are dropped at most this often.
const SWEEP_EVERY_MS: i64 = 60 * 1000;

/// Who publishes (`reportingController` / `reportingInstance`).
#[derive(Clone, Debug)]
pub struct Reporter {
    pub controller: String,
    pub instance: Option<String>,
}

/// What to say about an object.
pub struct Note<'a> {
    pub warning: bool,
    pub reason: &'a str,
    pub text: String,
}

/// Publishes Events; cheap to clone (one shared series cache).
#[derive(Clone)]
pub struct EventPublisher {
    client: kube::Client,
    reporter: Arc<Reporter>,
    clock: Arc<dyn Clock>,
    series: Arc<Mutex<SeriesCache>>,
}

impl EventPublisher {
    pub fn new(client: kube::Client, reporter: Reporter, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            reporter: Arc::new(reporter),
            clock,
            series: Arc::default(),
        }
    }

    /// Publishes `note` about `regarding`; a failure is logged, never fatal (an Event is
    /// a courtesy, not state).
    pub async fn publish(&self, regarding: &ObjectReference, note: Note<'_>) {
        if let Err(error) = self.try_publish(regarding, &note).await {
            tracing::warn!(%error, reason = note.reason, "could not publish event");
        }
    }

    async fn try_publish(
        &self,
        regarding: &ObjectReference,
        note: &Note<'_>,
    ) -> Result<(), kube::Error> {
        let now = self.clock.now();
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let (key, seen) = {
            let mut series = self.series.lock().unwrap();
            let key = series.key(regarding, note);
            (key, series.observe(key, now))
        };
        if let Seen::Repeat { stamp, count } = seen {
            let patch = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            match events
                .patch(
                    &self.event_name(regarding, stamp),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => return Ok(()),
                // The first Event expired or was deleted: start a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let stamp = self.series.lock().unwrap().restart(key, now);
        let event = self.event(regarding, note, now, stamp);
        events.create(&PostParams::default(), &event).await?;
        Ok(())
    }

    fn event_name(&self, regarding: &ObjectReference, stamp: u64) -> String {
        let object = regarding
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        format!("{object}.{stamp:x}")
    }

    fn event(
        &self,
        regarding: &ObjectReference,
        note: &Note<'_>,
        now: Timestamp,
        stamp: u64,
    ) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(self.event_name(regarding, stamp)),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(note.reason.to_string()),
            reason: Some(note.reason.to_string()),
            note: Some(note.text.clone()),
            type_: Some(if note.warning { "Warning" } else { "Normal" }.to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Event::default()
        }
    }
}

/// What the cache knows about an Event about to be published.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Not published within the TTL: create it.
    New,
    /// Published before as `<object>.<stamp>`; this is occurrence `count`.
    Repeat { stamp: u64, count: i32 },
}

#[derive(Clone, Copy)]
struct Entry {
    /// Nanoseconds of the first occurrence: the Event's name suffix.
    stamp: u64,
    count: i32,
    last_ms: i64,
}

struct SeriesCache {
    hasher: RandomState,
    entries: HashMap<u64, Entry>,
    swept_ms: i64,
    /// The last name suffix handed out: suffixes are unique even for two Events about
    /// one object in the same nanosecond (or at one instant of a test's manual clock).
    last_stamp: u64,
}

impl Default for SeriesCache {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            entries: HashMap::new(),
            swept_ms: i64::MIN,
            last_stamp: 0,
        }
    }
}

impl SeriesCache {
    /// The identity of an Event: a keyed 64-bit hash (a collision merely merges two
    /// Events' counts; with the per-process random key it is vanishingly unlikely).
    fn key(&self, regarding: &ObjectReference, note: &Note<'_>) -> u64 {
        self.hasher.hash_one((
            &regarding.namespace,
            &regarding.kind,
            &regarding.name,
            &regarding.uid,
            note.warning,
            note.reason,
            &note.text,
        ))
    }

    fn observe(&mut self, key: u64, now: Timestamp) -> Seen {
        let now_ms = now.as_millisecond();
        self.sweep(now_ms);
        match self.entries.get_mut(&key) {
            Some(entry) if entry.last_ms + SERIES_TTL_MS > now_ms => {
                entry.count += 1;
                entry.last_ms = now_ms;
                Seen::Repeat {
                    stamp: entry.stamp,
                    count: entry.count,
                }
            }
            _ => Seen::New,
        }
    }

    /// Records a newly created Event; returns its name suffix.
    fn restart(&mut self, key: u64, now: Timestamp) -> u64 {
        let stamp = u64::try_from(now.as_nanosecond())
            .unwrap_or_default()
            .max(self.last_stamp + 1);
        self.last_stamp = stamp;
        if self.entries.len() < SERIES_CAPACITY || self.entries.contains_key(&key) {
            self.entries.insert(
                key,
                Entry {
                    stamp,
                    count: 1,
                    last_ms: now.as_millisecond(),
                },
            );
        }
        stamp
    }

    fn sweep(&mut self, now_ms: i64) {
        if now_ms.saturating_sub(self.swept_ms) < SWEEP_EVERY_MS
            && self.entries.len() < SERIES_CAPACITY
        {
            return;
        }
        self.swept_ms = now_ms;
        self.entries
            .retain(|_, entry| entry.last_ms + SERIES_TTL_MS > now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("AccessProfile".into()),
            namespace: Some("team".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectReference::default()
        }
    }

    fn note(reason: &str, text: &str) -> Note<'static> {
        Note {
            warning: false,
            reason: reason.to_string().leak(),
            text: text.into(),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn publish(cache: &mut SeriesCache, name: &str, n: &Note<'_>, now: Timestamp) -> Seen {
        let key = cache.key(&object(name), n);
        let seen = cache.observe(key, now);
        if seen == Seen::New {
            cache.restart(key, now);
        }
        seen
    }

    #[test]
    fn a_repeat_within_the_ttl_grows_the_series_of_the_first_event() {
        let mut cache = SeriesCache::default();
        let n = note("Updated", "updated upstream: description");
        assert_eq!(publish(&mut cache, "a", &n, at(0)), Seen::New);
        let first = u64::try_from(at(0).as_nanosecond()).unwrap();
        assert_eq!(
            publish(&mut cache, "a", &n, at(10)),
            Seen::Repeat {
                stamp: first,
                count: 2
            }
        );
        // Seen again within the TTL of the last occurrence, not of the first.
        assert_eq!(
            publish(&mut cache, "a", &n, at(10 + 300)),
            Seen::Repeat {
                stamp: first,
                count: 3
            }
        );
        assert_eq!(publish(&mut cache, "a", &n, at(310 + 361)), Seen::New);
    }

    #[test]
    fn object_reason_and_note_are_all_part_of_the_identity() {
        let mut cache = SeriesCache::default();
        let n = note("Updated", "description");
        assert_eq!(publish(&mut cache, "a", &n, at(0)), Seen::New);
        assert_eq!(publish(&mut cache, "b", &n, at(1)), Seen::New);
        assert_eq!(
            publish(&mut cache, "a", &note("Updated", "members"), at(2)),
            Seen::New
        );
        assert_eq!(
            publish(
                &mut cache,
                "a",
                &note("DriftCorrected", "description"),
                at(3)
            ),
            Seen::New
        );
        let warning = Note {
            warning: true,
            ..note("Updated", "description")
        };
        assert_eq!(publish(&mut cache, "a", &warning, at(4)), Seen::New);
        assert!(matches!(
            publish(&mut cache, "a", &n, at(5)),
            Seen::Repeat { count: 2, .. }
        ));
    }

    #[test]
    fn events_created_at_one_instant_get_distinct_names() {
        let mut cache = SeriesCache::default();
        let a = cache.restart(1, at(0));
        let b = cache.restart(2, at(0));
        assert_ne!(a, b);
    }

    #[test]
    fn the_cache_is_swept_and_bounded() {
        let mut cache = SeriesCache::default();
        let n = note("Created", "created upstream");
        for i in 0..SERIES_CAPACITY + 100 {
            publish(&mut cache, &format!("o{i}"), &n, at(0));
        }
        assert_eq!(cache.entries.len(), SERIES_CAPACITY);
        // Past the TTL a publish sweeps everything that expired.
        publish(&mut cache, "late", &n, at(SERIES_TTL_MS / 1000 + 1));
        assert_eq!(cache.entries.len(), 1);
    }
}
