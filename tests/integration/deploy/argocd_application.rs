//! `deploy/argocd/application.yaml` selects files the way Argo CD's directory source
//! does (repo-server `findManifests`): walk `spec.source.path` (recursing only with
//! `directory.recurse`), keep `*.yaml|*.yml|*.json|*.jsonnet`, drop a path (relative
//! to `path`) matching `directory.exclude`, keep only one matching `directory.include`.
//! The globs are gobwas/glob compiled without separators, so `*` also matches `/`
//! and `{a,b}` alternates; globset without `literal_separator` matches the same way.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobMatcher};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn application() -> Value {
    let text = std::fs::read_to_string(format!("{ROOT}/deploy/argocd/application.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn matcher(pattern: &str) -> GlobMatcher {
    Glob::new(pattern)
        .unwrap_or_else(|e| panic!("glob {pattern:?}: {e}"))
        .compile_matcher()
}

/// The files Argo CD would read for `source`, as paths relative to the repository root.
fn selected_files(source: &Value) -> Vec<PathBuf> {
    let app_path = Path::new(ROOT).join(source["path"].as_str().unwrap());
    let directory = &source["directory"];
    let recurse = directory["recurse"].as_bool().unwrap_or(false);
    let exclude = directory["exclude"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(matcher);
    let include = directory["include"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(matcher);
    let mut found = Vec::new();
    let mut dirs = vec![app_path.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if recurse {
                    dirs.push(path);
                }
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap();
            if ![".yaml", ".yml", ".json", ".jsonnet"]
                .iter()
                .any(|ext| name.ends_with(ext))
            {
                continue;
            }
            let rel = path
                .strip_prefix(&app_path)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            if exclude.as_ref().is_some_and(|m| m.is_match(&rel)) {
                continue;
            }
            if include.as_ref().is_some_and(|m| !m.is_match(&rel)) {
                continue;
            }
            found.push(path.strip_prefix(ROOT).unwrap().to_path_buf());
        }
    }
    found.sort();
    found
}

/// `(kind, name)` of every document in the file.
fn documents(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let doc = <Value as serde::Deserialize>::deserialize(doc).unwrap();
            (
                doc["kind"].as_str().unwrap_or_default().to_string(),
                doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .filter(|(kind, _)| !kind.is_empty())
        .collect()
}

#[test]
fn globs_match_like_argo_cd() {
    // The semantics the walk relies on: `*` crosses `/`, `{a,b}` alternates.
    let m = matcher("{*/secret.yaml,*/*-secret.yaml}");
    assert!(m.is_match("serval/secret.yaml"));
    assert!(m.is_match("conductorone/connector-config-secret.yaml"));
    assert!(m.is_match("a/b/secret.yaml"));
    assert!(!m.is_match("secret.yaml"));
    assert!(!m.is_match("serval/accessprofile.yaml"));
}

#[test]
fn the_example_application_syncs_no_secret() {
    let app = application();
    let selected = selected_files(&app["spec"]["source"]);
    let docs: Vec<(PathBuf, String, String)> = selected
        .iter()
        .flat_map(|path| {
            documents(path)
                .into_iter()
                .map(move |(kind, name)| (path.clone(), kind, name))
        })
        .collect();
    let secrets: Vec<_> = docs
        .iter()
        .filter(|(_, kind, _)| kind == "Secret")
        .collect();
    assert!(
        secrets.is_empty(),
        "Argo CD would sync (and with selfHeal keep overwriting) Secret templates: {secrets:?}"
    );
    // Not vacuous: the walk reaches every upstream's resources.
    for kind in [
        "Connection",
        "AccessProfile",
        "AppEntitlement",
        "Connector",
        "McpToolset",
        "PersonaAccessControl",
    ] {
        assert!(
            docs.iter().any(|(_, k, _)| k == kind),
            "the Application selects no {kind}: {selected:?}"
        );
    }
    // And every Secret under examples/ exists: the exclusion has something to exclude.
    let all = selected_files(&serde_json::json!({
        "path": app["spec"]["source"]["path"],
        "directory": {"recurse": true}
    }));
    let templates = all
        .iter()
        .filter(|p| documents(p).iter().any(|(kind, _)| kind == "Secret"))
        .count();
    assert!(
        templates >= 4,
        "expected the Secret templates under examples/: {all:?}"
    );
}
