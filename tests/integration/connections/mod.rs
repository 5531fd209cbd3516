//! Connections and ClusterConnections (`src/connections`): credentials, verification,
//! which namespaces may use them.

mod cluster_connection;
mod connection;
