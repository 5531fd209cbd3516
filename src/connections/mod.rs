//! Connections: the registry of verified upstream clients and the controller that fills it.

pub mod controller;
mod registry;

pub use controller::{Recheck, Users};
pub use registry::{AccessChange, Connections, NamespaceStore, Unusable};
