//! Real-apiserver tier: the operator binary running with nothing but the chart's RBAC.
//! The chart is rendered, its ServiceAccount, (Cluster)Roles and bindings applied, a
//! token minted for the ServiceAccount (TokenRequest), and `accessplane run` started
//! with only that identity in its kubeconfig — as the default install (all namespaces),
//! with `watchNamespace`, with `secrets.scope=credentialsNamespace` (least privilege,
//! ClusterConnections), and without the ClusterConnection CRD (an upgrade that skipped
//! the CRDs). A Connection and an AccessProfile
//! against the fake Serval become Ready, the audit log shows no request of the
//! operator refused and every one carrying its User-Agent, and `kubectl auth can-i`
//! answers the documented matrix.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::admission::namespace;
use crate::support::envtest::{Envtest, dedicated_envtest, exclusive};
use crate::support::fake_serval::FakeServal;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/accessplane");
const RELEASE: &str = "accessplane";

/// The chart's RBAC objects and ServiceAccount for a release in `ns`.
pub fn chart_rbac(env: &Envtest, ns: &str, values: &[&str]) -> String {
    let mut args = vec!["template", RELEASE, CHART, "-n", ns];
    for value in values {
        args.extend(["--set", value]);
    }
    let rendered = env.helm_ok(&args);
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&rendered)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|d| {
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ]
            .contains(&d["kind"].as_str().unwrap_or_default())
        })
        .collect();
    assert!(docs.len() >= 3, "{rendered}");
    docs.iter().map(|d| d.to_string() + "\n").collect()
}

/// An `accessplane run` process, killed when dropped.
pub struct Operator {
    pub child: Child,
    log: PathBuf,
}

impl Operator {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `accessplane run` as the chart's ServiceAccount, nothing else in its environment.
pub async fn run_as_service_account(env: &Envtest, ns: &str, args: &[&str]) -> Operator {
    let token = env.service_account_token(ns, RELEASE).await;
    let kubeconfig = env.write_kubeconfig(&token, ns);
    spawn_operator(env, &kubeconfig, args, &[])
}

/// `accessplane run ARGS` with only `kubeconfig` and `vars` in its environment (a 10 s
/// resync, metrics on a free port); its log goes to the tier's folder.
pub fn spawn_operator(
    env: &Envtest,
    kubeconfig: &std::path::Path,
    args: &[&str],
    vars: &[(&str, &str)],
) -> Operator {
    let log = env
        .dir
        .join(format!("operator-{:08x}.log", rand::random::<u32>()));
    let out = std::fs::File::create(&log).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_accessplane"))
        .arg("run")
        .args(args)
        .args(["--resync-interval=10s", "--log-level=info"])
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        .env_clear()
        .env("KUBECONFIG", kubeconfig)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Operator { child, log }
}

pub fn ready_reason(env: &Envtest, ns: &str, kind: &str, name: &str) -> String {
    let out = env.kubectl(
        &[
            "get",
            kind,
            name,
            "-n",
            ns,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}/{.status.conditions[?(@.type==\"Ready\")].reason}",
        ],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub async fn wait_ready(env: &Envtest, operator: &mut Operator, ns: &str, kind: &str, name: &str) {
    for _ in 0..240 {
        if ready_reason(env, ns, kind, name).starts_with("True/") {
            return;
        }
        assert!(
            matches!(operator.child.try_wait(), Ok(None)),
            "the operator exited:\n{}",
            operator.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "{kind} {ns}/{name} not Ready ({}):\n{}",
        ready_reason(env, ns, kind, name),
        operator.log()
    );
}

/// A Secret, a Connection to the fake Serval and an AccessProfile in `ns` (as admin).
pub fn create_resources(env: &Envtest, ns: &str, serval: &FakeServal) {
    let docs = [
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "serval-creds", "namespace": ns},
               "stringData": {"clientId": "rbac-operator", "clientSecret": "rbac-secret"}}),
        json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "Connection",
               "metadata": {"name": "serval-prod", "namespace": ns},
               "spec": {"serval": {"baseUrl": serval.base_url(), "credentialsSecretRef": {"name": "serval-creds"}}}}),
        json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
               "metadata": {"name": "payments-oncall", "namespace": ns},
               "spec": {"connectionRef": {"name": "serval-prod"}, "teamId": "team-payments", "name": "Payments on-call"}}),
    ];
    let stream: String = docs.iter().map(|d| d.to_string() + "\n").collect();
    env.kubectl_ok(&["create", "-f", "-"], Some(&stream));
}

