//! ClusterConnections under the whole operator (`run_with` against the fake API server
//! and a fake Serval): which namespaces may use one, relabelling in and out without a
//! restart, one rate-limit budget for every namespace, Secret rotation reaching every
//! user, and the least-privilege mode that reads Secrets only in the credentials
//! namespace.

use std::time::Duration;

use accessplane::connections::{Credentials, SecretsScope};
use accessplane::runtime::RunConfig;
use serde_json::{Value, json};

use crate::support::env::{self, Operator, Seed, Serval, Setup};
use crate::support::fake_kube::FakeKube;
use crate::support::fake_serval::PROFILES_PATH;
use crate::support::harness::{condition_pair, converged_status};

const API: &str = "accessplane.io/v1alpha1";
const APS: &str = "accessprofiles";
const CREDENTIALS_NS: &str = "accessplane-system";
const SHARED: &str = "serval-shared";
const WAIT: Duration = Duration::from_secs(60);
/// How long a graceful shutdown may take.
const GRACE: Duration = Duration::from_secs(10);

type Env = env::Env<Serval, Operator>;

impl Env {
    /// Namespaces `team-a` (labelled `access: serval`), `team-b` (not labelled) and the
    /// credentials namespace with the Secret; a ClusterConnection allowing the label.
    async fn new(spec_extra: Value) -> Self {
        Self::seeded(FakeKube::new(), Some(spec_extra)).await
    }

    /// The namespaces and the Secret in `kube`; a ClusterConnection if `spec_extra`.
    async fn seeded(kube: FakeKube, spec_extra: Option<Value>) -> Self {
        let setup = Setup::<Serval>::start().await;
        let mut spec = setup.connections[0].spec.clone();
        let env = setup
            .operator(kube, Seed::Secrets(CREDENTIALS_NS))
            .patience(WAIT, Duration::from_millis(50));
        for (ns, labels) in [
            ("team-a", json!({"access": "serval"})),
            ("team-b", json!({})),
            (CREDENTIALS_NS, json!({})),
        ] {
            env.kube.put_object(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": labels},
            }));
        }
        if let Some(spec_extra) = spec_extra {
            spec["allowedNamespaces"] =
                json!({"namespaceSelector": {"matchLabels": {"access": "serval"}}});
            for (key, value) in spec_extra.as_object().unwrap() {
                spec[key] = value.clone();
            }
            env.kube.put_object(json!({
                "apiVersion": API, "kind": "ClusterConnection",
                "metadata": {"name": SHARED, "generation": 1},
                "spec": spec,
            }));
        }
        env
    }

    fn run(&mut self, scope: SecretsScope) {
        self.start(RunConfig {
            namespace: None,
            concurrency: 2,
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            credentials: Credentials {
                namespace: CREDENTIALS_NS.into(),
                scope,
            },
            ..Default::default()
        });
    }

    async fn shutdown(mut self) {
        self.stop(GRACE).await;
    }

    /// List requests for profiles (not the Connection check, not single reads).
    fn profile_lists(&self) -> usize {
        self.up
            .serval
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == PROFILES_PATH)
            .count()
    }

    fn apply_ap(&self, ns: &str, name: &str, connection_ref: Value) {
        self.kube.put_object(json!({
            "apiVersion": API, "kind": "AccessProfile",
            "metadata": {"name": name, "namespace": ns, "generation": 1},
            "spec": {"connectionRef": connection_ref, "teamId": "team-1",
                     "name": display(ns, name), "description": "v1"},
        }));
    }

    fn shared_ref() -> Value {
        json!({"kind": "ClusterConnection", "name": SHARED})
    }

    fn get(&self, ns: &str, name: &str) -> Value {
        self.kube.get(API, APS, ns, name).expect("the resource")
    }

    fn relabel(&self, ns: &str, labels: Value) {
        self.kube
            .merge_patch(
                "v1",
                "namespaces",
                "",
                ns,
                json!({"metadata": {"labels": labels}}),
            )
            .unwrap();
    }

    fn creates(&self, ns: &str, name: &str) -> usize {
        self.up
            .serval
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == PROFILES_PATH)
            .filter(|r| {
                r.body
                    .as_ref()
                    .is_some_and(|b| b["name"] == display(ns, name))
            })
            .count()
    }

    fn upstream(&self, ns: &str, name: &str) -> Vec<Value> {
        self.up
            .serval
            .profiles()
            .into_iter()
            .filter(|p| p["name"] == display(ns, name))
            .collect()
    }

    /// Ready, its one upstream twin matches, and the status names the ClusterConnection.
    fn converged(&self, ns: &str, name: &str) -> Result<(), String> {
        let obj = self.get(ns, name);
        converged_status(&obj)?;
        if obj["status"]["clusterConnection"] != SHARED {
            return Err(format!(
                "status.clusterConnection {}",
                obj["status"]["clusterConnection"]
            ));
        }
        let [profile] = self
            .upstream(ns, name)
            .try_into()
            .map_err(|v: Vec<Value>| format!("{} upstream profiles", v.len()))?;
        if profile["description"] != obj["spec"]["description"] {
            return Err(format!("upstream description {}", profile["description"]));
        }
        Ok(())
    }

    fn ready_reason(&self, ns: &str, name: &str) -> Result<(String, String), String> {
        let obj = self.get(ns, name);
        let (status, reason) = condition_pair(&obj, "Ready").ok_or("no Ready condition")?;
        let message = obj["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["message"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        Ok((format!("{status}/{reason}"), message))
    }

    fn not_allowed(&self, ns: &str, name: &str) -> Result<String, String> {
        let (reason, message) = self.ready_reason(ns, name)?;
        if reason != "False/ConnectionNotAllowed" {
            return Err(format!("Ready is {reason}: {message}"));
        }
        Ok(message)
    }

    fn shared_status(&self) -> Value {
        self.kube
            .get(API, "clusterconnections", "", SHARED)
            .expect("the ClusterConnection")["status"]
            .clone()
    }
}

