//! The real-apiserver tier (envtest style, `support/envtest.rs`): a test binary of its
//! own, so that cargo runs it after the fast tier (`tests/integration`) instead of
//! beside it: a real kube-apiserver, etcd and operator processes would otherwise starve
//! the timing-sensitive fast-tier tests on a 2-core machine. Without `KUBEBUILDER_ASSETS`
//! every real-apiserver test skips with one line; the `e2e*` scripts also run against
//! the in-memory apiserver.
#[path = "../support/mod.rs"]
mod support;

mod admission;
mod e2e;
mod e2e_connector;
mod e2e_mcp_toolset;
mod economy;
mod helm;
mod leader;
mod plan;
mod rbac;
