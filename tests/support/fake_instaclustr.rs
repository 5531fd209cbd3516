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
//! - Unknown body fields (including read-only `id`/`clusterId`) give 400; POST/PUT
//!   without `Content-Type: application/json` give 415.
//! - Unknown clusters (list/status) give 404; unknown routes and wrong methods answer
//!   with the legacy `{"error": "..."}` shape.
//! - The rate limiter counts only admitted requests (a 429 does not extend the
//!   penalty); unauthenticated and faulted requests are not counted.
//! - A `/` in an id must be percent-encoded: the id is exactly one path segment.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
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
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Map, Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

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

/// One request as the server saw it. `status` is 0 when the connection was dropped
/// without a response. The log is in completion order; `at` is the arrival time.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Raw (still percent-encoded) path.
    pub path: String,
    pub query: Option<String>,
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
    /// gives the Instaclustr error shape that fits the status.
    Status {
        code: u16,
        retry_after: Option<String>,
        /// Not an Instaclustr header; kept so the `Fault` shape matches other fakes.
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
    /// `Fault::Status` with a default body and no Retry-After header.
    pub fn status(code: u16) -> Self {
        Fault::Status {
            code,
            retry_after: None,
            retry_after_ms: None,
            body: None,
        }
    }

    /// `Fault::Status` with the legacy `{"error": message}` body.
    pub fn legacy(code: u16, message: &str) -> Self {
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
    inner: Arc<Mutex<Inner>>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Drop for FakeInstaclustr {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeInstaclustr {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let make = app.into_make_service_with_connect_info::<KillSwitch>();
        let server = tokio::spawn(async move {
            axum::serve(KillableListener(listener), make)
                .await
                .expect("fake instaclustr server");
        });
        Self {
            inner,
            addr,
            server,
        }
    }

    /// Locks the state after applying every pending change that is due.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        s.settle();
        s
    }

    /// e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
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
        let mut at: Vec<Instant> = self.lock().requests.iter().map(|r| r.at).collect();
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

    /// Writes accepted but not visible yet.
    pub fn pending_changes(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Recorded requests with this method (case-insensitive) whose raw path starts
    /// with `path_prefix`, whatever their outcome.
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        let m = FaultMatch::new(method, path_prefix);
        let s = self.lock();
        s.requests
            .iter()
            .filter(|r| m.matches(&r.method, &r.path))
            .count()
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
        let s = self.lock();
        s.requests
            .iter()
            .filter(|r| r.method == "GET" && r.path == path)
            .count()
    }

    /// Recorded per-object GETs of controls, whatever their outcome.
    pub fn get_calls(&self) -> usize {
        self.count("GET", &format!("{CONTROLS_PATH}/"))
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Queues a fault; each request consumes the first queued fault it matches.
    pub fn push_fault(&self, matcher: FaultMatch, fault: Fault) {
        self.lock().faults.push_back((matcher, fault));
    }

    /// The next `times` matching requests get `code` with a default error body.
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
struct Inner {
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
    writes_while_not_running: usize,
    rate_limit: Option<(usize, Duration)>,
    /// username -> arrival times of admitted requests within the window
    admitted: HashMap<String, VecDeque<Instant>>,
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
    s.settle();
    let response = match fault {
        Some(Fault::Status {
            code,
            retry_after,
            retry_after_ms,
            body,
        }) => {
            let mut r = match body {
                Some(body) => reply(code, body),
                None => default_error(code, "injected fault").into_response(),
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
            if matches!(method, "POST" | "PUT") && !is_json(&req.headers) {
                let msg = "Content-Type must be application/json";
                return Err(named(415, "UnsupportedMediaType", msg));
            }
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
        self.pending.retain_mut(|p| {
            if p.at > now {
                return true;
            }
            match p.value.take() {
                Some(v) => controls.insert(p.id.clone(), v),
                None => controls.remove(&p.id),
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

/// The credentials of an `Authorization: <scheme> <param>` header (scheme case-insensitive).
fn auth_param<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (s, param) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| param.trim())
}

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

fn reply(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).expect("valid status code");
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
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

/// Never logs credentials: only the JSON (or lossy text) body is kept.
fn recorded_body(req: &Req) -> Option<Value> {
    if req.body.is_empty() {
        return None;
    }
    Some(
        serde_json::from_slice(&req.body)
            .unwrap_or_else(|_| String::from_utf8_lossy(&req.body).into_owned().into()),
    )
}
