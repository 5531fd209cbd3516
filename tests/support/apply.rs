//! Manifests created as `kubectl apply` creates them: through the fake apiserver's API,
//! admission (schema, CEL rules, strict decoding) included.
#![allow(dead_code)]

use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::ApiResource;

use super::fake_kube::{FakeKube, guess_plural};

/// Creates every document of `yaml` (empty documents skipped); panics on a refusal.
pub async fn create_all(kube: &FakeKube, yaml: &str) {
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let object: Option<DynamicObject> = serde::Deserialize::deserialize(document).unwrap();
        if let Some(object) = object {
            create(kube, object).await;
        }
    }
}

/// Creates one object; panics with the apiserver's answer on a refusal.
pub async fn create(kube: &FakeKube, object: DynamicObject) {
    let types = object.types.clone().expect("apiVersion and kind");
    let (group, version) = match types.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", types.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &types.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &guess_plural(&types.kind));
    let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
        Some(namespace) => Api::namespaced_with(kube.client(), namespace, &resource),
        None => Api::all_with(kube.client(), &resource),
    };
    let name = object.metadata.name.clone().unwrap_or_default();
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("{} {name}: {e}", types.kind));
}
