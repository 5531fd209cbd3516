//! The engine's behaviours, once, through a small test provider
//! ([`crate::support::things_provider`]: an `AccessProfile` kept as a "thing" of a
//! stateful HTTP fake, [`crate::support::fake_things`]). The real kinds' tests need not
//! prove these again.
//!
//! - create: the finalizer and the create mark in one metadata write, then one POST;
//!   the id in status, `Ready`, `Synced`, a `Created` event. No POST before the mark.
//! - adoption (`spec.externalId`): never created, the differing fields updated, deleting
//!   the resource leaves the upstream object (default `Orphan`).
//! - where the object is: an adopted id that is missing is `NotFound`, never created; an
//!   object of ours deleted out of band is created again.
//! - `Observe`: drift reported as `Ready=False/Drifted` naming the fields; no write.
//! - drift: an out-of-band change is corrected on the next pass (`DriftCorrected`).
//! - crash safety at each step of a create: a mark with no create behind it creates
//!   once; a create whose response was lost is found by its natural key; a create whose
//!   status write failed is recorded from memory, or after a restart found again.
//! - deletion: `Delete` deletes upstream then releases; `Orphan` sends nothing; a 404
//!   on DELETE, or an object already gone, counts as gone.
//! - holds: a refused create (422) is `UpstreamRejected`/`TerminalError` and not
//!   retried until the spec changes or the hold's time passes; a closed write gate sends
//!   nothing and marks nothing.

use std::sync::Arc;

use accessplane::api::AccessProfile;
use accessplane::base::clock::Clock;
use accessplane::engine::{CREATE_MARK_ANNOTATION, Engine, EngineError, FINALIZER, reconcile};
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use crate::support::fake_http::{Fault, FaultMatch};
use crate::support::fake_things::{FakeThings, MAX_NAME, THINGS_PATH};
use crate::support::harness::{Harness, NS, TEAM};
use crate::support::things_provider::{GATE_CLOSED, ThingsProvider, things_engine};

const PROFILES: &str = "accessprofiles";
const NAME: &str = "oncall";

#[tokio::test]
async fn create_marks_then_posts_once_and_records_the_id() {
    let w = World::new().await;
    w.apply(json!({"name": "On-call", "description": "pager duty"}))
        .await;
    w.settle().await;

    let things = w.fake.things();
    assert_eq!(things.len(), 1);
    assert_eq!(w.fake.calls("POST"), 1);
    assert_eq!(w.status_id().as_deref(), things[0]["id"].as_str());
    assert_eq!(things[0]["description"], "pager duty");
    assert_eq!(w.cond("Ready"), ("True".into(), "Available".into()));
    assert_eq!(w.cond("Synced").0, "True");
    assert!(w.h.event_reasons().contains(&"Created".to_string()));
    // One metadata write: the finalizer and the create mark together.
    let writes = w.metadata_writes();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(writes[0]["metadata"]["finalizers"], json!([FINALIZER]));
    assert!(writes[0]["metadata"]["annotations"][CREATE_MARK_ANNOTATION].is_string());
}

#[tokio::test]
async fn no_create_is_sent_before_its_mark_is_written() {
    let w = World::new().await;
    w.apply(json!({"name": "On-call"})).await;
    let mark_write = format!("/{PROFILES}/{NAME}");
    w.h.kube
        .fail_next_with_body("PATCH", &mark_write, CREATE_MARK_ANNOTATION, 500, 1);

    assert!(
        w.try_pass().await.is_err(),
        "the failed mark write fails the pass"
    );
    assert_eq!(w.fake.calls("POST"), 0, "nothing sent without the mark");
    assert!(w.annotation(CREATE_MARK_ANNOTATION).is_none());

    w.settle().await;
    assert_eq!(w.fake.calls("POST"), 1);
    assert!(w.status_id().is_some());
}

#[tokio::test]
async fn adoption_updates_differing_fields_and_orphans_by_default() {
    let w = World::new().await;
    let id = w.fake.seed(TEAM, "Existing", "made in the UI");
    w.apply(json!({"externalId": id, "description": "managed now"}))
        .await;
    w.settle().await;

    assert_eq!(w.fake.calls("POST"), 0, "adoption never creates");
    let puts = w.bodies("PUT");
    assert_eq!(puts, vec![json!({"description": "managed now"})]);
    assert_eq!(w.fake.thing(&id).unwrap()["name"], "Existing", "unmanaged");
    assert_eq!(w.cond("Ready"), ("True".into(), "Available".into()));
    assert!(w.annotation(CREATE_MARK_ANNOTATION).is_none());

    w.delete().await;
    w.settle().await;
    assert!(w.object().is_none(), "finalizer released");
    assert_eq!(w.fake.calls("DELETE"), 0);
    assert!(w.fake.thing(&id).is_some(), "adopted objects are orphaned");
}

