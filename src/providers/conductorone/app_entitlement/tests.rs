use super::*;
use kube::CustomResourceExt;

#[test]
fn every_spec_field_is_a_known_entity_field() {
    let spec = crate::api::AppEntitlement::crd().spec.versions[0]
        .schema
        .clone()
        .unwrap()
        .open_api_v3_schema
        .unwrap();
    let props = spec.properties.unwrap()["spec"].properties.clone().unwrap();
    for name in props.keys() {
        assert!(
            FIELDS.contains(&name.as_str()) || NOT_UPDATABLE.contains(&name.as_str()),
            "{name} has no mask name"
        );
    }
}

#[test]
fn comparison_treats_unset_as_zero_and_sets_as_sets() {
    assert!(matches("description", &json!(""), &Value::Null));
    assert!(matches(
        "emergencyGrantEnabled",
        &json!(false),
        &Value::Null
    ));
    assert!(matches(
        "durationGrant",
        &json!("3600s"),
        &json!("3600.000s")
    ));
    assert!(!matches("durationUnset", &json!({}), &Value::Null));
    assert!(matches(
        "complianceFrameworkValueIds",
        &json!(["b", "a"]),
        &json!(["a", "b"])
    ));
    let policy = json!({"manual": {"instructions": "x"}});
    assert!(matches(
        "provisionerPolicy",
        &policy,
        &json!({"manual": {"instructions": "x", "userIds": []}, "connector": null})
    ));
    assert!(!matches(
        "provisionerPolicy",
        &policy,
        &json!({"connector": {"defaultBehavior": {"connectorId": "c"}}, "manual": null})
    ));
}
