//! Input only the upstream can judge (issue #6, item 4): when ConductorOne or the
//! Instaclustr gateway refuses a create or an update with a 400 in its usual error shape,
//! the resource goes `Synced=False/TerminalError` with the upstream's message, further
//! passes at the same generation call nothing upstream (no retry storm), and the next
//! spec change is sent at once and goes through. (Serval: `kinds/access_profile.rs`.)

use std::sync::Arc;
use std::time::Duration;

use accessplane::api::{AppEntitlement, Connector, McpToolset, PersonaAccessControl};
use accessplane::base::conditions::reason;
use accessplane::engine::{Engine, ManagedObject, Provider};
use accessplane::providers::conductorone::{
    AppEntitlementProvider, ConnectorProvider, McpToolsetProvider,
};
use accessplane::providers::instaclustr::PersonaAccessControlProvider;
use kube::api::Api;
use serde_json::{Value, json};

use crate::support::env::{self, C1Env, Conn, Passes, Upstream};
use crate::support::fake_c1::TOOL_APPROVED;
use crate::support::fake_http::{Fault, FaultMatch};
use crate::support::fake_instaclustr::{CONTROLS_PATH, FakeInstaclustr};
use crate::support::harness::{Harness, NS, requeue_of};

/// Passes made at the rejected generation, each after this much simulated time: every
/// trigger the controller could have (status echoes, resyncs) within 10 minutes, which
/// is less than the engine's 15-minute terminal hold.
const QUIET_PASSES: usize = 20;
const QUIET_STEP: Duration = Duration::from_secs(30);

/// A ConductorOne 400 as grpc-gateway answers it (`fake_c1`'s error body shape).
fn c1_invalid(message: &str) -> Fault {
    Fault::Status {
        code: 400,
        retry_after: None,
        retry_after_ms: None,
        body: Some(json!({"code": 3, "message": message, "details": []})),
    }
}

/// An Instaclustr 400: `{"errors":[{"name","message"}]}`.
fn ic_invalid(field: &str, message: &str) -> Fault {
    Fault::Status {
        code: 400,
        retry_after: None,
        retry_after_ms: None,
        body: Some(json!({"errors": [{"name": field, "message": message}]})),
    }
}

/// Reconciles `name` until its `Synced` condition is `TerminalError` (at most 5 passes),
/// asserts the condition carries `message` and `Ready` says `False/{ready_reason}`, then
/// that [`QUIET_PASSES`] more passes at the same generation send nothing at all upstream
/// (`calls` counts the upstream's requests, token requests included) and ask to come
/// back only after minutes.
async fn assert_terminal_and_quiet<K: ManagedObject, P: Provider<K>>(
    h: &Harness,
    engine: &Arc<Engine<K, P>>,
    plural: &str,
    name: &str,
    (message, ready_reason): (&str, &str),
    calls: &dyn Fn() -> usize,
) {
    let before = calls();
    for _ in 0..5 {
        h.pass(engine, name).await;
        if h.condition_of(plural, name, "Synced").1 == "TerminalError" {
            break;
        }
    }
    let (status, reason, text) = h.condition_of(plural, name, "Synced");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TerminalError"),
        "{plural}/{name}: {text}"
    );
    assert!(
        text.contains(message),
        "{plural}/{name}: the upstream's message {message:?} in {text:?}"
    );
    assert!(calls() > before, "the upstream was asked once");
    let (ready, why, ready_text) = h.condition_of(plural, name, "Ready");
    assert_eq!(
        (ready.as_str(), why.as_str()),
        ("False", ready_reason),
        "{plural}/{name}: {ready_text}"
    );
    assert!(
        ready_text.contains(message),
        "{plural}/{name}: Ready names the upstream's message {message:?}: {ready_text:?}"
    );

    let refused_at = calls();
    for _ in 0..QUIET_PASSES {
        h.advance(QUIET_STEP);
        let action = h.pass(engine, name).await.expect("object exists");
        let requeue = requeue_of(&action).expect("requeued");
        assert!(requeue >= Duration::from_secs(60), "hot retry: {action:?}");
    }
    assert_eq!(
        calls(),
        refused_at,
        "{plural}/{name}: no upstream call at the refused generation"
    );
    assert_eq!(
        h.condition_of(plural, name, "Synced"),
        (status, reason, text),
        "the condition stays"
    );
}

