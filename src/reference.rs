//! The field reference (`accessplane docs`): one Markdown page per kind, rendered from
//! the CRD schemas of [`kinds::all_crds`], and an index. The pages are committed in
//! `docs/src/reference/`; a test fails when they differ from what this renders.
//!
//! Fields come in the schema's order (its properties are a sorted map: alphabetical).
//! CEL rules (`x-kubernetes-validations`) are shown next to the field they apply to: a
//! rule with a `fieldPath` belongs to that field, not to the object declaring it. A
//! field with a rule that compares with `oldSelf` is marked immutable.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, JSONSchemaProps,
    JSONSchemaPropsOrArray, JSONSchemaPropsOrBool, ValidationRule,
};

use crate::kinds;

/// The command that regenerates the committed pages.
pub const REGENERATE: &str = "cargo run -- docs --dir docs/src/reference";

/// The index page's file name.
pub const INDEX: &str = "README.md";

/// Every page as `(file name, Markdown)`: one per CRD in [`kinds::all_crds`]'s order,
/// then the index [`INDEX`].
pub fn pages() -> Vec<(String, String)> {
    let crds: Vec<CustomResourceDefinition> =
        kinds::all_crds().into_iter().map(|(_, crd)| crd).collect();
    let mut pages: Vec<(String, String)> = crds
        .iter()
        .map(|crd| (file_name(&crd.spec.names.kind), render(crd)))
        .collect();
    pages.push((INDEX.to_string(), index(&crds)));
    pages
}

/// Writes [`pages`] into `dir` (created if missing).
pub fn write_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, text) in pages() {
        std::fs::write(dir.join(file), text)?;
    }
    Ok(())
}

/// `<kind in kebab case>.md`, e.g. `mcp-toolset.md` for `McpToolset`.
pub fn file_name(kind: &str) -> String {
    let chars: Vec<char> = kind.chars().collect();
    let mut name = String::new();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let after_lower = chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit();
            let acronym_end =
                chars[i - 1].is_uppercase() && chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if after_lower || acronym_end {
                name.push('-');
            }
        }
        name.extend(c.to_lowercase());
    }
    format!("{name}.md")
}

/// The index: one line per kind, linking its page.
pub fn index(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::from("# Field reference\n\n");
    out.push_str(&generated_note());
    out.push_str(
        "Every field of every kind of the `accessplane.io` API, generated from the CRD \
         schemas (`crds/`): type, whether it is required, allowed values, limits and the \
         validation rules the API server enforces.\n\n",
    );
    for crd in crds {
        let kind = &crd.spec.names.kind;
        let summary = version(crd)
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.description.as_deref())
            .map(|d| format!(": {}", one_line(d)))
            .unwrap_or_default();
        out.push_str(&format!("- [{kind}]({}){summary}\n", file_name(kind)));
    }
    out
}

/// One kind's page.
pub fn render(crd: &CustomResourceDefinition) -> String {
    let names = &crd.spec.names;
    let mut out = format!("# {} field reference\n\n", names.kind);
    out.push_str(&generated_note());
    let version = version(crd);
    let mut about = vec![
        format!("**Group:** `{}`", crd.spec.group),
        format!(
            "**Version:** `{}`",
            version.map(|v| v.name.as_str()).unwrap_or("")
        ),
        format!("**Scope:** {}", crd.spec.scope),
        format!("**Plural:** `{}`", names.plural),
    ];
    if let Some(short) = names.short_names.as_ref().filter(|s| !s.is_empty()) {
        let short: Vec<String> = short.iter().map(|s| code(s)).collect();
        about.push(format!("**Short names:** {}", short.join(", ")));
    }
    out.push_str(&about.join(" · "));
    out.push_str("\n\n");
    let Some(root) = version
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
    else {
        return out;
    };
    if let Some(description) = &root.description {
        out.push_str(&format!("{}\n\n", text(description)));
    }
    for (name, schema) in root.properties.iter().flatten() {
        if matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let mut fields = vec![];
        collect(name, schema, Some(is_required(root, name)), &mut fields);
        place_field_path_rules(&mut fields);
        out.push_str(&format!("## {name}\n\n"));
        out.push_str("| Field | Type | Required | Description | Validation |\n");
        out.push_str("|---|---|---|---|---|\n");
        for field in &fields {
            out.push_str(&field.row());
        }
        out.push('\n');
    }
    out
}

