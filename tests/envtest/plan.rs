//! Real-apiserver tier: `accessplane plan` as users run it before a sync — the binary,
//! with only the read-only identity of `deploy/argocd/plan-presync/rbac.yaml` in its
//! kubeconfig, against the fake Serval. The plan works (no request refused, `--prune`
//! included), says what would change, and the audit log shows that it only read:
//! every request a get or list, none of them refused, all with the plan's User-Agent.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::admission::{install_crds, namespace};
use crate::support::envtest::envtest;
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_accessplane"))
            .args(["plan", "-f", "-", "-o", "json", "--prune", "-l"])
            .arg("app.kubernetes.io/instance=access")
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
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
    let events: Vec<Value> = env
        .audit_events()
        .into_iter()
        .filter(|e| e["user"]["username"] == user)
        .collect();
    assert!(!events.is_empty(), "the plan's requests are audited");
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
    let refused: Vec<String> = events
        .iter()
        .filter(|e| {
            e["responseStatus"]["code"]
                .as_u64()
                .is_some_and(|c| c == 401 || c == 403)
        })
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect();
    assert_eq!(refused, Vec::<String>::new(), "the PreSync Role is enough");
    let agent = concat!("accessplane-plan/", env!("CARGO_PKG_VERSION"));
    assert!(events.iter().all(|e| e["userAgent"] == agent), "{events:?}");
}
