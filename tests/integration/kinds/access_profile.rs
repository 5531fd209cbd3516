//! AccessProfile end to end: real engine + real Serval client against the fakes.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::fake_http::{Fault, FaultMatch};
use crate::support::fake_serval::PROFILES_PATH;
use crate::support::harness::{CLIENT_SECRET, Harness, TEAM, capture_trace_text, requeue_of};

fn spec() -> serde_json::Value {
    json!({
        "name": "Payments on-call",
        "description": "Break-glass access",
        "matchingCriteria": {"groups": {"includedGroupIds": ["g-oncall", "g-sre"], "excludedGroupIds": []}},
        "grants": {"appResourceRoles": [{"appResourceRoleId": "role-db-read"}], "workflows": [{"workflowId": "wf-approval"}]}
    })
}

#[tokio::test]
async fn create_records_id_and_becomes_ready() {
    let h = Harness::new().await;
    h.apply_profile("oncall", spec()).await;
    h.settle("oncall", 4).await;

    assert_eq!(h.cond("oncall", "Ready").0, "True");
    assert_eq!(h.cond("oncall", "Synced").0, "True");
    let profiles = h.serval.profiles();
    assert_eq!(profiles.len(), 1);
    let id = profiles[0]["id"].as_str().unwrap();
    assert_eq!(h.status_id("oncall").as_deref(), Some(id));
    let obj = h.object("oncall").unwrap();
    // One metadata write: the finalizer and the create mark, before the create. The id
    // is in status only.
    let annotations = &obj["metadata"]["annotations"];
    assert!(annotations["accessplane.io/create-attempted"].is_string());
    assert!(annotations.get("accessplane.io/external-id").is_none());
    assert!(annotations.get("accessplane.io/create-pending").is_none());
    assert_eq!(
        obj["metadata"]["finalizers"],
        json!(["accessplane.io/finalizer"])
    );
    let metadata_writes: Vec<_> = h
        .kube
        .writes()
        .into_iter()
        .filter(|r| r.path.contains("/accessprofiles/") && !r.path.ends_with("/status"))
        .collect();
    assert_eq!(metadata_writes.len(), 1, "{metadata_writes:#?}");
    assert_eq!(obj["status"]["isTeamDefault"], false);
    assert_eq!(obj["status"]["observedGeneration"], 1);
    assert_eq!(profiles[0]["teamId"], TEAM);
    assert_eq!(h.serval.count("POST", PROFILES_PATH), 1);
    assert!(h.event_reasons().contains(&"Created".to_string()));
}

#[tokio::test]
async fn converged_resync_makes_no_writes_anywhere() {
    let h = Harness::new().await;
    h.apply_profile("oncall", spec()).await;
    h.settle("oncall", 4).await;
    h.kube.clear_requests();
    h.serval.clear_requests();

    let action = h.reconcile("oncall").await.unwrap();
    assert!(
        h.kube.writes().is_empty(),
        "no Kubernetes writes, events included: {:?}",
        h.kube.writes()
    );
    assert_eq!(h.serval.writes(), 0);
    assert_eq!(
        h.serval.count("GET", PROFILES_PATH),
        1,
        "one read to detect drift"
    );
    let requeue = format!("{action:?}");
    assert!(requeue.contains("requeue_after: Some("), "{requeue}");
}

#[tokio::test]
async fn adopts_by_external_id_and_orphans_by_default() {
    let h = Harness::new().await;
    let id = h
        .serval
        .seed_profile(json!({"teamId": TEAM, "name": "Existing", "description": "made in the UI"}));
    h.apply_profile(
        "existing",
        json!({"externalId": id, "description": "managed now"}),
    )
    .await;
    h.settle("existing", 4).await;

    assert_eq!(h.cond("existing", "Ready").0, "True");
    assert_eq!(
        h.serval.count("POST", PROFILES_PATH),
        0,
        "adoption never creates"
    );
    let upstream = h.serval.profile(&id).unwrap();
    assert_eq!(upstream["description"], "managed now");
    assert_eq!(upstream["name"], "Existing", "omitted name stays unmanaged");

    h.delete_profile("existing").await;
    h.settle("existing", 3).await;
    assert!(h.object("existing").is_none(), "finalizer released");
    assert!(
        h.serval.profile(&id).is_some(),
        "adopted objects are orphaned unless deletionPolicy: Delete"
    );
}

