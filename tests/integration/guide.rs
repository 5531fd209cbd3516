//! The guide's runnable commands: every ```` ```console ```` block in `docs/src` and the
//! README is run by [trycmd] — each `$ ` line as a command, the lines after it as its
//! exact output (`[..]` matches the rest of a line, `...` whole lines), `? N` as its exit
//! code — against a demo installation on the fakes: the quick start's Namespace, Secret
//! and Connection from `examples/`, with the Connection's `baseUrl` pointing at a fake
//! Serval whose team holds two profiles made by hand (one the team's default). Commands are the built `accessplane` binary; a block naming anything else
//! (`kubectl`, `helm`) fails, so such blocks are written ```` ```sh ```` instead.
//!
//! [trycmd]: https://docs.rs/trycmd

use std::path::Path;

use crate::support::apply::create_all;
use crate::support::fake_kube::FakeKube;
use crate::support::fake_serval::FakeServal;
use crate::support::kube_server::KubeServer;

const CLIENT_ID: &str = "guide-client";
const CLIENT_SECRET: &str = "guide-client-secret";
/// The Serval team of the examples.
const TEAM: &str = "5b0c2e8e-0000-4000-8000-000000000001";

/// A cluster after the quick start's `kubectl apply` of the Namespace, the Secret (filled
/// in) and the Connection, and the Serval tenant they point at; live while it is held.
struct Demo {
    _serval: FakeServal,
    _kube: FakeKube,
    server: KubeServer,
}

impl Demo {
    async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let serval = FakeServal::start().await;
        serval.add_client(CLIENT_ID, CLIENT_SECRET);
        let kube = FakeKube::new();
        let fill_in = |text: String| {
            text.replace("REPLACE_WITH_CLIENT_ID", CLIENT_ID)
                .replace("REPLACE_WITH_CLIENT_SECRET", CLIENT_SECRET)
                .replace("https://public.api.serval.com", &serval.base_url())
        };
        for file in [
            "examples/namespace.yaml",
            "examples/serval/secret.yaml",
            "examples/serval/connection.yaml",
        ] {
            let text = std::fs::read_to_string(file).expect(file);
            create_all(&kube, &fill_in(text)).await;
        }
        // Made in Serval's UI before accessplane: what the import page imports.
        serval.seed_profile(
            serde_json::json!({"teamId": TEAM, "name": "Support read-only",
            "description": "Read-only access for support engineers",
            "grants": {"workflows": [{"workflowId": "wf-manager-approval"}]}}),
        );
        serval.seed_profile(
            serde_json::json!({"teamId": TEAM, "name": "Everyone", "isTeamDefault": true}),
        );
        let server = KubeServer::start(kube.clone()).await;
        Self {
            _serval: serval,
            _kube: kube,
            server,
        }
    }
}

#[test]
fn console_blocks_of_the_guide_run_as_shown() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let demo = runtime.block_on(Demo::start());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, demo.server.kubeconfig("default")).unwrap();

    let cases = trycmd::TestCases::new();
    cases
        .register_bin("accessplane", Path::new(env!("CARGO_BIN_EXE_accessplane")))
        .env("KUBECONFIG", kubeconfig.display().to_string())
        .env("NO_COLOR", "1")
        .case("README.md")
        .case("docs/src/**/*.md");
    cases.run();
    drop(demo);
}