fn display(ns: &str, name: &str) -> String {
    format!("Profile {ns}/{name}")
}

fn allowed_count(env: &Env, want: u64) -> Result<(), String> {
    let status = env.shared_status();
    match status["allowedNamespaces"].as_u64() {
        Some(n) if n == want => Ok(()),
        other => Err(format!("allowedNamespaces {other:?}")),
    }
}

/// An allowed namespace's resource converges through the ClusterConnection (its status
/// says which); a refused one says `ConnectionNotAllowed`, naming the ClusterConnection
/// and the namespace, and nothing of it reaches the upstream. Relabelling takes effect
/// without a restart: in (it converges), out (it stops, says so, and its upstream
/// object stays; a later edit is not sent).
#[tokio::test]
async fn namespaces_are_allowed_by_label_and_relabelling_takes_effect_at_once() {
    let mut env = Env::new(json!({})).await;
    env.apply_ap("team-a", "oncall", Env::shared_ref());
    env.apply_ap("team-b", "oncall", Env::shared_ref());
    env.run(SecretsScope::Cluster);

    env.wait("team-a to converge", |e| e.converged("team-a", "oncall"))
        .await;
    let message = env
        .wait("team-b to be refused", |e| {
            e.not_allowed("team-b", "oncall")
        })
        .await;
    assert!(
        message.contains(&format!("ClusterConnection {SHARED}")) && message.contains("team-b"),
        "{message}"
    );
    assert_eq!(
        env.creates("team-b", "oncall"),
        0,
        "nothing sent for team-b"
    );
    env.wait("the ClusterConnection to count 1 namespace", |e| {
        allowed_count(e, 1)
    })
    .await;
    let shared = env.shared_status();
    assert_eq!(
        condition_pair(&json!({"status": shared}), "Ready")
            .unwrap()
            .1,
        "Verified"
    );

    // In: team-b gets the label.
    env.relabel("team-b", json!({"access": "serval"}));
    env.wait("team-b to converge", |e| e.converged("team-b", "oncall"))
        .await;
    env.wait("the count to be 2", |e| allowed_count(e, 2)).await;

    // Out: team-a loses it.
    env.relabel("team-a", json!({"access": null}));
    env.wait("team-a to be refused", |e| {
        e.not_allowed("team-a", "oncall")
    })
    .await;
    env.wait("the count to be 1", |e| allowed_count(e, 1)).await;
    assert_eq!(
        env.upstream("team-a", "oncall").len(),
        1,
        "not deleted upstream"
    );
    let writes = env.up.serval.writes();
    env.kube
        .merge_patch(
            API,
            APS,
            "team-a",
            "oncall",
            json!({"spec": {"description": "v2"}}),
        )
        .unwrap();
    env.wait("the edit to be refused", |e| {
        let obj = e.get("team-a", "oncall");
        e.not_allowed("team-a", "oncall")?;
        match obj["status"]["conditions"][0]["observedGeneration"] == obj["metadata"]["generation"]
        {
            true => Ok(()),
            false => Err("the edit not looked at yet".into()),
        }
    })
    .await;
    assert_eq!(
        env.up.serval.writes(),
        writes,
        "nothing sent upstream for team-a"
    );
    assert_eq!(env.creates("team-a", "oncall"), 1);

    // Deleting it needs the credentials it may no longer use: it says how to let go.
    env.kube
        .delete_object(API, APS, "team-a", "oncall")
        .unwrap();
    env.wait("the deletion to say it cannot proceed", |e| {
        let message = e.not_allowed("team-a", "oncall")?;
        match message.contains("deletionPolicy: Orphan") {
            true => Ok(()),
            false => Err(message),
        }
    })
    .await;
    env.kube
        .merge_patch(
            API,
            APS,
            "team-a",
            "oncall",
            json!({"spec": {"deletionPolicy": "Orphan"}}),
        )
        .unwrap();
    env.wait("the resource to be released", |e| {
        match e.kube.get(API, APS, "team-a", "oncall") {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;
    assert_eq!(
        env.upstream("team-a", "oncall").len(),
        1,
        "orphaned upstream"
    );
    assert_eq!(
        env.up.serval.writes(),
        writes,
        "nothing sent upstream for team-a"
    );
    env.shutdown().await;
}

/// Both namespaces draw from the ClusterConnection's one budget (5 requests/s, burst 5):
/// 20 creates from two namespaces take at least (20 − 5) ÷ 5 = 3 s upstream, where two
/// budgets would take half that. A Secret rotation reaches the users of both.
#[tokio::test]
async fn every_namespace_shares_one_budget_and_a_rotation_reaches_all() {
    let mut env = Env::new(json!({
        "rateLimit": {"requestsPerSecond": 5, "burst": 5},
        "allowedNamespaces": {"names": ["team-a", "team-b"]},
    }))
    .await;
    env.run(SecretsScope::Cluster);
    env.wait(
        "the ClusterConnection to be ready",
        |e| match condition_pair(&json!({"status": e.shared_status()}), "Ready") {
            Some((s, _)) if s == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let names: Vec<(String, String)> = (0..10)
        .flat_map(|i| ["team-a", "team-b"].map(|ns| (ns.to_string(), format!("p{i}"))))
        .collect();
    for (ns, name) in &names {
        env.apply_ap(ns, name, Env::shared_ref());
    }
    for (ns, name) in &names {
        env.wait("every profile to converge", |e| e.converged(ns, name))
            .await;
    }
    let creates: Vec<_> = env
        .up
        .serval
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == PROFILES_PATH)
        .collect();
    assert_eq!(creates.len(), 20);
    let span = creates.last().unwrap().at - creates.first().unwrap().at;
    assert!(
        span >= Duration::from_millis(2800),
        "20 creates in {span:?}: the namespaces did not share one 5 rps budget"
    );

    // A restart resyncs all 20 from one List: the two namespaces share the snapshot.
    env.stop(GRACE).await;
    let lists = env.profile_lists();
    env.run(SecretsScope::Cluster);
    let mut last = (lists, tokio::time::Instant::now());
    while last.1.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if env.profile_lists() != last.0 {
            last = (env.profile_lists(), tokio::time::Instant::now());
        }
    }
    assert_eq!(
        env.profile_lists() - lists,
        1,
        "the restart's resync of both namespaces took one List"
    );

    // Rotation: the old credentials stop working, the Secret gets new ones.
    env.up.serval.add_client("rotated", "n3w");
    env.kube.put_object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "serval-creds", "namespace": CREDENTIALS_NS},
        "data": {"clientId": "cm90YXRlZA==", "clientSecret": "bjN3"},
    }));
    let exchanges = env.up.serval.token_exchanges();
    env.wait("a token for the rotated client", |e| {
        match e.up.serval.token_exchanges() > exchanges {
            true => Ok(()),
            false => Err("no new token exchange".into()),
        }
    })
    .await;
    env.up.serval.revoke_tokens();
    for ns in ["team-a", "team-b"] {
        env.kube
            .merge_patch(API, APS, ns, "p0", json!({"spec": {"description": "v2"}}))
            .unwrap();
    }
    for ns in ["team-a", "team-b"] {
        env.wait("the edit to converge with the new credentials", |e| {
            e.converged(ns, "p0")
        })
        .await;
    }
    env.shutdown().await;
}

