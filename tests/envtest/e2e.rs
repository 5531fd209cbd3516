//! End to end against a real apiserver: the real-apiserver tier's (`KUBEBUILDER_ASSETS`,
//! see `support/envtest.rs`), or any cluster with `ACCESSPLANE_E2E=1` and a kubeconfig
//! (current context). Each script installs the CRDs, runs the operator in-process (so it can reach
//! the fake upstream on 127.0.0.1) in a fresh namespace, applies an example, waits for
//! Ready, deletes, and checks the upstream. Without a cluster the cluster tests are
//! skipped (they pass with a note); every script also runs against the in-memory
//! apiserver, so the scripts themselves are known to work.

use std::time::Duration;

use accessplane::api::{
    AccessProfile, AppEntitlement, Connection, Connector, McpToolset, PersonaAccessControl,
};
use accessplane::engine::ManagedObject;
use accessplane::runtime::{RunConfig, RuntimeError, run_with};
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::support::envtest::Envtest;
use crate::support::fake_c1::{FakeC1, test_credentials};
use crate::support::fake_instaclustr::FakeInstaclustr;
use crate::support::fake_kube::FakeKube;
use crate::support::fake_serval::FakeServal;

/// Where a script runs: a client, and the real-apiserver tier when it is that (then
/// `kubectl` can check what Argo CD would see).
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub envtest: Option<&'static Envtest>,
}

/// The cluster of an e2e run: the current kubeconfig context with `ACCESSPLANE_E2E=1`,
/// else the real-apiserver tier's apiserver (`KUBEBUILDER_ASSETS`), else `None` (skip).
pub async fn cluster() -> Option<Cluster> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::var("ACCESSPLANE_E2E").as_deref() == Ok("1") {
        let client = kube::Client::try_default()
            .await
            .expect("ACCESSPLANE_E2E=1 needs a reachable cluster");
        return Some(Cluster {
            client,
            envtest: None,
        });
    }
    let envtest = crate::support::envtest::envtest()?;
    Some(Cluster {
        client: envtest.admin().await,
        envtest: Some(envtest),
    })
}

/// The in-memory apiserver, for checking the scripts themselves.
pub fn fake_cluster() -> Cluster {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Cluster {
        client: FakeKube::new().client(),
        envtest: None,
    }
}

/// A namespaced kind of the API (any of the group's, Secrets, Events).
pub trait Namespaced:
    kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + serde::Serialize
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// Argo CD's field manager with `ServerSideApply=true`.
const ARGOCD_MANAGER: &str = "argocd-controller";
/// The resync interval of [`Operator::start`]: short, so that [`Operator::settled`]
/// sees several resyncs.
const E2E_RESYNC: Duration = Duration::from_secs(1);
/// The resync interval [`Operator::drift_corrected`] asks for when the operator's is longer
/// (the shortest the annotation allows).
const DRIFT_RESYNC: Duration = Duration::from_secs(10);

/// The operator running in its own fresh namespace.
pub struct Operator {
    pub client: kube::Client,
    pub ns: String,
    envtest: Option<&'static Envtest>,
    resync: Duration,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: JoinHandle<Result<(), RuntimeError>>,
}

impl Operator {
    pub async fn start(cluster: Cluster) -> Self {
        let timing = accessplane::engine::requeue::Timing {
            resync: E2E_RESYNC,
            ..Default::default()
        };
        Self::start_with(cluster, timing).await
    }

    pub async fn start_with(
        cluster: Cluster,
        timing: accessplane::engine::requeue::Timing,
    ) -> Self {
        let Cluster { client, envtest } = cluster;
        let resync = timing.resync;
        let ns = format!("accessplane-e2e-{}", rand::random::<u32>());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = RunConfig {
            namespace: Some(ns.clone()),
            concurrency: 2,
            timing,
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            install_crds: true,
            leader_election: None,
            credentials: Default::default(),
        };
        let handle = tokio::spawn(run_with(
            client.clone(),
            config,
            stopped.map(|_| ()).boxed().shared(),
        ));
        let operator = Self {
            client,
            ns,
            envtest,
            resync,
            stop,
            handle,
        };
        // The operator installs the CRDs; wait until the API serves every kind (another
        // test's operator may have installed some of them a moment ago, not all yet).
        wait_for("the CRDs", async || operator.serves_every_kind().await).await;
        operator
    }