#[tokio::test]
async fn adopted_id_missing_upstream_is_not_found_and_never_created() {
    let w = World::new().await;
    w.apply(json!({"externalId": "t-404", "name": "Ghost"}))
        .await;
    w.settle().await;

    let (status, reason, message) = w.h.condition_of(PROFILES, NAME, "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "NotFound"));
    assert!(message.contains("t-404"), "{message}");
    assert_eq!(w.fake.writes(), 0);
}

#[tokio::test]
async fn created_object_deleted_out_of_band_is_created_again() {
    let w = World::new().await;
    let first = w.created(json!({"name": "On-call"})).await;
    w.fake.remove(&first);

    w.settle().await;
    assert_eq!(w.fake.calls("POST"), 2);
    let second = w.status_id().unwrap();
    assert_ne!(second, first);
    assert!(w.fake.thing(&second).is_some());
    assert_eq!(w.cond("Ready"), ("True".into(), "Available".into()));
}

#[tokio::test]
async fn observe_reports_drift_by_field_and_writes_nothing() {
    let w = World::new().await;
    let id = w.fake.seed(TEAM, "Existing", "made in the UI");
    w.apply(json!({"externalId": id, "managementPolicy": "Observe",
                   "name": "Existing", "description": "wanted"}))
        .await;
    w.settle().await;

    let (status, reason, message) = w.h.condition_of(PROFILES, NAME, "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Drifted"));
    assert!(message.contains("description"), "{message}");
    assert!(!message.contains("name"), "only what differs: {message}");
    assert_eq!(w.cond("Synced").0, "True");
    assert_eq!(w.fake.writes(), 0);
    assert_eq!(w.fake.thing(&id).unwrap()["description"], "made in the UI");
}

#[tokio::test]
async fn out_of_band_change_is_corrected_on_the_next_pass() {
    let w = World::new().await;
    let id = w
        .created(json!({"name": "On-call", "description": "pager duty"}))
        .await;
    w.fake.edit(&id, "description", json!("changed in the UI"));
    w.fake.clear_requests();

    w.pass().await;
    assert_eq!(w.bodies("PUT"), vec![json!({"description": "pager duty"})]);
    assert_eq!(w.fake.thing(&id).unwrap()["description"], "pager duty");
    assert!(w.h.event_reasons().contains(&"DriftCorrected".to_string()));
    assert_eq!(w.cond("Ready"), ("True".into(), "Available".into()));
}

/// The state a process leaves when it stops right after writing the create mark: the
/// mark and the finalizer, no id, nothing upstream.
#[tokio::test]
async fn mark_without_a_create_behind_it_creates_once() {
    let mut w = World::new().await;
    w.apply(json!({"name": "On-call"})).await;
    let now = w.h.clock.now().to_string();
    w.h.kube
        .merge_patch(
            "accessplane.io/v1alpha1",
            PROFILES,
            NS,
            NAME,
            json!({"metadata": {"finalizers": [FINALIZER], "annotations": {CREATE_MARK_ANNOTATION: now}}}),
        )
        .unwrap();

    w.restart();
    w.settle().await;
    assert_eq!(w.finds(), 1, "looked up by natural key first");
    assert_eq!(w.fake.calls("POST"), 1);
    assert_eq!(w.fake.things().len(), 1);
    assert_eq!(w.cond("Ready"), ("True".into(), "Available".into()));
}

#[tokio::test]
async fn lost_create_response_is_recovered_by_natural_key() {
    let w = World::new().await;
    w.fake.push_fault(
        FaultMatch::exactly("POST", THINGS_PATH),
        Fault::ApplyThenDropConnection,
    );
    w.apply(json!({"name": "On-call"})).await;

    w.pass().await;
    assert_eq!(w.fake.things().len(), 1, "applied upstream");
    assert_eq!(w.status_id(), None, "but its id never arrived");
    assert_eq!(w.cond("Ready"), ("False".into(), "Creating".into()));

    w.settle().await;
    let things = w.fake.things();
    assert_eq!(things.len(), 1, "not created twice");
    assert_eq!(w.fake.calls("POST"), 1);
    assert_eq!(w.finds(), 1);
    assert_eq!(w.status_id().as_deref(), things[0]["id"].as_str());
    assert_eq!(w.cond("Ready"), ("True".into(), "Available".into()));
}

