//! McpToolset end to end: real engine + real ConductorOne client against the fake C1.

use accessplane::api::McpToolset;
use accessplane::api::connection::UpstreamKind;
use accessplane::api::envelope::ConnectionRef;
use accessplane::providers::conductorone::McpToolsetProvider;
use accessplane::upstream::Call;
use serde_json::{Value, json};

use crate::support::env::{self, C1, Conn, Passes, Upstream};
use crate::support::fake_c1::FakeC1;
use crate::support::fake_c1::TOOL_APPROVED;
use crate::support::fake_http::{Fault, FaultMatch};
use crate::support::harness::NS;

const PENDING: &str = "MCP_TOOL_STATE_PENDING_REVIEW";

/// The fake tenant, with one app and one connector of it.
struct Tenant {
    c1: FakeC1,
    app: String,
    connector: String,
}

impl Upstream for Tenant {
    async fn start() -> (Self, Vec<Conn>) {
        let (C1 { c1, app }, connections) = C1::start().await;
        let connector = c1.seed_connector(&app, "GitHub MCP");
        (Self { c1, app, connector }, connections)
    }
}

type Env = env::Env<Tenant, Passes<McpToolset, McpToolsetProvider>>;

impl Env {
    /// A fresh environment, settling in up to six passes.
    async fn started() -> Self {
        let mut env = Self::new().await;
        env.run.settle_passes = 6;
        env
    }

    /// Creates an McpToolset; literal `appId`/`connectorId` unless the spec has a `connectorRef`.
    async fn apply(&self, name: &str, mut spec: Value) {
        spec["connectionRef"] = json!({"name": "c1"});
        if spec.get("connectorRef").is_none() {
            spec["appId"] = json!(self.up.app);
            spec["connectorId"] = json!(self.up.connector);
        }
        self.create(name, spec).await;
    }

    fn tool(&self, name: &str, state: &str) -> String {
        self.up
            .c1
            .seed_tool(&self.up.app, &self.up.connector, name, state)
    }

    fn toolsets_path(&self) -> String {
        format!(
            "/api/v1/apps/{}/connectors/{}/mcp_toolsets",
            self.up.app, self.up.connector
        )
    }

    /// Live toolsets of the connector that are not built in.
    fn own_toolsets(&self) -> Vec<Value> {
        let builtins = self
            .up
            .c1
            .builtin_toolsets(&self.up.app, &self.up.connector);
        self.up
            .c1
            .toolsets(&self.up.app, &self.up.connector)
            .into_iter()
            .filter(|t| {
                t["deletedAt"].is_null()
                    && !builtins.contains(&t["id"].as_str().unwrap().to_string())
            })
            .collect()
    }

