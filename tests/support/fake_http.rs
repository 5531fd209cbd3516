//! Plumbing shared by the fake upstream servers: an axum server on 127.0.0.1:0 whose
//! single fallback handler logs every request and applies queued faults (including
//! dropping the connection after or instead of applying the operation) before handing
//! the request to an upstream-specific [`Backend`].
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
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// One request as the server saw it. `status` is 0 when the connection was dropped
/// without a response. The log is in completion order; `at` is the arrival time.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// JSON body; token requests record their form fields (minus secrets) as a JSON object.
    pub body: Option<Value>,
    pub at: Instant,
    pub status: u16,
}

/// Which requests a fault applies to; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct FaultMatch {
    pub method: Option<String>,
    pub path_prefix: Option<String>,
    /// Match this path only, not the paths under it.
    pub exact: bool,
}

impl FaultMatch {
    pub fn new(method: &str, path_prefix: &str) -> Self {
        Self {
            method: Some(method.into()),
            path_prefix: Some(path_prefix.into()),
            exact: false,
        }
    }

    /// Requests to exactly this path (a collection, not its items).
    pub fn exactly(method: &str, path: &str) -> Self {
        Self {
            exact: true,
            ..Self::new(method, path)
        }
    }

    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| match self.exact {
                    true => path == p,
                    false => path.starts_with(p),
                })
    }
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status instead of serving (nothing is applied). `body: None`
    /// gives the upstream's usual error body with a code that fits the status.
    Status {
        code: u16,
        retry_after: Option<String>,
        retry_after_ms: Option<u64>,
        body: Option<Value>,
    },
    /// Delay, then serve normally.
    Latency(Duration),
    /// Serve (apply) at once, but hold the response back this long: a client that gives
    /// up before then does not learn the outcome.
    ApplyThenLatency(Duration),
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

/// A request with its body read in full.
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// Query parameters (last one wins).
    pub fn query_map(&self) -> HashMap<String, String> {
        let query = self.query.as_deref().unwrap_or_default().as_bytes();
        url::form_urlencoded::parse(query).into_owned().collect()
    }

    /// Form-encoded body fields (last one wins).
    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

/// The upstream-specific half of a fake.
pub trait Backend: Send + 'static {
    /// Form-encoded token endpoint: its secret fields are redacted from the log.
    /// `""` if the upstream has none (every body is then logged as JSON or text).
    const TOKEN_PATH: &'static str;

    /// Sees every request as it arrives, before any fault: for checks of what clients send.
    fn receive(&mut self, _req: &Req) {}

    /// Serves a request that no `Fault::Status`/`DropConnection` intercepted.
    fn serve(&mut self, req: &Req) -> Response;

    /// Body of a `Fault::Status { body: None, .. }` answer.
    fn fault_body(status: u16) -> Value;
}

#[derive(Default)]
struct Log {
    requests: Vec<Recorded>,
    faults: VecDeque<(FaultMatch, Fault)>,
    latency: Duration,
    chaos: Option<Chaos>,
}

/// Seeded random faults: each request not caught by a queued fault gets, with
/// probability `rate`, one of `faults` picked uniformly.
struct Chaos {
    rate: f64,
    faults: Vec<Fault>,
    rng: StdRng,
    injected: usize,
}

impl Chaos {
    fn pick(&mut self) -> Option<Fault> {
        if self.faults.is_empty() || !self.rng.random_bool(self.rate) {
            return None;
        }
        self.injected += 1;
        let i = self.rng.random_range(0..self.faults.len());
        Some(self.faults[i].clone())
    }
}

struct Shared<B> {
    backend: Mutex<B>,
    log: Mutex<Log>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake server; the server task is aborted on drop.
pub struct FakeServer<B> {
    shared: Arc<Shared<B>>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl<B> Drop for FakeServer<B> {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl<B: Backend> FakeServer<B> {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start(backend: B) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            backend: Mutex::new(backend),
            log: Mutex::default(),
        });
        let app = Router::new()
            .fallback(handle::<B>)
            .with_state(shared.clone());
        let make = app.into_make_service_with_connect_info::<KillSwitch>();
        let server = tokio::spawn(async move {
            axum::serve(KillableListener(listener), make)
                .await
                .expect("fake server");
        });
        Self {
            shared,
            addr,
            server,
        }
    }

