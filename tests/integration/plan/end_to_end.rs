//! `accessplane plan` end to end against the fake upstreams and the fake apiserver: every
//! outcome per kind (create, update, adopt, no-op, delete/orphan under `--prune`,
//! blocked), no write anywhere while planning (upstream: only reads and token
//! exchanges; Kubernetes: only GETs), one List per scope instead of a GET per resource,
//! and a plan followed by a real reconcile sending exactly the planned requests, in order.

use accessplane::plan::manifests::load;
use accessplane::plan::planner::{Options, plan};
use accessplane::plan::report::{Action, Entry, Format, PlannedRequest, REDACTED, Report};
use serde_json::{Value, json};

use crate::support::env::{C1Env, Ic, IcEnv};
use crate::support::envtest::output;
use crate::support::fake_http::Recorded;
use crate::support::harness::{Harness, NS, TEAM};

const GV: &str = "accessplane.io/v1alpha1";

async fn plan_of(h: &Harness, yaml: &str, prune: Option<&str>) -> Report {
    let input = load(&["-".into()], &mut yaml.as_bytes()).unwrap();
    let options = Options {
        default_namespace: NS.into(),
        credentials_namespace: "accessplane-system".into(),
        prune_selector: prune.map(str::to_string),
    };
    plan(&input, Some(h.client()), &options).await.unwrap()
}

fn entry<'a>(plan: &'a Report, name: &str) -> &'a Entry {
    plan.entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no entry {name} in {plan:#?}"))
}

/// Each entry's name and action, in order.
fn actions(plan: &Report) -> Vec<(&str, Action)> {
    plan.entries
        .iter()
        .map(|e| (e.name.as_str(), e.action))
        .collect()
}

