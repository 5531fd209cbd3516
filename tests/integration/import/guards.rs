//! What `accessplane import` must never do, each with a case that fails without the
//! guard: print a connector's configuration, take a built-in object or a toolset's
//! backing entitlement, name an object differently on a re-import, read more than the
//! scope's List pages, or take an object a resource already manages.

use accessplane::import::importer::{Outcome, import};
use accessplane::import::output::{Format, render};
use serde_json::json;

use super::round_trip::options;
use crate::support::env::C1Env;
use crate::support::harness::{Harness, NS, TEAM};

async fn import_from(
    h: &Harness,
    kind: &str,
    connection: &str,
    flags: &[(&'static str, &str)],
) -> Outcome {
    import(&[], Some(h.client()), &options(kind, connection, NS, flags))
        .await
        .unwrap_or_else(|e| panic!("{kind}: {e}"))
}

#[tokio::test]
async fn a_connectors_configuration_is_never_printed() {
    let env = C1Env::new().await;
    let c1 = &env.up.c1;
    let connector = c1.seed_connector(&env.up.app, "GitHub");
    // ConductorOne's Connector carries `config`; the fake answers with what it holds.
    c1.edit_connector(&connector, |c| {
        c["config"] = json!({"@type": "type.googleapis.com/c1.api.app.v1.EnvConfig",
                             "token": "SENTINEL-connector-token-91c2"});
    });
    let outcome = import_from(env.h(), "Connector", "c1", &[("app", &env.up.app)]).await;
    let yaml = render(&outcome, Format::Yaml);
    let json = render(&outcome, Format::Json);
    assert_eq!(outcome.imported.len(), 1, "{yaml}");
    for text in [&yaml, &json] {
        assert!(!text.contains("SENTINEL"), "{text}");
    }
    let spec = &outcome.imported[0].manifest["spec"];
    assert!(
        spec.get("configSecretRef").is_none() && spec.get("config").is_none(),
        "{spec}"
    );
    assert!(
        yaml.contains("# spec.configSecretRef is not imported"),
        "{yaml}"
    );
}

#[tokio::test]
async fn built_in_toolsets_and_a_teams_default_profile_are_skipped() {
    let env = C1Env::new().await;
    let (c1, app) = (&env.up.c1, env.up.app.as_str());
    let connector = c1.seed_connector(app, "GitHub");
    let ours = c1.seed_toolset(app, &connector, "GitHub readers", &[]);
    let outcome = import_from(
        env.h(),
        "McpToolset",
        "c1",
        &[("app", app), ("connector", &connector)],
    )
    .await;
    let imported: Vec<&str> = outcome.imported.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(imported, ["github-readers"], "{outcome:#?}");
    assert_eq!(outcome.imported[0].manifest["spec"]["externalId"], ours);
    let skipped: Vec<&str> = outcome
        .skipped
        .iter()
        .map(|s| s.display_name.as_str())
        .collect();
    assert_eq!(skipped.len(), 2, "{outcome:#?}");
    assert!(skipped.contains(&"All approved") && skipped.contains(&"Read-only"));
    assert!(
        outcome
            .skipped
            .iter()
            .all(|s| s.reason.contains("built into ConductorOne"))
    );

    let h = &Harness::new().await;
    h.serval
        .seed_profile(json!({"teamId": TEAM, "name": "Everyone", "isTeamDefault": true}));
    h.serval
        .seed_profile(json!({"teamId": TEAM, "name": "On-call"}));
    let outcome = import_from(h, "AccessProfile", "serval", &[("team", TEAM)]).await;
    assert_eq!(outcome.imported.len(), 1, "{outcome:#?}");
    assert_eq!(outcome.skipped.len(), 1, "{outcome:#?}");
    assert!(
        outcome.skipped[0].reason.contains("default profile"),
        "{outcome:#?}"
    );
}

#[tokio::test]
async fn a_toolsets_backing_entitlement_is_left_to_the_toolset() {
    let env = C1Env::new().await;
    let (c1, app) = (&env.up.c1, env.up.app.as_str());
    let connector = c1.seed_connector(app, "GitHub");
    c1.seed_toolset(app, &connector, "GitHub readers", &[]);
    c1.seed_entitlement(app, json!({"displayName": "Prod DB read"}));
    let outcome = import_from(env.h(), "AppEntitlement", "c1", &[("app", app)]).await;
    let imported: Vec<&str> = outcome.imported.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(imported, ["prod-db-read"], "{outcome:#?}");
    let backing = outcome
        .skipped
        .iter()
        .find(|s| s.display_name == "GitHub readers")
        .unwrap_or_else(|| panic!("{outcome:#?}"));
    assert!(backing.reason.contains("backs MCP toolset"), "{backing:?}");
    // The built-in toolsets' entitlements are refused as built into ConductorOne.
    assert_eq!(outcome.skipped.len(), 3, "{outcome:#?}");
}

#[tokio::test]
async fn name_collisions_are_resolved_stably_and_a_reimport_is_byte_identical() {
    let h = Harness::new().await;
    let first = h
        .serval
        .seed_profile(json!({"teamId": TEAM, "name": "On-call"}));
    h.serval
        .seed_profile(json!({"teamId": TEAM, "name": "on call"}));
    h.serval
        .seed_profile(json!({"teamId": TEAM, "name": "Payments"}));
    let once = render(
        &import_from(&h, "AccessProfile", "serval", &[("team", TEAM)]).await,
        Format::Yaml,
    );
    let twice = render(
        &import_from(&h, "AccessProfile", "serval", &[("team", TEAM)]).await,
        Format::Yaml,
    );
    assert_eq!(once, twice);
    let outcome = import_from(&h, "AccessProfile", "serval", &[("team", TEAM)]).await;
    let names: Vec<&str> = outcome.imported.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert!(names.contains(&"payments"), "{names:?}");
    let collided: Vec<&&str> = names.iter().filter(|n| n.starts_with("on-call-")).collect();
    assert_eq!(collided.len(), 2, "{names:?}");
    // The first profile keeps its name when the other goes away upstream.
    let kept = outcome
        .imported
        .iter()
        .find(|i| i.manifest["spec"]["externalId"] == first)
        .unwrap()
        .name
        .clone();
    h.serval
        .seed_profile(json!({"teamId": TEAM, "name": "ON-CALL"}));
    let more = import_from(&h, "AccessProfile", "serval", &[("team", TEAM)]).await;
    let same = more
        .imported
        .iter()
        .find(|i| i.manifest["spec"]["externalId"] == first)
        .unwrap();
    assert_eq!(same.name, kept);
}

#[tokio::test]
async fn a_scope_of_1000_profiles_costs_its_list_pages_and_no_more() {
    let h = Harness::new().await;
    for n in 0..1000 {
        h.serval
            .seed_profile(json!({"teamId": TEAM, "name": format!("Profile {n:04}")}));
    }
    h.serval.clear_requests();
    let outcome = import_from(&h, "AccessProfile", "serval", &[("team", TEAM)]).await;
    assert_eq!(outcome.imported.len(), 1000);
    let reads: Vec<String> = h
        .serval
        .requests()
        .iter()
        .filter(|r| !r.path.contains("token"))
        .map(|r| {
            format!(
                "{} {}?{}",
                r.method,
                r.path,
                r.query.clone().unwrap_or_default()
            )
        })
        .collect();
    // Page size 1000: one page (the Connection's verification is one more read).
    let lists = reads.iter().filter(|r| r.contains("teamId=")).count();
    println!(
        "import of 1000 profiles: {} upstream reads: {reads:?}",
        reads.len()
    );
    assert_eq!(lists, 1, "{reads:?}");
    assert!(reads.len() <= 2, "{reads:?}");
}

#[tokio::test]
async fn objects_a_resource_already_manages_are_skipped_unless_included() {
    let h = Harness::new().await;
    h.apply_profile("oncall", json!({"name": "On-call"})).await;
    h.settle("oncall", 4).await;
    h.serval
        .seed_profile(json!({"teamId": TEAM, "name": "Made by hand"}));
    let outcome = import_from(&h, "AccessProfile", "serval", &[("team", TEAM)]).await;
    let names: Vec<&str> = outcome.imported.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["made-by-hand"]);
    assert!(
        outcome.skipped[0].reason.contains(&format!("{NS}/oncall")),
        "{outcome:#?}"
    );
    let mut include = options("AccessProfile", "serval", NS, &[("team", TEAM)]);
    include.include_managed = true;
    let all = import(&[], Some(h.client()), &include).await.unwrap();
    assert_eq!(all.imported.len(), 2);
    assert!(!all.managed_checked);
}
