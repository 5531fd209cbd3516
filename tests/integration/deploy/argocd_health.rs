//! Argo CD: `deploy/argocd/health.lua` run in a real Lua 5.1 VM the way Argo CD runs
//! it, and the examples reconciled through the real engine stay equal to what Argo CD
//! compares (spec, labels, the manifest's annotations).

use std::sync::Arc;
use std::time::Duration;

use accessplane::api::{
    AccessProfile, AppEntitlement, Connector, McpToolset, PersonaAccessControl,
};
use accessplane::base::conditions::reason;
use accessplane::connections::reason as conn;
use accessplane::engine::{Engine, ManagedObject, Provider};
use accessplane::providers::conductorone::{
    AppEntitlementProvider, ConnectorProvider, McpToolsetProvider,
};
use accessplane::providers::instaclustr::PersonaAccessControlProvider;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use mlua::{Lua, LuaOptions, StdLib};
use serde_json::{Value, json};

use crate::support::env::{C1Env, Ic, IcEnv};
use crate::support::fake_c1::TOOL_APPROVED;
use crate::support::harness::{Harness, NS, TEAM, condition};

const HEALTH_LUA: &str = include_str!("../../../deploy/argocd/health.lua");
const ARGOCD_CM: &str = include_str!("../../../deploy/argocd/argocd-cm.yaml");

/// Runs the script like Argo CD's `ExecuteHealthLua`: a fresh VM with only the base,
/// table, package and os libraries, the object as global `obj`, the chunk's return
/// value taken as the health table.
fn health(obj: &Value) -> (String, String) {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::PACKAGE | StdLib::OS,
        LuaOptions::default(),
    )
    .unwrap();
    lua.globals().set("obj", to_lua(&lua, obj)).unwrap();
    let hs: mlua::Table = lua
        .load(HEALTH_LUA)
        .set_name("health.lua")
        .eval()
        .unwrap_or_else(|e| panic!("health.lua failed on {obj}: {e}"));
    let status: String = hs.get("status").unwrap();
    let message: String = hs.get("message").expect("hs.message is always a string");
    assert!(
        ["Healthy", "Progressing", "Degraded"].contains(&status.as_str()),
        "{status}"
    );
    assert!(!message.is_empty(), "empty message for {obj}");
    (status, message)
}

/// Argo CD's `decodeValue`: objects → tables, arrays → 1-based sequences, null → nil.
fn to_lua(lua: &Lua, value: &Value) -> mlua::Value {
    match value {
        Value::Null => mlua::Value::Nil,
        Value::Bool(b) => mlua::Value::Boolean(*b),
        Value::Number(n) => mlua::Value::Number(n.as_f64().unwrap()),
        Value::String(s) => mlua::Value::String(lua.create_string(s).unwrap()),
        Value::Array(items) => {
            let t = lua.create_table().unwrap();
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)).unwrap();
            }
            mlua::Value::Table(t)
        }
        Value::Object(map) => {
            let t = lua.create_table().unwrap();
            for (k, item) in map {
                t.raw_set(k.as_str(), to_lua(lua, item)).unwrap();
            }
            mlua::Value::Table(t)
        }
    }
}

fn cond(type_: &str, status: bool, reason: &str, message: &str, generation: i64) -> Value {
    json!({"type": type_, "status": if status { "True" } else { "False" }, "reason": reason,
           "message": message, "observedGeneration": generation,
           "lastTransitionTime": "2027-01-15T08:00:00Z"})
}

fn ready(status: bool, reason: &str, message: &str) -> Value {
    cond("Ready", status, reason, message, 2)
}

fn synced_ok() -> Value {
    cond("Synced", true, reason::RECONCILE_SUCCESS, "", 2)
}

fn synced_err(reason: &str, message: &str) -> Value {
    cond("Synced", false, reason, message, 2)
}

/// An object at generation 2 whose status the operator wrote for generation 2.
fn object(kind: &str, conditions: Vec<Value>) -> Value {
    json!({"apiVersion": "accessplane.io/v1alpha1", "kind": kind,
           "metadata": {"name": "x", "namespace": NS, "generation": 2},
           "spec": {"connectionRef": {"name": "c"}},
           "status": {"observedGeneration": 2, "conditions": conditions}})
}