#[tokio::test]
async fn adopted_id_that_does_not_exist_is_not_created() {
    let h = Harness::new().await;
    h.apply_profile(
        "ghost",
        json!({"externalId": "ap-missing", "name": "Ghost"}),
    )
    .await;
    h.settle("ghost", 3).await;
    let (status, reason, message) = h.cond("ghost", "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "NotFound"));
    assert!(message.contains("ap-missing"), "{message}");
    assert_eq!(h.serval.writes(), 0);
}

#[tokio::test]
async fn drift_is_corrected_with_one_update_of_the_drifted_field() {
    let h = Harness::new().await;
    h.apply_profile("oncall", spec()).await;
    h.settle("oncall", 4).await;
    let id = h.status_id("oncall").unwrap();
    h.serval
        .edit_profile(&id, |p| p["description"] = json!("changed in the UI"));
    h.serval.clear_requests();

    h.settle("oncall", 3).await;
    let puts: Vec<_> = h
        .serval
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].body,
        Some(json!({"description": "Break-glass access"}))
    );
    assert_eq!(
        h.serval.profile(&id).unwrap()["description"],
        "Break-glass access"
    );
    assert!(h.event_reasons().contains(&"DriftCorrected".to_string()));
    assert_eq!(h.cond("oncall", "Ready").0, "True");
}

#[tokio::test]
async fn spec_change_replaces_lists_and_keeps_unmanaged_ones() {
    let h = Harness::new().await;
    h.apply_profile("oncall", spec()).await;
    h.settle("oncall", 4).await;
    let id = h.status_id("oncall").unwrap();
    h.serval.clear_requests();

    h.edit_profile_spec(
        "oncall",
        json!({"grants": {"appResourceRoles": null, "workflows": [{"workflowId": "wf-new"}]}}),
    )
    .await;
    h.settle("oncall", 3).await;
    let put = h
        .serval
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .expect("one update");
    assert_eq!(
        put.body,
        Some(
            json!({"grants": {"appResourceRoles": [{"appResourceRoleId": "role-db-read"}], "workflows": [{"workflowId": "wf-new"}]}})
        )
    );
    let upstream = h.serval.profile(&id).unwrap();
    assert_eq!(
        upstream["grants"]["workflows"],
        json!([{"workflowId": "wf-new"}])
    );
    assert!(h.event_reasons().contains(&"Updated".to_string()));
    assert_eq!(
        h.object("oncall").unwrap()["status"]["observedGeneration"],
        2
    );
}

#[tokio::test]
async fn observe_reports_drift_without_writing() {
    let h = Harness::new().await;
    let id = h
        .serval
        .seed_profile(json!({"teamId": TEAM, "name": "Watched", "description": "actual"}));
    h.apply_profile(
        "watched",
        json!({"externalId": id, "managementPolicy": "Observe", "description": "desired"}),
    )
    .await;
    h.settle("watched", 3).await;
    let (status, reason, message) = h.cond("watched", "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Drifted"));
    assert!(message.contains("description"), "{message}");
    assert_eq!(h.serval.writes(), 0);

    // Observe never deletes either, whatever deletionPolicy says.
    h.edit_profile_spec("watched", json!({"deletionPolicy": "Delete"}))
        .await;
    h.delete_profile("watched").await;
    h.settle("watched", 3).await;
    assert!(h.object("watched").is_none());
    assert_eq!(h.serval.writes(), 0);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let h = Harness::new().await;
    h.serval.push_fault(
        FaultMatch::new("POST", PROFILES_PATH),
        Fault::Status {
            code: 429,
            retry_after: Some("2".into()),
            retry_after_ms: None,
            body: None,
        },
    );
    h.apply_profile("oncall", spec()).await;
    h.settle("oncall", 4).await;
    let posts: Vec<_> = h
        .serval
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == PROFILES_PATH)
        .collect();
    assert_eq!(posts.len(), 2, "429 then success");
    let gap = posts[1].at.duration_since(posts[0].at);
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    assert_eq!(h.serval.profiles().len(), 1);
    assert_eq!(h.cond("oncall", "Ready").0, "True");
}

