//! Stateful fake of the Instaclustr API v2 for MCP Gateway persona access controls
//! (plus the gateway cluster status), served over real HTTP on 127.0.0.1, with
//! asynchronous visibility of writes, per-account rate limiting, a request log and
//! fault injection. Public names mirror `fake_serval` so tests read the same.
//!
//! Choices where the contract is silent (see /work/shared/upstream/instaclustr.md):
//! - Writes are checked (404/409/immutability) against the *accepted* state, i.e.
//!   including pending changes, while GET/list show the *visible* state. So a second
//!   create right after a 202 gets 409 even though GET still answers 404.
//! - The 202 bodies echo the full object including `id` and `clusterId`.
//! - `tools` are stored and returned in *reversed* request order (compare as sets);
//!   absent/null `tools` is stored as `[]`.
//! - Unknown body fields (including read-only `id`/`clusterId`) give 400; requests
//!   without `Content-Type: application/json` give 415 (the contract asks for it on
//!   every request, bodiless ones too).
//! - Unknown clusters (list/status) give 404; unknown routes and wrong methods answer
//!   with the legacy `{"error": "..."}` shape.
//! - The rate limiter counts only admitted requests (a 429 does not extend the
//!   penalty); unauthenticated and faulted requests are not counted.
//! - A `/` in an id must be percent-encoded: the id is exactly one path segment.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::MutexGuard,
    time::{Duration, Instant},
};

use axum::{
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Map, Value, json};

use super::fake_http::{Backend, FakeServer, Fault, Req, auth_param, reply};

/// Create (POST) and, with `/{id}`, get/update/delete.
pub const CONTROLS_PATH: &str =
    "/cluster-management/v2/resources/applications/mcp-gateway/persona-access-controls/v1";
/// Followed by `{clusterId}/persona-access-controls/v1`; see [`list_path`].
pub const LIST_PATH_PREFIX: &str = "/cluster-management/v2/data-sources/mcp_gateway_cluster/";
/// Followed by `/{clusterId}`; see [`cluster_path`].
pub const CLUSTERS_PATH: &str =
    "/cluster-management/v2/resources/applications/mcp-gateway/clusters/v1";
const LIST_SUFFIX: &str = "/persona-access-controls/v1";

pub const RUNNING: &str = "RUNNING";
pub const NO_OPERATION: &str = "NO_OPERATION";

pub fn list_path(cluster_id: &str) -> String {
    format!("{LIST_PATH_PREFIX}{cluster_id}{LIST_SUFFIX}")
}

pub fn cluster_path(cluster_id: &str) -> String {
    format!("{CLUSTERS_PATH}/{cluster_id}")
}

/// `CONTROLS_PATH/{id}` with the id percent-encoded as one path segment.
pub fn control_path(id: &str) -> String {
    let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
    format!("{CONTROLS_PATH}/{id}")
}

/// `Fault::legacy(code, message)`: a `Fault::Status` with the legacy
/// `{"error": message}` body (bring this trait into scope to use it).
pub trait LegacyFault {
    fn legacy(code: u16, message: &str) -> Self;
}

impl LegacyFault for Fault {
    fn legacy(code: u16, message: &str) -> Self {
        Fault::Status {
            code,
            retry_after: None,
            retry_after_ms: None,
            body: Some(json!({ "error": message })),
        }
    }
}

/// Handle to a running fake; the server task is aborted on drop.
pub struct FakeInstaclustr {
    http: FakeServer<Inner>,
}

/// The request log and fault controls (`requests`, `count`, `fail_next`, `set_chaos`, …)
/// are the shared [`FakeServer`]'s.
impl std::ops::Deref for FakeInstaclustr {
    type Target = FakeServer<Inner>;

    fn deref(&self) -> &Self::Target {
        &self.http
    }
}

impl FakeInstaclustr {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> Self {
        Self {
            http: FakeServer::start(Inner::default()).await,
        }
    }

