//! One resource manages one upstream object. The **owner** of an upstream object is
//! the resource of the kind whose `status.id` records it first (the older resource on a
//! tie: both recorded it before ownership was checked); any other resource naming it — by
//! `externalId`, by a deterministic id, or found by natural key — is refused with
//! `AlreadyManaged`, sends nothing upstream, and never deletes it.
//!
//! The check reads the controller's cache, never the API. An index from each recorded
//! id (hashed) to the one resource recording it (hashed) answers the usual case — no
//! other claimant — at once, for 16 bytes per resource; only when another resource
//! records the same id is the cache scanned for it (and the index healed when that
//! claimant is gone).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use super::ManagedObject;
use super::identity::ObjectKey;

/// Which other resource (`namespace/name`) owns an upstream id, if any: what a decision
/// is given (the engine answers from its cache, a plan from one List of the cluster).
pub type OwnerOf<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// The index's mark of an id that several resources record.
const SEVERAL: u64 = u64::MAX;

fn hash_of(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// Who records which upstream id (see the module documentation).
#[derive(Default)]
pub struct Ownership {
    /// Hash of a recorded id → key of the resource recording it, or [`SEVERAL`].
    claims: Mutex<HashMap<u64, u64>>,
}

/// What the index says of an id.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// No resource but (possibly) the asking one records it.
    Free,
    /// Another resource may record it: look in the cache.
    Contested,
}

impl Ownership {
    /// Notes the id `obj` records (each object of the controller's watch passes here).
    pub fn saw<K: ManagedObject>(&self, obj: &K) {
        let Some(id) = obj.managed_status().and_then(|s| s.id.as_deref()) else {
            return;
        };
        let key = key_of(obj);
        let mut claims = self.claims.lock().unwrap();
        let entry = claims.entry(hash_of(id)).or_insert(key);
        if *entry != key {
            *entry = SEVERAL;
        }
    }

    /// Whether a resource other than `obj` may record `id`.
    pub fn claim<K: ManagedObject>(&self, obj: &K, id: &str) -> Claim {
        match self.claims.lock().unwrap().get(&hash_of(id)) {
            Some(key) if *key != key_of(obj) => Claim::Contested,
            _ => Claim::Free,
        }
    }

    /// After a look in the cache found no other live claimant of `id`: `obj` (if it
    /// records it) or nobody does.
    pub fn settle<K: ManagedObject>(&self, obj: &K, id: &str) {
        let mut claims = self.claims.lock().unwrap();
        let recorded = obj.managed_status().and_then(|s| s.id.as_deref()) == Some(id);
        if recorded {
            claims.insert(hash_of(id), key_of(obj));
        } else {
            claims.remove(&hash_of(id));
        }
    }
}

fn key_of<K: ManagedObject>(obj: &K) -> u64 {
    let mut hasher = DefaultHasher::new();
    ObjectKey::of(obj.meta()).hash(&mut hasher);
    hasher.finish()
}

/// Whether `other` owns the upstream object `id` rather than `obj`: it records `id`, and
/// `obj` does not, or `other` is the older of the two (then the name decides a tie).
pub fn owns_rather<K: ManagedObject>(other: &K, obj: &K, id: &str) -> bool {
    let records = |o: &K| o.managed_status().and_then(|s| s.id.as_deref()) == Some(id);
    if !records(other) || same_object(other, obj) {
        return false;
    }
    if !records(obj) {
        return true;
    }
    let age = |o: &K| {
        (
            o.meta().creation_timestamp.as_ref().map(|t| t.0),
            o.meta().namespace.clone(),
            o.meta().name.clone(),
        )
    };
    age(other) < age(obj)
}

fn same_object<K: ManagedObject>(a: &K, b: &K) -> bool {
    a.meta().namespace == b.meta().namespace && a.meta().name == b.meta().name
}

/// `namespace/name`, as messages name a resource.
pub fn label<K: ManagedObject>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Why a resource sends nothing upstream: another one manages its object.
pub fn already_managed(kind: &str, id: &str, owner: &str) -> String {
    format!(
        "upstream object {id} is managed by {kind} {owner}; this resource sends nothing upstream and never deletes it (it may take the object over once {owner} lets go of it)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AccessProfile;

    /// A profile `namespace/name` created at `created`, recording `id` if given.
    fn profile(namespace: &str, name: &str, created: &str, id: Option<&str>) -> AccessProfile {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
            "metadata": {"name": name, "namespace": namespace, "uid": name,
                         "creationTimestamp": created},
            "spec": {"connectionRef": {"name": "serval"}, "teamId": "team-1"},
            "status": {"id": id},
        }))
        .unwrap()
    }

    #[test]
    fn the_recording_resource_owns_and_the_older_wins_a_tie() {
        let owner = profile("a", "owner", "2026-01-01T00:00:00Z", Some("ap-1"));
        let claimant = profile("b", "claimant", "2025-01-01T00:00:00Z", None);
        assert!(owns_rather(&owner, &claimant, "ap-1"));
        assert!(!owns_rather(&claimant, &owner, "ap-1"));
        assert!(!owns_rather(&owner, &owner, "ap-1"), "never its own rival");
        assert!(!owns_rather(&owner, &claimant, "ap-2"));
        // Both record it (from before ownership was checked): the older one owns it.
        let older = profile("b", "older", "2025-01-01T00:00:00Z", Some("ap-1"));
        assert!(owns_rather(&older, &owner, "ap-1"));
        assert!(!owns_rather(&owner, &older, "ap-1"));
        // Same age: the namespace and name decide, the same way from both sides.
        let twin = profile("c", "twin", "2026-01-01T00:00:00Z", Some("ap-1"));
        assert!(owns_rather(&owner, &twin, "ap-1") != owns_rather(&twin, &owner, "ap-1"));
    }

    #[test]
    fn the_index_flags_an_id_that_another_resource_records_until_settled() {
        let ownership = Ownership::default();
        let owner = profile("a", "owner", "2026-01-01T00:00:00Z", Some("ap-1"));
        let claimant = profile("b", "claimant", "2026-01-02T00:00:00Z", None);
        assert_eq!(ownership.claim(&claimant, "ap-1"), Claim::Free);
        ownership.saw(&owner);
        assert_eq!(ownership.claim(&owner, "ap-1"), Claim::Free);
        assert_eq!(ownership.claim(&claimant, "ap-1"), Claim::Contested);
        // The owner went away: the cache showed nobody else; the index forgets it.
        ownership.settle(&claimant, "ap-1");
        assert_eq!(ownership.claim(&claimant, "ap-1"), Claim::Free);
        // Two resources recording one id stay contested for both.
        let second = profile("b", "second", "2026-01-03T00:00:00Z", Some("ap-1"));
        ownership.saw(&owner);
        ownership.saw(&second);
        assert_eq!(ownership.claim(&owner, "ap-1"), Claim::Contested);
        assert_eq!(ownership.claim(&second, "ap-1"), Claim::Contested);
    }
}
