//! Where `accessplane plan` gets its upstream clients: the Connection (or
//! ClusterConnection) a resource names and its Secret, from the input when it defines
//! them, else from the cluster. Clients are built and verified exactly as the operator's
//! Connection controller does, and judged as its registry does (the same functions, in
//! [`crate::connections::resolution`]), then made read-only. A resource whose Connection
//! would not work is blocked with the reason and message it would show.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use serde_json::Value;

use super::manifests::Loaded;
use crate::api::cluster_connection::ClusterConnectionSpec;
use crate::api::connection::{ConnectionSpec, UpstreamKind};
use crate::api::envelope::{ConnectionKind, ConnectionRef};
use crate::api::{ClusterConnection, Connection};
use crate::base::conditions::reason;
use crate::connections::Unusable;
use crate::connections::resolution::{self, Credentials, SecretsScope};
use crate::saas::SecretData;
use crate::upstream::{UpstreamClient, UpstreamMetrics};

use crate::api::GROUP_VERSION;

/// Why a resource's upstream cannot be read: the `Ready` reason and message the
/// resource would show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub reason: &'static str,
    pub message: String,
}

impl Blocked {
    fn waiting(message: String) -> Self {
        Self {
            reason: reason::WAITING_FOR_DEPENDENCY,
            message,
        }
    }

    /// A Connection or ClusterConnection that is in neither place.
    fn absent(label: &str) -> Self {
        Self::waiting(format!(
            "{label} does not exist (neither in the input nor in the cluster)"
        ))
    }
}

/// The reasons the engine shows for each (a Connection to wait for, or a refusal).
impl From<Unusable> for Blocked {
    fn from(unusable: Unusable) -> Self {
        match unusable {
            Unusable::NotReady(message) => Self::waiting(message),
            Unusable::NotAllowed(message) => Self {
                reason: reason::CONNECTION_NOT_ALLOWED,
                message,
            },
        }
    }
}

/// Clients by Connection, built once per plan.
pub struct PlanConnections<'a> {
    input: &'a [Loaded],
    cluster: Option<kube::Client>,
    /// Namespace of input objects that name none (as kubectl's current namespace).
    default_namespace: String,
    /// Where ClusterConnections' Secrets live (the plan may read any namespace's).
    credentials: Credentials,
    metrics: Arc<UpstreamMetrics>,
    built: HashMap<(String, String), Result<(UpstreamKind, UpstreamClient), Blocked>>,
}

impl<'a> PlanConnections<'a> {
    pub fn new(
        input: &'a [Loaded],
        cluster: Option<kube::Client>,
        default_namespace: &str,
        credentials_namespace: &str,
    ) -> Self {
        Self {
            input,
            cluster,
            default_namespace: default_namespace.into(),
            credentials: Credentials {
                namespace: credentials_namespace.into(),
                scope: SecretsScope::Cluster,
            },
            metrics: Arc::default(),
            built: HashMap::new(),
        }
    }

    /// The read-only client for a resource in `namespace` naming `reference`.
    pub async fn resolve(
        &mut self,
        namespace: &str,
        reference: &ConnectionRef,
        want: UpstreamKind,
    ) -> Result<UpstreamClient, Blocked> {
        let name = reference.name.to_string();
        let kind = reference.kind();
        let home = match kind {
            ConnectionKind::Connection => namespace.to_string(),
            ConnectionKind::ClusterConnection => {
                self.check_allowed(namespace, &name).await?;
                String::new()
            }
        };
        let label = resolution::label(kind, &home, &name);
        let key = (home.clone(), name.clone());
        if !self.built.contains_key(&key) {
            let built = self.build(kind, &home, &name, &label).await;
            self.built.insert(key.clone(), built);
        }
        match &self.built[&key] {
            Err(blocked) => Err(blocked.clone()),
            Ok((kind, _)) if *kind != want => {
                Err(resolution::wrong_upstream(&label, *kind, want).into())
            }
            Ok((_, client)) => Ok(client.clone()),
        }
    }

    /// A ClusterConnection's `allowedScopes` against the resource's team, app or gateway
    /// cluster (`scope`), as the operator checks it.
    pub async fn check_scope(&self, reference: &ConnectionRef, scope: &str) -> Result<(), Blocked> {
        if reference.kind() != ConnectionKind::ClusterConnection {
            return Ok(());
        }
        let Some(spec) = self.cluster_connection(&reference.name).await? else {
            return Ok(());
        };
        let allowed: Vec<String> = spec.allowed_scopes.iter().map(|s| s.0.clone()).collect();
        resolution::check_scope(&reference.name, &allowed, scope).map_err(|message| Blocked {
            reason: reason::SCOPE_NOT_ALLOWED,
            message,
        })
    }

    /// A ClusterConnection's `allowedNamespaces` against the namespace's labels.
    async fn check_allowed(&self, namespace: &str, name: &str) -> Result<(), Blocked> {
        let Some(spec) = self.cluster_connection(name).await? else {
            let label = resolution::label(ConnectionKind::ClusterConnection, "", name);
            return Err(Blocked::absent(&label));
        };
        let labels = self.namespace_labels(namespace).await?;
        resolution::check_allowed(name, &spec.allowed_namespaces, namespace, &labels)
            .map_err(Blocked::from)
    }

