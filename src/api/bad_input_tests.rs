//! The bad-input corpus (`tests/bad_input/<kind>/<case>.yaml`): every case is a manifest
//! the apiserver must refuse at admission, with the offending field named.
//!
//! A case file has `object` (the manifest), optional `old` (the stored object, for update
//! rules), `expect` and `by`, which says which admission stage refuses it:
//! - `openapi`: structural validation against the CRD's OpenAPI schema (types, enums,
//!   patterns, required, bounds). Every error must contain `expect` (the instance path, or
//!   for a missing field `"<field>" is a required property`): one defect per case.
//! - `cel`: an `x-kubernetes-validations` rule. The object is schema-valid and the rules
//!   report exactly one violation whose message is exactly `expect`.
//! - `unknown-field`: a field the schema does not declare (e.g. `namespace` on a reference).
//!   The schemas are structural and do not preserve unknown fields there, so the apiserver
//!   either refuses it (`fieldValidation=Strict`, kubectl's default: `strict decoding
//!   error: unknown field "spec.connectionRef.namespace"`) or prunes it (clients that send
//!   no `fieldValidation`, which then get a warning). Either way the reference stays
//!   same-namespace: after pruning the object is valid and the field is gone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::schema_tests::schema_of;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum By {
    Openapi,
    Cel,
    UnknownField,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// What the case is about (documentation only).
    #[allow(dead_code)]
    note: String,
    by: By,
    expect: String,
    #[serde(default)]
    old: Option<Value>,
    object: Value,
}

const KINDS: [&str; 7] = [
    "Connection",
    "ClusterConnection",
    "AccessProfile",
    "AppEntitlement",
    "Connector",
    "McpToolset",
    "PersonaAccessControl",
];

/// OpenAPI (structural) errors as `<instance path>: <message>`.
fn openapi_errors(kind: &str, obj: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema_of(kind)).unwrap();
    validator
        .iter_errors(obj)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// CEL rule violations as `(field path, message)`; evaluation errors fail the test.
fn cel_errors(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    use kube::core::cel::{ErrorKind, Validator};
    match Validator::new().validate(&schema_of(kind), obj, old) {
        Ok(()) => vec![],
        Err(errs) => errs
            .into_vec()
            .into_iter()
            .map(|e| {
                assert!(
                    matches!(e.kind, ErrorKind::ValidationFailure),
                    "rule `{}` did not evaluate: {}",
                    e.rule,
                    e.message
                );
                (e.field_path, e.message)
            })
            .collect(),
    }
}

/// Fields the schema does not declare, as the apiserver's strict field validation names
/// them (`unknown field "spec.a.b"`); with `prune` they are removed, as the apiserver does.
fn unknown_fields(value: &mut Value, schema: &Value, path: &str, prune: bool) -> Vec<String> {
    let mut found = vec![];
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return found;
    }
    match value {
        Value::Object(map) => {
            if !schema["additionalProperties"].is_object() {
                // An object without `properties` (e.g. `durationUnset: {}`) declares none.
                let empty = serde_json::Map::new();
                let props = schema["properties"].as_object().unwrap_or(&empty);
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    // The apiserver validates these itself; they are not in the CRD schema.
                    if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&&*key) {
                        continue;
                    }
                    let field = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match props.get(&key) {
                        Some(sub) => {
                            found.extend(unknown_fields(&mut map[&key], sub, &field, prune))
                        }
                        None => {
                            found.push(format!("unknown field \"{field}\""));
                            if prune {
                                map.remove(&key);
                            }
                        }
                    }
                }
            } else {
                for (key, sub) in map.iter_mut() {
                    let field = format!("{path}.{key}");
                    found.extend(unknown_fields(
                        sub,
                        &schema["additionalProperties"],
                        &field,
                        prune,
                    ));
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter_mut().enumerate() {
                found.extend(unknown_fields(
                    item,
                    &schema["items"],
                    &format!("{path}[{i}]"),
                    prune,
                ));
            }
        }
        _ => {}
    }
    found
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_input")
}

