//! `accessplane run`: controller wiring, CRD install, metrics/health server, telemetry.

mod changes;
pub mod controllers;
pub mod crds;
pub mod leader;
mod leadership;
pub mod probe;
mod scopes_in_use;
pub mod server;
pub mod state_metrics;
pub mod telemetry;
mod trim;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::join_all;
use kube::api::Api;
use kube::runtime::controller;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};

use crate::api::{ClusterConnection, Connection};
use crate::base::clock::{Clock, SystemClock};
use crate::base::events::{EventPublisher, Reporter};
use crate::connections::controller::ConnectionContext;
use crate::connections::{Connections, Credentials, SecretsScope};
use crate::engine::metrics::ReconcileMetrics;
use crate::engine::requeue::Timing;
use crate::engine::{Engine, ManagedObject, Provider};
use crate::fence::Fence;
use crate::upstream::UpstreamMetrics;
pub use controllers::Shutdown;
use controllers::{Watched, Wired, connection_controller, managed_controller, namespace_watch};
pub use leader::LeaseTiming;
use leadership::Ending;
use scopes_in_use::ScopesInUse;
use server::Readiness;
use state_metrics::StateMetrics;

/// Settings of `accessplane run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Maximum concurrent reconciles per controller.
    pub concurrency: u16,
    /// Requeue timing: resync interval, error backoff, list window (tests shorten them).
    pub timing: Timing,
    /// Address of the metrics and health server.
    pub metrics_addr: SocketAddr,
    /// Apply the bundled CRDs at start-up and wait until they are Established.
    pub install_crds: bool,
    /// Reconcile only while holding this Lease (several replicas: one leader).
    pub leader_election: Option<LeaderElection>,
    /// Where credentials Secrets are read (ClusterConnections' namespace, and whether
    /// namespaced Connections may read their own).
    pub credentials: Credentials,
}

impl Default for RunConfig {
    /// All namespaces, 4 concurrent reconciles per kind, default timing, metrics on :8080,
    /// no CRD install, no leader election.
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 4,
            timing: Timing::default(),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            install_crds: false,
            leader_election: None,
            credentials: Credentials::default(),
        }
    }
}