    /// Locks the state after applying every pending change that is due.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut s = self.http.state();
        s.settle();
        s
    }

    /// e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.http.base_url()
    }

    /// Adds a read-write API key to the account `username` (created if new).
    pub fn add_account(&self, username: &str, api_key: &str) {
        let mut s = self.lock();
        let keys = s.accounts.entry(username.into()).or_default();
        keys.insert(api_key.into(), false);
    }

    /// Adds a key that may only GET; it shares the account's rate limit.
    pub fn add_read_only_key(&self, username: &str, api_key: &str) {
        let mut s = self.lock();
        let keys = s.accounts.entry(username.into()).or_default();
        keys.insert(api_key.into(), true);
    }

    /// Registers a virtual server of a gateway cluster; the cluster is created as
    /// RUNNING + NO_OPERATION if unknown.
    pub fn add_virtual_server(&self, cluster_id: &str, virtual_server_id: &str) {
        let mut s = self.lock();
        s.cluster_entry(cluster_id);
        s.virtual_servers
            .insert(virtual_server_id.into(), cluster_id.into());
    }

    /// Sets `status` / `currentClusterOperationStatus` (creates the cluster if unknown).
    pub fn set_cluster_state(&self, cluster_id: &str, status: &str, op_status: &str) {
        *self.lock().cluster_entry(cluster_id) = (status.into(), op_status.into());
    }

    /// Control writes rejected because their cluster was not RUNNING + NO_OPERATION.
    pub fn writes_while_not_running(&self) -> usize {
        self.lock().writes_while_not_running
    }

    /// How long accepted writes stay invisible to GET/list (default 0). Applies to
    /// writes accepted from now on.
    pub fn set_visibility_delay(&self, delay: Duration) {
        self.lock().visibility_delay = delay;
    }

    /// Whether DELETE sees only visible objects (a 404 for a create accepted but not
    /// visible yet), as a gateway might; by default it sees every accepted write. The
    /// contract leaves this open, so the operator must be right either way.
    pub fn set_delete_sees_only_visible(&self, only_visible: bool) {
        self.lock().delete_sees_only_visible = only_visible;
    }

    /// At most `max_requests` admitted requests per account in any sliding `window`.
    pub fn set_rate_limit(&self, max_requests: usize, window: Duration) {
        self.lock().rate_limit = Some((max_requests, window));
    }

    pub fn clear_rate_limit(&self) {
        let mut s = self.lock();
        s.rate_limit = None;
        s.admitted.clear();
    }

    /// The most requests (all accounts, any outcome) that arrived within any `window`.
    pub fn max_requests_in_window(&self, window: Duration) -> usize {
        let mut at: Vec<Instant> = self.requests().iter().map(|r| r.at).collect();
        at.sort();
        let mut start = 0;
        let mut best = 0;
        for end in 0..at.len() {
            while start <= end && at[end].duration_since(at[start]) >= window {
                start += 1;
            }
            best = best.max(end + 1 - start);
        }
        best
    }

    /// Inserts a control as-is (no validation), immediately visible. Fills `id` from
    /// `virtualServerId` and `personaRole`, `clusterId` from the registered virtual
    /// server, and `tools: []`. Panics if the id is taken or the cluster is unknown.
    pub fn seed_control(&self, mut control: Value) -> String {
        let mut s = self.lock();
        let obj = control
            .as_object_mut()
            .expect("seed_control needs a JSON object");
        let vs = obj["virtualServerId"].as_str().expect("virtualServerId");
        let id = format!("{vs}_{}", obj["personaRole"].as_str().expect("personaRole"));
        let cluster = s.virtual_servers.get(vs).cloned();
        let cluster = cluster
            .map(Value::from)
            .or_else(|| obj.get("clusterId").cloned())
            .expect("unknown virtual server and no clusterId");
        assert!(s.accepted(&id).is_none(), "control {id} already exists");
        obj.insert("id".into(), id.clone().into());
        obj.insert("clusterId".into(), cluster);
        obj.entry("tools").or_insert(json!([]));
        s.controls.insert(id.clone(), control);
        id
    }

    /// The visible state of a control.
    pub fn control(&self, id: &str) -> Option<Value> {
        self.lock().controls.get(id).cloned()
    }

    /// Visible controls of one gateway cluster, ordered by id.
    pub fn controls(&self, cluster_id: &str) -> Vec<Value> {
        self.lock().visible_in(cluster_id)
    }

    /// Mutates a visible control in place (drift made in the console), immediately
    /// visible. Pending changes to it still apply later. Panics if absent.
    pub fn edit_control(&self, id: &str, f: impl FnOnce(&mut Value)) {
        let mut s = self.lock();
        f(s.controls
            .get_mut(id)
            .unwrap_or_else(|| panic!("no control {id}")));
    }

    /// Removes a visible control behind the client's back. Panics if absent.
    pub fn delete_control_directly(&self, id: &str) {
        let removed = self.lock().controls.remove(id);
        assert!(removed.is_some(), "no control {id}");
    }

    /// When each control's visible state became visible: the instant its latest write
    /// accepted through the API became due (whether or not anything read it then).
    /// Seeded and directly edited controls are not in it.
    pub fn visible_since(&self) -> HashMap<String, Instant> {
        self.lock().visible_since.clone()
    }

    /// Writes accepted but not visible yet.
    pub fn pending_changes(&self) -> usize {
        self.lock().pending.len()
    }

    /// Recorded POST/PUT/DELETE requests to persona access controls, whatever their
    /// outcome.
    pub fn writes(&self) -> usize {
        ["POST", "PUT", "DELETE"]
            .iter()
            .map(|m| self.count(m, CONTROLS_PATH))
            .sum()
    }

    /// Recorded list requests for this cluster, whatever their outcome.
    pub fn list_calls(&self, cluster_id: &str) -> usize {
        let path = list_path(cluster_id);
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == path)
            .count()
    }

    /// Recorded per-object GETs of controls, whatever their outcome.
    pub fn get_calls(&self) -> usize {
        self.count("GET", &format!("{CONTROLS_PATH}/"))
    }
}

