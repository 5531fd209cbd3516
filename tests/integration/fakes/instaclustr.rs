//! Tests of the fake Instaclustr server itself, driven through reqwest over real HTTP.

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::support::fake_http::{Fault, FaultMatch};
use crate::support::fake_instaclustr::{
    CONTROLS_PATH, FakeInstaclustr, LegacyFault, cluster_path, control_path, list_path,
};

const CLUSTER: &str = "c1";
const OTHER_CLUSTER: &str = "c2";
const VS: &str = "b2c3d4e5-f6a7-8901-bcde-f12345678901";
const OTHER_VS: &str = "c3d4e5f6-a7b8-9012-cdef-123456789012";
const TOOL_A: &str = "11111111-1111-1111-1111-111111111111";
const TOOL_B: &str = "22222222-2222-2222-2222-222222222222";
/// Long enough for a few local round trips on a starved CI machine.
const DELAY: Duration = Duration::from_secs(1);

fn client() -> Client {
    // reqwest is built with `rustls-no-provider` and panics at build time without one,
    // even for plain http. Several tests race here, hence the ignored result.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new()
}

struct Api {
    fake: FakeInstaclustr,
    http: Client,
}

impl Api {
    /// Account "alice" (key "k"), a read-only key "ro", and one virtual server per cluster.
    async fn start() -> Self {
        let fake = FakeInstaclustr::start().await;
        fake.add_account("alice", "k");
        fake.add_read_only_key("alice", "ro");
        fake.add_virtual_server(CLUSTER, VS);
        fake.add_virtual_server(OTHER_CLUSTER, OTHER_VS);
        Self {
            fake,
            http: client(),
        }
    }

    fn req_as(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        let url = format!("{}{path}", self.fake.base_url());
        // As the contract asks: on every request, bodiless ones too.
        self.http
            .request(method, url)
            .basic_auth("alice", Some(key))
            .header("content-type", "application/json")
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.req_as("k", method, path)
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.req(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        split(req.send().await.unwrap()).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }
}

/// Status and JSON body (`Null` when empty).
async fn split(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, body)
}

fn body(vs: &str, role: &str, kind: &str, tools: &[&str]) -> Value {
    json!({"virtualServerId": vs, "personaRole": role, "type": kind, "tools": tools})
}

