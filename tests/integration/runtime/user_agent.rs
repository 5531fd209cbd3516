//! The operator identifies itself to the Kubernetes API (issue #14): the real
//! `accessplane run` binary, pointed by a kubeconfig at the fake apiserver over HTTP, sends
//! `User-Agent: accessplane/<version>` on every request: CRD install, leader election,
//! lists and watches, Secret reads, status writes, Events and the Lease release at shutdown.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::env::serval_world;
use crate::support::fake_kube::FakeKube;
use crate::support::harness::ready_reason;
use crate::support::kube_server::KubeServer;

const EXPECTED: &str = concat!("accessplane/", env!("CARGO_PKG_VERSION"));

/// The operator's custom resources, each watched by a controller.
const KINDS: [&str; 6] = [
    "connections",
    "accessprofiles",
    "appentitlements",
    "connectors",
    "mcptoolsets",
    "personaaccesscontrols",
];

/// The operator process; killed if the test fails before it stopped.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Operator {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (graceful shutdown, which releases the Lease), then waits for the exit.
    async fn stop(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        // Beyond the operator's own 25 s shutdown grace.
        for _ in 0..800 {
            if let Some(status) = self.child.try_wait().expect("wait for the operator") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the operator did not stop on SIGTERM:\n{}", self.log());
    }
}

fn has_request(kube: &FakeKube, method: &str, path_contains: &str) -> bool {
    kube.requests()
        .iter()
        .any(|r| r.method == method && r.path.contains(path_contains))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_sends_its_user_agent_on_every_kubernetes_request() {
    let (kube, _serval) = serval_world().await;
    let server = KubeServer::start(kube.clone()).await;
    let dir = std::env::temp_dir().join(format!("accessplane-user-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig("team-a")).expect("kubeconfig");
    let log = dir.join("operator.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .unwrap()
        .port();

    let out = std::fs::File::create(&log).expect("operator log");
    let child = Command::new(env!("CARGO_BIN_EXE_accessplane"))
        .args([
            "run",
            "--namespace=team-a",
            "--install-crds",
            "--leader-election",
        ])
        .args(["--leader-election-namespace=team-a", "--log-level=warn"])
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        // Only the kubeconfig: no in-cluster service variables, no ACCESSPLANE_* or RUST_LOG.
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn the operator");
    let mut operator = Operator { child, log };

    // Up to the Connection's verified status (CRDs applied, Lease taken, the Secret read,
    // the status written) and every kind's cache listed (its watch started), so that
    // SIGTERM takes the graceful path.
    let started = |kube: &FakeKube| {
        let connection = kube.get("accessplane.io/v1alpha1", "connections", "team-a", "serval");
        ready_reason(connection).as_deref() == Some("True/Verified")
            && KINDS.iter().all(|plural| {
                kube.requests().iter().any(|r| {
                    r.path.ends_with(&format!("/{plural}"))
                        && r.query_param("watch").as_deref() == Some("true")
                })
            })
    };
    let mut verified = false;
    for _ in 0..400 {
        if started(&kube) {
            verified = true;
            break;
        }
        assert!(
            matches!(operator.child.try_wait(), Ok(None)),
            "the operator exited:\n{}",
            operator.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        verified,
        "the operator never got going:\n{}",
        operator.log()
    );
    let status = operator.stop().await;
    assert!(status.success(), "exit {status}:\n{}", operator.log());

    for (method, path) in [
        ("PATCH", "/customresourcedefinitions/"),
        ("POST", "/leases"),
        ("GET", "/secrets/serval-creds"),
        ("PATCH", "/connections/serval/status"),
        ("POST", "/events"),
        ("PUT", "/leases/accessplane-leader"),
    ] {
        assert!(
            has_request(&kube, method, path),
            "no {method} {path} in the request log"
        );
    }
    let requests = kube.requests();
    let wrong: Vec<String> = requests
        .iter()
        .filter(|r| r.user_agent.as_deref() != Some(EXPECTED))
        .map(|r| format!("{} {}?{}: {:?}", r.method, r.path, r.query, r.user_agent))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} requests without User-Agent {EXPECTED}:\n{}",
        wrong.len(),
        requests.len(),
        wrong.join("\n")
    );
    // Admitted against the CRDs it installed: nothing it sent was pruned (no field its
    // CRDs do not declare, which the apiserver would drop with a warning).
    let warned: Vec<String> = requests
        .iter()
        .filter(|r| !r.warnings.is_empty())
        .map(|r| format!("{} {}: {:?}", r.method, r.path, r.warnings))
        .collect();
    assert!(warned.is_empty(), "warned requests:\n{}", warned.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
