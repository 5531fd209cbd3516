//! Connections: the registry of verified upstream clients, the controller that fills it,
//! and how a Connection and its Secret become a client (shared with `accessplane plan`).

pub mod controller;
mod registry;
pub mod resolution;

pub use controller::{Recheck, Users};
pub use registry::{AccessChange, Connections, NamespaceStore, Unusable};
pub use resolution::{Credentials, SecretsScope, reason};