fn generated_note() -> String {
    format!("<!-- Generated by `accessplane docs`; do not edit. Regenerate: `{REGENERATE}` -->\n\n")
}

/// The storage version (the first one if none is marked).
fn version(crd: &CustomResourceDefinition) -> Option<&CustomResourceDefinitionVersion> {
    let versions = &crd.spec.versions;
    versions.iter().find(|v| v.storage).or(versions.first())
}

fn is_required(parent: &JSONSchemaProps, name: &str) -> bool {
    parent.required.iter().flatten().any(|r| r == name)
}

/// One row: a field, an array's items (`path[]`) or a map's values (`path.<key>`).
struct Field<'a> {
    path: String,
    schema: &'a JSONSchemaProps,
    /// `None` for items and map values (always present when their container is).
    required: Option<bool>,
    /// The rules that apply to it: its own, and its parents' that name it in `fieldPath`.
    rules: Vec<&'a ValidationRule>,
}

/// `schema` at `path` and everything below it, depth first, in the schema's order.
fn collect<'a>(
    path: &str,
    schema: &'a JSONSchemaProps,
    required: Option<bool>,
    fields: &mut Vec<Field<'a>>,
) {
    fields.push(Field {
        path: path.to_string(),
        schema,
        required,
        rules: schema.x_kubernetes_validations.iter().flatten().collect(),
    });
    for (name, child) in schema.properties.iter().flatten() {
        collect(
            &format!("{path}.{name}"),
            child,
            Some(is_required(schema, name)),
            fields,
        );
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &schema.items {
        let path = format!("{path}[]");
        if worth_a_row(items) {
            collect(&path, items, None, fields);
        } else {
            collect_children(&path, items, fields);
        }
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
        let path = format!("{path}.<key>");
        if worth_a_row(values) {
            collect(&path, values, None, fields);
        } else {
            collect_children(&path, values, fields);
        }
    }
}

/// The rows below an item or map value schema that gets no row of its own.
fn collect_children<'a>(path: &str, schema: &'a JSONSchemaProps, fields: &mut Vec<Field<'a>>) {
    let start = fields.len();
    collect(path, schema, None, fields);
    fields.remove(start);
}

/// Whether an array's items or a map's values say more than their container's type does.
fn worth_a_row(schema: &JSONSchemaProps) -> bool {
    schema.description.is_some()
        || schema.enum_.is_some()
        || schema.default.is_some()
        || schema.x_kubernetes_validations.is_some()
        || !constraints(schema).is_empty()
}

/// Moves each rule with a `fieldPath` to the field it names (kept where it is, when no
/// row has that path).
fn place_field_path_rules(fields: &mut [Field<'_>]) {
    let targets: Vec<Vec<Option<usize>>> = fields
        .iter()
        .map(|field| {
            field
                .rules
                .iter()
                .map(|rule| {
                    let field_path = rule.field_path.as_deref().filter(|p| !p.is_empty())?;
                    let target = format!("{}{field_path}", field.path);
                    fields.iter().position(|f| f.path == target)
                })
                .collect()
        })
        .collect();
    let mut moved = vec![];
    for (field, targets) in fields.iter_mut().zip(targets) {
        let rules = std::mem::take(&mut field.rules);
        for (rule, target) in rules.into_iter().zip(targets) {
            match target {
                Some(to) => moved.push((to, rule)),
                None => field.rules.push(rule),
            }
        }
    }
    for (to, rule) in moved {
        fields[to].rules.push(rule);
    }
}

impl Field<'_> {
    fn immutable(&self) -> bool {
        self.rules.iter().any(|r| r.rule.contains("oldSelf"))
    }

    fn row(&self) -> String {
        let required = match self.required {
            Some(true) => "required",
            Some(false) => "optional",
            None => "",
        };
        let required = match (self.immutable(), required) {
            (false, r) => r.to_string(),
            (true, "") => "immutable".to_string(),
            (true, r) => format!("{r}, **immutable**"),
        };
        let cells = [
            code(&self.path),
            type_name(self.schema),
            required,
            self.description(),
            self.validation(),
        ];
        format!("| {} |\n", cells.map(|c| cell(&c)).join(" | "))
    }

    fn description(&self) -> String {
        let schema = self.schema;
        let mut parts = vec![];
        if let Some(description) = &schema.description {
            parts.push(text(description));
        }
        if let Some(values) = &schema.enum_ {
            let values: Vec<String> = values.iter().map(|v| code(&json(&v.0))).collect();
            parts.push(format!("One of: {}.", values.join(", ")));
        }
        if let Some(default) = &schema.default {
            parts.push(format!("Default: {}.", code(&json(&default.0))));
        }
        parts.join(" ")
    }

    fn validation(&self) -> String {
        let mut lines = constraints(self.schema);
        for rule in &self.rules {
            let message = rule
                .message
                .as_deref()
                .map(str::to_string)
                .or_else(|| {
                    rule.message_expression
                        .as_deref()
                        .map(|e| format!("(message: {})", code(e)))
                })
                .unwrap_or_else(|| "Must hold".to_string());
            lines.push(format!("{}: {}", one_line(&message), code(&rule.rule)));
        }
        lines.join("<br>")
    }
}

