//! What `accessplane plan` prints: one entry per resource, as text (coloured on a
//! terminal), markdown (a pull-request comment) or JSON (for CI bots; the shape below is
//! stable: fields are only ever added), and the exit code of
//! `terraform plan -detailed-exitcode` (0 no changes, 2 changes, 1 error).

use std::fmt::Write as _;

use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::Value;

use crate::engine::plan::FieldChange;
use crate::upstream::Call;

/// The version of the JSON document (`"formatVersion"`); bumped only on a breaking change.
pub const FORMAT_VERSION: &str = "1";

/// What the reconciler would do with one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Adopt,
    NoOp,
    Delete,
    Orphan,
    Blocked,
}

impl Action {
    /// Whether the action changes anything upstream.
    pub fn changes(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Update | Self::Adopt | Self::Delete
        )
    }

    fn word(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Adopt => "adopt",
            Self::NoOp => "no-op",
            Self::Delete => "delete",
            Self::Orphan => "orphan",
            Self::Blocked => "blocked",
        }
    }

    /// ANSI colour of the action word on a terminal.
    fn colour(self) -> &'static str {
        match self {
            Self::Create => "32",
            Self::Update | Self::Adopt => "33",
            Self::Delete => "31",
            Self::Blocked => "1;31",
            Self::NoOp | Self::Orphan => "2",
        }
    }
}

/// A request the reconciler would send, with every secret value it carries replaced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedRequest {
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// Marks a secret value in a planned body (Connector configuration).
pub const REDACTED: &str = "(secret value)";

impl From<&Call> for PlannedRequest {
    fn from(call: &Call) -> Self {
        let mut body = call.body.clone();
        if let Some(body) = &mut body {
            redact(body, &call.redact);
        }
        Self {
            method: call.method.to_string(),
            path: format!("/{}", call.path.trim_start_matches('/')),
            body,
        }
    }
}

/// `field: <upstream now> → <spec>` (`(hidden)` for a value not shown).
fn change_line(change: &FieldChange) -> String {
    let shown = |value: &Option<Value>| {
        value
            .as_ref()
            .map_or_else(|| "(hidden)".to_string(), Value::to_string)
    };
    format!(
        "{}: {} → {}",
        change.field,
        shown(&change.from),
        shown(&change.to)
    )
}

fn redact(value: &mut Value, secrets: &[secrecy::SecretString]) {
    match value {
        Value::String(text) if secrets.iter().any(|s| s.expose_secret() == text) => {
            *text = REDACTED.into();
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| redact(v, secrets)),
        _ => {}
    }
}

/// One resource of the plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Where the manifest came from (`file#document`; empty for `--prune` entries).
    pub source: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub action: Action,
    /// The upstream object's id, when it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Managed fields that differ (update, adopt), in the order they would be sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// The same fields with their upstream value now (`from`) and the spec's (`to`),
    /// each left out where not shown (a Connector's configuration never is).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// The requests, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<PlannedRequest>,
    /// For `blocked` (and a note on others): the reason and message the resource's
    /// `Ready` condition would show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Entry {
    /// The entry of the resource `kind` `namespace/name` from `source`, with nothing
    /// planned yet besides `action`.
    pub fn new(
        source: String,
        kind: String,
        namespace: String,
        name: String,
        action: Action,
    ) -> Self {
        Self {
            source,
            kind,
            namespace,
            name,
            action,
            id: None,
            fields: vec![],
            changes: vec![],
            requests: vec![],
            reason: None,
            message: None,
        }
    }

    /// `reason: message`, or the message alone.
    fn note(&self) -> Option<String> {
        match (&self.reason, &self.message) {
            (Some(reason), Some(message)) => Some(format!("{reason}: {message}")),
            (None, Some(message)) => Some(message.clone()),
            (Some(reason), None) => Some(reason.clone()),
            (None, None) => None,
        }
    }
}

/// The whole plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub entries: Vec<Entry>,
}

/// Output formats of `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text { colour: bool },
    Json,
    Markdown,
}

