//! Admission of custom resources for the fake apiserver, as the real one does it for a
//! CRD-defined resource: decoding (unknown fields pruned, reported, or refused by
//! `fieldValidation`), then validation against the CRD's structural OpenAPI v3 schema
//! and its CEL `x-kubernetes-validations` (transition rules on updates), with the
//! validation ratcheting of Kubernetes 1.33 (an unchanged part of an update is not
//! re-judged), answered with the apiserver's 422 `Invalid` Status (`details.causes` name
//! the fields).
//!
//! The validators are the ones the in-process checks use (`src/api/bad_input_tests.rs`):
//! the `jsonschema` crate for the OpenAPI schema and kube's CEL evaluator. What is the
//! apiserver's own is how their findings are reported: field paths (`spec.tools[0].id`),
//! error types and messages follow apiextensions-apiserver
//! (`pkg/apiserver/validation/validation.go`, `schema/cel/validation.go`,
//! `registry/customresource/strategy.go`) and apimachinery's `field.Error`.
//!
//! Schemas come from CRD objects (the fake's stored ones, or the operator crate's own
//! [`accessplane::kinds::all_crds`]); one compiled [`CrdSchema`] per distinct schema is
//! cached for the whole test process.
#![allow(dead_code)] // each test binary uses a different subset of the helpers

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use kube::core::cel::{CompiledSchema, ErrorKind, Validator, compile_schema};
use serde_json::{Value, json};

/// One served version of one CRD: what admission needs of it.
pub struct CrdSchema {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// `openAPIV3Schema` as JSON.
    pub schema: Value,
    validator: jsonschema::Validator,
    cel: CompiledSchema,
    /// `fieldPath` of each CEL rule (by rule text), to find the node a rule belongs to.
    rule_field_paths: HashMap<String, String>,
}

impl CrdSchema {
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// Every served version with a schema of a CRD object (JSON as stored), compiled once
    /// per distinct schema for the whole process.
    pub fn from_crd(crd: &Value) -> Vec<Arc<CrdSchema>> {
        static CACHE: LazyLock<Mutex<HashMap<String, Arc<CrdSchema>>>> =
            LazyLock::new(Default::default);
        let spec = &crd["spec"];
        let (Some(group), Some(kind), Some(plural)) = (
            spec["group"].as_str(),
            spec["names"]["kind"].as_str(),
            spec["names"]["plural"].as_str(),
        ) else {
            return vec![];
        };
        let namespaced = spec["scope"] != "Cluster";
        let mut out = vec![];
        for version in spec["versions"].as_array().into_iter().flatten() {
            let schema = &version["schema"]["openAPIV3Schema"];
            let (Some(name), true) = (version["name"].as_str(), schema.is_object()) else {
                continue;
            };
            if version["served"] == false {
                continue;
            }
            let key = json!([group, name, kind, plural, namespaced, schema]).to_string();
            let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            let compiled = cache
                .entry(key)
                .or_insert_with(|| {
                    Arc::new(CrdSchema::compile(
                        group, name, kind, plural, namespaced, schema,
                    ))
                })
                .clone();
            out.push(compiled);
        }
        out
    }

