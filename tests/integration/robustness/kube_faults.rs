//! Kubernetes API faults under the whole operator (`run_with` against the fake API
//! server, fake Serval and fake Instaclustr): watch streams dropping, 409 conflicts on
//! status and metadata writes, 429/500 answers. The operator must recover without a
//! restart, converge every object to its spec and never create an upstream object twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use accessplane::runtime::RunConfig;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::support::env::{self, Ic, Operator, Seed, Serval, Setup};
use crate::support::fake_instaclustr::{CONTROLS_PATH, FakeInstaclustr};
use crate::support::fake_kube::FakeKube;
use crate::support::fake_serval::{FakeServal, PROFILES_PATH};
use crate::support::harness::{as_set, converged_status};

const API: &str = "accessplane.io/v1alpha1";
const NS: &str = "faults";
const APS: &str = "accessprofiles";
const PACS: &str = "personaaccesscontrols";
const CLUSTER: &str = "gw-1";
const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";
const TOOL_A: &str = "7a1f0000-0000-4000-8000-000000000001";
const TOOL_B: &str = "7a200000-0000-4000-8000-000000000002";
/// Bounded waits are generous: retries back off from 5 s (engine) and 0.8 s (watches).
const CONVERGE: Duration = Duration::from_secs(120);

type Env = env::Env<(Serval, Ic), Operator>;

impl Env {
    /// Fakes, credentials and both Connections; the operator is not running yet.
    async fn new() -> Self {
        let setup = Setup::<(Serval, Ic)>::start().await;
        setup.up.1.ic.add_virtual_server(CLUSTER, VS);
        setup
            .operator(FakeKube::new(), Seed::Connections(NS))
            .patience(CONVERGE, Duration::from_millis(100))
    }

    fn serval(&self) -> &FakeServal {
        &self.up.0.serval
    }

    fn ic(&self) -> &FakeInstaclustr {
        &self.up.1.ic
    }

    fn run(&mut self) {
        self.start(RunConfig {
            namespace: Some(NS.into()),
            concurrency: 2,
            timing: accessplane::engine::requeue::Timing {
                resync: Duration::from_secs(600),
                // An unlucky spread of injected faults over one object must not back
                // it off for longer than the waits below allow.
                error_backoff_max: Duration::from_secs(20),
                // A create that was marked but maybe never sent is believed gone soon.
                unrecorded_create_wait: Duration::from_secs(3),
                ..Default::default()
            },
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            install_crds: false,
            leader_election: None,
            credentials: Default::default(),
        });
    }

    async fn shutdown(mut self) {
        self.assert_running();
        self.kube.clear_faults();
        self.stop(Duration::from_secs(40)).await;
    }

    /// An AccessProfile as a user would `kubectl apply` it (generation 1, no finalizer).
    fn apply_ap(&self, name: &str, description: &str) {
        self.kube.put_object(json!({
            "apiVersion": API, "kind": "AccessProfile",
            "metadata": {"name": name, "namespace": NS, "generation": 1},
            "spec": {"connectionRef": {"name": "serval"}, "teamId": "team-1", "name": display(name), "description": description},
        }));
    }

    fn apply_persona(&self, name: &str, role: &str) {
        self.kube.put_object(json!({
            "apiVersion": API, "kind": "PersonaAccessControl",
            "metadata": {"name": name, "namespace": NS, "generation": 1},
            "spec": {"connectionRef": {"name": "ic"}, "clusterId": CLUSTER, "virtualServerId": VS,
                     "personaRole": role, "type": "ALLOWLIST", "tools": [TOOL_A]},
        }));
    }

    /// `kubectl patch --type merge` of the spec (atomic; not subject to injected faults).
    fn edit_spec(&self, plural: &str, name: &str, spec: Value) {
        self.kube
            .merge_patch(API, plural, NS, name, json!({"spec": spec}))
            .unwrap();
    }

    /// `kubectl delete` (the finalizer keeps the object until the operator lets go).
    fn delete(&self, plural: &str, name: &str) {
        self.kube.delete_object(API, plural, NS, name).unwrap();
    }

    fn get(&self, plural: &str, name: &str) -> Option<Value> {
        self.kube.get(API, plural, NS, name)
    }

    /// Upstream profiles named like this resource.
    fn upstream_aps(&self, name: &str) -> Vec<Value> {
        self.serval()
            .profiles()
            .into_iter()
            .filter(|p| p["name"] == display(name))
            .collect()
    }

