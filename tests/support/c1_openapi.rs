//! ConductorOne's own OpenAPI 3.1 document as a wire-conformance check.
//!
//! The document (`../shared/upstream/specs/conductorone-openapi.yaml`, from their
//! Terraform provider) is read at test time and never copied into the repository; without
//! it [`spec`] is `None` and the checks skip with one line (CI sets
//! `ACCESSPLANE_REQUIRE_C1_OPENAPI`, which makes a missing document a failure instead). The fake ConductorOne runs
//! every request the operator sends and every `200` it answers through [`C1Spec`], so a
//! field, path, mask or enum value the real API would not know fails the test that sent
//! or served it.
//!
//! Beyond the JSON Schemas the document states some protobuf rules only in prose, and
//! these are checked too:
//! - objects are closed: ConductorOne decodes with protojson, which refuses unknown
//!   fields, so every object without `additionalProperties` gets `false`;
//! - "This message contains a oneof named …": at most one listed field is set;
//! - `updateMask` paths are lowerCamelCase and, where the operation's description says
//!   "Editable paths: …", among those; elsewhere they name writable fields of the entity;
//! - `readOnly` fields are not sent.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
};

use serde_json::{Value, json};

/// Where the vendor document lives relative to the repository, or `ACCESSPLANE_C1_OPENAPI`.
pub fn spec_path() -> PathBuf {
    match std::env::var_os("ACCESSPLANE_C1_OPENAPI") {
        Some(path) => path.into(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/upstream/specs/conductorone-openapi.yaml"),
    }
}

/// The document, parsed once per test process; `None` (and one `skipped:` line) without it.
pub fn spec() -> Option<&'static C1Spec> {
    static SPEC: OnceLock<Option<C1Spec>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = spec_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(C1Spec::parse(&text)),
            Err(e) if std::env::var_os("ACCESSPLANE_REQUIRE_C1_OPENAPI").is_some() => {
                panic!(
                    "ACCESSPLANE_REQUIRE_C1_OPENAPI is set but {} cannot be read: {e}",
                    path.display()
                )
            }
            Err(e) => {
                // Straight to stderr, past the test harness's capture: one line per run.
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: ConductorOne conformance checks: {} ({e}; see docs/src/development.md)",
                    path.display()
                );
                None
            }
        }
    })
    .as_ref()
}

/// The operations and schemas of the document, with the schema validators compiled on
/// first use.
pub struct C1Spec {
    operations: Vec<Operation>,
    /// `components.schemas`, every object closed (see the module comment).
    schemas: Value,
    token_path: String,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

struct Operation {
    method: String,
    /// e.g. `/api/v1/apps/{app_id}/entitlements/{id}`.
    template: String,
    id: String,
    query: Vec<String>,
    /// Schema names (`components.schemas` keys) of the JSON request body and `200` body.
    request: Option<String>,
    response: Option<String>,
    /// snake_case paths from "Editable paths: …" in the description, when it has them.
    editable: Option<Vec<String>>,
}

const SCHEMA_PREFIX: &str = "#/components/schemas/";

impl C1Spec {
    /// Parses the YAML document. Panics when it is not an OpenAPI document with `paths`.
    pub fn parse(text: &str) -> Self {
        let doc: Value = serde_yaml::from_str(text).expect("the ConductorOne OpenAPI document");
        let mut operations = vec![];
        for (template, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().into_iter().flatten() {
                operations.push(Operation::parse(template, method, op));
            }
        }
        let mut schemas = doc["components"]["schemas"].clone();
        close_objects(&mut schemas);
        let token_path =
            doc["components"]["securitySchemes"]["oauth"]["flows"]["clientCredentials"]["tokenUrl"]
                .as_str()
                .unwrap_or("/auth/v1/token")
                .to_string();
        Self {
            operations,
            schemas,
            token_path,
            validators: Mutex::default(),
        }
    }

    /// Number of declared operations (method and path pairs).
    pub fn operation_count(&self) -> usize {
        self.operations.len()
    }

    /// The operation id `method path` maps to, if any.
    pub fn operation_id(&self, method: &str, path: &str) -> Option<&str> {
        self.operation(method, path).ok().map(|op| op.id.as_str())
    }

