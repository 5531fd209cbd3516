//! The whole operator under faults: upstream and Kubernetes API faults, crashes, input only
//! the upstream can judge, deletions that cannot complete, secrets that must not leak.

mod chaos;
mod kube_faults;
mod secret_leaks;
mod stuck_deletion;
mod upstream_rejections;
