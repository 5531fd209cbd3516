//! How a Connection becomes usable, written once for the operator (the Connection
//! controller and the registry) and for `accessplane plan`: where its Secret is, the
//! upstream client its spec and Secret make, and why a resource cannot use it, in the
//! words both show. Nothing here reads the cluster: callers fetch and pass in.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::Unusable;
use crate::api::cluster_connection::AllowedNamespaces;
use crate::api::connection::{ConnectionSpec, UpstreamKind};
use crate::api::envelope::ConnectionKind;
use crate::saas::{self, ConnectError, SecretData};
use crate::upstream::{ErrorClass, UpstreamClient, UpstreamError, UpstreamMetrics};

/// `Ready` reasons of a Connection.
pub mod reason {
    pub const VERIFIED: &str = "Verified";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    pub const SECRET_KEY_INVALID: &str = "SecretKeyInvalid";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
    pub const UNREACHABLE: &str = "Unreachable";
    pub const IN_USE: &str = "InUse";
    pub const NAMESPACED_CONNECTIONS_DISABLED: &str = "NamespacedConnectionsDisabled";
}

/// Where the operator may read credentials Secrets (`--secrets-scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SecretsScope {
    /// In every watched namespace: namespaced Connections and ClusterConnections.
    #[default]
    Cluster,
    /// Only in the credentials namespace: ClusterConnections only.
    CredentialsNamespace,
}

/// Where credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Namespace of every ClusterConnection's Secret (`--credentials-namespace`).
    pub namespace: String,
    pub scope: SecretsScope,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            namespace: "accessplane-system".into(),
            scope: SecretsScope::Cluster,
        }
    }
}