    /// The client the Connection (`kind`, in `home`) and its Secret make, as the
    /// Connection controller builds and verifies it.
    async fn build(
        &self,
        kind: ConnectionKind,
        home: &str,
        name: &str,
        label: &str,
    ) -> Result<(UpstreamKind, UpstreamClient), Blocked> {
        let not_ready = |reason: &str, message: &str| -> Blocked {
            resolution::not_ready(label, &resolution::why(reason, message)).into()
        };
        let spec = match kind {
            ConnectionKind::Connection => self.connection(home, name).await?,
            ConnectionKind::ClusterConnection => {
                self.cluster_connection(name).await?.map(|c| c.connection)
            }
        };
        let spec = spec.ok_or_else(|| Blocked::absent(label))?;
        let secret = resolution::secret_of(&spec, kind, home, &self.credentials)
            .map_err(|(reason, message)| not_ready(reason, &message))?;
        let Some(data) = self.secret(&secret.namespace, &secret.name).await? else {
            let (reason, message, _) = resolution::missing_secret(&secret);
            return Err(not_ready(reason, &message));
        };
        let (upstream, client) =
            resolution::client_from(&spec, &data, self.metrics.clone(), &secret)
                .map_err(|(reason, message, _)| not_ready(reason, &message))?;
        let client = client.read_only();
        resolution::verified(upstream, &client)
            .await
            .map_err(|(reason, message, _)| not_ready(reason, &message))?;
        Ok((upstream, client))
    }

    /// An object of the input: `kind` and name, in `namespace` (`None`: cluster-scoped).
    fn input_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<&Value> {
        self.input.iter().map(|l| &l.object).find(|o| {
            o["apiVersion"] == api_version
                && o["kind"] == kind
                && o["metadata"]["name"] == name
                && namespace.is_none_or(|ns| {
                    o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or(&self.default_namespace)
                        == ns
                })
        })
    }

    async fn connection(&self, ns: &str, name: &str) -> Result<Option<ConnectionSpec>, Blocked> {
        if let Some(obj) = self.input_object(GROUP_VERSION, "Connection", Some(ns), name) {
            return parse(obj, &format!("Connection {ns}/{name}"))
                .map(|c: Connection| Some(c.spec));
        }
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let found = Api::<Connection>::namespaced(cluster.clone(), ns)
            .get_opt(name)
            .await;
        Ok(cluster_read(found, &format!("Connection {ns}/{name}"))?.map(|c| c.spec))
    }

    async fn cluster_connection(
        &self,
        name: &str,
    ) -> Result<Option<ClusterConnectionSpec>, Blocked> {
        if let Some(obj) = self.input_object(GROUP_VERSION, "ClusterConnection", None, name) {
            return parse(obj, &format!("ClusterConnection {name}"))
                .map(|c: ClusterConnection| Some(c.spec));
        }
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let found = Api::<ClusterConnection>::all(cluster.clone())
            .get_opt(name)
            .await;
        Ok(cluster_read(found, &format!("ClusterConnection {name}"))?.map(|c| c.spec))
    }

    /// A Secret's data: `data` (base64) and `stringData` of an input Secret, or the
    /// cluster's. Values never leave this function except as [`SecretData`].
    async fn secret(&self, ns: &str, name: &str) -> Result<Option<SecretData>, Blocked> {
        if let Some(obj) = self.input_object("v1", "Secret", Some(ns), name) {
            let mut data = BTreeMap::new();
            for (key, value) in obj["data"].as_object().into_iter().flatten() {
                let decoded = value
                    .as_str()
                    .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                    .ok_or_else(|| {
                        Blocked::waiting(format!("Secret {ns}/{name}: data.{key} is not base64"))
                    })?;
                data.insert(key.clone(), ByteString(decoded));
            }
            for (key, value) in obj["stringData"].as_object().into_iter().flatten() {
                let text = value.as_str().unwrap_or_default().as_bytes().to_vec();
                data.insert(key.clone(), ByteString(text));
            }
            return Ok(Some(SecretData::new(data)));
        }
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let found = Api::<Secret>::namespaced(cluster.clone(), ns)
            .get_opt(name)
            .await;
        Ok(cluster_read(found, &format!("Secret {ns}/{name}"))?
            .map(|s| SecretData::new(s.data.unwrap_or_default())))
    }

    /// A namespace's labels: an input Namespace's, else the cluster's, else none.
    async fn namespace_labels(&self, ns: &str) -> Result<BTreeMap<String, String>, Blocked> {
        let from_input = self.input_object("v1", "Namespace", None, ns);
        if let Some(obj) = from_input {
            return Ok(
                serde_json::from_value(obj["metadata"]["labels"].clone()).unwrap_or_default()
            );
        }
        let Some(cluster) = &self.cluster else {
            return Ok(BTreeMap::new());
        };
        let found = Api::<Namespace>::all(cluster.clone()).get_opt(ns).await;
        Ok(cluster_read(found, &format!("Namespace {ns}"))?
            .and_then(|n| n.metadata.labels)
            .unwrap_or_default())
    }
}

fn parse<T: serde::de::DeserializeOwned>(obj: &Value, label: &str) -> Result<T, Blocked> {
    serde_json::from_value(obj.clone())
        .map_err(|e| Blocked::waiting(format!("{label} in the input is not valid: {e}")))
}

fn cluster_read<T>(
    found: Result<Option<T>, kube::Error>,
    label: &str,
) -> Result<Option<T>, Blocked> {
    found.map_err(|e| Blocked::waiting(format!("cannot read {label} from the cluster: {e}")))
}
