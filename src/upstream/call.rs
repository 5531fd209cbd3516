//! One request to an upstream API, as the providers describe it and the client sends it
//! (and `accessplane plan` prints it).

use reqwest::Method;
use secrecy::SecretString;

/// Whether a call may be repeated after the server might have acted on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryMode {
    /// Repeating it is harmless (reads, replace-all updates, deletes).
    Idempotent,
    /// Repeating it may duplicate its effect (creates): retried only when the
    /// request provably was not applied (429, connect failures, token errors).
    NonIdempotent,
}

/// One logical upstream call (possibly several HTTP attempts). Its `Debug` leaves the
/// body out: a body may carry secrets (a connector config).
#[derive(Clone)]
pub struct Call {
    /// Operation name for errors, metrics and logs (`get_access_profile`, ...).
    pub operation: &'static str,
    /// HTTP method.
    pub method: Method,
    /// Path appended to the base URL's path; percent-encoded by the caller.
    pub path: String,
    /// Query parameters (encoded by the client).
    pub query: Vec<(String, String)>,
    /// JSON request body.
    pub body: Option<serde_json::Value>,
    /// Retry safety.
    pub retry: RetryMode,
    /// Values the body carries that must not come back in an error message (see
    /// [`Call::redacting`]).
    pub redact: Vec<SecretString>,
    /// Error statuses the caller takes as an answer (see [`Call::answered_by`]).
    pub answers: Vec<u16>,
    /// Whether the call only reads: every GET, and a POST marked [`Call::reads`].
    pub reads: bool,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("operation", &self.operation)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("body", &self.body.as_ref().map(|_| "<omitted>"))
            .field("retry", &self.retry)
            .finish()
    }
}

impl Call {
    /// A call with no query or body; POST defaults to non-idempotent, others to idempotent.
    pub fn new(method: Method, operation: &'static str, path: impl Into<String>) -> Self {
        let reads = method == Method::GET;
        let retry = if method == Method::POST {
            RetryMode::NonIdempotent
        } else {
            RetryMode::Idempotent
        };
        Self {
            operation,
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            retry,
            redact: Vec::new(),
            answers: Vec::new(),
            reads,
        }
    }

    /// A GET call.
    pub fn get(operation: &'static str, path: impl Into<String>) -> Self {
        Self::new(Method::GET, operation, path)
    }

    /// A POST call (non-idempotent unless marked [`Call::idempotent`]).
    pub fn post(operation: &'static str, path: impl Into<String>) -> Self {
        Self::new(Method::POST, operation, path)
    }

    /// A PUT call.
    pub fn put(operation: &'static str, path: impl Into<String>) -> Self {
        Self::new(Method::PUT, operation, path)
    }

    /// A DELETE call.
    pub fn delete(operation: &'static str, path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, operation, path)
    }

    /// Adds a query parameter.
    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Sets the JSON body.
    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Secret values sent in the body: an upstream that echoes them in an error body gets
    /// them replaced by `[redacted]` before the error is logged or shown anywhere.
    pub fn redacting(mut self, secrets: Vec<SecretString>) -> Self {
        self.redact = secrets;
        self
    }

    /// An error status that is an answer to this call, not a failure to retry: returned at
    /// once (e.g. the 409 an Instaclustr create gets when the object exists already).
    pub fn answered_by(mut self, status: u16) -> Self {
        self.answers.push(status);
        self
    }

    /// Marks the call as unsafe to repeat after an ambiguous failure.
    pub fn non_idempotent(mut self) -> Self {
        self.retry = RetryMode::NonIdempotent;
        self
    }

    /// Marks the call as safe to repeat (e.g. a C1 update, which is a POST).
    pub fn idempotent(mut self) -> Self {
        self.retry = RetryMode::Idempotent;
        self
    }

    /// Marks a POST that only reads (a ConductorOne search): a read-only client sends it.
    /// Safe to repeat.
    pub fn reads(mut self) -> Self {
        self.reads = true;
        self.retry = RetryMode::Idempotent;
        self
    }
}
