//! Stateful fake of the ConductorOne API (token exchange, app entitlements, connectors,
//! MCP toolsets, tool bindings and tools), served over real HTTP on 127.0.0.1 with the
//! request log and fault injection of `fake_http`.
//!
//! Choices where the contract (/work/shared/upstream/conductorone.md) is silent:
//! - Unknown fields in request bodies are rejected with 400 (protojson default).
//! - Update masks name top-level fields only (`provisionerPolicy.manual` is rejected).
//! - Bindings are strict: adding a bound tool is 409, removing an unbound one is 404
//!   (`set_idempotent_bindings(true)` makes both no-ops).
//! - DELETE of an already soft-deleted object is 404; a soft-deleted object is 404 for
//!   updates. Deleting a toolset's backing entitlement directly is refused (400).
//! - Built-in toolsets have their own backing entitlements (`systemBuiltin: true`), so
//!   a connector adds two entitlements to its app. A toolset rename does not rename
//!   its entitlement.
//! - Connector create requires `catalogId`; `config` must be an Any (`@type` set).
//! - `aud` must be a single string; nonces are remembered only for accepted assertions.
//!
//! Every request the operator sends (its `User-Agent` starts with `accessplane`) and
//! every `200` the fake answers is checked against ConductorOne's own OpenAPI document
//! ([`super::c1_openapi`]); what breaks it is collected and fails the test when the fake
//! is dropped (see [`FakeC1::nonconformities`]).
#![allow(dead_code)]

use std::{
    collections::{HashMap, HashSet},
    sync::MutexGuard,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    http::{HeaderMap, header},
    response::Response,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use rand::{Rng, distr::Alphanumeric};
use serde_json::{Map, Value, json};

use super::c1_openapi;
use super::fake_http::{Backend, FakeServer, Req, auth_param, reply};

pub const TOKEN_PATH: &str = "/auth/v1/token";
pub const API_PATH: &str = "/api/v1";
pub const APPS_PATH: &str = "/api/v1/apps";
pub const SEARCH_PATH: &str = "/api/v1/search/entitlements";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const SECRET_PREFIX: &str = "secret-token:conductorone.com:v1:";
pub const TOOL_APPROVED: &str = "MCP_TOOL_STATE_APPROVED";
pub const BUILTIN_TOOLSETS: [&str; 2] = ["All approved", "Read-only"];
/// Allowed clock skew on `nbf`.
pub const SKEW_SECS: i64 = 5;

/// Fresh credentials for a service principal of tenant `host`: (client id, client
/// secret in C1's `secret-token:` format, Ed25519 public key).
pub fn test_credentials(host: &str) -> (String, String, [u8; 32]) {
    // Seeded from rand 0.9 directly: no rand_core bridge needed with ed25519-dalek.
    let seed: [u8; 32] = rand::random();
    let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(public), "d": URL_SAFE_NO_PAD.encode(seed)});
    let id = format!("happy-otter-{}@{host}/spc", rand::random_range(1..100_000));
    let secret = format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(jwk.to_string()));
    (id, secret, public)
}

/// Handle to a running fake; the server task is aborted on drop.
pub struct FakeC1 {
    http: FakeServer<Inner>,
}

/// Fails the test that used the fake when the operator's requests or the fake's answers
/// broke the vendor's OpenAPI document (unless the test is failing already).
impl Drop for FakeC1 {
    fn drop(&mut self) {
        let found = self.nonconformities();
        if !found.is_empty() && !std::thread::panicking() {
            panic!(
                "{} request(s)/response(s) break ConductorOne's OpenAPI document:\n{}",
                found.len(),
                found.join("\n")
            );
        }
    }
}

/// The request log and fault controls (`requests`, `count`, `fail_next`, `set_chaos`, …)
/// are the shared [`FakeServer`]'s.
impl std::ops::Deref for FakeC1 {
    type Target = FakeServer<Inner>;

    fn deref(&self) -> &Self::Target {
        &self.http
    }
}

impl FakeC1 {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> Self {
        let inner = Inner {
            audience: "127.0.0.1".into(),
            token_ttl: Duration::from_secs(3600),
            page_cap: usize::MAX,
            ..Inner::default()
        };
        Self {
            http: FakeServer::start(inner).await,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.http.state()
    }

    /// What broke ConductorOne's OpenAPI document so far: requests the operator sent and
    /// `200` answers the fake gave. Taking them clears the list (a test that provokes
    /// them on purpose takes them, and the drop check then passes).
    pub fn take_nonconformities(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().nonconformities)
    }

    /// What broke ConductorOne's OpenAPI document so far (see `take_nonconformities`).
    pub fn nonconformities(&self) -> Vec<String> {
        self.lock().nonconformities.clone()
    }

