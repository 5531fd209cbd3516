//! accessplane: manage SaaS access-control objects as Kubernetes custom resources.

pub mod api;
pub mod connections;
pub mod engine;
pub mod providers;
pub mod runtime;
pub mod upstream;
