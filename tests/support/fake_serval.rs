//! Stateful fake of the Serval public API v2 (token exchange + access profiles), served
//! over real HTTP on 127.0.0.1, with a request log and fault injection.
//!
//! Choices where the contract is silent (see /work/shared/upstream/serval.md):
//! - `nextPageToken` is always present; `""` marks the last page.
//! - Responses always carry the full AP shape (`description: ""`, empty id lists).
//! - Id lists are stored and returned in *reversed* request order, so clients must
//!   compare them as sets.
//! - Unknown fields anywhere in a create/update body are rejected with 400.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use axum::{
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use serde_json::{Map, Value, json};

use super::fake_http::{Backend, FakeServer, Req, auth_param, reply};

pub const TOKEN_PATH: &str = "/v2/auth/token";
pub const PROFILES_PATH: &str = "/v2/access-profiles";
pub const MATCH_TYPE_UNSPECIFIED: &str = "ACCESS_PROFILE_GROUP_MATCH_TYPE_UNSPECIFIED";

/// Handle to a running fake; the server task is aborted on drop.
pub struct FakeServal {
    http: FakeServer<Inner>,
}

/// The request log and fault controls (`requests`, `count`, `fail_next`, `set_chaos`, …)
/// are the shared [`FakeServer`]'s.
impl std::ops::Deref for FakeServal {
    type Target = FakeServer<Inner>;

    fn deref(&self) -> &Self::Target {
        &self.http
    }
}

impl FakeServal {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> Self {
        let inner = Inner {
            token_ttl: Duration::from_secs(3600),
            ..Inner::default()
        };
        Self {
            http: FakeServer::start(inner).await,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.http.state()
    }

    /// e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.http.base_url()
    }

    pub fn add_client(&self, client_id: &str, client_secret: &str) {
        self.lock()
            .clients
            .insert(client_id.into(), client_secret.into());
    }

    /// TTL for tokens issued from now on (default 1 h); `expires_in` is its whole seconds.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.lock().token_ttl = ttl;
    }

    /// A token that never expires (until `revoke_tokens`), as if configured by hand.
    pub fn issue_bearer_token(&self) -> String {
        self.lock().mint(None)
    }

    /// Invalidates every issued token; the next API call with one gets 401.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Number of successful `POST /v2/auth/token` exchanges.
    pub fn token_exchanges(&self) -> usize {
        self.lock().token_exchanges
    }

    /// Inserts a profile as-is (no validation); fills `id` ("ap-<n>"), `createdAt` and
    /// `isTeamDefault: false` when missing. Panics if the id already exists.
    pub fn seed_profile(&self, mut ap: Value) -> String {
        let mut s = self.lock();
        let obj = ap
            .as_object_mut()
            .expect("seed_profile needs a JSON object");
        let id = match obj.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => s.next_id(),
        };
        assert!(s.index(&id).is_err(), "profile {id} already exists");
        obj.insert("id".into(), id.clone().into());
        obj.entry("isTeamDefault").or_insert(false.into());
        let created = s.created_at();
        obj.entry("createdAt").or_insert(created.into());
        s.profiles.push(ap);
        id
    }

    pub fn profile(&self, id: &str) -> Option<Value> {
        let s = self.lock();
        s.index(id).ok().map(|i| s.profiles[i].clone())
    }

    /// All profiles of all teams, in creation order.
    pub fn profiles(&self) -> Vec<Value> {
        self.lock().profiles.clone()
    }

    /// Mutates a stored profile in place (drift made in the SaaS UI). Panics if absent.
    pub fn edit_profile(&self, id: &str, f: impl FnOnce(&mut Value)) {
        let mut s = self.lock();
        let i = s.index(id).unwrap_or_else(|_| panic!("no profile {id}"));
        f(&mut s.profiles[i]);
    }

    /// Removes a profile behind the client's back. Panics if absent.
    pub fn delete_profile_directly(&self, id: &str) {
        let mut s = self.lock();
        let i = s.index(id).unwrap_or_else(|_| panic!("no profile {id}"));
        s.profiles.remove(i);
    }

    /// Recorded POST/PUT/DELETE requests to /v2/access-profiles, whatever their outcome.
    pub fn writes(&self) -> usize {
        ["POST", "PUT", "DELETE"]
            .iter()
            .map(|m| self.count(m, PROFILES_PATH))
            .sum()
    }
}

