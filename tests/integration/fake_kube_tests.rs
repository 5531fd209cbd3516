//! Self-tests for the in-memory apiserver, driven through real kube APIs.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, Preconditions, WatchEvent, WatchParams,
};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::wait::{Condition, conditions::is_crd_established};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use accessplane::engine::clock::ManualClock;
use accessplane::engine::events::{EventPublisher, Note, Reporter};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::jiff::Timestamp;

use crate::support::fake_kube::FakeKube;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

fn widgets(fake: &FakeKube) -> (Api<DynamicObject>, ApiResource) {
    let gvk = GroupVersionKind::gvk("accessplane.io", "v1alpha1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    (Api::namespaced_with(fake.client(), "default", &ar), ar)
}

fn api_code(err: kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn configmap_and_secret_crud() {
    let fake = FakeKube::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());

    let created = cms
        .create(&PostParams::default(), &cm("a", &[("app", "x")]))
        .await
        .unwrap();
    assert!(created.uid().is_some());
    assert_eq!(created.namespace().as_deref(), Some("default"));
    assert!(created.creation_timestamp().is_some());
    cms.create(&PostParams::default(), &cm("b", &[("app", "y")]))
        .await
        .unwrap();

    let got = cms.get("a").await.unwrap();
    assert_eq!(got.data.as_ref().unwrap()["k"], "v");
    assert_eq!(
        api_code(
            cms.create(&PostParams::default(), &cm("a", &[]))
                .await
                .unwrap_err()
        ),
        409
    );
    assert!(cms.get_opt("missing").await.unwrap().is_none());
    assert_eq!(api_code(cms.get("missing").await.unwrap_err()), 404);

    let all = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        all.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let by_label = cms
        .list(&ListParams::default().labels("app=y"))
        .await
        .unwrap();
    assert_eq!(by_label.items.len(), 1);
    assert_eq!(by_label.items[0].name_any(), "b");
    let by_field = cms
        .list(&ListParams::default().fields("metadata.name=a"))
        .await
        .unwrap();
    assert_eq!(by_field.items[0].name_any(), "a");

    // Optimistic concurrency on replace.
    let mut stale = got.clone();
    stale.metadata.resource_version = Some("1".into());
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .unwrap();
    assert_eq!(
        api_code(
            cms.replace("a", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        ),
        409
    );

    let secrets: Api<Secret> = Api::namespaced(fake.client(), "ns1");
    let secret = Secret {
        metadata: ObjectMeta {
            generate_name: Some("tok-".into()),
            ..Default::default()
        },
        string_data: Some([("token".to_string(), "s3cr3t".to_string())].into()),
        ..Default::default()
    };
    let s = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert!(s.name_any().starts_with("tok-") && s.name_any().len() == 9);
    assert_eq!(
        secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(s.data.as_ref().unwrap()["token"].0, b"s3cr3t");
    assert!(s.string_data.is_none());
    assert!(fake.get("v1", "secrets", "ns1", &s.name_any()).is_some());

    let writes = fake.writes();
    assert_eq!(writes.last().unwrap().method, "POST");
    assert_eq!(
        writes.last().unwrap().path,
        "/api/v1/namespaces/ns1/secrets"
    );
}

#[tokio::test]
async fn custom_resource_status_and_generation() {
    let fake = FakeKube::new();
    let (api, ar) = widgets(&fake);
    let w =
        DynamicObject::new("w1", &ar).data(json!({"spec": {"size": 1}, "status": {"ready": true}}));

    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is ignored on create"
    );
    assert_eq!(created.metadata.generation, Some(1));
    let rv0 = created.resource_version().unwrap();

    // Status patch touches only status and keeps the generation.
    let patched = api
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}, "spec": {"size": 99}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["ready"], true);
    assert_eq!(patched.data["spec"]["size"], 1);
    assert_eq!(patched.metadata.generation, Some(1));
    assert_ne!(patched.resource_version().unwrap(), rv0);

    // Main-resource patch ignores status, bumps generation on spec change.
    let patched = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}, "status": {"ready": false}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert_eq!(patched.data["status"]["ready"], true);

    // No-op writes keep the resourceVersion.
    let rv = patched.resource_version().unwrap();
    let again = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version().unwrap(), rv);
    assert_eq!(again.metadata.generation, Some(2));

    // Metadata-only change bumps resourceVersion but not generation.
    let labelled = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    assert_ne!(labelled.resource_version().unwrap(), rv);
    assert_eq!(labelled.metadata.generation, Some(2));

    // replace_status changes only status.
    let mut desired = labelled.clone();
    desired.data["status"] = json!({"ready": false, "observedGeneration": 2});
    desired.data["spec"] = json!({"size": 7});
    let replaced = api
        .replace_status("w1", &PostParams::default(), &desired)
        .await
        .unwrap();
    assert_eq!(replaced.data["status"]["observedGeneration"], 2);
    assert_eq!(replaced.data["spec"]["size"], 2);

    // Server-side apply creates and then merges.
    let ssa = PatchParams::apply("accessplane").force();
    let applied = api
        .patch(
            "w2",
            &ssa,
            &Patch::Apply(json!({
                "apiVersion": "accessplane.io/v1alpha1", "kind": "Widget",
                "metadata": {"name": "w2"}, "spec": {"size": 3}
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.metadata.generation, Some(1));
    let stored = fake
        .get("accessplane.io/v1alpha1", "widgets", "default", "w2")
        .unwrap();
    assert_eq!(stored["spec"]["size"], 3);
    assert_eq!(stored["kind"], "Widget");
    // Like the real apiserver, an apply configuration must say what it is.
    let untyped = api
        .patch(
            "w2",
            &ssa,
            &Patch::Apply(json!({"metadata": {"name": "w2"}, "spec": {"size": 4}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&untyped, kube::Error::Api(s) if s.code == 400 && s.message.contains("invalid object type")),
        "{untyped}"
    );

    // A failed JSON-patch test op is an API error (422), and nothing changes.
    let before = fake.resource_version();
    let failing = json_patch::Patch(vec![json_patch::PatchOperation::Test(
        json_patch::TestOperation {
            path: "/spec/size".parse().unwrap(),
            value: json!(42),
        },
    )]);
    let err = api
        .patch("w1", &PatchParams::default(), &Patch::Json::<()>(failing))
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 422);
    assert_eq!(fake.resource_version(), before);
}

#[tokio::test]
async fn finalizer_blocks_deletion_until_removed() {
    let fake = FakeKube::new();
    let (api, ar) = widgets(&fake);
    let mut w = DynamicObject::new("w", &ar).data(json!({"spec": {}}));
    w.metadata.finalizers = Some(vec!["accessplane.io/cleanup".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();

    let deleted = api.delete("w", &DeleteParams::default()).await.unwrap();
    let marked = deleted
        .left()
        .expect("object returned while finalizers remain");
    assert!(marked.metadata.deletion_timestamp.is_some());
    // Deleting again is idempotent; adding finalizers is forbidden now.
    api.delete("w", &DeleteParams::default()).await.unwrap();
    let add =
        Patch::Merge(json!({"metadata": {"finalizers": ["accessplane.io/cleanup", "other"]}}));
    assert_eq!(
        api_code(
            api.patch("w", &PatchParams::default(), &add)
                .await
                .unwrap_err()
        ),
        422
    );
    assert!(api.get_opt("w").await.unwrap().is_some());

    let remove = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    api.patch("w", &PatchParams::default(), &remove)
        .await
        .unwrap();
    assert!(api.get_opt("w").await.unwrap().is_none());
    assert!(
        fake.get("accessplane.io/v1alpha1", "widgets", "default", "w")
            .is_none()
    );
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed")]
struct ReconcileError;

#[tokio::test]
async fn kube_runtime_finalizer_end_to_end() {
    let fake = FakeKube::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    cms.create(&PostParams::default(), &cm("f", &[]))
        .await
        .unwrap();
    const NAME: &str = "accessplane.io/test";

    async fn run(cms: &Api<ConfigMap>) -> &'static str {
        let obj = Arc::new(cms.get("f").await.unwrap());
        let mut seen = "none";
        finalizer(cms, NAME, obj, |ev| {
            seen = match ev {
                FinalizerEvent::Apply(_) => "apply",
                FinalizerEvent::Cleanup(_) => "cleanup",
            };
            async { Ok::<_, ReconcileError>(Action::await_change()) }
        })
        .await
        .unwrap();
        seen
    }

    // First pass only adds the finalizer (test-for-null on a missing path must pass).
    assert_eq!(run(&cms).await, "none");
    assert_eq!(cms.get("f").await.unwrap().finalizers(), [NAME]);
    assert_eq!(run(&cms).await, "apply");

    cms.delete("f", &DeleteParams::default()).await.unwrap();
    assert!(
        cms.get("f")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert_eq!(run(&cms).await, "cleanup");
    assert!(cms.get_opt("f").await.unwrap().is_none());
}

#[tokio::test]
async fn watcher_sees_add_modify_delete() {
    let fake = FakeKube::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    cms.create(&PostParams::default(), &cm("pre", &[]))
        .await
        .unwrap();

    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("watcher event in time")
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, watcher::Event::Init));
    assert!(matches!(next().await, watcher::Event::InitApply(c) if c.name_any() == "pre"));
    assert!(matches!(next().await, watcher::Event::InitDone));

    cms.create(&PostParams::default(), &cm("w", &[]))
        .await
        .unwrap();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .unwrap();
    cms.delete("w", &DeleteParams::default()).await.unwrap();

    assert!(
        matches!(next().await, watcher::Event::Apply(c) if c.data.as_ref().unwrap()["k"] == "v")
    );
    assert!(
        matches!(next().await, watcher::Event::Apply(c) if c.data.as_ref().unwrap()["k"] == "v2")
    );
    assert!(matches!(next().await, watcher::Event::Delete(c) if c.name_any() == "w"));
}

#[tokio::test]
async fn raw_watch_resumes_filters_and_times_out() {
    let fake = FakeKube::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    let first = cms
        .create(&PostParams::default(), &cm("a", &[("app", "x")]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("b", &[("app", "y")]))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();

    // Resume after the first create, only app=x, and end after 1s.
    let wp = WatchParams::default()
        .labels("app=x")
        .timeout(1)
        .disable_bookmarks();
    let events: Vec<_> = cms
        .watch(&wp, &first.resource_version().unwrap())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0], WatchEvent::Modified(c) if c.name_any() == "a"));

    // Relabelling out of the selector looks like a deletion to the watcher.
    let mut live = cms.watch(&wp, "0").await.unwrap().boxed();
    assert!(matches!(
        live.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "z"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        live.try_next().await.unwrap(),
        Some(WatchEvent::Deleted(_))
    ));
}

/// The operator's Event publisher against the fake: a repeat patches the first Event's
/// series; once that Event is gone (expired in the apiserver), a repeat starts a new one.
#[tokio::test]
async fn publisher_grows_a_series_and_starts_anew_when_the_event_is_gone() {
    let fake = FakeKube::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    let obj = cms
        .create(&PostParams::default(), &cm("evt", &[]))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let reporter = Reporter {
        controller: "accessplane".into(),
        instance: None,
    };
    let publisher = EventPublisher::new(fake.client(), reporter, clock.clone());
    let reference = obj.object_ref(&());
    let synced = || Note {
        warning: false,
        reason: "Synced",
        text: "all good".into(),
    };
    publisher.publish(&reference, synced()).await;
    clock.advance(Duration::from_secs(5));
    publisher.publish(&reference, synced()).await;

    let events = fake.events("default");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "Synced");
    assert_eq!(events[0]["type"], "Normal");
    assert_eq!(events[0]["note"], "all good");
    assert_eq!(events[0]["regarding"]["name"], "evt");
    assert_eq!(events[0]["reportingController"], "accessplane");
    assert_eq!(events[0]["series"]["count"], 2);

    let api: Api<K8sEvent> = Api::default_namespaced(fake.client());
    let first = events[0]["metadata"]["name"].as_str().unwrap().to_string();
    api.delete(&first, &DeleteParams::default()).await.unwrap();
    clock.advance(Duration::from_secs(5));
    publisher.publish(&reference, synced()).await;
    let events = fake.events("default");
    assert_eq!(events.len(), 1);
    assert_ne!(events[0]["metadata"]["name"], first.as_str());
    assert!(events[0]["series"].is_null());

    // Another note about the same object is another Event.
    let warning = Note {
        warning: true,
        reason: "Synced",
        text: "not so good".into(),
    };
    publisher.publish(&reference, warning).await;
    assert_eq!(fake.events("default").len(), 2);
}

#[tokio::test]
async fn fail_next_injects_errors() {
    let fake = FakeKube::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    cms.create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap();
    fake.clear_requests();

    fake.fail_next("PATCH", "/configmaps/x", 409, 1);
    let patch = Patch::Merge(json!({"data": {"k": "new"}}));
    assert_eq!(
        api_code(
            cms.patch("x", &PatchParams::default(), &patch)
                .await
                .unwrap_err()
        ),
        409
    );
    assert_eq!(cms.get("x").await.unwrap().data.unwrap()["k"], "v");
    cms.patch("x", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(cms.get("x").await.unwrap().data.unwrap()["k"], "new");

    let writes = fake.writes();
    assert_eq!(writes.len(), 2);
    assert_eq!(
        writes[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(writes[0].body.as_ref().unwrap()["data"]["k"], "new");
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn seeding_and_cluster_scoped_resources() {
    let fake = FakeKube::new();
    let seeded = fake.put_object(json!({
        "apiVersion": "accessplane.io/v1alpha1", "kind": "Widget",
        "metadata": {"name": "seed", "namespace": "default"},
        "spec": {"size": 5}, "status": {"phase": "Ready"}
    }));
    assert!(seeded["metadata"]["resourceVersion"].is_string());
    let (api, _) = widgets(&fake);
    let w = api.get("seed").await.unwrap();
    assert_eq!(w.data["status"]["phase"], "Ready");
    let all: Api<DynamicObject> = Api::all_with(fake.client(), &widgets(&fake).1);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(fake.client());
    let crd = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.accessplane.io"},
        "spec": {"group": "accessplane.io", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true}]}
    }))
    .unwrap();
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    assert!(is_crd_established().matches_object(Some(&created)));
    assert!(
        fake.get(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            "",
            "widgets.accessplane.io"
        )
        .is_some()
    );
}

