//! `accessplane plan`: preview what the reconciler would do upstream for a
//! set of manifests, with no write anywhere. The input ([`manifests`]) is planned against
//! the cluster as it would be after the apply ([`kube_view`]: read-only), through the
//! Connections it names ([`connections`]: verified like the operator does, read-only
//! upstream clients — see [`crate::upstream::UpstreamClient::read_only`]), by the
//! engine's own decision ([`crate::engine::plan`]) with the providers' reads, diff and
//! request planning ([`planner`]); [`report`] prints it (text, markdown, the stable JSON
//! document) and gives the exit code.

pub mod command;
pub mod connections;
pub mod kube_view;
pub mod manifests;
pub mod planner;
pub mod report;
