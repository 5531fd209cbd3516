//! Each kind end to end (`src/api/<kind>.rs`, `src/providers/<saas>/<kind>.rs`): the real
//! engine and provider client against its fake upstream.

mod access_profile;
mod app_entitlement;
mod connector;
mod mcp_toolset;
mod persona_access_control;
