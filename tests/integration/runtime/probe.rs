//! `accessplane probe URL` (what the chart's `helm test` Pod runs), as a real process
//! against the operator's own health routes over HTTP.

use std::process::Command;
use std::sync::Arc;

use accessplane::runtime::server::{Readiness, router};
use tokio::net::TcpListener;

/// Runs the binary's probe; returns (exit success, stdout + stderr).
async fn run_probe(url: String) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_accessplane"))
            .args(["probe", &url, "--timeout", "2s"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn probe_passes_only_when_the_operator_is_ready() {
    let readiness = Readiness::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(Arc::new(Default::default()), readiness.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://{addr}/readyz");

    let (ok, text) = run_probe(url.clone()).await;
    assert!(!ok, "a not-ready operator passed the probe: {text}");
    assert!(text.contains("503") && text.contains(&url), "{text}");

    readiness.set_ready();
    let (ok, text) = run_probe(url.clone()).await;
    assert!(ok, "{text}");
    assert!(text.contains("ok"), "{text}");

    server.abort();
    let _ = server.await;
    let (ok, text) = run_probe(url.clone()).await;
    assert!(!ok, "nothing listens, yet the probe passed: {text}");
    assert!(text.contains(&url), "{text}");
}