// ---------------------------------------------------------------------------------
// ConductorOne

type C1 = C1Env;

impl C1 {
    fn calls(&self) -> impl Fn() -> usize + '_ {
        || self.up.c1.requests().len()
    }

    fn entitlements_path(&self) -> String {
        format!("/api/v1/apps/{}/entitlements", self.up.app)
    }

    async fn apply<K: ManagedObject>(&self, kind: &str, name: &str, mut spec: Value) {
        spec["connectionRef"] = json!({"name": "c1"});
        spec["appId"] = json!(self.up.app);
        self.h()
            .create::<K>(
                json!({"apiVersion": "accessplane.io/v1alpha1", "kind": kind,
                "metadata": {"name": name}, "spec": spec}),
            )
            .await;
    }

    fn live_entitlements(&self, display_name: &str) -> Vec<Value> {
        self.up
            .c1
            .entitlements(&self.up.app)
            .into_iter()
            .filter(|e| e["deletedAt"].is_null() && e["displayName"] == display_name)
            .collect()
    }
}

#[tokio::test]
async fn c1_refused_entitlement_create_is_terminal_until_the_spec_changes() {
    let c = C1::new().await;
    let h = c.h();
    let engine = h.engine(AppEntitlementProvider);
    let message = "grant policy pol-missing does not exist";
    c.up.c1.push_fault(
        FaultMatch::exactly("POST", &c.entitlements_path()),
        c1_invalid(message),
    );
    c.apply::<AppEntitlement>(
        "AppEntitlement",
        "db-read",
        json!({"displayName": "DB read", "grantPolicyId": "pol-missing"}),
    )
    .await;
    assert_terminal_and_quiet(
        h,
        &engine,
        "appentitlements",
        "db-read",
        (message, reason::UPSTREAM_REJECTED),
        &c.calls(),
    )
    .await;
    assert!(c.live_entitlements("DB read").is_empty(), "nothing created");

    // The corrected spec is sent at once (no time passes) and goes through.
    c.up.c1.clear_requests();
    h.edit_spec::<AppEntitlement>("db-read", json!({"grantPolicyId": "pol-approvers"}))
        .await;
    h.settle_kind(&engine, "db-read", 5).await;
    assert_eq!(
        h.condition_of("appentitlements", "db-read", "Ready").0,
        "True"
    );
    assert_eq!(
        h.condition_of("appentitlements", "db-read", "Synced").0,
        "True"
    );
    assert_eq!(
        c.up.c1.count("POST", &c.entitlements_path()),
        1,
        "one create"
    );
    let live = c.live_entitlements("DB read");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["grantPolicyId"], "pol-approvers");
}