/// Where the leader-election Lease lives, who this replica is and the Lease's timing.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub timing: LeaseTiming,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    Client(#[source] kube::Error),
    #[error("applying CRD {name}: {source}")]
    CrdInstall {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("waiting for CRDs to be established: {0}")]
    CrdWait(#[source] kube::runtime::wait::Error),
    #[error("CRDs were not established within {0:?}")]
    CrdNotEstablished(Duration),
    #[error("installing signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    #[error("binding the metrics server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics server: {0}")]
    Serve(#[source] std::io::Error),
    #[error("lost the leader-election lease; exiting so that only the new leader writes")]
    LeadershipLost,
}

/// Everything the controllers share.
struct Shared {
    watched: Watched,
    connections: Arc<Connections>,
    events: EventPublisher,
    clock: Arc<dyn Clock>,
    timing: Timing,
    metrics: ReconcileMetrics,
    controller: controller::Config,
    shutdown: Shutdown,
    /// Open while this replica may write (always, without leader election).
    fence: Fence,
    /// Counts from the caches at scrape time.
    state: StateMetrics,
    /// ClusterConnections' scopes in use, counted from the caches.
    scopes: ScopesInUse,
}

impl Shared {
    /// What every controller shares, writing to Kubernetes through `client` (fenced).
    fn new(
        client: &kube::Client,
        config: &RunConfig,
        metrics: ReconcileMetrics,
        shutdown: &Shutdown,
        fence: Fence,
        state: StateMetrics,
    ) -> Self {
        let reporter = Reporter {
            controller: "accessplane".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Self {
            watched: Watched {
                client: client.clone(),
                namespace: config.namespace.clone(),
                cluster_connections: config.namespace.is_none(),
                read_secrets: config.credentials.scope == SecretsScope::Cluster,
            },
            connections: Arc::new(Connections::default()),
            events: EventPublisher::new(client.clone(), reporter, clock.clone()),
            clock,
            timing: config.timing.clone(),
            metrics,
            controller: controller::Config::default().concurrency(config.concurrency),
            shutdown: shutdown.clone(),
            fence,
            state,
            scopes: ScopesInUse::default(),
        }
    }

    /// One controller per managed kind ([`crate::kinds::each_kind`]).
    fn managed_controllers(&self) -> Vec<Wired> {
        struct Controllers<'a>(&'a Shared, Vec<Wired>);
        impl crate::kinds::EachKind for Controllers<'_> {
            fn kind<K, P>(&mut self)
            where
                K: ManagedObject + kube::CustomResourceExt,
                P: Provider<K> + Default,
            {
                let wired = self.0.managed::<K, P>(P::default());
                self.1.push(wired);
            }
        }
        let mut controllers = Controllers(self, vec![]);
        crate::kinds::each_kind(&mut controllers);
        controllers.1
    }

    /// The controller of one managed kind.
    fn managed<K: ManagedObject, P: Provider<K>>(&self, provider: P) -> Wired {
        let engine = Engine::new(
            self.watched.client.clone(),
            provider,
            self.connections.clone(),
            self.events.clone(),
            self.clock.clone(),
            self.timing.clone(),
            self.metrics.clone(),
        )
        .with_fence(self.fence.clone());
        let engine = Arc::new(engine);
        let (wired, store) = managed_controller(
            &self.watched,
            engine.clone(),
            self.controller.clone(),
            self.shutdown.clone(),
        );
        self.state.watch_kind(store.clone());
        self.scopes.watch_kind(store, engine);
        wired
    }
}

/// Runs the operator until SIGTERM or Ctrl-C, then lets running reconciles finish.
pub async fn run(config: RunConfig) -> Result<(), RuntimeError> {
    let shutdown = shutdown_signal()?;
    let client = kube_client().await.map_err(RuntimeError::Client)?;
    run_with(client, config, shutdown).await
}

/// The operator's Kubernetes client: the inferred configuration (in-cluster, or the
/// current kubeconfig) plus `User-Agent: accessplane/<version>` on every request, so that
/// audit logs and API Priority and Fairness flow schemas can tell the operator apart.
pub async fn kube_client() -> Result<kube::Client, kube::Error> {
    let mut config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(crate::USER_AGENT),
    ));
    kube::Client::try_from(config)
}