// ---------------------------------------------------------------------------------
// Request handling (logging and faults are done by `fake_http`).

const CREATE_FIELDS: &[&str] = &[
    "teamId",
    "name",
    "description",
    "matchingCriteria",
    "grants",
];
/// `teamId` is immutable, so it is an unknown field in a PUT body.
const UPDATE_FIELDS: &[&str] = &["name", "description", "matchingCriteria", "grants"];

/// A handler's 200 JSON body, or a Connect-style error.
type Reply = Result<Value, ApiError>;

struct ApiError {
    status: u16,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "message": self.message, "detail": ""});
        reply(self.status, body)
    }
}

#[derive(Default)]
pub struct Inner {
    clients: HashMap<String, String>,
    token_ttl: Duration,
    /// token -> expiry (`None` = never expires)
    tokens: HashMap<String, Option<Instant>>,
    token_exchanges: usize,
    /// Creation order, which is also list order.
    profiles: Vec<Value>,
    last_id: u64,
    created: u64,
}

impl Backend for Inner {
    const TOKEN_PATH: &'static str = TOKEN_PATH;

    fn serve(&mut self, req: &Req) -> Response {
        Inner::serve(self, req)
    }

    fn fault_body(status: u16) -> Value {
        json!({"code": default_code(status), "message": "injected fault", "detail": ""})
    }
}

impl Inner {
    fn serve(&mut self, req: &Req) -> Response {
        let result = if req.path == TOKEN_PATH {
            match req.method.as_str() {
                "POST" => self.issue_token(req),
                _ => Err(error(405, "unimplemented", "method not allowed")),
            }
        } else if let Some(rest) = req.path.strip_prefix(PROFILES_PATH) {
            self.authorize(&req.headers)
                .and_then(|()| self.profiles_route(req, rest))
        } else {
            Err(error(404, "not_found", format!("no route {}", req.path)))
        };
        match result {
            Ok(body) => reply(200, body),
            Err(e) => e.into_response(),
        }
    }

    fn profiles_route(&mut self, req: &Req, rest: &str) -> Reply {
        let id = match rest.strip_prefix('/') {
            None if rest.is_empty() => None,
            Some(id) if !id.is_empty() && !id.contains('/') => Some(id),
            _ => return Err(error(404, "not_found", format!("no route {}", req.path))),
        };
        match (req.method.as_str(), id) {
            ("GET", None) => self.list(req),
            ("POST", None) => self.create(req),
            ("GET", Some(id)) => Ok(json!({"data": self.profiles[self.index(id)?]})),
            ("PUT", Some(id)) => self.update(id, req),
            ("DELETE", Some(id)) => self.delete(id),
            _ => Err(error(405, "unimplemented", "method not allowed")),
        }
    }

    fn mint(&mut self, ttl: Option<Duration>) -> String {
        let token = format!("tok-{:016x}", rand::random::<u64>());
        self.tokens
            .insert(token.clone(), ttl.map(|t| Instant::now() + t));
        token
    }

    fn issue_token(&mut self, req: &Req) -> Reply {
        let creds = auth_param(&req.headers, "Basic")
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let valid = creds
            .as_deref()
            .and_then(|c| c.split_once(':'))
            .is_some_and(|(id, secret)| self.clients.get(id).is_some_and(|s| s == secret));
        if !valid {
            return Err(error(401, "unauthenticated", "invalid client credentials"));
        }
        let grant = url::form_urlencoded::parse(&req.body).find(|(k, _)| k == "grant_type");
        if grant.is_none_or(|(_, v)| v != "client_credentials") {
            return Err(invalid("grant_type must be client_credentials"));
        }
        self.token_exchanges += 1;
        let token = self.mint(Some(self.token_ttl));
        Ok(json!({"access_token": token, "token_type": "Bearer",
                  "expires_in": self.token_ttl.as_secs()}))
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let token = auth_param(headers, "Bearer")
            .ok_or_else(|| error(401, "unauthenticated", "missing bearer token"))?;
        match self.tokens.get(token) {
            None => Err(error(401, "unauthenticated", "invalid token")),
            Some(Some(expiry)) if Instant::now() >= *expiry => {
                Err(error(401, "unauthenticated", "token expired"))
            }
            Some(_) => Ok(()),
        }
    }

