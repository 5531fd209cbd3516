//! The ConductorOne conformance checker (`support::c1_openapi`) against the vendor's
//! OpenAPI document: it accepts what the operator sends and refuses each kind of
//! mistake it is there to catch. The fake ConductorOne runs it on every request of the
//! C1 integration tests (see `support::fake_c1`).

use serde_json::{Value, json};

use crate::support::c1_openapi::{self, C1Spec};
use crate::support::fake_c1::FakeC1;

const APP: &str = "/api/v1/apps/app1";
const ENTITLEMENT: &str = "/api/v1/apps/app1/entitlements/ent1";
const TOOLSET: &str = "/api/v1/apps/app1/connectors/con1/mcp_toolsets/ts1";

fn spec() -> Option<&'static C1Spec> {
    c1_openapi::spec()
}

/// The one problem the checker finds, which must mention `expected`.
fn refused(found: Vec<String>, expected: &str) {
    assert!(
        found.iter().any(|f| f.contains(expected)),
        "expected a finding naming {expected:?}, got {found:#?}"
    );
}

fn entitlement_update(entitlement: Value, mask: &str) -> Value {
    json!({"entitlement": entitlement, "updateMask": mask})
}

#[test]
fn the_document_declares_the_operations_the_operator_uses() {
    let Some(spec) = spec() else { return };
    assert!(spec.operation_count() > 400, "{}", spec.operation_count());
    for (method, path, id) in [
        (
            "GET",
            "/api/v1/apps/app1/entitlements",
            "c1.api.app.v1.AppEntitlements.List",
        ),
        (
            "POST",
            "/api/v1/apps/app1/entitlements",
            "c1.api.app.v1.AppEntitlements.Create",
        ),
        ("POST", ENTITLEMENT, "c1.api.app.v1.AppEntitlements.Update"),
        (
            "DELETE",
            ENTITLEMENT,
            "c1.api.app.v1.AppEntitlements.Delete",
        ),
        (
            "POST",
            "/api/v1/apps/app1/connectors",
            "c1.api.app.v1.ConnectorService.CreateDelegated",
        ),
        (
            "POST",
            "/api/v1/apps/app1/connectors/create",
            "c1.api.app.v1.ConnectorService.Create",
        ),
        (
            "POST",
            "/api/v1/apps/app1/connectors/con1",
            "c1.api.app.v1.ConnectorService.Update",
        ),
        (
            "POST",
            TOOLSET,
            "c1.api.ai_governance.v1.MCPAccessProfileService.Update",
        ),
        (
            "POST",
            "/api/v1/apps/app1/connectors/con1/mcp_toolsets/ts1/tool_bindings/delete",
            "c1.api.ai_governance.v1.MCPAccessProfileToolBindingService.DeleteBindings",
        ),
        (
            "POST",
            "/api/v1/search/entitlements",
            "c1.api.app.v1.AppEntitlementSearchService.Search",
        ),
    ] {
        assert_eq!(spec.operation_id(method, path), Some(id), "{method} {path}");
    }
}

#[test]
fn a_conforming_update_passes() {
    let Some(spec) = spec() else { return };
    let body = entitlement_update(
        json!({"displayName": "Admins", "durationGrant": "3600s", "provisionerPolicy": {"manual": {"instructions": "ask"}}}),
        "displayName,durationGrant,provisionerPolicy",
    );
    let found = spec.check_request("POST", ENTITLEMENT, None, Some(&body));
    assert_eq!(found, Vec::<String>::new());
    let found = spec.check_request(
        "GET",
        "/api/v1/apps/app1/entitlements",
        Some("page_size=100&page_token=x"),
        None,
    );
    assert_eq!(found, Vec::<String>::new());
    let found = spec.check_request("POST", "/auth/v1/token", None, None);
    assert_eq!(found, Vec::<String>::new());
}

#[test]
fn a_wrong_method_or_an_unknown_path_is_refused() {
    let Some(spec) = spec() else { return };
    // Entitlements are updated by POST, not PATCH or PUT.
    let body = entitlement_update(json!({"displayName": "x"}), "displayName");
    let found = spec.check_request("PATCH", ENTITLEMENT, None, Some(&body));
    refused(
        found,
        "no PATCH operation on this path (declared: DELETE, GET, POST)",
    );
    refused(
        spec.check_request("GET", "/api/v1/apps/app1/entitlementz", None, None),
        "no operation declares this path",
    );
    refused(
        spec.check_request("GET", "/auth/v1/token", None, None),
        "the token endpoint takes POST",
    );
}

#[test]
fn an_undeclared_field_or_query_parameter_is_refused() {
    let Some(spec) = spec() else { return };
    let body = entitlement_update(json!({"displayName": "x", "colour": "red"}), "displayName");
    let found = spec.check_request("POST", ENTITLEMENT, None, Some(&body));
    refused(found, "colour");
    // Also at the top level, and in a message nested in a oneof arm.
    let body = json!({"displayName": "x", "dryRun": true});
    refused(
        spec.check_request("POST", &format!("{APP}/entitlements"), None, Some(&body)),
        "dryRun",
    );
    let body = entitlement_update(
        json!({"provisionerPolicy": {"manual": {"instructions": "x", "urgent": true}}}),
        "provisionerPolicy",
    );
    refused(
        spec.check_request("POST", ENTITLEMENT, None, Some(&body)),
        "urgent",
    );
    let found = spec.check_request(
        "GET",
        &format!("{APP}/entitlements"),
        Some("pageSize=10"),
        None,
    );
    refused(found, "query parameter \"pageSize\" is not declared");
}

