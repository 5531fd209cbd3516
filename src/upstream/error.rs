//! Errors of the upstream HTTP layer, their classification and error-body parsing.
//!
//! Nothing in here may ever carry request headers or token-request bodies: only
//! status codes, upstream error messages and transport descriptions.

use std::borrow::Cow;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Longest raw (unstructured) error body kept in a message.
const RAW_BODY_LIMIT: usize = 512;

/// An upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered with a non-2xx status.
    #[error("{provider} {operation}: HTTP {status}{}: {message}", code_suffix(.code))]
    Api {
        provider: &'static str,
        operation: &'static str,
        status: u16,
        code: Option<String>,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No complete response; `sent` means the request may have reached the server.
    #[error("{provider} {operation}: transport error{}: {message}", if *.sent { " (request may have been sent)" } else { "" })]
    Transport {
        provider: &'static str,
        operation: &'static str,
        message: String,
        sent: bool,
    },
    /// The token endpoint refused the credentials (400/401/403).
    #[error("{provider}: token endpoint refused the credentials: {message}")]
    Authentication {
        provider: &'static str,
        message: String,
    },
    /// A 2xx body did not have the expected shape.
    #[error("{provider} {operation}: cannot decode response: {message}")]
    Decode {
        provider: &'static str,
        operation: &'static str,
        message: String,
    },
    /// Retryable failures went on until the attempt or time budget ran out.
    #[error("{provider} {operation}: giving up after {attempts} attempts: {last}")]
    RetriesExhausted {
        provider: &'static str,
        operation: &'static str,
        attempts: u32,
        last: Box<UpstreamError>,
    },
    /// The client was configured wrongly.
    #[error("upstream configuration: {message}")]
    Config { message: String },
    /// A read-only client (`accessplane plan`) was asked to write: a bug, never sent.
    #[error(
        "{provider} {operation}: {method} refused: this client only reads (plan mode); this is a bug"
    )]
    WriteRefused {
        provider: &'static str,
        operation: &'static str,
        method: String,
    },
    /// This replica could not prove it holds the leader-election lease when the write
    /// was due to go ([`crate::fence`]): not sent, not retried.
    #[error("{provider} {operation}: {fenced}")]
    Fenced {
        provider: &'static str,
        operation: &'static str,
        fenced: crate::fence::Fenced,
    },
}

/// How a caller should react to an [`UpstreamError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: try again later (with backoff).
    Retryable,
    /// The spec or permissions must change before a retry can succeed.
    Terminal,
    /// The object does not exist upstream.
    NotFound,
    /// The credentials are not accepted.
    Authentication,
}

impl UpstreamError {
    /// Classifies the error for retry and condition decisions.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Api { status, code, .. } => class_of_status(*status, code.as_deref()),
            Self::Transport { .. } => ErrorClass::Retryable,
            Self::Authentication { .. } => ErrorClass::Authentication,
            Self::Decode { .. }
            | Self::Config { .. }
            | Self::WriteRefused { .. }
            | Self::Fenced { .. } => ErrorClass::Terminal,
            Self::RetriesExhausted { last, .. } => last.class(),
        }
    }

    /// The HTTP status the upstream answered with, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    /// True when the write fence refused the call (this replica may no longer lead).
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Fenced { .. })
    }

    /// True when the upstream said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.class() == ErrorClass::NotFound
    }

    /// How long the upstream asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            Self::RetriesExhausted { last, .. } => last.retry_after(),
            _ => None,
        }
    }

    /// True when a write may have been applied although it failed (an ambiguous create).
    ///
    /// 5xx and 408 may come after the server acted; other 4xx (including 429) are
    /// rejections before any change.
    pub fn may_have_applied(&self) -> bool {
        match self {
            Self::Api { status, .. } => *status >= 500 || *status == 408,
            Self::Transport { sent, .. } => *sent,
            Self::RetriesExhausted { last, .. } => last.may_have_applied(),
            Self::Authentication { .. }
            | Self::Decode { .. }
            | Self::Config { .. }
            | Self::WriteRefused { .. }
            | Self::Fenced { .. } => false,
        }
    }
}

/// Shorter values are not redacted: replacing every "1" or "on" in a message would only
/// garble it, and credentials are longer.
const REDACT_MIN_LEN: usize = 4;

impl UpstreamError {
    /// The error with every occurrence of `secrets` in its messages replaced: an upstream
    /// may echo what it was sent (a rejected connector config) in its error body.
    pub fn redact(mut self, secrets: &[SecretString]) -> Self {
        self.redact_in_place(secrets);
        self
    }