#[tokio::test]
async fn lists_are_paged_with_limit_and_continue() {
    let fake = FakeKube::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut versions = Vec::new();
    let mut params = ListParams::default().limit(2);
    loop {
        let page = cms.list(&params).await.unwrap();
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|c| c.name_any()));
        versions.push(page.metadata.resource_version.clone());
        // A change while paging is not on the pages already read; a watch from the
        // list's resourceVersion replays it.
        if names.len() == 2 {
            cms.patch(
                "c0",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"k": "changed"}})),
            )
            .await
            .unwrap();
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
    assert_eq!(versions.len(), 3);
    assert!(versions.iter().all(|v| v == &versions[0]));
    let rv = versions[0].clone().unwrap();
    let mut watch = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match watch.try_next().await.unwrap() {
        Some(WatchEvent::Modified(c)) => assert_eq!(c.name_any(), "c0"),
        other => panic!("expected the change made while paging, got {other:?}"),
    }
}

/// The resourceVersion preconditions the operator relies on, as the real apiserver
/// enforces them: a PUT, a merge patch or an apply carrying a stale
/// `metadata.resourceVersion` is a 409, on the object and on `/status`; a JSON patch whose
/// `test` of `/metadata/resourceVersion` fails is a 422; DELETE preconditions (resourceVersion,
/// uid) are 409s. A refused write changes nothing; a write without a resourceVersion is
/// unconditional.
#[tokio::test]
async fn writes_carrying_a_stale_resource_version_are_refused() {
    let fake = FakeKube::new();
    let (api, ar) = widgets(&fake);
    let created = api
        .create(
            &PostParams::default(),
            &DynamicObject::new("w", &ar).data(json!({"spec": {"size": 1}})),
        )
        .await
        .unwrap();
    let stale = created.resource_version().unwrap();
    // Unconditional: no resourceVersion in the patch.
    let current = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap();
    let fresh = current.resource_version().unwrap();
    assert_ne!(fresh, stale);
    let before = fake.resource_version();
    let stored = || fake.get("accessplane.io/v1alpha1", "widgets", "default", "w");
    let snapshot = stored();

    let guarded = |rv: &str, mut body: serde_json::Value| {
        body["metadata"]["resourceVersion"] = json!(rv);
        body
    };
    let merge = Patch::Merge(guarded(&stale, json!({"spec": {"size": 3}})));
    assert_eq!(
        api_code(
            api.patch("w", &PatchParams::default(), &merge)
                .await
                .unwrap_err()
        ),
        409,
        "merge patch"
    );
    let apply = Patch::Apply(guarded(
        &stale,
        json!({"apiVersion": "accessplane.io/v1alpha1", "kind": "Widget",
               "metadata": {"name": "w"}, "spec": {"size": 3}}),
    ));
    assert_eq!(
        api_code(
            api.patch("w", &PatchParams::apply("test"), &apply)
                .await
                .unwrap_err()
        ),
        409,
        "apply"
    );
    let status = Patch::Merge(guarded(&stale, json!({"status": {"ready": true}})));
    assert_eq!(
        api_code(
            api.patch_status("w", &PatchParams::default(), &status)
                .await
                .unwrap_err()
        ),
        409,
        "status merge patch"
    );
    let mut old = created.clone();
    old.data["spec"] = json!({"size": 4});
    assert_eq!(
        api_code(
            api.replace("w", &PostParams::default(), &old)
                .await
                .unwrap_err()
        ),
        409,
        "PUT"
    );
    old.data["status"] = json!({"ready": true});
    assert_eq!(
        api_code(
            api.replace_status("w", &PostParams::default(), &old)
                .await
                .unwrap_err()
        ),
        409,
        "status PUT"
    );
    // The finalizer write's guard (engine::kube_ops::add_finalizer).
    let tested = |rv: &str| {
        Patch::Json::<()>(json_patch::Patch(vec![
            json_patch::PatchOperation::Test(json_patch::TestOperation {
                path: "/metadata/resourceVersion".parse().unwrap(),
                value: json!(rv),
            }),
            json_patch::PatchOperation::Add(json_patch::AddOperation {
                path: "/metadata/finalizers".parse().unwrap(),
                value: json!(["accessplane.io/test"]),
            }),
        ]))
    };
    assert_eq!(
        api_code(
            api.patch("w", &PatchParams::default(), &tested(&stale))
                .await
                .unwrap_err()
        ),
        422,
        "JSON patch test of the resourceVersion"
    );
    let precondition = |resource_version: Option<&str>, uid: Option<&str>| DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: resource_version.map(String::from),
            uid: uid.map(String::from),
        }),
        ..DeleteParams::default()
    };
    assert_eq!(
        api_code(
            api.delete("w", &precondition(Some(&stale), None))
                .await
                .unwrap_err()
        ),
        409,
        "DELETE, resourceVersion precondition"
    );
    assert_eq!(
        api_code(
            api.delete("w", &precondition(None, Some("another-uid")))
                .await
                .unwrap_err()
        ),
        409,
        "DELETE, uid precondition"
    );
    assert_eq!(
        api_code(
            api.create(
                &PostParams::default(),
                &DynamicObject::new("w", &ar).data(json!({"spec": {}}))
            )
            .await
            .unwrap_err()
        ),
        409,
        "create of an existing name (AlreadyExists)"
    );
    assert_eq!(fake.resource_version(), before, "a refused write wrote");
    assert_eq!(stored(), snapshot);

    // The same writes at the current resourceVersion go through.
    let merge = Patch::Merge(guarded(&fresh, json!({"spec": {"size": 3}})));
    let merged = api
        .patch("w", &PatchParams::default(), &merge)
        .await
        .unwrap();
    let finalized = api
        .patch(
            "w",
            &PatchParams::default(),
            &tested(&merged.resource_version().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(finalized.finalizers(), ["accessplane.io/test"]);
    let uid = finalized.uid().unwrap();
    let rv = finalized.resource_version().unwrap();
    let deleted = api
        .delete("w", &precondition(Some(&rv), Some(&uid)))
        .await
        .unwrap();
    assert!(
        deleted
            .left()
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
}

/// The server-side apply the operator (CRD install), Argo CD (`ServerSideApply=true`)
/// and the e2e scripts rely on: an apply configuration must carry apiVersion and kind
/// (the real apiserver's 400, found on the real-apiserver tier; creates too, not only
/// updates); a typed one creates the object or merges into it; status in it is ignored
/// where status is a subresource; applying the same configuration again writes nothing;
/// an apply to the status of a missing object is a 404.
#[tokio::test]
async fn server_side_apply_needs_a_typed_configuration_and_creates_or_merges() {
    let fake = FakeKube::new();
    let (api, _) = widgets(&fake);
    let ssa = PatchParams::apply("argocd-controller");
    let stored = |name: &str| fake.get("accessplane.io/v1alpha1", "widgets", "default", name);

    for untyped in [
        json!({"metadata": {"name": "new"}, "spec": {"size": 1}}),
        json!({"kind": "Widget", "metadata": {"name": "new"}, "spec": {"size": 1}}),
        json!({"apiVersion": "accessplane.io/v1alpha1", "metadata": {"name": "new"}, "spec": {"size": 1}}),
    ] {
        let err = api
            .patch("new", &ssa, &Patch::Apply(&untyped))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 400 && s.message.contains("invalid object type")),
            "{untyped}: {err}"
        );
    }
    assert!(
        stored("new").is_none(),
        "an untyped apply created the object"
    );

    let config = json!({
        "apiVersion": "accessplane.io/v1alpha1", "kind": "Widget",
        "metadata": {"name": "new", "labels": {"team": "a"}},
        "spec": {"size": 1}, "status": {"ready": true},
    });
    let created = api
        .patch("new", &ssa, &Patch::Apply(&config))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.labels()["team"], "a");
    assert!(created.data.get("status").is_none(), "status applied");
    let again = api
        .patch("new", &ssa, &Patch::Apply(&config))
        .await
        .unwrap();
    assert_eq!(again.resource_version(), created.resource_version());

    let mut changed = config.clone();
    changed["spec"]["size"] = json!(2);
    let updated = api
        .patch("new", &ssa, &Patch::Apply(&changed))
        .await
        .unwrap();
    assert_eq!(updated.data["spec"]["size"], 2);
    assert_eq!(updated.metadata.generation, Some(2));

    let status = json!({
        "apiVersion": "accessplane.io/v1alpha1", "kind": "Widget",
        "metadata": {"name": "new"}, "status": {"ready": true},
    });
    let with_status = api
        .patch_status("new", &ssa, &Patch::Apply(&status))
        .await
        .unwrap();
    assert_eq!(with_status.data["status"]["ready"], true);
    assert_eq!(with_status.metadata.generation, Some(2));
    assert_eq!(
        api_code(
            api.patch_status("missing", &ssa, &Patch::Apply(&status))
                .await
                .unwrap_err()
        ),
        404
    );
}

