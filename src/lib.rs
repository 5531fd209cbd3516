//! accessplane: manage SaaS access-control objects as Kubernetes custom resources.

pub mod api;
pub mod base;
pub mod connections;
pub mod engine;
pub mod fence;
pub mod import;
pub mod kinds;
pub mod plan;
pub mod providers;
pub mod reference;
pub mod runtime;
pub mod saas;
pub mod upstream;

/// `User-Agent` of every request the operator sends, to Kubernetes and to the upstream APIs.
pub const USER_AGENT: &str = concat!("accessplane/", env!("CARGO_PKG_VERSION"));