    fn list(&self, req: &Req) -> Reply {
        let query = req.query.as_deref().unwrap_or_default().as_bytes();
        let q: HashMap<String, String> = url::form_urlencoded::parse(query).into_owned().collect();
        let team = q
            .get("teamId")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("teamId is required"))?;
        let size = match q.get("pageSize").map(|s| s.parse::<usize>()) {
            None | Some(Ok(0)) => 50,
            Some(Ok(n)) => n.min(1000),
            Some(Err(_)) => return Err(invalid("pageSize must be a non-negative integer")),
        };
        // Opaque cursor "<team>\n<offset>", rejected when reused for another team.
        let offset = match q.get("pageToken").filter(|t| !t.is_empty()) {
            None => 0,
            Some(t) => decode_page_token(t, team).ok_or_else(|| invalid("invalid pageToken"))?,
        };
        let all: Vec<&Value> = self
            .profiles
            .iter()
            .filter(|p| p["teamId"] == *team)
            .collect();
        let page: Vec<&Value> = all.iter().skip(offset).take(size).copied().collect();
        let next = if offset + size < all.len() {
            URL_SAFE_NO_PAD.encode(format!("{team}\n{}", offset + size))
        } else {
            String::new()
        };
        Ok(json!({"data": page, "nextPageToken": next}))
    }

    fn create(&mut self, req: &Req) -> Reply {
        let body = json_object(req, CREATE_FIELDS)?;
        let team = opt_str(&body, "teamId")?.filter(|s| !s.is_empty());
        let team = team.ok_or_else(|| invalid("teamId is required"))?;
        let name = opt_str(&body, "name")?.filter(|s| !s.is_empty());
        let name = name.ok_or_else(|| invalid("name is required"))?;
        let ap = json!({
            "id": self.next_id(),
            "teamId": team,
            "name": name,
            "description": opt_str(&body, "description")?.unwrap_or_default(),
            "isTeamDefault": false,
            "createdAt": self.created_at(),
            "matchingCriteria": criteria(body.get("matchingCriteria"))?,
            "grants": grants(body.get("grants"))?,
        });
        self.profiles.push(ap.clone());
        Ok(json!({"data": ap}))
    }

    fn update(&mut self, id: &str, req: &Req) -> Reply {
        let i = self.index(id)?;
        let body = json_object(req, UPDATE_FIELDS)?;
        // Validate everything before touching the stored profile.
        let name = opt_str(&body, "name")?;
        if name.as_deref() == Some("") {
            return Err(invalid("name must not be empty"));
        }
        let mut changes = vec![
            ("name", name.map(Value::from)),
            (
                "description",
                opt_str(&body, "description")?.map(Value::from),
            ),
        ];
        if let Some(v) = body.get("matchingCriteria").filter(|v| !v.is_null()) {
            changes.push(("matchingCriteria", Some(criteria(Some(v))?)));
        }
        if let Some(v) = body.get("grants").filter(|v| !v.is_null()) {
            changes.push(("grants", Some(grants(Some(v))?)));
        }
        let ap = &mut self.profiles[i];
        for (field, value) in changes {
            if let Some(value) = value {
                ap[field] = value;
            }
        }
        Ok(json!({"data": ap}))
    }

    fn delete(&mut self, id: &str) -> Reply {
        let i = self.index(id)?;
        if self.profiles[i]["isTeamDefault"] == true {
            return Err(error(
                400,
                "failed_precondition",
                format!("access profile {id} is the team default and cannot be deleted"),
            ));
        }
        self.profiles.remove(i);
        Ok(json!({}))
    }

    fn index(&self, id: &str) -> Result<usize, ApiError> {
        self.profiles
            .iter()
            .position(|p| p["id"] == id)
            .ok_or_else(|| error(404, "not_found", format!("access profile {id} not found")))
    }

    /// Next free "ap-<n>" (skips ids taken by seeded profiles).
    fn next_id(&mut self) -> String {
        loop {
            self.last_id += 1;
            let id = format!("ap-{}", self.last_id);
            if self.index(&id).is_err() {
                return id;
            }
        }
    }

    /// Deterministic, strictly increasing timestamps (one second apart).
    fn created_at(&mut self) -> String {
        self.created += 1;
        let n = self.created;
        format!(
            "2025-01-01T{:02}:{:02}:{:02}Z",
            n / 3600 % 24,
            n / 60 % 60,
            n % 60
        )
    }
}

