//! The plan equals what the operator then does, because both run the engine's one
//! decision ([`accessplane::engine::decision`]).
//!
//! The whole installation: a converged set
//! of every kind (two ConductorOne Connections' worth of objects, Serval profiles, a
//! gateway control) gets one mixed change set, applied as a user would: field edits,
//! tool bindings added and removed, new resources (a toolset with `tools`, a profile)
//! and one resource dropped under `--prune`. Per resource, the requests the plan lists
//! are the requests the reconciler then sends: one for one, in order, bodies included.
//!
//! And one case for each way the reconciler's execution goes beyond sending what was
//! decided: an adopted object (it writes the adoption mark too), a create in doubt (it
//! records the recovered id), an awaited asynchronous write (it sends nothing).

use std::collections::BTreeMap;
use std::sync::Arc;

use accessplane::api::{
    AccessProfile, AppEntitlement, Connector, McpToolset, PersonaAccessControl,
};
use accessplane::engine::{Engine, ManagedObject, Provider};
use accessplane::plan::manifests::load;
use accessplane::plan::planner::{Options, plan};
use accessplane::plan::report::{Action, Report};
use accessplane::providers::conductorone::{
    AppEntitlementProvider, ConnectorProvider, McpToolsetProvider,
};
use accessplane::providers::instaclustr::PersonaAccessControlProvider;
use accessplane::providers::serval::AccessProfileProvider;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::support::env::{C1, Env, Ic};
use crate::support::fake_c1::TOOL_APPROVED;
use crate::support::fake_http::Recorded;
use crate::support::harness::{Harness, NS, TEAM};

const GV: &str = "accessplane.io/v1alpha1";
const SELECTOR: &str = "app.kubernetes.io/instance=access";
const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";
const SEARCH: &str = "0f6f1e3a-1111-4222-8333-444455556666";
const FETCH: &str = "0f6f1e3a-1111-4222-8333-444455557777";

/// One resource of the installation.
#[derive(Clone)]
struct Resource {
    kind: &'static str,
    name: &'static str,
    spec: Value,
}

impl Resource {
    fn manifest(&self) -> Value {
        json!({"apiVersion": GV, "kind": self.kind,
            "metadata": {"name": self.name, "namespace": NS, "labels": {"app.kubernetes.io/instance": "access"}},
            "spec": self.spec})
    }

    fn plural(&self) -> String {
        self.kind.to_lowercase() + "s"
    }
}

/// Every kind's engine, and the upstream requests each resource's passes send.
struct Installation {
    env: Env<(C1, Ic), Harness>,
    toolsets: Arc<Engine<McpToolset, McpToolsetProvider>>,
    entitlements: Arc<Engine<AppEntitlement, AppEntitlementProvider>>,
    connectors: Arc<Engine<Connector, ConnectorProvider>>,
    profiles: Arc<Engine<AccessProfile, AccessProfileProvider>>,
    controls: Arc<Engine<PersonaAccessControl, PersonaAccessControlProvider>>,
}

impl Installation {
    /// C1 (the Connection `c1`), Serval (`serval`, the harness's own) and an Instaclustr
    /// gateway (`ic`) in one cluster.
    async fn new() -> Self {
        let env = Env::<(C1, Ic), Harness>::new().await;
        env.up.1.ic.add_virtual_server("gw-1", VS);
        let h = env.h();
        Self {
            toolsets: h.engine(McpToolsetProvider),
            entitlements: h.engine(AppEntitlementProvider),
            connectors: h.engine(ConnectorProvider),
            profiles: h.engine(AccessProfileProvider),
            controls: h.engine(PersonaAccessControlProvider::default()),
            env,
        }
    }

    fn h(&self) -> &Harness {
        self.env.h()
    }

    fn c1(&self) -> &C1 {
        &self.env.up.0
    }

    fn ic(&self) -> &crate::support::fake_instaclustr::FakeInstaclustr {
        &self.env.up.1.ic
    }

    /// Every upstream request so far, in the order of the three fakes.
    fn requests(&self) -> [Vec<Recorded>; 3] {
        [
            self.c1().c1.requests(),
            self.h().serval.requests(),
            self.ic().requests(),
        ]
    }

    /// The writes each fake received since `before`, together.
    fn writes_since(&self, before: &[Vec<Recorded>; 3]) -> Vec<(String, String, Value)> {
        self.requests()
            .iter()
            .zip(before)
            .flat_map(|(now, before)| writes(&now[before.len()..]))
            .collect()
    }

