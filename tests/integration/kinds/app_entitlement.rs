//! AppEntitlement end to end: real engine + real ConductorOne client against the fake C1.

use accessplane::api::AppEntitlement;
use accessplane::providers::conductorone::AppEntitlementProvider;
use serde_json::{Value, json};

use crate::support::env::{self, C1, Passes};
use crate::support::fake_http::{Fault, FaultMatch};
use crate::support::harness::NS;

type Env = env::Env<C1, Passes<AppEntitlement, AppEntitlementProvider>>;

impl Env {
    fn upstream(&self, name: &str) -> Value {
        self.up
            .c1
            .entitlement(&self.up.app, &self.id(name))
            .unwrap()
    }

    /// The bodies of the entitlement updates received, in order.
    fn updates(&self) -> Vec<Value> {
        self.up
            .c1
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.contains("/entitlements/"))
            .filter_map(|r| r.body)
            .collect()
    }
}

fn spec() -> Value {
    json!({
        "displayName": "Production DB read",
        "alias": "prod-db-read",
        "description": "Read-only access to the production database",
        "durationGrant": "28800s",
        "provisionerPolicy": {"manual": {"instructions": "Add the user to db-readers"}},
        "deprovisionerPolicy": {"manual": {"instructions": "Remove the user from db-readers"}},
    })
}

#[tokio::test]
async fn create_marks_the_entitlement_and_applies_the_deprovisioner_by_update() {
    let env = Env::new().await;
    env.apply("prod-db-read", spec()).await;
    env.settle("prod-db-read").await;

    assert_eq!(
        env.ready("prod-db-read").0,
        "True",
        "{:?}",
        env.ready("prod-db-read")
    );
    let create = env
        .up
        .c1
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/entitlements"))
        .unwrap();
    let body = create.body.unwrap();
    assert!(
        body.get("provisionPolicy").is_some() && body.get("provisionerPolicy").is_none(),
        "{body}"
    );
    assert!(
        body.get("deprovisionerPolicy").is_none(),
        "not accepted on create"
    );
    assert_eq!(body["annotations"]["managed_by"], "accessplane");
    assert_eq!(
        body["annotations"]["iac_resource_address"],
        format!("{NS}/prod-db-read")
    );
    assert_eq!(env.up.c1.update_masks(), vec!["deprovisionerPolicy"]);

    let upstream = env.upstream("prod-db-read");
    assert_eq!(
        upstream["deprovisionerPolicy"]["manual"]["instructions"],
        "Remove the user from db-readers"
    );
    assert_eq!(
        env.h().get("appentitlements", "prod-db-read").unwrap()["status"]["grantCount"],
        0
    );

    // Converged: a resync only reads.
    env.up.c1.clear_requests();
    env.pass("prod-db-read").await;
    assert_eq!(env.up.c1.writes(), 0);
}

/// `appResourceTypeId`/`appResourceId` are create-only: sent with the create (else the
/// entitlement silently lands at app level), never in an update.
#[tokio::test]
async fn create_places_the_entitlement_on_its_app_resource() {
    let env = Env::new().await;
    let mut spec = spec();
    spec["appResourceTypeId"] = json!("rt-databases");
    spec["appResourceId"] = json!("res-prod-db");
    env.apply("prod-db-read", spec).await;
    env.settle("prod-db-read").await;
    assert_eq!(env.ready("prod-db-read").0, "True");

    let upstream = env.upstream("prod-db-read");
    assert_eq!(
        (&upstream["appResourceTypeId"], &upstream["appResourceId"]),
        (&json!("rt-databases"), &json!("res-prod-db"))
    );
    for update in env.updates() {
        let entity = &update["entitlement"];
        assert!(
            entity.get("appResourceTypeId").is_none() && entity.get("appResourceId").is_none(),
            "create-only fields in an update: {update}"
        );
    }
}