// ---------------------------------------------------------------------------------
// Request handling (logging and faults are done by `fake_http`).

const BODY_FIELDS: &[&str] = &["virtualServerId", "type", "personaRole", "tools"];

/// A handler's success status and JSON body (`Null` = no body), or an error response.
type Reply = Result<(u16, Value), ApiError>;

struct ApiError {
    status: u16,
    body: Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        reply(self.status, self.body)
    }
}

/// A write accepted with 202/204 that becomes visible at `at`.
struct Pending {
    at: Instant,
    id: String,
    /// The new object, or `None` for a delete.
    value: Option<Value>,
}

#[derive(Default)]
pub struct Inner {
    /// username -> api key -> read-only
    accounts: HashMap<String, HashMap<String, bool>>,
    /// cluster id -> (status, currentClusterOperationStatus)
    clusters: BTreeMap<String, (String, String)>,
    /// virtual server id -> cluster id
    virtual_servers: HashMap<String, String>,
    /// The visible state, by id.
    controls: BTreeMap<String, Value>,
    /// In acceptance order; per id, `at` never decreases.
    pending: Vec<Pending>,
    visibility_delay: Duration,
    delete_sees_only_visible: bool,
    /// id -> when its latest accepted write became visible (see `visible_since`).
    visible_since: HashMap<String, Instant>,
    writes_while_not_running: usize,
    rate_limit: Option<(usize, Duration)>,
    /// username -> arrival times of admitted requests within the window
    admitted: HashMap<String, VecDeque<Instant>>,
}

impl Backend for Inner {
    /// No form-encoded token endpoint: every body is logged as JSON (or lossy text).
    const TOKEN_PATH: &'static str = "";

    fn serve(&mut self, req: &Req) -> Response {
        self.settle();
        Inner::serve(self, req)
    }

    fn fault_body(status: u16) -> Value {
        default_error(status, "injected fault").body
    }
}

impl Inner {
    fn serve(&mut self, req: &Req) -> Response {
        let result = self.admit(req).and_then(|()| self.route(req));
        match result {
            Ok((status, Value::Null)) => StatusCode::from_u16(status)
                .expect("valid status code")
                .into_response(),
            Ok((status, body)) => reply(status, body),
            Err(e) => e.into_response(),
        }
    }

    /// Authentication, then the account's rate limit, then read-only keys.
    fn admit(&mut self, req: &Req) -> Result<(), ApiError> {
        let creds = auth_param(&req.headers, "Basic")
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let (user, read_only) = creds
            .as_deref()
            .and_then(|c| c.split_once(':'))
            .and_then(|(user, key)| Some((user, *self.accounts.get(user)?.get(key)?)))
            .ok_or_else(|| named(401, "Unauthorized", "invalid or missing credentials"))?;
        if let Some((max, window)) = self.rate_limit {
            let now = Instant::now();
            let admitted = self.admitted.entry(user.into()).or_default();
            while admitted
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
            {
                admitted.pop_front();
            }
            if admitted.len() >= max {
                return Err(named(429, "TooManyRequests", "Rate Limit Exceeded"));
            }
            admitted.push_back(now);
        }
        if read_only && req.method != "GET" {
            return Err(named(403, "Forbidden", "read-only API key"));
        }
        Ok(())
    }

