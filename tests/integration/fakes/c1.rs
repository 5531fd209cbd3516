//! Tests of the fake ConductorOne server itself, driven through reqwest over real HTTP.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer, SigningKey};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use crate::support::fake_c1::{
    APPS_PATH, FakeC1, JWT_BEARER, SEARCH_PATH, SECRET_PREFIX, TOKEN_PATH, TOOL_APPROVED,
};
use crate::support::fake_http::{Fault, FaultMatch};

fn client() -> Client {
    // reqwest is built with `rustls-no-provider` and panics without one, even for http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new()
}

struct Api {
    fake: FakeC1,
    http: Client,
    token: String,
    app: String,
}

impl Api {
    async fn start() -> Self {
        let fake = FakeC1::start().await;
        let token = fake.issue_bearer_token();
        let app = fake.seed_app();
        Self {
            fake,
            http: client(),
            token,
            app,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.fake.base_url());
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(json!({}))).await
    }

    fn ents(&self) -> String {
        format!("{APPS_PATH}/{}/entitlements", self.app)
    }

    /// Creates an entitlement; returns its id.
    async fn create_ent(&self, body: Value) -> String {
        let (status, v) = self.post(&self.ents(), body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["appEntitlementView"]["appEntitlement"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn toolsets(&self, connector: &str) -> String {
        format!(
            "{APPS_PATH}/{}/connectors/{connector}/mcp_toolsets",
            self.app
        )
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The signing key inside a C1 client secret.
fn signing_key(secret: &str) -> SigningKey {
    let jwk = URL_SAFE_NO_PAD
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap())
        .unwrap();
    let jwk: Value = serde_json::from_slice(&jwk).unwrap();
    let d = URL_SAFE_NO_PAD.decode(jwk["d"].as_str().unwrap()).unwrap();
    SigningKey::from_bytes(&d.try_into().unwrap())
}

fn jws(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes());
    format!("{input}.{sig}")
}

fn nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Header and claims the way the SDKs build them.
fn good_assertion(client_id: &str, aud: &str) -> (Value, Value) {
    let t = now();
    let header = json!({"alg": "EdDSA", "nonce": nonce()});
    let claims = json!({"iss": client_id, "sub": client_id, "aud": aud,
                        "iat": t, "nbf": t - 120, "exp": t + 120});
    (header, claims)
}

async fn exchange(fake: &FakeC1, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let url = format!("{}{TOKEN_PATH}", fake.base_url());
    let resp = client().post(url).form(form).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

async fn assertion_grant(fake: &FakeC1, id: &str, assertion: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ];
    exchange(fake, &form).await
}

#[tokio::test]
async fn jwt_assertion_grant_is_verified() {
    let fake = FakeC1::start().await;
    let (id, secret) = fake.new_client();
    assert!(id.starts_with("happy-otter-") && id.ends_with("@127.0.0.1/spc"));
    let key = signing_key(&secret);

    let (header, claims) = good_assertion(&id, &fake.host());
    let valid = jws(&key, &header, &claims);
    let (status, body) = assertion_grant(&fake, &id, &valid).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["access_token"].as_str().unwrap().starts_with("c1tok-"));
    assert_eq!(fake.token_exchanges(), 1);

    let rejected = |(status, body): (StatusCode, Value), why: &str| {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
        assert_eq!(body["error"], "invalid_client", "{why}");
        let desc = body["error_description"].as_str().unwrap();
        assert!(desc.contains(why), "{desc} should mention {why}");
    };
    // Replaying the very same assertion.
    rejected(assertion_grant(&fake, &id, &valid).await, "replay");

    let other = SigningKey::from_bytes(&rand::random());
    let (header, claims) = good_assertion(&id, &fake.host());
    let forged = jws(&other, &header, &claims);
    rejected(assertion_grant(&fake, &id, &forged).await, "signature");

    let (header, claims) = good_assertion(&id, "acme.conductor.one");
    rejected(
        assertion_grant(&fake, &id, &jws(&key, &header, &claims)).await,
        "aud",
    );

    let (header, mut claims) = good_assertion(&id, &fake.host());
    claims["exp"] = json!(now() - 10);
    rejected(
        assertion_grant(&fake, &id, &jws(&key, &header, &claims)).await,
        "expired",
    );

    let (header, mut claims) = good_assertion(&id, &fake.host());
    claims["exp"] = json!(now() + 600);
    rejected(
        assertion_grant(&fake, &id, &jws(&key, &header, &claims)).await,
        "lifetime",
    );

    let (mut header, claims) = good_assertion(&id, &fake.host());
    header["alg"] = json!("HS256");
    rejected(
        assertion_grant(&fake, &id, &jws(&key, &header, &claims)).await,
        "alg",
    );
    header = json!({"alg": "EdDSA", "nonce": "abc"});
    rejected(
        assertion_grant(&fake, &id, &jws(&key, &header, &claims)).await,
        "nonce",
    );

    assert_eq!(fake.token_exchanges(), 1);
    // The log keeps form fields but never the assertion itself.
    let log = format!("{:?}", fake.requests());
    assert!(!log.contains(&valid) && !log.contains(&secret), "{log}");
}

#[tokio::test]
async fn client_secret_grant_and_expired_tokens() {
    let fake = FakeC1::start().await;
    let (id, secret) = fake.new_client();
    let grant = |secret: &'static str| {
        [
            ("grant_type", "client_credentials"),
            ("client_secret", secret),
        ]
    };
    let mut form = grant("x").to_vec();
    form.push(("client_id", &id));
    let (status, body) = exchange(&fake, &form).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_client"))
    );

    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", &id),
        ("client_secret", &secret),
    ];
    fake.set_token_ttl(Duration::from_secs(600));
    let (status, body) = exchange(&fake, &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 600);
    let token = body["access_token"].as_str().unwrap().to_string();

    // HTTP Basic is refused even with good credentials.
    let url = format!("{}{TOKEN_PATH}", fake.base_url());
    let basic = client().post(url).basic_auth(&id, Some(&secret));
    let resp = basic
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await;
    assert_eq!(resp.unwrap().status(), StatusCode::BAD_REQUEST);

    let app = fake.seed_app();
    let list = format!("{}{APPS_PATH}/{app}/entitlements", fake.base_url());
    let call = |t: &str| client().get(&list).bearer_auth(t).send();
    assert_eq!(call(&token).await.unwrap().status(), StatusCode::OK);
    fake.expire_tokens();
    let resp = call(&token).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code": 16, "message": "unauthenticated", "details": []})
    );
    assert_eq!(
        client().get(&list).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn entitlement_create_get_and_masked_update() {
    let api = Api::start().await;
    let id = api
        .create_ent(json!({
            "displayName": "Admins", "description": "d0", "alias": "admins",
            "provisionPolicy": {"manual": {"instructions": "ask", "userIds": []}},
            "durationGrant": "3600s", "annotations": {"managed_by": "accessplane"},
        }))
        .await;
    let path = format!("{}/{id}", api.ents());
    let (status, got) = api.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    let e = &got["appEntitlementView"]["appEntitlement"];
    assert_eq!(e["provisionerPolicy"]["manual"]["instructions"], "ask");
    assert_eq!(e["grantCount"], "0");
    assert_eq!(e["durationUnset"], Value::Null);
    assert_eq!(e["deprovisionerPolicy"], Value::Null);
    assert_eq!(e["annotations"], json!({"managed_by": "accessplane"}));
    assert_eq!(e["deletedAt"], Value::Null);

    // Only masked fields change, even though the body carries others.
    let body = json!({"entitlement": {"displayName": "Admins2", "description": "d1", "alias": "zzz"},
                      "updateMask": "displayName,description"});
    let (status, v) = api.post(&path, body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let e = api.fake.entitlement(&api.app, &id).unwrap();
    assert_eq!(
        (&e["displayName"], &e["description"], &e["alias"]),
        (&json!("Admins2"), &json!("d1"), &json!("admins"))
    );

    // Switching oneof arms through the mask; a whole-policy replace.
    let body = json!({"entitlement": {"durationUnset": {}, "provisionerPolicy": {"unconfigured": {}}},
                      "updateMask": "durationUnset,provisionerPolicy"});
    assert_eq!(api.post(&path, body).await.0, StatusCode::OK);
    let e = api.fake.entitlement(&api.app, &id).unwrap();
    assert_eq!(
        (&e["durationGrant"], &e["durationUnset"]),
        (&Value::Null, &json!({}))
    );
    assert_eq!(e["provisionerPolicy"], json!({"unconfigured": {}}));

    let bad = [
        (
            json!({"entitlement": {"displayName": "x"}}),
            "updateMask is required",
        ),
        (
            json!({"entitlement": {}, "updateMask": "display_name"}),
            "snake_case",
        ),
        (
            json!({"entitlement": {}, "updateMask": "grantCount"}),
            "unknown",
        ),
        (
            json!({"entitlement": {"durationGrant": "60s", "durationUnset": {}}, "updateMask": "durationGrant"}),
            "two oneof arms",
        ),
        (
            json!({"entitlement": {"provisionerPolicy": {"manual": {}, "webhook": {"webhookId": "w"}}},
                "updateMask": "provisionerPolicy"}),
            "two oneof arms",
        ),
    ];
    for (body, why) in bad {
        let (status, v) = api.post(&path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(v["code"], 3);
        assert!(v["message"].as_str().unwrap().contains(why), "{v}");
    }
    assert_eq!(
        api.fake.update_masks(),
        [
            "displayName,description",
            "durationUnset,provisionerPolicy",
            "display_name",
            "grantCount",
            "durationGrant",
            "provisionerPolicy"
        ]
    );
    assert_eq!(
        api.fake.entitlement(&api.app, &id).unwrap()["displayName"],
        "Admins2"
    );

    for (body, why) in [
        (
            json!({"displayName": "x", "deprovisionerPolicy": {"unconfigured": {}}}),
            "deprovisionerPolicy",
        ),
        (
            json!({"displayName": "x", "provisionerPolicy": {"unconfigured": {}}}),
            "provisionerPolicy",
        ),
        (
            json!({"displayName": "x", "durationGrant": "1s", "durationUnset": {}}),
            "two oneof arms",
        ),
        (
            json!({"displayName": "x", "provisionPolicy": {"manual": {}, "unconfigured": {}}}),
            "two oneof arms",
        ),
        (json!({"description": "no name"}), "displayName is required"),
    ] {
        let (status, v) = api.post(&api.ents(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}");
        assert!(v["message"].as_str().unwrap().contains(why), "{v}");
    }
    assert_eq!(
        api.get(&format!("{}/nope", api.ents())).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn search_and_soft_delete() {
    let api = Api::start().await;
    let a = api
        .create_ent(json!({"displayName": "Alpha", "alias": "a"}))
        .await;
    let b = api
        .create_ent(json!({"displayName": "Alphabet", "alias": "ab"}))
        .await;
    let search = |body: Value| api.post(SEARCH_PATH, body);
    let hits = |v: &Value| -> Vec<String> {
        let list = v["list"].as_array().unwrap();
        list.iter()
            .map(|v| v["appEntitlement"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, v) = search(json!({"appIds": [api.app], "alias": "a"})).await;
    assert_eq!(hits(&v), [a.as_str()]);
    let (_, v) = search(json!({"displayName": "Alphabet"})).await;
    assert_eq!(hits(&v), [b.as_str()]);
    assert_eq!(v["nextPageToken"], "");

    let path = format!("{}/{a}", api.ents());
    assert_eq!(api.delete(&path).await, (StatusCode::OK, json!({})));
    let (status, v) = api.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(v["appEntitlementView"]["appEntitlement"]["deletedAt"].is_string());
    let (_, v) = search(json!({"alias": "a"})).await;
    assert!(hits(&v).is_empty());
    let (_, v) = api.get(&api.ents()).await;
    assert_eq!(hits(&v), [b]);
    assert_eq!(
        api.fake.entitlements(&api.app).len(),
        2,
        "kept, marked deleted"
    );
    assert_eq!(api.delete(&path).await.0, StatusCode::NOT_FOUND);

    api.fake.set_deleted_retention(Some(Duration::ZERO));
    assert_eq!(api.get(&path).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn connector_config_is_write_only() {
    let api = Api::start().await;
    let base = format!("{APPS_PATH}/{}/connectors", api.app);
    let body = json!({"catalogId": "cat-1", "displayName": "GitHub", "description": "", "userIds": ["u1"]});
    let (status, v) = api.post(&base, body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let id = v["connectorView"]["connector"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(api.fake.builtin_toolsets(&api.app, &id).len(), 2);

    let config = json!({"@type": "type.googleapis.com/c1.api.app.v1.EnvConfig",
                        "configuration": {"token": {"stringValue": "s3cret"}}});
    let path = format!("{base}/{id}");
    let body =
        json!({"connector": {"config": config, "displayName": "ignored"}, "updateMask": "config"});
    let (status, v) = api.post(&path, body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["connectorView"]["connector"]["config"], Value::Null);
    assert_eq!(v["connectorView"]["connector"]["displayName"], "GitHub");
    assert_eq!(api.fake.connector_config(&id), Some(config));
    assert_eq!(api.fake.config_updates(), 1);
    let (_, listed) = api.get(&base).await;
    assert_eq!(listed["list"][0]["connector"]["config"], Value::Null);
    assert!(!listed.to_string().contains("s3cret"));

    api.fake
        .set_connector_sync(&id, "SYNC_STATUS_ERROR", "bad token");
    let (_, v) = api.get(&path).await;
    let status = &v["connectorView"]["connector"]["status"];
    assert_eq!(
        (&status["status"], &status["lastError"]),
        (&json!("SYNC_STATUS_ERROR"), &json!("bad token"))
    );
    let (status, _) = api.post(&path, json!({"connector": {}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "mask required");
}

#[tokio::test]
async fn toolsets_bindings_and_delete_cascade() {
    let api = Api::start().await;
    let conn = api.fake.seed_connector(&api.app, "MCP gateway");
    let read = api
        .fake
        .seed_tool(&api.app, &conn, "read_file", TOOL_APPROVED);
    let write = api
        .fake
        .seed_tool(&api.app, &conn, "write_file", TOOL_APPROVED);
    let pending = api
        .fake
        .seed_tool(&api.app, &conn, "rm_rf", "MCP_TOOL_STATE_PENDING_REVIEW");
    let base = api.toolsets(&conn);

    let (status, v) = api
        .post(
            &base,
            json!({"displayName": "Dev tools", "description": "d"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let ts = v["profile"]["id"].as_str().unwrap().to_string();
    let ent = v["profile"]["appEntitlementId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(v["profile"]["connectorDisplayName"], "MCP gateway");
    let (_, listed) = api.get(&api.ents()).await;
    assert!(
        listed.to_string().contains(&ent),
        "backing entitlement is listed"
    );

    // Built-ins refuse changes.
    for builtin in api.fake.builtin_toolsets(&api.app, &conn) {
        let path = format!("{base}/{builtin}");
        let body = json!({"profile": {"displayName": "x"}, "updateMask": "displayName"});
        assert_eq!(api.post(&path, body).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(api.delete(&path).await.0, StatusCode::BAD_REQUEST);
    }
    let path = format!("{base}/{ts}");
    let body = json!({"profile": {"displayName": "Dev", "appEntitlementId": "x"}, "updateMask": "appEntitlementId"});
    assert_eq!(api.post(&path, body).await.0, StatusCode::BAD_REQUEST);
    let body = json!({"profile": {"displayName": "Dev"}, "updateMask": "displayName"});
    let (status, v) = api.post(&path, body).await;
    assert_eq!(
        (status, &v["profile"]["displayName"]),
        (StatusCode::OK, &json!("Dev"))
    );

    let bindings = format!("{path}/tool_bindings");
    let (status, v) = api.post(&bindings, json!({"mcpToolIds": [pending]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("rm_rf"), "{v}");
    assert_eq!(
        api.post(&bindings, json!({"mcpToolIds": ["nope"]})).await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, v) = api
        .post(&bindings, json!({"mcpToolIds": [read, write]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["bindings"].as_array().unwrap().len(), 2);
    assert_eq!(
        api.post(&bindings, json!({"mcpToolIds": [read]})).await.0,
        StatusCode::CONFLICT
    );
    let (status, _) = api
        .post(
            &format!("{bindings}/delete"),
            json!({"mcpToolIds": [write]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.fake.bindings(&ts), [read.as_str()]);
    let (_, v) = api.get(&bindings).await;
    assert_eq!(v["bindings"][0]["mcpToolId"], json!(read));
    assert_eq!(api.get(&path).await.1["profile"]["toolCount"], 1);
    let (_, tools) = api
        .get(&format!(
            "{APPS_PATH}/{}/connectors/{conn}/mcp_tools",
            api.app
        ))
        .await;
    assert_eq!(tools["tools"][2]["toolName"], "rm_rf");

    // Deleting the backing entitlement directly is refused; deleting the toolset cascades.
    assert_eq!(
        api.delete(&format!("{}/{ent}", api.ents())).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(api.delete(&path).await, (StatusCode::OK, json!({})));
    assert!(api.fake.bindings(&ts).is_empty());
    assert!(api.fake.entitlement(&api.app, &ent).unwrap()["deletedAt"].is_string());
    assert!(api.fake.toolset(&ts).unwrap()["deletedAt"].is_string());
    let (_, v) = api.get(&base).await;
    assert_eq!(
        v["profiles"].as_array().unwrap().len(),
        2,
        "only the built-ins remain"
    );
}

#[tokio::test]
async fn paging_follows_next_page_token() {
    let api = Api::start().await;
    for i in 0..25 {
        api.fake
            .seed_entitlement(&api.app, json!({"displayName": format!("e{i}")}));
    }
    let (mut seen, mut sizes, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let (status, v) = api
            .get(&format!("{}?page_size=10&page_token={token}", api.ents()))
            .await;
        assert_eq!(status, StatusCode::OK);
        let list = v["list"].as_array().unwrap();
        sizes.push(list.len());
        seen.extend(
            list.iter()
                .map(|v| v["appEntitlement"]["displayName"].clone()),
        );
        token = v["nextPageToken"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(seen.len(), 25);
    // page_size below the minimum clamps to 10; set_page_size caps every page.
    let (_, v) = api.get(&format!("{}?page_size=3", api.ents())).await;
    assert_eq!(v["list"].as_array().unwrap().len(), 10);
    api.fake.set_page_size(4);
    let (_, v) = api.get(&api.ents()).await;
    assert_eq!(v["list"].as_array().unwrap().len(), 4);
    let (status, _) = api.get(&format!("{}?page_token=garbage", api.ents())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn apply_then_drop_connection_applies_the_create() {
    let api = Api::start().await;
    api.fake.push_fault(
        FaultMatch::new("POST", APPS_PATH),
        Fault::ApplyThenDropConnection,
    );
    let url = format!("{}{}", api.fake.base_url(), api.ents());
    let send = api.http.post(url).bearer_auth(&api.token);
    let err = send
        .json(&json!({"displayName": "x"}))
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "{err:?}");
    assert_eq!(
        api.fake.entitlements(&api.app).len(),
        1,
        "the create was applied"
    );
    assert_eq!(api.fake.writes(), 1);
    assert_eq!(api.fake.requests()[0].status, 0);

    api.fake.fail_next("GET", APPS_PATH, 503, 1);
    let (status, v) = api.get(&api.ents()).await;
    assert_eq!(
        (status, &v["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!(14))
    );
    assert_eq!(api.get(&api.ents()).await.0, StatusCode::OK);
}