    /// Sorted `mcpToolIds` of the binding calls whose path ends with `suffix`.
    fn binding_calls(&self, suffix: &str) -> Vec<Vec<String>> {
        self.up
            .c1
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with(suffix))
            .map(|r| {
                let mut ids: Vec<String> =
                    serde_json::from_value(r.body.unwrap()["mcpToolIds"].clone()).unwrap();
                ids.sort();
                ids
            })
            .collect()
    }

    /// A toolset made (or edited) behind the operator's back, through the API.
    async fn call_c1(&self, call: Call) -> Value {
        let client = self
            .h()
            .engine
            .connections
            .resolve(NS, &ConnectionRef::local("c1"), UpstreamKind::ConductorOne)
            .unwrap();
        client.json(call).await.unwrap()
    }

    async fn seed_toolset(&self, name: &str) -> String {
        let created = self
            .call_c1(
                Call::post("seed", self.toolsets_path().trim_start_matches('/'))
                    .json(json!({"displayName": name, "description": "made in the UI"})),
            )
            .await;
        created["profile"]["id"].as_str().unwrap().to_string()
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn create_binds_tools_by_name_and_id_and_reports_facts() {
    let env = Env::started().await;
    // Short pages: tool names are resolved across several pages of the catalogue.
    env.up.c1.set_page_size(2);
    for filler in ["a", "b", "c", "d"] {
        env.tool(filler, TOOL_APPROVED);
    }
    let read = env.tool("read_repo", TOOL_APPROVED);
    let issues = env.tool("list_issues", TOOL_APPROVED);
    env.apply(
        "github-readers",
        json!({"displayName": "GitHub readers", "description": "Read-only GitHub tools",
               "tools": [{"toolName": "read_repo"}, {"id": issues}]}),
    )
    .await;
    env.settle("github-readers").await;

    assert_eq!(
        env.ready("github-readers").0,
        "True",
        "{:?}",
        env.ready("github-readers")
    );
    let create = env
        .up
        .c1
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == env.toolsets_path())
        .unwrap();
    assert_eq!(
        create.body.unwrap(),
        json!({"displayName": "GitHub readers", "description": "Read-only GitHub tools"})
    );
    let id = env.id("github-readers");
    assert_eq!(
        sorted(env.up.c1.bindings(&id)),
        sorted(vec![read.clone(), issues.clone()])
    );
    assert_eq!(env.binding_calls("/tool_bindings").len(), 1, "one add call");
    let status = env.status("github-readers");
    let upstream = env.up.c1.toolset(&id).unwrap();
    assert_eq!(status["appEntitlementId"], upstream["appEntitlementId"]);
    assert!(
        env.up
            .c1
            .entitlement(&env.up.app, upstream["appEntitlementId"].as_str().unwrap())
            .is_some()
    );
    assert_eq!(status["toolCount"], 2);
    assert_eq!(status["boundToolIds"], json!(sorted(vec![read, issues])));
    assert_eq!(status["appId"], json!(env.up.app));
    assert_eq!(status["connectorId"], json!(env.up.connector));

    // Converged: a resync only reads.
    env.up.c1.clear_requests();
    env.pass("github-readers").await;
    assert_eq!(env.up.c1.writes(), 0);
}

#[tokio::test]
async fn unmanaged_tools_cost_one_read_per_resync() {
    let env = Env::started().await;
    env.apply("plain", json!({"displayName": "Plain"})).await;
    env.settle("plain").await;
    assert_eq!(env.ready("plain").0, "True");
    assert!(env.status("plain").get("boundToolIds").is_none());
    assert_eq!(env.status("plain")["toolCount"], 0);

    env.up.c1.clear_requests();
    env.pass("plain").await;
    let requests: Vec<String> = env
        .up
        .c1
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        requests,
        vec![format!("GET {}/{}", env.toolsets_path(), env.id("plain"))]
    );
}

#[tokio::test]
async fn connector_ref_waits_for_the_connector_id_and_deletion_outlives_the_connector() {
    let env = Env::started().await;
    env.apply(
        "by-ref",
        json!({"connectorRef": {"name": "github"}, "displayName": "By reference"}),
    )
    .await;
    env.settle("by-ref").await;
    let (status, reason, message) = env.ready("by-ref");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "WaitingForDependency")
    );
    assert_eq!(
        message,
        format!("Connector {NS}/github has no upstream id yet")
    );

    let connector = json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "Connector",
        "metadata": {"name": "github", "namespace": NS},
        "spec": {"connectionRef": {"name": "c1"}, "appId": env.up.app, "externalId": env.up.connector}});
    env.kube.put_object(connector.clone());
    env.pass("by-ref").await;
    assert_eq!(env.ready("by-ref").1, "WaitingForDependency", "no id yet");
    assert_eq!(env.up.c1.writes(), 0);

    let mut with_id = connector;
    with_id["status"] = json!({"id": env.up.connector});
    env.kube.put_object(with_id);
    env.settle("by-ref").await;
    assert_eq!(env.ready("by-ref").0, "True", "{:?}", env.ready("by-ref"));
    assert_eq!(env.own_toolsets().len(), 1);
    assert_eq!(env.status("by-ref")["connectorId"], json!(env.up.connector));

    // Both deleted together, the Connector resource first: the recorded ids still delete.
    let id = env.id("by-ref");
    env.kube
        .remove("accessplane.io/v1alpha1", "connectors", NS, "github");
    env.delete("by-ref").await;
    env.settle("by-ref").await;
    assert!(env.h().get("mcptoolsets", "by-ref").is_none());
    assert!(env.up.c1.toolset(&id).unwrap()["deletedAt"].is_string());
}