/// A manifest of the group with a spec, as one YAML stream document.
fn manifest(kind: &str, name: &str, spec: Value) -> String {
    serde_json::to_string(
        &json!({"apiVersion": GV, "kind": kind, "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap()
        + "\n---\n"
}

/// Requests that write: not a GET, not a token exchange, not a ConductorOne search (a
/// POST that reads).
fn writes(requests: &[Recorded]) -> Vec<(String, String, Value)> {
    requests
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("token") && !r.path.contains("search"))
        .map(|r| {
            (
                r.method.clone(),
                r.path.clone(),
                r.body.clone().unwrap_or(Value::Null),
            )
        })
        .collect()
}

fn planned(requests: &[PlannedRequest]) -> Vec<(String, String, Value)> {
    requests
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.path.clone(),
                r.body.clone().unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// The planned requests with the placeholder of the id a create assigns replaced.
fn with_id(requests: Vec<(String, String, Value)>, id: &str) -> Vec<(String, String, Value)> {
    let placeholder = accessplane::engine::plan::CREATED_ID;
    requests
        .into_iter()
        .map(|(method, path, body)| {
            let body = serde_json::from_str(&body.to_string().replace(placeholder, id)).unwrap();
            (method, path.replace(placeholder, id), body)
        })
        .collect()
}

fn kube_writes(h: &Harness) -> usize {
    h.kube.writes().len()
}

fn profile_spec(name: &str) -> Value {
    json!({
        "connectionRef": {"name": "serval"},
        "teamId": TEAM,
        "name": name,
        "description": "Break-glass access",
        "grants": {"workflows": [{"workflowId": "wf-approval"}]}
    })
}

/// Every AccessProfile outcome, no write anywhere, and the reconcile then sends what the
/// plan said: the create's POST and the update's PUT, bodies included.
#[tokio::test]
async fn serval_outcomes_without_writes_then_the_reconcile_does_what_the_plan_said() {
    let h = Harness::new().await;
    h.apply_profile("existing", profile_spec("Existing")).await;
    h.apply_profile("same", profile_spec("Same")).await;
    h.settle("existing", 4).await;
    h.settle("same", 4).await;
    let seeded = h
        .serval
        .seed_profile(json!({"teamId": TEAM, "name": "Made by hand", "description": "old"}));
    let mut changed = profile_spec("Existing");
    changed["description"] = json!("Changed in Git");
    let input = [
        manifest("AccessProfile", "new", profile_spec("New")),
        manifest("AccessProfile", "existing", changed.clone()),
        manifest("AccessProfile", "same", profile_spec("Same")),
        manifest(
            "AccessProfile",
            "adopted",
            json!({"connectionRef": {"name": "serval"}, "teamId": TEAM, "externalId": seeded, "description": "new"}),
        ),
        manifest(
            "AccessProfile",
            "ghost",
            json!({"connectionRef": {"name": "serval"}, "teamId": TEAM, "externalId": "ap-nope"}),
        ),
        manifest(
            "AccessProfile",
            "nowhere",
            json!({"connectionRef": {"name": "missing"}, "teamId": TEAM, "name": "x"}),
        ),
        manifest("AccessProfile", "typo", json!({"connectionRef": {"name": "serval"}, "teamID": TEAM})),
        manifest("AccessProfiles", "bad-kind", json!({})),
    ]
    .concat();
    let (kube_before, serval_before) = (kube_writes(&h), h.serval.requests().len());

    let plan = plan_of(&h, &input, None).await;

    assert_eq!(kube_writes(&h), kube_before, "no write to Kubernetes");
    let during = &h.serval.requests()[serval_before..];
    assert_eq!(writes(during), vec![], "no write upstream");
    assert_eq!(
        actions(&plan),
        [
            ("new", Action::Create),
            ("existing", Action::Update),
            ("same", Action::NoOp),
            ("adopted", Action::Adopt),
            ("ghost", Action::Blocked),
            ("nowhere", Action::Blocked),
            ("typo", Action::Blocked),
            ("bad-kind", Action::Blocked),
        ]
    );
    assert_eq!(entry(&plan, "existing").fields, ["description"]);
    let change = &entry(&plan, "existing").changes[0];
    assert_eq!(
        (change.field, change.from.clone(), change.to.clone()),
        (
            "description",
            Some(json!("Break-glass access")),
            Some(json!("Changed in Git"))
        ),
        "upstream now, then the spec"
    );
    assert_eq!(entry(&plan, "adopted").fields, ["description"]);
    assert_eq!(entry(&plan, "adopted").id.as_deref(), Some(seeded.as_str()));
    let ghost = entry(&plan, "ghost");
    assert_eq!(ghost.reason.as_deref(), Some("NotFound"));
    assert!(
        ghost.message.as_ref().unwrap().contains("ap-nope"),
        "{ghost:?}"
    );
    let nowhere = entry(&plan, "nowhere");
    assert_eq!(nowhere.reason.as_deref(), Some("WaitingForDependency"));
    assert!(
        nowhere
            .message
            .as_ref()
            .unwrap()
            .contains("Connection default/missing")
            || nowhere.message.as_ref().unwrap().contains("missing"),
        "{nowhere:?}"
    );
    let typo = entry(&plan, "typo");
    assert_eq!(typo.reason.as_deref(), Some("Invalid"));
    assert!(
        typo.message.as_ref().unwrap().contains("teamId"),
        "names the field: {typo:?}"
    );
    assert!(
        entry(&plan, "bad-kind")
            .message
            .as_ref()
            .unwrap()
            .contains("not an accessplane kind")
    );
    assert_eq!(plan.exit_code(), 1, "blocked resources make the plan fail");

    // The plan's requests are the reconcile's, in order.
    let before = h.serval.requests().len();
    h.apply_profile("new", profile_spec("New")).await;
    h.settle("new", 4).await;
    h.edit_profile_spec("existing", json!({"description": "Changed in Git"}))
        .await;
    h.settle("existing", 4).await;
    let sent = writes(&h.serval.requests()[before..]);
    let mut expected = planned(&entry(&plan, "new").requests);
    expected.extend(planned(&entry(&plan, "existing").requests));
    assert_eq!(sent, expected);
    assert_eq!(expected.len(), 2, "{expected:?}");

    let again = plan_of(
        &h,
        &[
            manifest("AccessProfile", "new", profile_spec("New")),
            manifest("AccessProfile", "existing", changed),
        ]
        .concat(),
        None,
    )
    .await;
    assert!(
        again.entries.iter().all(|e| e.action == Action::NoOp),
        "{again:#?}"
    );
    assert_eq!(again.exit_code(), 0);
}

/// `--prune`: resources under the selector missing from the input are deleted upstream
/// by policy Delete (their recorded id named), kept by Orphan; others are not listed.
#[tokio::test]
async fn prune_plans_deletion_by_policy() {
    let h = Harness::new().await;
    for (name, policy) in [("kept", None), ("gone", None), ("orphaned", Some("Orphan"))] {
        let mut spec = profile_spec(name);
        if let Some(policy) = policy {
            spec["deletionPolicy"] = json!(policy);
        }
        h.create::<accessplane::api::AccessProfile>(json!({"apiVersion": GV, "kind": "AccessProfile",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/instance": "access"}}, "spec": spec}))
            .await;
        h.settle(name, 4).await;
    }
    h.apply_profile("unlabelled", profile_spec("unlabelled"))
        .await;
    let gone_id = h.status_id("gone").unwrap();
    let kube_before = kube_writes(&h);

    let plan = plan_of(
        &h,
        &manifest("AccessProfile", "kept", profile_spec("kept")),
        Some("app.kubernetes.io/instance=access"),
    )
    .await;

    assert_eq!(kube_writes(&h), kube_before);
    assert_eq!(
        actions(&plan),
        [
            ("kept", Action::NoOp),
            ("gone", Action::Delete),
            ("orphaned", Action::Orphan)
        ]
    );
    assert_eq!(entry(&plan, "gone").id.as_deref(), Some(gone_id.as_str()));
    assert!(
        entry(&plan, "gone")
            .message
            .as_ref()
            .unwrap()
            .contains(&gone_id)
    );
    assert_eq!(plan.exit_code(), 2);
}

/// Planning many resources of one scope reads them with one List (as a resync wave),
/// not one GET each.
#[tokio::test]
async fn resources_of_one_scope_are_read_with_one_list() {
    let h = Harness::new().await;
    let names: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
    for name in &names {
        h.apply_profile(name, profile_spec(name)).await;
        h.settle(name, 4).await;
    }
    let input: String = names
        .iter()
        .map(|n| manifest("AccessProfile", n, profile_spec(n)))
        .collect();
    let before = h.serval.requests().len();

    let plan = plan_of(&h, &input, None).await;

    assert!(
        plan.entries.iter().all(|e| e.action == Action::NoOp),
        "{plan:#?}"
    );
    let reads: Vec<String> = h.serval.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v2/access-profiles"))
        // The Connection's verification read.
        .filter(|r| !r.path.ends_with("connection-check"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        reads,
        ["/v2/access-profiles"],
        "one List page for 12 resources"
    );
}

/// ConductorOne: a Connector created with its config Secret from the input (values
/// never printed, keys shown), the toolset under it planned as created after it, an
/// entitlement created; then a reconcile sends exactly the planned creates.
#[tokio::test]
async fn conductorone_creates_with_dependencies_and_hidden_config() {
    let env = C1Env::new().await;
    let h = env.h();
    let token = "ghp_plan_secret_value";
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: github-config}}\nstringData: {{token: {token}, orgs: acme}}\n---\n"
    );
    let connector = manifest(
        "Connector",
        "github",
        json!({"connectionRef": {"name": "c1"}, "appId": env.up.app, "catalogId": "cat-github", "displayName": "GitHub", "configSecretRef": {"name": "github-config"}}),
    );
    let toolset = manifest(
        "McpToolset",
        "readers",
        json!({"connectionRef": {"name": "c1"}, "connectorRef": {"name": "github"}, "displayName": "Readers"}),
    );
    let entitlement_spec = json!({"connectionRef": {"name": "c1"}, "appId": env.up.app, "displayName": "Production DB read", "alias": "prod-db-read",
        "provisionerPolicy": {"manual": {"instructions": "Add the user to db-readers"}},
        "deprovisionerPolicy": {"manual": {"instructions": "Remove the user from db-readers"}}});
    let entitlement = manifest("AppEntitlement", "db-read", entitlement_spec.clone());
    let input = [
        secret.clone(),
        toolset.clone(),
        connector.clone(),
        entitlement,
    ]
    .concat();
    let (kube_before, c1_before) = (kube_writes(h), env.up.c1.requests().len());

    let plan = plan_of(h, &input, None).await;

    assert_eq!(kube_writes(h), kube_before);
    assert_eq!(
        writes(&env.up.c1.requests()[c1_before..]),
        vec![],
        "no write upstream"
    );
    assert_eq!(
        actions(&plan),
        [
            ("readers", Action::Create),
            ("github", Action::Create),
            ("db-read", Action::Create)
        ],
        "input order kept: {plan:#?}"
    );
    let readers = entry(&plan, "readers");
    assert!(
        readers
            .message
            .as_ref()
            .unwrap()
            .contains("Connector platform-access/github"),
        "{readers:?}"
    );
    for format in [
        Format::Json,
        Format::Markdown,
        Format::Text { colour: false },
    ] {
        let text = plan.render(format);
        assert!(!text.contains(token), "the config value is never printed");
    }
    let github = entry(&plan, "github");
    let config_call = github
        .requests
        .iter()
        .find_map(|r| {
            r.body
                .as_ref()
                .filter(|b| b.to_string().contains("configuration"))
        })
        .unwrap_or_else(|| panic!("the config request: {github:#?}"));
    assert!(config_call.to_string().contains(REDACTED), "{config_call}");
    assert!(
        config_call.to_string().contains("\"token\""),
        "the changed keys are shown"
    );

    // The reconcile sends the planned requests: the create, then the update of what a
    // create cannot set (the deprovisioner policy, the configuration), in order.
    let before = env.up.c1.requests().len();
    h.put_secret("github-config", json!({"token": token, "orgs": "acme"}))
        .await;
    let engine = h.engine(accessplane::providers::conductorone::AppEntitlementProvider);
    h.create::<accessplane::api::AppEntitlement>(json!({"apiVersion": GV, "kind": "AppEntitlement", "metadata": {"name": "db-read"}, "spec": entitlement_spec})).await;
    h.pass(&engine, "db-read").await;
    let sent = writes(&env.up.c1.requests()[before..]);
    let id = h.get("appentitlements", "db-read").unwrap()["status"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let expected = with_id(planned(&entry(&plan, "db-read").requests), &id);
    assert_eq!(sent, expected);
    assert_eq!(
        expected.len(),
        2,
        "create, then the deprovisioner policy: {expected:?}"
    );

    let before = env.up.c1.requests().len();
    let engine = h.engine(accessplane::providers::conductorone::ConnectorProvider);
    let spec: Value =
        serde_yaml::from_str::<Value>(connector.trim_end_matches("---\n")).unwrap()["spec"].clone();
    h.create::<accessplane::api::Connector>(json!({"apiVersion": GV, "kind": "Connector", "metadata": {"name": "github"}, "spec": spec})).await;
    h.pass(&engine, "github").await;
    let sent = writes(&env.up.c1.requests()[before..]);
    let id = h.get("connectors", "github").unwrap()["status"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let expected = with_id(planned(&github.requests), &id);
    assert_eq!(sent.len(), expected.len(), "{sent:?}");
    assert_eq!(
        expected.len(),
        2,
        "create, then the configuration: {expected:?}"
    );
    for ((method, path, body), (pm, pp, pbody)) in sent.iter().zip(&expected) {
        assert_eq!((method, path), (pm, pp));
        if pbody.to_string().contains(REDACTED) {
            // Every config value is hidden in the plan.
            let hidden = body
                .to_string()
                .replace(token, REDACTED)
                .replace("\"acme\"", &format!("\"{REDACTED}\""));
            assert_eq!(hidden, pbody.to_string());
        } else {
            assert_eq!(body, pbody);
        }
    }

    // A rotated configuration value in the input: an update of `config` whose values
    // are never shown, upstream (not read back) or from the Secret.
    let rotated = "ghp_rotated_secret_value";
    let input = secret.replace(token, rotated) + &connector;
    let plan = plan_of(h, &input, None).await;
    let github = entry(&plan, "github");
    assert_eq!(
        (github.action, github.fields.clone()),
        (Action::Update, vec!["config".to_string()]),
        "{github:?}"
    );
    assert_eq!(
        (github.changes[0].from.clone(), github.changes[0].to.clone()),
        (None, None)
    );
    for format in [
        Format::Json,
        Format::Markdown,
        Format::Text { colour: false },
    ] {
        let text = plan.render(format);
        assert!(!text.contains(rotated) && !text.contains(token), "{text}");
    }
}

/// A toolset whose tools change: the update's binding requests (added and removed) as
/// the reconcile then sends them; an unapproved tool blocks with the reason the
/// resource would show.
#[tokio::test]
async fn toolset_binding_changes_are_planned_as_sent() {
    use accessplane::providers::conductorone::McpToolsetProvider;
    let env = C1Env::new().await;
    let h = env.h();
    let connector = env.up.c1.seed_connector(&env.up.app, "GitHub MCP");
    let search = env.up.c1.seed_tool(
        &env.up.app,
        &connector,
        "search_issues",
        crate::support::fake_c1::TOOL_APPROVED,
    );
    let files = env.up.c1.seed_tool(
        &env.up.app,
        &connector,
        "get_file_contents",
        crate::support::fake_c1::TOOL_APPROVED,
    );
    let spec = |tools: Value| json!({"connectionRef": {"name": "c1"}, "appId": env.up.app, "connectorId": connector, "displayName": "Readers", "tools": tools});
    let engine = h.engine(McpToolsetProvider);
    h.create::<accessplane::api::McpToolset>(json!({"apiVersion": GV, "kind": "McpToolset", "metadata": {"name": "readers"}, "spec": spec(json!([{"id": search}]))})).await;
    h.settle_kind(&engine, "readers", 6).await;
    let wanted = spec(json!([{"id": files}]));
    let c1_before = env.up.c1.requests().len();

    let plan = plan_of(h, &manifest("McpToolset", "readers", wanted.clone()), None).await;

    assert_eq!(writes(&env.up.c1.requests()[c1_before..]), vec![]);
    let readers = entry(&plan, "readers");
    assert_eq!(readers.action, Action::Update, "{readers:?}");
    assert_eq!(readers.fields, ["tools"]);
    assert_eq!(
        readers.changes[0].from,
        Some(json!([search])),
        "bound now, by id"
    );
    assert_eq!(readers.changes[0].to, Some(json!([{"id": files}])));
    let expected = planned(&readers.requests);
    assert!(
        expected.len() >= 2,
        "a binding added and one removed: {expected:?}"
    );

    let before = env.up.c1.requests().len();
    let api: kube::Api<accessplane::api::McpToolset> = kube::Api::namespaced(h.client(), NS);
    api.patch(
        "readers",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"spec": {"tools": [{"id": files}]}})),
    )
    .await
    .unwrap();
    h.pass(&engine, "readers").await;
    assert_eq!(writes(&env.up.c1.requests()[before..]), expected);

    let blocked = plan_of(
        h,
        &manifest(
            "McpToolset",
            "readers",
            spec(json!([{"toolName": "no_such_tool"}])),
        ),
        None,
    )
    .await;
    let readers = entry(&blocked, "readers");
    assert_eq!(
        readers.reason.as_deref(),
        Some("ToolNotFound"),
        "{readers:?}"
    );

    // A tool awaiting approval, with what is bound already: nothing can be sent for it,
    // and the plan says why as the resource would.
    let pending = env.up.c1.seed_tool(
        &env.up.app,
        &connector,
        "delete_repo",
        "MCP_TOOL_STATE_PENDING_REVIEW",
    );
    let unapproved = plan_of(
        h,
        &manifest(
            "McpToolset",
            "readers",
            spec(json!([{"id": files}, {"id": pending}])),
        ),
        None,
    )
    .await;
    let readers = entry(&unapproved, "readers");
    assert_eq!(
        (readers.action, readers.reason.as_deref()),
        (Action::Blocked, Some("ToolNotApproved")),
        "{readers:?}"
    );
    assert!(
        readers.message.as_ref().unwrap().contains(&pending),
        "names the tool: {readers:?}"
    );
}

/// PersonaAccessControl: a create (its one request), and a write the gateway cluster
/// cannot take now blocked with the reason the resource would show.
#[tokio::test]
async fn persona_access_control_create_and_busy_cluster() {
    let IcEnv {
        run: h,
        up: Ic { ic },
        ..
    } = IcEnv::new().await;
    const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";
    const SEARCH: &str = "0f6f1e3a-1111-4222-8333-444455556666";
    const FETCH: &str = "0f6f1e3a-1111-4222-8333-444455557777";
    ic.add_virtual_server("gw-1", VS);
    let spec = json!({"connectionRef": {"name": "ic"}, "clusterId": "gw-1", "virtualServerId": VS, "personaRole": "support", "type": "ALLOWLIST", "tools": [SEARCH]});
    let input = manifest("PersonaAccessControl", "support", spec);
    let before = ic.requests().len();

    let plan = plan_of(&h, &input, None).await;

    let support = entry(&plan, "support");
    assert_eq!(support.action, Action::Create, "{support:?}");
    assert_eq!(support.requests.len(), 1);
    assert_eq!(support.requests[0].method, "POST");
    assert_eq!(
        support.requests[0].body.as_ref().unwrap()["personaRole"],
        "support"
    );
    assert_eq!(writes(&ic.requests()[before..]), vec![]);

    ic.set_cluster_state("gw-1", "RUNNING", "PERFORMING_OPERATION");
    let busy = plan_of(&h, &input, None).await;
    let support = entry(&busy, "support");
    assert_eq!(support.action, Action::Blocked);
    assert_eq!(
        support.reason.as_deref(),
        Some("WaitingForDependency"),
        "{support:?}"
    );
    assert_eq!(ic.writes(), 0);

    // Once the cluster takes writes again, the reconcile sends the planned request.
    ic.set_cluster_state("gw-1", "RUNNING", "NO_OPERATION");
    let planned_create = planned(&entry(&plan_of(&h, &input, None).await, "support").requests);
    let engine =
        h.engine(accessplane::providers::instaclustr::PersonaAccessControlProvider::default());
    let value: Value = serde_yaml::from_str(input.trim_end_matches("---\n")).unwrap();
    h.create::<accessplane::api::PersonaAccessControl>(value)
        .await;
    let before = ic.requests().len();
    h.pass(&engine, "support").await;
    assert_eq!(writes(&ic.requests()[before..]), planned_create);

    // Converged: no-op; a changed tool list: the PUT the reconcile then sends.
    for _ in 0..40 {
        h.pass(&engine, "support").await;
        if h.condition_of("personaaccesscontrols", "support", "Ready")
            .0
            == "True"
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let same = plan_of(&h, &input, None).await;
    assert_eq!(entry(&same, "support").action, Action::NoOp, "{same:#?}");
    let mut edited: Value = serde_yaml::from_str(input.trim_end_matches("---\n")).unwrap();
    edited["spec"]["tools"] = json!([SEARCH, FETCH]);
    let changed = plan_of(&h, &(serde_json::to_string(&edited).unwrap() + "\n"), None).await;
    let support = entry(&changed, "support");
    assert_eq!(
        (support.action, support.fields.clone()),
        (Action::Update, vec!["tools".to_string()])
    );
    let before = ic.requests().len();
    let api = kube::Api::<accessplane::api::PersonaAccessControl>::namespaced(h.client(), NS);
    api.patch(
        "support",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"spec": {"tools": [SEARCH, FETCH]}})),
    )
    .await
    .unwrap();
    h.pass(&engine, "support").await;
    assert_eq!(writes(&ic.requests()[before..]), planned(&support.requests));
}

/// The binary: exit codes 0 (nothing to change), 2 (changes), 1 (blocked, bad usage),
/// the JSON document, and the same binary installed as the kubectl plugin
/// `kubectl-accessplane` (`kubectl accessplane plan ...`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_like_terraform_detailed_exitcode() {
    use crate::support::kube_server::KubeServer;
    let h = Harness::new().await;
    h.apply_profile("same", profile_spec("Same")).await;
    h.settle("same", 4).await;
    let server = KubeServer::start(h.kube.clone()).await;
    let dir = std::env::temp_dir().join(format!("accessplane-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig(NS)).unwrap();
    let plugin = dir.join("kubectl-accessplane");
    std::fs::copy(env!("CARGO_BIN_EXE_accessplane"), &plugin).unwrap();
    let run = |binary: std::path::PathBuf, args: Vec<&'static str>, stdin: String| {
        let kubeconfig = kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            let mut plan = std::process::Command::new(binary);
            plan.env_clear();
            let out = output(plan, &args, &kubeconfig, Some(&stdin));
            (
                out.status.code().unwrap(),
                String::from_utf8(out.stdout).unwrap(),
                String::from_utf8(out.stderr).unwrap(),
            )
        })
    };
    let binary = || std::path::PathBuf::from(env!("CARGO_BIN_EXE_accessplane"));
    let kube_before = kube_writes(&h);

    let same = manifest("AccessProfile", "same", profile_spec("Same"));
    let (code, stdout, stderr) = run(binary(), vec!["plan", "-f", "-"], same.clone())
        .await
        .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("no-op") && !stdout.contains('\u{1b}'),
        "no colour off a terminal: {stdout}"
    );

    let new = manifest("AccessProfile", "new", profile_spec("New"));
    let (code, stdout, stderr) = run(
        plugin.clone(),
        vec!["plan", "-f", "-", "-o", "json"],
        new.clone() + &same,
    )
    .await
    .unwrap();
    assert_eq!(code, 2, "{stdout}{stderr}");
    let document: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(document["formatVersion"], "1");
    assert_eq!(document["entries"][0]["action"], "create");
    assert_eq!(document["entries"][0]["requests"][0]["method"], "POST");
    // A gate that fails only on blocked resources; the kubeconfig context by name.
    let gate = vec!["plan", "-f", "-", "--changes-exit-code=0", "--context=fake"];
    let (code, stdout, stderr) = run(binary(), gate, new.clone()).await.unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("create"), "{stdout}");
    let (code, _, stderr) = run(binary(), vec!["plan", "-f", "-", "--context=nope"], new)
        .await
        .unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("nope"), "names the context: {stderr}");

    let blocked = manifest(
        "AccessProfile",
        "x",
        json!({"connectionRef": {"name": "missing"}, "teamId": TEAM}),
    );
    let (code, stdout, _) = run(binary(), vec!["plan", "-f", "-", "-o", "markdown"], blocked)
        .await
        .unwrap();
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("| blocked"), "{stdout}");

    let (code, _, stderr) = run(binary(), vec!["plan", "-f", "-", "--prune"], same)
        .await
        .unwrap();
    assert_eq!(
        code, 1,
        "--prune without a selector is a usage error, not 'changes': {stderr}"
    );
    assert!(stderr.contains("--selector"), "{stderr}");
    assert_eq!(
        kube_writes(&h),
        kube_before,
        "the binary wrote nothing to Kubernetes"
    );
}