/// The operator's requests in the audit log: none refused, all with its User-Agent.
fn check_audit(env: &Envtest, user: &str) {
    let events = audited(env, user, accessplane::USER_AGENT);
    assert!(
        events.len() > 10,
        "few requests of {user}: {}",
        events.len()
    );
}

/// The audit log's requests of `user` (at least one): none refused (401/403), every one
/// with User-Agent `agent`.
pub fn audited(env: &Envtest, user: &str, agent: &str) -> Vec<Value> {
    let events: Vec<Value> = env
        .audit_events()
        .into_iter()
        .filter(|e| e["user"]["username"] == user)
        .collect();
    assert!(!events.is_empty(), "no audited request of {user}");
    let refused: Vec<String> = events
        .iter()
        .filter(|e| {
            e["responseStatus"]["code"]
                .as_u64()
                .is_some_and(|c| c == 401 || c == 403)
        })
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect();
    assert!(
        refused.is_empty(),
        "requests of {user} refused: {refused:?}"
    );
    let other: Vec<String> = events
        .iter()
        .filter(|e| e["userAgent"] != agent)
        .map(|e| format!("{} {} ({})", e["verb"], e["requestURI"], e["userAgent"]))
        .collect();
    assert!(
        other.is_empty(),
        "requests without User-Agent {agent}: {other:?}"
    );
    events
}