    fn compile(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        schema: &Value,
    ) -> Self {
        // Formats: the apiserver checks the string formats it supports (`date-time` is the
        // only one these CRDs use); integer formats (`int64`, `uint32`) are not checked.
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .unwrap_or_else(|e| panic!("{kind}: schema does not compile: {e}"));
        let mut rule_field_paths = HashMap::new();
        collect_rule_field_paths(schema, &mut rule_field_paths);
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            schema: schema.clone(),
            validator,
            cel: compile_schema(schema),
            rule_field_paths,
        }
    }

    /// The operator crate's own CRDs (what `crds/` holds), by (apiVersion, plural).
    pub fn operator_crds() -> &'static HashMap<(String, String), Arc<CrdSchema>> {
        static CRDS: LazyLock<HashMap<(String, String), Arc<CrdSchema>>> = LazyLock::new(|| {
            accessplane::kinds::all_crds()
                .into_iter()
                .flat_map(|(_, crd)| CrdSchema::from_crd(&serde_json::to_value(crd).unwrap()))
                .map(|s| ((s.api_version(), s.plural.clone()), s))
                .collect()
        });
        &CRDS
    }

    /// Structural pruning as the apiserver decodes a custom resource: fields the schema
    /// does not declare are removed (except under `x-kubernetes-preserve-unknown-fields`),
    /// unknown `metadata` fields too; returns their paths, sorted (`spec.a.b`,
    /// `spec.list[0].c`, `metadata.x`), as `fieldValidation` reports them.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        let mut found = vec![];
        let Some(map) = obj.as_object_mut() else {
            return found;
        };
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            let unknown: Vec<String> = meta
                .keys()
                .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
                .cloned()
                .collect();
            for key in unknown {
                meta.remove(&key);
                found.push(format!("metadata.{key}"));
            }
        }
        let props = self.schema["properties"].as_object();
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            if ["apiVersion", "kind", "metadata"].contains(&key.as_str()) {
                continue;
            }
            match props.and_then(|p| p.get(&key)) {
                Some(sub) => prune(map.get_mut(&key).unwrap(), sub, &key, &mut found),
                None if self.schema["x-kubernetes-preserve-unknown-fields"] == true => {}
                None => {
                    map.remove(&key);
                    found.push(key);
                }
            }
        }
        found.sort();
        found
    }

    /// Fields of `obj` the schema does not declare, without changing it.
    pub fn unknown_fields(&self, obj: &Value) -> Vec<String> {
        self.prune(&mut obj.clone())
    }

    /// Validation of a create: metadata.name, the OpenAPI schema, then (unless a blocking
    /// error came first) the CEL rules.
    pub fn validate_create(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = name_errors(obj);
        errs.extend(self.openapi_errors(obj));
        self.with_cel(errs, obj, None)
    }

    /// Validation of an update of `old`: the whole object, transition rules with `oldSelf`,
    /// errors in parts that did not change ratcheted away (CRDValidationRatcheting, on by
    /// default since Kubernetes 1.30, GA in 1.33).
    pub fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let errs = self
            .openapi_errors(new)
            .into_iter()
            .filter(|e| !unchanged(new, old, &e.node))
            .collect();
        self.with_cel(errs, new, Some(old))
    }

    /// Validation of a `/status` write: the status against its schema (ratcheted), then
    /// the CEL rules of the whole object (ratcheted).
    pub fn validate_status_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let errs = self
            .openapi_errors(new)
            .into_iter()
            .filter(|e| e.field == "status" || e.field.starts_with("status."))
            .filter(|e| !unchanged(new, old, &e.node))
            .collect();
        self.with_cel(errs, new, Some(old))
    }

    fn with_cel(
        &self,
        mut errs: Vec<FieldError>,
        obj: &Value,
        old: Option<&Value>,
    ) -> Vec<FieldError> {
        // registry/customresource/strategy.go: these kinds of error block the CEL rules.
        if errs.iter().any(|e| {
            matches!(
                e.reason,
                REQUIRED | NOT_SUPPORTED | TOO_LONG | TOO_MANY | TYPE_INVALID
            )
        }) {
            errs.push(FieldError {
                reason: INVALID,
                field: "<nil>".into(),
                value: Some(Value::Null),
                detail: "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
                node: vec![],
            });
            return errs;
        }
        errs.extend(self.cel_errors(obj, old));
        dedup(errs)
    }

    fn openapi_errors(&self, obj: &Value) -> Vec<FieldError> {
        self.validator
            .iter_errors(obj)
            .map(|e| openapi_error(&self.schema, obj, &e))
            .collect()
    }

    fn cel_errors(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        static VALIDATOR: LazyLock<Validator> = LazyLock::new(Validator::new);
        let Err(errors) = VALIDATOR.validate_compiled(&self.cel, obj, old) else {
            return vec![];
        };
        let mut out = vec![];
        for e in errors.into_vec() {
            // The node the rule belongs to: the reported path without the rule's fieldPath.
            let node_path = match self.rule_field_paths.get(&e.rule) {
                Some(fp) => {
                    let fp = if fp.starts_with('.') {
                        fp.clone()
                    } else {
                        format!(".{fp}")
                    };
                    e.field_path
                        .strip_suffix(fp.as_str())
                        .unwrap_or(&e.field_path)
                        .to_string()
                }
                None => e.field_path.clone(),
            };
            let node = parse_field_path(&node_path);
            if let Some(old) = old
                && !e.rule.contains("oldSelf")
                && unchanged(obj, old, &node)
            {
                continue; // ratcheted: the rule's value did not change
            }
            let node_type = schema_at(&self.schema, &node)
                .and_then(|s| s["type"].as_str())
                .unwrap_or("object")
                .to_string();
            let field = if e.field_path.is_empty() {
                "<nil>".to_string()
            } else {
                e.field_path.clone()
            };
            let message = match e.kind {
                ErrorKind::ValidationFailure => e.message.trim().to_string(),
                _ => format!("rule evaluation error: {}", e.message),
            };
            let (reason, value) = match e.reason.as_deref() {
                Some("FieldValueForbidden") => (FORBIDDEN, None),
                Some("FieldValueRequired") => (REQUIRED, None),
                Some("FieldValueDuplicate") => (DUPLICATE, Some(json!(node_type))),
                _ => (INVALID, Some(json!(node_type))),
            };
            out.push(FieldError {
                reason,
                field,
                value,
                detail: if reason == DUPLICATE {
                    String::new()
                } else {
                    message
                },
                node,
            });
        }
        out
    }
}