fn expect(obj: &Value, status: &str, message: &str) {
    assert_eq!(
        health(obj),
        (status.to_string(), message.to_string()),
        "{obj}"
    );
}

#[test]
fn fresh_object_waits_for_the_operator() {
    let mut obj = object("AccessProfile", vec![]);
    obj.as_object_mut().unwrap().remove("status");
    expect(&obj, "Progressing", "Waiting for the operator");
    obj["status"] = json!({});
    expect(&obj, "Progressing", "Waiting for the operator");
    obj["status"] = json!({"conditions": []});
    expect(&obj, "Progressing", "Waiting for the operator");
}

#[test]
fn deleting_is_progressing() {
    let mut obj = object(
        "AccessProfile",
        vec![ready(false, reason::DELETING, "deleting ap-1"), synced_ok()],
    );
    obj["metadata"]["deletionTimestamp"] = json!("2027-01-15T09:00:00Z");
    expect(&obj, "Progressing", "Deleting");

    // A refused delete (a team's default profile) says why it does not finish.
    let refused = "access profile ap-1 is the team default and cannot be deleted";
    obj["status"]["conditions"][1] = synced_err(reason::TERMINAL_ERROR, refused);
    expect(&obj, "Progressing", &format!("Deleting: {refused}"));

    // Nothing written yet, or a Connection waiting for its users.
    obj.as_object_mut().unwrap().remove("status");
    expect(&obj, "Progressing", "Deleting");
    let mut connection = object(
        "Connection",
        vec![ready(false, conn::IN_USE, "still used by AccessProfile/a")],
    );
    connection["metadata"]["deletionTimestamp"] = json!("2027-01-15T09:00:00Z");
    expect(&connection, "Progressing", "Deleting");
}

#[test]
fn stale_generation_is_progressing_even_when_ready() {
    let mut obj = object(
        "AccessProfile",
        vec![
            ready(true, reason::AVAILABLE, "upstream object matches the spec"),
            synced_ok(),
        ],
    );
    obj["metadata"]["generation"] = json!(3);
    expect(
        &obj,
        "Progressing",
        "Waiting for the operator to observe generation 3",
    );

    // A terminal error of the previous generation is not this spec's verdict.
    obj["status"]["conditions"][1] = synced_err(reason::TERMINAL_ERROR, "422 name too long");
    expect(
        &obj,
        "Progressing",
        "Waiting for the operator to observe generation 3: 422 name too long",
    );

    // Seen (status.observedGeneration 3) but a transient error kept Ready from generation 2.
    obj["status"]["observedGeneration"] = json!(3);
    obj["status"]["conditions"][1] = cond(
        "Synced",
        false,
        reason::RECONCILE_ERROR,
        "503 Service Unavailable",
        3,
    );
    expect(
        &obj,
        "Progressing",
        "Waiting for the operator to observe generation 3: 503 Service Unavailable",
    );

    // Only the Ready condition's observedGeneration is known.
    let mut obj = object(
        "Connection",
        vec![cond(
            "Ready",
            true,
            conn::VERIFIED,
            "credentials verified",
            1,
        )],
    );
    obj["status"]
        .as_object_mut()
        .unwrap()
        .remove("observedGeneration");
    expect(
        &obj,
        "Progressing",
        "Waiting for the operator to observe generation 2",
    );
}

#[test]
fn ready_is_healthy() {
    let obj = object(
        "AccessProfile",
        vec![
            ready(true, reason::AVAILABLE, "upstream object matches the spec"),
            synced_ok(),
        ],
    );
    expect(&obj, "Healthy", "upstream object matches the spec");

    // A passing upstream fault during a resync keeps Ready (and Healthy), with a note.
    let obj = object(
        "AccessProfile",
        vec![
            ready(true, reason::AVAILABLE, "upstream object matches the spec"),
            synced_err(reason::RECONCILE_ERROR, "503 Service Unavailable"),
        ],
    );
    expect(
        &obj,
        "Healthy",
        "upstream object matches the spec (last sync failed, retrying: 503 Service Unavailable)",
    );

    // No message: the reason stands in.
    let obj = object("AccessProfile", vec![ready(true, reason::AVAILABLE, "")]);
    expect(&obj, "Healthy", "Available");
}

