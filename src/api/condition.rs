//! Strings that repeat across thousands of cached objects, shared instead of copied:
//! status conditions (`metav1.Condition` on the wire, same JSON, same schema) — every
//! cached object carries two, and their type, status, reason and usual messages are the
//! same few strings — and the spec's references to where an object lives upstream (its
//! Connection, team, app, gateway cluster). Each costs a pointer instead of a heap copy
//! (docs/src/performance.md: ≈ 0.5 KiB per cached object).

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Strings longer than this are not shared (an upstream's error message, say).
const MAX_SHARED_LEN: usize = 256;
/// At most this many distinct strings are shared; later ones are allocated per use, so
/// that a stream of distinct error messages cannot grow the table without bound.
const MAX_SHARED: usize = 4096;

static SHARED: LazyLock<Mutex<HashSet<Arc<str>>>> = LazyLock::new(Mutex::default);

/// An immutable string, shared with every equal one when short.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedStr(Arc<str>);

impl SharedStr {
    pub fn new(text: &str) -> Self {
        if text.len() > MAX_SHARED_LEN {
            return Self(Arc::from(text));
        }
        let mut shared = SHARED.lock().unwrap();
        if let Some(existing) = shared.get(text) {
            return Self(existing.clone());
        }
        let new: Arc<str> = Arc::from(text);
        if shared.len() < MAX_SHARED {
            shared.insert(new.clone());
        }
        Self(new)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Default for SharedStr {
    fn default() -> Self {
        Self::new("")
    }
}

impl From<SharedStr> for String {
    fn from(text: SharedStr) -> Self {
        text.0.to_string()
    }
}

impl From<&str> for SharedStr {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl Serialize for SharedStr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A plain string in the schema.
impl JsonSchema for SharedStr {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        String::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::new(&text))
    }
}

/// One condition of a status (`metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// When the condition last changed from one status to another.
    pub last_transition_time: Time,
    /// Details of the last transition, for humans.
    pub message: SharedStr,
    /// The `metadata.generation` the condition was set from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Why, in CamelCase.
    pub reason: SharedStr,
    /// `True`, `False` or `Unknown`.
    pub status: SharedStr,
    /// `Ready`, `Synced`, …
    #[serde(rename = "type")]
    pub type_: SharedStr,
}

/// The schema is `metav1.Condition`'s: the CRDs do not change.
impl JsonSchema for Condition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition as JsonSchema>::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        <k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition as JsonSchema>::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition as JsonSchema>::json_schema(
            generator,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_metav1_condition_json_sharing_equal_strings() {
        let json = serde_json::json!({
            "type": "Ready", "status": "True", "reason": "Available",
            "message": "upstream object matches the spec", "observedGeneration": 3,
            "lastTransitionTime": "2026-12-03T10:00:00Z"
        });
        let a: Condition = serde_json::from_value(json.clone()).unwrap();
        let b: Condition = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&a).unwrap(), json);
        assert!(
            Arc::ptr_eq(&a.message.0, &b.message.0),
            "shared, not copied"
        );
        assert!(Arc::ptr_eq(&a.type_.0, &b.type_.0));
        assert_eq!(a.status, "True");
        // Also as k8s-openapi reads it.
        let k8s: k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition =
            serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(k8s.reason, "Available");
    }

    #[test]
    fn long_strings_are_not_shared() {
        let long = "x".repeat(MAX_SHARED_LEN + 1);
        let a = SharedStr::new(&long);
        let b = SharedStr::new(&long);
        assert_eq!(a, b);
        assert!(!Arc::ptr_eq(&a.0, &b.0));
    }
}