fn load_cases() -> Vec<(PathBuf, String, Case)> {
    let mut cases = vec![];
    for kind in KINDS {
        let dir = corpus_dir().join(kind.to_lowercase());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            assert_eq!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml"),
                "{}: only .yaml case files belong here",
                path.display()
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let case: Case =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                case.object["kind"],
                kind,
                "{}: object of the wrong kind for its directory",
                path.display()
            );
            cases.push((path, kind.to_string(), case));
        }
    }
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

/// Checks one case; `Err` explains how admission would have let it through.
fn check(kind: &str, case: &Case) -> Result<(), String> {
    let schema = schema_of(kind);
    if let Some(old) = &case.old {
        let mut stored = old.clone();
        let problems = [
            openapi_errors(kind, old),
            cel_errors(kind, old, None)
                .into_iter()
                .map(|(p, m)| format!("{p}: {m}"))
                .collect(),
            unknown_fields(&mut stored, &schema, "", false),
        ]
        .concat();
        if !problems.is_empty() {
            return Err(format!("`old` must itself be valid: {problems:?}"));
        }
    }
    let openapi = openapi_errors(kind, &case.object);
    let unknown = unknown_fields(&mut case.object.clone(), &schema, "", false);
    match case.by {
        By::Openapi => {
            if openapi.is_empty() {
                return Err("accepted by the OpenAPI schema".into());
            }
            if let Some(other) = openapi.iter().find(|e| !e.contains(&case.expect)) {
                return Err(format!(
                    "an error that does not name `{}`: {other} (all: {openapi:?})",
                    case.expect
                ));
            }
        }
        By::Cel => {
            if !openapi.is_empty() || !unknown.is_empty() {
                return Err(format!(
                    "a CEL case must be schema-valid: {openapi:?} {unknown:?}"
                ));
            }
            let cel = cel_errors(kind, &case.object, case.old.as_ref());
            let [(field_path, message)] = cel.as_slice() else {
                return Err(format!("expected exactly one CEL violation, got {cel:?}"));
            };
            if *message != case.expect {
                return Err(format!("CEL message {message:?} != {:?}", case.expect));
            }
            if !message.contains("spec.") && !field_path.starts_with("spec.") {
                return Err(format!("no field named: {field_path}: {message}"));
            }
        }
        By::UnknownField => {
            if unknown != [case.expect.clone()] {
                return Err(format!("unknown fields {unknown:?} != [{:?}]", case.expect));
            }
            // Without strict field validation the apiserver prunes the field: what is
            // stored is the object without it, which must be valid (and same-namespace).
            let mut pruned = case.object.clone();
            unknown_fields(&mut pruned, &schema, "", true);
            let left = unknown_fields(&mut pruned.clone(), &schema, "", false);
            let errs = [
                openapi_errors(kind, &pruned),
                cel_errors(kind, &pruned, None)
                    .into_iter()
                    .map(|(p, m)| format!("{p}: {m}"))
                    .collect(),
                left,
            ]
            .concat();
            if !errs.is_empty() {
                return Err(format!("pruned object is invalid: {errs:?}"));
            }
        }
    }
    Ok(())
}