    /// e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.http.base_url()
    }

    /// The tenant host, without port: the default expected `aud`.
    pub fn host(&self) -> String {
        "127.0.0.1".into()
    }

    // --- authentication --------------------------------------------------------------

    pub fn add_client(&self, client_id: &str, public_key: [u8; 32], client_secret: &str) {
        let client = Client {
            public_key,
            secret: client_secret.into(),
        };
        self.lock().clients.insert(client_id.into(), client);
    }

    /// `test_credentials(host())`, registered: returns (client id, client secret).
    pub fn new_client(&self) -> (String, String) {
        let (id, secret, public) = test_credentials(&self.host());
        self.add_client(&id, public, &secret);
        (id, secret)
    }

    /// The `aud` the assertions must carry (default "127.0.0.1").
    pub fn set_audience(&self, host: &str) {
        self.lock().audience = host.into();
    }

    /// TTL for tokens issued from now on (default 1 h); `expires_in` is its whole seconds.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.lock().token_ttl = ttl;
    }

    /// A token that never expires (until revoked or expired), as if configured by hand.
    pub fn issue_bearer_token(&self) -> String {
        self.lock().mint(None)
    }

    /// Forgets every issued token; API calls with one get 401.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Makes every issued token (pre-issued ones too) expire now.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        self.lock().tokens.values_mut().for_each(|e| *e = Some(now));
    }

    /// Number of successful token exchanges (either grant).
    pub fn token_exchanges(&self) -> usize {
        self.lock().token_exchanges
    }

    // --- behaviour knobs -------------------------------------------------------------

    /// Pages hold at most `n` items whatever `page_size` the client asks for (servers
    /// may return short pages), so tests can exercise paging with few objects.
    pub fn set_page_size(&self, n: usize) {
        self.lock().page_cap = n.max(1);
    }

    /// How long soft-deleted objects stay readable by GET; `None` (default) = forever.
    pub fn set_deleted_retention(&self, retention: Option<Duration>) {
        self.lock().retention = retention;
    }

    /// Binding add/remove become no-ops for already bound/unbound tools.
    pub fn set_idempotent_bindings(&self, on: bool) {
        self.lock().idempotent_bindings = on;
    }

    // --- seeding and inspection ------------------------------------------------------

    pub fn seed_app(&self) -> String {
        let mut s = self.lock();
        let id = new_id();
        s.apps.push(id.clone());
        id
    }

    /// A connector with its two built-in toolsets.
    pub fn seed_connector(&self, app_id: &str, display_name: &str) -> String {
        let mut s = self.lock();
        s.require_app(app_id);
        s.insert_connector(app_id, "catalog-seeded", display_name, "", json!([]))
    }

    /// Inserts an entitlement without validation: `e`'s fields over the full default
    /// shape; `id` and timestamps are filled in when missing. Panics on a taken id.
    pub fn seed_entitlement(&self, app_id: &str, e: Value) -> String {
        let mut s = self.lock();
        s.require_app(app_id);
        let Value::Object(fields) = e else {
            panic!("seed_entitlement needs a JSON object")
        };
        let id = fields.get("id").and_then(Value::as_str).map(str::to_string);
        if let Some(id) = &id {
            assert!(
                find(&s.entitlements, id).is_none(),
                "entitlement {id} exists"
            );
        }
        s.insert_entitlement(app_id, fields, id)
    }

    /// The stored entitlement `E` (soft-deleted ones too, with `deletedAt`).
    pub fn entitlement(&self, app_id: &str, id: &str) -> Option<Value> {
        let s = self.lock();
        let e = find(&s.entitlements, id).map(|i| &s.entitlements[i]);
        e.filter(|e| e["appId"] == app_id).cloned()
    }

    /// All entitlements of the app in creation order, soft-deleted ones included.
    pub fn entitlements(&self, app_id: &str) -> Vec<Value> {
        let s = self.lock();
        let all = s.entitlements.iter().filter(|e| e["appId"] == app_id);
        all.cloned().collect()
    }

    /// Mutates a stored entitlement in place (drift made in the C1 UI). Panics if absent.
    pub fn edit_entitlement(&self, app_id: &str, id: &str, f: impl FnOnce(&mut Value)) {
        let mut s = self.lock();
        let i = find(&s.entitlements, id).filter(|&i| s.entitlements[i]["appId"] == app_id);
        f(&mut s.entitlements[i.unwrap_or_else(|| panic!("no entitlement {id}"))]);
    }

    /// The stored connector `C` (without `config`, as the API shows it).
    pub fn connector(&self, id: &str) -> Option<Value> {
        let s = self.lock();
        find(&s.connectors, id).map(|i| s.connectors[i].clone())
    }

    /// All connectors of the app, soft-deleted ones included.
    pub fn connectors(&self, app_id: &str) -> Vec<Value> {
        let s = self.lock();
        let all = s.connectors.iter().filter(|c| c["appId"] == app_id);
        all.cloned().collect()
    }

    /// Mutates a stored connector in place (drift made in the C1 UI). Panics if absent.
    pub fn edit_connector(&self, id: &str, f: impl FnOnce(&mut Value)) {
        let mut s = self.lock();
        let i = find(&s.connectors, id).unwrap_or_else(|| panic!("no connector {id}"));
        f(&mut s.connectors[i]);
    }

    /// The last `config` written to the connector (write-only through the API).
    pub fn connector_config(&self, id: &str) -> Option<Value> {
        self.lock().configs.get(id).cloned()
    }

    /// Number of accepted connector updates whose mask included `config`.
    pub fn config_updates(&self) -> usize {
        self.lock().config_updates
    }

    /// Sets the connector's sync status (`SYNC_STATUS_*`). Panics if absent.
    pub fn set_connector_sync(&self, id: &str, status: &str, last_error: &str) {
        let mut s = self.lock();
        let now = s.timestamp();
        let i = find(&s.connectors, id).unwrap_or_else(|| panic!("no connector {id}"));
        let st = &mut s.connectors[i]["status"];
        st["status"] = status.into();
        st["lastError"] = last_error.into();
        st["updatedAt"] = now.into();
    }

    /// The toolset `P` as the API would show it (soft-deleted ones too).
    pub fn toolset(&self, id: &str) -> Option<Value> {
        let s = self.lock();
        find(&s.toolsets, id).map(|i| s.render_toolset(&s.toolsets[i]))
    }

    /// All toolsets of the connector (built-ins and soft-deleted ones included).
    pub fn toolsets(&self, app_id: &str, connector_id: &str) -> Vec<Value> {
        let s = self.lock();
        let all = s
            .toolsets
            .iter()
            .filter(|p| in_connector(p, app_id, connector_id));
        all.map(|p| s.render_toolset(p)).collect()
    }

    /// Ids of the connector's "All approved" and "Read-only" toolsets.
    pub fn builtin_toolsets(&self, app_id: &str, connector_id: &str) -> Vec<String> {
        let s = self.lock();
        let all = s
            .toolsets
            .iter()
            .filter(|p| in_connector(p, app_id, connector_id));
        all.map(|p| str_of(&p["id"]))
            .filter(|id| s.builtins.contains(id))
            .collect()
    }

    /// Tool ids currently bound to the toolset, in binding order.
    pub fn bindings(&self, toolset_id: &str) -> Vec<String> {
        let s = self.lock();
        let live = s.live_bindings(toolset_id);
        live.map(|b| str_of(&b["mcpToolId"])).collect()
    }

    /// Removes a tool binding behind the client's back (drift made in the C1 UI).
    /// Panics if the tool is not bound to the toolset.
    pub fn unbind_tool_directly(&self, toolset_id: &str, tool_id: &str) {
        let mut s = self.lock();
        let now = s.timestamp();
        let binding = s.bindings.iter_mut().find(|b| {
            b["accessProfileId"] == toolset_id
                && b["mcpToolId"] == tool_id
                && b["deletedAt"].is_null()
        });
        let binding =
            binding.unwrap_or_else(|| panic!("tool {tool_id} is not bound to {toolset_id}"));
        merge(binding, json!({"deletedAt": now, "updatedAt": now}));
    }

    /// A toolset made in ConductorOne's UI (with its backing entitlement), with `tools`
    /// bound.
    pub fn seed_toolset(
        &self,
        app_id: &str,
        connector_id: &str,
        name: &str,
        tools: &[&str],
    ) -> String {
        let mut s = self.lock();
        let id = s.insert_toolset(app_id, connector_id, name, "", false);
        let now = s.timestamp();
        for tool in tools {
            s.bindings.push(
                json!({"accessProfileId": id, "appId": app_id, "connectorId": connector_id,
                "mcpToolId": tool, "createdAt": now, "updatedAt": now, "deletedAt": null}),
            );
        }
        id
    }

    /// Adds a tool to the connector's catalogue (`state` e.g. `MCP_TOOL_STATE_APPROVED`).
    pub fn seed_tool(
        &self,
        app_id: &str,
        connector_id: &str,
        tool_name: &str,
        state: &str,
    ) -> String {
        let mut s = self.lock();
        let (id, now) = (new_id(), s.timestamp());
        s.tools.push(
            json!({"id": id, "appId": app_id, "connectorId": connector_id,
            "toolName": tool_name, "displayName": tool_name, "description": "",
            "state": state, "classification": "TOOL_CLASSIFICATION_READ",
            "visibility": "TOOL_VISIBILITY_AVAILABLE", "createdAt": now, "updatedAt": now}),
        );
        id
    }

    /// Changes a tool's state (existing bindings are kept). Panics if absent.
    pub fn set_tool_state(&self, tool_id: &str, state: &str) {
        let mut s = self.lock();
        let i = find(&s.tools, tool_id).unwrap_or_else(|| panic!("no tool {tool_id}"));
        s.tools[i]["state"] = state.into();
    }

    /// Every `updateMask` string received (valid or not), in arrival order.
    pub fn update_masks(&self) -> Vec<String> {
        self.lock().update_masks.clone()
    }

    // --- request log and faults ------------------------------------------------------

    /// Recorded POST/DELETE requests under /api/v1/apps (search is a read), whatever
    /// their outcome.
    pub fn writes(&self) -> usize {
        self.count("POST", APPS_PATH) + self.count("DELETE", APPS_PATH)
    }
}

// ---------------------------------------------------------------------------------
// State and routing.

struct Client {
    public_key: [u8; 32],
    secret: String,
}