    /// Create requests Serval received for this resource, whatever their outcome.
    fn ap_creates(&self, name: &str) -> usize {
        self.serval()
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == PROFILES_PATH)
            .filter(|r| r.body.as_ref().is_some_and(|b| b["name"] == display(name)))
            .count()
    }

    /// Create requests the gateway received for this persona role, whatever their outcome.
    fn persona_creates(&self, role: &str) -> usize {
        self.ic()
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == CONTROLS_PATH)
            .filter(|r| r.body.as_ref().is_some_and(|b| b["personaRole"] == role))
            .count()
    }

    /// The resource is Ready and Synced at its current generation, its status and
    /// annotations name exactly one upstream object, and that object matches the spec.
    fn ap_converged(&self, name: &str) -> Result<(), String> {
        let obj = self.get(APS, name).ok_or("no such object")?;
        converged_status(&obj)?;
        let upstream = self.upstream_aps(name);
        let [profile] = upstream.as_slice() else {
            return Err(format!("{} upstream profiles", upstream.len()));
        };
        if obj["status"]["id"] != profile["id"] {
            return Err(format!(
                "status.id {} ≠ {}",
                obj["status"]["id"], profile["id"]
            ));
        }
        if obj["spec"]["description"] != profile["description"] {
            return Err(format!(
                "upstream description {} ≠ spec {}",
                profile["description"], obj["spec"]["description"]
            ));
        }
        Ok(())
    }

    fn persona_converged(&self, name: &str) -> Result<(), String> {
        let obj = self.get(PACS, name).ok_or("no such object")?;
        converged_status(&obj)?;
        let role = obj["spec"]["personaRole"].clone();
        let controls: Vec<Value> = self
            .ic()
            .controls(CLUSTER)
            .into_iter()
            .filter(|c| c["personaRole"] == role)
            .collect();
        let [control] = controls.as_slice() else {
            return Err(format!("{} upstream controls", controls.len()));
        };
        if obj["status"]["id"] != control["id"] {
            return Err(format!(
                "status.id {} ≠ {}",
                obj["status"]["id"], control["id"]
            ));
        }
        if as_set(&control["tools"]) != as_set(&obj["spec"]["tools"]) {
            return Err(format!(
                "upstream tools {} ≠ spec {}",
                control["tools"], obj["spec"]["tools"]
            ));
        }
        Ok(())
    }

    /// Gone from Kubernetes and upstream.
    fn ap_deleted(&self, name: &str) -> Result<(), String> {
        if self.get(APS, name).is_some() {
            return Err("still in Kubernetes".into());
        }
        if !self.upstream_aps(name).is_empty() {
            return Err("still upstream".into());
        }
        Ok(())
    }

    async fn wait_aps(&self, names: &[&str]) {
        for name in names {
            self.wait(&format!("AccessProfile {name} to converge"), |env| {
                env.ap_converged(name)
            })
            .await;
        }
    }

    /// Exactly one upstream create request per resource, over the whole test.
    fn assert_one_create_each(&self, aps: &[&str]) {
        for name in aps {
            assert_eq!(self.ap_creates(name), 1, "creates of AccessProfile {name}");
        }
    }
}

fn display(name: &str) -> String {
    format!("Profile {name}")
}

/// Drops every watch stream every `every` until the returned flag is set.
fn keep_disconnecting(kube: &FakeKube, every: Duration) -> (Arc<AtomicBool>, JoinHandle<()>) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let kube = kube.clone();
    let task = tokio::spawn(async move {
        while !flag.load(Ordering::Relaxed) {
            kube.disconnect_watches();
            tokio::time::sleep(every).await;
        }
    });
    (done, task)
}