    /// Reconciles `resource` until it is Ready (or gone), as its controller would.
    async fn settle(&self, resource: &Resource) {
        match resource.kind {
            "McpToolset" => settle(self.h(), &self.toolsets, resource).await,
            "AppEntitlement" => settle(self.h(), &self.entitlements, resource).await,
            "Connector" => settle(self.h(), &self.connectors, resource).await,
            "AccessProfile" => settle(self.h(), &self.profiles, resource).await,
            "PersonaAccessControl" => settle(self.h(), &self.controls, resource).await,
            other => panic!("no engine for {other}"),
        }
    }

    /// `kubectl apply` of one resource: created, or its spec replaced.
    async fn apply(&self, resource: &Resource) {
        let h = self.h();
        let params = PatchParams::apply("kubectl").force();
        let patch = Patch::Apply(resource.manifest());
        let result = match resource.kind {
            "McpToolset" => apply::<McpToolset>(h, resource, &params, &patch).await,
            "AppEntitlement" => apply::<AppEntitlement>(h, resource, &params, &patch).await,
            "Connector" => apply::<Connector>(h, resource, &params, &patch).await,
            "AccessProfile" => apply::<AccessProfile>(h, resource, &params, &patch).await,
            "PersonaAccessControl" => {
                apply::<PersonaAccessControl>(h, resource, &params, &patch).await
            }
            other => panic!("cannot apply {other}"),
        };
        result.unwrap_or_else(|e| panic!("apply {}: {e}", resource.name));
    }

    fn id_of(&self, resource: &Resource) -> Option<String> {
        let obj = self.h().get(&resource.plural(), resource.name)?;
        obj["status"]["id"].as_str().map(str::to_string)
    }
}

async fn apply<K: ManagedObject>(
    h: &Harness,
    resource: &Resource,
    params: &PatchParams,
    patch: &Patch<Value>,
) -> kube::Result<()> {
    Api::<K>::namespaced(h.client(), NS)
        .patch(resource.name, params, patch)
        .await
        .map(drop)
}

