//! The `Connection` and `ClusterConnection` controller: turns a Connection and its
//! Secret into a verified upstream client in the [`Connections`] registry, and keeps a
//! Connection while managed resources still use it. Both kinds share it through
//! [`ConnectionObject`]; a ClusterConnection reads its Secret from the credentials
//! namespace and also records (and counts) the namespaces it allows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::Connections;
use super::registry::AccessChange;
use super::resolution::{self, Credentials, Failure, reason};
use crate::api::cluster_connection::{AllowedNamespaces, ClusterConnection};
use crate::api::condition::Condition;
use crate::api::connection::{Connection, ConnectionSpec};
use crate::api::envelope::ConnectionKind;
use crate::base::KubeError;
use crate::base::clock::Clock;
use crate::base::conditions::{self, ConditionValue, READY};
use crate::base::events::{EventPublisher, Note};
use crate::base::jitter::jitter;
use crate::base::kube_ops;
use crate::saas::SecretData;
use crate::upstream::UpstreamMetrics;

/// What the controller needs of a `Connection` or a `ClusterConnection`.
pub trait ConnectionObject:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: ConnectionKind;
    fn spec(&self) -> &ConnectionSpec;
    fn conditions(&self) -> &[Condition];
    /// The namespace the registry files it under: its own, or "" when cluster-scoped.
    fn home(&self) -> String;
    /// The API of its kind where this object lives.
    fn api(&self, kube: &kube::Client) -> Api<Self>;
    /// Who may use it, for a ClusterConnection.
    fn allowed_namespaces(&self) -> Option<&AllowedNamespaces> {
        None
    }
    /// The slice of the tenant its users may touch, for a ClusterConnection (empty: all).
    fn allowed_scopes(&self) -> Vec<String> {
        vec![]
    }
    /// Status fields besides generation, provider and conditions.
    fn status_fields(&self, _connections: &Connections) -> Map<String, Value> {
        Map::new()
    }
    /// How it is named in messages.
    fn label(&self) -> String {
        resolution::label(Self::KIND, &self.home(), &self.name_any())
    }
}

impl ConnectionObject for Connection {
    const KIND: ConnectionKind = ConnectionKind::Connection;
    fn spec(&self) -> &ConnectionSpec {
        &self.spec
    }
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
    fn home(&self) -> String {
        self.namespace().unwrap_or_default()
    }
    fn api(&self, kube: &kube::Client) -> Api<Self> {
        Api::namespaced(kube.clone(), &self.home())
    }
}

impl ConnectionObject for ClusterConnection {
    const KIND: ConnectionKind = ConnectionKind::ClusterConnection;
    fn spec(&self) -> &ConnectionSpec {
        &self.spec.connection
    }
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
    fn home(&self) -> String {
        String::new()
    }
    fn api(&self, kube: &kube::Client) -> Api<Self> {
        Api::all(kube.clone())
    }
    fn allowed_namespaces(&self) -> Option<&AllowedNamespaces> {
        Some(&self.spec.allowed_namespaces)
    }
    fn allowed_scopes(&self) -> Vec<String> {
        self.spec
            .allowed_scopes
            .iter()
            .map(|s| s.0.clone())
            .collect()
    }
    fn status_fields(&self, connections: &Connections) -> Map<String, Value> {
        // Until the namespace cache is full, the count shown stays as it was.
        let count = connections
            .count_allowed(&self.spec.allowed_namespaces)
            .or_else(|| self.status.as_ref()?.allowed_namespaces);
        count
            .map(|count| ("allowedNamespaces".to_string(), json!(count)))
            .into_iter()
            .collect()
    }
}

/// When the controller looks at a Connection again.
#[derive(Clone, Debug)]
pub struct Recheck {
    /// After it was verified (±10 % jitter, so Connections verified together do not all
    /// call their upstreams again together).
    pub resync: Duration,
    /// After a spec that cannot work as it is (a change of it is seen at once anyway).
    pub terminal_retry: Duration,
}

