//! ConductorOne: app entitlements, connectors and MCP toolsets.

pub mod api;
mod app_entitlement;
mod connector;
mod import;
mod mcp_toolset;

pub use app_entitlement::AppEntitlementProvider;
pub use connector::ConnectorProvider;
pub use mcp_toolset::McpToolsetProvider;
