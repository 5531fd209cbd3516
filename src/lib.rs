//! accessplane: manage SaaS access-control objects as Kubernetes custom resources.

pub mod api;