/// Runs the operator against `client` until `shutdown` resolves (tests pass a fake API
/// server), in phases: health and metrics, CRDs, leadership, controllers, the end.
pub async fn run_with(
    client: kube::Client,
    config: RunConfig,
    shutdown: Shutdown,
) -> Result<(), RuntimeError> {
    let mut registry = Registry::default();
    let upstream_metrics = Arc::new(UpstreamMetrics::default());
    upstream_metrics.register(&mut registry);
    let reconcile_metrics = ReconcileMetrics::default();
    reconcile_metrics.register(&mut registry);
    let state = StateMetrics::default();
    registry.register_collector(Box::new(state.clone()));
    let (readiness, server) = serve_health(&config, registry, shutdown.clone()).await?;

    if config.install_crds {
        crds::install(client.clone()).await?;
    }

    // A standby replica is ready (it serves health and metrics) but starts no controller
    // until it holds the lease.
    let mut fence = Fence::open();
    let mut leadership = None;
    if let Some(election) = &config.leader_election {
        fence = Fence::for_lease(&election.identity, election.timing.duration);
        state.watch_fence(fence.clone());
        readiness.set_ready();
        match leadership::lead(&client, election, &fence, shutdown.clone()).await {
            Some(term) => leadership = Some(term),
            None => return served(server).await,
        }
    }
    // Every Kubernetes write from here on is sent only while the fence is open.
    let client = fence.kube_client(client);

    state.watch_fence(fence.clone());
    let mut shared = Shared::new(&client, &config, reconcile_metrics, &shutdown, fence, state);
    let (connections, settled) =
        connection_controllers(&mut shared, &client, &config, upstream_metrics).await;
    // Resource controllers start once the Connections they use are known.
    let managed = shared
        .managed_controllers()
        .into_iter()
        .map(|w| after(settled.clone(), w, shutdown.clone()));
    let (runs, synced): (Vec<_>, Vec<_>) = connections
        .into_iter()
        .chain(managed)
        .map(|w| (w.run, w.synced))
        .unzip();
    tracing::info!(
        namespace = config.namespace.as_deref().unwrap_or("<all>"),
        controllers = runs.len(),
        "controllers started"
    );

    // Ready once every controller's cache holds its initial list; waiting for it must
    // not outlive shutdown (caches may never sync).
    let ready = async move {
        if join_all(synced).await.into_iter().all(|ok| ok) {
            readiness.set_ready();
            tracing::info!("ready");
        }
    };
    let ready_or_shutdown = futures::future::select(ready.boxed(), shutdown.clone());
    let stopped = async {
        tokio::join!(join_all(runs), ready_or_shutdown);
        tracing::info!("controllers stopped");
        served(server).await
    };
    let lost = match &leadership {
        Some(term) => term.lost(shutdown.clone()),
        None => futures::future::pending().boxed(),
    };
    let (result, ending) = tokio::select! {
        result = stopped => (result, Ending::Stopped),
        () = grace_expired(shutdown) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "reconciles still running after the shutdown grace period; exiting");
            (Ok(()), Ending::Cancelled)
        }
        // Dropping the controllers cancels every reconcile at its next await (and the
        // fence has refused every write since the lease ran out).
        () = lost => (Err(RuntimeError::LeadershipLost), Ending::Lost),
    };
    if let Some(term) = leadership {
        term.end(ending).await;
    }
    result
}

/// Binds the metrics and health server (first: a taken port fails start-up instead of
/// surfacing later) and serves it until shutdown.
async fn serve_health(
    config: &RunConfig,
    registry: Registry,
    shutdown: Shutdown,
) -> Result<(Readiness, Server), RuntimeError> {
    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|source| RuntimeError::Bind {
            addr: config.metrics_addr,
            source,
        })?;
    let readiness = Readiness::default();
    let router = server::router(Arc::new(registry), readiness.clone());
    let server = tokio::spawn(server::serve(listener, router, shutdown));
    tracing::info!(addr = %config.metrics_addr, "serving /metrics, /healthz, /readyz");
    Ok((readiness, server))
}

/// The metrics and health server's task.
type Server = tokio::task::JoinHandle<Result<(), std::io::Error>>;

/// Waits for the health server to stop (at shutdown).
async fn served(server: Server) -> Result<(), RuntimeError> {
    server
        .await
        .map_err(|e| RuntimeError::Serve(std::io::Error::other(e)))?
        .map_err(RuntimeError::Serve)
}