#[derive(Default)]
pub struct Inner {
    audience: String,
    clients: HashMap<String, Client>,
    /// Nonces of accepted assertions (replay protection).
    nonces: HashSet<String>,
    token_ttl: Duration,
    /// token -> expiry (`None` = never expires)
    tokens: HashMap<String, Option<Instant>>,
    token_exchanges: usize,
    page_cap: usize,
    retention: Option<Duration>,
    idempotent_bindings: bool,
    apps: Vec<String>,
    /// Objects in creation order (= list order), soft-deleted ones included.
    entitlements: Vec<Value>,
    connectors: Vec<Value>,
    toolsets: Vec<Value>,
    tools: Vec<Value>,
    bindings: Vec<Value>,
    builtins: HashSet<String>,
    configs: HashMap<String, Value>,
    config_updates: usize,
    update_masks: Vec<String>,
    /// id -> when it was soft-deleted, for the retention window.
    deleted: HashMap<String, Instant>,
    ticks: u64,
    /// Requests and answers that break the vendor's OpenAPI document (`c1_openapi`).
    nonconformities: Vec<String>,
}

/// A handler's 200 JSON body, or an error response body.
type Reply = Result<Value, ApiError>;

struct ApiError {
    status: u16,
    body: Value,
}

impl Backend for Inner {
    const TOKEN_PATH: &'static str = TOKEN_PATH;

    /// Checks what the operator sends (not what the fake's own tests send on purpose).
    fn receive(&mut self, req: &Req) {
        let user_agent = req.headers.get(header::USER_AGENT);
        let user_agent = user_agent.and_then(|v| v.to_str().ok()).unwrap_or_default();
        let Some(spec) = c1_openapi::spec().filter(|_| user_agent.starts_with("accessplane"))
        else {
            return;
        };
        let body = match req.body.is_empty() || req.path == TOKEN_PATH {
            true => None,
            false => Some(serde_json::from_slice(&req.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&req.body).into_owned())
            })),
        };
        let found = spec.check_request(&req.method, &req.path, req.query.as_deref(), body.as_ref());
        self.nonconformities.extend(found);
    }

    fn serve(&mut self, req: &Req) -> Response {
        match self.route(req) {
            Ok(body) => {
                if let Some(spec) = c1_openapi::spec() {
                    let found = spec.check_response(&req.method, &req.path, &body);
                    self.nonconformities.extend(found);
                }
                reply(200, body)
            }
            Err(e) => reply(e.status, e.body),
        }
    }

    fn fault_body(status: u16) -> Value {
        error(status, "injected fault").body
    }
}

impl Inner {
    fn route(&mut self, req: &Req) -> Reply {
        if req.path == TOKEN_PATH {
            return match req.method.as_str() {
                "POST" => self.issue_token(req),
                _ => Err(error(405, "method not allowed")),
            };
        }
        let no_route = || error(404, format!("no route {} {}", req.method, req.path));
        let rest = req.path.strip_prefix("/api/v1/").ok_or_else(no_route)?;
        self.authorize(&req.headers)?;
        let seg: Vec<&str> = rest.split('/').collect();
        let m = req.method.as_str();
        match (m, seg.as_slice()) {
            ("POST", ["search", "entitlements"]) => self.search(req),
            ("GET", ["apps"]) => self.list_apps(req),
            (_, ["apps", app, rest @ ..]) => {
                if !self.apps.iter().any(|a| a == app) {
                    return Err(error(404, format!("app {app} not found")));
                }
                self.app_route(m, app, rest, req)
                    .unwrap_or_else(|| Err(no_route()))
            }
            _ => Err(no_route()),
        }
    }

    fn app_route(&mut self, m: &str, app: &str, seg: &[&str], req: &Req) -> Option<Reply> {
        Some(match (m, seg) {
            ("GET", ["entitlements"]) => self.list_entitlements(app, req),
            ("POST", ["entitlements"]) => self.create_entitlement(app, req),
            ("GET", ["entitlements", id]) => self.entitlement_index(app, id).map(
                |i| json!({"appEntitlementView": view(&self.entitlements[i]), "expanded": []}),
            ),
            ("POST", ["entitlements", id]) => self.update_entitlement(app, id, req),
            ("DELETE", ["entitlements", id]) => self.delete_entitlement(app, id),
            ("GET", ["connectors"]) => self.list_connectors(app, req),
            ("POST", ["connectors"]) => self.create_connector(app, req),
            ("GET", ["connectors", id]) => self
                .connector_index(app, id, true)
                .map(|i| json!({"connectorView": connector_view(&self.connectors[i])})),
            ("POST", ["connectors", id]) => self.update_connector(app, id, req),
            ("DELETE", ["connectors", id]) => self.delete_connector(app, id),
            (_, ["connectors", c, rest @ ..]) => {
                if let Err(e) = self.connector_index(app, c, false) {
                    return Some(Err(e));
                }
                return self.connector_route(m, app, c, rest, req);
            }
            _ => return None,
        })
    }

    fn connector_route(
        &mut self,
        m: &str,
        app: &str,
        c: &str,
        seg: &[&str],
        req: &Req,
    ) -> Option<Reply> {
        Some(match (m, seg) {
            ("GET", ["mcp_tools"]) => self.list_tools(app, c, req),
            ("GET", ["mcp_toolsets"]) => self.list_toolsets(app, c, req),
            ("POST", ["mcp_toolsets"]) => self.create_toolset(app, c, req),
            ("GET", ["mcp_toolsets", id]) => self
                .toolset_index(app, c, id, true)
                .map(|i| json!({"profile": self.render_toolset(&self.toolsets[i])})),
            ("POST", ["mcp_toolsets", id]) => self.update_toolset(app, c, id, req),
            ("DELETE", ["mcp_toolsets", id]) => self.delete_toolset(app, c, id),
            ("GET", ["mcp_toolsets", id, "tool_bindings"]) => self.list_bindings(app, c, id, req),
            ("POST", ["mcp_toolsets", id, "tool_bindings"]) => self.add_bindings(app, c, id, req),
            ("POST", ["mcp_toolsets", id, "tool_bindings", "delete"]) => {
                self.remove_bindings(app, c, id, req)
            }
            _ => return None,
        })
    }

    // --- authentication --------------------------------------------------------------

    fn mint(&mut self, ttl: Option<Duration>) -> String {
        let token = format!("c1tok-{}", random_chars(24));
        self.tokens
            .insert(token.clone(), ttl.map(|t| Instant::now() + t));
        token
    }

