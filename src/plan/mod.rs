//! `accessplane plan` (issue #18): preview what the reconciler would do upstream for a
//! set of manifests, with no write anywhere. Built so far: reading the input
//! ([`manifests`]), the Connections a plan reads through ([`connections`]: from the
//! input or the cluster, verified like the operator does, read-only clients — see
//! [`crate::upstream::UpstreamClient::read_only`]), and the providers' request planning
//! ([`crate::engine::Provider::create_calls`]).

pub mod connections;
pub mod manifests;