async fn settle<K: ManagedObject, P: Provider<K>>(
    h: &Harness,
    engine: &Arc<Engine<K, P>>,
    resource: &Resource,
) {
    for _ in 0..60 {
        h.settle_kind(engine, resource.name, 8).await;
        let Some(obj) = h.get(&resource.plural(), resource.name) else {
            return;
        };
        let ready = crate::support::harness::condition(&obj, "Ready").map(|c| c["status"].clone());
        if ready == Some(json!("True")) && obj["status"]["pending"].is_null() {
            return;
        }
        // Asynchronous writes (the gateway) show after a while.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "{} {} did not settle: {:#?}",
        resource.kind,
        resource.name,
        h.get(&resource.plural(), resource.name)
    );
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
                r.path.trim_start_matches('/').to_string(),
                r.body.clone().unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// The planned requests of each resource (`CREATED_ID` left in), by name.
fn planned_by_resource(plan: &Report) -> BTreeMap<String, Vec<(String, String, Value)>> {
    plan.entries
        .iter()
        .map(|e| {
            let requests = e
                .requests
                .iter()
                .map(|r| {
                    (
                        r.method.clone(),
                        r.path.trim_start_matches('/').to_string(),
                        r.body.clone().unwrap_or(Value::Null),
                    )
                })
                .collect();
            (e.name.clone(), requests)
        })
        .collect()
}

/// `requests` with the placeholder of the id a create assigns replaced by `id`.
fn with_id(requests: &[(String, String, Value)], id: &str) -> Vec<(String, String, Value)> {
    let placeholder = accessplane::engine::plan::CREATED_ID;
    requests
        .iter()
        .map(|(method, path, body)| {
            let body = serde_json::from_str(&body.to_string().replace(placeholder, id)).unwrap();
            (method.clone(), path.replace(placeholder, id), body)
        })
        .collect()
}

#[tokio::test]
async fn the_plan_of_a_mixed_change_set_is_what_the_operator_sends() {
    let it = Installation::new().await;
    let (c1, app) = (&it.c1().c1, it.c1().app.clone());
    let under = c1.seed_connector(&app, "GitHub MCP");
    let search = c1.seed_tool(&app, &under, "search_issues", TOOL_APPROVED);
    c1.seed_tool(&app, &under, "get_file_contents", TOOL_APPROVED);
    c1.seed_tool(&app, &under, "list_repos", TOOL_APPROVED);
    let profile = |name: &str, description: &str| Resource {
        kind: "AccessProfile",
        name: Box::leak(name.to_string().into_boxed_str()),
        spec: json!({"connectionRef": {"name": "serval"}, "teamId": TEAM, "name": name,
            "description": description, "grants": {"workflows": [{"workflowId": "wf-approval"}]}}),
    };
    let toolset = |name: &'static str, display: &str, tools: Value| Resource {
        kind: "McpToolset",
        name,
        spec: json!({"connectionRef": {"name": "c1"}, "appId": app, "connectorId": under,
            "displayName": display, "tools": tools}),
    };
    let entitlement = |display: &str| Resource {
        kind: "AppEntitlement",
        name: "db-read",
        spec: json!({"connectionRef": {"name": "c1"}, "appId": app, "displayName": display, "alias": "prod-db-read"}),
    };
    let connector = |description: &str| Resource {
        kind: "Connector",
        name: "github",
        spec: json!({"connectionRef": {"name": "c1"}, "appId": app, "catalogId": "cat-github",
            "displayName": "GitHub", "description": description}),
    };
    let control = |tools: Value| Resource {
        kind: "PersonaAccessControl",
        name: "support",
        spec: json!({"connectionRef": {"name": "ic"}, "clusterId": "gw-1", "virtualServerId": VS,
            "personaRole": "support", "type": "ALLOWLIST", "tools": tools}),
    };
    let converged = [
        connector("GitHub org"),
        entitlement("Production DB read"),
        toolset(
            "readers",
            "Readers",
            json!([{"id": search}, {"toolName": "get_file_contents"}]),
        ),
        toolset("writers", "Writers", json!([])),
        profile("break-glass", "Break-glass access"),
        profile("on-call", "On-call access"),
        profile("retired", "Retired access"),
        control(json!([SEARCH])),
    ];
    for resource in &converged {
        it.apply(resource).await;
        it.settle(resource).await;
    }

    // The change set: an edit of every kind, bindings added and removed, two new
    // resources, and `retired` dropped from the input.
    let changed = [
        connector("GitHub organisation"),
        entitlement("Production database read"),
        toolset(
            "readers",
            "Repository readers",
            json!([{"toolName": "get_file_contents"}, {"toolName": "list_repos"}]),
        ),
        toolset("writers", "Writers (unused)", json!([])),
        toolset(
            "triage",
            "Triage",
            json!([{"id": search}, {"toolName": "list_repos"}]),
        ),
        profile("break-glass", "Break-glass access, audited"),
        profile("on-call", "On-call access"),
        profile("auditors", "Read-only audit access"),
        control(json!([SEARCH, FETCH])),
    ];
    let input: String = changed
        .iter()
        .map(|r| serde_json::to_string(&r.manifest()).unwrap() + "\n---\n")
        .collect();
    let loaded = load(&["-".into()], &mut input.as_bytes()).unwrap();
    let options = Options {
        default_namespace: NS.into(),
        credentials_namespace: "accessplane-system".into(),
        prune_selector: Some(SELECTOR.into()),
    };
    let before_plan = it.requests();
    let plan = plan(&loaded, Some(it.h().client()), &options)
        .await
        .unwrap();
    assert_eq!(
        it.writes_since(&before_plan),
        vec![],
        "the plan writes nothing"
    );
    let actions: BTreeMap<&str, Action> = plan
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.action))
        .collect();
    assert_eq!(
        actions,
        BTreeMap::from([
            ("github", Action::Update),
            ("db-read", Action::Update),
            ("readers", Action::Update),
            ("writers", Action::Update),
            ("triage", Action::Create),
            ("break-glass", Action::Update),
            ("on-call", Action::NoOp),
            ("auditors", Action::Create),
            ("support", Action::Update),
            ("retired", Action::Delete),
        ]),
        "{plan:#?}"
    );
    let planned = planned_by_resource(&plan);

    // Applied as a user would, then reconciled resource by resource: what each one's
    // passes send is what the plan listed for it.
    let mut sent = BTreeMap::new();
    for resource in &changed {
        it.apply(resource).await;
        let before = it.requests();
        it.settle(resource).await;
        sent.insert(resource.name.to_string(), it.writes_since(&before));
    }
    let retired = profile("retired", "Retired access");
    Api::<AccessProfile>::namespaced(it.h().client(), NS)
        .delete("retired", &DeleteParams::default())
        .await
        .unwrap();
    let before = it.requests();
    it.settle(&retired).await;
    assert!(
        it.h().get("accessprofiles", "retired").is_none(),
        "finalized"
    );
    sent.insert("retired".into(), it.writes_since(&before));

    let mut planned_total = 0;
    for (name, requests) in &planned {
        let resource = changed.iter().find(|r| r.name == name);
        let expected = match resource.and_then(|r| it.id_of(r)) {
            Some(id) => with_id(requests, &id),
            None => requests.clone(),
        };
        assert_eq!(sent[name], expected, "{name}: sent vs planned");
        planned_total += requests.len();
    }
    let sent_total: usize = sent.values().map(Vec::len).sum();
    assert_eq!(sent_total, planned_total);
    assert_eq!(planned_total, 12, "{planned:#?}");
    let readers: Vec<(&str, &str)> = planned["readers"]
        .iter()
        .map(|(method, path, _)| {
            (
                method.as_str(),
                path.rsplit_once("mcp_toolsets/").unwrap().1,
            )
        })
        .map(|(method, tail)| (method, tail.split_once('/').map_or("", |(_, rest)| rest)))
        .collect();
    assert_eq!(
        readers,
        [
            ("POST", ""),
            ("POST", "tool_bindings"),
            ("POST", "tool_bindings/delete")
        ],
        "the profile update, a binding added, one removed"
    );
    let triage: Vec<&str> = planned["triage"]
        .iter()
        .map(|(_, path, _)| path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        triage,
        ["mcp_toolsets", "tool_bindings"],
        "a new toolset with its bindings"
    );
}