#[tokio::test]
async fn server_errors_are_retried_then_converge() {
    let h = Harness::new().await;
    h.serval.fail_next("GET", PROFILES_PATH, 503, 2);
    let id = h
        .serval
        .seed_profile(json!({"teamId": TEAM, "name": "Existing"}));
    h.apply_profile("existing", json!({"externalId": id})).await;
    h.reconcile("existing").await;
    assert_eq!(h.cond("existing", "Ready").0, "True");
    assert_eq!(
        h.serval.count("GET", &format!("{PROFILES_PATH}/{id}")),
        3,
        "two 503s, then success within one pass"
    );
}

#[tokio::test]
async fn rejected_spec_is_terminal_and_not_hot_retried() {
    let h = Harness::new().await;
    h.serval.push_fault(
        FaultMatch::new("POST", PROFILES_PATH),
        Fault::Status {
            code: 400,
            retry_after: None,
            retry_after_ms: None,
            body: Some(
                json!({"code": "invalid_argument", "message": "group g-sre does not exist"}),
            ),
        },
    );
    for _ in 0..50 {
        h.serval
            .push_fault(FaultMatch::new("POST", PROFILES_PATH), Fault::status(400));
    }
    h.apply_profile("bad", spec()).await;

    // A minute of simulated time: reconcile whenever the controller would.
    let mut simulated = Duration::ZERO;
    while simulated < Duration::from_secs(60) {
        let action = h.reconcile("bad").await.unwrap();
        let wait = requeue_of(&action)
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_secs(1));
        simulated += wait;
        h.advance(wait);
    }
    let (status, reason, message) = h.cond("bad", "Synced");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TerminalError")
    );
    assert!(message.contains("group g-sre does not exist"), "{message}");
    assert!(
        h.serval.count("POST", PROFILES_PATH) <= 2,
        "{} creates",
        h.serval.count("POST", PROFILES_PATH)
    );

    // A spec change is tried at once.
    h.edit_profile_spec("bad", json!({"name": "Fixed"})).await;
    h.serval.clear_faults();
    h.settle("bad", 3).await;
    assert_eq!(h.cond("bad", "Ready").0, "True");
}

#[tokio::test]
async fn lost_create_response_leaves_exactly_one_object() {
    let h = Harness::new().await;
    h.serval.push_fault(
        FaultMatch::new("POST", PROFILES_PATH),
        Fault::ApplyThenDropConnection,
    );
    h.apply_profile("oncall", spec()).await;
    h.reconcile("oncall").await;
    assert_eq!(
        h.cond("oncall", "Synced").0,
        "False",
        "the create looked failed"
    );
    assert_eq!(h.serval.profiles().len(), 1, "but the server applied it");
    assert_eq!(h.cond("oncall", "Ready").1, "Creating");
    let pending =
        &h.object("oncall").unwrap()["metadata"]["annotations"]["accessplane.io/create-attempted"];
    assert!(pending.is_string(), "attempt recorded before the create");

    h.settle("oncall", 4).await;
    assert_eq!(
        h.serval.profiles().len(),
        1,
        "recovered by lookup, not created twice"
    );
    assert_eq!(h.serval.count("POST", PROFILES_PATH), 1);
    assert_eq!(
        h.status_id("oncall").as_deref(),
        h.serval.profiles()[0]["id"].as_str()
    );
    assert_eq!(h.cond("oncall", "Ready").0, "True");
}

#[tokio::test]
async fn ambiguous_recovery_stops_with_create_ambiguous() {
    let h = Harness::new().await;
    h.serval.push_fault(
        FaultMatch::new("POST", PROFILES_PATH),
        Fault::ApplyThenDropConnection,
    );
    h.apply_profile("oncall", spec()).await;
    h.reconcile("oncall").await;
    // Someone made a second profile with the same name meanwhile.
    h.serval
        .seed_profile(json!({"teamId": TEAM, "name": "Payments on-call"}));
    h.settle("oncall", 3).await;
    let (status, reason, message) = h.cond("oncall", "Synced");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CreateAmbiguous")
    );
    assert!(message.contains("spec.externalId"), "{message}");
    assert_eq!(
        h.cond("oncall", "Ready"),
        ("False".into(), "CreateAmbiguous".into(), message)
    );
    assert_eq!(h.serval.profiles().len(), 2, "no third object");
}