/// A Connection's `Ready=False` reason, message and when to look again.
pub type Failure = (&'static str, String, Duration);

/// The Secret a Connection reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How a Connection is named in messages (`home`: its namespace; none for a
/// ClusterConnection).
pub fn label(kind: ConnectionKind, home: &str, name: &str) -> String {
    match kind {
        ConnectionKind::Connection => format!("Connection {home}/{name}"),
        ConnectionKind::ClusterConnection => format!("ClusterConnection {name}"),
    }
}

/// Where the Secret of a Connection (of `kind`, in `home`) is; or, for a spec no Secret
/// can make a client from, its `Ready` reason and message (only a change fixes it).
pub fn secret_of(
    spec: &ConnectionSpec,
    kind: ConnectionKind,
    home: &str,
    credentials: &Credentials,
) -> Result<SecretRef, (&'static str, String)> {
    let Some(upstream) = spec.upstream_kind() else {
        let message = "exactly one of spec.conductorOne, spec.serval, spec.instaclustr must be set"
            .to_string();
        return Err((reason::INVALID_SPEC, message));
    };
    let namespace = match kind {
        ConnectionKind::Connection if credentials.scope == SecretsScope::CredentialsNamespace => {
            let message = format!(
                "this operator reads credentials only from namespace {} (secrets scope credentialsNamespace): use a ClusterConnection that allows namespace {home}",
                credentials.namespace
            );
            return Err((reason::NAMESPACED_CONNECTIONS_DISABLED, message));
        }
        ConnectionKind::Connection => home.to_string(),
        ConnectionKind::ClusterConnection => credentials.namespace.clone(),
    };
    Ok(SecretRef {
        namespace,
        name: secret_ref(spec, upstream),
    })
}

/// The Connection's Secret does not exist.
pub fn missing_secret(secret: &SecretRef) -> Failure {
    let message = format!("Secret {secret} does not exist");
    (reason::SECRET_NOT_FOUND, message, Duration::from_secs(60))
}

/// The client a Connection's spec and Secret data make (not verified yet); a failure is
/// the `Ready` reason and message the Connection shows.
pub fn client_from(
    spec: &ConnectionSpec,
    data: &SecretData,
    metrics: Arc<UpstreamMetrics>,
    secret: &SecretRef,
) -> Result<(UpstreamKind, UpstreamClient), Failure> {
    saas::connect(spec, data, metrics).map_err(|e| {
        let reason = match e {
            ConnectError::SecretKeyMissing { .. } => reason::SECRET_KEY_MISSING,
            ConnectError::SecretKeyInvalid { .. } => reason::SECRET_KEY_INVALID,
            _ => reason::INVALID_SPEC,
        };
        (
            reason,
            format!("Secret {secret}: {e}"),
            Duration::from_secs(300),
        )
    })
}

/// Proves the client's credentials work (one cheap read), or says why not as the
/// Connection's `Ready` reason and message.
pub async fn verified(kind: UpstreamKind, client: &UpstreamClient) -> Result<(), Failure> {
    saas::verify(kind, client).await.map_err(|e| classify(&e))
}

fn classify(error: &UpstreamError) -> Failure {
    let auth =
        error.class() == ErrorClass::Authentication || matches!(error.status(), Some(401 | 403));
    if auth {
        (
            reason::AUTHENTICATION_FAILED,
            error.to_string(),
            Duration::from_secs(300),
        )
    } else {
        (
            reason::UNREACHABLE,
            error.to_string(),
            Duration::from_secs(30),
        )
    }
}

/// What a Connection that failed tells the resources that name it: its `Ready` reason
/// and message.
pub fn why(reason: &str, message: &str) -> String {
    format!("{reason}: {message}")
}

/// A resource cannot use a Connection that failed (`why`: see [`why`]).
pub fn not_ready(label: &str, why: &str) -> Unusable {
    Unusable::NotReady(format!("{label} is not ready: {why}"))
}

/// A resource cannot use a Connection of another upstream than its kind's (`want`).
pub fn wrong_upstream(label: &str, kind: UpstreamKind, want: UpstreamKind) -> Unusable {
    Unusable::NotReady(format!(
        "{label} points at {}, but this kind needs spec.{}",
        kind.field(),
        want.field()
    ))
}

/// Whether the ClusterConnection `name` (with `rule`) lets a resource in `namespace`
/// (with `labels`) use it.
pub fn check_allowed(
    name: &str,
    rule: &AllowedNamespaces,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Unusable> {
    if rule.allows(namespace, labels) {
        return Ok(());
    }
    Err(Unusable::NotAllowed(format!(
        "ClusterConnection {name} does not allow namespace {namespace} (spec.allowedNamespaces); nothing is sent upstream until it does"
    )))
}

fn secret_ref(spec: &ConnectionSpec, kind: UpstreamKind) -> String {
    match kind {
        UpstreamKind::ConductorOne => spec
            .conductor_one
            .as_ref()
            .map(|c| c.credentials_secret_ref.name.clone()),
        UpstreamKind::Serval => spec
            .serval
            .as_ref()
            .map(|c| c.credentials_secret_ref.name.clone()),
        UpstreamKind::Instaclustr => spec
            .instaclustr
            .as_ref()
            .map(|c| c.credentials_secret_ref.name.clone()),
    }
    .map(String::from)
    .unwrap_or_default()
}

/// The name of the Secret a Connection spec reads.
pub fn secret_name(spec: &ConnectionSpec) -> Option<String> {
    spec.upstream_kind().map(|kind| secret_ref(spec, kind))
}

/// Whether a resource whose team, app or gateway cluster is `scope` may use the
/// ClusterConnection `name` that allows `allowed` (empty: the whole tenant).
pub fn check_scope(name: &str, allowed: &[String], scope: &str) -> Result<(), String> {
    if allowed.is_empty() || allowed.iter().any(|s| s == scope) {
        return Ok(());
    }
    Err(format!(
        "ClusterConnection {name} allows only the scopes {} (spec.allowedScopes), not {scope}",
        allowed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> ConnectionSpec {
        serde_json::from_value(value).unwrap()
    }

    /// A Connection's Secret is in its namespace, a ClusterConnection's in the
    /// credentials namespace; a spec naming no upstream, or a namespaced Connection where
    /// only the credentials namespace may be read, cannot work.
    #[test]
    fn where_the_secret_is() {
        let serval = spec(json!({"serval": {"credentialsSecretRef": {"name": "s"}}}));
        let credentials = Credentials::default();
        let at = |kind| secret_of(&serval, kind, "team", &credentials).map(|s| s.to_string());
        assert_eq!(at(ConnectionKind::Connection), Ok("team/s".into()));
        assert_eq!(
            at(ConnectionKind::ClusterConnection),
            Ok("accessplane-system/s".into())
        );
        let only_credentials = Credentials {
            scope: SecretsScope::CredentialsNamespace,
            ..credentials.clone()
        };
        let refused = secret_of(
            &serval,
            ConnectionKind::Connection,
            "team",
            &only_credentials,
        );
        assert_eq!(
            refused.map_err(|(reason, _)| reason),
            Err(reason::NAMESPACED_CONNECTIONS_DISABLED)
        );
        let none = secret_of(
            &spec(json!({})),
            ConnectionKind::Connection,
            "team",
            &credentials,
        );
        assert_eq!(
            none.map_err(|(reason, _)| reason),
            Err(reason::INVALID_SPEC)
        );
    }
}