#[tokio::test]
async fn waiting_resource_is_deleted_without_its_connector() {
    let env = Env::started().await;
    env.apply(
        "never-created",
        json!({"connectorRef": {"name": "missing"}, "displayName": "Never created"}),
    )
    .await;
    env.settle("never-created").await;
    assert_eq!(env.ready("never-created").1, "WaitingForDependency");
    env.delete("never-created").await;
    env.settle("never-created").await;
    assert!(env.h().get("mcptoolsets", "never-created").is_none());
}

#[tokio::test]
async fn binding_diff_adds_and_removes_in_one_call_each() {
    let env = Env::started().await;
    let [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map(|n| env.tool(n, TOOL_APPROVED));
    let by_id = |ids: &[&String]| json!(ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>());
    env.apply(
        "toolset",
        json!({"displayName": "Toolset", "tools": by_id(&[&a, &b, &c])}),
    )
    .await;
    env.settle("toolset").await;
    env.up.c1.clear_requests();

    env.edit("toolset", json!({"tools": by_id(&[&a, &d, &e])}))
        .await;
    env.settle("toolset").await;

    assert_eq!(
        env.binding_calls("/tool_bindings"),
        vec![sorted(vec![d.clone(), e.clone()])]
    );
    assert_eq!(
        env.binding_calls("/tool_bindings/delete"),
        vec![sorted(vec![b, c])]
    );
    assert_eq!(
        env.up.c1.update_masks(),
        Vec::<String>::new(),
        "profile untouched"
    );
    assert_eq!(
        sorted(env.up.c1.bindings(&env.id("toolset"))),
        sorted(vec![a.clone(), d.clone(), e.clone()])
    );
    assert_eq!(
        env.status("toolset")["boundToolIds"],
        json!(sorted(vec![a, d, e]))
    );

    // `[]` removes them all.
    env.edit("toolset", json!({"tools": []})).await;
    env.settle("toolset").await;
    assert!(env.up.c1.bindings(&env.id("toolset")).is_empty());
    assert_eq!(env.status("toolset")["toolCount"], 0);
}

#[tokio::test]
async fn unapproved_and_unknown_tools_are_named_and_the_rest_bound() {
    let env = Env::started().await;
    let read = env.tool("read_repo", TOOL_APPROVED);
    env.tool("delete_repo", PENDING);
    env.apply(
        "partial",
        json!({"displayName": "Partial",
               "tools": [{"toolName": "read_repo"}, {"toolName": "delete_repo"}, {"toolName": "nope"}]}),
    )
    .await;
    env.settle("partial").await;

    let (status, reason, message) = env.synced("partial");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TerminalError")
    );
    assert!(
        message.contains("tool \"delete_repo\" is not approved (MCP_TOOL_STATE_PENDING_REVIEW)"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "tool \"nope\" does not exist on connector {}",
            env.up.connector
        )),
        "{message}"
    );
    // Ready names them all, with the reason of the first (in spec order).
    let (status, reason, ready) = env.ready("partial");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ToolNotApproved")
    );
    assert_eq!(ready, message);
    assert_eq!(env.up.c1.bindings(&env.id("partial")), vec![read]);
}

#[tokio::test]
async fn a_tool_missing_from_the_catalogue_is_tool_not_found() {
    let env = Env::started().await;
    let read = env.tool("read_repo", TOOL_APPROVED);
    env.apply(
        "missing",
        json!({"displayName": "Missing", "tools": [{"toolName": "nope"}, {"toolName": "read_repo"}]}),
    )
    .await;
    env.settle("missing").await;

    let (status, reason, message) = env.ready("missing");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ToolNotFound")
    );
    assert_eq!(
        message,
        format!(
            "tool \"nope\" does not exist on connector {}",
            env.up.connector
        )
    );
    assert_eq!(env.synced("missing").1, "TerminalError");
    assert_eq!(env.up.c1.bindings(&env.id("missing")), vec![read]);
}