    fn issue_token(&mut self, req: &Req) -> Reply {
        if auth_param(&req.headers, "Basic").is_some() {
            return Err(oauth(
                400,
                "invalid_request",
                "send client credentials in the form body, not HTTP Basic",
            ));
        }
        let content_type = req.headers.get(header::CONTENT_TYPE);
        let content_type = content_type
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return Err(oauth(
                400,
                "invalid_request",
                "body must be application/x-www-form-urlencoded",
            ));
        }
        let form = req.form();
        let field = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
        if field("grant_type") != Some("client_credentials") {
            return Err(oauth(
                400,
                "unsupported_grant_type",
                "grant_type must be client_credentials",
            ));
        }
        let bad = |m: &str| oauth(401, "invalid_client", m);
        let id = field("client_id").ok_or_else(|| bad("client_id is required"))?;
        let client = self
            .clients
            .get(id)
            .ok_or_else(|| bad("unknown client_id"))?;
        match (field("client_assertion"), field("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(oauth(
                    400,
                    "invalid_request",
                    "send client_assertion or client_secret, not both",
                ));
            }
            (Some(jws), None) => {
                if field("client_assertion_type") != Some(JWT_BEARER) {
                    return Err(bad(&format!("client_assertion_type must be {JWT_BEARER}")));
                }
                let nonce = verify_assertion(jws, id, &client.public_key, &self.audience)
                    .map_err(|m| bad(&format!("client_assertion: {m}")))?;
                if !self.nonces.insert(nonce) {
                    return Err(bad("client_assertion: nonce already used (replay)"));
                }
            }
            (None, Some(secret)) if secret == client.secret => {}
            (None, Some(_)) => return Err(bad("client_secret does not match")),
            (None, None) => return Err(bad("no client_assertion or client_secret")),
        }
        self.token_exchanges += 1;
        let token = self.mint(Some(self.token_ttl));
        Ok(json!({"access_token": token, "token_type": "Bearer",
                  "expires_in": self.token_ttl.as_secs()}))
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let expiry = auth_param(headers, "Bearer").and_then(|t| self.tokens.get(t));
        match expiry {
            Some(None) => Ok(()),
            Some(Some(at)) if Instant::now() < *at => Ok(()),
            _ => Err(error(401, "unauthenticated")),
        }
    }

    // --- generic object helpers ------------------------------------------------------

    /// Deterministic, strictly increasing RFC 3339 timestamps (one second apart).
    fn timestamp(&mut self) -> String {
        self.ticks += 1;
        let n = self.ticks;
        format!(
            "2025-01-01T{:02}:{:02}:{:02}Z",
            n / 3600 % 24,
            n / 60 % 60,
            n % 60
        )
    }

    fn require_app(&self, app_id: &str) {
        assert!(
            self.apps.iter().any(|a| a == app_id),
            "no app {app_id}: seed_app first"
        );
    }

    /// Soft-deleted longer ago than the retention window: no longer readable.
    fn purged(&self, v: &Value) -> bool {
        let at = self.deleted.get(v["id"].as_str().unwrap_or_default());
        let expired = |r: Duration| at.is_none_or(|at| at.elapsed() >= r);
        !v["deletedAt"].is_null() && self.retention.is_some_and(expired)
    }

    /// Index of a readable object; `live` also excludes soft-deleted ones.
    fn lookup(
        &self,
        list: &[Value],
        id: &str,
        live: bool,
        what: &str,
        owner: impl Fn(&Value) -> bool,
    ) -> Result<usize, ApiError> {
        find(list, id)
            .filter(|&i| owner(&list[i]) && !self.purged(&list[i]))
            .filter(|&i| !live || list[i]["deletedAt"].is_null())
            .ok_or_else(|| error(404, format!("{what} {id} not found")))
    }

    fn soft_delete(&mut self, id: &str, now: &str) -> Value {
        self.deleted.insert(id.into(), Instant::now());
        json!({"deletedAt": now, "updatedAt": now})
    }

    /// Slices `items` by the page size and opaque token of a list or search request.
    /// Callers pass references and render only the returned page, so a list costs
    /// O(n) per page, not O(n) renders per page.
    fn page<T>(
        &self,
        items: Vec<T>,
        size: Option<i64>,
        token: Option<&str>,
        scope: &str,
    ) -> Result<(Vec<T>, String), ApiError> {
        let size = match size {
            None | Some(0) => 25,
            Some(n) => n.clamp(10, 100) as usize,
        }
        .min(self.page_cap);
        let offset = match token.filter(|t| !t.is_empty()) {
            None => 0,
            Some(t) => decode_page_token(t, scope).ok_or_else(|| invalid("invalid page_token"))?,
        };
        let next = if offset + size < items.len() {
            URL_SAFE_NO_PAD.encode(format!("{scope}\n{}", offset + size))
        } else {
            String::new()
        };
        Ok((items.into_iter().skip(offset).take(size).collect(), next))
    }

    /// A list page of `items` (each rendered by `render`) for a GET request with
    /// `page_size`/`page_token`.
    fn list_page<'a>(
        &self,
        req: &Req,
        items: Vec<&'a Value>,
        key: &str,
        render: impl Fn(&'a Value) -> Value,
    ) -> Reply {
        let q = req.query_map();
        let size = q.get("page_size").map(|s| s.parse::<i64>());
        let size = size
            .transpose()
            .map_err(|_| invalid("page_size must be an integer"))?;
        let (page, next) = self.page(
            items,
            size,
            q.get("page_token").map(String::as_str),
            &req.path,
        )?;
        let page: Vec<Value> = page.into_iter().map(render).collect();
        Ok(json!({key: page, "nextPageToken": next}))
    }

    /// Validates and records `updateMask`: one string of lowerCamelCase paths.
    fn update_mask(
        &mut self,
        body: &Map<String, Value>,
        allowed: &[&str],
    ) -> Result<Vec<String>, ApiError> {
        let raw = match body.get("updateMask") {
            None | Some(Value::Null) => return Err(invalid("updateMask is required")),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(invalid(
                    "updateMask must be a string of comma-separated paths",
                ));
            }
        };
        self.update_masks.push(raw.clone());
        if raw.trim().is_empty() {
            return Err(invalid("updateMask is required"));
        }
        let paths: Vec<String> = raw.split(',').map(|p| p.trim().to_string()).collect();
        for p in &paths {
            if p.contains('_') {
                return Err(invalid(format!(
                    "updateMask path {p:?} is snake_case; use lowerCamelCase"
                )));
            }
            if !allowed.contains(&p.as_str()) {
                return Err(invalid(format!(
                    "updateMask path {p:?} is unknown or not updatable"
                )));
            }
        }
        Ok(paths)
    }

    // --- app entitlements ------------------------------------------------------------

    fn entitlement_index(&self, app: &str, id: &str) -> Result<usize, ApiError> {
        self.lookup(&self.entitlements, id, false, "app entitlement", |e| {
            e["appId"] == app
        })
    }

    fn live_entitlement(&self, app: &str, id: &str) -> Result<usize, ApiError> {
        self.lookup(&self.entitlements, id, true, "app entitlement", |e| {
            e["appId"] == app
        })
    }

    /// Stores `fields` over the default shape; returns the (given or new) id.
    fn insert_entitlement(
        &mut self,
        app: &str,
        fields: Map<String, Value>,
        id: Option<String>,
    ) -> String {
        let id = id.unwrap_or_else(new_id);
        let now = self.timestamp();
        let mut e = blank_entitlement();
        e.extend(fields);
        e.insert("id".into(), id.clone().into());
        e.insert("appId".into(), app.into());
        for k in ["createdAt", "updatedAt"] {
            if e[k].is_null() {
                e.insert(k.into(), now.clone().into());
            }
        }
        self.entitlements.push(Value::Object(e));
        id
    }

    fn list_entitlements(&self, app: &str, req: &Req) -> Reply {
        let live = self
            .entitlements
            .iter()
            .filter(|e| e["appId"] == app && e["deletedAt"].is_null());
        let mut out = self.list_page(req, live.collect(), "list", view)?;
        out["expanded"] = json!([]);
        Ok(out)
    }

    fn create_entitlement(&mut self, app: &str, req: &Req) -> Reply {
        let body = json_body(req)?;
        for (k, v) in &body {
            match k.as_str() {
                "provisionerPolicy" => {
                    return Err(invalid(
                        "unknown field provisionerPolicy (create takes provisionPolicy)",
                    ));
                }
                "deprovisionerPolicy" => {
                    return Err(invalid(
                        "unknown field deprovisionerPolicy (set it with an update)",
                    ));
                }
                "provisionPolicy" => check_value("provisionPolicy", Kind::Policy, v)?,
                "appResourceTypeId" | "appResourceId" => check_value(k, Kind::Str, v)?,
                _ => match kind_of(k).filter(|_| CREATE_FIELDS.contains(&k.as_str())) {
                    Some(kind) => check_value(k, kind, v)?,
                    None => return Err(invalid(format!("unknown field {k}"))),
                },
            }
        }
        check_duration_arms(&body)?;
        if body
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            return Err(invalid("displayName is required"));
        }
        let mut fields = Map::new();
        for (k, v) in body.into_iter().filter(|(_, v)| !v.is_null()) {
            let k = if k == "provisionPolicy" {
                "provisionerPolicy".into()
            } else {
                k
            };
            fields.insert(k, v);
        }
        self.insert_entitlement(app, fields, None);
        let e = self.entitlements.last().expect("inserted");
        Ok(json!({"appEntitlementView": view(e), "expanded": []}))
    }

    fn update_entitlement(&mut self, app: &str, id: &str, req: &Req) -> Reply {
        let i = self.live_entitlement(app, id)?;
        let body = json_body(req)?;
        allow_keys(
            &body,
            "body",
            &[
                "entitlement",
                "updateMask",
                "overrideAccessRequestsDefaults",
                "expandMask",
            ],
        )?;
        let mask = self.update_mask(&body, &MASKABLE)?;
        let ent = object_field(&body, "entitlement")?;
        let blank = blank_entitlement();
        allow_keys(
            &ent,
            "entitlement",
            &blank.keys().map(String::as_str).collect::<Vec<_>>(),
        )?;
        check_duration_arms(&ent)?;
        for p in ["provisionerPolicy", "deprovisionerPolicy"] {
            check_value(p, Kind::Policy, ent.get(p).unwrap_or(&Value::Null))?;
        }
        let mut changes = Vec::new();
        for path in &mask {
            let v = ent.get(path).cloned().unwrap_or(Value::Null);
            check_value(path, kind_of(path).expect("maskable"), &v)?;
            // Setting one arm of the duration oneof clears the other.
            let other = match path.as_str() {
                "durationGrant" => Some("durationUnset"),
                "durationUnset" => Some("durationGrant"),
                _ => None,
            };
            if let Some(other) = other.filter(|_| !v.is_null()) {
                changes.push((other.to_string(), Value::Null));
            }
            let v = if v.is_null() { blank[path].clone() } else { v };
            changes.push((path.clone(), v));
        }
        let now = self.timestamp();
        let e = &mut self.entitlements[i];
        for (k, v) in changes {
            e[k] = v;
        }
        e["updatedAt"] = now.into();
        Ok(json!({"appEntitlementView": view(e)}))
    }

    fn delete_entitlement(&mut self, app: &str, id: &str) -> Reply {
        let i = self.live_entitlement(app, id)?;
        if let Some(p) = self
            .toolsets
            .iter()
            .find(|p| p["appEntitlementId"] == id && p["deletedAt"].is_null())
        {
            let msg = format!(
                "app entitlement {id} backs MCP toolset {}; delete the toolset",
                str_of(&p["id"])
            );
            return Err(error(400, msg));
        }
        let now = self.timestamp();
        let gone = self.soft_delete(id, &now);
        merge(&mut self.entitlements[i], gone);
        Ok(json!({}))
    }

    fn search(&self, req: &Req) -> Reply {
        let body = json_body(req)?;
        allow_keys(
            &body,
            "body",
            &[
                "appIds",
                "alias",
                "displayName",
                "pageSize",
                "pageToken",
                "expandMask",
            ],
        )?;
        let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
        let app_ids: Vec<&str> = match body.get("appIds") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(invalid("appIds must be an array")),
        };
        let matches = |e: &&Value| {
            e["deletedAt"].is_null()
                && (app_ids.is_empty() || app_ids.iter().any(|a| e["appId"] == *a))
                && (text("alias").is_empty() || e["alias"] == text("alias"))
                && (text("displayName").is_empty() || e["displayName"] == text("displayName"))
        };
        let hits: Vec<&Value> = self.entitlements.iter().filter(matches).collect();
        let size = match body.get("pageSize") {
            None | Some(Value::Null) => None,
            Some(v) => Some(int_value(v).ok_or_else(|| invalid("pageSize must be an integer"))?),
        };
        // The query is part of the token scope so a token cannot be reused for another.
        let scope = format!(
            "search {:?} {} {}",
            app_ids,
            text("alias"),
            text("displayName")
        );
        let (page, next) = self.page(hits, size, Some(text("pageToken")), &scope)?;
        let page: Vec<Value> = page.into_iter().map(view).collect();
        Ok(json!({"list": page, "nextPageToken": next, "expanded": []}))
    }

    // --- connectors ------------------------------------------------------------------

    fn connector_index(&self, app: &str, id: &str, readable: bool) -> Result<usize, ApiError> {
        self.lookup(&self.connectors, id, !readable, "connector", |c| {
            c["appId"] == app
        })
    }

    fn insert_connector(
        &mut self,
        app: &str,
        catalog: &str,
        name: &str,
        desc: &str,
        users: Value,
    ) -> String {
        let (id, now) = (new_id(), self.timestamp());
        self.connectors.push(json!({
            "id": id, "appId": app, "catalogId": catalog, "displayName": name,
            "description": desc, "config": null, "profileAllowList": [], "profileIgnoreList": [],
            "userIds": users,
            "status": {"status": "SYNC_STATUS_UNSPECIFIED", "lastError": "", "startedAt": null,
                       "completedAt": null, "updatedAt": null},
            "syncDisabledAt": null, "syncDisabledReason": "", "syncDisabledCategory": "",
            "oauthAuthorizedAs": null, "downloadUrl": "",
            "createdAt": now, "updatedAt": now, "deletedAt": null,
        }));
        for name in BUILTIN_TOOLSETS {
            let t = self.insert_toolset(app, &id, name, "", true);
            self.builtins.insert(t);
        }
        id
    }

    fn list_apps(&self, req: &Req) -> Reply {
        let apps: Vec<Value> = self
            .apps
            .iter()
            .map(|id| json!({"id": id, "displayName": format!("App {id}")}))
            .collect();
        self.list_page(req, apps.iter().collect(), "list", Value::clone)
    }

    fn list_connectors(&self, app: &str, req: &Req) -> Reply {
        let live = self
            .connectors
            .iter()
            .filter(|c| c["appId"] == app && c["deletedAt"].is_null());
        self.list_page(req, live.collect(), "list", connector_view)
    }

    fn create_connector(&mut self, app: &str, req: &Req) -> Reply {
        let body = json_body(req)?;
        allow_keys(
            &body,
            "body",
            &["catalogId", "displayName", "description", "userIds"],
        )?;
        for (k, kind) in [
            ("catalogId", Kind::Str),
            ("displayName", Kind::Str),
            ("description", Kind::Str),
            ("userIds", Kind::Strs),
        ] {
            check_value(k, kind, body.get(k).unwrap_or(&Value::Null))?;
        }
        let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
        if text("catalogId").is_empty() {
            return Err(invalid("catalogId is required"));
        }
        let users = body
            .get("userIds")
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(json!([]));
        let id = self.insert_connector(
            app,
            text("catalogId"),
            text("displayName"),
            text("description"),
            users,
        );
        let i = find(&self.connectors, &id).expect("just inserted");
        Ok(json!({"connectorView": connector_view(&self.connectors[i])}))
    }

    fn update_connector(&mut self, app: &str, id: &str, req: &Req) -> Reply {
        let i = self.connector_index(app, id, false)?;
        let body = json_body(req)?;
        allow_keys(&body, "body", &["connector", "updateMask", "expandMask"])?;
        let mask = self.update_mask(&body, &CONNECTOR_MASKABLE)?;
        let c = object_field(&body, "connector")?;
        let keys: Vec<String> = self.connectors[i]
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        allow_keys(
            &c,
            "connector",
            &keys.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let mut changes = Vec::new();
        for path in &mask {
            let v = c.get(path).cloned().unwrap_or(Value::Null);
            match path.as_str() {
                "config" => {
                    if v.get("@type")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        return Err(invalid(
                            "connector.config must be a protobuf Any with @type",
                        ));
                    }
                }
                "profileAllowList" | "profileIgnoreList" | "userIds" => {
                    check_value(path, Kind::Strs, &v)?
                }
                _ => check_value(path, Kind::Str, &v)?,
            }
            changes.push((path.clone(), v));
        }
        let now = self.timestamp();
        for (k, v) in changes {
            if k == "config" {
                // Write-only: kept aside, never shown.
                self.configs.insert(id.into(), v);
                self.config_updates += 1;
            } else {
                let blank = if k == "displayName" || k == "description" {
                    json!("")
                } else {
                    json!([])
                };
                self.connectors[i][k] = if v.is_null() { blank } else { v };
            }
        }
        self.connectors[i]["updatedAt"] = now.into();
        Ok(json!({"connectorView": connector_view(&self.connectors[i])}))
    }

    fn delete_connector(&mut self, app: &str, id: &str) -> Reply {
        let i = self.connector_index(app, id, false)?;
        let now = self.timestamp();
        let gone = self.soft_delete(id, &now);
        merge(&mut self.connectors[i], gone);
        Ok(json!({}))
    }

    // --- MCP toolsets, bindings and tools --------------------------------------------

    fn toolset_index(
        &self,
        app: &str,
        c: &str,
        id: &str,
        readable: bool,
    ) -> Result<usize, ApiError> {
        self.lookup(&self.toolsets, id, !readable, "MCP toolset", |p| {
            in_connector(p, app, c)
        })
    }

    /// A toolset that the API may change: live and not built in.
    fn editable_toolset(&self, app: &str, c: &str, id: &str) -> Result<usize, ApiError> {
        let i = self.toolset_index(app, c, id, false)?;
        if self.builtins.contains(id) {
            return Err(error(
                400,
                format!("MCP toolset {id} is built in and cannot be modified"),
            ));
        }
        Ok(i)
    }

    /// A toolset and its backing entitlement.
    fn insert_toolset(
        &mut self,
        app: &str,
        c: &str,
        name: &str,
        desc: &str,
        builtin: bool,
    ) -> String {
        let mut fields = Map::new();
        fields.insert("displayName".into(), name.into());
        fields.insert("description".into(), desc.into());
        fields.insert("systemBuiltin".into(), builtin.into());
        let ent = self.insert_entitlement(app, fields, None);
        let (id, now) = (new_id(), self.timestamp());
        self.toolsets.push(json!({
            "id": id, "appId": app, "connectorId": c, "displayName": name, "description": desc,
            "appEntitlementId": ent, "toolCount": 0, "connectorDisplayName": "", "requestable": true,
            "createdAt": now, "updatedAt": now, "deletedAt": null,
        }));
        id
    }

    /// The stored toolset with its derived fields filled in.
    fn render_toolset(&self, p: &Value) -> Value {
        let mut p = p.clone();
        let id = str_of(&p["id"]);
        p["toolCount"] = self.live_bindings(&id).count().into();
        let c = find(&self.connectors, &str_of(&p["connectorId"]));
        p["connectorDisplayName"] =
            c.map_or(json!(""), |i| self.connectors[i]["displayName"].clone());
        p
    }

    fn live_bindings<'a>(&'a self, toolset: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        let live = move |b: &&Value| b["accessProfileId"] == toolset && b["deletedAt"].is_null();
        self.bindings.iter().filter(live)
    }

    fn list_toolsets(&self, app: &str, c: &str, req: &Req) -> Reply {
        let live = self
            .toolsets
            .iter()
            .filter(|p| in_connector(p, app, c) && p["deletedAt"].is_null());
        self.list_page(req, live.collect(), "profiles", |p| self.render_toolset(p))
    }

    fn create_toolset(&mut self, app: &str, c: &str, req: &Req) -> Reply {
        let body = json_body(req)?;
        allow_keys(&body, "body", &["displayName", "description"])?;
        for k in ["displayName", "description"] {
            check_value(k, Kind::Str, body.get(k).unwrap_or(&Value::Null))?;
        }
        let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
        if text("displayName").is_empty() {
            return Err(invalid("displayName is required"));
        }
        self.insert_toolset(app, c, text("displayName"), text("description"), false);
        Ok(json!({"profile": self.render_toolset(self.toolsets.last().expect("inserted"))}))
    }

    fn update_toolset(&mut self, app: &str, c: &str, id: &str, req: &Req) -> Reply {
        let i = self.editable_toolset(app, c, id)?;
        let body = json_body(req)?;
        allow_keys(&body, "body", &["profile", "updateMask"])?;
        let mask = self.update_mask(&body, &["displayName", "description"])?;
        let p = object_field(&body, "profile")?;
        let keys: Vec<String> = self.toolsets[i]
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        allow_keys(
            &p,
            "profile",
            &keys.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        for path in &mask {
            check_value(path, Kind::Str, p.get(path).unwrap_or(&Value::Null))?;
        }
        if mask.iter().any(|m| m == "displayName")
            && p.get("displayName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
        {
            return Err(invalid("displayName must not be empty"));
        }
        let now = self.timestamp();
        let t = &mut self.toolsets[i];
        for path in mask {
            t[&path] = p
                .get(&path)
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or(json!(""));
        }
        t["updatedAt"] = now.into();
        Ok(json!({"profile": self.render_toolset(&self.toolsets[i])}))
    }

    fn delete_toolset(&mut self, app: &str, c: &str, id: &str) -> Reply {
        let i = self.editable_toolset(app, c, id)?;
        let now = self.timestamp();
        // Cascade: the bindings and the backing entitlement go with the toolset.
        for b in self
            .bindings
            .iter_mut()
            .filter(|b| b["accessProfileId"] == id && b["deletedAt"].is_null())
        {
            merge(b, json!({"deletedAt": now, "updatedAt": now}));
        }
        let ent = str_of(&self.toolsets[i]["appEntitlementId"]);
        if let Some(e) = find(&self.entitlements, &ent) {
            let gone = self.soft_delete(&ent, &now);
            merge(&mut self.entitlements[e], gone);
        }
        let gone = self.soft_delete(id, &now);
        merge(&mut self.toolsets[i], gone);
        Ok(json!({}))
    }

    fn list_bindings(&self, app: &str, c: &str, id: &str, req: &Req) -> Reply {
        self.toolset_index(app, c, id, false)?;
        let live = self.live_bindings(id).collect();
        self.list_page(req, live, "bindings", Value::clone)
    }

    /// The `mcpToolIds` of a binding request (non-empty, no duplicates).
    fn tool_ids(req: &Req) -> Result<Vec<String>, ApiError> {
        let body = json_body(req)?;
        allow_keys(&body, "body", &["mcpToolIds"])?;
        let ids = body.get("mcpToolIds").and_then(Value::as_array);
        let ids: Option<Vec<String>> =
            ids.and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect());
        let ids = ids
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid("mcpToolIds must be a non-empty array of strings"))?;
        if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
            return Err(invalid("mcpToolIds contains duplicates"));
        }
        Ok(ids)
    }

    fn add_bindings(&mut self, app: &str, c: &str, id: &str, req: &Req) -> Reply {
        self.editable_toolset(app, c, id)?;
        let tool_ids = Self::tool_ids(req)?;
        let bound: HashSet<String> = self
            .live_bindings(id)
            .map(|b| str_of(&b["mcpToolId"]))
            .collect();
        for t in &tool_ids {
            let tool = find(&self.tools, t)
                .map(|i| &self.tools[i])
                .filter(|tool| in_connector(tool, app, c));
            let tool =
                tool.ok_or_else(|| invalid(format!("unknown MCP tool {t} for connector {c}")))?;
            if tool["state"] != TOOL_APPROVED {
                let msg = format!(
                    "MCP tool {} ({t}) is {}; only {TOOL_APPROVED} tools can be bound",
                    str_of(&tool["toolName"]),
                    str_of(&tool["state"])
                );
                return Err(invalid(msg));
            }
            if bound.contains(t) && !self.idempotent_bindings {
                return Err(error(
                    409,
                    format!("MCP tool {t} is already bound to toolset {id}"),
                ));
            }
        }
        let now = self.timestamp();
        for t in tool_ids.iter().filter(|t| !bound.contains(*t)) {
            self.bindings.push(
                json!({"accessProfileId": id, "appId": app, "connectorId": c,
                "mcpToolId": t, "createdAt": now, "updatedAt": now, "deletedAt": null}),
            );
        }
        let out = self
            .live_bindings(id)
            .filter(|b| tool_ids.contains(&str_of(&b["mcpToolId"])));
        Ok(json!({"bindings": out.cloned().collect::<Vec<_>>()}))
    }

    fn remove_bindings(&mut self, app: &str, c: &str, id: &str, req: &Req) -> Reply {
        self.editable_toolset(app, c, id)?;
        let tool_ids = Self::tool_ids(req)?;
        let bound: HashSet<String> = self
            .live_bindings(id)
            .map(|b| str_of(&b["mcpToolId"]))
            .collect();
        if let Some(t) = tool_ids
            .iter()
            .find(|t| !bound.contains(*t))
            .filter(|_| !self.idempotent_bindings)
        {
            return Err(error(
                404,
                format!("MCP tool {t} is not bound to toolset {id}"),
            ));
        }
        let now = self.timestamp();
        let hit = |b: &&mut Value| {
            b["accessProfileId"] == id
                && b["deletedAt"].is_null()
                && tool_ids.contains(&str_of(&b["mcpToolId"]))
        };
        for b in self.bindings.iter_mut().filter(hit) {
            merge(b, json!({"deletedAt": now, "updatedAt": now}));
        }
        Ok(json!({}))
    }

    fn list_tools(&self, app: &str, c: &str, req: &Req) -> Reply {
        let tools = self
            .tools
            .iter()
            .filter(|t| in_connector(t, app, c))
            .collect();
        self.list_page(req, tools, "tools", Value::clone)
    }
}