#[tokio::test]
async fn create_whose_status_write_failed_is_recorded_from_memory() {
    let w = World::new().await;
    w.apply(json!({"name": "On-call"})).await;
    w.fail_next_status_write();

    assert!(w.try_pass().await.is_err(), "the status write failed");
    assert_eq!(w.fake.things().len(), 1);
    assert_eq!(w.status_id(), None);

    w.settle().await;
    assert_eq!(w.fake.calls("POST"), 1);
    assert_eq!(w.finds(), 0, "the engine remembered the id");
    assert_eq!(w.status_id().as_deref(), w.fake.things()[0]["id"].as_str());
}

#[tokio::test]
async fn create_whose_status_write_failed_is_found_again_after_a_restart() {
    let mut w = World::new().await;
    w.apply(json!({"name": "On-call"})).await;
    w.fail_next_status_write();
    assert!(w.try_pass().await.is_err(), "the status write failed");

    w.restart();
    w.settle().await;
    assert_eq!(w.fake.calls("POST"), 1, "not created twice");
    assert_eq!(w.finds(), 1, "found by natural key");
    assert_eq!(w.status_id().as_deref(), w.fake.things()[0]["id"].as_str());
    assert_eq!(w.cond("Ready"), ("True".into(), "Available".into()));
}

#[tokio::test]
async fn deletion_policy_delete_deletes_upstream_then_releases() {
    let w = World::new().await;
    let id = w.created(json!({"name": "On-call"})).await;

    w.delete().await;
    w.settle().await;
    assert_eq!(w.fake.calls("DELETE"), 1);
    assert!(w.fake.thing(&id).is_none());
    assert!(w.object().is_none(), "finalizer released");
    assert!(w.h.event_reasons().contains(&"Deleted".to_string()));
}

#[tokio::test]
async fn deletion_policy_orphan_sends_nothing() {
    let w = World::new().await;
    let id = w
        .created(json!({"name": "On-call", "deletionPolicy": "Orphan"}))
        .await;

    w.delete().await;
    w.settle().await;
    assert!(w.object().is_none(), "finalizer released");
    assert_eq!(w.fake.calls("DELETE"), 0);
    assert!(w.fake.thing(&id).is_some());
}

#[tokio::test]
async fn not_found_on_delete_counts_as_gone() {
    let w = World::new().await;
    w.created(json!({"name": "On-call"})).await;
    // As when someone else deletes it between the engine's read and its DELETE.
    w.fake
        .push_fault(FaultMatch::new("DELETE", THINGS_PATH), Fault::status(404));

    w.delete().await;
    w.settle().await;
    assert_eq!(w.fake.calls("DELETE"), 1);
    assert!(w.object().is_none(), "finalizer released");
}

#[tokio::test]
async fn object_already_gone_upstream_is_released_without_a_delete() {
    let w = World::new().await;
    let id = w.created(json!({"name": "On-call"})).await;
    w.fake.remove(&id);

    w.delete().await;
    w.settle().await;
    assert_eq!(w.fake.calls("DELETE"), 0);
    assert!(w.object().is_none(), "finalizer released");
}

#[tokio::test]
async fn rejected_create_holds_until_the_spec_changes_or_the_hold_passes() {
    let w = World::new().await;
    let too_long = "n".repeat(MAX_NAME + 1);
    w.apply(json!({"name": too_long})).await;

    w.pass().await;
    assert_eq!(w.fake.calls("POST"), 1);
    assert_eq!(w.cond("Ready"), ("False".into(), "UpstreamRejected".into()));
    assert_eq!(w.cond("Synced"), ("False".into(), "TerminalError".into()));
    assert!(
        w.annotation(CREATE_MARK_ANNOTATION).is_none(),
        "refused before applying: no create in doubt"
    );

    // Held: no upstream call at this generation until the hold's time has passed.
    let hold = w.engine.timing.terminal_retry;
    w.h.advance(hold / 2);
    w.pass().await;
    assert_eq!(w.fake.requests().len(), 1, "{:?}", w.fake.requests());
    w.h.advance(hold / 2);
    w.pass().await;
    assert_eq!(w.fake.calls("POST"), 2, "tried again once the hold passed");

    // A spec change lifts the hold at once.
    w.h.edit_spec::<AccessProfile>(NAME, json!({"name": "On-call"}))
        .await;
    w.settle().await;
    assert_eq!(w.fake.calls("POST"), 3);
    assert_eq!(w.cond("Ready"), ("True".into(), "Available".into()));
}