/// A change the apiserver would refuse (an immutable field, against the cluster's copy)
/// is blocked as `Invalid` with the rule's message, before anything upstream is read.
#[tokio::test]
async fn an_immutable_field_change_is_blocked_as_admission_would() {
    let h = Harness::new().await;
    h.apply_profile("same", profile_spec("Same")).await;
    h.settle("same", 4).await;
    let mut moved = profile_spec("Same");
    moved["teamId"] = json!("team-other");

    let plan = plan_of(&h, &manifest("AccessProfile", "same", moved), None).await;

    let same = entry(&plan, "same");
    assert_eq!(same.action, Action::Blocked);
    assert_eq!(same.reason.as_deref(), Some("Invalid"));
    assert!(
        same.message
            .as_ref()
            .unwrap()
            .contains("spec.teamId is immutable"),
        "{same:?}"
    );
}

/// ConductorOne entitlements and connectors: no-op when converged, update of the changed
/// fields (then sent exactly so by the reconcile), adoption by `externalId`.
#[tokio::test]
async fn conductorone_updates_no_ops_and_adoptions() {
    use accessplane::providers::conductorone::{AppEntitlementProvider, ConnectorProvider};
    let env = C1Env::new().await;
    let h = env.h();
    let entitlement = |description: &str| json!({"connectionRef": {"name": "c1"}, "appId": env.up.app, "displayName": "DB read", "alias": "db-read", "description": description});
    let connector = |description: &str| json!({"connectionRef": {"name": "c1"}, "appId": env.up.app, "catalogId": "cat-github", "displayName": "GitHub", "description": description});
    let entitlements = h.engine(AppEntitlementProvider);
    let connectors = h.engine(ConnectorProvider);
    h.create::<accessplane::api::AppEntitlement>(json!({"apiVersion": GV, "kind": "AppEntitlement", "metadata": {"name": "db-read"}, "spec": entitlement("v1")})).await;
    h.create::<accessplane::api::Connector>(json!({"apiVersion": GV, "kind": "Connector", "metadata": {"name": "github"}, "spec": connector("v1")})).await;
    h.settle_kind(&entitlements, "db-read", 5).await;
    h.settle_kind(&connectors, "github", 5).await;
    let seeded = env.up.c1.seed_entitlement(
        &env.up.app,
        json!({"displayName": "Made by hand", "description": "old"}),
    );
    let adopted = json!({"connectionRef": {"name": "c1"}, "appId": env.up.app, "externalId": seeded, "description": "new"});
    let input = |version: &str| {
        [
            manifest("AppEntitlement", "db-read", entitlement(version)),
            manifest("Connector", "github", connector(version)),
            manifest("AppEntitlement", "adopted", adopted.clone()),
        ]
        .concat()
    };
    let before = env.up.c1.requests().len();

    let same = plan_of(h, &input("v1"), None).await;
    let changed = plan_of(h, &input("v2"), None).await;

    assert_eq!(writes(&env.up.c1.requests()[before..]), vec![]);
    assert_eq!(
        actions(&same),
        [
            ("db-read", Action::NoOp),
            ("github", Action::NoOp),
            ("adopted", Action::Adopt)
        ],
        "{same:#?}"
    );
    assert_eq!(
        actions(&changed),
        [
            ("db-read", Action::Update),
            ("github", Action::Update),
            ("adopted", Action::Adopt)
        ]
    );
    assert_eq!(entry(&changed, "db-read").fields, ["description"]);
    assert_eq!(entry(&changed, "github").fields, ["description"]);
    assert_eq!(entry(&same, "adopted").fields, ["description"]);

    let before = env.up.c1.requests().len();
    let patch = kube::api::Patch::Merge(json!({"spec": {"description": "v2"}}));
    kube::Api::<accessplane::api::AppEntitlement>::namespaced(h.client(), NS)
        .patch("db-read", &Default::default(), &patch)
        .await
        .unwrap();
    kube::Api::<accessplane::api::Connector>::namespaced(h.client(), NS)
        .patch("github", &Default::default(), &patch)
        .await
        .unwrap();
    h.pass(&entitlements, "db-read").await;
    h.pass(&connectors, "github").await;
    let mut expected = planned(&entry(&changed, "db-read").requests);
    expected.extend(planned(&entry(&changed, "github").requests));
    assert_eq!(writes(&env.up.c1.requests()[before..]), expected);
}

