//! Single integration-test binary (one binary keeps link times and CI fast).
#[path = "../support/mod.rs"]
mod support;

mod argocd_application;
mod argocd_health;
mod c1_app_entitlement;
mod c1_conformance;
mod c1_connector;
mod c1_mcp_toolset;
mod chaos;
mod cluster_connection;
mod connections;
mod engine_async;
mod fake_c1_tests;
mod fake_instaclustr_tests;
mod fake_kube_tests;
mod fake_serval_tests;
mod harness;
mod instaclustr_persona;
mod kube_faults;
mod leader_election;
mod leader_fence;
mod plan;
mod plan_connections;
mod plan_equals_operator;
mod probe;
mod runtime_tests;
mod scale;
mod secret_leaks;
mod serval_access_profile;
mod stuck_deletion;
mod upstream_rejections;
mod user_agent;