    /// Every way a request breaks the document; empty when it conforms. `body` is the
    /// parsed JSON body (`None`: no body). The token exchange is form-encoded and not an
    /// operation: only its method and path are checked.
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        body: Option<&Value>,
    ) -> Vec<String> {
        if path == self.token_path {
            return match method {
                "POST" => vec![],
                _ => vec![format!("{method} {path}: the token endpoint takes POST")],
            };
        }
        let op = match self.operation(method, path) {
            Ok(op) => op,
            Err(e) => return vec![e],
        };
        let at = format!("{method} {path} ({})", op.id);
        let mut errors = vec![];
        for (name, _) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if !op.query.iter().any(|q| *q == name) {
                errors.push(format!("{at}: query parameter {name:?} is not declared"));
            }
        }
        match (&op.request, body) {
            (None, Some(_)) => errors.push(format!("{at}: sends a body; the operation takes none")),
            (Some(schema), None) => errors.push(format!(
                "{at}: sends no body; the operation takes a {schema}"
            )),
            (Some(schema), Some(body)) => {
                let mut found = self.validate(schema, body);
                found.extend(self.proto_rules(schema, body, "", Direction::Request));
                found.extend(self.mask_rules(op, schema, body));
                errors.extend(found.into_iter().map(|e| format!("{at}: request {e}")));
            }
            (None, None) => {}
        }
        errors
    }

    /// Every way a `200` body breaks the operation's response schema.
    pub fn check_response(&self, method: &str, path: &str, body: &Value) -> Vec<String> {
        if path == self.token_path {
            return vec![];
        }
        let op = match self.operation(method, path) {
            Ok(op) => op,
            Err(e) => return vec![e],
        };
        let Some(schema) = &op.response else {
            return vec![];
        };
        let mut found = self.validate(schema, body);
        found.extend(self.proto_rules(schema, body, "", Direction::Response));
        let at = format!("{method} {path} ({})", op.id);
        found
            .into_iter()
            .map(|e| format!("{at}: response {e}"))
            .collect()
    }

    /// The operation for `method` and `path`; among templates that match, the one with
    /// the most literal segments (`/connectors/create` before `/connectors/{id}`).
    fn operation(&self, method: &str, path: &str) -> Result<&Operation, String> {
        let matching = self.operations.iter().filter_map(|op| {
            let literals = template_match(&op.template, path)?;
            Some((op, literals))
        });
        let matching: Vec<(&Operation, usize)> = matching.collect();
        let best = matching
            .iter()
            .filter(|(op, _)| op.method.eq_ignore_ascii_case(method))
            .max_by_key(|(_, literals)| *literals);
        if let Some((op, _)) = best {
            return Ok(op);
        }
        let mut methods: Vec<&str> = matching.iter().map(|(op, _)| op.method.as_str()).collect();
        methods.sort();
        methods.dedup();
        Err(match methods.is_empty() {
            true => format!("{method} {path}: no operation declares this path"),
            false => format!(
                "{method} {path}: no {method} operation on this path (declared: {})",
                methods.join(", ")
            ),
        })
    }

    /// JSON Schema validation against the named (closed) schema.
    fn validate(&self, schema: &str, value: &Value) -> Vec<String> {
        let validator = self.validator(schema);
        validator
            .iter_errors(value)
            .map(|e| format!("{}: {e}", pointer_or_root(e.instance_path().as_str())))
            .collect()
    }

    fn validator(&self, schema: &str) -> Arc<jsonschema::Validator> {
        let mut cache = self.validators.lock().unwrap_or_else(|p| p.into_inner());
        let compiled = cache.entry(schema.to_string()).or_insert_with(|| {
            let root = json!({
                "$ref": format!("{SCHEMA_PREFIX}{}", pointer_escape(schema)),
                "components": {"schemas": self.schemas},
            });
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .with_format("int64", is_integer_text)
                .with_format("uint64", is_integer_text)
                .with_format("duration", is_proto_duration)
                .build(&root)
                .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"));
            Arc::new(validator)
        });
        compiled.clone()
    }

    /// The schema a named component or an inline `$ref`/nullable `oneOf` stands for.
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        if let Some(name) = schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix(SCHEMA_PREFIX))
        {
            return self.resolve(&self.schemas[name]);
        }
        let arms = schema["oneOf"].as_array().into_iter().flatten();
        let mut non_null = arms.filter(|arm| arm["type"] != "null");
        match (non_null.next(), non_null.next()) {
            (Some(only), None) => self.resolve(only),
            _ => schema,
        }
    }

    /// The rules protobuf puts on messages that the schemas state only in prose: at most
    /// one field of each oneof, and (in requests) no `readOnly` field. Walks nested
    /// messages and lists of them.
    fn proto_rules(
        &self,
        schema_name: &str,
        value: &Value,
        at: &str,
        direction: Direction,
    ) -> Vec<String> {
        let mut errors = vec![];
        self.walk(
            &self.schemas[schema_name],
            value,
            at,
            direction,
            &mut errors,
        );
        errors
    }

    fn walk(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        direction: Direction,
        errors: &mut Vec<String>,
    ) {
        let schema = self.resolve(schema);
        match value {
            Value::Object(fields) => {
                for (oneof, members) in oneofs(schema) {
                    let set: Vec<&str> = members
                        .iter()
                        .map(String::as_str)
                        .filter(|m| fields.get(*m).is_some_and(|v| !v.is_null()))
                        .collect();
                    if set.len() > 1 {
                        errors.push(format!(
                            "{}: sets {} of oneof {oneof}; at most one may be set",
                            pointer_or_root(at),
                            set.join(" and ")
                        ));
                    }
                }
                let empty = serde_json::Map::new();
                let properties = schema["properties"].as_object().unwrap_or(&empty);
                // A map's values (`additionalProperties` a schema) are messages too.
                let values = Some(&schema["additionalProperties"]).filter(|v| v.is_object());
                for (name, field) in fields {
                    let Some(declared) = properties.get(name).or(values) else {
                        continue; // the schema validation names undeclared fields
                    };
                    let here = format!("{at}/{name}");
                    if direction == Direction::Request && self.read_only(declared) {
                        errors.push(format!("{here}: is readOnly and must not be sent"));
                    }
                    self.walk(declared, field, &here, direction, errors);
                }
            }
            Value::Array(items) => {
                let item = &schema["items"];
                for (i, v) in items.iter().enumerate() {
                    self.walk(item, v, &format!("{at}/{i}"), direction, errors);
                }
            }
            _ => {}
        }
    }

    fn read_only(&self, field: &Value) -> bool {
        field["readOnly"] == true || self.resolve(field)["readOnly"] == true
    }

    /// `updateMask`: lowerCamelCase paths, each editable: listed in the operation's
    /// description when it lists them, else a declared, writable field of the entity the
    /// request carries beside the mask.
    fn mask_rules(&self, op: &Operation, schema: &str, body: &Value) -> Vec<String> {
        let Some(mask) = body.get("updateMask").and_then(Value::as_str) else {
            return vec![];
        };
        let request = &self.schemas[schema];
        let entity = body.as_object().into_iter().flatten().find_map(|(key, v)| {
            let masked = key != "updateMask" && key != "expandMask" && v.is_object();
            masked.then(|| self.resolve(&request["properties"][key]))
        });
        let mut errors = vec![];
        for path in mask.split(',').map(str::trim) {
            let bad = |why: String| format!("/updateMask: path {path:?} {why}");
            if !is_lower_camel_path(path) {
                errors.push(bad("is not lowerCamelCase".into()));
                continue;
            }
            if let Some(editable) = &op.editable {
                if !editable.contains(&snake_case(path)) {
                    errors.push(bad(format!(
                        "is not editable (the operation lists: {})",
                        editable.join(", ")
                    )));
                }
                continue;
            }
            match entity.map(|e| self.field_at(e, path)) {
                Some(Some(field)) if self.read_only(field) => {
                    errors.push(bad("names a readOnly field".into()))
                }
                Some(Some(_)) => {}
                _ => errors.push(bad("names no field of the updated entity".into())),
            }
        }
        errors
    }

    /// The declared field a dotted mask path names, walking nested messages.
    fn field_at<'a>(&'a self, entity: &'a Value, path: &str) -> Option<&'a Value> {
        let mut schema = entity;
        let mut field = None;
        for part in path.split('.') {
            let declared = self.resolve(schema)["properties"].get(part)?;
            field = Some(declared);
            schema = declared;
        }
        field
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

impl Operation {
    fn parse(template: &str, method: &str, op: &Value) -> Self {
        let schema_of = |content: &Value| {
            content["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix(SCHEMA_PREFIX))
                .map(str::to_string)
        };
        let params = op["parameters"].as_array().into_iter().flatten();
        let query = params.filter(|p| p["in"] == "query");
        let description = op["description"].as_str().unwrap_or_default();
        Self {
            method: method.to_ascii_uppercase(),
            template: template.to_string(),
            id: op["operationId"].as_str().unwrap_or_default().to_string(),
            query: query
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect(),
            request: schema_of(&op["requestBody"]),
            response: schema_of(&op["responses"]["200"]),
            editable: editable_paths(description),
        }
    }
}

/// "… Editable paths: display_name, description. tool must include id …" → the listed
/// paths (the sentence may wrap: whitespace is normalised first).
fn editable_paths(description: &str) -> Option<Vec<String>> {
    let text = description.split_whitespace().collect::<Vec<_>>().join(" ");
    let start = text.to_ascii_lowercase().find("editable paths:")? + "editable paths:".len();
    let list = text[start..].split('.').next().unwrap_or_default();
    let paths = list.split(',').map(|p| p.trim().to_string());
    Some(paths.filter(|p| !p.is_empty()).collect())
}

/// The oneof groups a message's description declares: (name, member fields).
fn oneofs(schema: &Value) -> Vec<(String, Vec<String>)> {
    const HEAD: &str = "This message contains a oneof named ";
    let description = schema["description"].as_str().unwrap_or_default();
    let mut groups = vec![];
    for block in description.split(HEAD).skip(1) {
        let name = block
            .split(['.', ' '])
            .next()
            .unwrap_or_default()
            .to_string();
        let members = block
            .lines()
            .skip(1)
            .map(str::trim)
            .take_while(|l| l.starts_with("- "))
            .map(|l| l.trim_start_matches("- ").to_string());
        groups.push((name, members.collect()));
    }
    groups
}

/// Closes every object schema that does not say what else it takes: protojson refuses
/// unknown fields. `additionalProperties` already set (an `Any`, a map) is kept.
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let is_object = match map.get("type") {
                Some(Value::String(t)) => t == "object",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
                _ => false,
            };
            if is_object && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// The number of literal segments when `path` fits `template`, else `None`.
fn template_match(template: &str, path: &str) -> Option<usize> {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    if t.len() != p.len() {
        return None;
    }
    let mut literals = 0;
    for (t, p) in t.iter().zip(&p) {
        if t.starts_with('{') && t.ends_with('}') {
            if p.is_empty() {
                return None;
            }
        } else if t == p {
            literals += 1;
        } else {
            return None;
        }
    }
    Some(literals)
}

/// `displayName`, `provisionPolicy.manual`: letters and digits, starting lower case.
fn is_lower_camel_path(path: &str) -> bool {
    path.split('.').all(|part| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_alphanumeric())
    })
}

/// `displayName` → `display_name` (dots kept).
fn snake_case(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// protojson writes int64/uint64 as decimal strings.
fn is_integer_text(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// protojson's Duration: seconds with up to nine fractional digits and an `s`.
fn is_proto_duration(s: &str) -> bool {
    let Some(number) = s.strip_suffix('s') else {
        return false;
    };
    let number = number.strip_prefix('-').unwrap_or(number);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    is_integer_text(whole) && fraction.len() <= 9 && is_integer_text(fraction)
}

fn pointer_escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn pointer_or_root(at: &str) -> &str {
    if at.is_empty() { "(body)" } else { at }
}
