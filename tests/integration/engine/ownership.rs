//! One resource manages one upstream object (`src/engine/ownership.rs`), with the whole
//! operator against the fake apiserver and a fake Serval: a second resource naming an
//! object another one manages gets `AlreadyManaged` and sends nothing; deleting it
//! leaves the object; once the owner lets go, a claimant takes the object over.

use std::time::Duration;

use accessplane::engine::requeue::Timing;
use accessplane::runtime::RunConfig;
use serde_json::{Value, json};

use crate::support::env::{Operator, Seed, Serval, Setup};
use crate::support::fake_kube::FakeKube;

const API: &str = "accessplane.io/v1alpha1";
const TEAM_A: &str = "team-a";
const TEAM_B: &str = "team-b";

type Env = crate::support::env::Env<Serval, Operator>;

/// The `serval` Connection (and its Secret) in both namespaces: one tenant, one
/// credential, two teams.
async fn two_teams() -> Env {
    let env = Setup::<Serval>::start()
        .await
        .operator(FakeKube::new(), Seed::Connections(TEAM_A))
        .patience(Duration::from_secs(60), Duration::from_millis(100));
    for kind in ["Secret", "Connection"] {
        let (api, plural) = match kind {
            "Secret" => ("v1", "secrets"),
            _ => (API, "connections"),
        };
        for mut obj in env.kube.list(api, plural, Some(TEAM_A)) {
            obj["metadata"] = json!({"name": obj["metadata"]["name"], "namespace": TEAM_B});
            obj.as_object_mut().unwrap().remove("status");
            env.kube.put_object(obj);
        }
    }
    env
}

/// The operator resyncing every second, so that a fight would show within seconds.
fn quick_resyncs() -> RunConfig {
    RunConfig {
        timing: Timing {
            resync: Duration::from_secs(1),
            resync_rate: 0.0,
            ..Timing::default()
        },
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        ..RunConfig::default()
    }
}

fn start(env: &mut Env) {
    env.start(quick_resyncs());
}

fn apply(env: &Env, namespace: &str, name: &str, spec: Value) {
    let mut spec = spec;
    spec["connectionRef"] = json!({"name": "serval"});
    spec["teamId"] = json!("team-1");
    env.kube.put_object(json!({
        "apiVersion": API, "kind": "AccessProfile",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": spec,
    }));
}

/// `Ready`'s (status, reason, message), once it is written.
fn ready(env: &Env, namespace: &str, name: &str) -> Option<(String, String, String)> {
    let obj = env.kube.get(API, "accessprofiles", namespace, name)?;
    let ready = obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .clone();
    let text = |k: &str| ready[k].as_str().unwrap_or_default().to_string();
    Some((text("status"), text("reason"), text("message")))
}