    fn redact_in_place(&mut self, secrets: &[SecretString]) {
        match self {
            Self::Api { message, .. }
            | Self::Transport { message, .. }
            | Self::Authentication { message, .. }
            | Self::Decode { message, .. }
            | Self::Config { message } => {
                for secret in secrets.iter().map(ExposeSecret::expose_secret) {
                    if secret.len() >= REDACT_MIN_LEN && message.contains(secret) {
                        *message = message.replace(secret, "[redacted]");
                    }
                }
            }
            Self::RetriesExhausted { last, .. } => last.redact_in_place(secrets),
            Self::WriteRefused { .. } | Self::Fenced { .. } => {}
        }
    }

    /// The `status` metric label: the HTTP code, or a word when there was none.
    pub(crate) fn status_label(&self) -> Cow<'static, str> {
        match self {
            Self::Api { status, .. } => status.to_string().into(),
            Self::Transport { .. } => "transport".into(),
            Self::Authentication { .. } => "auth_refused".into(),
            Self::Decode { .. } => "decode".into(),
            Self::RetriesExhausted { last, .. } => last.status_label(),
            Self::Config { .. } => "config".into(),
            Self::WriteRefused { .. } => "write_refused".into(),
            Self::Fenced { .. } => "fenced".into(),
        }
    }
}

/// Converts a reqwest failure; only a failure to connect proves nothing was sent.
pub(crate) fn transport_error(
    provider: &'static str,
    operation: &'static str,
    err: &reqwest::Error,
) -> UpstreamError {
    // The source chain says what happened ("connection refused", "timed out"); the
    // URL is left out, the caller's span already names the operation.
    let mut message = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "connect failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    UpstreamError::Transport {
        provider,
        operation,
        message,
        sent: !err.is_connect(),
    }
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_deref().map(|c| format!(" {c}")).unwrap_or_default()
}

fn class_of_status(status: u16, code: Option<&str>) -> ErrorClass {
    match status {
        404 => ErrorClass::NotFound,
        401 => ErrorClass::Authentication,
        // Connect `already_exists` (gRPC code 6) will not go away by retrying;
        // `aborted` and other conflicts are races that can.
        409 if code.is_some_and(is_already_exists) => ErrorClass::Terminal,
        408 | 409 | 429 => ErrorClass::Retryable,
        500..=599 => ErrorClass::Retryable,
        _ => ErrorClass::Terminal,
    }
}

fn is_already_exists(code: &str) -> bool {
    code.eq_ignore_ascii_case("already_exists") || code == "6"
}

/// Extracts `(code, message)` from any known upstream error body shape.
///
/// Understands Connect/ConductorOne `{"code","message"}`, Instaclustr
/// `{"errors":[{"name","message"}]}` and `{"name","message"}`, OAuth
/// `{"error","error_description"}` and legacy `{"error":"..."}`; anything else
/// becomes the raw body text, truncated.
pub fn parse_error_body(body: &[u8]) -> (Option<String>, String) {
    parse_structured_error(body).unwrap_or_else(|| (None, raw_body_text(body)))
}

/// Like [`parse_error_body`] but `None` for bodies of no known shape.
pub(crate) fn parse_structured_error(body: &[u8]) -> Option<(Option<String>, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    structured_from_value(&value)
}

