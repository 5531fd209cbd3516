//! The whole `accessplane run` wiring against the fake API server and fake Serval:
//! a Connection becomes Ready from its Secret, and an AccessProfile that uses it is created upstream.

use std::time::Duration;

use accessplane::runtime::{RunConfig, run_with};
use futures::FutureExt;
use serde_json::json;
use tokio::sync::oneshot;

use crate::support::env::serval_world;
use crate::support::fake_kube::FakeKube;
use crate::support::fake_serval::FakeServal;
use crate::support::harness::ready_reason;

const API: &str = "accessplane.io/v1alpha1";

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until `plural/name` in `team-a` has the Ready condition `want` ("status/reason").
async fn until_ready(kube: &FakeKube, plural: &str, name: &str, want: &str) {
    eventually(&format!("{plural}/{name} to be {want}"), || {
        ready_reason(kube.get(API, plural, "team-a", name)).as_deref() == Some(want)
    })
    .await;
}
struct Running {
    serval: FakeServal,
    kube: FakeKube,
    stop: oneshot::Sender<()>,
    operator: tokio::task::JoinHandle<Result<(), accessplane::runtime::RuntimeError>>,
}

/// A Secret, a Connection and an AccessProfile in `team-a`, and the operator running.
async fn start() -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (kube, serval) = serval_world().await;
    kube.put_object(json!({
        "apiVersion": API, "kind": "AccessProfile",
        "metadata": {"name": "oncall", "namespace": "team-a", "generation": 1},
        "spec": {"connectionRef": {"name": "serval"}, "teamId": "team-1", "name": "On-call"},
    }));
    let (stop, stopped) = oneshot::channel::<()>();
    let config = RunConfig {
        namespace: Some("team-a".into()),
        concurrency: 2,
        timing: accessplane::engine::requeue::Timing {
            resync: Duration::from_secs(600),
            ..Default::default()
        },
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        install_crds: false,
        leader_election: None,
        credentials: Default::default(),
    };
    let shutdown = stopped.map(|_| ()).boxed().shared();
    let operator = tokio::spawn(run_with(kube.client(), config, shutdown));
    Running {
        serval,
        kube,
        stop,
        operator,
    }
}

#[tokio::test]
async fn run_reconciles_connections_and_access_profiles() {
    let Running {
        serval,
        kube,
        stop,
        operator,
    } = start().await;
    until_ready(&kube, "connections", "serval", "True/Verified").await;
    until_ready(&kube, "accessprofiles", "oncall", "True/Available").await;
    assert!(!serval.profiles().is_empty());

    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), operator).await;
    result.expect("graceful shutdown").unwrap().unwrap();
}

/// The create's own annotation and status writes trigger further reconciles under the
/// live controller; none of them may create again.
#[tokio::test]
async fn run_creates_exactly_one_upstream_object() {
    let Running {
        serval,
        kube,
        stop,
        operator,
    } = start().await;
    until_ready(&kube, "accessprofiles", "oncall", "True/Available").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(serval.profiles().len(), 1);
    stop.send(()).unwrap();
    operator.await.unwrap().unwrap();
}

/// Two replicas with leader election: only the leader reconciles; the standby is idle
/// until the leader shuts down and releases the lease, then takes over.
#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let Running {
        serval,
        kube,
        stop,
        operator,
    } = start().await;
    until_ready(&kube, "accessprofiles", "oncall", "True/Available").await;
    // `start()` runs without election; stop it and run two electing replicas instead.
    stop.send(()).unwrap();
    operator.await.unwrap().unwrap();
    serval.clear_requests();
    let exchanges = serval.token_exchanges();

    let replica = |identity: &str| {
        let (stop, stopped) = oneshot::channel::<()>();
        let config = RunConfig {
            namespace: Some("team-a".into()),
            concurrency: 2,
            timing: accessplane::engine::requeue::Timing {
                resync: Duration::from_secs(600),
                ..Default::default()
            },
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            install_crds: false,
            leader_election: Some(accessplane::runtime::LeaderElection {
                namespace: "team-a".into(),
                lease_name: "accessplane-leader".into(),
                identity: identity.into(),
                timing: Default::default(),
            }),
            credentials: Default::default(),
        };
        let handle = tokio::spawn(run_with(
            kube.client(),
            config,
            stopped.map(|_| ()).boxed().shared(),
        ));
        (stop, handle)
    };
    let (stop_a, a) = replica("replica-a");
    eventually("replica-a to lead and verify the Connection", || {
        serval.token_exchanges() > exchanges
    })
    .await;
    let (stop_b, b) = replica("replica-b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        serval.token_exchanges(),
        exchanges + 1,
        "the standby made no upstream call"
    );
    let holder = |kube: &FakeKube| {
        kube.get(
            "coordination.k8s.io/v1",
            "leases",
            "team-a",
            "accessplane-leader",
        )
        .unwrap()["spec"]["holderIdentity"]
            .clone()
    };
    assert_eq!(holder(&kube), "replica-a");

    stop_a.send(()).unwrap();
    a.await.unwrap().unwrap();
    eventually("replica-b to take over", || holder(&kube) == "replica-b").await;
    eventually("replica-b to verify the Connection", || {
        serval.token_exchanges() > exchanges + 1
    })
    .await;
    stop_b.send(()).unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(
        serval.profiles().len(),
        1,
        "no duplicate from the second replica"
    );
}

/// A Connection that vanishes without a reconcile (finalizer stripped by hand, then
/// deleted) is not used any more: resources that name it wait for it instead of writing
/// through a client that outlived it.
#[tokio::test]
async fn a_force_removed_connection_is_not_used() {
    let Running {
        serval,
        kube,
        stop,
        operator,
    } = start().await;
    until_ready(&kube, "accessprofiles", "oncall", "True/Available").await;
    kube.merge_patch(
        API,
        "connections",
        "team-a",
        "serval",
        json!({"metadata": {"finalizers": null}}),
    )
    .unwrap();
    kube.delete_object(API, "connections", "team-a", "serval")
        .unwrap();
    assert!(kube.get(API, "connections", "team-a", "serval").is_none());
    // A barrier instead of a sleep: the Connection cache applies watch events in order,
    // so once the operator has reconciled a Connection created after the deletion, the
    // cache no longer holds `serval`.
    kube.put_object(json!({
        "apiVersion": API, "kind": "Connection",
        "metadata": {"name": "probe", "namespace": "team-a"},
        "spec": {"serval": {"baseUrl": serval.base_url(), "credentialsSecretRef": {"name": "absent"}}},
    }));
    until_ready(&kube, "connections", "probe", "False/SecretNotFound").await;
    let writes_before = serval.writes();
    kube.merge_patch(
        API,
        "accessprofiles",
        "team-a",
        "oncall",
        json!({"spec": {"name": "On-call (renamed)"}}),
    )
    .unwrap();
    until_ready(
        &kube,
        "accessprofiles",
        "oncall",
        "False/WaitingForDependency",
    )
    .await;
    let obj = kube.get(API, "accessprofiles", "team-a", "oncall").unwrap();
    let ready = crate::support::harness::condition(&obj, "Ready").unwrap();
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("Connection team-a/serval does not exist"),
        "{ready}"
    );
    assert_eq!(serval.writes(), writes_before, "nothing sent upstream");
    stop.send(()).unwrap();
    operator.await.unwrap().unwrap();
}
