//! Leadership as a write fence (docs/src/operations.md), with real processes: two `accessplane run`
//! replicas with leader election against the fake apiserver (over HTTP) and a slow fake
//! Serval. The leader is frozen (SIGSTOP, what a node under memory pressure, a cgroup
//! freeze or a VM pause does) in the middle of an update wave; the standby takes the
//! Lease and applies a newer spec; the old leader is woken (SIGCONT). It must send
//! nothing, upstream or to Kubernetes, and exit at once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use accessplane::api::AccessProfile;
use accessplane::base::clock::Clock;
use accessplane::base::kube_ops::FINALIZER;
use accessplane::engine::{CREATE_MARK_ANNOTATION, CreateMark, reconcile};
use accessplane::fence::{Fence, is_fenced_kube};
use accessplane::providers::serval::AccessProfileProvider;
use accessplane::upstream::Call;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::sync::Arc;

use crate::support::env::serval_world;
use crate::support::fake_kube::FakeKube;
use crate::support::fake_serval::FakeServal;
use crate::support::harness::{Harness, NS as HARNESS_NS, TEAM, requeue_of};
use crate::support::kube_server::KubeServer;

const NS: &str = "team-a";
const API: &str = "accessplane.io/v1alpha1";
const PROFILES: usize = 16;