    async fn serves_every_kind(&self) -> bool {
        let lp = kube::api::ListParams::default().limit(1);
        self.api::<Connection>().list(&lp).await.is_ok()
            && self.api::<AccessProfile>().list(&lp).await.is_ok()
            && self.api::<AppEntitlement>().list(&lp).await.is_ok()
            && self.api::<Connector>().list(&lp).await.is_ok()
            && self.api::<McpToolset>().list(&lp).await.is_ok()
            && self.api::<PersonaAccessControl>().list(&lp).await.is_ok()
    }

    pub fn api<K: Namespaced>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Applies an object (Secret, Connection or any kind of the group) in the namespace
    /// as Argo CD does with `ServerSideApply=true`: server-side apply, its field manager.
    pub async fn apply<K: Namespaced>(&self, mut value: Value) {
        value["apiVersion"] = json!(K::api_version(&()));
        value["kind"] = json!(K::kind(&()));
        value["metadata"]["namespace"] = json!(self.ns);
        let name = value["metadata"]["name"].as_str().unwrap().to_string();
        self.api::<K>()
            .patch(
                &name,
                &PatchParams::apply(ARGOCD_MANAGER),
                &Patch::Apply(&value),
            )
            .await
            .unwrap();
    }

    /// After Ready: over several resyncs nothing is written to the object (its
    /// resourceVersion stays), and on the real apiserver `kubectl diff --server-side`
    /// of `manifest` as Argo CD's field manager finds nothing (no OutOfSync).
    pub async fn settled<K: Namespaced>(&self, mut manifest: Value) {
        let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
        let api = self.api::<K>();
        let version = async || {
            api.get(&name)
                .await
                .unwrap()
                .meta()
                .resource_version
                .clone()
        };
        let before = version().await;
        // Three resyncs at E2E_RESYNC; scripts that need a long resync wait as long.
        tokio::time::sleep(
            (self.resync * 3).min(Duration::from_secs(3)) + Duration::from_millis(500),
        )
        .await;
        assert_eq!(
            version().await,
            before,
            "{} {name} was written to while converged",
            K::kind(&())
        );
        let Some(env) = self.envtest else { return };
        manifest["metadata"]["namespace"] = json!(self.ns);
        let out = env.kubectl(
            &[
                "diff",
                "--server-side",
                "--field-manager",
                ARGOCD_MANAGER,
                "-f",
                "-",
            ],
            Some(&manifest.to_string()),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "kubectl diff --server-side of {} {name} is not empty:\n{}{}",
            K::kind(&()),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A Secret and a Connection named `name` with the given upstream spec.
    pub async fn connect(&self, name: &str, secret: Value, upstream: Value) {
        self.apply::<Secret>(json!({"metadata": {"name": name}, "stringData": secret}))
            .await;
        let mut spec = upstream;
        let field = spec.as_object().unwrap().keys().next().unwrap().clone();
        spec[&field]["credentialsSecretRef"] = json!({"name": name});
        self.apply::<Connection>(json!({"metadata": {"name": name}, "spec": spec}))
            .await;
    }

    /// A `c1-prod` Connection to the fake ConductorOne with freshly registered credentials.
    pub async fn connect_c1(&self, c1: &FakeC1) {
        let (client_id, secret, public) = test_credentials(&c1.host());
        c1.add_client(&client_id, public, &secret);
        self.connect(
            "c1-prod",
            json!({"clientId": client_id, "clientSecret": secret}),
            json!({"conductorOne": {"serverUrl": c1.base_url()}}),
        )
        .await;
    }

    /// Waits until `Ready` is True for the object's current generation (the status and
    /// its `Ready` condition both carry `observedGeneration == metadata.generation`).
    pub async fn wait_ready<K: Namespaced>(&self, name: &str) {
        let api = self.api::<K>();
        wait_for(
            &format!("{} {name} to be Ready", K::kind(&())),
            async || {
                let obj = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
                let generation = &obj["metadata"]["generation"];
                obj["status"]["observedGeneration"] == *generation
                    && obj["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter().any(|c| {
                            c["type"] == "Ready"
                                && c["status"] == "True"
                                && c["observedGeneration"] == *generation
                        })
                    })
            },
        )
        .await;
    }

    /// Drift: `drift` changes the upstream object behind the operator's back; a resync
    /// must put it back (`restored` holds) and say so with a `DriftCorrected` Event
    /// (`DriftCorrectionRequested` where the upstream applies writes later), and
    /// the object must settle again. An operator with a long resync is asked for a
    /// shorter one on this object, as a user would: the resync-interval annotation.
    pub async fn drift_corrected<K: ManagedObject>(
        &self,
        manifest: Value,
        drift: impl FnOnce(),
        restored: impl Fn() -> bool,
    ) {
        let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
        if self.resync > DRIFT_RESYNC {
            let annotation = json!({"metadata": {"annotations": {
                accessplane::engine::requeue::RESYNC_ANNOTATION: "10s"}}});
            self.api::<K>()
                .patch(
                    &name,
                    &PatchParams {
                        field_manager: Some("kubectl-annotate".into()),
                        ..Default::default()
                    },
                    &Patch::Merge(annotation),
                )
                .await
                .unwrap();
        }
        drift();
        assert!(!restored(), "the drift took effect upstream");
        wait_for(
            &format!("the drift of {} {name} to be corrected", K::kind(&())),
            async || restored(),
        )
        .await;
        wait_for(
            &format!("a DriftCorrected Event about {} {name}", K::kind(&())),
            async || {
                self.events_about(&name)
                    .await
                    .iter()
                    .any(|r| r == "DriftCorrected" || r == "DriftCorrectionRequested")
            },
        )
        .await;
        self.wait_ready::<K>(&name).await;
        self.settled::<K>(manifest).await;
    }

    /// Reasons of the Events about objects named `name` in the namespace.
    pub async fn events_about(&self, name: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> = self.api();
        let list = events.list(&Default::default()).await.unwrap();
        list.items
            .into_iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.name.as_deref() == Some(name))
            })
            .filter_map(|e| e.reason)
            .collect()
    }

    /// `deletionPolicy: Orphan`: applies `manifest` with it, waits for Ready, deletes the
    /// object and checks that the upstream object is still there (`exists`).
    pub async fn orphaned<K: ManagedObject>(
        &self,
        mut manifest: Value,
        exists: impl AsyncFn() -> bool,
    ) {
        let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
        manifest["spec"]["deletionPolicy"] = json!("Orphan");
        self.apply::<K>(manifest).await;
        self.wait_ready::<K>(&name).await;
        assert!(exists().await, "Ready means the upstream object exists");
        self.delete_and_wait::<K>(&name).await;
        assert!(
            exists().await,
            "{} {name} with deletionPolicy Orphan: the upstream object stays",
            K::kind(&())
        );
    }

    pub async fn delete_and_wait<K: ManagedObject>(&self, name: &str) {
        let api = self.api::<K>();
        api.delete(name, &DeleteParams::default()).await.unwrap();
        wait_for(&format!("{} {name} to be gone", K::kind(&())), async || {
            api.get_opt(name).await.unwrap().is_none()
        })
        .await;
    }

    /// Deletes the Connection (its finalizer waits for users), stops, removes the namespace.
    pub async fn finish(self, connection: &str) {
        let connections = self.api::<Connection>();
        connections
            .delete(connection, &DeleteParams::default())
            .await
            .unwrap();
        wait_for("the Connection to be gone", async || {
            connections.get_opt(connection).await.unwrap().is_none()
        })
        .await;
        self.stop.send(()).unwrap();
        self.handle.await.unwrap().unwrap();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(&self.ns, &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// An example manifest from `examples/` as JSON.
pub fn example(path: &str) -> Value {
    let text =
        std::fs::read_to_string(format!("{}/examples/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

pub async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..120 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn e2e_serval_access_profile() {
    if let Some(cluster) = cluster().await {
        serval_access_profile(cluster).await;
    }
}

#[tokio::test]
async fn e2e_script_serval_access_profile() {
    serval_access_profile(fake_cluster()).await;
}

async fn serval_access_profile(cluster: Cluster) {
    let serval = FakeServal::start().await;
    serval.add_client("e2e-operator", "e2e-secret");
    let op = Operator::start(cluster).await;
    op.connect(
        "serval-prod",
        json!({"clientId": "e2e-operator", "clientSecret": "e2e-secret"}),
        json!({"serval": {"baseUrl": serval.base_url()}}),
    )
    .await;
    let profile = example("serval/accessprofile.yaml");
    op.apply::<AccessProfile>(profile.clone()).await;
    op.wait_ready::<AccessProfile>("payments-oncall").await;
    op.settled::<AccessProfile>(profile.clone()).await;
    assert_eq!(serval.profiles().len(), 1);
    assert_eq!(serval.profiles()[0]["name"], "Payments on-call");
    let id = serval.profiles()[0]["id"].as_str().unwrap().to_string();

    let description = || serval.profile(&id).unwrap()["description"].clone();
    op.drift_corrected::<AccessProfile>(
        profile.clone(),
        || serval.edit_profile(&id, |p| p["description"] = json!("edited in the UI")),
        || description() == profile["spec"]["description"],
    )
    .await;

    op.delete_and_wait::<AccessProfile>("payments-oncall").await;
    assert!(
        serval.profiles().is_empty(),
        "deleted upstream (the operator created it)"
    );
    op.orphaned::<AccessProfile>(profile, async || serval.profiles().len() == 1)
        .await;
    op.finish("serval-prod").await;
}

#[tokio::test]
async fn e2e_c1_app_entitlement() {
    if let Some(cluster) = cluster().await {
        c1_app_entitlement(cluster).await;
    }
}

#[tokio::test]
async fn e2e_script_c1_app_entitlement() {
    c1_app_entitlement(fake_cluster()).await;
}

async fn c1_app_entitlement(cluster: Cluster) {
    let c1 = FakeC1::start().await;
    let app = c1.seed_app();
    let op = Operator::start(cluster).await;
    op.connect_c1(&c1).await;
    let mut entitlement = example("conductorone/appentitlement.yaml");
    entitlement["spec"]["appId"] = json!(app);
    entitlement["spec"]
        .as_object_mut()
        .unwrap()
        .remove("grantPolicyId");
    op.apply::<AppEntitlement>(entitlement.clone()).await;
    op.wait_ready::<AppEntitlement>("prod-db-read").await;
    op.settled::<AppEntitlement>(entitlement.clone()).await;
    let created = c1.entitlements(&app);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["displayName"], "Production DB read");
    let id = created[0]["id"].as_str().unwrap().to_string();

    let display_name = || c1.entitlement(&app, &id).unwrap()["displayName"].clone();
    op.drift_corrected::<AppEntitlement>(
        entitlement.clone(),
        || c1.edit_entitlement(&app, &id, |e| e["displayName"] = json!("Renamed in the UI")),
        || display_name() == "Production DB read",
    )
    .await;

    op.delete_and_wait::<AppEntitlement>("prod-db-read").await;
    assert!(
        c1.entitlements(&app)[0]["deletedAt"].is_string(),
        "deleted upstream (the operator created it)"
    );
    let live = || {
        let all = c1.entitlements(&app).into_iter();
        all.filter(|e| e["deletedAt"].is_null()).count()
    };
    op.orphaned::<AppEntitlement>(entitlement, async || live() == 1)
        .await;
    op.finish("c1-prod").await;
}

#[tokio::test]
async fn e2e_instaclustr_persona_access_control() {
    if let Some(cluster) = cluster().await {
        instaclustr_persona_access_control(cluster).await;
    }
}

#[tokio::test]
async fn e2e_script_instaclustr_persona_access_control() {
    instaclustr_persona_access_control(fake_cluster()).await;
}

async fn instaclustr_persona_access_control(cluster: Cluster) {
    let ic = FakeInstaclustr::start().await;
    ic.add_account("e2e", "e2e-key");
    ic.add_virtual_server("gw-e2e", "b2c3d4e5-f6a7-8901-bcde-f12345678901");
    ic.set_visibility_delay(Duration::from_millis(500));
    let op = Operator::start(cluster).await;
    op.connect(
        "instaclustr-prod",
        json!({"username": "e2e", "apiKey": "e2e-key"}),
        json!({"instaclustr": {"baseUrl": ic.base_url()}}),
    )
    .await;
    let mut control = example("instaclustr/personaaccesscontrol.yaml");
    control["spec"]["clusterId"] = json!("gw-e2e");
    op.apply::<PersonaAccessControl>(control.clone()).await;
    op.wait_ready::<PersonaAccessControl>("analysts-allowlist")
        .await;
    op.settled::<PersonaAccessControl>(control.clone()).await;
    let id = "b2c3d4e5-f6a7-8901-bcde-f12345678901_analyst";
    assert_eq!(ic.control(id).unwrap()["type"], "ALLOWLIST");

    // The gateway keeps tools in an order of its own: compare them as sets.
    let sorted = |tools: &Value| {
        let mut tools: Vec<String> = serde_json::from_value(tools.clone()).unwrap();
        tools.sort();
        tools
    };
    let tools = || sorted(&ic.control(id).unwrap()["tools"]);
    op.drift_corrected::<PersonaAccessControl>(
        control.clone(),
        || ic.edit_control(id, |c| c["tools"] = json!([])),
        || tools() == sorted(&control["spec"]["tools"]),
    )
    .await;

    op.delete_and_wait::<PersonaAccessControl>("analysts-allowlist")
        .await;
    assert!(
        ic.control(id).is_none(),
        "deleted on the gateway before the finalizer went"
    );
    op.orphaned::<PersonaAccessControl>(control, async || ic.control(id).is_some())
        .await;
    op.finish("instaclustr-prod").await;
}

#[tokio::test]
async fn e2e_connection() {
    if let Some(cluster) = cluster().await {
        connection(cluster).await;
    }
}

#[tokio::test]
async fn e2e_script_connection() {
    connection(fake_cluster()).await;
}

/// A `Connection` on its own: verified, quiet while nothing changes, a broken and then
/// repaired credentials Secret reflected in `Ready` through the Secret watch, deleted.
async fn connection(cluster: Cluster) {
    let serval = FakeServal::start().await;
    serval.add_client("e2e-operator", "e2e-secret");
    let op = Operator::start(cluster).await;
    // The example Connection, pointed at the fake, and its Secret.
    let credentials = |secret: &str| {
        json!({"metadata": {"name": "serval-credentials"},
               "stringData": {"clientId": "e2e-operator", "clientSecret": secret}})
    };
    op.apply::<Secret>(credentials("e2e-secret")).await;
    let mut manifest = example("serval/connection.yaml");
    manifest["spec"]["serval"]["baseUrl"] = json!(serval.base_url());
    op.apply::<Connection>(manifest.clone()).await;
    op.wait_ready::<Connection>("serval-prod").await;
    op.settled::<Connection>(manifest).await;

    let ready_reason = async || {
        let obj = op.api::<Connection>().get("serval-prod").await.unwrap();
        let obj = serde_json::to_value(obj).unwrap();
        let conditions = obj["status"]["conditions"].as_array().cloned();
        let ready = conditions.unwrap_or_default().into_iter();
        ready
            .filter(|c| c["type"] == "Ready")
            .map(|c| c["reason"].as_str().unwrap_or_default().to_string())
            .next()
    };
    op.apply::<Secret>(credentials("wrong")).await;
    wait_for("the Connection to fail authentication", async || {
        ready_reason().await.as_deref() == Some("AuthenticationFailed")
    })
    .await;
    op.apply::<Secret>(credentials("e2e-secret")).await;
    op.wait_ready::<Connection>("serval-prod").await;
    op.finish("serval-prod").await;
}