/// (1) Watches keep dropping while objects are created, edited and deleted; edits made
/// while the watch cannot be re-established are still seen once it is.
#[tokio::test]
async fn converges_while_watches_keep_dropping() {
    let mut env = Env::new().await;
    for name in ["w-a", "w-b", "w-c"] {
        env.apply_ap(name, "v1");
    }
    env.apply_persona("w-persona", "analyst");
    env.run();
    let (done, disconnector) = keep_disconnecting(&env.kube, Duration::from_millis(150));
    env.wait_aps(&["w-a", "w-b", "w-c"]).await;
    env.wait("the persona to converge", |e| {
        e.persona_converged("w-persona")
    })
    .await;

    // Created, edited and deleted while the streams keep dropping.
    env.apply_ap("w-d", "v1");
    env.apply_ap("w-e", "v1");
    env.edit_spec(APS, "w-a", json!({"description": "v2"}));
    env.edit_spec(APS, "w-b", json!({"description": "v2"}));
    env.edit_spec(PACS, "w-persona", json!({"tools": [TOOL_A, TOOL_B]}));
    env.delete(APS, "w-c");
    env.wait_aps(&["w-a", "w-b", "w-d", "w-e"]).await;
    env.wait("w-c to be deleted", |e| e.ap_deleted("w-c")).await;
    env.wait("the persona edit", |e| e.persona_converged("w-persona"))
        .await;
    done.store(true, Ordering::Relaxed);
    disconnector.await.unwrap();

    // The watch is down (its re-establishment fails for a while) while objects change.
    env.kube.fail_next("GET", "/accessprofiles", 500, 2);
    env.kube.disconnect_watches();
    env.edit_spec(APS, "w-a", json!({"description": "v3"}));
    env.apply_ap("w-f", "v1");
    env.delete(APS, "w-e");
    env.wait_aps(&["w-a", "w-b", "w-d", "w-f"]).await;
    env.wait("w-e to be deleted", |e| e.ap_deleted("w-e")).await;
    assert_eq!(env.get(APS, "w-a").unwrap()["spec"]["description"], "v3");

    env.assert_one_create_each(&["w-a", "w-b", "w-c", "w-d", "w-e", "w-f"]);
    assert_eq!(env.persona_creates("analyst"), 1);
    assert_eq!(
        env.serval().profiles().len(),
        4,
        "{:#?}",
        env.serval().profiles()
    );
    env.shutdown().await;
}

/// (2) Status writes conflict (409) for a while: every object converges, is created
/// exactly once, and ends with the right conditions. The persona's gateway makes
/// creates visible only after longer than the engine's first retry, so a retried
/// reconcile sees an accepted, still-invisible create.
#[tokio::test]
async fn status_conflicts_neither_duplicate_creates_nor_lose_conditions() {
    let mut env = Env::new().await;
    env.ic().set_visibility_delay(Duration::from_secs(8));
    env.kube.fail_next("PATCH", "/status", 409, 6);
    env.kube
        .fail_next("PATCH", "personaaccesscontrols/s-persona/status", 409, 2);
    for name in ["s-a", "s-b", "s-c"] {
        env.apply_ap(name, "v1");
    }
    env.apply_persona("s-persona", "analyst");
    env.run();
    env.wait_aps(&["s-a", "s-b", "s-c"]).await;
    env.wait("the persona to converge", |e| {
        e.persona_converged("s-persona")
    })
    .await;

    // A spec change whose status writes conflict again.
    env.kube.fail_next("PATCH", "/status", 409, 3);
    env.edit_spec(APS, "s-a", json!({"description": "v2"}));
    env.edit_spec(APS, "s-b", json!({"description": "v2"}));
    env.wait_aps(&["s-a", "s-b", "s-c"]).await;

    env.assert_one_create_each(&["s-a", "s-b", "s-c"]);
    assert_eq!(env.persona_creates("analyst"), 1, "persona creates");
    assert_eq!(env.ic().count("PUT", CONTROLS_PATH), 0, "no persona update");
    env.shutdown().await;
}