#[tokio::test]
async fn drift_is_corrected_with_a_mask_of_only_the_drifted_fields() {
    let env = Env::new().await;
    env.apply("prod-db-read", spec()).await;
    env.settle("prod-db-read").await;
    let id = env.id("prod-db-read");
    env.up.c1.edit_entitlement(&env.up.app, &id, |e| {
        e["description"] = json!("edited in the UI");
        e["alias"] = json!("renamed");
        e["slug"] = json!("unmanaged-field-edit");
    });
    let masks_before = env.up.c1.update_masks().len();
    env.settle("prod-db-read").await;

    let masks = env.up.c1.update_masks()[masks_before..].to_vec();
    assert_eq!(masks.len(), 1, "one update: {masks:?}");
    let mut paths: Vec<&str> = masks[0].split(',').collect();
    paths.sort();
    assert_eq!(paths, vec!["alias", "description"]);
    let upstream = env.upstream("prod-db-read");
    assert_eq!(
        upstream["description"],
        "Read-only access to the production database"
    );
    assert_eq!(
        upstream["slug"], "unmanaged-field-edit",
        "unmanaged fields are left alone"
    );
}

#[tokio::test]
async fn oneof_switch_sends_only_the_new_arm() {
    let env = Env::new().await;
    env.apply("prod-db-read", spec()).await;
    env.settle("prod-db-read").await;
    env.edit("prod-db-read", json!({"durationGrant": null, "durationUnset": {}, "provisionerPolicy": {"manual": null, "webhook": {"webhookId": "wh-1"}}})).await;
    let before = env.updates().len();
    env.settle("prod-db-read").await;

    let updates = env.updates()[before..].to_vec();
    assert_eq!(updates.len(), 1, "{updates:?}");
    let update = &updates[0];
    assert_eq!(update["updateMask"], "durationUnset,provisionerPolicy");
    assert!(update["entitlement"].get("durationGrant").is_none());
    assert_eq!(
        update["entitlement"]["provisionerPolicy"],
        json!({"webhook": {"webhookId": "wh-1"}})
    );
    let upstream = env.upstream("prod-db-read");
    assert_eq!(
        upstream["provisionerPolicy"]["webhook"]["webhookId"],
        "wh-1"
    );
    assert_eq!(env.ready("prod-db-read").0, "True");
}

#[tokio::test]
async fn adopts_connector_synced_entitlement_and_orphans_it() {
    let env = Env::new().await;
    let id = env.up.c1.seed_entitlement(
        &env.up.app,
        json!({"displayName": "GitHub admin", "riskLevelValueId": "low"}),
    );
    env.apply(
        "github-admin",
        json!({"externalId": id, "riskLevelValueId": "high", "emergencyGrantEnabled": false}),
    )
    .await;
    env.settle("github-admin").await;
    assert_eq!(env.ready("github-admin").0, "True");
    assert_eq!(
        env.up.c1.update_masks(),
        vec!["riskLevelValueId"],
        "false equals unset"
    );
    assert_eq!(
        env.up
            .c1
            .count("POST", &format!("/api/v1/apps/{}/entitlements", env.up.app)),
        1,
        "one update, no create"
    );

    env.delete("github-admin").await;
    env.settle("github-admin").await;
    assert!(env.h().get("appentitlements", "github-admin").is_none());
    assert!(
        env.up.c1.entitlement(&env.up.app, &id).unwrap()["deletedAt"].is_null(),
        "orphaned"
    );
}

#[tokio::test]
async fn observe_reports_drift_without_writes() {
    let env = Env::new().await;
    let id = env.up.c1.seed_entitlement(
        &env.up.app,
        json!({"displayName": "Watched", "description": "actual"}),
    );
    env.apply(
        "watched",
        json!({"externalId": id, "managementPolicy": "Observe", "description": "desired"}),
    )
    .await;
    env.settle("watched").await;
    let (status, reason, message) = env.ready("watched");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Drifted"));
    assert!(message.contains("description"));
    assert_eq!(env.up.c1.writes(), 0);
}

