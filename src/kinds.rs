//! The one list of managed kinds, each with its provider. The CRDs (`accessplane crds`),
//! the controllers, `accessplane plan` and a Connection's users all come from it:
//! adding a kind means `api/<kind>.rs`, `providers/<saas>/<kind>.rs` and one line in
//! [`each_kind`].

use kube::CustomResourceExt;

use crate::api::{AccessProfile, AppEntitlement, Connector, McpToolset, PersonaAccessControl};
use crate::engine::{ManagedObject, Provider};
use crate::providers::conductorone::{
    AppEntitlementProvider, ConnectorProvider, McpToolsetProvider,
};
use crate::providers::instaclustr::PersonaAccessControlProvider;
use crate::providers::serval::AccessProfileProvider;

/// What is done with every managed kind (see [`each_kind`]).
pub trait EachKind {
    fn kind<K, P>(&mut self)
    where
        K: ManagedObject + CustomResourceExt,
        P: Provider<K> + Default;
}

/// Calls `visit` once per managed kind, in dependency order: a kind comes after the kinds
/// its resources may refer to (a toolset names a Connector), which is the order a plan
/// shows creates in.
pub fn each_kind(visit: &mut impl EachKind) {
    visit.kind::<Connector, ConnectorProvider>();
    visit.kind::<AppEntitlement, AppEntitlementProvider>();
    visit.kind::<McpToolset, McpToolsetProvider>();
    visit.kind::<AccessProfile, AccessProfileProvider>();
    visit.kind::<PersonaAccessControl, PersonaAccessControlProvider>();
}

/// The managed kinds' names (`kind` of their manifests), in [`each_kind`]'s order.
pub fn names() -> Vec<String> {
    struct Names(Vec<String>);
    impl EachKind for Names {
        fn kind<K, P>(&mut self)
        where
            K: ManagedObject + CustomResourceExt,
            P: Provider<K> + Default,
        {
            self.0.push(K::crd().spec.names.kind);
        }
    }
    let mut names = Names(vec![]);
    each_kind(&mut names);
    names.0
}

#[cfg(test)]
mod tests {
    /// Each managed kind once, and every CRD of the group is a managed kind or a
    /// Connection kind.
    #[test]
    fn every_crd_is_a_listed_kind_or_a_connection() {
        let names = super::names();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for (_, crd) in crate::api::all_crds() {
            let kind = crd.spec.names.kind;
            assert!(
                names.contains(&kind) || kind == "Connection" || kind == "ClusterConnection",
                "{kind} is not in kinds::each_kind"
            );
        }
    }
}
