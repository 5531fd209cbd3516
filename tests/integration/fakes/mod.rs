//! Self-tests of the fakes in `tests/support`: the in-memory apiserver and the fake
//! upstreams, and the fake ConductorOne's conformance to the vendor's OpenAPI document.

mod c1;
mod c1_conformance;
mod instaclustr;
mod kube;
mod serval;