/// One operator process; killed (and woken first, if frozen) when the test ends.
struct Replica {
    child: Child,
    log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal("CONT");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Replica {
    fn start(dir: &Path, kubeconfig: &Path, name: &str) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("replica log");
        let child = Command::new(env!("CARGO_BIN_EXE_accessplane"))
            .args([
                "run",
                "--namespace",
                NS,
                "--concurrency=2",
                "--log-level=info",
            ])
            .args(["--leader-election", "--leader-election-namespace", NS])
            // A 3 s lease renewed every second: writes allowed for 2 s after a renewal.
            .args(["--leader-election-lease-duration=3s"])
            .args(["--leader-election-renew-period=1s"])
            .arg("--metrics-addr=127.0.0.1:0")
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn the operator");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn holder(kube: &FakeKube) -> String {
    let lease = kube.get("coordination.k8s.io/v1", "leases", NS, "accessplane-leader");
    let holder = lease.map(|l| l["spec"]["holderIdentity"].clone());
    holder
        .and_then(|h| h.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn name(i: usize) -> String {
    format!("profile-{i:02}")
}

fn set_description(kube: &FakeKube, description: &str) {
    for i in 0..PROFILES {
        kube.merge_patch(
            API,
            "accessprofiles",
            NS,
            &name(i),
            json!({"spec": {"description": description}}),
        )
        .expect("edit the profile");
    }
}

/// Every resource Ready for its current generation.
fn all_ready(kube: &FakeKube, generation: i64) -> bool {
    kube.list(API, "accessprofiles", Some(NS)).iter().all(|p| {
        let ready = p["status"]["conditions"].as_array().and_then(|c| {
            c.iter()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"] == "True")
        });
        ready == Some(true) && p["status"]["observedGeneration"] == generation
    }) && kube.list(API, "accessprofiles", Some(NS)).len() == PROFILES
}

/// The descriptions upstream, by profile name.
fn upstream_descriptions(serval: &FakeServal) -> Vec<(String, Value)> {
    let mut all: Vec<(String, Value)> = serval
        .profiles()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["description"].clone(),
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

async fn wait_for(what: &str, replicas: &mut [&mut Replica], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        for replica in replicas.iter_mut() {
            assert!(
                replica.running(),
                "a replica exited while waiting for {what}:\n{}",
                replica.log()
            );
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn is_upstream_write(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_woken_after_losing_its_lease_sends_nothing_and_exits() {
    let (kube, serval) = serval_world().await;
    for i in 0..PROFILES {
        kube.put_object(json!({
            "apiVersion": API, "kind": "AccessProfile",
            "metadata": {"name": name(i), "namespace": NS, "generation": 1},
            "spec": {"connectionRef": {"name": "serval"}, "teamId": "team-1",
                     "name": name(i), "description": "v1"},
        }));
    }
    // Writes queue behind the Connection's rate limit: when a wakes, some are due at once.
    kube.merge_patch(
        API,
        "connections",
        NS,
        "serval",
        json!({"spec": {"rateLimit": {"requestsPerSecond": 4, "burst": 1}}}),
    )
    .expect("rate-limit the Connection");
    let server = KubeServer::start(kube.clone()).await;
    let dir = std::env::temp_dir().join(format!("accessplane-fence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig(NS)).expect("kubeconfig");

    let mut a = Replica::start(&dir, &kubeconfig, "replica-a");
    wait_for(
        "replica-a to lead and create every profile",
        &mut [&mut a],
        || holder(&kube).starts_with("replica-a") && all_ready(&kube, 1),
    )
    .await;
    let mut b = Replica::start(&dir, &kubeconfig, "replica-b");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(holder(&kube).starts_with("replica-a"), "b is a standby");

    // A slow upstream: the v2 wave takes a while, and a is frozen in the middle of it.
    serval.set_latency(Duration::from_millis(200));
    set_description(&kube, "v2");
    let v2_writes = || {
        let writes = serval.requests();
        let v2 = writes.iter().filter(|r| {
            is_upstream_write(&r.method)
                && r.body.as_ref().is_some_and(|b| b["description"] == "v2")
        });
        v2.count()
    };
    wait_for("a's first v2 write", &mut [&mut a, &mut b], || {
        v2_writes() > 0
    })
    .await;
    a.signal("STOP");
    let frozen = Instant::now();
    assert!(v2_writes() < PROFILES, "a was frozen mid-wave");

    wait_for("b to take the lease", &mut [&mut b], || {
        holder(&kube).starts_with("replica-b")
    })
    .await;
    let taken_over = frozen.elapsed();
    serval.set_latency(Duration::ZERO);
    set_description(&kube, "v3");
    wait_for("b to apply v3 everywhere", &mut [&mut b], || {
        all_ready(&kube, 3)
            && upstream_descriptions(&serval)
                .iter()
                .all(|(_, d)| d == "v3")
    })
    .await;
    // b is converged and quiet (resyncs are 10 min away): from here on any write is a's.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kube_before = kube.requests().len();
    let woken = Instant::now();
    a.signal("CONT");

    let exited = loop {
        if let Some(status) = a.child.try_wait().expect("wait for a") {
            break (woken.elapsed(), status);
        }
        assert!(
            woken.elapsed() < Duration::from_secs(10),
            "a did not exit after waking:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Writes a might still have had on their way would show within a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stale_upstream: Vec<String> = serval
        .requests()
        .iter()
        .filter(|r| r.at >= woken && is_upstream_write(&r.method))
        .map(|r| format!("{} {} {:?}", r.method, r.path, r.body))
        .collect();
    let kube_writes: Vec<String> = kube.requests()[kube_before..]
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("/leases"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let behind: Vec<(String, Value)> = upstream_descriptions(&serval)
        .into_iter()
        .filter(|(_, d)| d != "v3")
        .collect();
    eprintln!(
        "fence: b took over {:.1} s after the freeze; a exited {:.2} s after waking ({}); writes after waking: {} upstream, {} Kubernetes",
        taken_over.as_secs_f64(),
        exited.0.as_secs_f64(),
        exited.1,
        stale_upstream.len(),
        kube_writes.len()
    );
    assert!(
        stale_upstream.is_empty(),
        "stale upstream writes after waking: {stale_upstream:#?}\n{}",
        a.log()
    );
    assert!(
        kube_writes.is_empty(),
        "Kubernetes writes after waking: {kube_writes:#?}\n{}",
        a.log()
    );
    assert!(
        behind.is_empty(),
        "upstream objects behind their spec: {behind:?}"
    );
    assert!(
        exited.0 < Duration::from_secs(2),
        "a exited {:?} after waking:\n{}",
        exited.0,
        a.log()
    );
    assert!(!exited.1.success(), "a lost its lease: a failure exit");
    assert!(
        a.log().contains("lost the leader-election lease"),
        "a says why it stopped:\n{}",
        a.log()
    );
    assert!(b.running(), "b still leads:\n{}", b.log());
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------
// The fence itself, in process: each write is checked right before it is sent.

/// A fence whose lease ran out a moment ago (as for a replica frozen past its validity).
fn run_out(identity: &str) -> Fence {
    let fence = Fence::for_lease(identity, Duration::from_secs(15));
    fence.renewed(tokio::time::Instant::now(), Duration::ZERO);
    fence
}

#[tokio::test]
async fn a_pass_whose_lease_ran_out_writes_nothing_and_is_not_retried() {
    let h = Harness::new().await;
    h.apply_profile("p", json!({"name": "P", "description": "v1"}))
        .await;
    h.settle("p", 3).await;
    let id = h.status_id("p").expect("created");
    h.edit_profile_spec("p", json!({"description": "v2"})).await;

    let fence = run_out("replica-a");
    let engine = h.fenced_engine(AccessProfileProvider, fence.clone());
    let (upstream_writes, kube_writes) = (h.serval.writes(), h.kube.writes().len());
    let action = h.pass(&engine, "p").await.expect("the resource exists");
    assert_eq!(requeue_of(&action), None, "not retried: {action:?}");
    assert_eq!(h.serval.writes(), upstream_writes, "no upstream write");
    assert_eq!(
        h.kube.writes().len(),
        kube_writes,
        "no status or Event either"
    );
    assert_eq!(h.serval.profile(&id).unwrap()["description"], "v1");

    // The same engine writes again once its lease is renewed.
    fence.renewed(tokio::time::Instant::now(), Duration::from_secs(10));
    h.pass(&engine, "p").await;
    assert_eq!(h.serval.profile(&id).unwrap()["description"], "v2");
}

#[tokio::test]
async fn a_create_whose_lease_ran_out_leaves_no_mark_and_no_object() {
    let h = Harness::new().await;
    h.apply_profile("p", json!({"name": "P"})).await;
    let engine = h.fenced_engine(AccessProfileProvider, run_out("replica-a"));
    let obj = h.profiles().get("p").await.unwrap();
    let kube_writes = h.kube.writes().len();
    let action = reconcile(Arc::new(obj), engine)
        .await
        .expect("the pass stops");
    assert_eq!(requeue_of(&action), None, "not retried: {action:?}");
    assert_eq!(h.kube.writes().len(), kube_writes, "no mark, no status");
    assert_eq!(h.serval.profiles().len(), 0, "nothing created");
}

/// The check sits at the last moment before a request leaves: a retry whose backoff
/// outlasts the validity is refused, although the call started while it was valid.
#[tokio::test]
async fn a_retry_after_the_lease_ran_out_is_not_sent() {
    let h = Harness::new().await;
    h.apply_profile("p", json!({"name": "P"})).await;
    h.settle("p", 3).await;
    let id = h.status_id("p").expect("created");
    let fence = Fence::for_lease("replica-a", Duration::from_secs(15));
    fence.renewed(tokio::time::Instant::now(), Duration::from_millis(200));
    let client = h.serval_client().fenced(&fence);
    h.serval.fail_next("PUT", "/v2/access-profiles", 503, 1);
    let puts = h.serval.count("PUT", "/v2/access-profiles");
    let call = Call::put("update_access_profile", format!("v2/access-profiles/{id}"))
        .json(json!({"description": "late"}))
        .idempotent();
    let error = client.send(call).await.expect_err("refused");
    assert!(error.is_fenced(), "{error}");
    assert_eq!(
        h.serval.count("PUT", "/v2/access-profiles") - puts,
        1,
        "the first attempt went out, the retry did not"
    );
    // Reads are never fenced.
    let read = Call::get("get_access_profile", format!("v2/access-profiles/{id}"));
    client.send(read).await.expect("a read goes");
}

#[tokio::test]
async fn the_fenced_kubernetes_client_refuses_writes_but_reads() {
    let kube = FakeKube::new();
    let fence = run_out("replica-a");
    let api: Api<ConfigMap> = Api::namespaced(fence.kube_client(kube.client()), NS);
    assert!(api.get_opt("x").await.expect("reads go").is_none());
    let map: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    let error = api
        .create(&PostParams::default(), &map)
        .await
        .expect_err("refused");
    assert!(is_fenced_kube(&error), "{error}");
    assert!(kube.writes().is_empty());
    fence.renewed(tokio::time::Instant::now(), Duration::from_secs(10));
    api.create(&PostParams::default(), &map)
        .await
        .expect("a write goes while the lease is valid");
}

// ---------------------------------------------------------------------------------
// The create path, fenced end to end: another replica's create mark.

/// `h`'s profile `p` as the old leader left it `age` ago: finalizer and create mark
/// (by `writer`) written, its POST not (yet) sent. The new leader's engine has just
/// started leading; the Connection's requests time out after 1 s.
async fn marked_by_the_old_leader(
    h: &Harness,
    writer: Option<&str>,
    age: Duration,
) -> (
    Arc<accessplane::engine::Engine<AccessProfile, AccessProfileProvider>>,
    Duration,
) {
    h.kube
        .merge_patch(
            "accessplane.io/v1alpha1",
            "connections",
            HARNESS_NS,
            "serval",
            json!({"spec": {"timeoutSeconds": 1}}),
        )
        .unwrap();
    h.reconcile_connection("serval").await;
    h.apply_profile("p", json!({"name": "P"})).await;
    let at = h.clock.now() - k8s_openapi::jiff::SignedDuration::try_from(age).unwrap();
    let mark = CreateMark::value(at, writer);
    let patch = json!({"metadata": {"finalizers": [FINALIZER], "annotations": {CREATE_MARK_ANNOTATION: mark}}});
    h.profiles()
        .patch("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let fence = Fence::for_lease("replica-b-0002", Duration::from_secs(15));
    fence.renewed(tokio::time::Instant::now(), Duration::from_secs(600));
    let engine = h.fenced_engine(AccessProfileProvider, fence);
    // Two lease durations and the Connection's request timeout.
    (engine, Duration::from_secs(2 * 15 + 1))
}

#[tokio::test]
async fn the_new_leader_waits_out_the_old_leaders_create_and_then_recovers_it() {
    let h = Harness::new().await;
    let (engine, in_flight) =
        marked_by_the_old_leader(&h, Some("replica-a-0001"), Duration::ZERO).await;
    let calls = h.serval.requests().len();
    let action = h.pass(&engine, "p").await.unwrap();
    let wait = requeue_of(&action).expect("requeued");
    assert!(
        wait > in_flight - Duration::from_secs(1) && wait <= in_flight,
        "{wait:?}"
    );
    assert_eq!(
        h.serval.requests().len(),
        calls,
        "no lookup and no create yet"
    );

    // The old leader wakes between its mark and its POST, and its POST arrives.
    let theirs = h
        .serval
        .seed_profile(json!({"name": "P", "teamId": TEAM, "description": ""}));
    h.advance(in_flight);
    // And one request timeout after this replica took the lease.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.pass(&engine, "p").await;
    assert_eq!(
        h.status_id("p").as_deref(),
        Some(theirs.as_str()),
        "recovered"
    );
    assert_eq!(h.serval.profiles().len(), 1, "exactly one upstream object");
}

#[tokio::test]
async fn the_new_leader_creates_once_the_old_leaders_create_cannot_come_any_more() {
    let h = Harness::new().await;
    let (engine, in_flight) =
        marked_by_the_old_leader(&h, Some("replica-a-0001"), Duration::ZERO).await;
    h.pass(&engine, "p").await;
    assert_eq!(h.serval.profiles().len(), 0, "waits");
    h.advance(in_flight);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.pass(&engine, "p").await;
    h.pass(&engine, "p").await;
    assert_eq!(h.serval.profiles().len(), 1, "exactly one upstream object");
    assert!(h.status_id("p").is_some());
    // A mark of its own (the new leader's create) is never waited for.
    let mark = h.object("p").unwrap()["metadata"]["annotations"][CREATE_MARK_ANNOTATION].clone();
    assert!(
        mark.as_str().unwrap().ends_with(" by replica-b-0002"),
        "{mark}"
    );
}

/// An old mark (an earlier release's without a writer, or one whose create waited long
/// behind a rate limit) is still waited for one request timeout after this replica took
/// the lease: the earlier leader may have sent its create just before its fence closed.
#[tokio::test]
async fn an_old_mark_is_waited_for_one_request_timeout_after_taking_the_lease() {
    for writer in [None, Some("replica-a-0001")] {
        let h = Harness::new().await;
        let (engine, _) = marked_by_the_old_leader(&h, writer, Duration::from_secs(3600)).await;
        let calls = h.serval.requests().len();
        let wait = requeue_of(&h.pass(&engine, "p").await.unwrap()).expect("requeued");
        assert!(wait <= Duration::from_secs(1), "{writer:?}: {wait:?}");
        assert_eq!(
            h.serval.requests().len(),
            calls,
            "{writer:?}: nothing looked up yet"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        h.pass(&engine, "p").await;
        h.pass(&engine, "p").await;
        assert_eq!(h.serval.profiles().len(), 1, "{writer:?}: created once");
    }
}

/// A resource deleted while another replica's create may be in flight waits for it too,
/// then deletes what it made: nothing is orphaned.
#[tokio::test]
async fn a_delete_during_a_takeover_waits_for_the_old_leaders_create() {
    let h = Harness::new().await;
    let (engine, in_flight) =
        marked_by_the_old_leader(&h, Some("replica-a-0001"), Duration::ZERO).await;
    h.delete_profile("p").await;
    let calls = h.serval.requests().len();
    let wait = requeue_of(&h.pass(&engine, "p").await.unwrap()).expect("requeued");
    assert!(wait > Duration::from_secs(1), "{wait:?}");
    assert_eq!(h.serval.requests().len(), calls, "nothing looked up yet");
    // The old leader's create arrives.
    h.serval
        .seed_profile(json!({"name": "P", "teamId": TEAM, "description": ""}));
    h.advance(in_flight);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        if h.pass(&engine, "p").await.is_none() {
            break;
        }
    }
    assert!(h.object("p").is_none(), "released");
    assert_eq!(
        h.serval.profiles(),
        Vec::<Value>::new(),
        "the old leader's object is deleted, not orphaned"
    );
}