fn error_names(err: &Value) -> Vec<&str> {
    let errors = err["errors"].as_array().expect("errors array").iter();
    errors.map(|e| e["name"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn basic_auth_and_read_only_keys() {
    let api = Api::start().await;
    let list = list_path(CLUSTER);
    let url = format!("{}{list}", api.fake.base_url());

    let (status, err) = split(api.http.get(&url).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["name"], "Unauthorized");
    let wrong = api.http.get(&url).basic_auth("alice", Some("nope"));
    assert_eq!(
        wrong.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(api.get(&list).await, (StatusCode::OK, json!([])));
    let ro_get = api.req_as("ro", Method::GET, &list).send().await.unwrap();
    assert_eq!(ro_get.status(), StatusCode::OK);

    let ro_post = api.req_as("ro", Method::POST, CONTROLS_PATH);
    let ro_post = ro_post.json(&body(VS, "analyst", "ALLOWLIST", &[]));
    let (status, err) = split(ro_post.send().await.unwrap()).await;
    assert_eq!(
        (status, &err["name"]),
        (StatusCode::FORBIDDEN, &json!("Forbidden"))
    );
    assert_eq!(api.fake.pending_changes(), 0, "nothing accepted");
    assert!(api.fake.controls(CLUSTER).is_empty());
}

#[tokio::test]
async fn create_is_visible_only_after_the_delay() {
    let api = Api::start().await;
    api.fake.set_visibility_delay(DELAY);
    let req = body(VS, "analyst", "ALLOWLIST", &[TOOL_A, TOOL_B]);

    let (status, created) = api
        .send(Method::POST, CONTROLS_PATH, Some(req.clone()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = format!("{VS}_analyst");
    assert_eq!(
        created,
        json!({"id": id, "clusterId": CLUSTER, "virtualServerId": VS, "type": "ALLOWLIST",
               "personaRole": "analyst", "tools": [TOOL_B, TOOL_A]}),
        "echo with read-only fields; tools come back reversed"
    );

    let (status, err) = api.get(&control_path(&id)).await;
    assert_eq!(
        (status, &err["name"]),
        (StatusCode::NOT_FOUND, &json!("NotFound"))
    );
    assert_eq!(api.get(&list_path(CLUSTER)).await.1, json!([]));
    assert_eq!(api.fake.control(&id), None);
    // The accepted-but-invisible object already conflicts.
    let (status, err) = api.send(Method::POST, CONTROLS_PATH, Some(req)).await;
    assert_eq!(
        (status, &err["name"]),
        (StatusCode::CONFLICT, &json!("Conflict"))
    );

    tokio::time::sleep(DELAY).await;
    assert_eq!(
        api.get(&control_path(&id)).await,
        (StatusCode::OK, created.clone())
    );
    assert_eq!(api.get(&list_path(CLUSTER)).await.1, json!([created]));
}

#[tokio::test]
async fn update_and_delete_are_visible_only_after_the_delay() {
    let api = Api::start().await;
    let id = api
        .fake
        .seed_control(body(VS, "analyst", "ALLOWLIST", &[TOOL_A]));
    let old = api.fake.control(&id).unwrap();
    api.fake.set_visibility_delay(DELAY);
    let path = control_path(&id);

    let (status, updated) = api
        .send(
            Method::PUT,
            &path,
            Some(body(VS, "analyst", "DENYLIST", &[])),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (&updated["type"], &updated["tools"]),
        (&json!("DENYLIST"), &json!([]))
    );
    assert_eq!(api.get(&path).await, (StatusCode::OK, old));
    tokio::time::sleep(DELAY).await;
    assert_eq!(api.get(&path).await, (StatusCode::OK, updated.clone()));

    // virtualServerId and personaRole are immutable.
    let renamed = body(VS, "other", "DENYLIST", &[]);
    let (status, err) = api.send(Method::PUT, &path, Some(renamed)).await;
    assert_eq!(
        (status, error_names(&err)),
        (StatusCode::BAD_REQUEST, vec!["personaRole"])
    );

    assert_eq!(
        api.send(Method::DELETE, &path, None).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(
        api.get(&path).await,
        (StatusCode::OK, updated),
        "still visible"
    );
    let (status, _) = api.send(Method::DELETE, &path, None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "already deleted (accepted state)"
    );
    tokio::time::sleep(DELAY).await;
    assert_eq!(api.get(&path).await.0, StatusCode::NOT_FOUND);
    let put = api.send(
        Method::PUT,
        &path,
        Some(body(VS, "analyst", "ALLOWLIST", &[])),
    );
    assert_eq!(put.await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_is_per_cluster_and_calls_are_counted() {
    let api = Api::start().await;
    let a = api.fake.seed_control(body(VS, "analyst", "ALLOWLIST", &[]));
    let b = api
        .fake
        .seed_control(body(OTHER_VS, "analyst", "DENYLIST", &[]));
    let (status, list) = api.get(&list_path(CLUSTER)).await;
    assert_eq!(
        (status, list),
        (StatusCode::OK, json!([api.fake.control(&a).unwrap()]))
    );
    assert_eq!(
        api.fake.controls(OTHER_CLUSTER),
        [api.fake.control(&b).unwrap()]
    );
    let (status, err) = api.get(&list_path("nope")).await;
    assert_eq!(
        (status, &err["name"]),
        (StatusCode::NOT_FOUND, &json!("NotFound"))
    );

    // Drift is immediately visible.
    api.fake.edit_control(&a, |c| c["type"] = json!("DENYLIST"));
    assert_eq!(api.get(&list_path(CLUSTER)).await.1[0]["type"], "DENYLIST");
    api.get(&control_path(&a)).await;
    api.get(&control_path(&b)).await;

    assert_eq!(api.fake.list_calls(CLUSTER), 2);
    assert_eq!(api.fake.list_calls(OTHER_CLUSTER), 0);
    assert_eq!(api.fake.get_calls(), 2);
    assert_eq!(api.fake.writes(), 0);
    api.fake.clear_requests();
    assert_eq!(api.fake.list_calls(CLUSTER), 0);
}

#[tokio::test]
async fn invalid_bodies_are_rejected_with_an_errors_array() {
    let api = Api::start().await;
    let bad = json!({"virtualServerId": "not-a-uuid", "type": "MAYBE", "personaRole": "it's",
                     "tools": ["x"], "id": "read-only"});
    let (status, err) = api.send(Method::POST, CONTROLS_PATH, Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut names = error_names(&err);
    names.sort();
    assert_eq!(
        names,
        ["id", "personaRole", "tools", "type", "virtualServerId"]
    );

    let empty_role = body(VS, "", "ALLOWLIST", &[]);
    let (status, err) = api
        .send(Method::POST, CONTROLS_PATH, Some(empty_role))
        .await;
    assert_eq!(
        (status, error_names(&err)),
        (StatusCode::BAD_REQUEST, vec!["personaRole"])
    );

    let unknown_vs = body(
        "99999999-9999-9999-9999-999999999999",
        "a",
        "ALLOWLIST",
        &[],
    );
    let (status, err) = api
        .send(Method::POST, CONTROLS_PATH, Some(unknown_vs))
        .await;
    assert_eq!(
        (status, error_names(&err)),
        (StatusCode::BAD_REQUEST, vec!["virtualServerId"])
    );

    let url = format!("{}{CONTROLS_PATH}", api.fake.base_url());
    let text = api
        .http
        .post(&url)
        .basic_auth("alice", Some("k"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(api.fake.pending_changes(), 0);
    assert_eq!(api.fake.writes(), 4);
}

#[tokio::test]
async fn ids_are_percent_decoded() {
    let api = Api::start().await;
    let role = "data team/ops ä+%";
    let (status, created) = api
        .send(
            Method::POST,
            CONTROLS_PATH,
            Some(body(VS, role, "ALLOWLIST", &[])),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = format!("{VS}_{role}");
    assert_eq!(created["id"], id);

    let (status, got) = api.get(&control_path(&id)).await;
    assert_eq!(
        (status, &got["personaRole"]),
        (StatusCode::OK, &json!(role))
    );
    // An unencoded '/' splits the id: no such route (legacy error shape).
    let (status, err) = api
        .get(&format!("{CONTROLS_PATH}/{VS}_data%20team/ops"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].is_string(), "{err}");
    let (status, _) = api.send(Method::DELETE, &control_path(&id), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.fake.control(&id), None);
}

#[tokio::test]
async fn writes_to_a_busy_cluster_are_rejected_and_counted() {
    let api = Api::start().await;
    let id = api.fake.seed_control(body(VS, "analyst", "ALLOWLIST", &[]));
    let (status, cluster) = api.get(&cluster_path(CLUSTER)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            &cluster["id"],
            &cluster["status"],
            &cluster["currentClusterOperationStatus"]
        ),
        (&json!(CLUSTER), &json!("RUNNING"), &json!("NO_OPERATION"))
    );

    api.fake
        .set_cluster_state(CLUSTER, "RUNNING", "OPERATION_IN_PROGRESS");
    let (_, cluster) = api.get(&cluster_path(CLUSTER)).await;
    assert_eq!(
        cluster["currentClusterOperationStatus"],
        "OPERATION_IN_PROGRESS"
    );
    let create = body(VS, "other", "ALLOWLIST", &[]);
    let (status, err) = api.send(Method::POST, CONTROLS_PATH, Some(create)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        err,
        json!({"errors": [{"name": "cluster", "message": "cluster is not running"}]})
    );
    let (status, _) = api.send(Method::DELETE, &control_path(&id), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(api.fake.writes_while_not_running(), 2);
    assert!(api.fake.control(&id).is_some(), "nothing applied");

    // Reads are fine, and other clusters are unaffected.
    assert_eq!(api.get(&control_path(&id)).await.0, StatusCode::OK);
    let other = body(OTHER_VS, "analyst", "ALLOWLIST", &[]);
    assert_eq!(
        api.send(Method::POST, CONTROLS_PATH, Some(other)).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(api.fake.writes_while_not_running(), 2);
}

#[tokio::test]
async fn rate_limit_is_per_account_without_retry_after() {
    let api = Api::start().await;
    api.fake.add_account("bob", "kb");
    // Six local round trips must fit in one window, even on a starved machine.
    let window = Duration::from_secs(2);
    api.fake.set_rate_limit(3, window);
    let list = list_path(CLUSTER);

    for key in ["k", "ro", "k"] {
        let resp = api.req_as(key, Method::GET, &list).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // Every key of the account shares the budget.
    let resp = api.req_as("ro", Method::GET, &list).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_none());
    let err: Value = resp.json().await.unwrap();
    assert_eq!(
        err,
        json!({"name": "TooManyRequests", "message": "Rate Limit Exceeded"})
    );

    let url = format!("{}{list}", api.fake.base_url());
    let bob = api
        .http
        .get(&url)
        .basic_auth("bob", Some("kb"))
        .header("content-type", "application/json");
    assert_eq!(bob.send().await.unwrap().status(), StatusCode::OK);
    assert!(api.fake.max_requests_in_window(window) >= 5);

    tokio::time::sleep(window).await;
    assert_eq!(api.get(&list).await.0, StatusCode::OK);
    assert_eq!(api.fake.max_requests_in_window(Duration::ZERO), 0);
}

/// The contract asks for `Content-Type: application/json` on every request.
#[tokio::test]
async fn requests_without_a_json_content_type_are_refused() {
    let api = Api::start().await;
    let url = format!("{}{}", api.fake.base_url(), list_path(CLUSTER));
    let bare = api.http.get(&url).basic_auth("alice", Some("k"));
    let resp = bare.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(api.get(&list_path(CLUSTER)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn faults_are_served_once_each() {
    let api = Api::start().await;
    let list = list_path(CLUSTER);
    api.fake
        .push_fault(FaultMatch::new("GET", &list), Fault::legacy(500, "boom"));
    assert_eq!(
        api.get(&list).await,
        (StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "boom"}))
    );
    assert_eq!(api.get(&list).await.0, StatusCode::OK);

    api.fake.fail_next("POST", CONTROLS_PATH, 503, 1);
    let req = body(VS, "analyst", "ALLOWLIST", &[]);
    let (status, err) = api
        .send(Method::POST, CONTROLS_PATH, Some(req.clone()))
        .await;
    assert_eq!(
        (status, &err["name"]),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            &json!("ServiceUnavailable")
        )
    );
    assert_eq!(
        api.fake.pending_changes(),
        0,
        "a faulted request applies nothing"
    );

    // Applied, but the client only sees a transport error.
    api.fake.set_visibility_delay(DELAY);
    api.fake.push_fault(
        FaultMatch::new("POST", CONTROLS_PATH),
        Fault::ApplyThenDropConnection,
    );
    let sent = api.req(Method::POST, CONTROLS_PATH).json(&req).send().await;
    assert!(sent.unwrap_err().status().is_none());
    assert_eq!(api.fake.pending_changes(), 1);
    assert_eq!(
        api.send(Method::POST, CONTROLS_PATH, Some(req)).await.0,
        StatusCode::CONFLICT
    );

    api.fake
        .push_fault(FaultMatch::default(), Fault::DropConnection);
    assert!(api.req(Method::GET, &list).send().await.is_err());
    let statuses: Vec<u16> = api.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 200, 503, 0, 409, 0]);
}
