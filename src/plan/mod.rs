//! `accessplane plan` (issue #18): preview what the reconciler would do upstream for a
//! set of manifests, with no write anywhere. Built so far: reading the input
//! ([`manifests`]) and the read-only upstream client the plan runs through
//! ([`crate::upstream::UpstreamClient::read_only`]).

pub mod manifests;