/// `kubectl auth can-i VERB RESOURCE -n NS` as `user`.
fn can_i(env: &Envtest, user: &str, verb: &str, resource: &str, ns: &str) -> bool {
    let out = env.kubectl(
        &[
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            ns,
            &format!("--as={user}"),
        ],
        None,
    );
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

fn assert_matrix(env: &Envtest, user: &str, rows: &[(&str, &str, &str, bool)]) {
    let wrong: Vec<String> = rows
        .iter()
        .filter(|(verb, resource, ns, want)| can_i(env, user, verb, resource, ns) != *want)
        .map(|(verb, resource, ns, want)| format!("{verb} {resource} -n {ns}: expected {want}"))
        .collect();
    assert!(wrong.is_empty(), "can-i as {user}: {wrong:?}");
}

/// One test's installation: an apiserver of its own (an operator watching all namespaces
/// must not reconcile other tests' resources), the CRDs, the release namespace `system`
/// and a `team` namespace, the chart's RBAC rendered with `values(team)`, and a fake
/// Serval knowing the operator's client, with the Secret, Connection and AccessProfile
/// of [`create_resources`] in `team`. `None` without the envtest binaries or helm.
struct Installed {
    _exclusive: tokio::sync::MutexGuard<'static, ()>,
    env: Envtest,
    system: String,
    team: String,
    serval: FakeServal,
}

async fn installed(
    with_cluster_connection_crd: bool,
    values: impl Fn(&str) -> Vec<String>,
) -> Option<Installed> {
    let exclusive = exclusive().await;
    let env = dedicated_envtest()?;
    env.helm_binary()?;
    let without: &[&str] = if with_cluster_connection_crd {
        &[]
    } else {
        &["clusterconnection.yaml"]
    };
    env.install_crds_except(without);
    let system = namespace(&env, "accessplane-system");
    let team = namespace(&env, "team");
    let values = values(&team);
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    env.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&chart_rbac(&env, &system, &values)),
    );
    let serval = FakeServal::start().await;
    serval.add_client("rbac-operator", "rbac-secret");
    create_resources(&env, &team, &serval);
    Some(Installed {
        _exclusive: exclusive,
        env,
        system,
        team,
        serval,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_works_with_the_default_installs_rbac_and_no_more() {
    let Some(Installed {
        _exclusive,
        env,
        system,
        team,
        serval,
    }) = installed(true, |_| vec![]).await
    else {
        return;
    };

    let mut operator = run_as_service_account(&env, &system, &[]).await;
    wait_ready(&env, &mut operator, &team, "connection", "serval-prod").await;
    wait_ready(
        &env,
        &mut operator,
        &team,
        "accessprofile",
        "payments-oncall",
    )
    .await;
    assert_eq!(serval.profiles().len(), 1);
    let user = format!("system:serviceaccount:{system}:{RELEASE}");
    check_audit(&env, &user);
    assert_matrix(
        &env,
        &user,
        &[
            ("list", "accessprofiles.accessplane.io", &team, true),
            ("watch", "connections.accessplane.io", "default", true),
            ("patch", "accessprofiles.accessplane.io/status", &team, true),
            ("create", "accessprofiles.accessplane.io", &team, false),
            ("delete", "accessprofiles.accessplane.io", &team, false),
            ("get", "secrets", &team, true),
            ("create", "secrets", &team, false),
            ("create", "events.events.k8s.io", &team, true),
            ("create", "leases.coordination.k8s.io", &system, false),
            (
                "patch",
                "customresourcedefinitions.apiextensions.k8s.io",
                "default",
                false,
            ),
            ("list", "pods", &team, false),
            (
                "watch",
                "clusterconnections.accessplane.io",
                "default",
                true,
            ),
            (
                "patch",
                "clusterconnections.accessplane.io/status",
                "default",
                true,
            ),
            ("list", "namespaces", "default", true),
            ("patch", "namespaces", "default", false),
        ],
    );
}

/// `secrets.scope=credentialsNamespace`: Secrets are readable in the credentials
/// namespace only (a Role there). A ClusterConnection whose Secret is there serves an
/// AccessProfile in a team namespace it allows; a namespaced Connection is refused with
/// its own reason; no request of the operator is refused; `can-i` shows no Secret
/// access anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_works_with_the_least_privilege_installs_rbac_and_no_more() {
    let Some(Installed {
        _exclusive,
        env,
        system,
        team,
        serval,
    }) = installed(true, |_| vec!["secrets.scope=credentialsNamespace".into()]).await
    else {
        return;
    };
    let docs = [
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "serval-shared-creds", "namespace": system},
               "stringData": {"clientId": "rbac-operator", "clientSecret": "rbac-secret"}}),
        json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "ClusterConnection",
               "metadata": {"name": "serval-shared"},
               "spec": {"serval": {"baseUrl": serval.base_url(), "credentialsSecretRef": {"name": "serval-shared-creds"}},
                        "allowedNamespaces": {"names": [team],
                            "namespaceSelector": {"matchLabels": {"accessplane.io/serval": "allowed"}}}}}),
        json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
               "metadata": {"name": "shared-oncall", "namespace": team},
               "spec": {"connectionRef": {"kind": "ClusterConnection", "name": "serval-shared"},
                        "teamId": "team-payments", "name": "Shared on-call"}}),
    ];
    let stream: String = docs.iter().map(|d| d.to_string() + "\n").collect();
    env.kubectl_ok(&["create", "-f", "-"], Some(&stream));

    let mut operator = run_as_service_account(
        &env,
        &system,
        &[
            "--secrets-scope=credentials-namespace",
            &format!("--credentials-namespace={system}"),
        ],
    )
    .await;
    wait_ready(
        &env,
        &mut operator,
        "default",
        "clusterconnection",
        "serval-shared",
    )
    .await;
    wait_ready(&env, &mut operator, &team, "accessprofile", "shared-oncall").await;
    // `kubectl get clusterconnections` shows who may use it; the category lists it too.
    let listed = env.kubectl_ok(&["get", "clusterconnections"], None);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "READY", "PROVIDER", "ALLOWED", "REASON", "AGE"],
        "{listed}"
    );
    assert_eq!(
        rows[1][..5],
        ["serval-shared", "True", "serval", "1", "Verified"],
        "{listed}"
    );
    let category = env.kubectl_ok(&["get", "accessplane", "--all-namespaces"], None);
    assert!(
        category.contains("clusterconnection.accessplane.io/serval-shared"),
        "{category}"
    );
    // A namespace labelled in (the real apiserver's namespace watch, metadata only).
    let other = namespace(&env, "other");
    let late = json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
        "metadata": {"name": "late-oncall", "namespace": other},
        "spec": {"connectionRef": {"kind": "ClusterConnection", "name": "serval-shared"},
                 "teamId": "team-payments", "name": "Late on-call"}});
    env.kubectl_ok(&["create", "-f", "-"], Some(&late.to_string()));
    for _ in 0..120 {
        if ready_reason(&env, &other, "accessprofile", "late-oncall")
            == "False/ConnectionNotAllowed"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        ready_reason(&env, &other, "accessprofile", "late-oncall"),
        "False/ConnectionNotAllowed"
    );
    env.kubectl_ok(
        &[
            "label",
            "namespace",
            &other,
            "accessplane.io/serval=allowed",
        ],
        None,
    );
    wait_ready(&env, &mut operator, &other, "accessprofile", "late-oncall").await;
    for _ in 0..120 {
        let count = env.kubectl_ok(
            &[
                "get",
                "clusterconnection",
                "serval-shared",
                "-o",
                "jsonpath={.status.allowedNamespaces}",
            ],
            None,
        );
        if count == "2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        env.kubectl_ok(
            &[
                "get",
                "clusterconnection",
                "serval-shared",
                "-o",
                "jsonpath={.status.allowedNamespaces}"
            ],
            None,
        ),
        "2"
    );
    for _ in 0..120 {
        if ready_reason(&env, &team, "connection", "serval-prod")
            == "False/NamespacedConnectionsDisabled"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        ready_reason(&env, &team, "connection", "serval-prod"),
        "False/NamespacedConnectionsDisabled",
        "{}",
        operator.log()
    );
    assert_eq!(
        ready_reason(&env, &team, "accessprofile", "payments-oncall"),
        "False/WaitingForDependency"
    );
    assert_eq!(
        serval.profiles().len(),
        2,
        "only the shared ones were created"
    );
    let user = format!("system:serviceaccount:{system}:{RELEASE}");
    check_audit(&env, &user);
    assert_matrix(
        &env,
        &user,
        &[
            ("get", "secrets", &system, true),
            ("watch", "secrets", &system, true),
            ("get", "secrets", &team, false),
            ("list", "secrets", "kube-system", false),
            (
                "watch",
                "clusterconnections.accessplane.io",
                "default",
                true,
            ),
            ("list", "namespaces", "default", true),
            ("list", "accessprofiles.accessplane.io", &team, true),
            ("create", "events.events.k8s.io", &team, true),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_works_with_the_watch_namespace_installs_rbac_and_no_more() {
    let Some(Installed {
        _exclusive,
        env,
        system,
        team,
        serval: _serval,
    }) = installed(true, |team| {
        vec![
            format!("watchNamespace={team}"),
            "leaderElection.enabled=true".into(),
        ]
    })
    .await
    else {
        return;
    };
    let other = namespace(&env, "other");

    let mut operator = run_as_service_account(
        &env,
        &system,
        &[
            &format!("--namespace={team}"),
            "--leader-election",
            &format!("--leader-election-namespace={system}"),
        ],
    )
    .await;
    wait_ready(&env, &mut operator, &team, "connection", "serval-prod").await;
    wait_ready(
        &env,
        &mut operator,
        &team,
        "accessprofile",
        "payments-oncall",
    )
    .await;
    let user = format!("system:serviceaccount:{system}:{RELEASE}");
    check_audit(&env, &user);
    assert_matrix(
        &env,
        &user,
        &[
            ("list", "accessprofiles.accessplane.io", &team, true),
            ("list", "accessprofiles.accessplane.io", &other, false),
            ("get", "secrets", &team, true),
            ("get", "secrets", &other, false),
            ("list", "secrets", "kube-system", false),
            ("create", "events.events.k8s.io", &team, true),
            ("create", "events.events.k8s.io", &other, false),
            ("update", "leases.coordination.k8s.io", &system, true),
            ("update", "leases.coordination.k8s.io", &team, false),
        ],
    );
}

/// An upgrade that skipped the new ClusterConnection CRD (Helm never upgrades CRDs): the
/// operator runs as before for namespaced Connections, and a resource naming a
/// ClusterConnection is told the CRD is missing instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cluster_connection_crd_the_rest_still_works() {
    let Some(Installed {
        _exclusive,
        env,
        system,
        team,
        serval,
    }) = installed(false, |_| vec![]).await
    else {
        return;
    };
    let shared = json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
        "metadata": {"name": "shared-oncall", "namespace": team},
        "spec": {"connectionRef": {"kind": "ClusterConnection", "name": "serval-shared"},
                 "teamId": "team-payments", "name": "Shared on-call"}});
    env.kubectl_ok(&["create", "-f", "-"], Some(&shared.to_string()));

    let mut operator = run_as_service_account(&env, &system, &[]).await;
    wait_ready(
        &env,
        &mut operator,
        &team,
        "accessprofile",
        "payments-oncall",
    )
    .await;
    let mut message = String::new();
    for _ in 0..120 {
        let out = env.kubectl_ok(
            &[
                "get", "accessprofile", "shared-oncall", "-n", &team, "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}: {.status.conditions[?(@.type==\"Ready\")].message}",
            ],
            None,
        );
        message = out;
        if message.starts_with("ConnectionNotAllowed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        message.starts_with("ConnectionNotAllowed") && message.contains("CRD is not installed"),
        "{message}\n{}",
        operator.log()
    );
    assert_eq!(
        serval.profiles().len(),
        1,
        "only the namespaced one was created"
    );
}