/// `--offline`: no cluster, the Connection and its Secret from the input; a Connection
/// the input lacks blocks the resource saying where it was looked for.
#[tokio::test]
async fn offline_plans_from_the_input_alone() {
    let h = Harness::new().await;
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{clientId: {}, clientSecret: {}}}\n---\n",
        crate::support::harness::CLIENT_ID,
        crate::support::harness::CLIENT_SECRET
    );
    let connection = manifest(
        "Connection",
        "serval",
        json!({"serval": {"baseUrl": h.serval.base_url(), "credentialsSecretRef": {"name": "creds"}}}),
    );
    let mut orphan = profile_spec("Elsewhere");
    orphan["connectionRef"] = json!({"name": "not-in-input"});
    let input = [
        secret,
        connection,
        manifest("AccessProfile", "new", profile_spec("New")),
        manifest("AccessProfile", "elsewhere", orphan),
    ]
    .concat();
    let loaded = load(&["-".into()], &mut input.as_bytes()).unwrap();
    let options = Options {
        default_namespace: NS.into(),
        credentials_namespace: "accessplane-system".into(),
        prune_selector: None,
    };
    let before = h.kube.requests().len();

    let plan = plan(&loaded, None, &options).await.unwrap();

    assert_eq!(h.kube.requests().len(), before, "no request to any cluster");
    assert_eq!(
        actions(&plan),
        [("new", Action::Create), ("elsewhere", Action::Blocked)]
    );
    let elsewhere = entry(&plan, "elsewhere");
    assert!(
        elsewhere
            .message
            .as_ref()
            .unwrap()
            .contains("neither in the input nor in the cluster"),
        "{elsewhere:?}"
    );
}