fn decode_page_token(token: &str, team: &str) -> Option<usize> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let (t, offset) = raw.split_once('\n')?;
    (t == team).then(|| offset.parse().ok()).flatten()
}

// ---------------------------------------------------------------------------------
// Body validation and normalisation helpers.

fn json_object(req: &Req, allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| invalid(format!("request body is not valid JSON: {e}")))?;
    object(Some(&body), "body", allowed)
}

/// `None`/`null` give an empty map; unknown keys are rejected.
fn object(
    v: Option<&Value>,
    field: &str,
    allowed: &[&str],
) -> Result<Map<String, Value>, ApiError> {
    let map = match v {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(invalid(format!("{field} must be an object"))),
    };
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("unknown field {field}.{k}"))),
        None => Ok(map.clone()),
    }
}

fn opt_str(map: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{field} must be a string"))),
    }
}

/// Validates a request array item by item and returns it reversed (see module docs).
fn id_list(
    v: Option<&Value>,
    field: &str,
    item: impl Fn(&Value) -> Option<Value>,
) -> Result<Value, ApiError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(json!([])),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid(format!("{field} must be an array"))),
    };
    let mut out = items
        .iter()
        .enumerate()
        .map(|(i, v)| item(v).ok_or_else(|| invalid(format!("invalid {field}[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    out.reverse();
    Ok(out.into())
}

/// The only value of an object whose single key is `key`, if it is a string.
fn sole_string<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    let map = v.as_object().filter(|m| m.len() == 1)?;
    map.get(key)?.as_str()
}

fn criteria(v: Option<&Value>) -> Result<Value, ApiError> {
    let mc = object(v, "matchingCriteria", &["groups"])?;
    let groups = object(
        mc.get("groups"),
        "matchingCriteria.groups",
        &["matchType", "includedGroupIds", "excludedGroupIds"],
    )?;
    // matchType is an open string: only the UNSPECIFIED value is published.
    let match_type =
        opt_str(&groups, "matchType")?.unwrap_or_else(|| MATCH_TYPE_UNSPECIFIED.into());
    let ids = |field: &str| {
        let name = format!("matchingCriteria.groups.{field}");
        id_list(groups.get(field), &name, |v| v.as_str().map(Value::from))
    };
    Ok(json!({"groups": {
        "matchType": match_type,
        "includedGroupIds": ids("includedGroupIds")?,
        "excludedGroupIds": ids("excludedGroupIds")?,
    }}))
}

fn grants(v: Option<&Value>) -> Result<Value, ApiError> {
    let g = object(v, "grants", &["appResourceRoles", "workflows"])?;
    // Request items carry only their id; the server adds read-only fields.
    let roles = id_list(g.get("appResourceRoles"), "grants.appResourceRoles", |v| {
        let id = sole_string(v, "appResourceRoleId")?;
        Some(json!({"appResourceRoleId": id, "useTeamDefaultAccessProfile": false}))
    })?;
    let workflows = id_list(g.get("workflows"), "grants.workflows", |v| {
        Some(json!({"workflowId": sole_string(v, "workflowId")?}))
    })?;
    Ok(json!({"appResourceRoles": roles, "workflows": workflows}))
}

// ---------------------------------------------------------------------------------
// Small helpers.

fn error(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
    let message = message.into();
    ApiError {
        status,
        code,
        message,
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    error(400, "invalid_argument", message)
}

fn default_code(status: u16) -> &'static str {
    match status {
        400 => "invalid_argument",
        401 => "unauthenticated",
        403 => "permission_denied",
        404 => "not_found",
        408 | 504 => "deadline_exceeded",
        409 => "aborted",
        429 => "resource_exhausted",
        501 => "unimplemented",
        502 | 503 => "unavailable",
        _ => "internal",
    }
}
