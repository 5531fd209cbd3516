//! PersonaAccessControl end to end: the engine's asynchronous path with the real
//! Instaclustr client against the fake gateway (writes visible only after a delay).

use std::sync::Arc;
use std::time::Duration;

use accessplane::api::PersonaAccessControl;
use accessplane::providers::instaclustr::PersonaAccessControlProvider;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::env::{self, Ic, Passes, Setup};
use crate::support::fake_instaclustr::{NO_OPERATION, RUNNING};
use crate::support::harness::NS;

const CLUSTER: &str = "gw-1";
const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";
const TOOL_A: &str = "7a1f0000-0000-4000-8000-000000000001";
const TOOL_B: &str = "7a200000-0000-4000-8000-000000000002";
const DELAY: Duration = Duration::from_millis(300);

type Env = env::Env<Ic, Passes<PersonaAccessControl, PersonaAccessControlProvider>>;

impl Env {
    /// The gateway cluster's virtual server, its writes visible after `DELAY`; the
    /// Connection limited to `rate` (requests a second, burst) if given.
    async fn started(rate: Option<(u32, u32)>) -> Self {
        let mut setup = Setup::<Ic>::start().await;
        setup.up.ic.add_virtual_server(CLUSTER, VS);
        setup.up.ic.set_visibility_delay(DELAY);
        if let Some((rps, burst)) = rate {
            setup = setup.rate_limit(rps, burst);
        }
        setup.passes(PersonaAccessControlProvider::default()).await
    }

    async fn apply(&self, name: &str, role: &str, extra: Value) {
        let mut spec = json!({"connectionRef": {"name": "ic"}, "clusterId": CLUSTER, "virtualServerId": VS, "personaRole": role, "type": "ALLOWLIST"});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        self.create(name, spec).await;
    }

    /// (status, reason) of Ready.
    fn readiness(&self, name: &str) -> (String, String) {
        let (s, r, _) = self.ready(name);
        (s, r)
    }

    /// Reconciles `name` every `step` until Ready=True (at most `n` passes).
    async fn until_ready(&self, name: &str, n: usize) -> usize {
        for i in 0..n {
            self.pass(name).await;
            if self.readiness(name).0 == "True" {
                return i + 1;
            }
            tokio::time::sleep(Duration::from_millis(450)).await;
        }
        panic!("{name} not Ready: {:?}", self.readiness(name));
    }
}

fn id(role: &str) -> String {
    format!("{VS}_{role}")
}

#[tokio::test]
async fn create_is_pending_until_visible_then_ready() {
    let env = Env::started(None).await;
    // Two passes must fit before the create shows, even on a starved machine.
    let delay = Duration::from_secs(2);
    env.up.ic.set_visibility_delay(delay);
    env.apply("analysts", "analyst", json!({"tools": [TOOL_A]}))
        .await;
    env.pass("analysts").await;
    assert_eq!(
        env.readiness("analysts"),
        ("False".into(), "Pending".into())
    );
    env.pass("analysts").await;
    assert_eq!(
        env.readiness("analysts"),
        ("False".into(), "Pending".into()),
        "not Ready before the gateway shows it"
    );
    assert_eq!(
        env.up.ic.count("POST", "/cluster-management"),
        1,
        "accepted once, never re-sent while pending"
    );

    // Visible, and past the shared List window.
    tokio::time::sleep(delay + Duration::from_millis(150)).await;
    env.pass("analysts").await;
    assert_eq!(
        env.readiness("analysts"),
        ("True".into(), "Available".into())
    );
    let obj = env.h().get("personaaccesscontrols", "analysts").unwrap();
    assert_eq!(obj["status"]["id"], id("analyst"));
    assert_eq!(obj["status"]["clusterId"], CLUSTER);
    assert!(obj["status"].get("pending").is_none());
    assert_eq!(
        env.up.ic.list_calls(CLUSTER),
        0,
        "a lone confirmation is one GET, not a List of the cluster"
    );
}