// ---------------------------------------------------------------------------------
// Assertion verification.

/// Checks a compact JWS client assertion; returns its nonce. Errors never quote it.
fn verify_assertion(
    jws: &str,
    client_id: &str,
    key: &[u8; 32],
    audience: &str,
) -> Result<String, String> {
    let parts: Vec<&str> = jws.split('.').collect();
    let [h, c, sig] = parts[..] else {
        return Err("not a compact JWS (header.claims.signature)".into());
    };
    let decode = |part: &str, what: &str| {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| format!("{what} is not unpadded base64url"))?;
        serde_json::from_slice::<Value>(&bytes).map_err(|_| format!("{what} is not JSON"))
    };
    let header = decode(h, "header")?;
    if header["alg"] != "EdDSA" {
        return Err("header alg must be EdDSA".into());
    }
    let nonce = header["nonce"]
        .as_str()
        .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()));
    let nonce = nonce
        .ok_or("header nonce must be 32 hex characters")?
        .to_string();
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .ok()
        .and_then(|s| <[u8; 64]>::try_from(s).ok());
    let sig = Signature::from_bytes(&sig.ok_or("signature is not 64 bytes of unpadded base64url")?);
    let key = VerifyingKey::from_bytes(key).map_err(|_| "registered public key is invalid")?;
    key.verify_strict(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "signature does not verify with the client's key")?;

    let claims = decode(c, "claims")?;
    for k in ["iss", "sub"] {
        if claims[k] != client_id {
            return Err(format!("{k} must equal client_id"));
        }
    }
    if claims["aud"] != audience {
        return Err(format!("aud must be {audience:?}"));
    }
    let time = |k: &str| int_value(&claims[k]).ok_or(format!("{k} must be a NumericDate"));
    let (iat, nbf, exp) = (time("iat")?, time("nbf")?, time("exp")?);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    if nbf > now + SKEW_SECS {
        return Err("not valid yet (nbf is in the future)".into());
    }
    if exp <= now {
        return Err("expired (exp is in the past)".into());
    }
    if exp - iat >= 300 {
        return Err("lifetime exp - iat must be under 300 s".into());
    }
    Ok(nonce)
}

