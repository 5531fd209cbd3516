//! The one list of managed kinds, each with its provider. The CRDs (`accessplane crds`),
//! the controllers, `accessplane plan` and a Connection's users all come from it:
//! adding a kind means `api/<kind>.rs`, `providers/<saas>/<kind>.rs` and one line in
//! [`each_kind`].

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::{CustomResourceExt, ResourceExt};

use crate::api::envelope::ConnectionKind;
use crate::api::{
    AccessProfile, AppEntitlement, ClusterConnection, Connection, Connector, McpToolset,
    PersonaAccessControl,
};
use crate::base::KubeError;
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
    managed_crds()
        .into_iter()
        .map(|crd| crd.spec.names.kind)
        .collect()
}

/// Every CRD of the group with the file name it is committed under in `crds/`
/// (`<kind in lower case>.yaml`): the Connection kinds, then the managed kinds of
/// [`each_kind`].
pub fn all_crds() -> Vec<(String, CustomResourceDefinition)> {
    let mut crds = vec![Connection::crd(), ClusterConnection::crd()];
    crds.extend(managed_crds());
    crds.into_iter()
        .map(|crd| (format!("{}.yaml", crd.spec.names.kind.to_lowercase()), crd))
        .collect()
}

/// The managed kinds' CRDs, in [`each_kind`]'s order.
fn managed_crds() -> Vec<CustomResourceDefinition> {
    struct Crds(Vec<CustomResourceDefinition>);
    impl EachKind for Crds {
        fn kind<K, P>(&mut self)
        where
            K: ManagedObject + CustomResourceExt,
            P: Provider<K> + Default,
        {
            self.0.push(K::crd());
        }
    }
    let mut crds = Crds(vec![]);
    each_kind(&mut crds);
    crds.0
}

/// The managed resources whose `connectionRef` names a Connection (`kind`, in `home`) or
/// a ClusterConnection (`home` "", any namespace's): the Connection controller's
/// [`crate::connections::Users`], which keeps a Connection while they exist.
pub fn connection_users<'a>(
    kube: &'a kube::Client,
    kind: ConnectionKind,
    home: &'a str,
    name: &'a str,
) -> BoxFuture<'a, Result<Vec<String>, KubeError>> {
    async move {
        let mut users = vec![];
        for users_of_kind in listers() {
            users.extend(users_of_kind(kube, kind, home, name).await?);
        }
        Ok(users)
    }
    .boxed()
}

/// [`users_of_kind`] for every managed kind.
fn listers() -> Vec<crate::connections::Users> {
    struct Listers(Vec<crate::connections::Users>);
    impl EachKind for Listers {
        fn kind<K, P>(&mut self)
        where
            K: ManagedObject + CustomResourceExt,
            P: Provider<K> + Default,
        {
            self.0
                .push(|kube, kind, home, name| users_of_kind::<K>(kube, kind, home, name).boxed());
        }
    }
    let mut listers = Listers(vec![]);
    each_kind(&mut listers);
    listers.0
}

async fn users_of_kind<K: ManagedObject>(
    kube: &kube::Client,
    kind: ConnectionKind,
    home: &str,
    name: &str,
) -> Result<Vec<String>, KubeError> {
    let api: Api<K> = match kind {
        ConnectionKind::Connection => Api::namespaced(kube.clone(), home),
        ConnectionKind::ClusterConnection => Api::all(kube.clone()),
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(KubeError::at("listing users of a Connection"))?;
    Ok(list
        .items
        .iter()
        .filter(|o| {
            let reference = &o.managed().connection_ref;
            reference.kind() == kind && *reference.name == *name
        })
        .map(|o| match kind {
            ConnectionKind::Connection => format!("{}/{}", K::kind(&()), o.name_any()),
            ConnectionKind::ClusterConnection => format!(
                "{} {}/{}",
                K::kind(&()),
                o.namespace().unwrap_or_default(),
                o.name_any()
            ),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use kube::core::cel::compile_schema;

    use super::all_crds;

    /// Each managed kind once, and every CRD of the group is a managed kind or a
    /// Connection kind.
    #[test]
    fn every_crd_is_a_listed_kind_or_a_connection() {
        let names = super::names();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for (_, crd) in all_crds() {
            let kind = crd.spec.names.kind;
            assert!(
                names.contains(&kind) || kind == "Connection" || kind == "ClusterConnection",
                "{kind} is not in kinds::each_kind"
            );
        }
    }

    #[test]
    fn every_rule_compiles() {
        for (file, crd) in all_crds() {
            let schema =
                serde_json::to_value(crd.spec.versions[0].schema.clone().unwrap()).unwrap();
            let compiled = compile_schema(&schema["openAPIV3Schema"]);
            assert!(
                !compiled.has_errors(),
                "{file}: {:?}",
                compiled.compilation_errors()
            );
        }
    }

    #[test]
    fn crds_in_repo_are_up_to_date() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        for (file, crd) in all_crds() {
            let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
            assert_eq!(
                committed,
                crate::api::crd_yaml(&crd),
                "crds/{file} is stale: run `cargo run -- crds --dir crds`"
            );
        }
    }

    #[test]
    fn spec_has_no_schema_defaults() {
        for (file, crd) in all_crds() {
            let text = serde_json::to_string(&crd).unwrap();
            assert!(
                !text.contains("\"default\""),
                "{file} declares a schema default"
            );
        }
    }
}