#[tokio::test]
async fn c1_refused_entitlement_update_is_terminal_until_the_spec_changes() {
    let c = C1::new().await;
    let h = c.h();
    let engine = h.engine(AppEntitlementProvider);
    c.apply::<AppEntitlement>(
        "AppEntitlement",
        "db-read",
        json!({"displayName": "DB read", "riskLevelValueId": "rv-low"}),
    )
    .await;
    h.settle_kind(&engine, "db-read", 5).await;
    assert_eq!(
        h.condition_of("appentitlements", "db-read", "Ready").0,
        "True"
    );
    let id = h.get("appentitlements", "db-read").unwrap()["status"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let item = format!("{}/{id}", c.entitlements_path());

    let message = "risk level value rv-unknown does not exist";
    c.up.c1
        .push_fault(FaultMatch::exactly("POST", &item), c1_invalid(message));
    h.edit_spec::<AppEntitlement>("db-read", json!({"riskLevelValueId": "rv-unknown"}))
        .await;
    assert_terminal_and_quiet(
        h,
        &engine,
        "appentitlements",
        "db-read",
        (message, reason::UPSTREAM_REJECTED),
        &c.calls(),
    )
    .await;
    assert_eq!(
        c.up.c1.entitlement(&c.up.app, &id).unwrap()["riskLevelValueId"],
        "rv-low",
        "nothing changed upstream"
    );

    c.up.c1.clear_requests();
    h.edit_spec::<AppEntitlement>("db-read", json!({"riskLevelValueId": "rv-high"}))
        .await;
    h.settle_kind(&engine, "db-read", 5).await;
    assert_eq!(
        h.condition_of("appentitlements", "db-read", "Synced").0,
        "True"
    );
    assert_eq!(c.up.c1.count("POST", &item), 1, "one update");
    assert_eq!(
        c.up.c1.entitlement(&c.up.app, &id).unwrap()["riskLevelValueId"],
        "rv-high"
    );
    assert_eq!(c.live_entitlements("DB read").len(), 1);
}

#[tokio::test]
async fn c1_refused_connector_create_is_terminal_until_the_spec_changes() {
    let c = C1::new().await;
    let h = c.h();
    let engine = h.engine(ConnectorProvider);
    let path = format!("/api/v1/apps/{}/connectors", c.up.app);
    let message = "user u-gone does not exist";
    c.up.c1
        .push_fault(FaultMatch::exactly("POST", &path), c1_invalid(message));
    c.apply::<Connector>(
        "Connector",
        "github",
        json!({"catalogId": "catalog-github", "displayName": "GitHub", "userIds": ["u-gone"]}),
    )
    .await;
    assert_terminal_and_quiet(
        h,
        &engine,
        "connectors",
        "github",
        (message, reason::UPSTREAM_REJECTED),
        &c.calls(),
    )
    .await;
    assert!(c.up.c1.connectors(&c.up.app).is_empty(), "nothing created");

    c.up.c1.clear_requests();
    h.edit_spec::<Connector>("github", json!({"userIds": ["u-1"]}))
        .await;
    h.settle_kind(&engine, "github", 5).await;
    assert_eq!(h.condition_of("connectors", "github", "Ready").0, "True");
    assert_eq!(c.up.c1.count("POST", &path), 1, "one create");
    let connectors = c.up.c1.connectors(&c.up.app);
    assert_eq!(connectors.len(), 1);
    assert_eq!(connectors[0]["userIds"], json!(["u-1"]));
}

#[tokio::test]
async fn c1_refused_toolset_create_is_terminal_until_the_spec_changes() {
    let c = C1::new().await;
    let h = c.h();
    let engine = h.engine(McpToolsetProvider);
    let connector = c.up.c1.seed_connector(&c.up.app, "GitHub MCP");
    let tool =
        c.up.c1
            .seed_tool(&c.up.app, &connector, "search", TOOL_APPROVED);
    let path = format!(
        "/api/v1/apps/{}/connectors/{connector}/mcp_toolsets",
        c.up.app
    );
    let message = "display name \"c1 admin\" is reserved";
    c.up.c1
        .push_fault(FaultMatch::exactly("POST", &path), c1_invalid(message));
    c.apply::<McpToolset>(
        "McpToolset",
        "search",
        json!({"connectorId": connector, "displayName": "c1 admin", "tools": [{"id": tool}]}),
    )
    .await;
    assert_terminal_and_quiet(
        h,
        &engine,
        "mcptoolsets",
        "search",
        (message, reason::UPSTREAM_REJECTED),
        &c.calls(),
    )
    .await;

    c.up.c1.clear_requests();
    h.edit_spec::<McpToolset>("search", json!({"displayName": "Search only"}))
        .await;
    h.settle_kind(&engine, "search", 6).await;
    assert_eq!(h.condition_of("mcptoolsets", "search", "Ready").0, "True");
    let creates = c.up.c1.requests().into_iter();
    let creates = creates.filter(|r| r.method == "POST" && r.path == path);
    assert_eq!(creates.count(), 1, "one create");
    let ours: Vec<Value> =
        c.up.c1
            .toolsets(&c.up.app, &connector)
            .into_iter()
            .filter(|t| t["displayName"] == "Search only")
            .collect();
    assert_eq!(ours.len(), 1);
    let id = ours[0]["id"].as_str().unwrap();
    assert_eq!(c.up.c1.bindings(id), vec![tool]);
}

// ---------------------------------------------------------------------------------
// Instaclustr

const CLUSTER: &str = "gw-1";
const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";
/// A well-formed uuid the gateway has no virtual server for.
const UNKNOWN_VS: &str = "d4e5f6a7-b8c9-4012-8def-123456789abc";
const TOOL_A: &str = "7a1f0000-0000-4000-8000-000000000001";
const TOOL_B: &str = "7a200000-0000-4000-8000-000000000002";
const TOOL_C: &str = "7a300000-0000-4000-8000-000000000003";

/// The fake Instaclustr account, with the gateway cluster's virtual server.
struct Gateway {
    ic: FakeInstaclustr,
}

impl Upstream for Gateway {
    async fn start() -> (Self, Vec<Conn>) {
        let (env::Ic { ic }, connections) = env::Ic::start().await;
        ic.add_virtual_server(CLUSTER, VS);
        (Self { ic }, connections)
    }
}

type Ic = env::Env<Gateway, Passes<PersonaAccessControl, PersonaAccessControlProvider>>;

impl Ic {
    fn calls(&self) -> impl Fn() -> usize + '_ {
        || self.up.ic.requests().len()
    }

    async fn apply(&self, name: &str, vs: &str, role: &str, tools: &[&str]) {
        self.create(
            name,
            json!({"connectionRef": {"name": "ic"}, "clusterId": CLUSTER, "virtualServerId": vs,
                   "personaRole": role, "type": "ALLOWLIST", "tools": tools}),
        )
        .await;
    }

    /// Passes until Ready=True (the gateway's writes become visible asynchronously).
    async fn until_ready(&self, name: &str) {
        for _ in 0..20 {
            self.pass(name).await;
            if self
                .h()
                .condition_of("personaaccesscontrols", name, "Ready")
                .0
                == "True"
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(450)).await;
        }
        panic!(
            "{name} not Ready: {:?}",
            self.h()
                .condition_of("personaaccesscontrols", name, "Ready")
        );
    }

    fn tools(&self, role: &str) -> Vec<String> {
        let control = self
            .up
            .ic
            .control(&format!("{VS}_{role}"))
            .expect("control");
        let mut tools: Vec<String> = control["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        tools.sort();
        tools
    }
}