#[tokio::test]
async fn lost_create_is_recovered_through_the_annotations() {
    let env = Env::new().await;
    // Another resource's entitlement with the same display name must not be taken.
    env.up.c1.seed_entitlement(
        &env.up.app,
        json!({"displayName": "Production DB read", "annotations": {"managed_by": "accessplane", "iac_resource_address": "other/thing"}}),
    );
    env.up.c1.push_fault(
        FaultMatch::new("POST", &format!("/api/v1/apps/{}/entitlements", env.up.app)),
        Fault::ApplyThenDropConnection,
    );
    env.apply("prod-db-read", spec()).await;
    env.settle("prod-db-read").await;

    let live: Vec<Value> = env
        .up
        .c1
        .entitlements(&env.up.app)
        .into_iter()
        .filter(|e| e["deletedAt"].is_null())
        .collect();
    assert_eq!(live.len(), 2, "exactly one created: {live:?}");
    assert_eq!(
        env.upstream("prod-db-read")["annotations"]["iac_resource_address"],
        format!("{NS}/prod-db-read")
    );
    assert_eq!(env.ready("prod-db-read").0, "True");
}

/// A create in doubt (503 to the POST, nothing applied) is recovered only through our
/// annotations: a same-named entitlement nobody marked (synced from a connector) existed
/// before, so it is neither recorded as ours nor deleted with the resource.
#[tokio::test]
async fn an_unmarked_same_named_entitlement_is_never_taken_for_a_lost_create() {
    let env = Env::new().await;
    let theirs = env
        .up
        .c1
        .seed_entitlement(&env.up.app, json!({"displayName": "Production DB read"}));
    env.up.c1.push_fault(
        FaultMatch::new("POST", &format!("/api/v1/apps/{}/entitlements", env.up.app)),
        Fault::status(503),
    );
    env.apply("prod-db-read", spec()).await;
    env.settle("prod-db-read").await;
    assert_eq!(env.ready("prod-db-read").0, "True");
    let ours = env.id("prod-db-read");
    assert_ne!(ours, theirs, "created its own");
    assert!(env.upstream("prod-db-read")["annotations"]["managed_by"] == "accessplane");

    env.delete("prod-db-read").await;
    env.settle("prod-db-read").await;
    assert!(env.h().get("appentitlements", "prod-db-read").is_none());
    let entitlement = |id: &str| env.up.c1.entitlement(&env.up.app, id).unwrap();
    assert!(entitlement(&ours)["deletedAt"].is_string(), "ours deleted");
    assert!(entitlement(&theirs)["deletedAt"].is_null(), "theirs kept");
}

#[tokio::test]
async fn expired_token_is_refreshed_once() {
    let env = Env::new().await;
    env.apply("prod-db-read", spec()).await;
    env.settle("prod-db-read").await;
    let exchanges = env.up.c1.token_exchanges();
    env.up.c1.expire_tokens();
    env.up.c1.clear_requests();
    env.pass("prod-db-read").await;
    assert_eq!(env.up.c1.token_exchanges(), exchanges + 1);
    let gets: Vec<u16> = env
        .up
        .c1
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.status)
        .collect();
    assert_eq!(gets, vec![401, 200], "one refresh, one retry");
    assert_eq!(env.ready("prod-db-read").0, "True");
}

#[tokio::test]
async fn delete_soft_deletes_and_soft_deleted_counts_as_gone() {
    let env = Env::new().await;
    env.apply("prod-db-read", spec()).await;
    env.settle("prod-db-read").await;
    let id = env.id("prod-db-read");
    env.delete("prod-db-read").await;
    env.settle("prod-db-read").await;
    assert!(env.h().get("appentitlements", "prod-db-read").is_none());
    assert!(
        env.up.c1.entitlement(&env.up.app, &id).unwrap()["deletedAt"].is_string(),
        "deleted upstream"
    );

    // An adopted id that was soft-deleted is NotFound, never resurrected.
    env.apply("ghost", json!({"externalId": id})).await;
    env.settle("ghost").await;
    assert_eq!(env.ready("ghost").1, "NotFound");
}
