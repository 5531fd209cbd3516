//! The input of `accessplane plan -f`: files, folders (recursively) or standard input,
//! each holding YAML or JSON documents — several per file (`---`), `kind: List` (or
//! `<Kind>List`) wrappers, the output of `helm template` or `kustomize build`. Every
//! object comes out with where it was found, so a plan line can point at its source.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// Why the input could not be read; each names the file (and document) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {document}: {message}")]
    Parse {
        path: String,
        document: usize,
        message: String,
    },
    #[error("{path}: document {document}: {message}")]
    NotAnObject {
        path: String,
        document: usize,
        message: &'static str,
    },
}

/// One object of the input and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// `path` (`-` for standard input) and the 1-based document number, e.g. `a.yaml#2`.
    pub source: String,
    pub object: Value,
}

impl Loaded {
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }
}

/// Reads every object of `paths` in order (`-` is `stdin`); a folder contributes its
/// `.yaml`, `.yml` and `.json` files, recursively, in name order.
pub fn load(paths: &[PathBuf], stdin: &mut dyn Read) -> Result<Vec<Loaded>, ManifestError> {
    let mut out = vec![];
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|source| ManifestError::Read {
                    path: "-".into(),
                    source,
                })?;
            parse_into(&text, "-", &mut out)?;
            continue;
        }
        for file in files_of(path)? {
            let label = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
                path: label.clone(),
                source,
            })?;
            parse_into(&text, &label, &mut out)?;
        }
    }
    Ok(out)
}

/// `path` itself, or the manifest files below it.
fn files_of(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let read_error = |source| ManifestError::Read {
        path: path.display().to_string(),
        source,
    };
    if !path.metadata().map_err(read_error)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    // Hidden entries are skipped, like kubectl does: a mounted ConfigMap holds its files
    // twice, as `name` and under `..data/` (and `..<timestamp>/`).
    entries.retain(|e| {
        !e.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
    });
    entries.sort();
    let mut files = vec![];
    for entry in entries {
        if entry.is_dir() {
            files.extend(files_of(&entry)?);
        } else if entry
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
        {
            files.push(entry);
        }
    }
    Ok(files)
}

/// Every object of one YAML (or JSON) stream; Lists are unpacked, empty documents skipped.
fn parse_into(text: &str, path: &str, out: &mut Vec<Loaded>) -> Result<(), ManifestError> {
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let value = Value::deserialize(document).map_err(|e| ManifestError::Parse {
            path: path.into(),
            document: number,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let not_an_object = |message| ManifestError::NotAnObject {
            path: path.into(),
            document: number,
            message,
        };
        let Value::Object(map) = &value else {
            return Err(not_an_object(
                "not a Kubernetes object (a mapping is expected)",
            ));
        };
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind.is_empty() || !map.contains_key("apiVersion") {
            return Err(not_an_object("apiVersion and kind are required"));
        }
        if kind.ends_with("List") && map.get("items").is_some_and(Value::is_array) {
            for item in map["items"].as_array().into_iter().flatten() {
                if !item.is_object() || item.get("kind").is_none() {
                    return Err(not_an_object("a List item without a kind"));
                }
                out.push(Loaded {
                    source: format!("{path}#{number}"),
                    object: item.clone(),
                });
            }
            continue;
        }
        out.push(Loaded {
            source: format!("{path}#{number}"),
            object: value,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(loaded: &[Loaded]) -> Vec<String> {
        loaded
            .iter()
            .map(|l| format!("{} {}", l.kind(), l.source))
            .collect()
    }

    #[test]
    fn streams_lists_and_empty_documents() {
        let text = "---\n# only a comment\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: accessplane.io/v1alpha1, kind: AccessProfile, metadata: {name: a}}\n\
                    - {apiVersion: accessplane.io/v1alpha1, kind: Connection, metadata: {name: c}}\n";
        let loaded = load(&["-".into()], &mut text.as_bytes()).unwrap();
        assert_eq!(
            kinds(&loaded),
            ["Secret -#2", "AccessProfile -#3", "Connection -#3"]
        );
    }

    #[test]
    fn hidden_entries_of_a_folder_are_skipped() {
        // A ConfigMap volume: the files as symlinks into `..data/`.
        let dir = std::env::temp_dir().join(format!(
            "accessplane-manifests-hidden-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..data")).unwrap();
        std::fs::write(dir.join("..data/a.yaml"), "apiVersion: v1\nkind: A\n").unwrap();
        std::os::unix::fs::symlink("..data/a.yaml", dir.join("a.yaml")).unwrap();
        let loaded = load(std::slice::from_ref(&dir), &mut std::io::empty()).unwrap();
        assert_eq!(loaded.len(), 1, "{:?}", kinds(&loaded));
        assert_eq!(loaded[0].kind(), "A");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn folders_are_read_recursively_in_name_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let loaded = load(&[dir], &mut std::io::empty()).unwrap();
        let sources: Vec<&str> = loaded.iter().map(|l| l.source.as_str()).collect();
        let mut sorted = sources.clone();
        sorted.sort();
        assert_eq!(sources, sorted);
        assert!(loaded.iter().any(|l| l.kind() == "ClusterConnection"));
        assert!(loaded.len() >= 20, "{}", loaded.len());
    }

    #[test]
    fn bad_input_names_the_file_and_document() {
        let text = "apiVersion: v1\nkind: Secret\n---\n- just\n- a list\n";
        let error = load(&["-".into()], &mut text.as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "-: document 2: not a Kubernetes object (a mapping is expected)"
        );
        let error = load(&["-".into()], &mut "kind: [unclosed".as_bytes()).unwrap_err();
        assert!(error.to_string().starts_with("-: document 1: "), "{error}");
        let error = load(&["/no/such/file.yaml".into()], &mut std::io::empty()).unwrap_err();
        assert!(
            error.to_string().starts_with("/no/such/file.yaml: "),
            "{error}"
        );
        let error = load(&["-".into()], &mut "metadata: {name: x}\n".as_bytes()).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("apiVersion and kind are required")
        );
    }
}