/// The gateway itself refuses a value the CRD cannot judge: a well-formed virtual
/// server id it does not know. (The field is immutable: the way out is deleting the
/// resource, which must not hang on the object that was never created.)
#[tokio::test]
async fn ic_unknown_virtual_server_is_terminal_and_deletes_cleanly() {
    let env = Ic::new().await;
    env.apply("ghost", UNKNOWN_VS, "analyst", &[TOOL_A]).await;
    assert_terminal_and_quiet(
        env.h(),
        &env.run.engine,
        "personaaccesscontrols",
        "ghost",
        ("virtual server not found", reason::UPSTREAM_REJECTED),
        &env.calls(),
    )
    .await;
    assert!(env.up.ic.controls(CLUSTER).is_empty());

    Api::<PersonaAccessControl>::namespaced(env.h().client(), NS)
        .delete("ghost", &Default::default())
        .await
        .unwrap();
    env.h().settle_kind(&env.run.engine, "ghost", 5).await;
    assert!(env.h().get("personaaccesscontrols", "ghost").is_none());
}

#[tokio::test]
async fn ic_refused_create_is_terminal_until_the_spec_changes() {
    let env = Ic::new().await;
    let message = format!("tool {TOOL_C} is not registered on virtual server {VS}");
    env.up.ic.push_fault(
        FaultMatch::exactly("POST", CONTROLS_PATH),
        ic_invalid("tools", &message),
    );
    env.apply("analysts", VS, "analyst", &[TOOL_A, TOOL_C])
        .await;
    assert_terminal_and_quiet(
        env.h(),
        &env.run.engine,
        "personaaccesscontrols",
        "analysts",
        (&message, reason::UPSTREAM_REJECTED),
        &env.calls(),
    )
    .await;
    assert!(env.up.ic.controls(CLUSTER).is_empty());
    assert_eq!(env.up.ic.pending_changes(), 0, "nothing accepted");

    env.up.ic.clear_requests();
    env.edit("analysts", json!({"tools": [TOOL_A, TOOL_B]}))
        .await;
    env.until_ready("analysts").await;
    assert_eq!(env.up.ic.count("POST", CONTROLS_PATH), 1, "one create");
    assert_eq!(env.tools("analyst"), vec![TOOL_A, TOOL_B]);
}

