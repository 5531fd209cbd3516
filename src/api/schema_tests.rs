//! Admission behaviour of the generated CRDs, checked locally with kube's CEL evaluator
//! (the same `x-kubernetes-validations` the apiserver runs).

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};

/// The OpenAPI schema of a kind's CRD.
pub(super) fn schema_of(kind: &str) -> Value {
    let crd = match kind {
        "Connection" => super::Connection::crd(),
        "ClusterConnection" => super::ClusterConnection::crd(),
        "AccessProfile" => super::AccessProfile::crd(),
        "AppEntitlement" => super::AppEntitlement::crd(),
        "Connector" => super::Connector::crd(),
        "McpToolset" => super::McpToolset::crd(),
        "PersonaAccessControl" => super::PersonaAccessControl::crd(),
        other => panic!("unknown kind {other}"),
    };
    let schema = crd.spec.versions[0]
        .schema
        .clone()
        .unwrap()
        .open_api_v3_schema
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// Messages of the CEL rules the object (optionally an update of `old`) violates.
fn violations(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema_of(kind), obj, old) {
        Ok(()) => vec![],
        Err(errs) => errs.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

fn object(spec: Value) -> Value {
    json!({"apiVersion": "accessplane.io/v1alpha1", "metadata": {"name": "x", "namespace": "ns"}, "spec": spec})
}

/// The Helm chart ships its own copy of the CRDs (Helm installs a chart's `crds/`).
#[test]
fn chart_crds_match_crds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (top, chart) = (root.join("crds"), root.join("charts/accessplane/crds"));
    let files = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let fix = "run `cp crds/*.yaml charts/accessplane/crds/`";
    assert_eq!(files(&top), files(&chart), "file lists differ: {fix}");
    for file in files(&top) {
        assert!(
            std::fs::read(top.join(&file)).unwrap() == std::fs::read(chart.join(&file)).unwrap(),
            "charts/accessplane/crds/{file} differs from crds/{file}: {fix}"
        );
    }
}

#[test]
fn openapi_schemas_reject_bad_values_naming_the_field() {
    let validator = jsonschema::validator_for(&schema_of("PersonaAccessControl")).unwrap();
    let bad = object(
        json!({"connectionRef": {"name": "ic"}, "clusterId": "c", "type": "MAYBE",
                            "virtualServerId": "not-a-uuid", "personaRole": "it's"}),
    );
    let paths: Vec<String> = validator
        .iter_errors(&bad)
        .map(|e| e.instance_path().to_string())
        .collect();
    for field in ["/spec/type", "/spec/virtualServerId", "/spec/personaRole"] {
        assert!(
            paths.iter().any(|p| p == field),
            "{field} not reported: {paths:?}"
        );
    }
}

#[test]
fn access_profile_rules() {
    let base = json!({"connectionRef": {"name": "serval"}, "teamId": "t1", "name": "P"});
    assert!(violations("AccessProfile", &object(base.clone()), None).is_empty());

    let mut moved = base.clone();
    moved["teamId"] = json!("t2");
    let errs = violations("AccessProfile", &object(moved), Some(&object(base.clone())));
    assert!(
        errs.iter().any(|m| m.contains("spec.teamId is immutable")),
        "{errs:?}"
    );

    let nameless = json!({"connectionRef": {"name": "serval"}, "teamId": "t1"});
    let errs = violations("AccessProfile", &object(nameless), None);
    assert!(
        errs.iter().any(|m| m.contains("spec.name is required")),
        "{errs:?}"
    );

    let mut adopted = base.clone();
    adopted["externalId"] = json!("ap-1");
    let mut retargeted = adopted.clone();
    retargeted["externalId"] = json!("ap-2");
    let errs = violations(
        "AccessProfile",
        &object(retargeted),
        Some(&object(adopted.clone())),
    );
    assert!(
        errs.iter()
            .any(|m| m.contains("spec.externalId is immutable")),
        "{errs:?}"
    );
    // Adding an externalId later is allowed (pinning what the operator created).
    assert!(violations("AccessProfile", &object(adopted), Some(&object(base))).is_empty());
}

#[test]
fn connection_needs_exactly_one_upstream() {
    let secret = json!({"credentialsSecretRef": {"name": "s"}});
    let one = json!({"serval": secret});
    assert!(violations("Connection", &object(one), None).is_empty());
    for spec in [json!({}), json!({"serval": secret, "instaclustr": secret})] {
        let errs = violations("Connection", &object(spec), None);
        assert!(
            errs.iter()
                .any(|m| m.contains("exactly one of spec.conductorOne")),
            "{errs:?}"
        );
    }
}

#[test]
fn app_entitlement_oneofs() {
    let base = json!({"connectionRef": {"name": "c1"}, "appId": "a", "displayName": "D"});
    assert!(violations("AppEntitlement", &object(base.clone()), None).is_empty());

    let mut both = base.clone();
    both["durationGrant"] = json!("3600s");
    both["durationUnset"] = json!({});
    let errs = violations("AppEntitlement", &object(both), None);
    assert!(
        errs.iter()
            .any(|m| m.contains("at most one of spec.durationGrant")),
        "{errs:?}"
    );

    let mut two_arms = base.clone();
    two_arms["provisionerPolicy"] = json!({"manual": {}, "unconfigured": {}});
    let errs = violations("AppEntitlement", &object(two_arms), None);
    assert!(
        errs.iter()
            .any(|m| m.contains("exactly one of connector, manual")),
        "{errs:?}"
    );

    let mut reserved = base;
    reserved["annotations"] = json!({"c1/internal": "x"});
    let errs = violations("AppEntitlement", &object(reserved), None);
    assert!(
        errs.iter().any(|m| m.contains("must not start with c1/")),
        "{errs:?}"
    );
}

#[test]
fn mcp_toolset_connector_choice_and_tool_selectors() {
    let by_ref = json!({"connectionRef": {"name": "c1"}, "connectorRef": {"name": "gh"}, "displayName": "D",
                        "tools": [{"toolName": "search_issues"}, {"id": "t1"}]});
    assert!(violations("McpToolset", &object(by_ref.clone()), None).is_empty());

    let mut both = by_ref.clone();
    both["appId"] = json!("a");
    both["connectorId"] = json!("c");
    let errs = violations("McpToolset", &object(both), None);
    assert!(
        errs.iter().any(|m| m.contains("either spec.connectorRef")),
        "{errs:?}"
    );

    let mut bad_tool = by_ref;
    bad_tool["tools"] = json!([{"id": "t1", "toolName": "x"}]);
    let errs = violations("McpToolset", &object(bad_tool), None);
    assert!(
        errs.iter()
            .any(|m| m.contains("exactly one of id or toolName")),
        "{errs:?}"
    );
}

#[test]
fn persona_access_control_immutables() {
    let base = json!({"connectionRef": {"name": "ic"}, "clusterId": "c", "type": "ALLOWLIST",
                      "virtualServerId": "b2c3d4e5-f6a7-8901-bcde-f12345678901", "personaRole": "analyst"});
    assert!(violations("PersonaAccessControl", &object(base.clone()), None).is_empty());
    let mut renamed = base.clone();
    renamed["personaRole"] = json!("admin");
    let errs = violations(
        "PersonaAccessControl",
        &object(renamed),
        Some(&object(base)),
    );
    assert!(
        errs.iter()
            .any(|m| m.contains("spec.personaRole is immutable")),
        "{errs:?}"
    );
}

/// Every accessplane document under `examples/`: parses into its type and passes the CEL rules.
#[test]
fn examples_are_valid() {
    let mut checked = 0;
    for path in files_under("examples", |_| true) {
        let text = std::fs::read_to_string(&path).unwrap();
        checked += admit_all(&path.display().to_string(), &text);
    }
    assert!(checked >= 4, "examples found: {checked}");
}

/// Every accessplane resource the guide and the README show (a ```yaml block whose
/// documents name the group's apiVersion) is admitted as the examples are: what a reader
/// copies works.
#[test]
fn resources_in_the_guide_are_admitted() {
    let mut checked = 0;
    let mut pages = files_under("docs", |p| p.extension().is_some_and(|e| e == "md"));
    pages.push(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    for path in pages {
        let text = std::fs::read_to_string(&path).unwrap();
        for (line, block) in yaml_blocks(&text) {
            if block.contains("apiVersion: accessplane.io/") {
                checked += admit_all(&format!("{}:{line}", path.display()), &block);
            }
        }
    }
    assert!(checked >= 8, "resources found in the guide: {checked}");
}

/// The files below `dir` (relative to the crate) that `keep` accepts.
fn files_under(dir: &str, keep: impl Fn(&std::path::Path) -> bool) -> Vec<std::path::PathBuf> {
    let mut files = vec![];
    let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if keep(&path) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The ```yaml fenced blocks of a Markdown text, with the line each starts on. A fence
/// indented in a list item has its content indented as much: that indentation is not
/// the YAML's.
fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = vec![];
    let mut open: Option<(usize, usize, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        let indent = line.len() - fence.len();
        match &mut open {
            None if fence.starts_with("```yaml") => open = Some((n + 1, indent, String::new())),
            Some(_) if fence.starts_with("```") => {
                blocks.extend(open.take().map(|(start, _, block)| (start, block)));
            }
            Some((_, indent, block)) => {
                block.push_str(line.get(*indent..).unwrap_or_default());
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// Admits every accessplane document of `text` (from `source`) as the apiserver would:
/// it decodes into its type, passes the CRD's OpenAPI schema and its CEL rules. Returns
/// how many it checked.
fn admit_all(source: &str, text: &str) -> usize {
    use serde::Deserialize;
    let mut checked = 0;
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{source}: {e}"));
        if value["apiVersion"] != "accessplane.io/v1alpha1" {
            continue;
        }
        let kind = value["kind"].as_str().unwrap();
        let typed = match kind {
            "Connection" => serde_json::from_value::<super::Connection>(value.clone()).map(|_| ()),
            "ClusterConnection" => {
                serde_json::from_value::<super::ClusterConnection>(value.clone()).map(|_| ())
            }
            "AccessProfile" => {
                serde_json::from_value::<super::AccessProfile>(value.clone()).map(|_| ())
            }
            "AppEntitlement" => {
                serde_json::from_value::<super::AppEntitlement>(value.clone()).map(|_| ())
            }
            "Connector" => serde_json::from_value::<super::Connector>(value.clone()).map(|_| ()),
            "McpToolset" => serde_json::from_value::<super::McpToolset>(value.clone()).map(|_| ()),
            "PersonaAccessControl" => {
                serde_json::from_value::<super::PersonaAccessControl>(value.clone()).map(|_| ())
            }
            other => panic!("{source}: unknown kind {other}"),
        };
        typed.unwrap_or_else(|e| panic!("{source}: {e}"));
        // Structural validation (types, enums, patterns, required, bounds) against the
        // CRD's OpenAPI schema, as the apiserver does before the CEL rules.
        let validator = jsonschema::validator_for(&schema_of(kind)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{source}: {errors:?}");
        let errs = violations(kind, &value, None);
        assert!(errs.is_empty(), "{source}: {errs:?}");
        checked += 1;
    }
    checked
}