/// Lists the managed resources whose `connectionRef` names a Connection (`kind`, `home`
/// "" for a ClusterConnection, `name`): `Kind/name`, or `Kind namespace/name` for a
/// ClusterConnection. The runtime hands it in, as the managed kinds sit above this module.
pub type Users = for<'a> fn(
    &'a kube::Client,
    ConnectionKind,
    &'a str,
    &'a str,
) -> BoxFuture<'a, Result<Vec<String>, KubeError>>;

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
    pub recheck: Recheck,
    pub credentials: Credentials,
    /// Who still uses a Connection that is being deleted.
    pub users: Users,
    verified: Mutex<HashMap<(String, String), Fingerprint>>,
}

impl ConnectionContext {
    // Each argument is a separate piece the runtime (or a test) owns and shares.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kube: kube::Client,
        connections: Arc<Connections>,
        metrics: Arc<UpstreamMetrics>,
        events: EventPublisher,
        clock: Arc<dyn Clock>,
        recheck: Recheck,
        credentials: Credentials,
        users: Users,
    ) -> Self {
        Self {
            kube,
            connections,
            metrics,
            events,
            clock,
            recheck,
            credentials,
            users,
            verified: Mutex::default(),
        }
    }
}

/// Reconciles one Connection or ClusterConnection.
pub async fn reconcile<C: ConnectionObject>(
    conn: Arc<C>,
    cx: Arc<ConnectionContext>,
) -> Result<Action, KubeError> {
    let home = conn.home();
    let name = conn.name_any();
    let api = conn.api(&cx.kube);
    let key = (home.clone(), name.clone());
    let was_ready = cx.connections.is_ready(&home, &name);

    if conn.meta().deletion_timestamp.is_some() {
        let users = (cx.users)(&cx.kube, C::KIND, &home, &name).await?;
        if users.is_empty() {
            cx.connections.remove(&home, &name);
            cx.verified.lock().unwrap().remove(&key);
            announce(&cx, &*conn, true, was_ready);
            kube_ops::remove_finalizer(&api, &*conn).await?;
            return Ok(Action::await_change());
        }
        // Its users' deletions need its client (also after a restart): keep it registered.
        let rule_changed = rules_changed(&cx, &*conn);
        if let Err((reason, message, _)) = connect(&*conn, &cx).await {
            cx.connections
                .set_not_ready(&home, &name, resolution::why(reason, &message));
            cx.verified.lock().unwrap().remove(&key);
        }
        announce(&cx, &*conn, rule_changed, was_ready);
        const SHOWN: usize = 10;
        let mut named = users
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if users.len() > SHOWN {
            named.push_str(&format!(" and {} more", users.len() - SHOWN));
        }
        let message = format!(
            "still used by {named}; delete those resources (or point them at another Connection) first"
        );
        write_ready(
            &api,
            &*conn,
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

    let rule_changed = rules_changed(&cx, &conn);
    let outcome = connect(&conn, &cx).await;
    let (ready, requeue) = match outcome {
        Ok(()) => (
            ConditionValue::new(true, reason::VERIFIED, "credentials verified"),
            jitter(cx.recheck.resync, 0.1),
        ),
        Err((reason, message, requeue)) => {
            cx.connections
                .set_not_ready(&home, &name, resolution::why(reason, &message));
            cx.verified.lock().unwrap().remove(&key);
            (ConditionValue::new(false, reason, message), requeue)
        }
    };
    announce(&cx, &conn, rule_changed, was_ready);
    write_ready(&api, &conn, &cx, ready).await?;
    Ok(Action::requeue(requeue))
}

/// Records who may use a ClusterConnection and which slice of the tenant; true when
/// either changed.
fn rules_changed<C: ConnectionObject>(cx: &ConnectionContext, conn: &C) -> bool {
    let Some(namespaces) = conn.allowed_namespaces() else {
        return false;
    };
    let name = conn.name_any();
    let namespaces_changed = cx.connections.set_allowed(&name, namespaces);
    let scopes_changed = cx.connections.set_scopes(&name, conn.allowed_scopes());
    namespaces_changed || scopes_changed
}

/// Tells the resource controllers that a ClusterConnection's rule or readiness changed
/// (a namespaced Connection's changes reach them through their own watch).
fn announce<C: ConnectionObject>(cx: &ConnectionContext, conn: &C, rule: bool, was_ready: bool) {
    let now_ready = cx.connections.is_ready(&conn.home(), &conn.name_any());
    if C::KIND == ConnectionKind::ClusterConnection && (rule || now_ready != was_ready) {
        cx.connections.announce(AccessChange::ClusterConnection {
            name: conn.name_any(),
            rule,
        });
    }
}

/// Requeue delay after a Kubernetes API error.
pub fn error_policy<C: ConnectionObject>(
    _conn: Arc<C>,
    error: &KubeError,
    _cx: Arc<ConnectionContext>,
) -> Action {
    tracing::warn!(%error, "connection reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

/// Builds and verifies the client unless the one in the registry is still current.
async fn connect<C: ConnectionObject>(conn: &C, cx: &ConnectionContext) -> Result<(), Failure> {
    let home = conn.home();
    let name = conn.name_any();
    let spec = conn.spec();
    let secret_ref = resolution::secret_of(spec, C::KIND, &home, &cx.credentials)
        .map_err(|(reason, message)| (reason, message, cx.recheck.terminal_retry))?;
    let secrets: Api<Secret> = Api::namespaced(cx.kube.clone(), &secret_ref.namespace);
    let secret = match secrets.get_opt(&secret_ref.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(resolution::missing_secret(&secret_ref)),
        Err(e) => {
            return Err((
                reason::SECRET_NOT_FOUND,
                format!("cannot read Secret {secret_ref}: {e}"),
                Duration::from_secs(30),
            ));
        }
    };
    let fingerprint = Fingerprint {
        generation: conn.meta().generation,
        secret_version: secret.resource_version(),
    };
    let key = (home.clone(), name.clone());
    if cx.verified.lock().unwrap().get(&key) == Some(&fingerprint)
        && cx.connections.client(&home, &name).is_some()
    {
        return Ok(());
    }

    let data = SecretData::new(secret.data.clone().unwrap_or_default());
    let (kind, client) = resolution::client_from(spec, &data, cx.metrics.clone(), &secret_ref)?;
    resolution::verified(kind, &client).await?;
    tracing::info!(connection = %conn.label(), provider = kind.field(), "connection verified");
    // A new client also means fresh tokens: a rotated secret takes effect at once.
    cx.connections.set_ready(&home, &name, kind, client);
    cx.verified.lock().unwrap().insert(key, fingerprint);
    Ok(())
}

/// The Secret a Connection reads, for the Secret → Connection watch mapping.
pub fn credentials_secret<C: ConnectionObject>(conn: &C) -> Option<String> {
    resolution::secret_name(conn.spec())
}

async fn write_ready<C: ConnectionObject>(
    api: &Api<C>,
    conn: &C,
    cx: &ConnectionContext,
    ready: ConditionValue,
) -> Result<(), KubeError> {
    let mut conditions = conn.conditions().to_vec();
    let previous =
        conditions::get(&conditions, READY).map(|c| (c.status.clone(), c.reason.clone()));
    conditions::set(
        &mut conditions,
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
    let mut status = Map::new();
    if let Some(generation) = conn.meta().generation {
        status.insert("observedGeneration".into(), json!(generation));
    }
    if let Some(kind) = conn.spec().upstream_kind() {
        status.insert("provider".into(), json!(kind.field()));
    }
    status.extend(conn.status_fields(&cx.connections));
    if !conditions.is_empty() {
        status.insert("conditions".into(), json!(conditions));
    }
    kube_ops::write_status(api, conn, Value::Object(status)).await?;
    Ok(())
}