#[tokio::test]
async fn closed_write_gate_holds_the_create_back_unmarked() {
    let w = World::new().await;
    w.provider.close_gate(true);
    w.apply(json!({"name": "On-call"})).await;

    w.pass().await;
    assert_eq!(w.fake.writes(), 0);
    assert!(
        w.annotation(CREATE_MARK_ANNOTATION).is_none(),
        "not attempted"
    );
    let (status, reason, message) = w.h.condition_of(PROFILES, NAME, "Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "WaitingForDependency")
    );
    assert!(message.contains(GATE_CLOSED), "{message}");

    w.provider.close_gate(false);
    w.settle().await;
    assert_eq!(w.fake.calls("POST"), 1);
    assert!(w.status_id().is_some());
}

// ---------------------------------------------------------------------------------
// Helpers

/// The harness (fake apiserver, `serval` Connection, manual clock), the things fake and
/// an engine of the test provider; the tests reconcile one `AccessProfile`, [`NAME`].
struct World {
    h: Harness,
    fake: FakeThings,
    provider: ThingsProvider,
    engine: Arc<Engine<AccessProfile, ThingsProvider>>,
}

impl World {
    async fn new() -> Self {
        let h = Harness::new().await;
        let (fake, provider, engine) = things_engine(&h).await;
        Self {
            h,
            fake,
            provider,
            engine,
        }
    }

    /// Creates [`NAME`] with `spec` (`connectionRef` and `teamId` defaulted).
    async fn apply(&self, mut spec: Value) {
        spec["connectionRef"] = json!({"name": "serval"});
        spec["teamId"] = json!(TEAM);
        self.h
            .create::<AccessProfile>(json!({
                "apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
                "metadata": {"name": NAME}, "spec": spec,
            }))
            .await;
    }

    /// The operator restarted: same apiserver and upstream, nothing remembered.
    fn restart(&mut self) {
        self.engine = self.h.engine(self.provider.clone());
    }

    async fn pass(&self) {
        self.h.pass(&self.engine, NAME).await;
    }

    /// One pass whose error (a failed Kubernetes write) is the test's to check.
    async fn try_pass(&self) -> Result<Action, EngineError> {
        let obj = Api::<AccessProfile>::namespaced(self.h.client(), NS)
            .get(NAME)
            .await
            .unwrap();
        reconcile(Arc::new(obj), self.engine.clone()).await
    }

    /// Creates [`NAME`] with `spec` and settles it; its upstream id.
    async fn created(&self, spec: Value) -> String {
        self.apply(spec).await;
        self.settle().await;
        self.status_id().expect("created")
    }

    async fn settle(&self) {
        self.h.settle_kind(&self.engine, NAME, 5).await;
    }

    /// `kubectl delete`: the finalizer keeps the object until the engine lets go.
    async fn delete(&self) {
        Api::<AccessProfile>::namespaced(self.h.client(), NS)
            .delete(NAME, &DeleteParams::default())
            .await
            .unwrap();
    }

    fn fail_next_status_write(&self) {
        let status = format!("/{PROFILES}/{NAME}/status");
        self.h.kube.fail_next("PATCH", &status, 500, 1);
    }

    fn object(&self) -> Option<Value> {
        self.h.get(PROFILES, NAME)
    }

    fn status_id(&self) -> Option<String> {
        self.object()?["status"]["id"].as_str().map(String::from)
    }

    fn annotation(&self, key: &str) -> Option<String> {
        self.object()?["metadata"]["annotations"][key]
            .as_str()
            .map(String::from)
    }

    /// (status, reason) of a condition.
    fn cond(&self, type_: &str) -> (String, String) {
        let (status, reason, _) = self.h.condition_of(PROFILES, NAME, type_);
        (status, reason)
    }

    /// Bodies of the metadata writes (not status) to the object.
    fn metadata_writes(&self) -> Vec<Value> {
        let path = format!("/{PROFILES}/{NAME}");
        self.h
            .kube
            .writes()
            .into_iter()
            .filter(|r| r.path.ends_with(&path))
            .filter_map(|r| r.body)
            .collect()
    }

    /// Bodies of the requests with this method to the fake.
    fn bodies(&self, method: &str) -> Vec<Value> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| r.method == method)
            .filter_map(|r| r.body)
            .collect()
    }

    /// Natural-key lookups (`GET /things?teamId=…&name=…`).
    fn finds(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == THINGS_PATH)
            .count()
    }
}