    fn route(&mut self, req: &Req) -> Reply {
        let no_route = || legacy(404, format!("no route {} {}", req.method, req.path));
        let method = req.method.as_str();
        if !is_json(&req.headers) {
            let msg = "Content-Type must be application/json";
            return Err(named(415, "UnsupportedMediaType", msg));
        }
        if let Some(rest) = req.path.strip_prefix(CONTROLS_PATH) {
            let id = match rest.strip_prefix('/') {
                None if rest.is_empty() => None,
                // One segment (a '/' in an id must be encoded), percent-decoded.
                Some(seg) if !seg.is_empty() && !seg.contains('/') => Some(
                    percent_encoding::percent_decode_str(seg)
                        .decode_utf8()
                        .map_err(|_| no_route())?
                        .into_owned(),
                ),
                _ => return Err(no_route()),
            };
            return match (method, id) {
                ("POST", None) => self.create(req),
                ("GET", Some(id)) => self.get(&id),
                ("PUT", Some(id)) => self.update(&id, req),
                ("DELETE", Some(id)) => self.delete(&id),
                _ => Err(legacy(405, "method not allowed")),
            };
        }
        if let Some(cluster) = req
            .path
            .strip_prefix(LIST_PATH_PREFIX)
            .and_then(|r| r.strip_suffix(LIST_SUFFIX))
            .filter(|c| !c.contains('/'))
        {
            if method != "GET" {
                return Err(legacy(405, "method not allowed"));
            }
            self.cluster(cluster)?;
            return Ok((200, self.visible_in(cluster).into()));
        }
        if let Some(cluster) = req
            .path
            .strip_prefix(CLUSTERS_PATH)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|c| !c.contains('/'))
        {
            if method != "GET" {
                return Err(legacy(405, "method not allowed"));
            }
            let (status, op) = self.cluster(cluster)?;
            return Ok((
                200,
                json!({"id": cluster, "name": format!("gateway-{cluster}"),
                "status": status, "currentClusterOperationStatus": op}),
            ));
        }
        Err(no_route())
    }

    fn create(&mut self, req: &Req) -> Reply {
        let body = parse_body(req)?;
        let vs = body["virtualServerId"].as_str().unwrap_or_default();
        let cluster = self
            .virtual_servers
            .get(vs)
            .cloned()
            .ok_or_else(|| invalid("virtualServerId", "virtual server not found"))?;
        self.check_running(&cluster)?;
        let id = format!("{vs}_{}", body["personaRole"].as_str().unwrap_or_default());
        if self.accepted(&id).is_some() {
            let msg = format!("persona access control {id} already exists");
            return Err(named(409, "Conflict", msg));
        }
        let control = control_value(&id, &cluster, body);
        self.accept(&id, Some(control.clone()));
        Ok((202, control))
    }

    /// Reads see only the visible state.
    fn get(&self, id: &str) -> Reply {
        let control = self.controls.get(id).ok_or_else(|| not_found(id))?;
        Ok((200, control.clone()))
    }

    fn update(&mut self, id: &str, req: &Req) -> Reply {
        let old = self.accepted(id).ok_or_else(|| not_found(id))?.clone();
        let body = parse_body(req)?;
        for field in ["virtualServerId", "personaRole"] {
            if body[field] != old[field] {
                return Err(invalid(field, "is immutable"));
            }
        }
        let cluster = old["clusterId"].as_str().unwrap_or_default().to_string();
        self.check_running(&cluster)?;
        let control = control_value(id, &cluster, body);
        self.accept(id, Some(control.clone()));
        Ok((202, control))
    }

    fn delete(&mut self, id: &str) -> Reply {
        if self.delete_sees_only_visible && !self.controls.contains_key(id) {
            return Err(not_found(id));
        }
        let old = self.accepted(id).ok_or_else(|| not_found(id))?;
        let cluster = old["clusterId"].as_str().unwrap_or_default().to_string();
        self.check_running(&cluster)?;
        self.accept(id, None);
        Ok((204, Value::Null))
    }

    /// The contract forbids writes unless RUNNING + NO_OPERATION; count violations.
    fn check_running(&mut self, cluster: &str) -> Result<(), ApiError> {
        let (status, op) = self.cluster(cluster)?;
        if status == RUNNING && op == NO_OPERATION {
            return Ok(());
        }
        self.writes_while_not_running += 1;
        Err(invalid("cluster", "cluster is not running"))
    }

    fn cluster(&self, id: &str) -> Result<(String, String), ApiError> {
        let msg = || format!("MCP Gateway cluster {id} not found");
        self.clusters
            .get(id)
            .cloned()
            .ok_or_else(|| named(404, "NotFound", msg()))
    }

    fn cluster_entry(&mut self, id: &str) -> &mut (String, String) {
        self.clusters
            .entry(id.into())
            .or_insert_with(|| (RUNNING.into(), NO_OPERATION.into()))
    }

    fn visible_in(&self, cluster: &str) -> Vec<Value> {
        let controls = self.controls.values();
        controls
            .filter(|c| c["clusterId"] == cluster)
            .cloned()
            .collect()
    }

    /// The state after every accepted write, visible or not.
    fn accepted(&self, id: &str) -> Option<&Value> {
        match self.pending.iter().rev().find(|p| p.id == id) {
            Some(p) => p.value.as_ref(),
            None => self.controls.get(id),
        }
    }

    fn accept(&mut self, id: &str, value: Option<Value>) {
        // Never let a later write to the same id overtake an earlier one.
        let earlier = self
            .pending
            .iter()
            .filter(|p| p.id == id)
            .map(|p| p.at)
            .max();
        let at = (Instant::now() + self.visibility_delay).max(earlier.unwrap_or(Instant::now()));
        self.pending.push(Pending {
            at,
            id: id.into(),
            value,
        });
        self.settle();
    }

    /// Applies every pending change that is due, in acceptance order.
    fn settle(&mut self) {
        let now = Instant::now();
        let controls = &mut self.controls;
        let visible_since = &mut self.visible_since;
        self.pending.retain_mut(|p| {
            if p.at > now {
                return true;
            }
            match p.value.take() {
                Some(v) => {
                    visible_since.insert(p.id.clone(), p.at);
                    controls.insert(p.id.clone(), v)
                }
                None => {
                    visible_since.remove(&p.id);
                    controls.remove(&p.id)
                }
            };
            false
        });
    }
}