// ---------------------------------------------------------------------------------
// Entitlement shape and validation.

const PURPOSES: [&str; 4] = [
    "APP_ENTITLEMENT_PURPOSE_VALUE_UNSPECIFIED",
    "APP_ENTITLEMENT_PURPOSE_VALUE_ASSIGNMENT",
    "APP_ENTITLEMENT_PURPOSE_VALUE_PERMISSION",
    "APP_ENTITLEMENT_PURPOSE_VALUE_OWNERSHIP",
];

/// Value kinds of writable fields, for type checks.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Strs,
    Purpose,
    Duration,
    Empty,
    Policy,
    Annotations,
}

/// Writable entitlement fields (= allowed update mask paths) and their kinds.
const WRITABLE: [(&str, Kind); 21] = [
    ("displayName", Kind::Str),
    ("description", Kind::Str),
    ("alias", Kind::Str),
    ("slug", Kind::Str),
    ("purpose", Kind::Purpose),
    ("grantPolicyId", Kind::Str),
    ("revokePolicyId", Kind::Str),
    ("certifyPolicyId", Kind::Str),
    ("emergencyGrantEnabled", Kind::Bool),
    ("emergencyGrantPolicyId", Kind::Str),
    ("riskLevelValueId", Kind::Str),
    ("complianceFrameworkValueIds", Kind::Strs),
    ("durationGrant", Kind::Duration),
    ("durationUnset", Kind::Empty),
    ("provisionerPolicy", Kind::Policy),
    ("deprovisionerPolicy", Kind::Policy),
    ("requestSchemaId", Kind::Str),
    ("matchBatonId", Kind::Str),
    ("overrideAccessRequestsDefaults", Kind::Bool),
    ("isManuallyManaged", Kind::Bool),
    ("annotations", Kind::Annotations),
];