#[tokio::test]
async fn update_is_pending_then_ready_and_delete_waits_for_404() {
    let env = Env::started(None).await;
    env.apply("analysts", "analyst", json!({"tools": [TOOL_A]}))
        .await;
    env.until_ready("analysts", 20).await;

    env.api()
        .patch(
            "analysts",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "DENYLIST", "tools": [TOOL_A, TOOL_B]}})),
        )
        .await
        .unwrap();
    env.pass("analysts").await;
    assert_eq!(
        env.readiness("analysts"),
        ("False".into(), "Pending".into())
    );
    env.until_ready("analysts", 20).await;
    assert_eq!(env.up.ic.count("PUT", "/cluster-management"), 1);
    let control = env.up.ic.control(&id("analyst")).unwrap();
    assert_eq!(control["type"], "DENYLIST");

    env.api()
        .delete("analysts", &DeleteParams::default())
        .await
        .unwrap();
    env.pass("analysts").await;
    assert!(
        env.api().get_opt("analysts").await.unwrap().is_some(),
        "finalizer kept while the gateway still shows it"
    );
    for _ in 0..20 {
        if env.api().get_opt("analysts").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(450)).await;
        env.pass("analysts").await;
    }
    assert!(env.api().get_opt("analysts").await.unwrap().is_none());
    assert!(env.up.ic.control(&id("analyst")).is_none());
    assert_eq!(env.up.ic.count("DELETE", "/cluster-management"), 1);
}

#[tokio::test]
async fn adopts_existing_control_and_corrects_drift() {
    let env = Env::started(None).await;
    env.up.ic.seed_control(
        json!({"virtualServerId": VS, "personaRole": "auditor", "type": "DENYLIST", "tools": []}),
    );
    env.apply(
        "auditors",
        "auditor",
        json!({"type": "DENYLIST", "tools": []}),
    )
    .await;
    env.until_ready("auditors", 5).await;
    assert_eq!(
        env.up.ic.count("POST", "/cluster-management"),
        0,
        "adopted, not created"
    );
    let obj = env.h().get("personaaccesscontrols", "auditors").unwrap();
    assert_eq!(
        obj["metadata"]["annotations"]["accessplane.io/adopted"],
        "true"
    );

    env.up
        .ic
        .edit_control(&id("auditor"), |c| c["tools"] = json!([TOOL_B]));
    tokio::time::sleep(Duration::from_millis(450)).await; // past the shared List window
    env.pass("auditors").await;
    assert_eq!(
        env.up.ic.count("PUT", "/cluster-management"),
        1,
        "drift corrected"
    );
    let reasons = env.h().event_reasons();
    assert!(
        reasons.contains(&"DriftCorrectionRequested".to_string())
            && !reasons.contains(&"UpdateRequested".to_string()),
        "the Event says the write corrects drift: {reasons:?}"
    );
    env.until_ready("auditors", 20).await;
    assert_eq!(
        env.up.ic.control(&id("auditor")).unwrap()["tools"],
        json!([])
    );

    // Adopted: deleting the resource leaves the control.
    env.api()
        .delete("auditors", &DeleteParams::default())
        .await
        .unwrap();
    env.pass("auditors").await;
    assert!(env.api().get_opt("auditors").await.unwrap().is_none());
    assert!(env.up.ic.control(&id("auditor")).is_some());
}

#[tokio::test]
async fn observe_reports_drift_without_writes() {
    let env = Env::started(None).await;
    env.up.ic.seed_control(json!({"virtualServerId": VS, "personaRole": "viewer", "type": "ALLOWLIST", "tools": [TOOL_A]}));
    env.apply(
        "viewers",
        "viewer",
        json!({"managementPolicy": "Observe", "tools": [TOOL_B]}),
    )
    .await;
    env.pass("viewers").await;
    assert_eq!(env.readiness("viewers"), ("False".into(), "Drifted".into()));
    assert_eq!(env.up.ic.writes(), 0);
}

#[tokio::test]
async fn busy_cluster_gets_no_writes_until_it_runs() {
    let env = Env::started(None).await;
    env.up
        .ic
        .set_cluster_state(CLUSTER, RUNNING, "OPERATION_IN_PROGRESS");
    env.apply("analysts", "analyst", json!({})).await;
    env.pass("analysts").await;
    env.pass("analysts").await;
    let (status, reason, message) =
        env.h()
            .condition_of("personaaccesscontrols", "analysts", "Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "WaitingForDependency")
    );
    assert!(message.contains("OPERATION_IN_PROGRESS"), "{message}");
    assert_eq!(env.up.ic.writes(), 0);
    assert_eq!(env.up.ic.writes_while_not_running(), 0);

    env.up.ic.set_cluster_state(CLUSTER, RUNNING, NO_OPERATION);
    env.until_ready("analysts", 20).await;
    assert_eq!(env.up.ic.writes_while_not_running(), 0);

    env.up
        .ic
        .set_cluster_state(CLUSTER, RUNNING, "OPERATION_FAILED");
    env.api()
        .patch(
            "analysts",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "DENYLIST"}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await; // past the cluster-state cache
    env.pass("analysts").await;
    let (_, reason, message) = env
        .h()
        .condition_of("personaaccesscontrols", "analysts", "Ready");
    assert_eq!(reason, "DependencyFailed");
    assert!(message.contains("last operation failed"), "{message}");
}