#[tokio::test]
async fn delete_policy_removes_upstream_and_orphan_keeps_it() {
    let h = Harness::new().await;
    h.apply_profile("doomed", spec()).await;
    h.apply_profile("kept", json!({"name": "Kept", "deletionPolicy": "Orphan"}))
        .await;
    h.settle("doomed", 4).await;
    h.settle("kept", 4).await;
    let doomed = h.status_id("doomed").unwrap();
    let kept = h.status_id("kept").unwrap();

    h.delete_profile("doomed").await;
    h.delete_profile("kept").await;
    h.settle("doomed", 3).await;
    h.settle("kept", 3).await;
    assert!(h.object("doomed").is_none() && h.object("kept").is_none());
    assert!(h.serval.profile(&doomed).is_none());
    assert!(h.serval.profile(&kept).is_some());
    assert!(h.event_reasons().contains(&"Deleted".to_string()));
}

#[tokio::test]
async fn not_found_on_delete_completes() {
    let h = Harness::new().await;
    h.apply_profile("gone", spec()).await;
    h.settle("gone", 4).await;
    let id = h.status_id("gone").unwrap();
    // Deleted by someone else between our read and our delete.
    h.serval
        .push_fault(FaultMatch::new("DELETE", PROFILES_PATH), Fault::status(404));
    h.delete_profile("gone").await;
    h.settle("gone", 3).await;
    assert!(h.object("gone").is_none());
    assert_eq!(
        h.serval.count("DELETE", &format!("{PROFILES_PATH}/{id}")),
        1
    );
}

#[tokio::test]
async fn team_default_profile_is_never_deleted() {
    let h = Harness::new().await;
    let id = h
        .serval
        .seed_profile(json!({"teamId": TEAM, "name": "Default", "isTeamDefault": true}));
    h.apply_profile(
        "default",
        json!({"externalId": id, "deletionPolicy": "Delete"}),
    )
    .await;
    h.settle("default", 3).await;
    assert_eq!(
        h.object("default").unwrap()["status"]["isTeamDefault"],
        true
    );
    h.delete_profile("default").await;
    h.settle("default", 3).await;
    let (status, reason, message) = h.cond("default", "Synced");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TerminalError")
    );
    assert!(message.contains("deletionPolicy: Orphan"), "{message}");
    assert!(h.serval.profile(&id).is_some());
    assert_eq!(h.serval.count("DELETE", PROFILES_PATH), 0);

    // The documented way out.
    h.edit_profile_spec("default", json!({"deletionPolicy": "Orphan"}))
        .await;
    h.settle("default", 3).await;
    assert!(h.object("default").is_none());
}

#[tokio::test]
async fn waits_for_its_connection() {
    let h = Harness::new().await;
    h.apply_profile(
        "early",
        json!({"connectionRef": {"name": "not-yet"}, "name": "Early"}),
    )
    .await;
    h.settle("early", 3).await;
    let (status, reason, message) = h.cond("early", "Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "WaitingForDependency")
    );
    assert!(message.contains("not-yet"), "{message}");
    assert_eq!(h.serval.writes(), 0);
}

#[tokio::test]
async fn credentials_never_reach_logs_status_or_events() {
    let (logs, _capture) = capture_trace_text();

    let h = Harness::new().await;
    h.apply_profile("oncall", spec()).await;
    h.settle("oncall", 4).await;
    h.serval.fail_next("GET", PROFILES_PATH, 401, 1);
    h.serval.revoke_tokens();
    h.settle("oncall", 2).await;
    h.put_secret(
        "serval-credentials",
        json!({"clientId": "operator-client", "clientSecret": "SENTINEL-wrong-secret"}),
    )
    .await;
    h.reconcile_connection("serval").await;

    let text = logs.text();
    assert!(text.contains("oncall"), "logs were captured");
    for needle in [CLIENT_SECRET, "SENTINEL-wrong-secret"] {
        assert!(!text.contains(needle), "secret in logs");
        for obj in h
            .kube
            .list("accessplane.io/v1alpha1", "accessprofiles", None)
            .into_iter()
            .chain(h.kube.list("accessplane.io/v1alpha1", "connections", None))
            .chain(h.kube.events(crate::support::harness::NS))
        {
            assert!(!obj.to_string().contains(needle), "secret in {obj}");
        }
    }
}