impl Report {
    /// `terraform plan -detailed-exitcode`: 2 when something would change, 1 when a
    /// resource is blocked, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.entries.iter().any(|e| e.action == Action::Blocked) {
            1
        } else if self.entries.iter().any(|e| e.action.changes()) {
            2
        } else {
            0
        }
    }

    fn count(&self, action: Action) -> usize {
        self.entries.iter().filter(|e| e.action == action).count()
    }

    fn summary(&self) -> String {
        format!(
            "{} to create, {} to update, {} to adopt, {} to delete, {} to orphan, {} unchanged, {} blocked",
            self.count(Action::Create),
            self.count(Action::Update),
            self.count(Action::Adopt),
            self.count(Action::Delete),
            self.count(Action::Orphan),
            self.count(Action::NoOp),
            self.count(Action::Blocked),
        )
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => self.json(),
            Format::Text { colour } => self.text(colour),
            Format::Markdown => self.markdown(),
        }
    }

    fn json(&self) -> String {
        let summary: serde_json::Map<String, Value> = [
            Action::Create,
            Action::Update,
            Action::Adopt,
            Action::Delete,
            Action::Orphan,
            Action::NoOp,
            Action::Blocked,
        ]
        .into_iter()
        .map(|a| (a.word().to_string(), Value::from(self.count(a))))
        .collect();
        let doc = serde_json::json!({
            "formatVersion": FORMAT_VERSION,
            "entries": self.entries,
            "summary": summary,
            "exitCode": self.exit_code(),
        });
        serde_json::to_string_pretty(&doc).expect("a plan serializes") + "\n"
    }

    fn text(&self, colour: bool) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            let word = entry.action.word();
            let word = if colour {
                format!("\x1b[{}m{word:>7}\x1b[0m", entry.action.colour())
            } else {
                format!("{word:>7}")
            };
            let _ = write!(
                out,
                "{word} {}/{}/{}",
                entry.kind, entry.namespace, entry.name
            );
            if let Some(id) = &entry.id {
                let _ = write!(out, " ({id})");
            }
            out.push('\n');
            if !entry.fields.is_empty() {
                let _ = writeln!(out, "        fields: {}", entry.fields.join(", "));
            }
            for change in &entry.changes {
                let _ = writeln!(out, "          {}", change_line(change));
            }
            for request in &entry.requests {
                let _ = writeln!(out, "        {} {}", request.method, request.path);
                if let Some(body) = &request.body {
                    let _ = writeln!(out, "          {body}");
                }
            }
            if let Some(note) = entry.note() {
                let _ = writeln!(out, "        {note}");
            }
        }
        let _ = writeln!(out, "\nPlan: {}.", self.summary());
        out
    }

    fn markdown(&self) -> String {
        let mut out = String::from(
            "### accessplane plan\n\n| action | resource | details |\n|---|---|---|\n",
        );
        for entry in &self.entries {
            let mut details = vec![];
            if !entry.fields.is_empty() {
                details.push(format!("fields: {}", entry.fields.join(", ")));
            }
            for change in &entry.changes {
                details.push(format!("`{}`", change_line(change)));
            }
            for request in &entry.requests {
                details.push(format!("`{} {}`", request.method, request.path));
            }
            if let Some(note) = entry.note() {
                details.push(note);
            }
            let _ = writeln!(
                out,
                "| {} | `{}/{}/{}` | {} |",
                entry.action.word(),
                entry.kind,
                entry.namespace,
                entry.name,
                details.join("<br>").replace('|', "\\|")
            );
        }
        let _ = writeln!(out, "\n**Plan:** {}.", self.summary());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use serde_json::json;

    fn entry(action: Action) -> Entry {
        Entry::new(
            "a.yaml#1".into(),
            "AccessProfile".into(),
            "team".into(),
            "oncall".into(),
            action,
        )
    }

    #[test]
    fn exit_codes_follow_terraform_detailed_exitcode() {
        let plan = |actions: &[Action]| Report {
            entries: actions.iter().map(|a| entry(*a)).collect(),
        };
        assert_eq!(plan(&[]).exit_code(), 0);
        assert_eq!(plan(&[Action::NoOp, Action::Orphan]).exit_code(), 0);
        assert_eq!(plan(&[Action::NoOp, Action::Update]).exit_code(), 2);
        assert_eq!(plan(&[Action::Delete]).exit_code(), 2);
        assert_eq!(plan(&[Action::Create, Action::Blocked]).exit_code(), 1);
    }

    #[test]
    fn secret_values_never_reach_a_planned_body() {
        let call = Call::post("update_connector", "apps/a/connectors/c")
            .json(json!({"connector": {"config": {"token": "hunter22", "org": "acme"}}}))
            .redacting(vec![SecretString::from("hunter22")]);
        let planned = PlannedRequest::from(&call);
        assert_eq!(planned.path, "/apps/a/connectors/c");
        assert_eq!(
            planned.body.unwrap()["connector"]["config"],
            json!({"token": REDACTED, "org": "acme"})
        );
    }

    /// The JSON document CI bots parse: its shape only ever grows.
    #[test]
    fn json_shape_is_stable() {
        let mut update = entry(Action::Update);
        update.id = Some("ap-1".into());
        update.fields = vec!["description".into()];
        update.changes = vec![FieldChange {
            field: "description",
            from: Some(json!("old")),
            to: Some(json!("new")),
        }];
        update.requests = vec![PlannedRequest {
            method: "PUT".into(),
            path: "/v2/access-profiles/ap-1".into(),
            body: Some(json!({"description": "new"})),
        }];
        let mut blocked = entry(Action::Blocked);
        blocked.name = "other".into();
        blocked.reason = Some("ConnectionNotAllowed".into());
        blocked.message = Some("ClusterConnection shared does not allow namespace team".into());
        let plan = Report {
            entries: vec![update, blocked],
        };
        let text = plan.render(Format::Text { colour: false });
        assert!(text.contains("description: \"old\" → \"new\""), "{text}");
        let doc: Value = serde_json::from_str(&plan.render(Format::Json)).unwrap();
        assert_eq!(
            doc,
            json!({
                "formatVersion": "1",
                "entries": [
                    {"source": "a.yaml#1", "kind": "AccessProfile", "namespace": "team", "name": "oncall",
                     "action": "update", "id": "ap-1", "fields": ["description"],
                     "changes": [{"field": "description", "from": "old", "to": "new"}],
                     "requests": [{"method": "PUT", "path": "/v2/access-profiles/ap-1", "body": {"description": "new"}}]},
                    {"source": "a.yaml#1", "kind": "AccessProfile", "namespace": "team", "name": "other",
                     "action": "blocked", "reason": "ConnectionNotAllowed",
                     "message": "ClusterConnection shared does not allow namespace team"},
                ],
                "summary": {"create": 0, "update": 1, "adopt": 0, "delete": 0, "orphan": 0, "no-op": 0, "blocked": 1},
                "exitCode": 1,
            })
        );
    }

    #[test]
    fn text_is_coloured_only_when_asked_and_markdown_escapes_pipes() {
        let mut created = entry(Action::Create);
        created.message = Some("a | b".into());
        created.reason = Some("Note".into());
        let plan = Report {
            entries: vec![created],
        };
        let plain = plan.render(Format::Text { colour: false });
        assert!(
            plain.starts_with(" create AccessProfile/team/oncall\n"),
            "{plain}"
        );
        assert!(!plain.contains('\x1b'));
        assert!(
            plan.render(Format::Text { colour: true })
                .contains("\x1b[32m")
        );
        assert!(plain.ends_with("Plan: 1 to create, 0 to update, 0 to adopt, 0 to delete, 0 to orphan, 0 unchanged, 0 blocked.\n"));
        let markdown = plan.render(Format::Markdown);
        assert!(
            markdown.contains("| create | `AccessProfile/team/oncall` | Note: a \\| b |"),
            "{markdown}"
        );
    }
}
