//! Leader election on a Lease, against the in-memory apiserver (which enforces
//! resourceVersion conflicts like the real one).

use std::time::Duration;

use accessplane::fence::Fence;
use accessplane::runtime::leader::{LeaderElector, LeaseTiming};
use tokio::sync::watch;

use crate::support::fake_kube::FakeKube;

fn timing() -> LeaseTiming {
    LeaseTiming {
        duration: Duration::from_secs(1),
        renew_every: Duration::from_millis(200),
    }
}

/// The Lease as stored.
fn lease(kube: &FakeKube) -> serde_json::Value {
    kube.get(
        "coordination.k8s.io/v1",
        "leases",
        "accessplane-system",
        "accessplane-leader",
    )
    .expect("the lease exists")
}

fn contender(kube: &FakeKube, identity: &str) -> LeaderElector {
    contender_with(kube, identity, timing())
}

fn contender_with(kube: &FakeKube, identity: &str, timing: LeaseTiming) -> LeaderElector {
    LeaderElector::new(
        kube.client(),
        "accessplane-system",
        "accessplane-leader",
        identity,
        timing,
    )
}

#[tokio::test]
async fn one_of_two_contenders_wins_and_expiry_hands_over() {
    let kube = FakeKube::new();
    let a = contender(&kube, "replica-a");
    let b = contender(&kube, "replica-b");
    assert!(a.try_acquire().await.unwrap());
    assert!(!b.try_acquire().await.unwrap(), "held by a");
    assert!(a.try_acquire().await.unwrap(), "a renews");
    assert!(!b.try_acquire().await.unwrap());

    // a stops renewing; once the lease expires b takes it and a has lost it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(b.try_acquire().await.unwrap());
    assert!(!a.try_acquire().await.unwrap());
    let lease = lease(&kube);
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

#[tokio::test]
async fn released_lease_is_taken_at_once() {
    let kube = FakeKube::new();
    let a = contender(&kube, "replica-a");
    let b = contender(&kube, "replica-b");
    assert!(a.try_acquire().await.unwrap());
    a.release().await.unwrap();
    assert!(b.try_acquire().await.unwrap(), "no need to wait for expiry");
    // Releasing a lease one does not hold changes nothing.
    a.release().await.unwrap();
    assert!(b.try_acquire().await.unwrap());
}

#[tokio::test]
async fn concurrent_contenders_never_both_lead() {
    let kube = FakeKube::new();
    let attempts = (0..8).map(|i| {
        let elector = contender(&kube, &format!("replica-{i}"));
        async move { elector.try_acquire().await.unwrap() }
    });
    let won = futures::future::join_all(attempts).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}

#[tokio::test]
async fn run_publishes_leadership_and_releases_on_stop() {
    // A long lease, so that neither a stalled renewal on a starved machine hands it to b
    // nor can b's takeover below come from expiry rather than from a's release.
    let timing = LeaseTiming {
        duration: Duration::from_secs(10),
        renew_every: Duration::from_millis(200),
    };
    let kube = FakeKube::new();
    let (leading_a, mut is_a) = watch::channel(false);
    let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
    let a = tokio::spawn(contender_with(&kube, "replica-a", timing.clone()).run(
        Fence::for_lease("replica-a", timing.duration),
        leading_a,
        async {
            let _ = stopped_a.await;
        },
    ));
    tokio::time::timeout(Duration::from_secs(5), is_a.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();

    let (leading_b, mut is_b) = watch::channel(false);
    let b = tokio::spawn(contender_with(&kube, "replica-b", timing.clone()).run(
        Fence::for_lease("replica-b", timing.duration),
        leading_b,
        std::future::pending(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!*is_b.borrow(), "standby while a renews");

    stop_a.send(()).unwrap();
    a.await.unwrap();
    assert!(!*is_a.borrow());
    // b takes over on its next attempt, well before the lease would have expired.
    tokio::time::timeout(Duration::from_secs(5), is_b.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    b.abort();
}

/// An apiserver that stops answering (the renewal hangs; kube's client has no read
/// timeout by default) must not keep a replica leading past its lease: it steps down
/// before `renewTime + leaseDurationSeconds`, when a standby could take over.
#[tokio::test]
async fn a_hanging_renewal_steps_down_before_the_lease_expires() {
    let kube = FakeKube::new();
    let timing = LeaseTiming {
        duration: Duration::from_secs(3),
        renew_every: Duration::from_millis(200),
    };
    let (leading, mut is_leader) = watch::channel(false);
    let fence = Fence::for_lease("replica-a", timing.duration);
    let elector = contender_with(&kube, "replica-a", timing);
    let run = tokio::spawn(elector.run(fence.clone(), leading, std::future::pending()));
    tokio::time::timeout(Duration::from_secs(5), is_leader.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();

    kube.stall("/leases", true);
    tokio::time::timeout(Duration::from_secs(10), is_leader.wait_for(|l| !*l))
        .await
        .expect("stepped down while the apiserver hangs")
        .unwrap();
    let stepped_down = k8s_openapi::jiff::Timestamp::now();
    let lease = lease(&kube);
    let renewed: k8s_openapi::jiff::Timestamp = lease["spec"]["renewTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let expires = renewed + k8s_openapi::jiff::SignedDuration::from_secs(3);
    assert!(
        stepped_down < expires,
        "stepped down at {stepped_down}, the lease renewed at {renewed} expires at {expires}"
    );
    assert!(!fence.is_open(), "the fence closed with the step-down");
    // Once the apiserver answers again, the replica takes the lease back (the elector
    // recovers from attempts that timed out).
    kube.stall("/leases", false);
    tokio::time::timeout(Duration::from_secs(5), is_leader.wait_for(|l| *l))
        .await
        .expect("leads again once the apiserver answers")
        .unwrap();
    assert!(fence.is_open());
    run.abort();
}
