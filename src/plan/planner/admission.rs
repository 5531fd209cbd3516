//! What the apiserver would refuse at admission, checked before planning: the CRD's CEL
//! rules, with the cluster's copy for the rules about changes.

use serde_json::Value;

/// The CRD's CEL rules (`x-kubernetes-validations`) of `kind`, compiled once per plan.
pub(super) fn compiled_rules(kind: &str) -> Option<kube::core::cel::CompiledSchema> {
    let (_, crd) = crate::kinds::all_crds()
        .into_iter()
        .find(|(_, crd)| crd.spec.names.kind == kind)?;
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()?
        .open_api_v3_schema
        .as_ref()?;
    let schema = serde_json::to_value(schema).expect("a schema serializes");
    Some(kube::core::cel::compile_schema(&schema))
}

/// The rules as admission would check them; with the cluster's copy, the rules about
/// changes too (an immutable field).
pub(super) fn validate_rules(
    rules: Option<&kube::core::cel::CompiledSchema>,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), String> {
    let Some(rules) = rules else {
        return Ok(());
    };
    static VALIDATOR: std::sync::OnceLock<kube::core::cel::Validator> = std::sync::OnceLock::new();
    VALIDATOR
        .get_or_init(kube::core::cel::Validator::new)
        .validate_compiled(rules, obj, old)
        .map_err(|errors| {
            let messages: Vec<String> = errors.into_vec().iter().map(ToString::to_string).collect();
            format!("the apiserver would refuse it: {}", messages.join("; "))
        })
}