/// Every request's `User-Agent` is recorded as sent (issue #14; what the operator's
/// identity tests read, as the real tier reads its audit log): each value of a repeated
/// header, none as `None`, and also for a request answered with an injected fault.
#[tokio::test]
async fn the_user_agent_of_every_request_is_recorded() {
    use tower::ServiceExt;
    let fake = FakeKube::new();
    let send = |agents: &[&str]| {
        let mut req = http::Request::get("/api/v1/namespaces/default/configmaps");
        for agent in agents {
            req = req.header(http::header::USER_AGENT, *agent);
        }
        let req = req.body(kube::client::Body::empty()).unwrap();
        fake.clone().oneshot(req)
    };
    let status = |r: Result<http::Response<_>, _>| r.unwrap().status().as_u16();
    assert_eq!(status(send(&["accessplane/1.2.3"]).await), 200);
    assert_eq!(status(send(&[]).await), 200);
    assert_eq!(
        status(send(&["accessplane/1.2.3", "kubectl/v1.32"]).await),
        200
    );
    fake.fail_next("GET", "/configmaps", 503, 1);
    assert_eq!(status(send(&["accessplane-plan/1.2.3"]).await), 503);

    let agents: Vec<Option<String>> = fake.requests().into_iter().map(|r| r.user_agent).collect();
    assert_eq!(
        agents,
        [
            Some("accessplane/1.2.3".to_string()),
            None,
            Some("accessplane/1.2.3, kubectl/v1.32".to_string()),
            Some("accessplane-plan/1.2.3".to_string()),
        ]
    );
}