/// Credentials that work but lack permission (403): its own Ready reason, so an alert
/// can tell it from a rejected spec; nothing is retried hot, and once the permission is
/// granted the create goes through after the terminal hold.
#[tokio::test]
async fn ic_forbidden_create_is_permission_denied() {
    let env = Ic::new().await;
    let message = "API key ops may not manage persona access controls";
    env.up.ic.push_fault(
        FaultMatch::exactly("POST", CONTROLS_PATH),
        Fault::Status {
            code: 403,
            retry_after: None,
            retry_after_ms: None,
            body: Some(json!({"errors": [{"name": "authorization", "message": message}]})),
        },
    );
    env.apply("analysts", VS, "analyst", &[TOOL_A]).await;
    assert_terminal_and_quiet(
        env.h(),
        &env.run.engine,
        "personaaccesscontrols",
        "analysts",
        (message, reason::PERMISSION_DENIED),
        &env.calls(),
    )
    .await;
    assert!(env.up.ic.controls(CLUSTER).is_empty());

    // Permission granted (the fault was used up): retried once the hold has passed.
    env.h().advance(Duration::from_secs(15 * 60));
    env.until_ready("analysts").await;
    assert_eq!(
        env.up.ic.count("POST", CONTROLS_PATH),
        2,
        "refused, then created"
    );
    assert_eq!(env.tools("analyst"), vec![TOOL_A]);
}

#[tokio::test]
async fn ic_refused_update_is_terminal_until_the_spec_changes() {
    let env = Ic::new().await;
    env.apply("analysts", VS, "analyst", &[TOOL_A]).await;
    env.until_ready("analysts").await;
    let item = format!("{CONTROLS_PATH}/{VS}_analyst");

    let message = format!("tool {TOOL_C} is not registered on virtual server {VS}");
    env.up.ic.push_fault(
        FaultMatch::exactly("PUT", &item),
        ic_invalid("tools", &message),
    );
    env.edit("analysts", json!({"tools": [TOOL_A, TOOL_C]}))
        .await;
    assert_terminal_and_quiet(
        env.h(),
        &env.run.engine,
        "personaaccesscontrols",
        "analysts",
        (&message, reason::UPSTREAM_REJECTED),
        &env.calls(),
    )
    .await;
    assert_eq!(
        env.tools("analyst"),
        vec![TOOL_A],
        "nothing changed upstream"
    );

    env.up.ic.clear_requests();
    env.edit("analysts", json!({"tools": [TOOL_A, TOOL_B]}))
        .await;
    env.until_ready("analysts").await;
    assert_eq!(env.up.ic.count("PUT", &item), 1, "one update");
    assert_eq!(env.tools("analyst"), vec![TOOL_A, TOOL_B]);
}