const MASKABLE: [&str; 21] = {
    let mut out = [""; 21];
    let mut i = 0;
    while i < 21 {
        out[i] = WRITABLE[i].0;
        i += 1;
    }
    out
};

/// Writable fields a create request may carry (besides provisionPolicy and the
/// create-only resource ids).
const CREATE_FIELDS: [&str; 17] = [
    "displayName",
    "description",
    "alias",
    "slug",
    "purpose",
    "grantPolicyId",
    "revokePolicyId",
    "certifyPolicyId",
    "emergencyGrantEnabled",
    "emergencyGrantPolicyId",
    "riskLevelValueId",
    "complianceFrameworkValueIds",
    "matchBatonId",
    "overrideAccessRequestsDefaults",
    "annotations",
    "durationGrant",
    "durationUnset",
];

const CONNECTOR_MASKABLE: [&str; 6] = [
    "displayName",
    "description",
    "config",
    "profileAllowList",
    "profileIgnoreList",
    "userIds",
];

fn kind_of(field: &str) -> Option<Kind> {
    WRITABLE.iter().find(|(f, _)| *f == field).map(|(_, k)| *k)
}

/// Every field of `E`, unset (protobuf-JSON with defaults emitted).
fn blank_entitlement() -> Map<String, Value> {
    let v = json!({
        "id": "", "appId": "", "externalId": "", "displayName": "", "description": "",
        "alias": "", "slug": "", "purpose": PURPOSES[0], "grantPolicyId": "",
        "revokePolicyId": "", "certifyPolicyId": "", "emergencyGrantEnabled": false,
        "emergencyGrantPolicyId": "", "riskLevelValueId": "", "complianceFrameworkValueIds": [],
        "durationGrant": null, "durationUnset": null, "provisionerPolicy": null,
        "deprovisionerPolicy": null, "requestSchemaId": "", "matchBatonId": "",
        "overrideAccessRequestsDefaults": false, "isManuallyManaged": false, "annotations": {},
        "appResourceTypeId": "", "appResourceId": "", "grantCount": "0",
        "isAutomationEnabled": false, "systemBuiltin": false, "sourceConnectorIds": {},
        "defaultValuesApplied": false, "userEditedMask": "",
        "createdAt": null, "updatedAt": null, "deletedAt": null,
    });
    let Value::Object(m) = v else { unreachable!() };
    m
}