/// (3) Conflicts on the operator's writes at each step of a create: the one metadata
/// write (finalizer and create mark) and the status write after the upstream create.
/// A failed mark write prevents the create; a failed status write after it is recovered
/// by the natural-key lookup (server-assigned ids) or by the gateway's 409 to a repeated
/// create (deterministic ids) instead of a second upstream object.
#[tokio::test]
async fn metadata_conflicts_keep_one_upstream_object_per_resource() {
    let mut env = Env::new().await;
    let kube = &env.kube;
    kube.fail_next_with_body(
        "PATCH",
        "accessprofiles/m-mark",
        "create-attempted\":\"",
        409,
        2,
    );
    kube.fail_next_with_body("PATCH", "accessprofiles/m-idonce/status", "\"id\"", 409, 1);
    kube.fail_next_with_body("PATCH", "accessprofiles/m-idtwice/status", "\"id\"", 409, 2);
    kube.fail_next_with_body(
        "PATCH",
        "personaaccesscontrols/m-persona/status",
        "\"id\"",
        409,
        1,
    );
    let names = ["m-mark", "m-idonce", "m-idtwice"];
    for name in names {
        env.apply_ap(name, "v1");
    }
    env.apply_persona("m-persona", "analyst");
    env.run();

    // While the create-mark write keeps failing nothing is sent upstream.
    let mark_patches = |env: &Env| {
        env.kube
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with("accessprofiles/m-mark"))
            .filter(|r| {
                r.body
                    .as_ref()
                    .is_some_and(|b| b.to_string().contains("create-attempted\":\""))
            })
            .count()
    };
    env.wait("both create-mark writes to fail", |e| {
        if mark_patches(e) >= 2 {
            Ok(())
        } else {
            Err(format!("{} attempts", mark_patches(e)))
        }
    })
    .await;
    assert_eq!(
        env.ap_creates("m-mark"),
        0,
        "created although the create mark was not recorded"
    );

    env.wait_aps(&names).await;
    env.wait("the persona to converge", |e| {
        e.persona_converged("m-persona")
    })
    .await;
    env.assert_one_create_each(&names);
    assert_eq!(env.ic().controls(CLUSTER).len(), 1, "one persona control");
    assert_eq!(env.serval().profiles().len(), names.len());
    // The recovered ones were found by natural key, not adopted.
    for name in ["m-idonce", "m-idtwice"] {
        let obj = env.get(APS, name).unwrap();
        assert!(
            obj["metadata"]["annotations"]["accessplane.io/adopted"].is_null(),
            "{name} marked adopted"
        );
    }
    // Every resource's metadata was written once (the failed attempts aside).
    for (plural, name) in names.iter().map(|n| (APS, *n)).chain([(PACS, "m-persona")]) {
        let written = env
            .kube
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("{plural}/{name}")))
            .count();
        let failed = if name == "m-mark" { 2 } else { 0 };
        assert_eq!(written - failed, 1, "metadata writes of {name}");
    }
    env.shutdown().await;
}

/// (3b) kill -9 between any two steps of a create (one metadata write with the finalizer
/// and the create mark → the upstream create → the status write with the id) ends with one
/// upstream object after the restart: a kill right after the mark (nothing sent yet)
/// creates once after the restart; a kill after a server-assigned create, before its id
/// reached the status, is recovered by the natural-key lookup; a kill after an accepted
/// asynchronous create, before the status says so, is answered by the gateway's 409 to
/// the repeated create.
#[tokio::test]
async fn a_kill_between_the_steps_of_a_create_leaves_one_upstream_object() {
    let mut env = Env::new().await;
    env.ic().set_visibility_delay(Duration::from_secs(2));
    // Step 1 done (the mark is stored, its answer lost), step 2 not begun.
    env.kube.hold_answers("accessprofiles/k-marked", true);
    // Step 2 done, step 3 not begun (status writes never arrive).
    env.kube.stall("accessprofiles/k-created/status", true);
    env.kube
        .stall("personaaccesscontrols/k-persona/status", true);
    env.apply_ap("k-marked", "v1");
    env.apply_ap("k-created", "v1");
    env.apply_persona("k-persona", "analyst");
    env.run();
    env.wait("the three steps to be reached", |e| {
        let marked = e.get(APS, "k-marked").unwrap();
        let mark = &marked["metadata"]["annotations"]["accessplane.io/create-attempted"];
        if !mark.is_string() || marked["metadata"]["finalizers"].as_array().is_none() {
            return Err("k-marked has no mark and finalizer".into());
        }
        if e.upstream_aps("k-created").len() != 1 {
            return Err("k-created not created upstream".into());
        }
        if e.persona_creates("analyst") != 1 {
            return Err("the persona create not sent".into());
        }
        Ok(())
    })
    .await;
    assert_eq!(
        env.ap_creates("k-marked"),
        0,
        "nothing sent after the mark yet"
    );
    env.kill().await;
    for path in [
        "accessprofiles/k-created/status",
        "personaaccesscontrols/k-persona/status",
    ] {
        env.kube.stall(path, false);
    }
    env.kube.hold_answers("accessprofiles/k-marked", false);
    for name in ["k-marked", "k-created"] {
        assert!(env.get(APS, name).unwrap()["status"]["id"].is_null());
    }

    env.run();
    env.wait_aps(&["k-marked", "k-created"]).await;
    env.wait("the persona to converge", |e| {
        e.persona_converged("k-persona")
    })
    .await;
    env.assert_one_create_each(&["k-marked", "k-created"]);
    assert_eq!(env.ic().controls(CLUSTER).len(), 1, "one persona control");
    assert!(
        env.persona_creates("analyst") <= 2,
        "the accepted create is sent at most once more (answered 409)"
    );
    env.shutdown().await;
}