#[test]
fn converging_is_progressing() {
    for (r, message) in [
        (reason::CREATING, "creating access profile"),
        (reason::UPDATING, "updating access profile"),
        (
            reason::PENDING,
            "Create accepted by the gateway, not visible yet",
        ),
        (
            reason::WAITING_FOR_DEPENDENCY,
            "Connection serval-prod is not ready: SecretNotFound",
        ),
    ] {
        let obj = object(
            "PersonaAccessControl",
            vec![ready(false, r, message), synced_ok()],
        );
        expect(&obj, "Progressing", message);
    }
}

#[test]
fn retried_errors_are_progressing() {
    // First create failing transiently: Ready=Creating carries the error.
    let obj = object(
        "AppEntitlement",
        vec![
            ready(false, reason::CREATING, "429 Too Many Requests"),
            synced_err(reason::RECONCILE_ERROR, "429 Too Many Requests"),
        ],
    );
    expect(&obj, "Progressing", "429 Too Many Requests");

    // A failed dependency is retried with backoff: Ready says what failed.
    let failed = "MCP Gateway cluster gw-1: its last operation failed (status RUNNING)";
    let obj = object(
        "PersonaAccessControl",
        vec![
            ready(false, reason::DEPENDENCY_FAILED, failed),
            synced_err(reason::RECONCILE_ERROR, failed),
        ],
    );
    expect(&obj, "Progressing", failed);

    // Ready=Error with a retryable Synced: the operator retries, Synced says why.
    let obj = object(
        "PersonaAccessControl",
        vec![
            ready(false, reason::ERROR, "the last write failed"),
            synced_err(
                reason::RECONCILE_ERROR,
                "gateway cluster gw-1 is OPERATION_FAILED",
            ),
        ],
    );
    expect(
        &obj,
        "Progressing",
        "gateway cluster gw-1 is OPERATION_FAILED",
    );
}

#[test]
fn errors_that_need_a_person_are_degraded() {
    let terminal = "400 Bad Request: name must not be empty";
    let obj = object(
        "AccessProfile",
        vec![
            ready(false, reason::UPSTREAM_REJECTED, terminal),
            synced_err(reason::TERMINAL_ERROR, terminal),
        ],
    );
    expect(&obj, "Degraded", terminal);

    // Each reason of a refusal is Degraded on its own, also once a later transient
    // failure has left Ready as it was and Synced says the operator is retrying.
    for r in [
        reason::UPSTREAM_REJECTED,
        reason::PERMISSION_DENIED,
        reason::TOOL_NOT_APPROVED,
        reason::TOOL_NOT_FOUND,
        reason::REFUSED,
        reason::CREATE_AMBIGUOUS,
    ] {
        let message = format!("{r}: see the message");
        for synced in [
            synced_err(reason::TERMINAL_ERROR, &message),
            synced_err(reason::RECONCILE_ERROR, "503 Service Unavailable"),
        ] {
            let obj = object("McpToolset", vec![ready(false, r, &message), synced]);
            expect(&obj, "Degraded", &message);
        }
    }

    // Terminal even while Ready still says True from before (e.g. 403 on a resync).
    let obj = object(
        "AppEntitlement",
        vec![
            ready(true, reason::AVAILABLE, "upstream object matches the spec"),
            synced_err(reason::TERMINAL_ERROR, "403 Forbidden"),
        ],
    );
    expect(&obj, "Degraded", "403 Forbidden");

    let ambiguous = "2 upstream objects match this resource after an interrupted create (ap-1, ap-2); delete the duplicates upstream, or set spec.externalId to the one to keep";
    let obj = object(
        "AccessProfile",
        vec![
            ready(false, reason::CREATING, "creating"),
            synced_err(reason::CREATE_AMBIGUOUS, ambiguous),
        ],
    );
    expect(&obj, "Degraded", ambiguous);

    // Observe policy: the difference the user asked to see; the operator never fixes it.
    let drift = "upstream differs in: description";
    let obj = object(
        "AccessProfile",
        vec![ready(false, reason::DRIFTED, drift), synced_ok()],
    );
    expect(&obj, "Degraded", drift);

    let missing = "access profile ap-missing does not exist upstream";
    let obj = object(
        "AccessProfile",
        vec![ready(false, reason::NOT_FOUND, missing), synced_ok()],
    );
    expect(&obj, "Degraded", missing);
}