#[test]
fn a_snake_case_or_uneditable_mask_path_is_refused() {
    let Some(spec) = spec() else { return };
    let body = entitlement_update(json!({"displayName": "x"}), "display_name");
    refused(
        spec.check_request("POST", ENTITLEMENT, None, Some(&body)),
        "path \"display_name\" is not lowerCamelCase",
    );
    let body = entitlement_update(json!({"grantCount": "1"}), "grantCount");
    refused(
        spec.check_request("POST", ENTITLEMENT, None, Some(&body)),
        "path \"grantCount\" names a readOnly field",
    );
    let body = entitlement_update(json!({}), "nickname");
    refused(
        spec.check_request("POST", ENTITLEMENT, None, Some(&body)),
        "path \"nickname\" names no field of the updated entity",
    );
    // The toolset update lists its editable paths: display_name, description.
    let profile = json!({"id": "ts1", "appId": "app1", "connectorId": "con1", "toolCount": 3});
    let body = json!({"profile": profile, "updateMask": "toolCount"});
    refused(
        spec.check_request("POST", TOOLSET, None, Some(&body)),
        "path \"toolCount\" is not editable (the operation lists: display_name, description)",
    );
    let body = json!({"profile": {"id": "ts1", "appId": "app1", "connectorId": "con1", "displayName": "x"}, "updateMask": "displayName"});
    assert_eq!(
        spec.check_request("POST", TOOLSET, None, Some(&body)),
        Vec::<String>::new()
    );
}

#[test]
fn a_read_only_field_is_refused() {
    let Some(spec) = spec() else { return };
    // The id travels in the path; the body's entitlement.id is readOnly.
    let body = entitlement_update(json!({"id": "ent1", "displayName": "x"}), "displayName");
    refused(
        spec.check_request("POST", ENTITLEMENT, None, Some(&body)),
        "/entitlement/id: is readOnly and must not be sent",
    );
}

#[test]
fn two_arms_of_a_oneof_are_refused() {
    let Some(spec) = spec() else { return };
    let policy = json!({"manual": {"instructions": "x"}, "connector": {}});
    let body = entitlement_update(json!({"provisionerPolicy": policy}), "provisionerPolicy");
    refused(
        spec.check_request("POST", ENTITLEMENT, None, Some(&body)),
        "sets connector and manual of oneof typ",
    );
    // A null arm is unset.
    let policy = json!({"manual": {"instructions": "x"}, "connector": null});
    let body = entitlement_update(json!({"provisionerPolicy": policy}), "provisionerPolicy");
    assert_eq!(
        spec.check_request("POST", ENTITLEMENT, None, Some(&body)),
        Vec::<String>::new()
    );
}

#[test]
fn a_body_where_none_is_taken_or_none_where_one_is_is_refused() {
    let Some(spec) = spec() else { return };
    refused(
        spec.check_request("GET", ENTITLEMENT, None, Some(&json!({}))),
        "sends a body; the operation takes none",
    );
    refused(
        spec.check_request("DELETE", ENTITLEMENT, None, None),
        "sends no body",
    );
}

#[test]
fn responses_are_held_to_the_200_schema() {
    let Some(spec) = spec() else { return };
    let tool = json!({"id": "t1", "toolName": "search", "state": "MCP_TOOL_STATE_APPROVED",
        "classification": "TOOL_CLASSIFICATION_READ", "visibility": "TOOL_VISIBILITY_AVAILABLE"});
    let path = "/api/v1/apps/app1/connectors/con1/mcp_tools";
    let page = json!({"tools": [tool], "nextPageToken": ""});
    assert_eq!(
        spec.check_response("GET", path, &page),
        Vec::<String>::new()
    );
    // The enum values the fake once used for these fields are not the vendor's.
    let bad = json!({"tools": [{"id": "t1", "classification": "MCP_TOOL_CLASSIFICATION_READ"}]});
    refused(
        spec.check_response("GET", path, &bad),
        "/tools/0/classification",
    );
    // protojson writes int64 as a string and timestamps in RFC 3339.
    let entitlement = |grants: Value, at: &str| json!({"appEntitlementView": {"appEntitlement": {"id": "e", "grantCount": grants, "createdAt": at}}});
    let ok = entitlement(json!("3"), "2025-01-01T00:00:01Z");
    assert_eq!(
        spec.check_response("GET", ENTITLEMENT, &ok),
        Vec::<String>::new()
    );
    refused(
        spec.check_response(
            "GET",
            ENTITLEMENT,
            &entitlement(json!(3), "2025-01-01T00:00:01Z"),
        ),
        "grantCount",
    );
    refused(
        spec.check_response("GET", ENTITLEMENT, &entitlement(json!("3"), "yesterday")),
        "createdAt",
    );
}

/// The fake checks what the operator sends (its User-Agent) as it arrives, also when a
/// fault answers instead of the API, and not what its own tests send on purpose.
#[tokio::test]
async fn the_fake_checks_every_request_the_operator_sends() {
    if spec().is_none() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeC1::start().await;
    let token = fake.issue_bearer_token();
    let app = fake.seed_app();
    let url = format!("{}/api/v1/apps/{app}/entitlements", fake.base_url());
    let body = json!({"displayName": "x", "grantCount": "3"});
    let send = |user_agent: &'static str| {
        let client = reqwest::Client::builder().user_agent(user_agent).build();
        let request = client.unwrap().post(&url).bearer_auth(&token).json(&body);
        async move { request.send().await.unwrap().status() }
    };
    send("fake-self-test").await;
    assert_eq!(fake.nonconformities(), Vec::<String>::new());
    fake.fail_next("POST", "/api/v1/apps", 503, 1);
    assert_eq!(send(accessplane::USER_AGENT).await, 503);
    let found = fake.take_nonconformities();
    assert_eq!(found.len(), 1, "{found:#?}");
    refused(found, "grantCount");
}
