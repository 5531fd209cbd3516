//! Test support: fake Kubernetes API and fake upstream servers, and the harness the
//! integration tests drive them with.

pub mod apply;
pub mod c1_openapi;
pub mod env;
pub mod envtest;
pub mod fake_admission;
pub mod fake_c1;
pub mod fake_http;
pub mod fake_instaclustr;
pub mod fake_kube;
pub mod fake_serval;
pub mod fake_things;
pub mod harness;
pub mod kube_server;
pub mod things_provider;