// ---------------------------------------------------------------------------------
// Body validation.

/// Validates a create/update body, collecting one error per bad field.
fn parse_body(req: &Req) -> Result<Map<String, Value>, ApiError> {
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| invalid("body", format!("request body is not valid JSON: {e}")))?;
    let Value::Object(body) = body else {
        return Err(invalid("body", "must be a JSON object"));
    };
    let mut errors = Vec::new();
    let mut bad =
        |name: &str, message: &str| errors.push(json!({"name": name, "message": message}));
    for k in body.keys().filter(|k| !BODY_FIELDS.contains(&k.as_str())) {
        bad(k, "unknown field");
    }
    if !body
        .get("virtualServerId")
        .and_then(Value::as_str)
        .is_some_and(is_uuid)
    {
        bad("virtualServerId", "must be a uuid");
    }
    if !matches!(
        body.get("type").and_then(Value::as_str),
        Some("ALLOWLIST" | "DENYLIST")
    ) {
        bad("type", "must be one of ALLOWLIST, DENYLIST");
    }
    let role = body.get("personaRole").and_then(Value::as_str);
    if !role.is_some_and(|r| !r.is_empty() && !r.contains(['"', '\'', '\\'])) {
        bad("personaRole", "must be non-empty and match [^\"'\\\\]+");
    }
    let tools_ok = match body.get("tools") {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.iter().all(|t| t.as_str().is_some_and(is_uuid)),
        Some(_) => false,
    };
    if !tools_ok {
        bad("tools", "must be an array of uuids");
    }
    if errors.is_empty() {
        Ok(body)
    } else {
        Err(ApiError {
            status: 400,
            body: json!({ "errors": errors }),
        })
    }
}

/// The stored/echoed object; `tools` reversed (see module docs).
fn control_value(id: &str, cluster: &str, body: Map<String, Value>) -> Value {
    let mut tools = body
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    tools.reverse();
    json!({"id": id, "clusterId": cluster, "virtualServerId": body["virtualServerId"],
           "type": body["type"], "personaRole": body["personaRole"], "tools": tools})
}

/// 8-4-4-4-12 hex digits, either case.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

// ---------------------------------------------------------------------------------
// Small helpers.

fn is_json(headers: &HeaderMap) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    ct.is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/json")
    })
}

/// The 401/403/404/409/429/5xx shape.
fn named(status: u16, name: &str, message: impl Into<String>) -> ApiError {
    let body = json!({"name": name, "message": message.into()});
    ApiError { status, body }
}

/// The 400 shape.
fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    let body = json!({"errors": [{"name": field, "message": message.into()}]});
    ApiError { status: 400, body }
}

fn legacy(status: u16, message: impl Into<String>) -> ApiError {
    let body = json!({ "error": message.into() });
    ApiError { status, body }
}

fn not_found(id: &str) -> ApiError {
    named(
        404,
        "NotFound",
        format!("persona access control {id} not found"),
    )
}

/// The documented shape that fits `status`, for injected faults.
fn default_error(status: u16, message: &str) -> ApiError {
    let name = match status {
        400 => return invalid("fault", message),
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        429 => "TooManyRequests",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        _ => "InternalServerError",
    };
    named(status, name, message)
}