#[tokio::test]
async fn fifty_pending_controls_are_confirmed_from_one_list_per_round() {
    let env = Env::started(Some((100, 100))).await;
    for i in 0..50 {
        env.apply(&format!("role-{i}"), &format!("role-{i}"), json!({}))
            .await;
    }
    // Round 0: every create is accepted.
    for i in 0..50 {
        env.pass(&format!("role-{i}")).await;
    }
    assert_eq!(env.up.ic.count("POST", "/cluster-management"), 50);
    tokio::time::sleep(DELAY).await;
    env.up.ic.clear_requests();

    // One poll round: all 50 confirmed concurrently.
    let passes = (0..50).map(|i| {
        let engine = env.run.engine.clone();
        let api = env.api();
        async move {
            let obj = api.get(&format!("role-{i}")).await.unwrap();
            accessplane::engine::reconcile(Arc::new(obj), engine)
                .await
                .unwrap();
        }
    });
    futures::future::join_all(passes).await;
    for i in 0..50 {
        assert_eq!(env.readiness(&format!("role-{i}")).0, "True", "role-{i}");
    }
    assert!(
        env.up.ic.list_calls(CLUSTER) <= 2,
        "{} list calls",
        env.up.ic.list_calls(CLUSTER)
    );
    // Only the first read of the round, before a second one showed demand, is a GET.
    assert!(env.up.ic.get_calls() <= 1, "{} GETs", env.up.ic.get_calls());
}

#[tokio::test]
async fn rate_limited_storm_converges_within_the_configured_rate() {
    // The account allows 8 requests per second; the Connection is configured for 5/s.
    let env = Env::started(Some((5, 1))).await;
    env.up.ic.set_rate_limit(8, Duration::from_secs(1));
    env.up.ic.fail_next("POST", "/cluster-management", 429, 3);
    for i in 0..4 {
        env.apply(&format!("storm-{i}"), &format!("storm-{i}"), json!({}))
            .await;
    }
    for i in 0..4 {
        env.until_ready(&format!("storm-{i}"), 40).await;
    }
    assert!(
        env.up.ic.max_requests_in_window(Duration::from_secs(1)) <= 6,
        "{}",
        env.up.ic.max_requests_in_window(Duration::from_secs(1))
    );
    assert_eq!(env.up.ic.controls(CLUSTER).len(), 4);
}

#[tokio::test]
async fn persona_roles_needing_escapes_work_end_to_end() {
    let env = Env::started(None).await;
    env.apply("ops", "data analyst/ops é", json!({"tools": [TOOL_A]}))
        .await;
    env.until_ready("ops", 20).await;
    assert!(env.up.ic.control(&id("data analyst/ops é")).is_some());
    env.api()
        .delete("ops", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..20 {
        env.pass("ops").await;
        if env.api().get_opt("ops").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(450)).await;
    }
    assert!(env.api().get_opt("ops").await.unwrap().is_none());
    assert!(env.up.ic.control(&id("data analyst/ops é")).is_none());
}

/// A pass working from a stale cached copy (one that does not show the create marks the
/// engine wrote yet) must not take the operator's own new control for a pre-existing one:
/// adopting would switch its default deletion policy to Orphan.
#[tokio::test]
async fn a_stale_copy_never_adopts_our_own_create() {
    let env = Env::started(None).await;
    env.up.ic.set_visibility_delay(Duration::ZERO);
    env.apply("analysts", "analyst", json!({})).await;
    // The copy a lagging cache holds: with the finalizer, before the create marks.
    env.kube
        .merge_patch(
            "accessplane.io/v1alpha1",
            "personaaccesscontrols",
            NS,
            "analysts",
            json!({"metadata": {"finalizers": ["accessplane.io/finalizer"]}}),
        )
        .unwrap();
    let stale = env.api().get("analysts").await.unwrap();
    env.pass("analysts").await;
    assert!(
        env.up.ic.control(&id("analyst")).is_some(),
        "created upstream"
    );

    let outcome = accessplane::engine::reconcile(Arc::new(stale), env.run.engine.clone()).await;
    assert!(
        outcome.is_err(),
        "the stale pass must fail (409) rather than adopt: {outcome:?}"
    );
    env.pass("analysts").await;
    env.pass("analysts").await;
    let obj = env.h().get("personaaccesscontrols", "analysts").unwrap();
    assert!(
        obj["metadata"]["annotations"]
            .get("accessplane.io/adopted")
            .is_none(),
        "{obj}"
    );
    assert!(!env.h().event_reasons().contains(&"Adopted".to_string()));
    assert_eq!(
        env.readiness("analysts"),
        ("True".into(), "Available".into())
    );
}
