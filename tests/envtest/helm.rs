//! Real-apiserver tier: the chart through a real `helm` (v4: server-side apply by
//! default) against a real kube-apiserver — install, upgrades that turn leader
//! election off and on again, rollback, `helm test`, uninstall; the same release name
//! in two namespaces; restricted PodSecurity for the operator and the test Pod.

use serde_json::Value;

use crate::admission::namespace;
use crate::support::envtest::{Envtest, envtest};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/accessplane");
const RELEASE: &str = "accessplane";

fn deployment_strategy(env: &Envtest, ns: &str) -> Value {
    let out = env.kubectl_ok(
        &[
            "get",
            "deployment",
            RELEASE,
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.strategy}",
        ],
        None,
    );
    serde_json::from_str(&out).unwrap()
}

/// A namespace enforcing (and warning about) the restricted Pod Security Standard,
/// with the `default` ServiceAccount a controller-manager would have made.
fn restricted_namespace(env: &Envtest, prefix: &str) -> String {
    let ns = namespace(env, prefix);
    env.kubectl_ok(
        &[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ],
        None,
    );
    env.kubectl_ok(&["create", "serviceaccount", "default", "-n", &ns], None);
    ns
}

fn helm_ok_quiet(env: &Envtest, args: &[&str]) {
    let out = env.helm(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "helm {} failed:\n{}{stderr}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !stderr.contains("PodSecurity"),
        "helm {}: {stderr}",
        args.join(" ")
    );
}

fn names_of(env: &Envtest, kind: &str) -> Vec<String> {
    env.kubectl_ok(&["get", kind, "-o", "name"], None)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn helm_install_upgrade_rollback_test_uninstall_with_server_side_apply() {
    let Some(env) = envtest() else { return };
    if env.helm_binary().is_none() {
        return;
    }
    let ns = restricted_namespace(env, "helm");
    let rollingupdate = serde_json::json!({
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}
    });
    let recreate = serde_json::json!({"type": "Recreate"});

    // 1: leader election on, two replicas.
    helm_ok_quiet(
        env,
        &[
            "install",
            RELEASE,
            CHART,
            "-n",
            &ns,
            "--set",
            "leaderElection.enabled=true",
            "--set",
            "replicaCount=2",
        ],
    );
    assert_eq!(deployment_strategy(env, &ns), rollingupdate);
    // 2: off — the upgrade Helm 4's server-side apply refused while the strategy
    // was left to the apiserver's defaults.
    helm_ok_quiet(
        env,
        &[
            "upgrade",
            RELEASE,
            CHART,
            "-n",
            &ns,
            "--reuse-values",
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "replicaCount=1",
        ],
    );
    assert_eq!(deployment_strategy(env, &ns), recreate);
    // 3: on again.
    helm_ok_quiet(
        env,
        &[
            "upgrade",
            RELEASE,
            CHART,
            "-n",
            &ns,
            "--reuse-values",
            "--set",
            "leaderElection.enabled=true",
            "--set",
            "replicaCount=2",
        ],
    );
    assert_eq!(deployment_strategy(env, &ns), rollingupdate);
    // 4: back to revision 2 (Recreate), and forward again to 1's values.
    helm_ok_quiet(env, &["rollback", RELEASE, "2", "-n", &ns]);
    assert_eq!(deployment_strategy(env, &ns), recreate);
    helm_ok_quiet(env, &["rollback", RELEASE, "1", "-n", &ns]);
    assert_eq!(deployment_strategy(env, &ns), rollingupdate);

    // `helm test` creates its probe Pod; restricted PodSecurity admits it. There is no
    // kubelet here, so the Pod stays Pending and helm gives up after its timeout.
    let out = env.helm(&["test", RELEASE, "-n", &ns, "--timeout", "3s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("forbidden"), "{stderr}");
    let pod: Value = serde_json::from_str(&env.kubectl_ok(
        &[
            "get",
            "pod",
            "accessplane-test-readyz",
            "-n",
            &ns,
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        serde_json::json!([
            "probe",
            format!("http://accessplane-metrics.{ns}.svc:8080/readyz")
        ])
    );

    // Uninstall removes what the release made, cluster-scoped RBAC included, and keeps
    // the CRDs (Helm never deletes them).
    let role = format!("clusterrole.rbac.authorization.k8s.io/accessplane:{ns}");
    assert!(names_of(env, "clusterrole").contains(&role));
    helm_ok_quiet(env, &["uninstall", RELEASE, "-n", &ns]);
    assert!(!names_of(env, "clusterrole").contains(&role));
    assert!(
        env.kubectl(&["get", "deployment", RELEASE, "-n", &ns], None)
            .status
            .code()
            != Some(0)
    );
    let crds = names_of(env, "crd");
    for crd in [
        "accessprofiles",
        "appentitlements",
        "connections",
        "connectors",
        "mcptoolsets",
        "personaaccesscontrols",
    ] {
        assert!(
            crds.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{crd}.accessplane.io"
            )),
            "{crd} gone after uninstall: {crds:?}"
        );
    }
}

#[test]
fn the_same_release_name_installs_in_two_namespaces() {
    let Some(env) = envtest() else { return };
    if env.helm_binary().is_none() {
        return;
    }
    let team_a = namespace(env, "team-a");
    let team_b = namespace(env, "team-b");
    for ns in [&team_a, &team_b] {
        // Each watches its own namespace and elects its leader there (a Role each).
        helm_ok_quiet(
            env,
            &[
                "install",
                RELEASE,
                CHART,
                "-n",
                ns,
                "--set",
                &format!("watchNamespace={ns}"),
                "--set",
                "replicaCount=2",
                "--set",
                "installCRDs=true",
            ],
        );
    }
    // Each release's cluster-wide CRD role binds its own ServiceAccount.
    for ns in [&team_a, &team_b] {
        let binding: Value = serde_json::from_str(&env.kubectl_ok(
            &[
                "get",
                "clusterrolebinding",
                &format!("accessplane:{ns}:crds"),
                "-o",
                "json",
            ],
            None,
        ))
        .unwrap();
        assert_eq!(binding["subjects"][0]["namespace"], ns.as_str());
        assert_eq!(binding["roleRef"]["name"], format!("accessplane:{ns}:crds"));
        let auth = env.kubectl(
            &[
                "auth",
                "can-i",
                "patch",
                "customresourcedefinitions/connections.accessplane.io",
                &format!("--as=system:serviceaccount:{ns}:accessplane"),
            ],
            None,
        );
        assert_eq!(String::from_utf8_lossy(&auth.stdout).trim(), "yes");
    }
    for ns in [&team_a, &team_b] {
        helm_ok_quiet(env, &["uninstall", RELEASE, "-n", ns]);
    }
}
