//! Real-apiserver tier: leader election of operator processes on the real
//! `coordination.k8s.io` Lease API. One of two reconciles; SIGTERM hands over within
//! seconds (the leader releases the Lease); after kill -9 a standby takes over once the
//! Lease (15 s) expires; nothing is written upstream twice across the hand-overs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::admission::{install_crds, namespace};
use crate::rbac::{Operator, create_resources, spawn_operator, wait_ready};
use crate::support::envtest::{Envtest, envtest, exclusive};
use crate::support::fake_serval::FakeServal;

const LEASE: &str = "accessplane-leader";
/// The operator's Lease duration (`runtime::leader`, docs/src/getting-started/helm.md).
const LEASE_DURATION: Duration = Duration::from_secs(15);

fn holder(env: &Envtest, ns: &str) -> Option<String> {
    let out = env.kubectl(&["get", "lease", LEASE, "-n", ns, "-o", "json"], None);
    if !out.status.success() {
        return None;
    }
    let lease: Value = serde_json::from_slice(&out.stdout).unwrap();
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// Waits until a holder whose identity starts with `pod` holds the Lease; returns how long.
async fn wait_holder(
    env: &Envtest,
    ns: &str,
    pod: &str,
    within: Duration,
    ops: &mut [&mut Operator],
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if holder(env, ns).is_some_and(|h| h.starts_with(&format!("{pod}-"))) {
            return start.elapsed();
        }
        for op in ops.iter_mut() {
            assert!(
                matches!(op.child.try_wait(), Ok(None)),
                "an operator exited:\n{}",
                op.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{pod} did not take the Lease within {within:?} (holder {:?})",
        holder(env, ns)
    );
}

fn operator(env: &Envtest, ns: &str, pod: &str) -> Operator {
    spawn_operator(
        env,
        &env.kubeconfig_path(),
        &[
            &format!("--namespace={ns}"),
            "--leader-election",
            &format!("--leader-election-namespace={ns}"),
        ],
        &[("POD_NAME", pod)],
    )
}

fn profile(env: &Envtest, ns: &str, name: &str) {
    let doc = json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"connectionRef": {"name": "serval-prod"}, "teamId": "team-payments", "name": name}});
    env.kubectl_ok(&["create", "-f", "-"], Some(&doc.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_reconciles_and_hands_over_on_sigterm_and_after_kill_9() {
    let Some(env) = envtest() else { return };
    let _exclusive = exclusive().await;
    install_crds(env);
    let ns = namespace(env, "leader");
    let serval = FakeServal::start().await;
    serval.add_client("rbac-operator", "rbac-secret");

    let mut a = operator(env, &ns, "op-a");
    wait_holder(env, &ns, "op-a", Duration::from_secs(30), &mut [&mut a]).await;
    let mut b = operator(env, &ns, "op-b");
    create_resources(env, &ns, &serval);
    wait_ready(env, &mut a, &ns, "accessprofile", "payments-oncall").await;
    // b has started and stays a standby.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(holder(env, &ns).unwrap().starts_with("op-a-"));

    // SIGTERM: a releases the Lease as it stops; b takes over within seconds.
    unsafe { libc::kill(a.child.id() as i32, libc::SIGTERM) };
    let status = a.child.wait().unwrap();
    assert!(status.success(), "a exited with {status}:\n{}", a.log());
    let handover = wait_holder(env, &ns, "op-b", LEASE_DURATION, &mut [&mut b]).await;
    assert!(
        handover < Duration::from_secs(8),
        "released Lease taken after {handover:?}"
    );
    profile(env, &ns, "second");
    wait_ready(env, &mut b, &ns, "accessprofile", "second").await;

    // kill -9: no release; c takes over once the Lease expires, not before.
    let mut c = operator(env, &ns, "op-c");
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let takeover = wait_holder(env, &ns, "op-c", LEASE_DURATION * 2, &mut [&mut c]).await;
    assert!(
        takeover <= LEASE_DURATION + Duration::from_secs(6),
        "expired Lease taken after {takeover:?}"
    );
    profile(env, &ns, "third");
    wait_ready(env, &mut c, &ns, "accessprofile", "third").await;

    // Each profile was created once: no double writes across the hand-overs.
    assert_eq!(serval.profiles().len(), 3, "{:?}", serval.profiles());
    assert_eq!(serval.writes(), 3, "upstream writes");
}
