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

use accessplane::base::clock::ManualClock;
use accessplane::base::events::{EventPublisher, Note, Reporter};
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
    // The finalizer write's guard (base::kube_ops::add_finalizer).
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
/// (no relist while the history still holds the changes; past it, see
/// `the_watcher_relists_after_410_and_its_store_drops_what_was_deleted_meanwhile`).
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

// ---------------------------------------------------------------------------------------
// Admission of custom resources (tests/support/fake_admission.rs)

const AP_GROUP_VERSION: &str = "accessplane.io/v1alpha1";

/// One request through the fake's service as a client sends it: the answer's status,
/// JSON body and `Warning` headers.
async fn send(
    fake: &FakeKube,
    method: &str,
    uri: &str,
    content_type: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value, Vec<String>) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(match body {
            Some(b) => kube::client::Body::from(b.to_string().into_bytes()),
            None => kube::client::Body::empty(),
        })
        .unwrap();
    let Ok(response) = fake.clone().oneshot(req).await;
    let code = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("Warning")
        .iter()
        .map(|w| w.to_str().unwrap().to_string())
        .collect();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap(), warnings)
}

const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

/// The collection URL of an accessplane object (`/apis/accessplane.io/v1alpha1/...`).
fn collection(obj: &serde_json::Value) -> String {
    let plural = crate::support::fake_kube::guess_plural(obj["kind"].as_str().unwrap());
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("/apis/{AP_GROUP_VERSION}/namespaces/{ns}/{plural}"),
        None => format!("/apis/{AP_GROUP_VERSION}/{plural}"),
    }
}

fn causes(status: &serde_json::Value) -> Vec<(String, String, String)> {
    status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("reason"), s("field"), s("message"))
        })
        .collect()
}

/// Every case of `tests/bad_input` (path, case), sorted.
fn bad_input_corpus() -> Vec<(String, serde_json::Value)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_input");
    let mut cases = vec![];
    for dir in std::fs::read_dir(root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let case = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            cases.push((file.display().to_string(), case));
        }
    }
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