/// What one pass of `name` sends upstream (writes only), through `engine`.
async fn one_pass<K: ManagedObject, P: Provider<K>>(
    it: &Installation,
    engine: &Arc<Engine<K, P>>,
    name: &str,
) -> Vec<(String, String, Value)> {
    let before = it.requests();
    it.h().pass(engine, name).await;
    it.writes_since(&before)
}

/// The planned requests of `resource` alone.
async fn plan_one(
    it: &Installation,
    resource: &Resource,
) -> (Action, Vec<(String, String, Value)>) {
    let input = serde_json::to_string(&resource.manifest()).unwrap() + "\n";
    let loaded = load(&["-".into()], &mut input.as_bytes()).unwrap();
    let options = Options {
        default_namespace: NS.into(),
        credentials_namespace: "accessplane-system".into(),
        prune_selector: None,
    };
    let plan = plan(&loaded, Some(it.h().client()), &options)
        .await
        .unwrap();
    let entry = &plan.entries[0];
    (
        entry.action,
        planned_by_resource(&plan).remove(resource.name).unwrap(),
    )
}

/// Adopted: a control already under the id the spec names, differing in its tools. The
/// plan shows the adoption's update; the reconciler marks the adoption in metadata and
/// sends that update.
#[tokio::test]
async fn an_adopted_object_is_updated_as_planned() {
    let it = Installation::new().await;
    it.ic().seed_control(json!({"virtualServerId": VS, "personaRole": "support", "type": "ALLOWLIST", "tools": [SEARCH]}));
    let support = Resource {
        kind: "PersonaAccessControl",
        name: "support",
        spec: json!({"connectionRef": {"name": "ic"}, "clusterId": "gw-1", "virtualServerId": VS,
            "personaRole": "support", "type": "ALLOWLIST", "tools": [SEARCH, FETCH]}),
    };

    let (action, planned) = plan_one(&it, &support).await;
    it.apply(&support).await;
    let sent = one_pass(&it, &it.controls, "support").await;

    assert_eq!(action, Action::Adopt);
    assert_eq!(planned.len(), 1, "{planned:#?}");
    assert_eq!(sent, planned);
    let annotations =
        &it.h().get("personaaccesscontrols", "support").unwrap()["metadata"]["annotations"];
    assert_eq!(
        annotations["accessplane.io/adopted"], "true",
        "the execution's own part"
    );
}

