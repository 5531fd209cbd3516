//! The base layer: what both the engine (managed resources) and the Connection
//! controller need — the clock, conditions, Events, the writes to a Kubernetes object
//! and their error. It depends on nothing above it (engine, connections, runtime, plan),
//! so the layers above can share it without importing each other.

pub mod clock;
pub mod conditions;
pub mod error;
pub mod events;
pub mod jitter;
pub mod kube_ops;

pub use error::KubeError;
