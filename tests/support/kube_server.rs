//! Serves a [`FakeKube`] over real HTTP on 127.0.0.1, so a separate process (the
//! operator binary, via a kubeconfig) can use it. Every request goes through the fake's
//! `tower::Service`, so behaviour and the request log are the same as in-process; watch
//! responses stream (one JSON line per event) until the watch times out or is dropped.
#![allow(dead_code)]

use std::net::SocketAddr;

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    response::Response,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tower::ServiceExt;

use super::fake_kube::FakeKube;

/// A running HTTP front of a `FakeKube`; the server task is aborted on drop.
pub struct KubeServer {
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl KubeServer {
    /// Binds 127.0.0.1:0 and serves `kube` on the current tokio runtime.
    pub async fn start(kube: FakeKube) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new().fallback(handle).with_state(kube);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake apiserver");
        });
        Self { addr, server }
    }

    /// e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig whose current context points at this server (plain HTTP, no
    /// credentials; kube-client's connector accepts `http://` URLs).
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: fake\n  user: {{}}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             current-context: fake\n",
            url = self.url()
        )
    }
}

async fn handle(State(kube): State<FakeKube>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let req = http::Request::from_parts(parts, kube::client::Body::from(bytes));
    let Ok(response) = kube.oneshot(req).await;
    response.map(Body::new)
}
