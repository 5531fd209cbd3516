//! The guide's runnable commands: every ```` ```console ```` block in `docs/src` and the
//! README is run by [trycmd] — each `$ ` line as a command, the lines after it as its
//! exact output (`[..]` matches the rest of a line, `...` whole lines), `? N` as its exit
//! code — against a demo installation on the fakes: the quick start's Namespace, Secret
//! and Connection from `examples/`, with the Connection's `baseUrl` pointing at a fake
//! Serval. Commands are the built `accessplane` binary; a block naming anything else
//! (`kubectl`, `helm`) fails, so such blocks are written ```` ```sh ```` instead.
//!
//! [trycmd]: https://docs.rs/trycmd

use std::path::Path;

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;

use crate::support::fake_kube::FakeKube;
use crate::support::fake_serval::FakeServal;
use crate::support::kube_server::KubeServer;

const CLIENT_ID: &str = "guide-client";
const CLIENT_SECRET: &str = "guide-client-secret";

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
            create(&kube, &fill_in(text)).await;
        }
        let server = KubeServer::start(kube.clone()).await;
        Self {
            _serval: serval,
            _kube: kube,
            server,
        }
    }
}

/// Creates one manifest through the fake apiserver, admission included.
async fn create(kube: &FakeKube, yaml: &str) {
    let object: DynamicObject = serde_yaml::from_str(yaml).unwrap();
    let types = object.types.clone().expect("apiVersion and kind");
    let (group, version) = match types.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", types.api_version.as_str()),
    };
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &types.kind);
    let plural = crate::support::fake_kube::guess_plural(&types.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
        Some(namespace) => Api::namespaced_with(kube.client(), namespace, &resource),
        None => Api::all_with(kube.client(), &resource),
    };
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", types.kind));
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