/// Paging across namespaces as the watcher's all-namespace List sees it: items in
/// (namespace, name) order, the selector applied before the limit, every page at the
/// first page's resourceVersion, and no continue token on the last page.
#[tokio::test]
async fn all_namespace_lists_page_across_namespaces_with_a_selector() {
    let fake = FakeKube::new();
    for (ns, name, app) in [
        ("b", "x", "on"),
        ("a", "y", "on"),
        ("a", "z", "off"),
        ("b", "w", "on"),
        ("c", "v", "off"),
    ] {
        let cms: Api<ConfigMap> = Api::namespaced(fake.client(), ns);
        cms.create(&PostParams::default(), &cm(name, &[("app", app)]))
            .await
            .unwrap();
    }
    let all: Api<ConfigMap> = Api::all(fake.client());
    let mut params = ListParams::default().labels("app=on").limit(2);
    let mut pages = Vec::new();
    let mut versions = Vec::new();
    loop {
        let page = all.list(&params).await.unwrap();
        pages.push(
            page.items
                .iter()
                .map(|c| format!("{}/{}", c.namespace().unwrap(), c.name_any()))
                .collect::<Vec<_>>(),
        );
        versions.push(page.metadata.resource_version.clone().unwrap());
        // A write between pages does not move the pages' resourceVersion.
        let other: Api<ConfigMap> = Api::namespaced(fake.client(), "c");
        let touch = json!({"data": {"k": fake.resource_version().to_string()}});
        other
            .patch("v", &PatchParams::default(), &Patch::Merge(touch))
            .await
            .unwrap();
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, [vec!["a/y", "b/w"], vec!["b/x"]]);
    assert!(versions.iter().all(|v| v == &versions[0]), "{versions:?}");
}

