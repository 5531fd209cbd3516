//! Single integration-test binary (one binary keeps link times and CI fast), in folders
//! that mirror what they test; the fakes and the harness they share are in `tests/support`.
#[path = "../support/mod.rs"]
mod support;

mod connections;
mod deploy;
mod engine;
mod fakes;
mod guide;
mod import;
mod kinds;
mod plan;
mod robustness;
mod runtime;