#[test]
fn bad_input_corpus_is_rejected_naming_the_field() {
    let cases = load_cases();
    let mut per_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = vec![];
    for (path, kind, case) in &cases {
        *per_kind.entry(kind.clone()).or_default() += 1;
        if let Err(why) = check(kind, case) {
            failures.push(format!("{}: {why}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) not rejected as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("bad-input cases per kind: {per_kind:?}");
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    for kind in KINDS {
        assert!(
            per_kind.get(kind).copied().unwrap_or(0) >= 5,
            "{kind}: fewer than 5 bad-input cases"
        );
    }
}

/// Every stage of admission is exercised by the corpus.
#[test]
fn bad_input_corpus_covers_every_admission_stage() {
    let cases = load_cases();
    for (stage, wanted) in [("openapi", 0), ("cel", 1), ("unknown-field", 2)] {
        let n = cases
            .iter()
            .filter(|(_, _, c)| {
                matches!(
                    (&c.by, wanted),
                    (By::Openapi, 0) | (By::Cel, 1) | (By::UnknownField, 2)
                )
            })
            .count();
        assert!(n > 0, "no `{stage}` case");
    }
    let updates = cases.iter().filter(|(_, _, c)| c.old.is_some()).count();
    assert!(updates > 0, "no update (`old`) case");
}

/// The schemas are structural and keep unknown fields only where the spec passes a JSON
/// object through to the upstream as-is; everywhere else unknown fields are pruned (or
/// refused under strict field validation), so a reference cannot gain a `namespace`.
#[test]
fn unknown_fields_are_preserved_only_in_pass_through_objects() {
    fn walk(schema: &Value, path: &str, out: &mut Vec<String>) {
        if schema["x-kubernetes-preserve-unknown-fields"] == true {
            out.push(path.to_string());
        }
        if let Some(props) = schema["properties"].as_object() {
            assert!(
                schema["additionalProperties"].is_null(),
                "{path}: properties and additionalProperties"
            );
            for (key, sub) in props {
                walk(sub, &format!("{path}.{key}"), out);
            }
        }
        if schema["items"].is_object() {
            walk(&schema["items"], &format!("{path}[]"), out);
        }
        if schema["additionalProperties"].is_object() {
            walk(&schema["additionalProperties"], &format!("{path}.*"), out);
        }
        // Structural: every node says its type, unless it is a pass-through object.
        if schema["x-kubernetes-preserve-unknown-fields"] != true {
            assert!(schema["type"].is_string(), "{path}: no type");
        }
    }
    for kind in KINDS {
        let mut preserved = vec![];
        walk(&schema_of(kind), "", &mut preserved);
        let expected: Vec<String> = if kind == "AppEntitlement" {
            ["provisionerPolicy", "deprovisionerPolicy"]
                .iter()
                .flat_map(|p| {
                    [
                        format!(".spec.{p}.connector.account.config"),
                        format!(".spec.{p}.multiStep.provisionSteps[]"),
                    ]
                })
                .collect()
        } else {
            vec![]
        };
        preserved.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(preserved, expected, "{kind}");
    }
}

/// Edge values the corpus' rules must not catch (the examples cover ordinary values).
#[test]
fn unicode_and_boundary_values_are_accepted() {
    let pac = |role: &str| {
        serde_json::json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "PersonaAccessControl",
            "metadata": {"name": "x", "namespace": "ns"},
            "spec": {"connectionRef": {"name": "instaclustr-prod"}, "clusterId": "c-1",
                     "virtualServerId": "B2C3D4E5-F6A7-8901-BCDE-F12345678901",
                     "personaRole": role, "type": "DENYLIST", "tools": []}})
    };
    let max_role = "ß".repeat(256);
    for role in [
        "a",
        "data analyst",
        "データ分析",
        "analyst 😀",
        "ops/oncall:primary",
        &max_role,
    ] {
        let obj = pac(role);
        assert!(
            openapi_errors("PersonaAccessControl", &obj).is_empty(),
            "{role:?}"
        );
        assert!(
            cel_errors("PersonaAccessControl", &obj, None).is_empty(),
            "{role:?}"
        );
    }
    let profile = serde_json::json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "AccessProfile",
        "metadata": {"name": "x", "namespace": "ns"},
        "spec": {"connectionRef": {"name": "serval.prod-1"}, "teamId": "t-1",
                 "name": "  Zahlungen – Bereitschaft ☎ ", "description": ""}});
    assert!(openapi_errors("AccessProfile", &profile).is_empty());
    let conn = serde_json::json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "Connection",
        "metadata": {"name": "x", "namespace": "ns"},
        "spec": {"conductorOne": {"serverUrl": "http://127.0.0.1:8080/base/path",
                                  "credentialsSecretRef": {"name": "c1"}}}});
    assert!(openapi_errors("Connection", &conn).is_empty());
}