async fn wait_ready(env: &Env, namespace: &str, name: &str, reason: &str) -> String {
    env.wait(&format!("{namespace}/{name} {reason}"), |env| {
        match ready(env, namespace, name) {
            Some((_, r, message)) if r == reason => Ok(message),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

fn id_of(env: &Env, namespace: &str, name: &str) -> String {
    let obj = env
        .kube
        .get(API, "accessprofiles", namespace, name)
        .unwrap();
    obj["status"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_second_claimant_is_refused_sends_nothing_and_takes_over_once_the_owner_lets_go() {
    let mut env = two_teams().await;
    start(&mut env);
    apply(
        &env,
        TEAM_A,
        "oncall",
        json!({"name": "On-call", "description": "team A's"}),
    );
    wait_ready(&env, TEAM_A, "oncall", "Available").await;
    let id = id_of(&env, TEAM_A, "oncall");
    let writes = env.up.serval.writes();

    // Team B names A's profile, with another description and deletionPolicy Delete.
    let claim = json!({"externalId": id, "description": "team B's", "deletionPolicy": "Delete"});
    apply(&env, TEAM_B, "stolen", claim.clone());
    apply(&env, TEAM_B, "copy", claim);
    let message = wait_ready(&env, TEAM_B, "stolen", "AlreadyManaged").await;
    assert!(message.contains(&format!("{TEAM_A}/oncall")), "{message}");
    wait_ready(&env, TEAM_B, "copy", "AlreadyManaged").await;
    // Several resyncs later: no write, A's description stands, B records no id.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.up.serval.writes(), writes);
    assert_eq!(
        env.up.serval.profile(&id).unwrap()["description"],
        "team A's"
    );
    let stolen = env
        .kube
        .get(API, "accessprofiles", TEAM_B, "stolen")
        .unwrap();
    assert!(stolen["status"]["id"].is_null(), "{stolen}");

    // Deleting a claimant (deletionPolicy Delete) leaves the object.
    env.kube
        .delete_object(API, "accessprofiles", TEAM_B, "stolen")
        .unwrap();
    env.wait("the claimant gone", |env| {
        match env.kube.get(API, "accessprofiles", TEAM_B, "stolen") {
            None => Ok(()),
            Some(obj) => Err(format!("{obj}")),
        }
    })
    .await;
    assert!(
        env.up.serval.profile(&id).is_some(),
        "the owner's object was deleted"
    );
    assert_eq!(env.up.serval.writes(), writes);

    // The owner lets go (deleted with Orphan): the remaining claimant takes over.
    env.kube
        .merge_patch(
            API,
            "accessprofiles",
            TEAM_A,
            "oncall",
            json!({"spec": {"deletionPolicy": "Orphan"}}),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.kube
        .delete_object(API, "accessprofiles", TEAM_A, "oncall")
        .unwrap();
    wait_ready(&env, TEAM_B, "copy", "Available").await;
    assert_eq!(id_of(&env, TEAM_B, "copy"), id);
    assert_eq!(
        env.up.serval.profile(&id).unwrap()["description"],
        "team B's"
    );
    env.stop(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn two_resources_of_one_namespace_naming_one_object_do_not_fight() {
    let mut env = two_teams().await;
    let id = env.up.serval.seed_profile(
        json!({"teamId": "team-1", "name": "Made by hand", "description": "as made"}),
    );
    apply(
        &env,
        TEAM_A,
        "first",
        json!({"externalId": id, "description": "first"}),
    );
    start(&mut env);
    wait_ready(&env, TEAM_A, "first", "Available").await;
    apply(
        &env,
        TEAM_A,
        "second",
        json!({"externalId": id, "description": "second"}),
    );
    wait_ready(&env, TEAM_A, "second", "AlreadyManaged").await;
    let writes = env.up.serval.writes();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(env.up.serval.writes(), writes, "the two resources fight");
    assert_eq!(env.up.serval.profile(&id).unwrap()["description"], "first");
    env.stop(Duration::from_secs(30)).await;
}

/// `accessplane plan` shows what the operator does: a resource naming an object another
/// resource of the cluster manages is blocked with `AlreadyManaged`, and sends nothing.
#[tokio::test]
async fn the_plan_shows_a_second_claimant_as_already_managed() {
    use crate::support::harness::{Harness, NS, TEAM};
    use accessplane::plan::manifests::load;
    use accessplane::plan::planner::{Options, plan};
    use accessplane::plan::report::Action;

    let h = Harness::new().await;
    h.apply_profile("owner", json!({"name": "On-call"})).await;
    h.settle("owner", 4).await;
    let id = h.kube.get(API, "accessprofiles", NS, "owner").unwrap()["status"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let claimant = json!({"apiVersion": API, "kind": "AccessProfile",
        "metadata": {"name": "claimant", "namespace": NS},
        "spec": {"connectionRef": {"name": "serval"}, "teamId": TEAM, "externalId": id, "description": "mine"}});
    let yaml = serde_json::to_string(&claimant).unwrap();
    let input = load(&["-".into()], &mut yaml.as_bytes()).unwrap();
    let options = Options {
        default_namespace: NS.into(),
        credentials_namespace: "accessplane-system".into(),
        prune_selector: None,
    };
    let report = plan(&input, Some(h.client()), &options).await.unwrap();
    let entry = &report.entries[0];
    assert_eq!(entry.action, Action::Blocked, "{entry:#?}");
    assert_eq!(
        entry.reason.as_deref(),
        Some("AlreadyManaged"),
        "{entry:#?}"
    );
    assert!(
        entry
            .message
            .as_deref()
            .unwrap()
            .contains(&format!("{NS}/owner"))
    );
    assert!(entry.requests.is_empty());
}

/// Every kind: a resource made by the operator owns its object; a second one naming it —
/// by `externalId`, by the same deterministic id (a persona access control's virtual
/// server and role), or found by natural key after an interrupted create — is refused
/// and sends nothing.
#[tokio::test]
async fn every_kind_refuses_a_second_claimant_by_id_deterministic_id_or_natural_key() {
    use crate::support::env::{C1, Ic};
    const NS: &str = "team-a";
    const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";
    let mut env: crate::support::env::Env<((C1, Ic), Serval), Operator> =
        Setup::<((C1, Ic), Serval)>::start()
            .await
            .operator(FakeKube::new(), Seed::Connections(NS))
            .patience(Duration::from_secs(60), Duration::from_millis(100));
    let ((c1, ic), _) = &env.up;
    let app = c1.app.clone();
    ic.ic.add_virtual_server("gw-1", VS);
    let put = |env: &crate::support::env::Env<((C1, Ic), Serval), Operator>,
               kind: &str,
               name: &str,
               annotations: Value,
               spec: Value| {
        env.kube.put_object(json!({
            "apiVersion": API, "kind": kind,
            "metadata": {"name": name, "namespace": NS, "generation": 1, "annotations": annotations},
            "spec": spec,
        }));
    };
    let owners = [
        (
            "AccessProfile",
            json!({"connectionRef": {"name": "serval"}, "teamId": "team-1", "name": "On-call"}),
        ),
        (
            "AppEntitlement",
            json!({"connectionRef": {"name": "c1"}, "appId": app, "displayName": "Prod DB read"}),
        ),
        (
            "Connector",
            json!({"connectionRef": {"name": "c1"}, "appId": app, "catalogId": "cat-1", "displayName": "GitHub"}),
        ),
        (
            "PersonaAccessControl",
            json!({"connectionRef": {"name": "ic"}, "clusterId": "gw-1", "virtualServerId": VS,
                                        "personaRole": "analyst", "type": "ALLOWLIST", "tools": []}),
        ),
    ];
    for (kind, spec) in &owners {
        put(&env, kind, "owner", json!({}), spec.clone());
    }
    env.start(RunConfig {
        namespace: Some(NS.into()),
        ..quick_resyncs()
    });
    let plural = |kind: &str| crate::support::fake_kube::guess_plural(kind);
    let reason =
        |env: &crate::support::env::Env<((C1, Ic), Serval), Operator>, kind: &str, name: &str| {
            let obj = env.kube.get(API, &plural(kind), NS, name)?;
            let ready = obj["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            Some(ready["reason"].as_str()?.to_string())
        };
    env.wait("every owner Available", |env| {
        for (kind, _) in &owners {
            if reason(env, kind, "owner").as_deref() != Some("Available") {
                return Err(format!("{kind}: {:?}", reason(env, kind, "owner")));
            }
        }
        Ok(())
    })
    .await;
    // A toolset under the owner Connector, once that one has its id.
    let connector = env.kube.get(API, "connectors", NS, "owner").unwrap()["status"]["id"].clone();
    let toolset = json!({"connectionRef": {"name": "c1"}, "appId": app, "connectorId": connector,
                         "displayName": "Readers"});
    put(&env, "McpToolset", "owner", json!({}), toolset.clone());
    env.wait("the owner toolset Available", |env| {
        match reason(env, "McpToolset", "owner").as_deref() {
            Some("Available") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let mut owners = owners.to_vec();
    owners.push(("McpToolset", toolset));
    let writes = |env: &crate::support::env::Env<((C1, Ic), Serval), Operator>| {
        let ((c1, ic), serval) = &env.up;
        (c1.c1.writes(), ic.ic.writes(), serval.serval.writes())
    };
    let before = writes(&env);
    for (kind, spec) in &owners {
        let id = env.kube.get(API, &plural(kind), NS, "owner").unwrap()["status"]["id"].clone();
        let mut by_id = spec.clone();
        match *kind {
            // Its id follows from the spec: the same spec names the same object.
            "PersonaAccessControl" => by_id["tools"] = json!([VS]),
            _ => {
                by_id["externalId"] = id;
                by_id["description"] = json!("another team's");
            }
        }
        put(&env, kind, "by-id", json!({}), by_id);
    }
    // An interrupted create whose natural key finds the owner's object.
    let in_doubt = json!({"accessplane.io/create-attempted": "2026-12-04T05:00:00Z"});
    put(
        &env,
        "AccessProfile",
        "in-doubt",
        in_doubt,
        owners[0].1.clone(),
    );
    env.wait("every claimant AlreadyManaged", |env| {
        let claimants = owners
            .iter()
            .map(|(k, _)| (*k, "by-id"))
            .chain([("AccessProfile", "in-doubt")]);
        for (kind, name) in claimants {
            if reason(env, kind, name).as_deref() != Some("AlreadyManaged") {
                return Err(format!("{kind} {name}: {:?}", reason(env, kind, name)));
            }
        }
        Ok(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(writes(&env), before, "a claimant wrote upstream");
    env.stop(Duration::from_secs(30)).await;
}