/// A persona access control is deleted after a kill that came between its create mark
/// and the create: nothing was sent, so after the short wait for an unrecorded create
/// the delete's 404 is believed and the resource is released (not held for the grace of
/// an accepted write), with nothing upstream and no create sent.
#[tokio::test]
async fn a_delete_after_a_kill_between_mark_and_create_is_released_soon() {
    let mut env = Env::new().await;
    env.kube
        .hold_answers("personaaccesscontrols/k-unsent", true);
    env.apply_persona("k-unsent", "auditor");
    env.run();
    env.wait("the create mark", |e| {
        let obj = e.get(PACS, "k-unsent").unwrap();
        let marked = obj["metadata"]["annotations"]["accessplane.io/create-attempted"].is_string();
        match marked && obj["metadata"]["finalizers"].is_array() {
            true => Ok(()),
            false => Err("no mark and finalizer".into()),
        }
    })
    .await;
    env.kill().await;
    env.kube
        .hold_answers("personaaccesscontrols/k-unsent", false);
    assert_eq!(
        env.persona_creates("auditor"),
        0,
        "nothing sent after the mark"
    );

    env.delete(PACS, "k-unsent");
    env.run();
    env.wait("the resource to be released", |e| {
        match e.get(PACS, "k-unsent") {
            None => Ok(()),
            Some(obj) => Err(format!("still there: {}", obj["status"])),
        }
    })
    .await;
    assert_eq!(
        env.persona_creates("auditor"),
        0,
        "no create after the delete"
    );
    assert!(env.ic().controls(CLUSTER).is_empty(), "nothing upstream");
    let deletes = env
        .ic()
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count();
    assert!(
        (1..=6).contains(&deletes),
        "{deletes} deletes while the unrecorded create was waited for"
    );
    env.shutdown().await;
}

/// (4) 429 and 500 on GET/LIST/watch and PATCH for a while, at start-up and later while
/// objects change: the operator keeps running, recovers and writes nothing twice upstream.
#[tokio::test]
async fn throttling_and_server_errors_are_ridden_out() {
    let mut env = Env::new().await;
    let kube = &env.kube;
    kube.fail_next("GET", "/accessprofiles", 429, 3);
    kube.fail_next("GET", "/personaaccesscontrols", 500, 2);
    kube.fail_next("GET", "/secrets", 500, 2);
    kube.fail_next("PATCH", "/accessprofiles/", 500, 4);
    kube.fail_next("PATCH", "/status", 429, 3);
    for name in ["t-a", "t-b", "t-c"] {
        env.apply_ap(name, "v1");
    }
    env.apply_persona("t-persona", "analyst");
    env.run();
    env.wait_aps(&["t-a", "t-b", "t-c"]).await;
    env.wait("the persona to converge", |e| {
        e.persona_converged("t-persona")
    })
    .await;
    env.assert_running();

    // Later: every call about AccessProfiles fails for a while, watches drop too.
    env.kube.fail_next("*", "/accessprofiles", 500, 4);
    env.kube.fail_next("PATCH", "/accessprofiles/", 429, 2);
    env.kube.disconnect_watches();
    env.edit_spec(APS, "t-a", json!({"description": "v2"}));
    env.apply_ap("t-d", "v1");
    env.delete(APS, "t-b");
    env.wait_aps(&["t-a", "t-c", "t-d"]).await;
    env.wait("t-b to be deleted", |e| e.ap_deleted("t-b")).await;

    env.assert_one_create_each(&["t-a", "t-b", "t-c", "t-d"]);
    assert_eq!(env.persona_creates("analyst"), 1, "persona creates");
    assert_eq!(
        env.serval().count("DELETE", PROFILES_PATH),
        1,
        "one upstream delete"
    );
    env.shutdown().await;
}
