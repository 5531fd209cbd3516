//! Real-apiserver tier: the CRDs install and become Established, every example is
//! admitted, and every case of the bad-input corpus (`tests/bad_input`, checked
//! in-process by `src/api/bad_input_tests.rs` with the schema and kube's CEL validator)
//! is refused by the real apiserver naming the same field, with the same CEL message.
//! All through `kubectl`, as users meet it (strict field validation, server dry runs).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::envtest::{Envtest, envtest, unique};
use crate::support::fake_admission::apiserver_field;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Applies `crds/` server-side (as the README tells users) and waits for Established.
pub fn install_crds(env: &Envtest) {
    env.install_crds_except(&[]);
}

/// Creates a namespace (never deleted: namespaces are not finalized here).
pub fn namespace(env: &Envtest, prefix: &str) -> String {
    let ns = unique(prefix);
    env.kubectl_ok(&["create", "namespace", &ns], None);
    ns
}

/// Every YAML document of a file.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|d| !d.is_null())
        .collect()
}

/// The example manifests (every file under examples/ but the Namespace).
pub fn example_files() -> Vec<PathBuf> {
    let mut files = vec![];
    let mut dirs = vec![Path::new(ROOT).join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.retain(|p| documents(p).iter().all(|d| d["kind"] != "Namespace"));
    files.sort();
    files
}

#[test]
fn crds_establish_and_every_example_is_admitted() {
    let Some(env) = envtest() else { return };
    install_crds(env);
    let established = env.kubectl_ok(
        &[
            "get",
            "crd",
            "-o",
            "jsonpath={range .items[?(@.spec.group==\"accessplane.io\")]}{.spec.names.kind}={.status.conditions[?(@.type==\"Established\")].status}{\"\\n\"}{end}",
        ],
        None,
    );
    let mut kinds: Vec<&str> = established.lines().collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "AccessProfile=True",
            "AppEntitlement=True",
            "ClusterConnection=True",
            "Connection=True",
            "Connector=True",
            "McpToolset=True",
            "PersonaAccessControl=True"
        ]
    );

    let ns = namespace(env, "examples");
    let files = example_files();
    assert!(files.len() >= 15, "{files:?}");
    for file in &files {
        for mut doc in documents(file) {
            if doc["kind"] != "ClusterConnection" {
                doc["metadata"]["namespace"] = json!(ns);
            }
            let out = env.kubectl(&["create", "-f", "-"], Some(&doc.to_string()));
            assert!(
                out.status.success(),
                "{} was refused: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            // Strict field validation warns about nothing, e.g. no pruned field.
            assert!(
                !String::from_utf8_lossy(&out.stderr).contains("Warning"),
                "{}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// What the apiserver's refusal must contain for a case's `expect`.
fn apiserver_expectation(by: &str, expect: &str) -> String {
    match by {
        "openapi" => match expect.strip_suffix("\" is a required property") {
            // The corpus names the missing field, the apiserver its whole path.
            Some(field) => format!(".{}: Required value", field.trim_start_matches('"')),
            None => format!("{}: ", apiserver_field(expect)),
        },
        // CEL messages and strict-decoding errors are the same text.
        _ => expect.to_string(),
    }
}

#[test]
fn the_real_apiserver_refuses_every_bad_input_case_naming_the_field() {
    let Some(env) = envtest() else { return };
    install_crds(env);
    let ns = namespace(env, "bad-input");
    let mut cases = vec![];
    for dir in std::fs::read_dir(Path::new(ROOT).join("tests/bad_input")).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for file in std::fs::read_dir(dir).unwrap() {
                cases.push(file.unwrap().path());
            }
        }
    }
    cases.sort();
    assert!(cases.len() >= 100, "{}", cases.len());
    let mut failures = vec![];
    for path in &cases {
        let case: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let by = case["by"].as_str().unwrap();
        let expected = apiserver_expectation(by, case["expect"].as_str().unwrap());
        let name = unique("case");
        let with_ns = |mut obj: Value| {
            if obj["kind"] != "ClusterConnection" {
                obj["metadata"]["namespace"] = json!(ns);
            }
            obj["metadata"]["name"] = json!(name);
            obj.to_string()
        };
        let out = match case.get("old") {
            Some(old) => {
                let created = env.kubectl(&["create", "-f", "-"], Some(&with_ns(old.clone())));
                assert!(
                    created.status.success(),
                    "{}: `old` refused: {}",
                    path.display(),
                    String::from_utf8_lossy(&created.stderr)
                );
                env.kubectl(
                    &["replace", "--dry-run=server", "-f", "-"],
                    Some(&with_ns(case["object"].clone())),
                )
            }
            None => env.kubectl(
                &["create", "--dry-run=server", "-f", "-"],
                Some(&with_ns(case["object"].clone())),
            ),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{}: admitted", path.display()));
        } else if !stderr.contains(&expected) {
            failures.push(format!(
                "{}: refused without {expected:?}: {}",
                path.display(),
                stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ on the real apiserver:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn instance_paths_map_to_apiserver_field_paths() {
    assert_eq!(
        apiserver_field("/spec/tools/0/toolName"),
        "spec.tools[0].toolName"
    );
    assert_eq!(apiserver_field("/spec/name"), "spec.name");
    assert_eq!(
        apiserver_expectation("openapi", "\"connectionRef\" is a required property"),
        ".connectionRef: Required value"
    );
    assert_eq!(
        apiserver_expectation("cel", "spec.appId is immutable"),
        "spec.appId is immutable"
    );
}