/// An accepted asynchronous create that is not visible yet is awaited, not planned again,
/// while the operator waits for it (its grace period); once that has passed the operator
/// sends it again, and so does the plan.
#[tokio::test]
async fn an_awaited_create_is_not_planned_again() {
    use accessplane::engine::plan::{Planned, plan as plan_one};
    use accessplane::providers::serval::AccessProfileProvider;
    let h = Harness::new().await;
    let accepted_at = |requested_at: String| -> accessplane::api::AccessProfile {
        serde_json::from_value(json!({
            "apiVersion": GV, "kind": "AccessProfile",
            "metadata": {"name": "awaited", "namespace": NS},
            "spec": profile_spec("Awaited"),
            "status": {"id": "ap-accepted", "pending": {"operation": "Create", "generation": 1, "requestedAt": requested_at}}
        }))
        .unwrap()
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let recent = accepted_at(now.to_string());
    let expired = accepted_at((now - std::time::Duration::from_secs(3600)).to_string());

    let planned = plan_one(
        &AccessProfileProvider,
        &recent,
        &h.read_only_serval(),
        &(),
        None,
        None,
    )
    .await;
    let planned_after_grace = plan_one(
        &AccessProfileProvider,
        &expired,
        &h.read_only_serval(),
        &(),
        None,
        None,
    )
    .await;

    assert!(
        matches!(&planned, Planned::Pending { message } if message.contains(&now.to_string())),
        "{planned:?}"
    );
    assert!(
        matches!(&planned_after_grace, Planned::Create { .. }),
        "{planned_after_grace:?}"
    );
}

/// The outcomes not covered above, for the ConductorOne kinds: a converged toolset is a
/// no-op; a toolset and a connector named by `externalId` are adopted; an `externalId`
/// that does not exist blocks an entitlement and a connector with `NotFound`; and
/// `--prune` deletes each kind's recorded upstream object.
#[tokio::test]
async fn conductorone_other_outcomes_and_prune() {
    use accessplane::api::{AppEntitlement, Connector, McpToolset};
    use accessplane::providers::conductorone::{
        AppEntitlementProvider, ConnectorProvider, McpToolsetProvider,
    };
    let env = C1Env::new().await;
    let h = env.h();
    let app = env.up.app.clone();
    let under = env.up.c1.seed_connector(&app, "GitHub MCP");
    let labelled = |kind: &str, name: &str, spec: Value| json!({"apiVersion": GV, "kind": kind, "metadata": {"name": name, "labels": {"plan": "test"}}, "spec": spec});
    let toolset = |name: &str| json!({"connectionRef": {"name": "c1"}, "appId": app, "connectorId": under, "displayName": name});
    let (ae, cn, ts) = (
        h.engine(AppEntitlementProvider),
        h.engine(ConnectorProvider),
        h.engine(McpToolsetProvider),
    );
    h.create::<AppEntitlement>(labelled("AppEntitlement", "ae-gone", json!({"connectionRef": {"name": "c1"}, "appId": app, "displayName": "Gone", "alias": "gone"}))).await;
    h.create::<Connector>(labelled("Connector", "cn-gone", json!({"connectionRef": {"name": "c1"}, "appId": app, "catalogId": "cat", "displayName": "Gone"}))).await;
    h.create::<McpToolset>(labelled("McpToolset", "ts-gone", toolset("Gone")))
        .await;
    h.create::<McpToolset>(labelled("McpToolset", "ts-kept", toolset("Kept")))
        .await;
    h.settle_kind(&ae, "ae-gone", 5).await;
    h.settle_kind(&cn, "cn-gone", 5).await;
    h.settle_kind(&ts, "ts-gone", 6).await;
    h.settle_kind(&ts, "ts-kept", 6).await;
    let id = |plural: &str, name: &str| {
        h.get(plural, name).unwrap()["status"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ae_gone, cn_gone, ts_gone, ts_kept) = (
        id("appentitlements", "ae-gone"),
        id("connectors", "cn-gone"),
        id("mcptoolsets", "ts-gone"),
        id("mcptoolsets", "ts-kept"),
    );
    let legacy = env.up.c1.seed_connector(&app, "Legacy");
    let input = [
        manifest("McpToolset", "ts-kept", toolset("Kept")),
        manifest("McpToolset", "ts-adopted", json!({"connectionRef": {"name": "c1"}, "appId": app, "connectorId": under, "externalId": ts_kept})),
        manifest("Connector", "cn-adopted", json!({"connectionRef": {"name": "c1"}, "appId": app, "externalId": legacy, "description": "now managed"})),
        manifest("AppEntitlement", "ae-missing", json!({"connectionRef": {"name": "c1"}, "appId": app, "externalId": "no-such-entitlement"})),
        manifest("Connector", "cn-missing", json!({"connectionRef": {"name": "c1"}, "appId": app, "externalId": "no-such-connector"})),
    ]
    .concat();
    let (kube_before, c1_before) = (kube_writes(h), env.up.c1.requests().len());

    let plan = plan_of(h, &input, Some("plan=test")).await;

    assert_eq!(kube_writes(h), kube_before);
    assert_eq!(writes(&env.up.c1.requests()[c1_before..]), vec![]);
    assert_eq!(
        actions(&plan),
        [
            ("ts-kept", Action::NoOp),
            // ts-kept manages that toolset: one owner per upstream object.
            ("ts-adopted", Action::Blocked),
            ("cn-adopted", Action::Adopt),
            ("ae-missing", Action::Blocked),
            ("cn-missing", Action::Blocked),
            // --prune, by kind: connectors, entitlements, toolsets.
            ("cn-gone", Action::Delete),
            ("ae-gone", Action::Delete),
            ("ts-gone", Action::Delete),
        ],
        "{plan:#?}"
    );
    assert_eq!(entry(&plan, "cn-adopted").fields, ["description"]);
    let claimant = entry(&plan, "ts-adopted");
    assert_eq!(claimant.reason.as_deref(), Some("AlreadyManaged"));
    assert!(
        claimant.message.as_deref().unwrap().contains(&ts_kept),
        "{claimant:?}"
    );
    for name in ["ae-missing", "cn-missing"] {
        assert_eq!(
            entry(&plan, name).reason.as_deref(),
            Some("NotFound"),
            "{name}"
        );
    }
    for (name, id) in [
        ("ae-gone", &ae_gone),
        ("cn-gone", &cn_gone),
        ("ts-gone", &ts_gone),
    ] {
        assert_eq!(entry(&plan, name).id.as_ref(), Some(id), "{name}");
    }
}

/// PersonaAccessControl: an existing control under the id the spec names is adopted;
/// `--prune` deletes a labelled control the input dropped.
#[tokio::test]
async fn persona_access_control_adopt_and_prune() {
    use accessplane::api::PersonaAccessControl;
    use accessplane::providers::instaclustr::PersonaAccessControlProvider;
    const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";
    let IcEnv {
        run: h,
        up: Ic { ic },
        ..
    } = IcEnv::new().await;
    ic.add_virtual_server("gw-1", VS);
    let spec = |role: &str| json!({"connectionRef": {"name": "ic"}, "clusterId": "gw-1", "virtualServerId": VS, "personaRole": role, "type": "DENYLIST"});
    let engine = h.engine(PersonaAccessControlProvider::default());
    h.create::<PersonaAccessControl>(json!({"apiVersion": GV, "kind": "PersonaAccessControl", "metadata": {"name": "gone", "labels": {"plan": "test"}}, "spec": spec("gone")})).await;
    for _ in 0..40 {
        h.pass(&engine, "gone").await;
        if h.condition_of("personaaccesscontrols", "gone", "Ready").0 == "True" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let seeded = ic
        .seed_control(json!({"virtualServerId": VS, "personaRole": "auditor", "type": "DENYLIST"}));

    let plan = plan_of(
        &h,
        &manifest("PersonaAccessControl", "auditor", spec("auditor")),
        Some("plan=test"),
    )
    .await;

    assert_eq!(
        actions(&plan),
        [("auditor", Action::Adopt), ("gone", Action::Delete)],
        "{plan:#?}"
    );
    assert_eq!(entry(&plan, "auditor").id.as_deref(), Some(seeded.as_str()));
    assert_eq!(
        entry(&plan, "gone").id.as_deref(),
        Some(format!("{VS}_gone").as_str())
    );
    assert_eq!(ic.writes(), 1, "only the reconcile's create of `gone`");
}

/// A create in doubt (marked, no id recorded: a crash after the POST) is looked up by
/// natural key as the reconciler does, and found: the object is the resource's own, not
/// something to create a second time.
#[tokio::test]
async fn a_create_in_doubt_is_recovered_not_planned_twice() {
    use accessplane::engine::plan::{Planned, plan as plan_one};
    use accessplane::providers::serval::AccessProfileProvider;
    let h = Harness::new().await;
    let seeded = h
        .serval
        .seed_profile(json!({"teamId": TEAM, "name": "Recovered"}));
    let in_doubt: accessplane::api::AccessProfile = serde_json::from_value(json!({
        "apiVersion": GV, "kind": "AccessProfile",
        "metadata": {"name": "recovered", "namespace": NS,
                     "annotations": {"accessplane.io/create-attempted": "2026-12-04T05:00:00Z"}},
        "spec": {"connectionRef": {"name": "serval"}, "teamId": TEAM, "name": "Recovered"}
    }))
    .unwrap();

    let planned = plan_one(
        &AccessProfileProvider,
        &in_doubt,
        &h.read_only_serval(),
        &(),
        None,
        None,
    )
    .await;

    assert!(
        matches!(&planned, Planned::NoOp { id, adopted: false } if *id == seeded),
        "{planned:?}"
    );
}

/// `--prune` as the PreSync Role allows it (commit 26aaf73, found on the real apiserver,
/// where that Role cannot list cluster-wide): the binary lists each managed kind with the
/// selector in the input's namespaces and the default one, never cluster-wide and never
/// in another namespace, and says who it is on every request (`User-Agent:
/// accessplane-plan/<version>`), read from the fake apiserver's request log as the real
/// tier reads its audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prunes_only_in_the_input_namespaces_as_accessplane_plan() {
    use crate::support::kube_server::KubeServer;
    const USER_AGENT: &str = concat!("accessplane-plan/", env!("CARGO_PKG_VERSION"));
    const SELECTOR: &str = "app.kubernetes.io/instance=access";
    let h = Harness::new().await;
    let labels = json!({"app.kubernetes.io/instance": "access"});
    h.create::<accessplane::api::AccessProfile>(json!({"apiVersion": GV, "kind": "AccessProfile",
        "metadata": {"name": "gone", "labels": labels}, "spec": profile_spec("Gone")}))
        .await;
    h.settle("gone", 4).await;
    // The same Connection in team-x; a labelled profile where the input has nothing.
    for (api_version, plural, name) in [
        ("v1", "secrets", "serval-credentials"),
        (GV, "connections", "serval"),
    ] {
        let mut obj = h.kube.get(api_version, plural, NS, name).unwrap();
        obj["metadata"] = json!({"name": name, "namespace": "team-x", "generation": 1});
        h.kube.put_object(obj);
    }
    h.kube
        .put_object(json!({"apiVersion": GV, "kind": "AccessProfile",
        "metadata": {"name": "far", "namespace": "elsewhere", "labels": labels, "generation": 1},
        "spec": profile_spec("Far")}));
    let input = manifest("AccessProfile", "new", profile_spec("New"))
        + &serde_json::to_string(&json!({"apiVersion": GV, "kind": "AccessProfile",
            "metadata": {"name": "remote", "namespace": "team-x"}, "spec": profile_spec("Remote")}))
        .unwrap();
    let server = KubeServer::start(h.kube.clone()).await;
    let dir = std::env::temp_dir().join(format!("accessplane-prune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig(NS)).unwrap();
    let before = h.kube.requests().len();

    let out = tokio::task::spawn_blocking(move || {
        let mut plan = std::process::Command::new(env!("CARGO_BIN_EXE_accessplane"));
        plan.env_clear();
        let args = ["plan", "-f", "-", "--prune", "-l", SELECTOR, "-o", "json"];
        output(plan, &args, &kubeconfig, Some(&input))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let document: Value = serde_json::from_str(&stdout).unwrap();
    let entries: Vec<(String, String)> = document["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (format!("{}/{}", s("namespace"), s("name")), s("action"))
        })
        .collect();
    assert_eq!(
        entries,
        [
            (format!("{NS}/new"), "create".to_string()),
            ("team-x/remote".to_string(), "create".to_string()),
            (format!("{NS}/gone"), "delete".to_string()),
        ],
        "{stdout}"
    );

    let requests = h.kube.requests()[before..].to_vec();
    assert!(!requests.is_empty());
    let wrong: Vec<String> = requests
        .iter()
        .filter(|r| r.method != "GET" || r.user_agent.as_deref() != Some(USER_AGENT))
        .map(|r| format!("{} {}: {:?}", r.method, r.path, r.user_agent))
        .collect();
    assert!(wrong.is_empty(), "not GETs as {USER_AGENT}: {wrong:?}");
    let plurals = [
        "connectors",
        "appentitlements",
        "mcptoolsets",
        "accessprofiles",
        "personaaccesscontrols",
    ];
    let mut lists: Vec<String> = vec![];
    for r in &requests {
        let Some(rest) = r.path.strip_prefix(&format!("/apis/{GV}/")) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [plural] if plurals.contains(plural) => {
                panic!("a cluster-wide List of {plural}: {} {}", r.path, r.query)
            }
            ["namespaces", ns, plural]
                if plurals.contains(plural)
                    && r.query_param("labelSelector").as_deref() == Some(SELECTOR) =>
            {
                lists.push(format!("{ns}/{plural}"));
            }
            _ => {}
        }
        assert!(
            !r.path.contains("/namespaces/elsewhere/"),
            "read outside the input's namespaces: {}",
            r.path
        );
    }
    lists.sort();
    let mut expected: Vec<String> = [NS, "team-x"]
        .iter()
        .flat_map(|ns| plurals.map(|p| format!("{ns}/{p}")))
        .collect();
    expected.sort();
    assert_eq!(lists, expected, "one prune List per kind and namespace");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A new toolset with `tools`: the plan shows its create and the binding request that
/// follows it (sent by the next pass, once the id is recorded), and the operator then
/// sends exactly these, in order.
#[tokio::test]
async fn a_new_toolset_with_tools_is_planned_with_its_bindings() {
    use accessplane::providers::conductorone::McpToolsetProvider;
    let env = C1Env::new().await;
    let h = env.h();
    let connector = env.up.c1.seed_connector(&env.up.app, "GitHub MCP");
    let approved = crate::support::fake_c1::TOOL_APPROVED;
    let search = env
        .up
        .c1
        .seed_tool(&env.up.app, &connector, "search_issues", approved);
    env.up
        .c1
        .seed_tool(&env.up.app, &connector, "get_file_contents", approved);
    let spec = json!({"connectionRef": {"name": "c1"}, "appId": env.up.app, "connectorId": connector,
        "displayName": "Readers", "tools": [{"id": search}, {"toolName": "get_file_contents"}]});
    let c1_before = env.up.c1.requests().len();

    let plan = plan_of(h, &manifest("McpToolset", "readers", spec.clone()), None).await;

    assert_eq!(writes(&env.up.c1.requests()[c1_before..]), vec![]);
    let readers = entry(&plan, "readers");
    assert_eq!(readers.action, Action::Create, "{readers:?}");
    let expected = planned(&readers.requests);
    assert_eq!(
        expected
            .iter()
            .map(|(m, p, _)| (m.as_str(), p.rsplit('/').next().unwrap()))
            .collect::<Vec<_>>(),
        [("POST", "mcp_toolsets"), ("POST", "tool_bindings")],
        "the create, then the bindings: {expected:#?}"
    );

    let before = env.up.c1.requests().len();
    let engine = h.engine(McpToolsetProvider);
    h.create::<accessplane::api::McpToolset>(
        json!({"apiVersion": GV, "kind": "McpToolset", "metadata": {"name": "readers"}, "spec": spec}),
    )
    .await;
    h.settle_kind(&engine, "readers", 6).await;
    let id = h.get("mcptoolsets", "readers").unwrap()["status"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        writes(&env.up.c1.requests()[before..]),
        with_id(expected, &id)
    );
    assert_eq!(env.up.c1.bindings(&id).len(), 2);
}