#[test]
fn connection_reasons() {
    let verified = object(
        "Connection",
        vec![ready(true, conn::VERIFIED, "credentials verified")],
    );
    expect(&verified, "Healthy", "credentials verified");
    for r in [
        conn::SECRET_NOT_FOUND,
        conn::SECRET_KEY_MISSING,
        conn::SECRET_KEY_INVALID,
        conn::AUTHENTICATION_FAILED,
        conn::INVALID_SPEC,
    ] {
        let message = format!("{r}: see the Secret");
        expect(
            &object("Connection", vec![ready(false, r, &message)]),
            "Degraded",
            &message,
        );
    }
    let refused = "this operator reads credentials only from namespace accessplane-system";
    expect(
        &object(
            "Connection",
            vec![ready(false, conn::NAMESPACED_CONNECTIONS_DISABLED, refused)],
        ),
        "Degraded",
        refused,
    );
    let shared = object(
        "ClusterConnection",
        vec![ready(true, conn::VERIFIED, "credentials verified")],
    );
    expect(&shared, "Healthy", "credentials verified");
    let not_allowed =
        "ClusterConnection serval-shared does not allow namespace team-b (spec.allowedNamespaces)";
    expect(
        &object(
            "AccessProfile",
            vec![ready(false, reason::CONNECTION_NOT_ALLOWED, not_allowed)],
        ),
        "Degraded",
        not_allowed,
    );
    let unreachable = "connect error: connection refused";
    expect(
        &object(
            "Connection",
            vec![ready(false, conn::UNREACHABLE, unreachable)],
        ),
        "Progressing",
        unreachable,
    );
}

#[test]
fn argocd_cm_embeds_health_lua_verbatim() {
    let cm: Value = serde_yaml::from_str(ARGOCD_CM).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let customizations = cm["data"]["resource.customizations"].as_str().unwrap();
    let customizations: Value = serde_yaml::from_str(customizations).unwrap();
    assert!(
        customizations["accessplane.io/*"]["health.lua"].as_str() == Some(HEALTH_LUA),
        "deploy/argocd/argocd-cm.yaml must embed deploy/argocd/health.lua unchanged"
    );
}

// --- A synced Application stays in sync ---------------------------------------------