fn structured_from_value(value: &Value) -> Option<(Option<String>, String)> {
    let obj = value.as_object()?;
    let text = |key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };

    if let Some(errors) = obj.get("errors").and_then(Value::as_array) {
        let joined = errors
            .iter()
            .filter_map(|e| {
                let name = e.get("name").and_then(Value::as_str);
                let message = e.get("message").and_then(Value::as_str);
                match (name, message) {
                    (Some(n), Some(m)) => Some(format!("{n}: {m}")),
                    (n, m) => n.or(m).map(str::to_owned),
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        if !joined.is_empty() {
            return Some((None, joined));
        }
    }

    match obj.get("error") {
        // Nested `{"error":{"code","message"}}` (Google style).
        Some(nested @ Value::Object(_)) => return structured_from_value(nested),
        Some(Value::String(error)) => {
            return Some(match text("error_description") {
                Some(description) => (Some(error.clone()), description.to_owned()),
                None => (None, error.clone()),
            });
        }
        _ => {}
    }

    let code = match obj.get("code") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(message) = text("message") {
        let message = match (text("name"), code.is_none()) {
            (Some(name), true) => format!("{name}: {message}"),
            _ => message.to_owned(),
        };
        return Some((code, message));
    }
    // A code without a message still says more than the raw JSON.
    code.map(|c| (Some(c.clone()), c))
}

fn raw_body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(RAW_BODY_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: Option<&str>) -> UpstreamError {
        UpstreamError::Api {
            provider: "test",
            operation: "op",
            status,
            code: code.map(str::to_owned),
            message: "m".into(),
            retry_after: None,
        }
    }

    #[test]
    fn parses_connect_body() {
        let body = br#"{"code":"not_found","message":"profile x not found","detail":"..."}"#;
        assert_eq!(
            parse_error_body(body),
            (Some("not_found".into()), "profile x not found".into())
        );
    }

    #[test]
    fn parses_c1_body_with_numeric_code() {
        let body = br#"{"code":5,"message":"no such entitlement","details":[{"@type":"x"}]}"#;
        assert_eq!(
            parse_error_body(body),
            (Some("5".into()), "no such entitlement".into())
        );
    }

    #[test]
    fn parses_instaclustr_errors_array() {
        let body = br#"{"errors":[{"name":"personaRole","message":"must not be empty"},{"name":"type","message":"invalid"}]}"#;
        assert_eq!(
            parse_error_body(body),
            (None, "personaRole: must not be empty; type: invalid".into())
        );
    }

    #[test]
    fn parses_name_message_and_legacy_and_oauth() {
        assert_eq!(
            parse_error_body(br#"{"name":"NotFound","message":"no cluster"}"#),
            (None, "NotFound: no cluster".into())
        );
        assert_eq!(
            parse_error_body(br#"{"error":"Rate Limit Exceeded"}"#),
            (None, "Rate Limit Exceeded".into())
        );
        assert_eq!(
            parse_error_body(br#"{"error":"invalid_client","error_description":"bad client"}"#),
            (Some("invalid_client".into()), "bad client".into())
        );
    }

    #[test]
    fn falls_back_to_truncated_lossy_raw_body() {
        assert_eq!(
            parse_error_body(b"<html>Bad Gateway</html>\n"),
            (None, "<html>Bad Gateway</html>".into())
        );
        let long = "x".repeat(2000);
        let (_, message) = parse_error_body(long.as_bytes());
        assert_eq!(message.chars().count(), RAW_BODY_LIMIT + 1);
        let (_, message) = parse_error_body(b"bad \xff byte");
        assert_eq!(message, "bad \u{fffd} byte");
        // Valid JSON of an unknown shape is kept raw too.
        assert_eq!(parse_error_body(br#"[1,2]"#), (None, "[1,2]".into()));
    }

    #[test]
    fn classifies_statuses() {
        assert_eq!(api(404, None).class(), ErrorClass::NotFound);
        assert!(api(404, None).is_not_found());
        for s in [400, 403, 422] {
            assert_eq!(api(s, None).class(), ErrorClass::Terminal, "{s}");
        }
        assert_eq!(
            api(409, Some("already_exists")).class(),
            ErrorClass::Terminal
        );
        assert_eq!(api(409, Some("aborted")).class(), ErrorClass::Retryable);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(api(s, None).class(), ErrorClass::Retryable, "{s}");
        }
        assert_eq!(api(401, None).class(), ErrorClass::Authentication);
        let exhausted = UpstreamError::RetriesExhausted {
            provider: "test",
            operation: "op",
            attempts: 4,
            last: Box::new(api(503, None)),
        };
        assert_eq!(exhausted.class(), ErrorClass::Retryable);
        assert_eq!(exhausted.status(), Some(503));
    }

    #[test]
    fn ambiguity() {
        assert!(api(503, None).may_have_applied());
        assert!(!api(429, None).may_have_applied());
        assert!(!api(400, None).may_have_applied());
    }

    #[test]
    fn redaction_reaches_nested_errors_and_spares_short_values() {
        let echoed = UpstreamError::RetriesExhausted {
            provider: "test",
            operation: "update",
            attempts: 3,
            last: Box::new(UpstreamError::Api {
                provider: "test",
                operation: "update",
                status: 503,
                code: None,
                message: "token tok-1234 on 1 org rejected".into(),
                retry_after: None,
            }),
        };
        let secrets = ["tok-1234", "1"].map(SecretString::from).to_vec();
        let shown = echoed.redact(&secrets).to_string();
        assert!(shown.contains("token [redacted] on 1 org"), "{shown}");
        assert!(shown.contains("after 3 attempts"), "{shown}");
    }
}