/// The `metadata` fields of ObjectMeta; any other is pruned.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// pruning/algorithm.go: a value against its structural schema.
fn prune(value: &mut Value, schema: &Value, path: &str, found: &mut Vec<String>) {
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    match value {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let additional = schema["additionalProperties"].is_object();
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let field = format!("{path}.{key}");
                if let Some(sub) = props.and_then(|p| p.get(&key)) {
                    prune(map.get_mut(&key).unwrap(), sub, &field, found);
                } else if additional {
                    let sub = &schema["additionalProperties"];
                    prune(map.get_mut(&key).unwrap(), sub, &field, found);
                } else if !preserve {
                    map.remove(&key);
                    found.push(field);
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter_mut().enumerate() {
                prune(item, &schema["items"], &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn collect_rule_field_paths(schema: &Value, out: &mut HashMap<String, String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                for rule in rules {
                    if let (Some(r), Some(fp)) = (rule["rule"].as_str(), rule["fieldPath"].as_str())
                    {
                        out.insert(r.to_string(), fp.to_string());
                    }
                }
            }
            map.values().for_each(|v| collect_rule_field_paths(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_rule_field_paths(v, out)),
        _ => {}
    }
}

/// One step into an object.
#[derive(Clone, Debug, PartialEq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// `spec.tools[0].id` as steps (map keys containing dots are not told apart).
fn parse_field_path(path: &str) -> Vec<Seg> {
    let mut out = vec![];
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                out.push(Seg::Key(rest[..open].to_string()));
            }
            rest = &rest[open..];
            while let Some(close) = rest.find(']') {
                if let Ok(i) = rest[1..close].parse() {
                    out.push(Seg::Index(i));
                }
                rest = &rest[close + 1..];
            }
        } else {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

/// The apiserver's name of a field: `spec.tools[0].id`.
fn field_of(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn value_at<'a>(mut v: &'a Value, segs: &[Seg]) -> Option<&'a Value> {
    for seg in segs {
        v = match seg {
            Seg::Key(k) => v.get(k)?,
            Seg::Index(i) => v.get(i)?,
        };
    }
    Some(v)
}

fn schema_at<'a>(mut s: &'a Value, segs: &[Seg]) -> Option<&'a Value> {
    for seg in segs {
        s = match seg {
            Seg::Key(k) => s["properties"]
                .get(k)
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))?,
            Seg::Index(_) => s.get("items")?,
        };
    }
    Some(s)
}

/// Ratcheting: whether the node an error was raised at is unchanged from `old`. Atomic
/// lists (every list here) do not correlate their items, so a node inside a list is
/// judged by the list itself.
fn unchanged(new: &Value, old: &Value, node: &[Seg]) -> bool {
    let end = node
        .iter()
        .position(|s| matches!(s, Seg::Index(_)))
        .unwrap_or(node.len());
    let node = &node[..end];
    match (value_at(new, node), value_at(old, node)) {
        (Some(n), Some(o)) => n == o,
        _ => false,
    }
}