#[tokio::test]
async fn rotated_secret_is_used_without_restart() {
    let h = Harness::new().await;
    let exchanges = h.serval.token_exchanges();
    h.put_secret(
        "serval-credentials",
        json!({"clientId": "operator-client", "clientSecret": "wrong"}),
    )
    .await;
    h.reconcile_connection("serval").await;
    let (status, reason) = h.connection_ready("serval");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AuthenticationFailed")
    );

    h.serval.add_client("rotated-client", "rotated-secret");
    h.put_secret(
        "serval-credentials",
        json!({"clientId": "rotated-client", "clientSecret": "rotated-secret"}),
    )
    .await;
    h.reconcile_connection("serval").await;
    assert_eq!(
        h.connection_ready("serval"),
        ("True".into(), "Verified".into())
    );
    assert!(
        h.serval.token_exchanges() > exchanges,
        "a new token was exchanged"
    );

    h.apply_profile("oncall", spec()).await;
    h.settle("oncall", 4).await;
    assert_eq!(h.cond("oncall", "Ready").0, "True");
}

#[tokio::test]
async fn connection_reasons_name_the_problem() {
    let h = Harness::new().await;
    h.apply_connection(
        "no-secret",
        json!({"serval": {"credentialsSecretRef": {"name": "absent"}}}),
    )
    .await;
    h.reconcile_connection("no-secret").await;
    assert_eq!(h.connection_ready("no-secret").1, "SecretNotFound");

    h.put_secret("partial", json!({"clientId": "x"})).await;
    h.apply_connection(
        "partial",
        json!({"serval": {"credentialsSecretRef": {"name": "partial"}}}),
    )
    .await;
    h.reconcile_connection("partial").await;
    assert_eq!(h.connection_ready("partial").1, "SecretKeyMissing");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    h.apply_connection("down", json!({"serval": {"baseUrl": format!("http://{closed}"), "credentialsSecretRef": {"name": "serval-credentials"}}})).await;
    let started = Instant::now();
    h.reconcile_connection("down").await;
    assert_eq!(h.connection_ready("down").1, "Unreachable");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn connection_is_kept_while_in_use() {
    let h = Harness::new().await;
    h.apply_profile("user", spec()).await;
    h.settle("user", 4).await;
    let api: kube::Api<accessplane::api::Connection> =
        kube::Api::namespaced(h.client(), crate::support::harness::NS);
    api.delete("serval", &Default::default()).await.unwrap();
    h.reconcile_connection("serval").await;
    assert_eq!(h.connection_ready("serval").1, "InUse");

    h.delete_profile("user").await;
    h.settle("user", 3).await;
    h.reconcile_connection("serval").await;
    assert!(
        h.kube
            .get(
                "accessplane.io/v1alpha1",
                "connections",
                crate::support::harness::NS,
                "serval"
            )
            .is_none()
    );
}

/// The provider's request planning (`create_calls`, `update_calls`: what
/// `accessplane plan` will show) is what a reconcile then sends, request for request,
/// computed through a read-only client (which would refuse to send any of them).
#[tokio::test]
async fn planned_requests_are_the_requests_a_reconcile_sends() {
    use accessplane::engine::{Cx, Provider};
    use accessplane::providers::serval::AccessProfileProvider;
    use serde_json::Value;

    let h = Harness::new().await;
    let upstream = h.read_only_serval();
    let sent = |method: &str| -> Vec<(String, Value)> {
        h.serval
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.starts_with("/v2/access-profiles"))
            .map(|r| (r.path, r.body.unwrap_or(Value::Null)))
            .collect()
    };
    let planned = |calls: Vec<accessplane::upstream::Call>| -> Vec<(String, Value)> {
        calls
            .into_iter()
            .map(|c| (format!("/{}", c.path), c.body.unwrap_or(Value::Null)))
            .collect()
    };

    h.apply_profile("oncall", spec()).await;
    let obj = h.profiles().get("oncall").await.unwrap();
    let cx = Cx {
        obj: &obj,
        upstream: &upstream,
        inputs: &(),
    };
    let plan = planned(AccessProfileProvider.create_calls(&cx));
    h.settle("oncall", 4).await;
    assert_eq!(sent("POST"), plan);

    h.edit_profile_spec(
        "oncall",
        json!({"description": "Changed", "grants": {"workflows": [{"workflowId": "wf-other"}]}}),
    )
    .await;
    let obj = h.profiles().get("oncall").await.unwrap();
    let cx = Cx {
        obj: &obj,
        upstream: &upstream,
        inputs: &(),
    };
    let id = h.status_id("oncall").unwrap();
    let observed = AccessProfileProvider
        .observe(&cx, &id)
        .await
        .unwrap()
        .expect("the profile");
    let diff = AccessProfileProvider.diff(&cx, &observed);
    assert_eq!(diff.fields, ["description", "grants"]);
    let plan = planned(AccessProfileProvider.update_calls(&cx, &observed, &diff));
    h.settle("oncall", 4).await;
    assert_eq!(sent("PUT"), plan);
}