/// A create in doubt: the create mark is written, no id recorded (a crash after the
/// POST), and the object exists upstream with an older description. The plan shows its
/// update, not a second create; the reconciler recovers the object and sends that update.
#[tokio::test]
async fn a_create_in_doubt_is_recovered_and_updated_as_planned() {
    let it = Installation::new().await;
    let seeded = it
        .h()
        .serval
        .seed_profile(json!({"teamId": TEAM, "name": "recovered", "description": "old"}));
    let recovered = Resource {
        kind: "AccessProfile",
        name: "recovered",
        spec: json!({"connectionRef": {"name": "serval"}, "teamId": TEAM, "name": "recovered", "description": "new"}),
    };
    let mut manifest = recovered.manifest();
    manifest["metadata"]["annotations"] =
        json!({"accessplane.io/create-attempted": "2026-12-04T05:00:00Z"});
    manifest["metadata"]["finalizers"] = json!(["accessplane.io/finalizer"]);
    it.h().create::<AccessProfile>(manifest).await;

    let (action, planned) = plan_one(&it, &recovered).await;
    let sent = one_pass(&it, &it.profiles, "recovered").await;

    assert_eq!(action, Action::Update);
    assert_eq!(
        planned
            .iter()
            .map(|(m, p, _)| (m.as_str(), p.as_str()))
            .collect::<Vec<_>>(),
        [("PUT", format!("v2/access-profiles/{seeded}").as_str())]
    );
    assert_eq!(sent, planned);
    assert_eq!(
        it.id_of(&recovered).as_deref(),
        Some(seeded.as_str()),
        "the id recorded"
    );
}

/// An awaited asynchronous write: the gateway accepted an update that does not show
/// yet. The plan shows nothing to send, and the reconciler's next pass sends nothing.
#[tokio::test]
async fn an_awaited_update_is_neither_planned_nor_sent_again() {
    let it = Installation::new().await;
    let control = |tools: Value| Resource {
        kind: "PersonaAccessControl",
        name: "support",
        spec: json!({"connectionRef": {"name": "ic"}, "clusterId": "gw-1", "virtualServerId": VS,
            "personaRole": "support", "type": "ALLOWLIST", "tools": tools}),
    };
    it.apply(&control(json!([SEARCH]))).await;
    it.settle(&control(json!([SEARCH]))).await;
    it.ic()
        .set_visibility_delay(std::time::Duration::from_secs(600));
    let changed = control(json!([SEARCH, FETCH]));
    it.apply(&changed).await;
    let update = one_pass(&it, &it.controls, "support").await;
    assert_eq!(update.len(), 1, "the update is accepted: {update:#?}");
    let status = &it.h().get("personaaccesscontrols", "support").unwrap()["status"];
    assert_eq!(status["pending"]["operation"], "Update", "{status:#}");

    let (action, planned) = plan_one(&it, &changed).await;
    let sent = one_pass(&it, &it.controls, "support").await;

    assert_eq!(action, Action::NoOp);
    assert_eq!(planned, vec![]);
    assert_eq!(sent, planned, "nothing sent while the update is awaited");
}

/// `--prune` of a resource whose deletion the finalizer refuses (a team's default Serval
/// profile, adopted with `deletionPolicy: Delete`): the plan shows it blocked with the
/// finalizer's reason, and the operator, deleting it, sends nothing and says the same.
#[tokio::test]
async fn a_deletion_the_finalizer_refuses_is_planned_as_blocked() {
    let it = Installation::new().await;
    let default = it
        .h()
        .serval
        .seed_profile(json!({"teamId": TEAM, "name": "Team default", "isTeamDefault": true}));
    let adopted = Resource {
        kind: "AccessProfile",
        name: "team-default",
        spec: json!({"connectionRef": {"name": "serval"}, "teamId": TEAM, "externalId": default,
            "deletionPolicy": "Delete"}),
    };
    it.apply(&adopted).await;
    it.settle(&adopted).await;
    let options = Options {
        default_namespace: NS.into(),
        credentials_namespace: "accessplane-system".into(),
        prune_selector: Some(SELECTOR.into()),
    };
    let before = it.requests();

    let plan = plan(&[], Some(it.h().client()), &options).await.unwrap();

    let entry = &plan.entries[0];
    assert_eq!(
        (entry.name.as_str(), entry.action),
        ("team-default", Action::Blocked)
    );
    assert_eq!(entry.reason.as_deref(), Some("Refused"), "{entry:?}");
    assert!(entry.requests.is_empty());
    Api::<AccessProfile>::namespaced(it.h().client(), NS)
        .delete("team-default", &DeleteParams::default())
        .await
        .unwrap();
    it.h().pass(&it.profiles, "team-default").await;
    assert_eq!(it.writes_since(&before), vec![], "no DELETE sent");
    let ready = it
        .h()
        .condition_of("accessprofiles", "team-default", "Ready");
    assert_eq!(
        ready.1, "Refused",
        "the operator says what the plan said: {ready:?}"
    );
}
