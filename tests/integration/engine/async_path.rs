//! The engine's asynchronous path (writes answered 202/204 that become visible later),
//! exercised through a small in-memory provider so the engine's own logic is isolated
//! from any one upstream: Pending until the read-back shows the desired state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accessplane::api::PersonaAccessControl;
use accessplane::api::connection::UpstreamKind;
use accessplane::engine::metrics::ReconcileMetrics;
use accessplane::engine::requeue::Timing;
use accessplane::engine::{Created, Cx, Diff, Engine, Provider, Written, reconcile};
use accessplane::upstream::{Call, UpstreamError};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::harness::{Harness, NS, condition, requeue_of};

/// One stored control; `reads_until_visible` read-backs still miss the latest write.
#[derive(Clone, Debug)]
struct Stored {
    type_: String,
    hidden_reads: u32,
    deleted: bool,
}

#[derive(Clone, Default)]
struct SlowGateway {
    objects: Arc<Mutex<HashMap<String, Stored>>>,
    writes: Arc<Mutex<Vec<String>>>,
}

const DELAY_READS: u32 = 2;

impl SlowGateway {
    fn write(&self, what: String) {
        self.writes.lock().unwrap().push(what);
    }
}

impl Provider<PersonaAccessControl> for SlowGateway {
    type Observed = (String, String);
    type Inputs = ();
    const UPSTREAM: UpstreamKind = UpstreamKind::Serval;

    fn id_of(&self, observed: &(String, String)) -> String {
        observed.0.clone()
    }

    fn deterministic_id(&self, obj: &PersonaAccessControl) -> Option<String> {
        Some(format!(
            "{}_{}",
            obj.spec.virtual_server_id, obj.spec.persona_role
        ))
    }

    async fn observe(
        &self,
        _cx: &Cx<'_, PersonaAccessControl>,
        id: &str,
    ) -> Result<Option<(String, String)>, UpstreamError> {
        let mut objects = self.objects.lock().unwrap();
        let Some(stored) = objects.get_mut(id) else {
            return Ok(None);
        };
        if stored.hidden_reads > 0 {
            stored.hidden_reads -= 1;
            // Before the write is visible the previous state shows: absent after a create,
            // present after a delete.
            return Ok(if stored.deleted {
                Some((id.into(), stored.type_.clone()))
            } else {
                None
            });
        }
        if stored.deleted {
            objects.remove(id);
            return Ok(None);
        }
        Ok(Some((id.into(), stored.type_.clone())))
    }

    async fn find(
        &self,
        _cx: &Cx<'_, PersonaAccessControl>,
    ) -> Result<Vec<(String, String)>, UpstreamError> {
        Ok(vec![])
    }

    fn diff(&self, cx: &Cx<'_, PersonaAccessControl>, observed: &(String, String)) -> Diff {
        let obj = cx.obj;
        let mut diff = Diff::default();
        diff.check(
            "type",
            serde_json::to_value(obj.spec.type_).unwrap() != json!(observed.1),
        );
        diff
    }

    /// In memory: the calls only describe what `create` and `update` do.
    fn create_calls(&self, cx: &Cx<'_, PersonaAccessControl>) -> Vec<Call> {
        let id = self.deterministic_id(cx.obj).unwrap();
        vec![Call::post("create", format!("controls/{id}"))]
    }

    fn update_calls(
        &self,
        _cx: &Cx<'_, PersonaAccessControl>,
        observed: &(String, String),
        _diff: &Diff,
    ) -> Vec<Call> {
        vec![Call::put("update", format!("controls/{}", observed.0))]
    }

    fn delete_calls(&self, _cx: &Cx<'_, PersonaAccessControl>, id: &str) -> Vec<Call> {
        vec![Call::delete("delete", format!("controls/{id}"))]
    }

    async fn create(
        &self,
        cx: &Cx<'_, PersonaAccessControl>,
        _calls: Vec<Call>,
    ) -> Result<Created<(String, String)>, UpstreamError> {
        let id = self.deterministic_id(cx.obj).unwrap();
        let type_ = serde_json::to_value(cx.obj.spec.type_)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        self.objects.lock().unwrap().insert(
            id.clone(),
            Stored {
                type_,
                hidden_reads: DELAY_READS,
                deleted: false,
            },
        );
        self.write(format!("create {id}"));
        Ok(Created::Accepted { id })
    }

    async fn update(
        &self,
        cx: &Cx<'_, PersonaAccessControl>,
        observed: &(String, String),
        _diff: &Diff,
        _calls: Vec<Call>,
    ) -> Result<Written<(String, String)>, UpstreamError> {
        let type_ = serde_json::to_value(cx.obj.spec.type_)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        let mut objects = self.objects.lock().unwrap();
        let stored = objects.get_mut(&observed.0).unwrap();
        // The old value stays visible for a while, as on the real gateway.
        stored.hidden_reads = DELAY_READS;
        self.writes
            .lock()
            .unwrap()
            .push(format!("update {} {type_}", observed.0));
        stored.type_ = type_;
        Ok(Written::Accepted)
    }

    async fn delete(
        &self,
        _cx: &Cx<'_, PersonaAccessControl>,
        calls: Vec<Call>,
    ) -> Result<Written<()>, UpstreamError> {
        let id = calls[0].path.trim_start_matches("controls/").to_string();
        let id = id.as_str();
        if let Some(stored) = self.objects.lock().unwrap().get_mut(id) {
            stored.deleted = true;
            stored.hidden_reads = DELAY_READS;
        }
        self.write(format!("delete {id}"));
        Ok(Written::Accepted)
    }
}