    /// The backend's state, for seeding and inspection.
    pub fn state(&self) -> MutexGuard<'_, B> {
        lock(&self.shared.backend)
    }

    /// e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.log).requests.clone()
    }

    /// Recorded requests with this method (case-insensitive) whose path starts with
    /// `path_prefix`, whatever their outcome.
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        let m = FaultMatch::new(method, path_prefix);
        let log = lock(&self.shared.log);
        let hits = log
            .requests
            .iter()
            .filter(|r| m.matches(&r.method, &r.path));
        hits.count()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.log).requests.clear();
    }

    /// Queues a fault; each request consumes the first queued fault it matches.
    pub fn push_fault(&self, matcher: FaultMatch, fault: Fault) {
        lock(&self.shared.log).faults.push_back((matcher, fault));
    }

    /// The next `times` matching requests get `code` with the default error body.
    pub fn fail_next(&self, method: &str, path_prefix: &str, code: u16, times: usize) {
        for _ in 0..times {
            self.push_fault(FaultMatch::new(method, path_prefix), Fault::status(code));
        }
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.log).faults.clear();
    }

    /// Extra delay before every request (on top of any `Fault::Latency`).
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared.log).latency = latency;
    }

    /// From now on a fraction `rate` of the requests (chosen by an RNG seeded with
    /// `seed`) get one of `faults`; queued faults still come first. `rate` 0 turns it off.
    pub fn set_chaos(&self, rate: f64, faults: Vec<Fault>, seed: u64) {
        lock(&self.shared.log).chaos = (rate > 0.0).then(|| Chaos {
            rate: rate.min(1.0),
            faults,
            rng: StdRng::seed_from_u64(seed),
            injected: 0,
        });
    }

    /// Faults injected by the current chaos setting so far.
    pub fn chaos_injected(&self) -> usize {
        lock(&self.shared.log)
            .chaos
            .as_ref()
            .map_or(0, |c| c.injected)
    }
}

async fn handle<B: Backend>(State(shared): State<Arc<Shared<B>>>, req: Request) -> Response {
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

    lock(&shared.backend).receive(&req);
    let (mut delay, fault) = {
        let mut log = lock(&shared.log);
        let i = log
            .faults
            .iter()
            .position(|(m, _)| m.matches(&req.method, &req.path));
        let fault = i.and_then(|i| log.faults.remove(i)).map(|(_, f)| f);
        let fault = fault.or_else(|| log.chaos.as_mut().and_then(Chaos::pick));
        (log.latency, fault)
    };
    if let Some(Fault::Latency(d)) = &fault {
        delay += *d;
    }
    tokio::time::sleep(delay).await;

    let mut respond_after = Duration::ZERO;
    let response = {
        let mut backend = lock(&shared.backend);
        match fault {
            Some(Fault::Status {
                code,
                retry_after,
                retry_after_ms,
                body,
            }) => {
                let mut r = reply(code, body.unwrap_or_else(|| B::fault_body(code)));
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
                backend.serve(&req);
                None
            }
            Some(Fault::ApplyThenLatency(d)) => {
                respond_after = d;
                Some(backend.serve(&req))
            }
            Some(Fault::Latency(_)) | None => Some(backend.serve(&req)),
        }
    };
    lock(&shared.log).requests.push(Recorded {
        status: response.as_ref().map_or(0, |r| r.status().as_u16()),
        body: recorded_body(&req, B::TOKEN_PATH),
        method: req.method,
        path: req.path,
        query: req.query,
        at,
    });
    tokio::time::sleep(respond_after).await;
    response.unwrap_or_else(|| {
        let ConnectInfo(kill) = kill.expect("served via KillableListener");
        kill.0.store(true, Ordering::SeqCst);
        StatusCode::INTERNAL_SERVER_ERROR.into_response() // never reaches the client
    })
}

/// Never logs credentials: token requests keep only their form fields, minus secrets.
fn recorded_body(req: &Req, token_path: &str) -> Option<Value> {
    if req.body.is_empty() {
        return None;
    }
    if !token_path.is_empty() && req.path == token_path {
        let fields = url::form_urlencoded::parse(&req.body).map(|(k, v)| {
            let v = match &*k {
                "client_secret" | "client_assertion" => "<redacted>".into(),
                _ => v.into_owned(),
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

/// A JSON response.
pub fn reply(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).expect("valid status code");
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The credentials of an `Authorization: <scheme> <param>` header (scheme case-insensitive).
pub fn auth_param<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (s, param) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| param.trim())
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
