//! The operator's runtime (`src/runtime`): `run` wiring, leader election and its write
//! fence, the probe, the User-Agent.

mod leader_election;
mod leader_fence;
mod metrics;
mod probe;
mod run;
mod user_agent;
