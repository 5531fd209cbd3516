//! For every kind, against the fakes: `import` then `plan` of its output shows every
//! object as `adopt` with nothing to change; applying it converges Ready with no upstream
//! write; a second `plan` exits 0.

use std::time::Duration;

use accessplane::api::envelope::{ConnectionRef, DeletionPolicy};
use accessplane::import::importer::{Options, Outcome, import};
use accessplane::import::output::{Format, render};
use accessplane::plan::manifests::load;
use accessplane::plan::planner::{self, plan};
use accessplane::plan::report::Action;
use accessplane::runtime::RunConfig;
use serde_json::json;

use crate::support::apply::create_all;
use crate::support::env::{C1, Ic, Operator, Seed, Serval, Setup};
use crate::support::fake_kube::FakeKube;

const NS: &str = "imported";
const TEAM: &str = "team-payments";
const CLUSTER: &str = "gw-1";
const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";
const TOOL: &str = "7a1f0000-0000-4000-8000-000000000001";

type Env = crate::support::env::Env<((C1, Ic), Serval), Operator>;

/// The import's options for `kind` through `connection` in `namespace`, with the scope
/// flags' values.
pub fn options(
    kind: &str,
    connection: &str,
    namespace: &str,
    flags: &[(&'static str, &str)],
) -> Options {
    let mut given = std::collections::BTreeMap::new();
    for (flag, value) in flags {
        given
            .entry(*flag)
            .or_insert_with(Vec::new)
            .push(value.to_string());
    }
    Options {
        kind: kind.into(),
        connection: ConnectionRef::local(connection),
        namespace: namespace.into(),
        credentials_namespace: "accessplane-system".into(),
        given,
        all: false,
        deletion_policy: DeletionPolicy::Orphan,
        observe: false,
        include_managed: false,
    }
}

/// What to import: kind, Connection, scope flags and their values.
type ImportOf = (&'static str, &'static str, Vec<(&'static str, String)>);

/// Upstream objects of every kind made by hand, as a tenant has them before accessplane.
fn seed(env: &Env) -> Vec<ImportOf> {
    let ((c1, ic), serval) = &env.up;
    let app = c1.app.clone();
    serval.serval.seed_profile(json!({"teamId": TEAM, "name": "Payments on-call",
        "description": "Break-glass",
        "matchingCriteria": {"groups": {"matchType": "ACCESS_PROFILE_GROUP_MATCH_TYPE_UNSPECIFIED",
                                        "includedGroupIds": ["grp-b", "grp-a"], "excludedGroupIds": []}},
        "grants": {"appResourceRoles": [{"appResourceRoleId": "role-1", "useTeamDefaultAccessProfile": false}],
                   "workflows": [{"workflowId": "wf-1"}]}}));
    serval
        .serval
        .seed_profile(json!({"teamId": TEAM, "name": "Read only"}));
    c1.c1.seed_entitlement(
        &app,
        json!({"displayName": "Prod DB read", "description": "Read the production database",
               "alias": "proddb", "durationGrant": "28800s"}),
    );
    let connector = c1.c1.seed_connector(&app, "GitHub");
    let tool = c1
        .c1
        .seed_tool(&app, &connector, "search_code", "MCP_TOOL_STATE_APPROVED");
    c1.c1
        .seed_tool(&app, &connector, "delete_repo", "MCP_TOOL_STATE_APPROVED");
    c1.c1
        .seed_toolset(&app, &connector, "GitHub readers", &[tool.as_str()]);
    ic.ic.add_virtual_server(CLUSTER, VS);
    ic.ic
        .seed_control(json!({"virtualServerId": VS, "personaRole": "analyst",
        "type": "ALLOWLIST", "tools": [TOOL]}));
    vec![
        ("AccessProfile", "serval", vec![("team", TEAM.to_string())]),
        ("AppEntitlement", "c1", vec![("app", app.clone())]),
        ("Connector", "c1", vec![("app", app.clone())]),
        (
            "McpToolset",
            "c1",
            vec![("app", app.clone()), ("connector", connector)],
        ),
        (
            "PersonaAccessControl",
            "ic",
            vec![("cluster", CLUSTER.to_string())],
        ),
    ]
}

fn upstream_writes(env: &Env) -> (usize, usize, usize) {
    let ((c1, ic), serval) = &env.up;
    (c1.c1.writes(), ic.ic.writes(), serval.serval.writes())
}

async fn plan_of(env: &Env, yaml: &str) -> accessplane::plan::report::Report {
    let input = load(&["-".into()], &mut yaml.as_bytes()).unwrap();
    let options = planner::Options {
        default_namespace: NS.into(),
        credentials_namespace: "accessplane-system".into(),
        prune_selector: None,
    };
    plan(&input, Some(env.kube.client()), &options)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_kind_imports_plans_as_adopt_and_applies_without_an_upstream_write() {
    let mut env: Env = Setup::<((C1, Ic), Serval)>::start()
        .await
        .operator(FakeKube::new(), Seed::Connections(NS))
        .patience(Duration::from_secs(60), Duration::from_millis(100));
    let scopes = seed(&env);
    let before = upstream_writes(&env);

    let mut yaml = String::new();
    let mut imported = 0;
    for (kind, connection, flags) in &scopes {
        let flags: Vec<(&'static str, &str)> =
            flags.iter().map(|(f, v)| (*f, v.as_str())).collect();
        let outcome: Outcome = import(
            &[],
            Some(env.kube.client()),
            &options(kind, connection, NS, &flags),
        )
        .await
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(
            !outcome.imported.is_empty(),
            "{kind}: nothing imported: {outcome:#?}"
        );
        imported += outcome.imported.len();
        yaml += &render(&outcome, Format::Yaml);
    }
    assert_eq!(upstream_writes(&env), before, "the import wrote upstream");

    let report = plan_of(&env, &yaml).await;
    assert_eq!(report.entries.len(), imported, "{report:#?}");
    for entry in &report.entries {
        assert_eq!(entry.action, Action::Adopt, "{entry:#?}\n{yaml}");
        assert!(
            entry.fields.is_empty() && entry.requests.is_empty(),
            "{entry:#?}"
        );
    }

    create_all(&env.kube, &yaml).await;
    env.start(RunConfig {
        namespace: Some(NS.into()),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        ..RunConfig::default()
    });
    let names: Vec<(String, String)> = report
        .entries
        .iter()
        .map(|e| (e.kind.clone(), e.name.clone()))
        .collect();
    env.wait("every imported resource Ready", |env| {
        for (kind, name) in &names {
            let plural = crate::support::fake_kube::guess_plural(kind);
            let obj = env.kube.get("accessplane.io/v1alpha1", &plural, NS, name);
            let ready = obj.as_ref().and_then(|o| {
                o["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")
                    .cloned()
            });
            if ready.as_ref().map(|r| r["status"].clone()) != Some(json!("True")) {
                return Err(format!("{kind} {name}: {ready:?}"));
            }
        }
        Ok(())
    })
    .await;
    assert_eq!(
        upstream_writes(&env),
        before,
        "applying the import wrote upstream"
    );

    let again = plan_of(&env, &yaml).await;
    assert_eq!(again.exit_code(), 0, "{again:#?}");
    env.stop(Duration::from_secs(30)).await;
}
