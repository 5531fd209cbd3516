//! Tests of the fake Serval server itself, driven through reqwest over real HTTP.

use std::time::{Duration, Instant};

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::support::fake_http::{Fault, FaultMatch};
use crate::support::fake_serval::{FakeServal, PROFILES_PATH, TOKEN_PATH};

fn client() -> Client {
    // reqwest is built with `rustls-no-provider` and panics at build time without one,
    // even for plain http. Several tests race here, hence the ignored result.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new()
}

struct Api {
    fake: FakeServal,
    http: Client,
    token: String,
}

impl Api {
    async fn start() -> Self {
        let fake = FakeServal::start().await;
        let token = fake.issue_bearer_token();
        Self {
            fake,
            http: client(),
            token,
        }
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let url = format!("{}{path}", self.fake.base_url());
        self.http.request(method, url).bearer_auth(&self.token)
    }

    async fn create(&self, body: Value) -> Value {
        let resp = self
            .req(Method::POST, PROFILES_PATH)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json::<Value>().await.unwrap()["data"].take()
    }

    async fn put(&self, id: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("{PROFILES_PATH}/{id}");
        split(
            self.req(Method::PUT, &path)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        split(self.req(Method::GET, path).send().await.unwrap()).await
    }
}

async fn split(resp: Response) -> (StatusCode, Value) {
    (resp.status(), resp.json().await.unwrap())
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    let items = list.as_array().unwrap().iter();
    items
        .map(|v| v[key].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn token_exchange_checks_basic_auth_and_grant() {
    let fake = FakeServal::start().await;
    fake.add_client("cid", "s3cret");
    let http = client();
    let token_url = format!("{}{TOKEN_PATH}", fake.base_url());
    let exchange = |id: &str, secret: &str, grant: &str| {
        let req = http.post(&token_url).basic_auth(id, Some(secret));
        req.form(&[("grant_type", grant)]).send()
    };

    let (status, body) = split(
        exchange("cid", "wrong", "client_credentials")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthenticated");
    assert_eq!(body["message"], "invalid client credentials");
    let no_auth = http
        .post(&token_url)
        .form(&[("grant_type", "client_credentials")]);
    assert_eq!(
        no_auth.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = split(exchange("cid", "s3cret", "password").await.unwrap()).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_argument"))
    );

    let (status, body) = split(
        exchange("cid", "s3cret", "client_credentials")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();
    assert!(token.starts_with("tok-"));
    assert_eq!(fake.token_exchanges(), 1);

    let list = format!("{}{PROFILES_PATH}?teamId=t", fake.base_url());
    let authed = http.get(&list).bearer_auth(token).send().await.unwrap();
    assert_eq!(authed.status(), StatusCode::OK);
    let (status, body) = split(http.get(&list).send().await.unwrap()).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::UNAUTHORIZED, &json!("unauthenticated"))
    );

    // Token requests are logged (form fields only), without any credential.
    assert_eq!(fake.count("POST", TOKEN_PATH), 4);
    let log = format!("{:?}", fake.requests());
    assert!(!log.contains("s3cret") && !log.contains(token), "{log}");
    assert_eq!(
        fake.requests()[0].body,
        Some(json!({"grant_type": "client_credentials"}))
    );
}

#[tokio::test]
async fn tokens_expire_and_can_be_revoked() {
    let api = Api::start().await;
    api.fake.add_client("cid", "sec");
    // Long enough that the first call is inside it even on a starved machine.
    api.fake.set_token_ttl(Duration::from_secs(1));
    let token_url = format!("{}{TOKEN_PATH}", api.fake.base_url());
    let resp = api.http.post(&token_url).basic_auth("cid", Some("sec"));
    let resp = resp
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let short = resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let list = format!("{}{PROFILES_PATH}?teamId=t", api.fake.base_url());
    let call = |token: &str| api.http.get(&list).bearer_auth(token).send();
    assert_eq!(call(&short).await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1020)).await;
    let (status, body) = split(call(&short).await.unwrap()).await;
    assert_eq!(
        (status, &body["message"]),
        (StatusCode::UNAUTHORIZED, &json!("token expired"))
    );

    // The pre-issued token outlives the TTL but not a revocation.
    assert_eq!(call(&api.token).await.unwrap().status(), StatusCode::OK);
    api.fake.revoke_tokens();
    assert_eq!(
        call(&api.token).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn create_get_and_list_across_pages() {
    let api = Api::start().await;
    let mut created = Vec::new();
    for i in 0..5 {
        let ap = api
            .create(json!({"teamId": "team-a", "name": format!("p{i}")}))
            .await;
        created.push(ap["id"].as_str().unwrap().to_string());
    }
    api.create(json!({"teamId": "team-b", "name": "other"}))
        .await;
    assert_eq!(created, ["ap-1", "ap-2", "ap-3", "ap-4", "ap-5"]);

    let (mut seen, mut sizes, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let path = format!("{PROFILES_PATH}?teamId=team-a&pageSize=2&pageToken={token}");
        let (status, body) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        sizes.push(body["data"].as_array().unwrap().len());
        seen.extend(ids(&body["data"], "id"));
        token = body["nextPageToken"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!((seen, sizes), (created, vec![2, 2, 1]));

    let (status, body) = api.get(&format!("{PROFILES_PATH}?pageSize=2")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_argument");
    assert!(body["message"].as_str().unwrap().contains("teamId"));
    let bad_cursor = format!("{PROFILES_PATH}?teamId=team-a&pageToken=garbage");
    assert_eq!(api.get(&bad_cursor).await.0, StatusCode::BAD_REQUEST);

    let full = api
        .create(json!({
            "teamId": "team-a", "name": "full", "description": "d",
            "matchingCriteria": {"groups": {"includedGroupIds": ["g1", "g2"]}},
            "grants": {"appResourceRoles": [{"appResourceRoleId": "r1"}, {"appResourceRoleId": "r2"}],
                       "workflows": [{"workflowId": "w1"}]},
        }))
        .await;
    let (status, body) = api
        .get(&format!("{PROFILES_PATH}/{}", full["id"].as_str().unwrap()))
        .await;
    assert_eq!((status, &body["data"]), (StatusCode::OK, &full));
    assert_eq!(full["isTeamDefault"], false);
    assert!(full["createdAt"].as_str().unwrap().ends_with('Z'));
    let groups = &full["matchingCriteria"]["groups"];
    assert_eq!(
        groups["matchType"],
        "ACCESS_PROFILE_GROUP_MATCH_TYPE_UNSPECIFIED"
    );
    // Deterministically reversed, so clients must compare id lists as sets.
    assert_eq!(groups["includedGroupIds"], json!(["g2", "g1"]));
    assert_eq!(groups["excludedGroupIds"], json!([]));
    assert_eq!(
        full["grants"]["appResourceRoles"],
        json!([{"appResourceRoleId": "r2", "useTeamDefaultAccessProfile": false},
               {"appResourceRoleId": "r1", "useTeamDefaultAccessProfile": false}])
    );
}

#[tokio::test]
async fn put_replaces_collections_and_follows_description_rules() {
    let api = Api::start().await;
    let ap = api
        .create(json!({
            "teamId": "t", "name": "n", "description": "d",
            "matchingCriteria": {"groups": {"includedGroupIds": ["g1"], "excludedGroupIds": ["g9"]}},
            "grants": {"appResourceRoles": [{"appResourceRoleId": "r1"}, {"appResourceRoleId": "r2"}],
                       "workflows": [{"workflowId": "w1"}]},
        }))
        .await;
    let id = ap["id"].as_str().unwrap();

    // grants present = replace all of grants (workflows become empty); the rest unchanged.
    let (status, body) = api
        .put(
            id,
            json!({"grants": {"appResourceRoles": [{"appResourceRoleId": "r3"}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let got = &body["data"];
    assert_eq!(
        ids(&got["grants"]["appResourceRoles"], "appResourceRoleId"),
        ["r3"]
    );
    assert_eq!(got["grants"]["workflows"], json!([]));
    assert_eq!(got["matchingCriteria"], ap["matchingCriteria"]);
    assert_eq!(
        (&got["name"], &got["description"]),
        (&json!("n"), &json!("d"))
    );
    assert_eq!(api.fake.profile(id).as_ref(), Some(got));

    // name/description: null = unchanged, "" clears the description.
    let (_, body) = api
        .put(id, json!({"name": "n2", "description": null}))
        .await;
    assert_eq!(
        (&body["data"]["name"], &body["data"]["description"]),
        (&json!("n2"), &json!("d"))
    );
    let (_, body) = api.put(id, json!({"description": ""})).await;
    assert_eq!(body["data"]["description"], "");
    let (_, body) = api.put(id, json!({"matchingCriteria": {}})).await;
    assert_eq!(
        body["data"]["matchingCriteria"]["groups"]["includedGroupIds"],
        json!([])
    );
}

#[tokio::test]
async fn invalid_bodies_and_missing_profiles_are_rejected() {
    let api = Api::start().await;
    let id = api.create(json!({"teamId": "t", "name": "n"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let post = |body: Value| api.req(Method::POST, PROFILES_PATH).json(&body).send();

    for (body, needle) in [
        (json!({"name": "n"}), "teamId"),
        (json!({"teamId": "t"}), "name"),
        (json!({"teamId": "t", "name": "n", "id": "x"}), "id"),
        (
            json!({"teamId": "t", "name": "n", "grants": {"appResourceRoles": [
            {"appResourceRoleId": "r", "useTeamDefaultAccessProfile": false}]}}),
            "appResourceRoles",
        ),
    ] {
        let (status, err) = split(post(body).await.unwrap()).await;
        assert_eq!(
            (status, &err["code"]),
            (StatusCode::BAD_REQUEST, &json!("invalid_argument"))
        );
        assert!(err["message"].as_str().unwrap().contains(needle), "{err}");
    }
    // teamId is immutable and not part of the PUT body: unknown fields are rejected.
    let (status, err) = api.put(&id, json!({"teamId": "other"})).await;
    assert_eq!(
        (status, &err["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_argument"))
    );
    assert_eq!(api.fake.profile(&id).unwrap()["teamId"], "t");

    let missing = format!("{PROFILES_PATH}/ap-missing");
    let expected = json!({"code": "not_found", "message": "access profile ap-missing not found", "detail": ""});
    assert_eq!(
        api.get(&missing).await,
        (StatusCode::NOT_FOUND, expected.clone())
    );
    assert_eq!(
        api.put("ap-missing", json!({"name": "x"})).await,
        (StatusCode::NOT_FOUND, expected.clone())
    );
    let deleted = split(api.req(Method::DELETE, &missing).send().await.unwrap()).await;
    assert_eq!(deleted, (StatusCode::NOT_FOUND, expected));
    assert_eq!(api.fake.profiles().len(), 1);
}

#[tokio::test]
async fn delete_refuses_team_default_and_helpers_simulate_drift() {
    let api = Api::start().await;
    let default = api
        .fake
        .seed_profile(json!({"teamId": "t", "name": "Default", "isTeamDefault": true}));
    let path = format!("{PROFILES_PATH}/{default}");
    let (status, err) = split(api.req(Method::DELETE, &path).send().await.unwrap()).await;
    assert_eq!(
        (status, &err["code"]),
        (StatusCode::BAD_REQUEST, &json!("failed_precondition"))
    );
    assert!(api.fake.profile(&default).is_some());

    let id = api.create(json!({"teamId": "t", "name": "n"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(id, default);
    let path = format!("{PROFILES_PATH}/{id}");
    let deleted = split(api.req(Method::DELETE, &path).send().await.unwrap()).await;
    assert_eq!(deleted, (StatusCode::OK, json!({})));
    assert_eq!(api.get(&path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        (api.fake.writes(), api.fake.count("DELETE", PROFILES_PATH)),
        (3, 2)
    );

    // Drift made "in the SaaS UI" is visible to the client.
    api.fake
        .edit_profile(&default, |ap| ap["name"] = json!("Renamed"));
    let (_, body) = api.get(&format!("{PROFILES_PATH}/{default}")).await;
    assert_eq!(body["data"]["name"], "Renamed");
    api.fake.delete_profile_directly(&default);
    assert!(api.fake.profiles().is_empty());
    api.fake.clear_requests();
    assert!(api.fake.requests().is_empty());
}

#[tokio::test]
async fn status_faults_are_served_once_each() {
    let api = Api::start().await;
    let list = format!("{PROFILES_PATH}?teamId=t");
    let fault = Fault::Status {
        code: 429,
        retry_after: Some("1".into()),
        retry_after_ms: Some(250),
        body: None,
    };
    api.fake
        .push_fault(FaultMatch::new("GET", PROFILES_PATH), fault);

    let resp = api.req(Method::GET, &list).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["retry-after-ms"], "250");
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "resource_exhausted"
    );
    assert_eq!(api.get(&list).await.0, StatusCode::OK);

    // Faults only hit matching requests; non-matching ones pass untouched.
    api.fake.fail_next("POST", PROFILES_PATH, 503, 2);
    assert_eq!(api.get(&list).await.0, StatusCode::OK);
    let post = || {
        api.req(Method::POST, PROFILES_PATH)
            .json(&json!({"teamId": "t", "name": "n"}))
            .send()
    };
    for _ in 0..2 {
        let (status, err) = split(post().await.unwrap()).await;
        assert_eq!(
            (status, &err["code"]),
            (StatusCode::SERVICE_UNAVAILABLE, &json!("unavailable"))
        );
    }
    assert!(
        api.fake.profiles().is_empty(),
        "a faulted request applies nothing"
    );
    assert_eq!(post().await.unwrap().status(), StatusCode::OK);
    let statuses: Vec<u16> = api.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200, 200, 503, 503, 200]);
}

#[tokio::test]
async fn dropped_connections_are_transport_errors() {
    let api = Api::start().await;
    let body = json!({"teamId": "t", "name": "n"});
    api.fake.push_fault(
        FaultMatch::new("POST", PROFILES_PATH),
        Fault::ApplyThenDropConnection,
    );
    let err = api
        .req(Method::POST, PROFILES_PATH)
        .json(&body)
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "{err:?}");
    let profiles = api.fake.profiles();
    assert_eq!(profiles.len(), 1, "the create was applied");
    assert_eq!(
        api.fake.count("POST", PROFILES_PATH),
        1,
        "no transparent retry"
    );

    let id = profiles[0]["id"].as_str().unwrap();
    api.fake
        .push_fault(FaultMatch::default(), Fault::DropConnection);
    let put = api
        .req(Method::PUT, &format!("{PROFILES_PATH}/{id}"))
        .json(&json!({"name": "x"}));
    assert!(put.send().await.is_err());
    assert_eq!(
        api.fake.profile(id).unwrap()["name"],
        "n",
        "the update was not applied"
    );
    assert_eq!(api.fake.requests().last().unwrap().status, 0);

    // The server keeps serving on fresh connections.
    assert_eq!(
        api.get(&format!("{PROFILES_PATH}/{id}")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn latency_delays_requests() {
    let api = Api::start().await;
    let path = format!("{PROFILES_PATH}?teamId=t");
    api.fake.push_fault(
        FaultMatch::default(),
        Fault::Latency(Duration::from_millis(150)),
    );
    let started = Instant::now();
    assert_eq!(api.get(&path).await.0, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));

    api.fake.set_latency(Duration::from_millis(80));
    let started = Instant::now();
    assert_eq!(api.get(&path).await.0, StatusCode::OK);
    // No upper bound: it would be flaky on a loaded machine.
    assert!(started.elapsed() >= Duration::from_millis(80));
}
