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
    collections::{HashMap, VecDeque},
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{ConnectInfo, Request, State, connect_info::Connected},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    serve::{IncomingStream, Listener},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use serde_json::{Map, Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

pub const TOKEN_PATH: &str = "/v2/auth/token";
pub const PROFILES_PATH: &str = "/v2/access-profiles";
pub const MATCH_TYPE_UNSPECIFIED: &str = "ACCESS_PROFILE_GROUP_MATCH_TYPE_UNSPECIFIED";

/// One request as the server saw it. `status` is 0 when the connection was dropped
/// without a response. The log is in completion order; `at` is the arrival time.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// JSON body; token requests record their form fields as a JSON object.
    pub body: Option<Value>,
    pub at: Instant,
    pub status: u16,
}

/// Which requests a fault applies to; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct FaultMatch {
    pub method: Option<String>,
    pub path_prefix: Option<String>,
}

impl FaultMatch {
    pub fn new(method: &str, path_prefix: &str) -> Self {
        Self {
            method: Some(method.into()),
            path_prefix: Some(path_prefix.into()),
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status instead of serving (nothing is applied). `body: None`
    /// gives a Connect error body whose `code` fits the status.
    Status {
        code: u16,
        retry_after: Option<String>,
        retry_after_ms: Option<u64>,
        body: Option<Value>,
    },
    /// Delay, then serve normally.
    Latency(Duration),
    /// Apply the operation, then close the connection without a response.
    ApplyThenDropConnection,
    /// Close the connection without applying anything.
    DropConnection,
}

impl Fault {
    /// `Fault::Status` with a default body and no Retry-After headers.
    pub fn status(code: u16) -> Self {
        Fault::Status {
            code,
            retry_after: None,
            retry_after_ms: None,
            body: None,
        }
    }
}

/// Handle to a running fake; the server task is aborted on drop.
pub struct FakeServal {
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Drop for FakeServal {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeServal {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Mutex::new(Inner {
            token_ttl: Duration::from_secs(3600),
            ..Inner::default()
        }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let make = app.into_make_service_with_connect_info::<KillSwitch>();
        let server = tokio::spawn(async move {
            axum::serve(KillableListener(listener), make)
                .await
                .expect("fake serval server");
        });
        Self {
            inner,
            addr,
            server,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
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

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Recorded requests with this method (case-insensitive) whose path starts with
    /// `path_prefix`, whatever their outcome.
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        let m = FaultMatch::new(method, path_prefix);
        let s = self.lock();
        s.requests
            .iter()
            .filter(|r| m.matches(&r.method, &r.path))
            .count()
    }

    /// Recorded POST/PUT/DELETE requests to /v2/access-profiles, whatever their outcome.
    pub fn writes(&self) -> usize {
        ["POST", "PUT", "DELETE"]
            .iter()
            .map(|m| self.count(m, PROFILES_PATH))
            .sum()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Queues a fault; each request consumes the first queued fault it matches.
    pub fn push_fault(&self, matcher: FaultMatch, fault: Fault) {
        self.lock().faults.push_back((matcher, fault));
    }

    /// The next `times` matching requests get `code` with a default Connect error body.
    pub fn fail_next(&self, method: &str, path_prefix: &str, code: u16, times: usize) {
        for _ in 0..times {
            self.push_fault(FaultMatch::new(method, path_prefix), Fault::status(code));
        }
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Extra delay before every request (on top of any `Fault::Latency`).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }
}

// ---------------------------------------------------------------------------------
// Connection killing: hyper always writes *some* response, so to make the client see a
// transport failure we fail the socket's writes, which makes hyper drop the connection
// before a single response byte goes out.

#[derive(Clone, Default)]
struct KillSwitch(Arc<AtomicBool>);

struct KillableListener(TcpListener);

struct KillableIo {
    io: TcpStream,
    kill: KillSwitch,
}

impl Listener for KillableListener {
    type Io = KillableIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (KillableIo, SocketAddr) {
        loop {
            if let Ok((io, addr)) = self.0.accept().await {
                let kill = KillSwitch::default();
                return (KillableIo { io, kill }, addr);
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for KillSwitch {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.io().kill.clone()
    }
}

impl AsyncRead for KillableIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.kill.0.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------
// Request handling. Everything goes through one fallback handler so that every request
// (including unknown routes) is logged and subject to faults.

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
struct Inner {
    clients: HashMap<String, String>,
    token_ttl: Duration,
    /// token -> expiry (`None` = never expires)
    tokens: HashMap<String, Option<Instant>>,
    token_exchanges: usize,
    /// Creation order, which is also list order.
    profiles: Vec<Value>,
    last_id: u64,
    created: u64,
    requests: Vec<Recorded>,
    faults: VecDeque<(FaultMatch, Fault)>,
    latency: Duration,
}

struct Req {
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, req: Request) -> Response {
    let at = Instant::now();
    let kill = req.extensions().get::<ConnectInfo<KillSwitch>>().cloned();
    let (parts, body) = req.into_parts();
    let req = Req {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body: axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default(),
    };
    let lock = || inner.lock().unwrap_or_else(PoisonError::into_inner);

    let (mut delay, fault) = {
        let mut s = lock();
        let i = s
            .faults
            .iter()
            .position(|(m, _)| m.matches(&req.method, &req.path));
        (
            s.latency,
            i.and_then(|i| s.faults.remove(i)).map(|(_, f)| f),
        )
    };
    if let Some(Fault::Latency(d)) = &fault {
        delay += *d;
    }
    tokio::time::sleep(delay).await;

    let mut s = lock();
    let response = match fault {
        Some(Fault::Status {
            code,
            retry_after,
            retry_after_ms,
            body,
        }) => {
            let mut r = match body {
                Some(body) => reply(code, body),
                None => error(code, default_code(code), "injected fault").into_response(),
            };
            let headers = r.headers_mut();
            for (name, value) in [
                ("retry-after", retry_after),
                ("retry-after-ms", retry_after_ms.map(|ms| ms.to_string())),
            ] {
                if let Some(v) = value {
                    headers.insert(name, HeaderValue::from_str(&v).expect("header value"));
                }
            }
            Some(r)
        }
        Some(Fault::DropConnection) => None,
        Some(Fault::ApplyThenDropConnection) => {
            s.serve(&req);
            None
        }
        Some(Fault::Latency(_)) | None => Some(s.serve(&req)),
    };
    s.requests.push(Recorded {
        status: response.as_ref().map_or(0, |r| r.status().as_u16()),
        body: recorded_body(&req),
        method: req.method,
        path: req.path,
        query: req.query,
        at,
    });
    response.unwrap_or_else(|| {
        let ConnectInfo(kill) = kill.expect("served via KillableListener");
        kill.0.store(true, Ordering::SeqCst);
        StatusCode::INTERNAL_SERVER_ERROR.into_response() // never reaches the client
    })
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

/// The credentials of an `Authorization: <scheme> <param>` header (scheme case-insensitive).
fn auth_param<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (s, param) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| param.trim())
}

fn reply(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).expect("valid status code");
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

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

/// Never logs credentials: token requests keep only their form fields, minus any secret.
fn recorded_body(req: &Req) -> Option<Value> {
    if req.body.is_empty() {
        return None;
    }
    if req.path == TOKEN_PATH {
        let fields = url::form_urlencoded::parse(&req.body).map(|(k, v)| {
            let v = if k == "client_secret" {
                "<redacted>".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), Value::String(v))
        });
        return Some(Value::Object(fields.collect()));
    }
    Some(
        serde_json::from_slice(&req.body)
            .unwrap_or_else(|_| String::from_utf8_lossy(&req.body).into_owned().into()),
    )
}
