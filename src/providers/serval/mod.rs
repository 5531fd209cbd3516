//! Serval public API v2: access profiles.

mod access_profile;

pub use access_profile::AccessProfileProvider;
