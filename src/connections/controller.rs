//! The `Connection` controller: turns a Connection and its Secret into a verified
//! upstream client in the [`Connections`] registry, and keeps a Connection while
//! managed resources still use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::Connections;
use crate::api::connection::{Connection, ConnectionStatus, UpstreamKind};
use crate::api::{AccessProfile, AppEntitlement, Connector, McpToolset, PersonaAccessControl};
use crate::engine::clock::Clock;
use crate::engine::conditions::{self, ConditionValue, READY};
use crate::engine::events::{EventPublisher, Note};
use crate::engine::kube_ops;
use crate::engine::requeue::Timing;
use crate::providers::{self, ConnectError, SecretData};
use crate::upstream::{ErrorClass, UpstreamError, UpstreamMetrics};

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
}

/// Errors that abort a Connection reconcile (everything else becomes a condition).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("kubernetes API: {context}: {source}")]
    Kube {
        context: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

fn kube_err(context: &'static str) -> impl FnOnce(kube::Error) -> ConnectionError {
    move |source| ConnectionError::Kube { context, source }
}

/// What makes a built client stale: the Connection's spec or its Secret changed.
#[derive(Clone, PartialEq, Eq)]
struct Fingerprint {
    generation: Option<i64>,
    secret_version: Option<String>,
}

/// Shared state of the Connection controller.
pub struct ConnectionContext {
    pub kube: kube::Client,
    pub connections: Arc<Connections>,
    pub metrics: Arc<UpstreamMetrics>,
    pub events: EventPublisher,
    pub clock: Arc<dyn Clock>,
    pub timing: Timing,
    verified: Mutex<HashMap<(String, String), Fingerprint>>,
}

impl ConnectionContext {
    pub fn new(
        kube: kube::Client,
        connections: Arc<Connections>,
        metrics: Arc<UpstreamMetrics>,
        events: EventPublisher,
        clock: Arc<dyn Clock>,
        timing: Timing,
    ) -> Self {
        Self {
            kube,
            connections,
            metrics,
            events,
            clock,
            timing,
            verified: Mutex::default(),
        }
    }
}

/// Reconciles one Connection.
pub async fn reconcile(
    conn: Arc<Connection>,
    cx: Arc<ConnectionContext>,
) -> Result<Action, ConnectionError> {
    let ns = conn.namespace().unwrap_or_default();
    let name = conn.name_any();
    let api: Api<Connection> = Api::namespaced(cx.kube.clone(), &ns);
    let key = (ns.clone(), name.clone());

    if conn.meta().deletion_timestamp.is_some() {
        let users = users_of(&cx.kube, &ns, &name).await?;
        if users.is_empty() {
            cx.connections.remove(&ns, &name);
            cx.verified.lock().unwrap().remove(&key);
            kube_ops::remove_finalizer(&api, &*conn).await?;
            return Ok(Action::await_change());
        }
        let message = format!(
            "still used by {}; delete those resources (or point them at another Connection) first",
            users.join(", ")
        );
        write_ready(
            &api,
            &conn,
            &cx,
            ConditionValue::new(false, reason::IN_USE, message),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let conn = if kube_ops::has_finalizer(&*conn) {
        (*conn).clone()
    } else {
        kube_ops::add_finalizer(&api, &*conn).await?
    };

    let outcome = connect(&conn, &cx).await;
    let (ready, requeue) = match outcome {
        Ok(()) => (
            ConditionValue::new(true, reason::VERIFIED, "credentials verified"),
            cx.timing.resync_for(None),
        ),
        Err((reason, message, requeue)) => {
            cx.connections
                .set_not_ready(&ns, &name, format!("{reason}: {message}"));
            cx.verified.lock().unwrap().remove(&key);
            (ConditionValue::new(false, reason, message), requeue)
        }
    };
    write_ready(&api, &conn, &cx, ready).await?;
    Ok(Action::requeue(requeue))
}

/// Requeue delay after a Kubernetes API error.
pub fn error_policy(
    _conn: Arc<Connection>,
    error: &ConnectionError,
    _cx: Arc<ConnectionContext>,
) -> Action {
    tracing::warn!(%error, "connection reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

type Failure = (&'static str, String, Duration);

/// Builds and verifies the client unless the one in the registry is still current.
async fn connect(conn: &Connection, cx: &ConnectionContext) -> Result<(), Failure> {
    let ns = conn.namespace().unwrap_or_default();
    let name = conn.name_any();
    let Some(kind) = conn.spec.upstream_kind() else {
        let message = "exactly one of spec.conductorOne, spec.serval, spec.instaclustr must be set"
            .to_string();
        return Err((reason::INVALID_SPEC, message, cx.timing.terminal_retry));
    };
    let secret_name = secret_ref(conn, kind);
    let secrets: Api<Secret> = Api::namespaced(cx.kube.clone(), &ns);
    let secret = match secrets.get_opt(&secret_name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            let message = format!("Secret {ns}/{secret_name} does not exist");
            return Err((reason::SECRET_NOT_FOUND, message, Duration::from_secs(60)));
        }
        Err(e) => {
            return Err((
                reason::SECRET_NOT_FOUND,
                format!("cannot read Secret {ns}/{secret_name}: {e}"),
                Duration::from_secs(30),
            ));
        }
    };
    let fingerprint = Fingerprint {
        generation: conn.meta().generation,
        secret_version: secret.resource_version(),
    };
    let key = (ns.clone(), name.clone());
    if cx.verified.lock().unwrap().get(&key) == Some(&fingerprint)
        && cx.connections.client(&ns, &name).is_some()
    {
        return Ok(());
    }

    let data = SecretData::new(secret.data.clone().unwrap_or_default());
    let (kind, client) =
        providers::connect(&conn.spec, &data, cx.metrics.clone()).map_err(|e| {
            let reason = match e {
                ConnectError::SecretKeyMissing { .. } => reason::SECRET_KEY_MISSING,
                ConnectError::SecretKeyInvalid { .. } => reason::SECRET_KEY_INVALID,
                _ => reason::INVALID_SPEC,
            };
            (
                reason,
                format!("Secret {ns}/{secret_name}: {e}"),
                Duration::from_secs(300),
            )
        })?;
    providers::verify(kind, &client)
        .await
        .map_err(|e| classify(&e))?;
    tracing::info!(namespace = %ns, name = %name, provider = kind.field(), "connection verified");
    // A new client also means fresh tokens: a rotated secret takes effect at once.
    cx.connections.set_ready(&ns, &name, kind, client);
    cx.verified.lock().unwrap().insert(key, fingerprint);
    Ok(())
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

fn secret_ref(conn: &Connection, kind: UpstreamKind) -> String {
    let spec = &conn.spec;
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

/// The Secret a Connection reads, for the Secret → Connection watch mapping.
pub fn credentials_secret(conn: &Connection) -> Option<String> {
    conn.spec.upstream_kind().map(|kind| secret_ref(conn, kind))
}

async fn write_ready(
    api: &Api<Connection>,
    conn: &Connection,
    cx: &ConnectionContext,
    ready: ConditionValue,
) -> Result<(), ConnectionError> {
    let mut status: ConnectionStatus = conn.status.clone().unwrap_or_default();
    let previous =
        conditions::get(&status.conditions, READY).map(|c| (c.status.clone(), c.reason.clone()));
    status.observed_generation = conn.meta().generation;
    status.provider = conn.spec.upstream_kind().map(|k| k.field().to_string());
    conditions::set(
        &mut status.conditions,
        READY,
        &ready,
        conn.meta().generation,
        cx.clock.now(),
    );
    let flipped = previous
        != Some((
            (if ready.status { "True" } else { "False" }).into(),
            ready.reason.into(),
        ));
    if flipped {
        let note = Note {
            warning: !ready.status,
            reason: ready.reason,
            text: ready.message.clone(),
        };
        cx.events.publish(&conn.object_ref(&()), note).await;
    }
    kube_ops::write_status(api, conn, json!(status)).await?;
    Ok(())
}

/// Managed resources in `ns` whose `connectionRef` names this Connection.
async fn users_of(
    kube: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Vec<String>, ConnectionError> {
    let mut users = vec![];
    users.extend(users_of_kind::<AccessProfile>(kube, ns, name).await?);
    users.extend(users_of_kind::<AppEntitlement>(kube, ns, name).await?);
    users.extend(users_of_kind::<Connector>(kube, ns, name).await?);
    users.extend(users_of_kind::<McpToolset>(kube, ns, name).await?);
    users.extend(users_of_kind::<PersonaAccessControl>(kube, ns, name).await?);
    Ok(users)
}

async fn users_of_kind<K>(
    kube: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Vec<String>, ConnectionError>
where
    K: crate::engine::ManagedObject,
{
    let api: Api<K> = Api::namespaced(kube.clone(), ns);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(kube_err("listing users of a Connection"))?;
    Ok(list
        .items
        .iter()
        .filter(|o| o.managed().connection_ref.name == name)
        .map(|o| format!("{}/{}", K::kind(&()), o.name_any()))
        .collect())
}