/// `--secrets-scope credentials-namespace`: a namespaced Connection is refused with a
/// reason of its own, its users wait for it, ClusterConnections work, and the operator
/// sends no request for a Secret outside the credentials namespace.
#[tokio::test]
async fn least_privilege_mode_reads_secrets_only_in_the_credentials_namespace() {
    let mut env = Env::new(json!({})).await;
    env.kube.put_object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "own-creds", "namespace": "team-b"},
        "data": {"clientId": "b3BlcmF0b3I=", "clientSecret": "czNjcmV0"},
    }));
    env.kube.put_object(json!({
        "apiVersion": API, "kind": "Connection",
        "metadata": {"name": "own", "namespace": "team-b", "generation": 1},
        "spec": {"serval": {"baseUrl": env.up.serval.base_url(), "credentialsSecretRef": {"name": "own-creds"}}},
    }));
    env.apply_ap("team-a", "oncall", Env::shared_ref());
    env.apply_ap("team-b", "own", json!({"name": "own"}));
    env.run(SecretsScope::CredentialsNamespace);

    env.wait("team-a to converge", |e| e.converged("team-a", "oncall"))
        .await;
    env.wait("the namespaced Connection to be refused", |e| {
        let conn = e.kube.get(API, "connections", "team-b", "own").unwrap();
        match condition_pair(&conn, "Ready") {
            Some((s, r)) if s == "False" && r == "NamespacedConnectionsDisabled" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (reason, message) = env
        .wait("its user to wait", |e| {
            let (reason, message) = e.ready_reason("team-b", "own")?;
            match reason.as_str() {
                "False/WaitingForDependency" => Ok((reason, message)),
                _ => Err(format!("{reason}: {message}")),
            }
        })
        .await;
    assert!(message.contains("ClusterConnection"), "{reason}: {message}");
    assert_eq!(env.creates("team-b", "own"), 0);
    let elsewhere: Vec<_> = env
        .kube
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/secrets"))
        .filter(|r| {
            !r.path
                .starts_with(&format!("/api/v1/namespaces/{CREDENTIALS_NS}/"))
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "Secret requests outside {CREDENTIALS_NS}: {elsewhere:?}"
    );
    env.shutdown().await;
}

/// A ClusterConnection in use is not deleted (`InUse` names its users in every
/// namespace) until they are gone; an operator limited to one namespace cannot use
/// ClusterConnections and says why.
#[tokio::test]
async fn a_used_cluster_connection_is_kept_and_a_one_namespace_operator_refuses_them() {
    let mut env = Env::new(json!({"allowedNamespaces": {"names": ["team-a", "team-b"]}})).await;
    env.apply_ap("team-a", "oncall", Env::shared_ref());
    env.apply_ap("team-b", "oncall", Env::shared_ref());
    env.run(SecretsScope::Cluster);
    for ns in ["team-a", "team-b"] {
        env.wait("both to converge", |e| e.converged(ns, "oncall"))
            .await;
    }
    env.kube
        .delete_object(API, "clusterconnections", "", SHARED)
        .unwrap();
    let message = env
        .wait("the ClusterConnection to say it is in use", |e| {
            let status = json!({"status": e.shared_status()});
            match condition_pair(&status, "Ready") {
                Some((_, r)) if r == "InUse" => Ok(status["status"]["conditions"].to_string()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    for user in ["AccessProfile team-a/oncall", "AccessProfile team-b/oncall"] {
        assert!(message.contains(user), "{message}");
    }
    for ns in ["team-a", "team-b"] {
        env.kube.delete_object(API, APS, ns, "oncall").unwrap();
    }
    env.wait("the ClusterConnection to go", |e| {
        match e.kube.get(API, "clusterconnections", "", SHARED) {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;
    env.shutdown().await;

    let mut env = Env::new(json!({"allowedNamespaces": {"names": ["team-a"]}})).await;
    env.apply_ap("team-a", "oncall", Env::shared_ref());
    env.start(RunConfig {
        namespace: Some("team-a".into()),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    });
    let message = env
        .wait("the resource to be refused", |e| {
            e.not_allowed("team-a", "oncall")
        })
        .await;
    assert!(message.contains("--namespace"), "{message}");
    assert_eq!(env.creates("team-a", "oncall"), 0);
    env.shutdown().await;
}

/// An upgrade that skipped the new ClusterConnection CRD (Helm never upgrades CRDs; commit
/// 9d457cd, found on the real apiserver): the fake serves only installed CRDs, so the
/// operator's List of ClusterConnections is the apiserver's 404. The operator runs as
/// before for namespaced Connections, never watches ClusterConnections, and a resource
/// naming one is told the CRD is missing instead of waiting forever.
#[tokio::test]
async fn without_the_cluster_connection_crd_the_rest_still_works() {
    let kube = FakeKube::new();
    kube.require_crds();
    kube.install_crds_except(&["ClusterConnection"]);
    let mut env = Env::seeded(kube, None).await;
    env.kube.put_object(json!({
        "apiVersion": API, "kind": "Connection",
        "metadata": {"name": "own", "namespace": CREDENTIALS_NS, "generation": 1},
        "spec": {"serval": {"baseUrl": env.up.serval.base_url(), "credentialsSecretRef": {"name": "serval-creds"}}},
    }));
    env.apply_ap(CREDENTIALS_NS, "own", json!({"name": "own"}));
    env.apply_ap("team-a", "shared", Env::shared_ref());
    env.run(SecretsScope::Cluster);

    env.wait("the namespaced one to converge", |e| {
        converged_status(&e.get(CREDENTIALS_NS, "own"))
    })
    .await;
    let message = env
        .wait("the ClusterConnection user to be refused", |e| {
            e.not_allowed("team-a", "shared")
        })
        .await;
    assert!(
        message.contains("the ClusterConnection CRD is not installed"),
        "{message}"
    );
    assert_eq!(env.creates("team-a", "shared"), 0);
    assert_eq!(env.up.serval.profiles().len(), 1, "only the namespaced one");
    let cluster_connections: Vec<_> = env
        .kube
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/clusterconnections"))
        .collect();
    assert!(
        !cluster_connections.is_empty(),
        "the operator never asked for ClusterConnections"
    );
    assert!(
        cluster_connections
            .iter()
            .all(|r| r.query_param("watch").is_none()),
        "ClusterConnections watched"
    );
    env.assert_running();
    env.shutdown().await;
}

/// The least-privilege mode works through ClusterConnections, which a one-namespace
/// operator does not watch: the binary refuses the combination before it starts.
#[test]
fn the_binary_refuses_least_privilege_with_one_namespace() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_accessplane"))
        .args([
            "run",
            "--namespace=team-a",
            "--secrets-scope=credentials-namespace",
        ])
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--secrets-scope credentials-namespace")
            && stderr.contains("drop --namespace"),
        "{stderr}"
    );
}

/// `allowedScopes` hands out a slice of the tenant: a resource of another team is
/// refused (`ScopeNotAllowed`) with no upstream call of its own, and re-scoping the
/// ClusterConnection takes effect without a restart. Two ClusterConnections share one
/// Secret, each with its own namespaces and teams.
#[tokio::test]
async fn allowed_scopes_slice_one_tenant_between_teams_and_rescoping_takes_effect_at_once() {
    let mut env = Env::new(json!({"allowedScopes": ["team-1"]})).await;
    let mut other = env.kube.get(API, "clusterconnections", "", SHARED).unwrap();
    other["metadata"] = json!({"name": "serval-team-2", "generation": 1});
    other["spec"]["allowedNamespaces"] = json!({"names": ["team-b"]});
    other["spec"]["allowedScopes"] = json!(["team-2"]);
    env.kube.put_object(other);
    env.apply_ap("team-a", "oncall", Env::shared_ref());
    // Team A tries a team outside its slice through its ClusterConnection.
    env.kube.put_object(json!({
        "apiVersion": API, "kind": "AccessProfile",
        "metadata": {"name": "outside", "namespace": "team-a", "generation": 1},
        "spec": {"connectionRef": Env::shared_ref(), "teamId": "team-3",
                 "name": display("team-a", "outside"), "description": "v1"},
    }));
    // Team B has its own ClusterConnection for team-2.
    env.kube.put_object(json!({
        "apiVersion": API, "kind": "AccessProfile",
        "metadata": {"name": "mine", "namespace": "team-b", "generation": 1},
        "spec": {"connectionRef": {"kind": "ClusterConnection", "name": "serval-team-2"},
                 "teamId": "team-2", "name": display("team-b", "mine"), "description": "v1"},
    }));
    env.start(RunConfig {
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        credentials: Credentials {
            namespace: CREDENTIALS_NS.into(),
            scope: SecretsScope::Cluster,
        },
        timing: accessplane::engine::requeue::Timing {
            scopes_in_use_every: Duration::from_millis(500),
            ..Default::default()
        },
        ..Default::default()
    });
    env.wait("team-a's own profile", |e| e.converged("team-a", "oncall"))
        .await;
    env.wait("team-b's profile", |e| {
        converged_status(&e.get("team-b", "mine")).map(|_| ())
    })
    .await;
    let message = env
        .wait("the outside profile refused", |e| {
            match e.ready_reason("team-a", "outside")? {
                (reason, message) if reason == "False/ScopeNotAllowed" => Ok(message),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    assert!(
        message.contains("team-1") && message.contains("team-3") && message.contains(SHARED),
        "{message}"
    );
    assert_eq!(env.creates("team-b", "mine"), 1);
    // Nothing at all was sent about team-3: no create, no List, no read.
    let about_team_3 = env
        .up
        .serval
        .requests()
        .iter()
        .filter(|r| {
            r.query.as_deref().is_some_and(|q| q.contains("team-3"))
                || r.body
                    .as_ref()
                    .is_some_and(|b| b.to_string().contains("team-3"))
        })
        .count();
    assert_eq!(about_team_3, 0, "requests about the outside team");

    // The platform team widens team A's slice: it takes effect without a restart.
    env.kube
        .merge_patch(
            API,
            "clusterconnections",
            "",
            SHARED,
            json!({"metadata": {"generation": 2}, "spec": {"allowedScopes": ["team-1", "team-3"]}}),
        )
        .unwrap();
    env.wait("the outside profile created", |e| {
        e.converged("team-a", "outside")
    })
    .await;
    // The status shows which teams the ClusterConnections' resources use.
    let in_use = |e: &Env, name: &str| {
        let cc = e.kube.get(API, "clusterconnections", "", name).unwrap();
        cc["status"]["scopesInUse"].clone()
    };
    env.wait("the scopes in use", |e| {
        match (in_use(e, SHARED), in_use(e, "serval-team-2")) {
            (a, b) if a == json!(["team-1", "team-3"]) && b == json!(["team-2"]) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    env.shutdown().await;
}