fn example(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// The example pointed at the harness: namespace, Connection and placeholder values.
fn adjusted(path: &str, connection: &str, replacements: &[(&str, Value)]) -> Value {
    adjusted_value(example(path), connection, replacements)
}

fn adjusted_value(mut manifest: Value, connection: &str, replacements: &[(&str, Value)]) -> Value {
    manifest["metadata"]["namespace"] = json!(NS);
    manifest["spec"]["connectionRef"]["name"] = json!(connection);
    for (field, value) in replacements {
        manifest["spec"][*field] = value.clone();
    }
    assert!(
        !manifest.to_string().contains("REPLACE_WITH"),
        "placeholder left in {manifest}"
    );
    manifest
}

/// Creates the manifest as is (as Argo CD would, not through the typed struct).
async fn apply<K: ManagedObject>(h: &Harness, manifest: &Value) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(h.client(), NS, &ApiResource::erase::<K>(&()));
    let obj: DynamicObject = serde_json::from_value(manifest.clone()).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

/// Reconciles until Ready=True (asynchronous upstreams need a few passes).
async fn until_ready<K: ManagedObject, P: Provider<K>>(
    h: &Harness,
    engine: &Arc<Engine<K, P>>,
    plural: &str,
    name: &str,
) -> Value {
    for _ in 0..20 {
        h.settle_kind(engine, name, 5).await;
        let live = h.get(plural, name).unwrap();
        if condition(&live, "Ready").is_some_and(|c| c["status"] == "True") {
            return live;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} not Ready: {}", h.get(plural, name).unwrap());
}

/// What Argo CD compares is unchanged: spec, labels, the manifest's annotations; the
/// operator added only `accessplane.io/*` annotations and its finalizer. And the
/// health check reports the settled object Healthy.
fn assert_in_sync(manifest: &Value, live: &Value) {
    let name = &manifest["metadata"]["name"];
    assert_eq!(live["spec"], manifest["spec"], "{name}: spec changed");
    assert_eq!(
        live["metadata"]["labels"], manifest["metadata"]["labels"],
        "{name}: labels changed"
    );
    let empty = serde_json::Map::new();
    let want = manifest["metadata"]["annotations"]
        .as_object()
        .unwrap_or(&empty);
    let got = live["metadata"]["annotations"]
        .as_object()
        .unwrap_or(&empty);
    for (key, value) in want {
        assert_eq!(got.get(key), Some(value), "{name}: annotation {key}");
    }
    for key in got.keys().filter(|k| !want.contains_key(*k)) {
        assert!(
            key.starts_with("accessplane.io/"),
            "{name}: foreign annotation {key}"
        );
    }
    for finalizer in live["metadata"]["finalizers"].as_array().unwrap() {
        assert_eq!(finalizer, "accessplane.io/finalizer", "{name}");
    }
    assert_eq!(
        live["metadata"]["generation"], 1,
        "{name}: spec never written"
    );
    assert_eq!(health(live).0, "Healthy", "{name}: {live}");
}

#[tokio::test]
async fn synced_serval_examples_stay_in_sync() {
    let h = Harness::new().await;
    let team = json!(TEAM);
    let adopted = h.serval.seed_profile(
        json!({"teamId": TEAM, "name": "Support read-only", "description": "made in the UI"}),
    );
    let observed = h
        .serval
        .seed_profile(json!({"teamId": TEAM, "name": "Security audit"}));
    for (path, extra) in [
        (
            "examples/serval/accessprofile.yaml",
            vec![("teamId", team.clone())],
        ),
        (
            "examples/serval/accessprofile-adopted.yaml",
            vec![("teamId", team.clone()), ("externalId", json!(adopted))],
        ),
        (
            "examples/serval/accessprofile-observed.yaml",
            vec![("teamId", team.clone()), ("externalId", json!(observed))],
        ),
    ] {
        let manifest = adjusted(path, "serval", &extra);
        apply::<AccessProfile>(&h, &manifest).await;
        let name = manifest["metadata"]["name"].as_str().unwrap();
        let live = until_ready(&h, &h.engine, "accessprofiles", name).await;
        assert_in_sync(&manifest, &live);
    }
}

#[tokio::test]
async fn synced_conductorone_examples_stay_in_sync() {
    let env = C1Env::new().await;
    let engine = env.h().engine(AppEntitlementProvider);
    let app = json!(env.up.app);
    let adopted = env.up.c1.seed_entitlement(
        &env.up.app,
        json!({"displayName": "GitHub admin", "riskLevelValueId": "low"}),
    );
    for (path, extra) in [
        (
            "examples/conductorone/appentitlement.yaml",
            vec![("appId", app.clone()), ("grantPolicyId", json!("pol-1"))],
        ),
        (
            "examples/conductorone/appentitlement-adopted.yaml",
            vec![
                ("appId", app.clone()),
                ("externalId", json!(adopted)),
                ("riskLevelValueId", json!("high")),
            ],
        ),
    ] {
        let manifest = adjusted(path, "c1", &extra);
        apply::<AppEntitlement>(env.h(), &manifest).await;
        let name = manifest["metadata"]["name"].as_str().unwrap();
        let live = until_ready(env.h(), &engine, "appentitlements", name).await;
        assert_in_sync(&manifest, &live);
    }
}

#[tokio::test]
async fn synced_instaclustr_examples_stay_in_sync() {
    const CLUSTER: &str = "gw-1";
    let IcEnv {
        run: h,
        up: Ic { ic },
        ..
    } = IcEnv::new().await;
    let vs = example("examples/instaclustr/personaaccesscontrol.yaml")["spec"]["virtualServerId"]
        .as_str()
        .unwrap()
        .to_string();
    ic.add_virtual_server(CLUSTER, &vs);
    ic.seed_control(json!({"virtualServerId": vs, "personaRole": "auditor", "type": "DENYLIST"}));
    let engine = h.engine(PersonaAccessControlProvider::default());
    for path in [
        "examples/instaclustr/personaaccesscontrol.yaml",
        "examples/instaclustr/personaaccesscontrol-adopted.yaml",
    ] {
        let manifest = adjusted(path, "ic", &[("clusterId", json!(CLUSTER))]);
        apply::<PersonaAccessControl>(&h, &manifest).await;
        let name = manifest["metadata"]["name"].as_str().unwrap();
        let live = until_ready(&h, &engine, "personaaccesscontrols", name).await;
        assert_in_sync(&manifest, &live);
    }
}

#[tokio::test]
async fn synced_connector_and_toolset_examples_stay_in_sync() {
    let env = C1Env::new().await;
    let connectors = env.h().engine(ConnectorProvider);
    let toolsets = env.h().engine(McpToolsetProvider);
    let app = json!(env.up.app);

    let secret = example("examples/conductorone/connector-config-secret.yaml");
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    env.h()
        .put_secret(secret_name, json!({"token": "ghp-test", "orgs": "acme"}))
        .await;
    let connector = adjusted(
        "examples/conductorone/connector.yaml",
        "c1",
        &[
            ("appId", app.clone()),
            ("catalogId", json!("catalog-github")),
            ("userIds", json!(["u-owner"])),
        ],
    );
    apply::<Connector>(env.h(), &connector).await;
    let live = until_ready(env.h(), &connectors, "connectors", "github").await;
    assert_in_sync(&connector, &live);

    // The toolset example refers to the connector example by name.
    let connector_id = live["status"]["id"].as_str().unwrap().to_string();
    for tool in ["search_issues", "get_file_contents"] {
        env.up
            .c1
            .seed_tool(&env.up.app, &connector_id, tool, TOOL_APPROVED);
    }
    let by_id = env
        .up
        .c1
        .seed_tool(&env.up.app, &connector_id, "list_commits", TOOL_APPROVED);
    let mut toolset = example("examples/conductorone/mcptoolset.yaml");
    toolset["spec"]["tools"][2]["id"] = json!(by_id);
    let toolset = adjusted_value(toolset, "c1", &[]);
    apply::<McpToolset>(env.h(), &toolset).await;
    let live = until_ready(env.h(), &toolsets, "mcptoolsets", "github-readers").await;
    assert_in_sync(&toolset, &live);
    let toolset_id = live["status"]["id"].as_str().unwrap().to_string();

    let existing = env.up.c1.seed_connector(&env.up.app, "Okta");
    let adopted = adjusted(
        "examples/conductorone/connector-adopted.yaml",
        "c1",
        &[("appId", app.clone()), ("externalId", json!(existing))],
    );
    apply::<Connector>(env.h(), &adopted).await;
    let live = until_ready(env.h(), &connectors, "connectors", "okta").await;
    assert_in_sync(&adopted, &live);

    let adopted = adjusted(
        "examples/conductorone/mcptoolset-adopted.yaml",
        "c1",
        &[
            ("appId", app),
            ("connectorId", json!(connector_id)),
            ("externalId", json!(toolset_id)),
        ],
    );
    apply::<McpToolset>(env.h(), &adopted).await;
    let live = until_ready(env.h(), &toolsets, "mcptoolsets", "github-triage").await;
    assert_in_sync(&adopted, &live);
}