/// The Connection and (cluster-wide) ClusterConnection controllers with the namespace
/// watch and the allowed-namespace counts, and a future that resolves once every
/// Connection is known (or [`CONNECTIONS_SETTLE_LIMIT`] passed).
async fn connection_controllers(
    shared: &mut Shared,
    client: &kube::Client,
    config: &RunConfig,
    upstream_metrics: Arc<UpstreamMetrics>,
) -> (Vec<Wired>, Settled) {
    let shutdown = shared.shutdown.clone();
    let connection_cx = Arc::new(ConnectionContext::new(
        client.clone(),
        shared.connections.clone(),
        upstream_metrics,
        shared.events.clone(),
        shared.clock.clone(),
        (&shared.timing).into(),
        config.credentials.clone(),
        crate::kinds::connection_users,
    ));
    let (connection_wired, connection_store) = connection_controller::<Connection>(
        shared.watched.api(),
        shared.watched.secrets_api(),
        connection_cx.clone(),
        shared.controller.clone(),
        shutdown.clone(),
    );
    shared.connections.watch_cache(connection_store.clone());
    shared.state.watch_connections(connection_store.clone());
    let mut wired = vec![connection_wired];
    let mut cluster_store = None;
    if let Some(missing) = cluster_connections_missing(client, &shared.watched).await {
        tracing::warn!(%missing, "ClusterConnections cannot be used");
        shared.connections.disable_cluster_connections(missing);
        shared.watched.cluster_connections = false;
    }
    if shared.watched.cluster_connections {
        wired.push(namespace_watch(
            client.clone(),
            shared.connections.clone(),
            shutdown.clone(),
        ));
        let (cluster_wired, store) = connection_controller::<ClusterConnection>(
            Api::all(client.clone()),
            Some(Api::namespaced(
                client.clone(),
                &config.credentials.namespace,
            )),
            connection_cx,
            shared.controller.clone(),
            shutdown.clone(),
        );
        shared.connections.watch_cluster_cache(store.clone());
        shared.state.watch_connections(store.clone());
        wired.push(cluster_wired);
        wired.push(controllers::allowed_counts(
            client.clone(),
            store.clone(),
            shared.connections.clone(),
            shutdown.clone(),
        ));
        wired.push(shared.scopes.clone().keep_current(
            client.clone(),
            store.clone(),
            shared.timing.scopes_in_use_every,
            shutdown,
        ));
        cluster_store = Some(store);
    } else if let Some(ns) = &config.namespace {
        shared.connections.disable_cluster_connections(format!(
            "the operator watches only namespace {ns} (--namespace); ClusterConnections need a cluster-wide install"
        ));
    }
    let settled = controllers::connections_settled(
        connection_store,
        cluster_store,
        shared.connections.clone(),
        CONNECTIONS_SETTLE_LIMIT,
    )
    .boxed()
    .shared();
    (wired, settled)
}

/// Resolves once every Connection is known (see [`connection_controllers`]).
type Settled = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// `wired`, started only once `settled` (or never, if shutdown comes first).
fn after(settled: Settled, wired: Wired, shutdown: Shutdown) -> Wired {
    Wired {
        run: async move {
            tokio::select! {
                () = settled => wired.run.await,
                () = shutdown => {}
            }
        }
        .boxed(),
        synced: wired.synced,
    }
}

/// Why ClusterConnections cannot be watched although the operator watches every
/// namespace: their CRD is not installed (an upgrade that skipped the new CRDs). The rest
/// of the operator then runs as before instead of never becoming ready.
async fn cluster_connections_missing(client: &kube::Client, watched: &Watched) -> Option<String> {
    if !watched.cluster_connections {
        return None;
    }
    let api: Api<ClusterConnection> = Api::all(client.clone());
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Err(kube::Error::Api(status)) if status.code == 404 => Some(
            "the ClusterConnection CRD is not installed: apply the chart's crds/ and restart the operator"
                .into(),
        ),
        _ => None,
    }
}

/// Longest wait at start-up for every Connection to be verified before the resource
/// controllers start (an unreachable upstream must not hold up the others for long).
const CONNECTIONS_SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// How long running reconciles may take to finish after SIGTERM: below Kubernetes'
/// default 30 s termination grace period. A controller whose cache never synced (API
/// server unreachable) never stops on its own.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

async fn grace_expired(shutdown: Shutdown) {
    shutdown.await;
    tokio::time::sleep(SHUTDOWN_GRACE).await;
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
fn shutdown_signal() -> Result<Shutdown, RuntimeError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(RuntimeError::Signal)?;
    let signal = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutdown requested; finishing running reconciles");
    };
    Ok(signal.boxed().shared())
}