/// Watches as kube's watcher uses them: a streaming list (`sendInitialEvents=true`) ends
/// its initial events with the `k8s.io/initial-events-end` BOOKMARK; a dropped watch is
/// resumed from the last resourceVersion seen and replays what changed while it was down
/// (no relist: the fake keeps its whole history, so a resume never gets 410 Gone).
#[tokio::test]
async fn streaming_lists_end_with_a_bookmark_and_dropped_watches_resume() {
    let fake = FakeKube::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    cms.create(&PostParams::default(), &cm("pre", &[]))
        .await
        .unwrap();

    let wp = WatchParams::streaming_lists().timeout(1);
    let events: Vec<_> = cms
        .watch(&wp, "0")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(&events[0], WatchEvent::Added(c) if c.name_any() == "pre"));
    match &events[1] {
        WatchEvent::Bookmark(b) => {
            assert_eq!(
                b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            );
            assert_eq!(
                b.metadata.resource_version,
                fake.resource_version().to_string()
            );
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }

    let config = watcher::Config::default().streaming_lists();
    let mut stream = watcher(cms.clone(), config).boxed();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("watcher event in time")
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, watcher::Event::Init));
    assert!(matches!(next().await, watcher::Event::InitApply(c) if c.name_any() == "pre"));
    assert!(matches!(next().await, watcher::Event::InitDone));

    let watches = || {
        fake.requests()
            .into_iter()
            .filter(|r| r.query_param("watch").as_deref() == Some("true"))
            .collect::<Vec<_>>()
    };
    let before = watches().len();
    fake.disconnect_watches();
    cms.create(&PostParams::default(), &cm("while-down", &[]))
        .await
        .unwrap();
    // Resumed, not relisted: the next event is the change itself, not a new Init.
    assert!(matches!(next().await, watcher::Event::Apply(c) if c.name_any() == "while-down"));
    let watches = watches();
    assert_eq!(watches.len(), before + 1, "one new watch, no List");
    let resumed = watches.last().unwrap();
    assert_eq!(resumed.query_param("sendInitialEvents"), None);
    assert_ne!(resumed.query_param("resourceVersion").as_deref(), Some("0"));
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.query_param("watch").is_none()
                && r.method == "GET"
                && r.path.ends_with("/configmaps")),
        "relisted"
    );
}