/// Type check of one field value; `null` always means "unset" and passes.
fn check_value(field: &str, kind: Kind, v: &Value) -> Result<(), ApiError> {
    let bad = |what: &str| Err(invalid(format!("{field} must be {what}")));
    match (kind, v) {
        (_, Value::Null) => Ok(()),
        (Kind::Str, Value::String(_)) | (Kind::Bool, Value::Bool(_)) => Ok(()),
        (Kind::Strs, Value::Array(a)) if a.iter().all(Value::is_string) => Ok(()),
        (Kind::Purpose, Value::String(s)) if PURPOSES.contains(&s.as_str()) => Ok(()),
        (Kind::Duration, Value::String(s))
            if s.strip_suffix('s')
                .is_some_and(|n| n.parse::<f64>().is_ok_and(|n| n >= 0.0)) =>
        {
            Ok(())
        }
        (Kind::Empty, Value::Object(m)) if m.is_empty() => Ok(()),
        (Kind::Policy, Value::Object(_)) => check_policy(field, v),
        (Kind::Annotations, Value::Object(m)) => check_annotations(m),
        (Kind::Str, _) => bad("a string"),
        (Kind::Bool, _) => bad("a boolean"),
        (Kind::Strs, _) => bad("an array of strings"),
        (Kind::Purpose, _) => bad("an APP_ENTITLEMENT_PURPOSE_VALUE_* value"),
        (Kind::Duration, _) => bad("a duration like \"3600s\""),
        (Kind::Empty, _) => bad("{}"),
        (Kind::Policy | Kind::Annotations, _) => bad("an object"),
    }
}

/// At most one set arm among `arms`; unknown keys are rejected.
fn check_oneof(field: &str, v: &Value, arms: &[&str]) -> Result<(), ApiError> {
    let Some(m) = v.as_object() else {
        return if v.is_null() {
            Ok(())
        } else {
            Err(invalid(format!("{field} must be an object")))
        };
    };
    allow_keys(m, field, arms)?;
    let set: Vec<&String> = m
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k)
        .collect();
    if set.len() > 1 {
        return Err(invalid(format!(
            "{field}: two oneof arms set ({})",
            set.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// ProvisionPolicy and its nested oneofs (deeper contents are not checked).
fn check_policy(field: &str, v: &Value) -> Result<(), ApiError> {
    let arms = [
        "connector",
        "manual",
        "delegated",
        "webhook",
        "multiStep",
        "externalTicket",
        "unconfigured",
    ];
    check_oneof(field, v, &arms)?;
    let connector = &v["connector"];
    check_oneof(
        &format!("{field}.connector"),
        connector,
        &["defaultBehavior", "account", "deleteAccount"],
    )?;
    let account = &connector["account"];
    if let Some(m) = account.as_object() {
        let storage = Value::Object(
            m.iter()
                .filter(|(k, _)| *k == "saveToVault" || *k == "doNotSave")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        check_oneof(
            &format!("{field}.connector.account"),
            &storage,
            &["saveToVault", "doNotSave"],
        )?;
    }
    Ok(())
}

/// `durationGrant` and `durationUnset` are one oneof.
fn check_duration_arms(m: &Map<String, Value>) -> Result<(), ApiError> {
    let set = |k: &str| m.get(k).is_some_and(|v| !v.is_null());
    if set("durationGrant") && set("durationUnset") {
        return Err(invalid("two oneof arms set (durationGrant, durationUnset)"));
    }
    Ok(())
}

fn check_annotations(m: &Map<String, Value>) -> Result<(), ApiError> {
    if m.len() > 16 {
        return Err(invalid("annotations: at most 16 entries"));
    }
    for (k, v) in m {
        let mut chars = k.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && k.len() <= 128
            && chars.all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
        if !ok || k.starts_with("c1/") {
            return Err(invalid(format!(
                "annotations: invalid or reserved key {k:?}"
            )));
        }
        if !v.is_string() {
            return Err(invalid(format!("annotations[{k:?}] must be a string")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Small helpers.

fn view(e: &Value) -> Value {
    json!({"appEntitlement": e, "appPath": format!("{APPS_PATH}/{}", str_of(&e["appId"])),
           "appResourcePath": "", "appResourceTypePath": ""})
}

fn connector_view(c: &Value) -> Value {
    json!({"connector": c, "appPath": format!("{APPS_PATH}/{}", str_of(&c["appId"])), "usersPath": ""})
}

fn in_connector(v: &Value, app: &str, connector: &str) -> bool {
    v["appId"] == app && v["connectorId"] == connector
}

fn find(list: &[Value], id: &str) -> Option<usize> {
    list.iter().position(|v| v["id"] == id)
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn merge(target: &mut Value, fields: Value) {
    if let (Some(t), Value::Object(f)) = (target.as_object_mut(), fields) {
        t.extend(f);
    }
}

/// An integer given as a JSON number or (protobuf-JSON int64) a string.
fn int_value(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn random_chars(n: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// KSUID-looking ids like C1's ("2Hx…", 27 characters).
fn new_id() -> String {
    format!("2{}", random_chars(26))
}

fn decode_page_token(token: &str, scope: &str) -> Option<usize> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let (s, offset) = raw.rsplit_once('\n')?;
    (s == scope).then(|| offset.parse().ok()).flatten()
}

fn json_body(req: &Req) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid("request body must be a JSON object")),
        Err(e) => Err(invalid(format!("request body is not valid JSON: {e}"))),
    }
}

/// A nested object field (`{}` when absent or null).
fn object_field(body: &Map<String, Value>, field: &str) -> Result<Map<String, Value>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(invalid(format!("{field} must be an object"))),
    }
}

fn allow_keys(m: &Map<String, Value>, what: &str, allowed: &[&str]) -> Result<(), ApiError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("unknown field {what}.{k}"))),
        None => Ok(()),
    }
}

/// gRPC status code matching an HTTP status (as grpc-gateway maps them).
fn grpc_code(status: u16) -> u16 {
    match status {
        400 => 3,
        401 => 16,
        403 => 7,
        404 => 5,
        409 => 6,
        429 => 8,
        499 => 1,
        501 => 12,
        503 => 14,
        504 => 4,
        _ => 13,
    }
}

fn error(status: u16, message: impl Into<String>) -> ApiError {
    let body = json!({"code": grpc_code(status), "message": message.into(), "details": []});
    ApiError { status, body }
}

fn invalid(message: impl Into<String>) -> ApiError {
    error(400, message)
}

/// OAuth 2 error (RFC 6749 §5.2), as the token endpoint answers.
fn oauth(status: u16, code: &str, description: &str) -> ApiError {
    let body = json!({"error": code, "error_description": description});
    ApiError { status, body }
}