struct AsyncHarness {
    h: Harness,
    gateway: SlowGateway,
    engine: Arc<Engine<PersonaAccessControl, SlowGateway>>,
}

impl AsyncHarness {
    async fn new() -> Self {
        let h = Harness::new().await;
        let gateway = SlowGateway::default();
        let engine = Arc::new(Engine::new(
            h.client(),
            gateway.clone(),
            h.engine.connections.clone(),
            h.publisher(),
            h.clock.clone(),
            Timing::default(),
            ReconcileMetrics::default(),
        ));
        Self { h, gateway, engine }
    }

    fn api(&self) -> Api<PersonaAccessControl> {
        Api::namespaced(self.h.client(), NS)
    }

    async fn pass(&self) -> Option<Duration> {
        let obj = self.api().get_opt("analysts").await.unwrap()?;
        let action = reconcile(Arc::new(obj), self.engine.clone()).await.unwrap();
        requeue_of(&action)
    }

    fn ready(&self) -> (String, String) {
        let obj = self
            .h
            .kube
            .get(
                "accessplane.io/v1alpha1",
                "personaaccesscontrols",
                NS,
                "analysts",
            )
            .unwrap();
        let c = condition(&obj, "Ready").unwrap();
        (
            c["status"].as_str().unwrap().into(),
            c["reason"].as_str().unwrap().into(),
        )
    }

    fn writes(&self) -> Vec<String> {
        self.gateway.writes.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn accepted_writes_are_pending_until_read_back_confirms() {
    let a = AsyncHarness::new().await;
    let obj: PersonaAccessControl = serde_json::from_value(json!({
        "apiVersion": "accessplane.io/v1alpha1", "kind": "PersonaAccessControl",
        "metadata": {"name": "analysts", "namespace": NS},
        "spec": {"connectionRef": {"name": "serval"}, "clusterId": "c1", "virtualServerId": "b2c3d4e5-f6a7-8901-bcde-f12345678901",
                 "personaRole": "analyst", "type": "ALLOWLIST"}
    }))
    .unwrap();
    a.api().create(&PostParams::default(), &obj).await.unwrap();

    // Create: accepted, invisible for two reads, then Ready. Never sent twice.
    let first_poll = a.pass().await.unwrap();
    assert_eq!(a.ready(), ("False".into(), "Pending".into()));
    assert!(
        first_poll <= Duration::from_secs(2),
        "confirmation starts quickly: {first_poll:?}"
    );
    a.h.advance(Duration::from_secs(30));
    let later_poll = a.pass().await.unwrap();
    assert!(
        later_poll > first_poll,
        "read-backs back off: {later_poll:?}"
    );
    assert_eq!(a.ready(), ("False".into(), "Pending".into()));
    a.pass().await;
    a.pass().await;
    assert_eq!(a.ready(), ("True".into(), "Available".into()));
    assert_eq!(
        a.writes(),
        vec!["create b2c3d4e5-f6a7-8901-bcde-f12345678901_analyst"]
    );
    let obj =
        a.h.kube
            .get(
                "accessplane.io/v1alpha1",
                "personaaccesscontrols",
                NS,
                "analysts",
            )
            .unwrap();
    assert!(
        obj["status"].get("pending").is_none(),
        "pending cleared once confirmed"
    );
    assert_eq!(
        obj["status"]["id"],
        "b2c3d4e5-f6a7-8901-bcde-f12345678901_analyst"
    );

    // Update: Pending while the old value still shows, no second PUT.
    a.api()
        .patch(
            "analysts",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "DENYLIST"}})),
        )
        .await
        .unwrap();
    a.pass().await;
    assert_eq!(a.ready(), ("False".into(), "Pending".into()));
    for _ in 0..4 {
        a.pass().await;
    }
    assert_eq!(a.ready(), ("True".into(), "Available".into()));
    assert_eq!(
        a.writes()
            .iter()
            .filter(|w| w.starts_with("update"))
            .count(),
        1
    );

    // Delete: the finalizer stays until the read-back shows it gone.
    a.api()
        .delete("analysts", &DeleteParams::default())
        .await
        .unwrap();
    a.pass().await;
    assert!(
        a.api().get_opt("analysts").await.unwrap().is_some(),
        "kept while the delete is pending"
    );
    for _ in 0..4 {
        a.pass().await;
    }
    assert!(
        a.api().get_opt("analysts").await.unwrap().is_none(),
        "released once gone"
    );
    assert_eq!(
        a.writes()
            .iter()
            .filter(|w| w.starts_with("delete"))
            .count(),
        1
    );
    assert!(a.h.event_reasons().contains(&"Deleted".to_string()));
}

/// A status computed from a stale cached copy replaces the stored status as a whole: a
/// `pending` mark (or a condition) written since that copy was read cannot survive it.
#[tokio::test]
async fn status_written_from_a_stale_copy_leaves_nothing_behind() {
    let h = Harness::new().await;
    h.apply_profile("oncall", json!({"name": "On-call"})).await;
    let api = h.profiles();
    let stale = api.get("oncall").await.unwrap();
    api.patch_status(
        "oncall",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"id": "ap-1", "pending": {"operation": "Create", "generation": 1, "requestedAt": "2026-01-01T00:00:00Z"},
            "conditions": [{"type": "Synced", "status": "False", "reason": "ReconcileError", "message": "x", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
    )
    .await
    .unwrap();
    let wanted = json!({"id": "ap-1", "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    accessplane::base::kube_ops::write_status(&api, &stale, wanted.clone())
        .await
        .unwrap();
    assert_eq!(h.object("oncall").unwrap()["status"], wanted);
}