/// The segments of a jsonschema instance path, told apart by the instance itself (a map
/// key may look like a number).
fn segments_of(obj: &Value, pointer: &str) -> Vec<Seg> {
    let mut out = vec![];
    let mut v = Some(obj);
    for raw in pointer.split('/').skip(1) {
        let key = raw.replace("~1", "/").replace("~0", "~");
        let seg = match (v, key.parse::<usize>()) {
            (Some(Value::Array(_)), Ok(i)) => Seg::Index(i),
            _ => Seg::Key(key),
        };
        v = v.and_then(|v| match &seg {
            Seg::Key(k) => v.get(k),
            Seg::Index(i) => v.get(i),
        });
        out.push(seg);
    }
    out
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// kube-openapi's finding, as `kubeOpenAPIResultToFieldErrors` turns it into a field error.
fn openapi_error(schema: &Value, obj: &Value, e: &jsonschema::ValidationError<'_>) -> FieldError {
    use jsonschema::error::ValidationErrorKind as K;
    let node = segments_of(obj, e.instance_path().as_str());
    let field = field_of(&node);
    let instance = e.instance().clone().into_owned();
    let items = |n: u64| if n == 1 { "item" } else { "items" };
    let invalid = |detail: String| FieldError {
        reason: INVALID,
        field: field.clone(),
        value: Some(instance.clone()),
        detail,
        node: node.clone(),
    };
    match e.kind() {
        K::Required { property } => {
            let mut path = node.clone();
            path.push(Seg::Key(property.as_str().unwrap_or_default().to_string()));
            FieldError {
                reason: REQUIRED,
                field: field_of(&path),
                value: None,
                detail: String::new(),
                node,
            }
        }
        K::Enum { options } => {
            let supported: Vec<String> = options
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| match o {
                    Value::String(s) => go_quote(s),
                    other => go_quote(&other.to_string()),
                })
                .collect();
            FieldError {
                reason: NOT_SUPPORTED,
                field: field.clone(),
                value: Some(instance.clone()),
                detail: format!("supported values: {}", supported.join(", ")),
                node: node.clone(),
            }
        }
        K::MaxLength { limit } => FieldError {
            reason: TOO_LONG,
            field: field.clone(),
            value: None,
            detail: format!(
                "may not be more than {limit} {}",
                if *limit == 1 { "byte" } else { "bytes" }
            ),
            node: node.clone(),
        },
        K::MaxItems { limit } => FieldError {
            reason: TOO_MANY,
            field: field.clone(),
            value: Some(json!(instance.as_array().map_or(0, Vec::len))),
            detail: format!("must have at most {limit} {}", items(*limit)),
            node: node.clone(),
        },
        K::MaxProperties { limit } => FieldError {
            reason: TOO_MANY,
            field: field.clone(),
            value: Some(json!(instance.as_object().map_or(0, |m| m.len()))),
            detail: format!("must have at most {limit} {}", items(*limit)),
            node: node.clone(),
        },
        K::Type { .. } => {
            let expected = schema_at(schema, &node)
                .and_then(|s| s["type"].as_str())
                .unwrap_or("object");
            let actual = json_type(&instance);
            FieldError {
                reason: TYPE_INVALID,
                field: field.clone(),
                value: Some(json!(actual)),
                detail: format!(
                    "{field} in body must be of type {expected}: {}",
                    go_quote(actual)
                ),
                node: node.clone(),
            }
        }
        K::Format { format } => FieldError {
            reason: TYPE_INVALID,
            field: field.clone(),
            value: Some(instance.clone()),
            detail: format!(
                "{field} in body must be of type {format}: {}",
                go_quote(&render_plain(&instance))
            ),
            node: node.clone(),
        },
        K::MinLength { limit } => invalid(format!(
            "{field} in body should be at least {limit} chars long"
        )),
        K::Pattern { pattern } => invalid(format!("{field} in body should match '{pattern}'")),
        K::Minimum { limit } => invalid(format!(
            "{field} in body should be greater than or equal to {}",
            go_number(limit)
        )),
        K::Maximum { limit } => invalid(format!(
            "{field} in body should be less than or equal to {}",
            go_number(limit)
        )),
        K::ExclusiveMinimum { limit } => invalid(format!(
            "{field} in body should be greater than {}",
            go_number(limit)
        )),
        K::ExclusiveMaximum { limit } => invalid(format!(
            "{field} in body should be less than {}",
            go_number(limit)
        )),
        K::MinItems { limit } => FieldError {
            value: Some(json!(instance.as_array().map_or(0, Vec::len))),
            ..invalid(format!(
                "{field} in body should have at least {limit} items"
            ))
        },
        K::MinProperties { limit } => FieldError {
            value: Some(json!(instance.as_object().map_or(0, |m| m.len()))),
            ..invalid(format!(
                "{field} in body should have at least {limit} properties"
            ))
        },
        K::UniqueItems => invalid(format!("{field} in body shouldn't contain duplicates")),
        _ => invalid(format!("{field} in body {e}")),
    }
}