/// The engine's plan of one resource (`accessplane plan`) through a read-only client:
/// create (with the requests a reconcile then sends), update of the differing fields,
/// no-op, adoption by `externalId`, not found, drift under `Observe` — and no write
/// reaches Serval while planning.
#[tokio::test]
async fn the_engine_plans_each_outcome_without_writing() {
    use accessplane::api::AccessProfile;
    use accessplane::engine::plan::{Planned, plan};
    use accessplane::providers::serval::AccessProfileProvider;

    let h = Harness::new().await;
    let upstream = h.read_only_serval();
    let manifest = |name: &str, spec: serde_json::Value| -> AccessProfile {
        let mut spec = spec;
        spec["connectionRef"] = json!({"name": "serval"});
        spec["teamId"] = json!(crate::support::harness::TEAM);
        serde_json::from_value(
            json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
            "metadata": {"name": name, "namespace": crate::support::harness::NS}, "spec": spec}),
        )
        .unwrap()
    };
    let planned = |obj: AccessProfile| {
        let upstream = upstream.clone();
        async move { plan(&AccessProfileProvider, &obj, &upstream, &(), None, None).await }
    };

    let created = planned(manifest("oncall", spec())).await;
    let Planned::Create { requests } = &created else {
        panic!("{created:?}");
    };
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].body.as_ref().unwrap()["name"],
        "Payments on-call"
    );
    assert_eq!(h.serval.writes(), 0, "planning wrote nothing");

    h.apply_profile("oncall", spec()).await;
    h.settle("oncall", 4).await;
    let id = h.status_id("oncall").unwrap();
    let writes = h.serval.writes();
    let in_cluster = h.profiles().get("oncall").await.unwrap();
    let same = planned(in_cluster.clone()).await;
    assert!(
        matches!(&same, Planned::NoOp { id: i, adopted: false } if *i == id),
        "{same:?}"
    );

    let mut edited = in_cluster.clone();
    edited.spec.description = Some("Changed".into());
    let update = planned(edited).await;
    let Planned::Update {
        fields,
        requests,
        adopted: false,
        unresolved: None,
        ..
    } = &update
    else {
        panic!("{update:?}");
    };
    assert_eq!(fields, &["description"]);
    assert_eq!(requests[0].method, "PUT");
    assert_eq!(requests[0].body, Some(json!({"description": "Changed"})));

    let seeded = h.serval.seed_profile(
        json!({"teamId": crate::support::harness::TEAM, "name": "Made by hand", "description": "old"}),
    );
    let adopt = planned(manifest(
        "adopted",
        json!({"externalId": seeded, "description": "new"}),
    ))
    .await;
    assert!(
        matches!(&adopt, Planned::Update { adopted: true, fields, .. } if fields == &["description"]),
        "{adopt:?}"
    );
    let missing = planned(manifest("missing", json!({"externalId": "ap-nope"}))).await;
    assert!(
        matches!(&missing, Planned::Blocked { reason: "NotFound", message } if message.contains("ap-nope")),
        "{missing:?}"
    );
    let observed = planned(manifest(
        "watched",
        json!({"externalId": seeded, "managementPolicy": "Observe", "description": "new"}),
    ))
    .await;
    assert!(
        matches!(&observed, Planned::Drifted { fields, .. } if fields == &["description"]),
        "{observed:?}"
    );
    assert_eq!(h.serval.writes(), writes, "planning wrote nothing");
}
