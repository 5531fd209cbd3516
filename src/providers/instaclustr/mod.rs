//! Instaclustr API v2: MCP Gateway persona access controls.

mod persona_access_control;

pub use persona_access_control::PersonaAccessControlProvider;