/// metadata.name of a custom resource is a DNS subdomain (`NameIsDNSSubdomain`).
fn name_errors(obj: &Value) -> Vec<FieldError> {
    let Some(name) = obj["metadata"]["name"].as_str() else {
        return vec![];
    };
    let mut details = vec![];
    if name.len() > 253 {
        details.push("must be no more than 253 characters".to_string());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.split('.').all(label_ok) {
        details.push("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
    }
    details
        .into_iter()
        .map(|detail| FieldError {
            reason: INVALID,
            field: "metadata.name".into(),
            value: Some(json!(name)),
            detail,
            node: vec![Seg::Key("metadata".into()), Seg::Key("name".into())],
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Field errors (k8s.io/apimachinery/pkg/util/validation/field)

pub const REQUIRED: &str = "FieldValueRequired";
pub const INVALID: &str = "FieldValueInvalid";
pub const TYPE_INVALID: &str = "FieldValueTypeInvalid";
pub const NOT_SUPPORTED: &str = "FieldValueNotSupported";
pub const FORBIDDEN: &str = "FieldValueForbidden";
pub const TOO_LONG: &str = "FieldValueTooLong";
pub const TOO_MANY: &str = "FieldValueTooMany";
pub const DUPLICATE: &str = "FieldValueDuplicate";

/// One field error: `field: <type>[: value][: detail]`.
#[derive(Clone, Debug, Default)]
pub struct FieldError {
    /// The cause type (`FieldValueRequired`, ...).
    pub reason: &'static str,
    pub field: String,
    /// The bad value, when the error type shows one.
    pub value: Option<Value>,
    pub detail: String,
    /// Where the error was raised (for ratcheting).
    node: Vec<Seg>,
}

impl FieldError {
    pub fn new(reason: &'static str, field: &str, value: Option<Value>, detail: &str) -> Self {
        Self {
            reason,
            field: field.into(),
            value,
            detail: detail.into(),
            node: vec![],
        }
    }

    /// `field.Error.ErrorBody`: the message without the field.
    pub fn body(&self) -> String {
        let kind = match self.reason {
            REQUIRED => "Required value",
            INVALID | TYPE_INVALID => "Invalid value",
            NOT_SUPPORTED => "Unsupported value",
            FORBIDDEN => "Forbidden",
            TOO_LONG => "Too long",
            TOO_MANY => "Too many",
            DUPLICATE => "Duplicate value",
            _ => "Internal error",
        };
        let mut s = match (&self.value, self.reason) {
            (_, REQUIRED | FORBIDDEN | TOO_LONG) | (None, _) => kind.to_string(),
            (Some(Value::String(v)), _) => format!("{kind}: {}", go_quote(v)),
            (Some(v @ (Value::Number(_) | Value::Bool(_))), _) => format!("{kind}: {v}"),
            (Some(v), _) => format!("{kind}: {v}"),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

fn dedup(errs: Vec<FieldError>) -> Vec<FieldError> {
    let mut seen = std::collections::HashSet::new();
    errs.into_iter()
        .filter(|e| seen.insert(e.to_string()))
        .collect()
}

/// `errors.NewInvalid(kind, name, errs)`: message and details of the 422 Status.
pub fn invalid_status(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> (String, Value) {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let message = match all.as_slice() {
        [] => format!("{qualified} {} is invalid", go_quote(name)),
        [one] => format!("{qualified} {} is invalid: {one}", go_quote(name)),
        many => format!(
            "{qualified} {} is invalid: [{}]",
            go_quote(name),
            many.join(", ")
        ),
    };
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| json!({"reason": e.reason, "message": e.body(), "field": e.field}))
        .collect();
    let details = json!({"name": name, "group": group, "kind": kind, "causes": causes});
    (message, details)
}

/// `runtime.NewStrictDecodingError` over unknown fields.
pub fn strict_decoding_error(unknown: &[String]) -> String {
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {}", go_quote(f)))
        .collect();
    format!("strict decoding error: {}", fields.join(", "))
}

/// A JSON number as Go's `%v` prints a float64 (`10000`, not `10000.0`; `1e+06`).
fn go_number(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e6 => format!("{}", f as i64),
        Some(f) if f.abs() >= 1e6 || (f != 0.0 && f.abs() < 1e-4) => {
            let s = format!("{f:e}");
            match s.split_once('e') {
                Some((m, e)) if e.starts_with('-') => format!("{m}e-{:0>2}", &e[1..]),
                Some((m, e)) => format!("{m}e+{e:0>2}"),
                None => s,
            }
        }
        Some(f) => f.to_string(),
        None => v.to_string(),
    }
}

/// A scalar as Go's `%v` would print it (strings bare).
fn render_plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Go's `strconv.Quote` (close enough: control characters escaped, the rest kept).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The field a JSON instance path (`/spec/tools/0/toolName`) names, as the apiserver
/// writes it (`spec.tools[0].toolName`): how the bad-input corpus's expectations are
/// matched against refusals, by the fake and by the real apiserver alike.
pub fn apiserver_field(instance_path: &str) -> String {
    let mut field = String::new();
    for part in instance_path.trim_start_matches('/').split('/') {
        if part.chars().all(|c| c.is_ascii_digit()) {
            field.push_str(&format!("[{part}]"));
        } else {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(part);
        }
    }
    field
}