#[tokio::test]
async fn display_name_drift_is_corrected_with_a_one_field_mask() {
    let env = Env::started().await;
    env.apply(
        "renamed",
        json!({"displayName": "Desired", "description": "kept"}),
    )
    .await;
    env.settle("renamed").await;
    let id = env.id("renamed");
    env.call_c1(
        Call::post("drift", format!("{}/{id}", env.toolsets_path().trim_start_matches('/')))
            .json(json!({"profile": {"id": id, "displayName": "Edited in the UI"}, "updateMask": "displayName"})),
    )
    .await;
    let before = env.up.c1.update_masks().len();
    env.up.c1.clear_requests();
    env.settle("renamed").await;

    assert_eq!(env.up.c1.update_masks()[before..], ["displayName"]);
    let update = env
        .up
        .c1
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with(&id))
        .unwrap();
    assert_eq!(
        update.body.unwrap(),
        json!({"profile": {"id": id, "appId": env.up.app, "connectorId": env.up.connector, "displayName": "Desired"},
               "updateMask": "displayName"})
    );
    assert_eq!(env.up.c1.toolset(&id).unwrap()["displayName"], "Desired");
    assert!(
        env.h()
            .event_reasons()
            .contains(&"DriftCorrected".to_string())
    );
}

#[tokio::test]
async fn adopts_by_external_id_and_orphans_it() {
    let env = Env::started().await;
    let id = env.seed_toolset("Existing").await;
    env.up.c1.clear_requests();
    env.apply(
        "adopted",
        json!({"externalId": id, "description": "managed in Git"}),
    )
    .await;
    env.settle("adopted").await;
    assert_eq!(env.ready("adopted").0, "True");
    assert_eq!(env.up.c1.update_masks(), vec!["description"]);
    assert_eq!(
        env.up.c1.count("POST", &env.toolsets_path()),
        1,
        "one update, no create"
    );
    assert_eq!(
        env.up.c1.toolset(&id).unwrap()["displayName"],
        "Existing",
        "unmanaged"
    );

    env.delete("adopted").await;
    env.settle("adopted").await;
    assert!(env.h().get("mcptoolsets", "adopted").is_none());
    assert!(
        env.up.c1.toolset(&id).unwrap()["deletedAt"].is_null(),
        "orphaned"
    );
}

#[tokio::test]
async fn observe_reports_drift_without_writes() {
    let env = Env::started().await;
    let id = env.seed_toolset("Actual").await;
    env.tool("read_repo", TOOL_APPROVED);
    env.up.c1.clear_requests();
    env.apply(
        "watched",
        json!({"externalId": id, "managementPolicy": "Observe", "displayName": "Desired",
               "tools": [{"toolName": "read_repo"}]}),
    )
    .await;
    env.settle("watched").await;
    let (status, reason, message) = env.ready("watched");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Drifted"));
    assert!(
        message.contains("displayName") && message.contains("tools"),
        "{message}"
    );
    assert_eq!(env.up.c1.writes(), 0);
}

#[tokio::test]
async fn lost_create_is_found_by_display_name_under_its_connector() {
    let env = Env::started().await;
    // Same name under another connector of the app: not a candidate.
    let other = env.up.c1.seed_connector(&env.up.app, "Other MCP");
    env.up.c1.push_fault(
        FaultMatch::new("POST", &env.toolsets_path()),
        Fault::ApplyThenDropConnection,
    );
    let other_path = format!("api/v1/apps/{}/connectors/{other}/mcp_toolsets", env.up.app);
    env.call_c1(Call::post("seed", other_path).json(json!({"displayName": "Recovered"})))
        .await;
    env.apply("recovered", json!({"displayName": "Recovered"}))
        .await;
    env.settle("recovered").await;

    let own = env.own_toolsets();
    assert_eq!(own.len(), 1, "exactly one created: {own:?}");
    assert_eq!(env.id("recovered"), own[0]["id"].as_str().unwrap());
    assert_eq!(env.ready("recovered").0, "True");
}

