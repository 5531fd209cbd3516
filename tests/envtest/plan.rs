//! Real-apiserver tier: `accessplane plan` as users run it before a sync — the binary,
//! with only the read-only identity of `deploy/argocd/plan-presync/rbac.yaml` in its
//! kubeconfig, against the fake Serval. The plan works (no request refused, `--prune`
//! included), says what would change, and the audit log shows that it only read:
//! every request a get or list, none of them refused (the Role is enough), all with the
//! plan's User-Agent.

use std::process::Command;

use serde_json::{Value, json};

use crate::admission::{install_crds, namespace};
use crate::rbac::audited;
use crate::support::envtest::{envtest, output};
use crate::support::fake_serval::FakeServal;

const PRESYNC_RBAC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/argocd/plan-presync/rbac.yaml"
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_runs_with_the_presync_read_only_identity_and_only_reads() {
    let Some(env) = envtest() else { return };
    install_crds(env);
    let ns = namespace(env, "plan");
    env.kubectl_ok(&["apply", "-n", &ns, "-f", PRESYNC_RBAC], None);
    let serval = FakeServal::start().await;
    serval.add_client("plan-client", "plan-secret");
    let applied = [
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "serval-creds", "namespace": ns},
               "stringData": {"clientId": "plan-client", "clientSecret": "plan-secret"}}),
        json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "Connection",
               "metadata": {"name": "serval", "namespace": ns},
               "spec": {"serval": {"baseUrl": serval.base_url(), "credentialsSecretRef": {"name": "serval-creds"}}}}),
        json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
               "metadata": {"name": "dropped", "namespace": ns, "labels": {"app.kubernetes.io/instance": "access"}},
               "spec": {"connectionRef": {"name": "serval"}, "teamId": "team-payments", "name": "Dropped"}}),
    ];
    let stream: String = applied.iter().map(|d| d.to_string() + "\n").collect();
    env.kubectl_ok(&["create", "-f", "-"], Some(&stream));
    let token = env.service_account_token(&ns, "accessplane-plan").await;
    let kubeconfig = env.write_kubeconfig(&token, &ns);
    let input = json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
        "metadata": {"name": "oncall", "labels": {"app.kubernetes.io/instance": "access"}},
        "spec": {"connectionRef": {"name": "serval"}, "teamId": "team-payments", "name": "Payments on-call"}})
    .to_string();

    let out = tokio::task::spawn_blocking(move || {
        let mut plan = Command::new(env!("CARGO_BIN_EXE_accessplane"));
        plan.env_clear();
        let args = [
            "plan",
            "-f",
            "-",
            "-o",
            "json",
            "--prune",
            "-l",
            "app.kubernetes.io/instance=access",
        ];
        output(plan, &args, &kubeconfig, Some(&input))
    })
    .await
    .unwrap();

    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "changes present: {stdout}{stderr}"
    );
    let plan: Value = serde_json::from_str(&stdout).unwrap();
    let actions: Vec<(&str, &str)> = plan["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    // `dropped` was never reconciled: no upstream object is recorded to delete.
    assert_eq!(
        actions,
        [("oncall", "create"), ("dropped", "orphan")],
        "{stdout}"
    );
    assert_eq!(serval.writes(), 0, "nothing written upstream");

    let user = format!("system:serviceaccount:{ns}:accessplane-plan");
    let agent = concat!("accessplane-plan/", env!("CARGO_PKG_VERSION"));
    let events = audited(env, &user, agent);
    let not_reads: Vec<String> = events
        .iter()
        .filter(|e| !matches!(e["verb"].as_str(), Some("get" | "list")))
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect();
    assert_eq!(
        not_reads,
        Vec::<String>::new(),
        "the plan only reads Kubernetes"
    );
}