/// The whole bad-input corpus walked through the fake as tests/envtest/admission.rs walks
/// it through the real apiserver, the way kubectl sends it (strict field validation, a
/// server dry run; `old` created first, then replaced): every case is refused naming the
/// same field or with the same CEL message, `details.causes` name it, and nothing is
/// stored. Without strict validation an unknown field is pruned with a `Warning` instead,
/// and what is left is admitted.
#[tokio::test]
async fn the_bad_input_corpus_is_refused_naming_the_field() {
    let fake = FakeKube::new();
    let cases = bad_input_corpus();
    assert!(cases.len() >= 100, "{}", cases.len());
    let mut failures = vec![];
    let mut olds = 0;
    for (i, (path, case)) in cases.iter().enumerate() {
        let by = case["by"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let name = format!("case-{i}");
        let with_name = |obj: &serde_json::Value| {
            let mut obj = obj.clone();
            if obj["kind"] != "ClusterConnection" {
                obj["metadata"]["namespace"] = json!("bad-input");
            }
            obj["metadata"]["name"] = json!(name);
            obj
        };
        let mut object = with_name(&case["object"]);
        let url = collection(&object);
        let (code, status, warnings) = match case.get("old") {
            Some(old) => {
                olds += 1;
                let (code, created, warnings) = send(
                    &fake,
                    "POST",
                    &format!("{url}?fieldValidation=Strict"),
                    JSON,
                    Some(&with_name(old)),
                )
                .await;
                assert!(
                    code == 201 && warnings.is_empty(),
                    "{path}: `old` refused: {code} {created} {warnings:?}"
                );
                object["metadata"]["resourceVersion"] =
                    created["metadata"]["resourceVersion"].clone();
                send(
                    &fake,
                    "PUT",
                    &format!("{url}/{name}?fieldValidation=Strict&dryRun=All"),
                    JSON,
                    Some(&object),
                )
                .await
            }
            None => {
                send(
                    &fake,
                    "POST",
                    &format!("{url}?fieldValidation=Strict&dryRun=All"),
                    JSON,
                    Some(&object),
                )
                .await
            }
        };
        let message = status["message"].as_str().unwrap_or_default();
        let causes = causes(&status);
        let named: Vec<&(String, String, String)> =
            causes.iter().filter(|(_, f, _)| f != "<nil>").collect();
        let problem = match by {
            "openapi" => {
                // A missing field is named by its whole path, the corpus names the last
                // part; any other by the instance path.
                let required = expect
                    .strip_suffix("\" is a required property")
                    .map(|field| format!(".{}", field.trim_start_matches('"')));
                let (wanted, field) = match &required {
                    Some(suffix) => (format!("{suffix}: Required value"), suffix.clone()),
                    None => {
                        let field = crate::support::fake_admission::apiserver_field(expect);
                        (format!("{field}: "), field)
                    }
                };
                let fits = |f: &str| match required {
                    Some(_) => f.ends_with(&field),
                    None => f == field,
                };
                if code != 422 || status["reason"] != "Invalid" {
                    Some(format!("{code} {status}"))
                } else if !message.contains(&wanted) {
                    Some(format!("message without {wanted:?}: {message}"))
                } else if named.is_empty() || named.iter().any(|(_, f, _)| !fits(f)) {
                    Some(format!("causes name another field: {causes:?}"))
                } else if status["details"]["kind"] != object["kind"]
                    || status["details"]["group"] != "accessplane.io"
                    || status["details"]["name"] != name.as_str()
                {
                    Some(format!("details: {}", status["details"]))
                } else {
                    None
                }
            }
            "cel" => match named.as_slice() {
                _ if code != 422 => Some(format!("{code} {status}")),
                [(_, field, cause)] if cause.ends_with(expect) && field.starts_with("spec") => {
                    (!message.contains(expect)).then(|| format!("message: {message}"))
                }
                _ => Some(format!("not one cause with {expect:?}: {causes:?}")),
            },
            "unknown-field" => {
                let wanted = format!("strict decoding error: {expect}");
                if code != 400 || status["reason"] != "BadRequest" || !message.contains(&wanted) {
                    Some(format!("{code} {status}"))
                } else {
                    // Without strict validation: pruned, one warning, the rest admitted.
                    let (code, admitted, warnings) = send(
                        &fake,
                        "POST",
                        &format!("{url}?dryRun=All"),
                        JSON,
                        Some(&object),
                    )
                    .await;
                    let field = expect
                        .trim_start_matches("unknown field \"")
                        .trim_end_matches('"');
                    let left = field.split('.').fold(&admitted, |v, k| &v[k]);
                    let header = format!("299 - {:?}", expect);
                    (code != 201 || warnings != [header] || !left.is_null()).then(|| {
                        format!("not pruned with a warning: {code} {warnings:?} {admitted}")
                    })
                }
            }
            other => Some(format!("unknown stage {other}")),
        };
        if let Some(problem) = problem {
            failures.push(format!("{path}: {problem}"));
        }
        let _ = warnings;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from the apiserver:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let stored = fake
        .all_objects()
        .into_iter()
        .filter(|(api_version, _, _)| api_version == AP_GROUP_VERSION)
        .count();
    assert_eq!(stored, olds, "only the `old` objects are stored (dry runs)");
}

fn access_profiles(fake: &FakeKube, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("accessplane.io", "v1alpha1", "AccessProfile");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "accessprofiles");
    Api::namespaced_with(fake.client(), ns, &ar)
}

fn profile(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": AP_GROUP_VERSION, "kind": "AccessProfile",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn api_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn status_causes(status: &kube::core::Status) -> Vec<(String, String, String)> {
    status
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .map(|c| (c.reason.clone(), c.field.clone(), c.message.clone()))
        .collect()
}

const NOT_CHECKED: &str = "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

/// A custom resource is admitted with its CRD's OpenAPI schema and CEL rules on create,
/// update, patch and apply, refused as the apiserver refuses it (422 `Invalid`, the
/// message and `details.causes` naming each field; a blocking error leaves the rules
/// unchecked, and says so); transition rules judge updates; metadata.name is a DNS
/// subdomain; a refused or dry-run write stores nothing; strategic merge is not served
/// for custom resources (415).
#[tokio::test]
async fn custom_resources_are_admitted_with_their_crd_schema_and_rules() {
    let fake = FakeKube::new();
    let aps = access_profiles(&fake, "team");
    let pp = PostParams::default();
    let before = fake.resource_version();

    let status = api_status(
        aps.create(
            &pp,
            &profile(
                "p",
                json!({"connectionRef": {"name": "serval"}, "name": "P"}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        format!(
            "AccessProfile.accessplane.io \"p\" is invalid: [spec.teamId: Required value, {NOT_CHECKED}]"
        )
    );
    let details = status.details.as_ref().unwrap();
    assert_eq!(
        (
            details.group.as_str(),
            details.kind.as_str(),
            details.name.as_str()
        ),
        ("accessplane.io", "AccessProfile", "p")
    );
    assert_eq!(
        status_causes(&status)[0],
        (
            "FieldValueRequired".to_string(),
            "spec.teamId".to_string(),
            "Required value".to_string()
        )
    );

    // Schema-valid, but a rule fails: the rule's message, at its fieldPath.
    let nameless = json!({"connectionRef": {"name": "serval"}, "teamId": "t1"});
    let status = api_status(aps.create(&pp, &profile("p", nameless)).await.unwrap_err());
    assert_eq!(
        status.message,
        "AccessProfile.accessplane.io \"p\" is invalid: spec.name: Invalid value: \"object\": spec.name is required unless spec.externalId adopts an existing profile"
    );
    // Enums name the supported values; names are DNS subdomains.
    let policy = json!({"connectionRef": {"name": "serval"}, "teamId": "t1", "name": "P", "deletionPolicy": "Retain"});
    let status = api_status(aps.create(&pp, &profile("p", policy)).await.unwrap_err());
    assert!(
        status.message.contains(
            r#"spec.deletionPolicy: Unsupported value: "Retain": supported values: "Delete", "Orphan""#
        ),
        "{}",
        status.message
    );
    let spec = json!({"connectionRef": {"name": "serval"}, "teamId": "t1", "name": "P"});
    let status = api_status(
        aps.create(&pp, &profile("Bad_Name", spec.clone()))
            .await
            .unwrap_err(),
    );
    assert!(
        status
            .message
            .starts_with("AccessProfile.accessplane.io \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
        "{}",
        status.message
    );
    // A dry run answers like the write would, and stores nothing.
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answered = aps.create(&dry, &profile("p", spec.clone())).await.unwrap();
    assert_eq!(answered.metadata.generation, Some(1));
    assert_eq!(fake.resource_version(), before, "a refused write wrote");
    assert!(fake.all_objects().is_empty());

    // Updates: transition rules see the stored object, whatever the verb.
    let created = aps.create(&pp, &profile("p", spec.clone())).await.unwrap();
    let moved = Patch::Merge(json!({"spec": {"teamId": "t2"}}));
    let status = api_status(
        aps.patch("p", &PatchParams::default(), &moved)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        status.message,
        "AccessProfile.accessplane.io \"p\" is invalid: spec.teamId: Invalid value: \"string\": spec.teamId is immutable"
    );
    let mut replaced = created.clone();
    replaced.data["spec"]["teamId"] = json!("t2");
    let status = api_status(aps.replace("p", &pp, &replaced).await.unwrap_err());
    assert!(
        status.message.contains("spec.teamId is immutable"),
        "{}",
        status.message
    );
    let mut applied = json!({"apiVersion": AP_GROUP_VERSION, "kind": "AccessProfile",
        "metadata": {"name": "p"}, "spec": spec.clone()});
    applied["spec"]["teamId"] = json!("t2");
    let status = api_status(
        aps.patch("p", &PatchParams::apply("test"), &Patch::Apply(&applied))
            .await
            .unwrap_err(),
    );
    assert!(
        status.message.contains("spec.teamId is immutable"),
        "{}",
        status.message
    );
    // externalId may be added once, never changed.
    let adopt = |id: &str| Patch::Merge(json!({"spec": {"externalId": id}}));
    aps.patch("p", &PatchParams::default(), &adopt("ap-1"))
        .await
        .unwrap();
    let status = api_status(
        aps.patch("p", &PatchParams::default(), &adopt("ap-2"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        status_causes(&status),
        [(
            "FieldValueInvalid".to_string(),
            "spec.externalId".to_string(),
            "Invalid value: \"object\": spec.externalId is immutable once set".to_string()
        )]
    );
    // A dry-run patch is judged, not stored.
    let rv = fake.resource_version();
    let described = Patch::Merge(json!({"spec": {"description": "new"}}));
    let answered = aps
        .patch("p", &PatchParams::default().dry_run(), &described)
        .await
        .unwrap();
    assert_eq!(answered.data["spec"]["description"], "new");
    assert_eq!(fake.resource_version(), rv);

    let strategic = Patch::Strategic(json!({"spec": {"description": "x"}}));
    let status = api_status(
        aps.patch("p", &PatchParams::default(), &strategic)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 415, "{}", status.message);
    assert_eq!(fake.resource_version(), rv);
}

/// Unknown fields as `fieldValidation` says (handlers/create.go, update.go, patch.go; the
/// default is `Warn`): pruned with a `Warning: 299 - "unknown field ..."` header each
/// (recorded in the request log too), pruned silently (`Ignore`), or refused (`Strict`:
/// a create or update is a 400 strict decoding error, a JSON or merge patch a 422 on
/// `patch`). Server-side apply fails on them whatever the directive (a 500, as the
/// apiserver answers a configuration its schema does not type). Pass-through objects
/// (`x-kubernetes-preserve-unknown-fields`) keep theirs.
#[tokio::test]
async fn unknown_fields_are_pruned_with_a_warning_or_refused_as_field_validation_says() {
    let fake = FakeKube::new();
    let url = "/apis/accessplane.io/v1alpha1/namespaces/team/accessprofiles";
    let object = |name: &str| {
        json!({"apiVersion": AP_GROUP_VERSION, "kind": "AccessProfile",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"connectionRef": {"name": "serval", "namespace": "other"},
                     "teamId": "t1", "name": "P", "colour": "blue"}})
    };
    let unknown = [
        r#"unknown field "spec.colour""#,
        r#"unknown field "spec.connectionRef.namespace""#,
    ];

    let (code, created, warnings) = send(&fake, "POST", url, JSON, Some(&object("warned"))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        warnings,
        unknown.map(|u| format!("299 - {u:?}")),
        "one Warning per field"
    );
    assert_eq!(created["spec"]["connectionRef"], json!({"name": "serval"}));
    assert!(created["spec"]["colour"].is_null());
    assert_eq!(fake.requests().last().unwrap().warnings, unknown);
    let stored = fake
        .get(AP_GROUP_VERSION, "accessprofiles", "team", "warned")
        .unwrap();
    assert_eq!(stored["spec"], created["spec"]);

    let ignore = format!("{url}?fieldValidation=Ignore");
    let (code, _, warnings) = send(&fake, "POST", &ignore, JSON, Some(&object("ignored"))).await;
    assert_eq!((code, warnings.len()), (201, 0));

    let strict = format!("{url}?fieldValidation=Strict");
    let refusal = format!(
        "AccessProfile in version \"v1alpha1\" cannot be handled as a AccessProfile: strict decoding error: {}",
        unknown.join(", ")
    );
    let (code, status, _) = send(&fake, "POST", &strict, JSON, Some(&object("strict"))).await;
    assert_eq!(
        (code, &status["reason"], &status["message"]),
        (400, &json!("BadRequest"), &json!(refusal))
    );
    assert!(
        fake.get(AP_GROUP_VERSION, "accessprofiles", "team", "strict")
            .is_none()
    );
    let mut put = object("warned");
    put["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
    let put_url = format!("{url}/warned?fieldValidation=Strict");
    let (code, status, _) = send(&fake, "PUT", &put_url, JSON, Some(&put)).await;
    assert_eq!((code, &status["message"]), (400, &json!(refusal)));

    let colour = json!({"spec": {"colour": "red"}});
    let (code, status, _) = send(&fake, "PATCH", &put_url, MERGE, Some(&colour)).await;
    assert_eq!(
        (code, &status["reason"]),
        (422, &json!("Invalid")),
        "{status}"
    );
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with(r#" "" is invalid: patch: Invalid value: "{"#)
            && message.ends_with(r#"": strict decoding error: unknown field "spec.colour""#),
        "{message}"
    );
    assert_eq!(status["details"]["causes"][0]["field"], "patch");
    let rv = fake.resource_version();
    let patch_url = format!("{url}/warned");
    let (code, _, warnings) = send(&fake, "PATCH", &patch_url, MERGE, Some(&colour)).await;
    assert_eq!(code, 200);
    assert_eq!(warnings, [r#"299 - "unknown field \"spec.colour\"""#]);
    assert_eq!(fake.resource_version(), rv, "pruned to a no-op");

    for query in ["", "?fieldValidation=Ignore", "?fieldValidation=Strict"] {
        let apply_url = format!("{url}/warned{query}");
        let (code, status, _) =
            send(&fake, "PATCH", &apply_url, APPLY, Some(&object("warned"))).await;
        assert_eq!(code, 500, "{query}: {status}");
        assert_eq!(
            status["message"],
            "failed to create typed patch object (team/warned; accessplane.io/v1alpha1, Kind=AccessProfile): errors:\n  .spec.colour: field not declared in schema\n  .spec.connectionRef.namespace: field not declared in schema"
        );
    }

    let bogus = format!("{url}?fieldValidation=Bogus");
    let (code, status, _) = send(&fake, "POST", &bogus, JSON, Some(&object("bogus"))).await;
    assert_eq!(code, 422);
    assert_eq!(
        status["message"],
        r#"CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "Bogus": supported values: "", "Ignore", "Strict", "Warn""#
    );

    // The connector account's config is passed through to ConductorOne as it is.
    let entitlement = json!({"apiVersion": AP_GROUP_VERSION, "kind": "AppEntitlement",
        "metadata": {"name": "e", "namespace": "team"},
        "spec": {"connectionRef": {"name": "c1"}, "appId": "a", "displayName": "D",
                 "provisionerPolicy": {"connector": {"account": {"connectorId": "k", "config": {"anything": {"x": 1}}}}}}});
    let e_url =
        "/apis/accessplane.io/v1alpha1/namespaces/team/appentitlements?fieldValidation=Strict";
    let (code, created, _) = send(&fake, "POST", e_url, JSON, Some(&entitlement)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["spec"]["provisionerPolicy"]["connector"]["account"]["config"],
        json!({"anything": {"x": 1}})
    );
}

/// Updates are judged as the apiserver's validation ratcheting judges them: what an
/// update leaves unchanged is not judged again (an object stored before a rule existed
/// keeps taking finalizer, annotation and status writes), what it changes is. A `/status`
/// write is judged against the status schema (required fields, types, `date-time`);
/// the spec it carries is ignored, not judged.
#[tokio::test]
async fn updates_judge_what_changed_and_status_writes_are_validated() {
    let fake = FakeKube::new();
    // Stored past admission (as only etcd access could): a blank display name.
    fake.put_object(
        json!({"apiVersion": AP_GROUP_VERSION, "kind": "AccessProfile",
        "metadata": {"name": "old", "namespace": "team", "generation": 1},
        "spec": {"connectionRef": {"name": "serval"}, "teamId": "t1", "name": "   "}}),
    );
    let aps = access_profiles(&fake, "team");
    let obj = aps.get("old").await.unwrap();
    let finalizer = Patch::Json::<()>(json_patch::Patch(vec![
        json_patch::PatchOperation::Test(json_patch::TestOperation {
            path: "/metadata/resourceVersion".parse().unwrap(),
            value: json!(obj.resource_version()),
        }),
        json_patch::PatchOperation::Add(json_patch::AddOperation {
            path: "/metadata/finalizers".parse().unwrap(),
            value: json!(["accessplane.io/cleanup"]),
        }),
    ]));
    aps.patch("old", &PatchParams::default(), &finalizer)
        .await
        .unwrap();
    let condition = |message: Option<&str>, at: &str| {
        let mut c = json!({"type": "Ready", "status": "True", "reason": "Synced",
                           "lastTransitionTime": at, "observedGeneration": 1});
        if let Some(m) = message {
            c["message"] = json!(m);
        }
        c
    };
    let status = |value: serde_json::Value| {
        Patch::Json::<()>(json_patch::Patch(vec![json_patch::PatchOperation::Add(
            json_patch::AddOperation {
                path: "/status".parse().unwrap(),
                value,
            },
        )]))
    };
    let ready = json!({"observedGeneration": 1, "conditions": [condition(Some(""), "2026-01-02T03:04:05Z")]});
    aps.patch_status("old", &PatchParams::default(), &status(ready.clone()))
        .await
        .unwrap();
    let described = Patch::Merge(json!({"spec": {"description": "still valid elsewhere"}}));
    aps.patch("old", &PatchParams::default(), &described)
        .await
        .unwrap();

    let renamed = Patch::Merge(json!({"spec": {"name": "\t"}}));
    let refused = api_status(
        aps.patch("old", &PatchParams::default(), &renamed)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        status_causes(&refused)
            .iter()
            .map(|(_, f, _)| f.as_str())
            .collect::<Vec<_>>(),
        ["spec.name"],
        "{}",
        refused.message
    );

    for (bad, reason, field, body) in [
        (
            json!({"observedGeneration": "one"}),
            "FieldValueTypeInvalid",
            "status.observedGeneration",
            "Invalid value: \"string\": status.observedGeneration in body must be of type integer: \"string\"",
        ),
        (
            json!({"conditions": [condition(None, "2026-01-02T03:04:05Z")]}),
            "FieldValueRequired",
            "status.conditions[0].message",
            "Required value",
        ),
        (
            json!({"conditions": [condition(Some(""), "yesterday")]}),
            "FieldValueTypeInvalid",
            "status.conditions[0].lastTransitionTime",
            "Invalid value: \"yesterday\": status.conditions[0].lastTransitionTime in body must be of type date-time: \"yesterday\"",
        ),
    ] {
        let refused = api_status(
            aps.patch_status("old", &PatchParams::default(), &status(bad.clone()))
                .await
                .unwrap_err(),
        );
        assert_eq!(refused.code, 422, "{bad}");
        assert_eq!(
            status_causes(&refused)[0],
            (reason.to_string(), field.to_string(), body.to_string()),
            "{}",
            refused.message
        );
    }
    // A status write's spec is not looked at (the stored spec stays).
    let with_spec =
        Patch::Merge(json!({"spec": {"teamId": "elsewhere"}, "status": {"id": "ap-1"}}));
    let written = aps
        .patch_status("old", &PatchParams::default(), &with_spec)
        .await
        .unwrap();
    assert_eq!(written.data["spec"]["teamId"], "t1");
    assert_eq!(written.data["status"]["id"], "ap-1");
}

// ---------------------------------------------------------------------------------------
// Watch history expiry and bookmarks

async fn watch_events(
    cms: &Api<ConfigMap>,
    wp: &WatchParams,
    rv: &str,
) -> Vec<WatchEvent<ConfigMap>> {
    tokio::time::timeout(
        Duration::from_secs(10),
        cms.watch(wp, rv).await.unwrap().try_collect::<Vec<_>>(),
    )
    .await
    .expect("the watch ends")
    .unwrap()
}

fn expired(events: &[WatchEvent<ConfigMap>]) -> Option<(u16, String, String)> {
    match events {
        [WatchEvent::Error(status)] => {
            Some((status.code, status.reason.clone(), status.message.clone()))
        }
        _ => None,
    }
}

/// The history a watch resumes from is bounded per resource, like the apiserver's watch
/// cache ([`FakeKube::set_watch_history`]), and compacted on demand like etcd
/// ([`FakeKube::compact`]): a watch from before it is a 200 whose one event is an ERROR
/// with the `410 Expired` Status (`too old resource version: <rv> (<oldest>)`), then the
/// stream ends; from inside it the changes are replayed. A paged List whose snapshot was
/// compacted is a 410 with a token that continues at the latest resourceVersion.
#[tokio::test]
async fn watches_from_an_expired_resource_version_get_410_gone() {
    let fake = FakeKube::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    let pp = PostParams::default();
    let a = cms.create(&pp, &cm("a", &[])).await.unwrap();
    let b = cms.create(&pp, &cm("b", &[])).await.unwrap();
    let touch = Patch::Merge(json!({"data": {"k": "2"}}));
    cms.patch("a", &PatchParams::default(), &touch)
        .await
        .unwrap();
    let (rv_a, rv_b) = (a.resource_version().unwrap(), b.resource_version().unwrap());
    let wp = WatchParams::default().timeout(1).disable_bookmarks();

    fake.set_watch_history(1); // keeps the patch of `a` only
    let events = watch_events(&cms, &wp, &rv_a).await;
    assert_eq!(
        expired(&events),
        Some((
            410,
            "Expired".to_string(),
            format!("too old resource version: {rv_a} ({rv_b})")
        )),
        "{events:?}"
    );
    let events = watch_events(&cms, &wp, &rv_b).await;
    assert!(
        matches!(events.as_slice(), [WatchEvent::Modified(c)] if c.name_any() == "a"),
        "{events:?}"
    );
    // Another resource's writes do not push this one's history out.
    let secrets: Api<Secret> = Api::default_namespaced(fake.client());
    for i in 0..3 {
        let secret =
            serde_json::from_value(json!({"metadata": {"name": format!("s{i}")}})).unwrap();
        secrets.create(&pp, &secret).await.unwrap();
    }
    assert_eq!(watch_events(&cms, &wp, &rv_b).await.len(), 1);

    // Compaction: everything before now is gone.
    fake.set_watch_history(crate::support::fake_kube::DEFAULT_WATCH_HISTORY);
    fake.compact();
    let now = fake.resource_version().to_string();
    let events = watch_events(&cms, &wp, &rv_b).await;
    assert_eq!(
        expired(&events).map(|e| e.2),
        Some(format!("too old resource version: {rv_b} ({now})"))
    );
    assert!(watch_events(&cms, &wp, &now).await.is_empty());

    let first = cms.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first.metadata.continue_.unwrap();
    cms.create(&pp, &cm("c", &[])).await.unwrap();
    fake.compact();
    let status = api_status(
        cms.list(&ListParams::default().limit(1).continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(
        status.message.starts_with(
            "The provided continue parameter is too old to display a consistent list result."
        ),
        "{}",
        status.message
    );
    let fresh = status.metadata.unwrap().continue_.unwrap();
    let rest = cms
        .list(&ListParams::default().continue_token(&fresh))
        .await
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
        ["b", "c"]
    );
}

/// kube_runtime's watcher after a gap longer than the history: its resumed watch gets
/// 410 Gone, it relists, and the reflector's store ends up as the apiserver is: an object
/// deleted during the gap (whose DELETED event nobody will replay) disappears, one
/// created during it appears.
#[tokio::test]
async fn the_watcher_relists_after_410_and_its_store_drops_what_was_deleted_meanwhile() {
    use kube::runtime::reflector;
    let fake = FakeKube::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    let pp = PostParams::default();
    for name in ["keep", "gone"] {
        cms.create(&pp, &cm(name, &[])).await.unwrap();
    }
    let (store, writer) = reflector::store::<ConfigMap>();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = reflector::reflector(writer, watcher(cms.clone(), watcher::Config::default()));
    let driver = tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(event) = stream.next().await {
            let seen = match event {
                Ok(watcher::Event::Init) => "Init".to_string(),
                Ok(watcher::Event::InitDone) => "InitDone".to_string(),
                Ok(watcher::Event::InitApply(c)) => format!("InitApply {}", c.name_any()),
                Ok(watcher::Event::Apply(c)) => format!("Apply {}", c.name_any()),
                Ok(watcher::Event::Delete(c)) => format!("Delete {}", c.name_any()),
                Err(e) => format!("Err {e}"),
            };
            if tx.send(seen).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<String> = vec![];
    async fn until(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
        seen: &mut Vec<String>,
        what: &str,
    ) {
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let event = rx.recv().await.expect("watcher running");
                seen.push(event.clone());
                if event.starts_with(what) {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "no {what} in {seen:?}");
    }
    until(&mut rx, &mut seen, "InitDone").await;
    let names = |store: &reflector::Store<ConfigMap>| {
        let mut names: Vec<String> = store.state().iter().map(|c| c.name_any()).collect();
        names.sort();
        names
    };
    assert_eq!(names(&store), ["gone", "keep"]);
    let lists = || {
        fake.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/configmaps"))
            .filter(|r| r.query_param("watch").is_none())
            .count()
    };
    assert_eq!(lists(), 1);

    // The gap: the watch drops and cannot come back until the history is compacted past
    // a deletion and a creation.
    fake.stall("/configmaps", true);
    fake.disconnect_watches();
    fake.delete_object("v1", "configmaps", "default", "gone")
        .unwrap();
    fake.put_object(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "new", "namespace": "default"}}));
    fake.compact();
    fake.stall("/configmaps", false);

    until(&mut rx, &mut seen, "Err").await;
    assert!(
        seen.last().unwrap().contains("410") || seen.last().unwrap().contains("Expired"),
        "{seen:?}"
    );
    until(&mut rx, &mut seen, "InitDone").await;
    assert_eq!(names(&store), ["keep", "new"], "{seen:?}");
    assert_eq!(lists(), 2, "relisted once");
    driver.abort();
}

/// With `allowWatchBookmarks=true` (kube's default) a watch gets a BOOKMARK at the current
/// resourceVersion every bookmark interval ([`FakeKube::set_bookmark_interval`]; the
/// apiserver's minute by default) and 2 s before its timeout, none later than that (the
/// apiserver's storage/cacher schedule); without, none.
#[tokio::test]
async fn watches_that_allow_bookmarks_get_them_periodically_and_before_the_timeout() {
    let fake = FakeKube::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    cms.create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let now = fake.resource_version().to_string();
    let bookmarks = |events: &[WatchEvent<ConfigMap>]| {
        events
            .iter()
            .filter_map(|e| match e {
                WatchEvent::Bookmark(b) => Some(b.metadata.resource_version.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };

    // Before the timeout: at 1 s of a 3 s watch, the default interval being a minute.
    let started = tokio::time::Instant::now();
    let events = watch_events(&cms, &WatchParams::default().timeout(3), &now).await;
    assert_eq!(bookmarks(&events), std::slice::from_ref(&now), "{events:?}");
    assert!(started.elapsed() >= Duration::from_secs(3));

    // Every 300 ms up to 2 s before the end: at 0.3, 0.6, 0.9 and 1 s of a 3 s watch.
    fake.set_bookmark_interval(Duration::from_millis(300));
    let events = watch_events(&cms, &WatchParams::default().timeout(3), &now).await;
    let marks = bookmarks(&events);
    // Four; fewer only if timers fire late under load.
    assert!((2..=5).contains(&marks.len()), "{events:?}");
    assert!(marks.iter().all(|rv| *rv == now));
    let events = watch_events(
        &cms,
        &WatchParams::default().timeout(1).disable_bookmarks(),
        &now,
    )
    .await;
    assert!(events.is_empty(), "{events:?}");

    // A bookmark comes after the events sent before it and carries their resourceVersion.
    let mut live = cms
        .watch(&WatchParams::default().timeout(3), &now)
        .await
        .unwrap()
        .boxed();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "3"}})),
    )
    .await
    .unwrap();
    let modified = fake.resource_version().to_string();
    assert!(matches!(
        live.try_next().await.unwrap(),
        Some(WatchEvent::Modified(_))
    ));
    match live.try_next().await.unwrap() {
        Some(WatchEvent::Bookmark(b)) => assert_eq!(b.metadata.resource_version, modified),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// CRDs

/// Opt-in ([`FakeKube::require_crds`]): a resource of a group only a CRD can define is
/// served only while its CRD is stored, else every request for it is the apiserver's
/// plain-text `404 page not found` (kube makes that an API error 404); built-in groups
/// are always served. Custom resources are then admitted with the stored CRD's schema,
/// whatever it says (here one that is not the operator's).
#[tokio::test]
async fn resources_without_a_crd_are_a_404_when_crds_are_required() {
    let fake = FakeKube::new();
    let (widgets, ar) = widgets(&fake);
    assert!(
        widgets.list(&ListParams::default()).await.is_ok(),
        "served by default"
    );

    fake.require_crds();
    let not_found = |r: Result<_, kube::Error>| match r {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("expected a 404, got {:?}", other.map(|_| ())),
    };
    assert_eq!(
        not_found(widgets.list(&ListParams::default()).await.map(|_| ())),
        (404, "404 page not found".to_string())
    );
    let w = DynamicObject::new("w", &ar).data(json!({"spec": {"size": 5, "colour": "red"}}));
    assert_eq!(
        not_found(widgets.create(&PostParams::default(), &w).await.map(|_| ())).0,
        404
    );
    assert_eq!(not_found(widgets.get("w").await.map(|_| ())).0, 404);
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    cms.create(&PostParams::default(), &cm("c", &[]))
        .await
        .unwrap();

    fake.install_crds_except(&["ClusterConnection"]);
    let aps = access_profiles(&fake, "default");
    assert!(aps.list(&ListParams::default()).await.is_ok());
    let cc = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("accessplane.io", "v1alpha1", "ClusterConnection"),
        "clusterconnections",
    );
    let ccs: Api<DynamicObject> = Api::all_with(fake.client(), &cc);
    assert_eq!(
        not_found(ccs.list(&ListParams::default()).await.map(|_| ())).0,
        404
    );
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(fake.client());
    assert_eq!(
        crds.list(&ListParams::default()).await.unwrap().items.len(),
        6
    );

    // A CRD of its own: served from now on, admitted with its schema.
    let crd = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.accessplane.io"},
        "spec": {"group": "accessplane.io", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer", "maximum": 3}}}}}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let status = api_status(
        widgets
            .create(&PostParams::default(), &w)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        status.message,
        "Widget.accessplane.io \"w\" is invalid: spec.size: Invalid value: 5: spec.size in body should be less than or equal to 3"
    );
    let w = DynamicObject::new("w", &ar).data(json!({"spec": {"size": 3, "colour": "red"}}));
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.data["spec"], json!({"size": 3}), "colour pruned");
    assert_eq!(created.types.unwrap().kind, "Widget");
}