/// A read that fails right after the create (listing the new toolset's bindings is
/// forbidden) must not put the create in doubt: the id is recorded first, so the
/// toolset is bound once the read works again and never created twice.
#[tokio::test]
async fn a_failed_read_after_the_create_never_creates_twice() {
    let env = Env::started().await;
    let tool = env.tool("read_repo", TOOL_APPROVED);
    // The first GET under the collection after the create: its bindings.
    env.up.c1.push_fault(
        FaultMatch::new("GET", &env.toolsets_path()),
        Fault::status(403),
    );
    env.apply(
        "toolset",
        json!({"displayName": "Repo readers", "tools": [{"id": tool}]}),
    )
    .await;
    env.settle("toolset").await;
    assert_eq!(env.synced("toolset").1, "TerminalError");
    assert_eq!(env.own_toolsets().len(), 1);

    // Past the hold of the terminal error, the next pass finds the recorded toolset.
    env.h().clock.advance(std::time::Duration::from_secs(901));
    env.settle("toolset").await;
    let own = env.own_toolsets();
    assert_eq!(own.len(), 1, "created once: {own:?}");
    assert_eq!(env.id("toolset"), own[0]["id"].as_str().unwrap());
    assert_eq!(env.ready("toolset").0, "True", "{:?}", env.ready("toolset"));
    assert_eq!(env.status("toolset")["boundToolIds"], json!([tool]));
    let creates = env.up.c1.requests().into_iter().filter(|r| {
        r.method == "POST" && r.path == format!("/{}", env.toolsets_path().trim_start_matches('/'))
    });
    assert_eq!(creates.count(), 1);
}

#[tokio::test]
async fn builtin_toolset_is_never_written() {
    let env = Env::started().await;
    let builtin = env.up.c1.builtin_toolsets(&env.up.app, &env.up.connector)[0].clone();
    env.apply(
        "builtin",
        json!({"externalId": builtin, "deletionPolicy": "Delete", "description": "mine now"}),
    )
    .await;
    env.settle("builtin").await;
    let (status, reason, message) = env.synced("builtin");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TerminalError")
    );
    assert!(message.contains("built into ConductorOne"), "{message}");
    assert_eq!(
        env.ready("builtin"),
        ("False".into(), "Refused".into(), message)
    );

    env.delete("builtin").await;
    env.settle("builtin").await;
    assert_eq!(env.synced("builtin").1, "TerminalError", "deletion refused");
    assert_eq!(env.up.c1.writes(), 0);
    assert!(env.up.c1.toolset(&builtin).unwrap()["deletedAt"].is_null());
}

#[tokio::test]
async fn delete_cascades_to_the_entitlement_upstream() {
    let env = Env::started().await;
    let tool = env.tool("read_repo", TOOL_APPROVED);
    env.apply(
        "doomed",
        json!({"displayName": "Doomed", "deletionPolicy": "Delete", "tools": [{"id": tool}]}),
    )
    .await;
    env.settle("doomed").await;
    let id = env.id("doomed");
    let entitlement = env.status("doomed")["appEntitlementId"]
        .as_str()
        .unwrap()
        .to_string();
    env.up.c1.clear_requests();

    env.delete("doomed").await;
    env.settle("doomed").await;
    assert!(env.h().get("mcptoolsets", "doomed").is_none());
    assert!(env.up.c1.toolset(&id).unwrap()["deletedAt"].is_string());
    assert!(
        env.up.c1.entitlement(&env.up.app, &entitlement).unwrap()["deletedAt"].is_string(),
        "cascaded"
    );
    assert!(env.up.c1.bindings(&id).is_empty());
    let deletes: Vec<String> = env
        .up
        .c1
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path)
        .collect();
    assert_eq!(deletes, vec![format!("{}/{id}", env.toolsets_path())]);
    assert_eq!(
        env.binding_calls("/delete").len(),
        0,
        "bindings go with the toolset"
    );
}