/// The type, with its format: `string (date-time)`, `[]object`, `map[string]string`.
fn type_name(schema: &JSONSchemaProps) -> String {
    if schema.x_kubernetes_int_or_string == Some(true) {
        return "integer or string".to_string();
    }
    let base = match schema.type_.as_deref() {
        Some("array") => match &schema.items {
            Some(JSONSchemaPropsOrArray::Schema(items)) => format!("[]{}", type_name(items)),
            _ => "array".to_string(),
        },
        Some("object") => match &schema.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(values)) => {
                format!("map[string]{}", type_name(values))
            }
            _ if schema.x_kubernetes_preserve_unknown_fields == Some(true) => {
                "object (any fields)".to_string()
            }
            _ => "object".to_string(),
        },
        Some(other) => other.to_string(),
        None if schema.x_kubernetes_preserve_unknown_fields == Some(true) => "any".to_string(),
        None => String::new(),
    };
    match &schema.format {
        Some(format) => format!("{base} ({format})"),
        None => base,
    }
}

/// The schema's limits other than rules: lengths, pattern, range, counts.
fn constraints(schema: &JSONSchemaProps) -> Vec<String> {
    let mut out = vec![];
    if let Some(range) = range(
        schema.min_length.map(|n| n.to_string()),
        schema.max_length.map(|n| n.to_string()),
    ) {
        out.push(format!("Length {range}"));
    }
    if let Some(pattern) = &schema.pattern {
        out.push(format!("Pattern {}", code(pattern)));
    }
    let minimum = schema.minimum.map(|n| {
        let op = if schema.exclusive_minimum == Some(true) {
            ">"
        } else {
            "≥"
        };
        format!("{op} {}", number(n))
    });
    let maximum = schema.maximum.map(|n| {
        let op = if schema.exclusive_maximum == Some(true) {
            "<"
        } else {
            "≤"
        };
        format!("{op} {}", number(n))
    });
    match (minimum, maximum) {
        (Some(min), Some(max)) => out.push(format!("{min} and {max}")),
        (Some(bound), None) | (None, Some(bound)) => out.push(bound),
        (None, None) => {}
    }
    if let Some(range) = range(
        schema.min_items.map(|n| n.to_string()),
        schema.max_items.map(|n| n.to_string()),
    ) {
        out.push(format!("Items {range}"));
    }
    if schema.unique_items == Some(true) {
        out.push("Items unique".to_string());
    }
    if let Some(range) = range(
        schema.min_properties.map(|n| n.to_string()),
        schema.max_properties.map(|n| n.to_string()),
    ) {
        out.push(format!("Entries {range}"));
    }
    out
}

/// `1–128`, `≥ 1` or `≤ 128`.
fn range(min: Option<String>, max: Option<String>) -> Option<String> {
    match (min, max) {
        (Some(min), Some(max)) => Some(format!("{min}–{max}")),
        (Some(min), None) => Some(format!("≥ {min}")),
        (None, Some(max)) => Some(format!("≤ {max}")),
        (None, None) => None,
    }
}

/// `10000` rather than `10000.0` for whole numbers.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A description as Markdown text: wrapped lines joined, paragraphs kept apart.
fn text(description: &str) -> String {
    description
        .split("\n\n")
        .map(one_line)
        .collect::<Vec<_>>()
        .join("<br><br>")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` as a code span, fenced with more backticks than it contains in a row.
fn code(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    if longest == 0 {
        format!("{fence}{text}{fence}")
    } else {
        format!("{fence} {text} {fence}")
    }
}

/// A table cell: `|` escaped (also inside code spans, as GitHub and mdBook read tables).
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests;
