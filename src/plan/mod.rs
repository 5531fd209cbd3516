//! `accessplane plan` (issue #18): preview what the reconciler would do upstream for a
//! set of manifests, with no write anywhere. Built so far: reading the input
//! ([`manifests`]), the Connections a plan reads through ([`connections`]: from the
//! input or the cluster, verified like the operator does, read-only clients — see
//! [`crate::upstream::UpstreamClient::read_only`]), and the providers' request planning
//! ([`crate::engine::Provider::create_calls`]), and the report ([`report`]: text,
//! markdown, the stable JSON document, exit codes). The engine's plan of one resource is
//! [`crate::engine::plan`]. Not built yet: joining them (manifest → cluster copy →
//! inputs → plan → report entry), `--prune`, the List-coalesced reads and the CLI.

pub mod connections;
pub mod manifests;
pub mod report;
