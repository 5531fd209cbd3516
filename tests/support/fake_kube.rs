//! A stateful, in-memory fake of the Kubernetes API server.
//!
//! `FakeKube` implements `tower::Service<http::Request<kube::client::Body>>`, so a real
//! `kube::Client` (and everything built on it: typed `Api<K>`, `kube::runtime::watcher`,
//! `finalizer`, `Recorder`) can run against it unchanged. Objects are stored as JSON,
//! keyed by (apiVersion, plural, namespace, name); routing is generic, so any resource
//! type works without registration.
//!
//! Modelled apiserver behaviour: uid/resourceVersion/creationTimestamp/generation
//! bookkeeping, optimistic concurrency (409), status subresources, merge/JSON/apply patches
//! (a failed JSON-patch `test` is a 422), no-op writes that neither bump the
//! resourceVersion nor emit watch events, finalizers and graceful deletion, list with label
//! and field selectors, watches resumable from any resourceVersion, and admission of
//! custom resources against their CRD (`fake_admission`: schema, CEL rules, unknown
//! fields as `fieldValidation` says). docs/src/development.md ("What the fake apiserver models") lists it
//! all, with the self-test of each.
#![allow(dead_code)] // each test binary uses a different subset of the helpers

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::fake_admission::{self, CrdSchema, FieldError, go_quote};

/// Response body type of the fake service.
pub type FakeBody = UnsyncBoxBody<Bytes, Infallible>;

/// One request as received by the fake (recorded before fault injection applies).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// URL path without the query string.
    pub path: String,
    /// Raw (still percent-encoded) query string, empty if none.
    pub query: String,
    pub content_type: Option<String>,
    /// Request body parsed as JSON (or YAML for apply patches); `None` if empty.
    pub body: Option<Value>,
    /// The `User-Agent` header, `None` if absent (a client with no identity).
    pub user_agent: Option<String>,
    /// `Warning` headers of the answer (e.g. `unknown field "spec.x"`, pruned).
    pub warnings: Vec<String>,
}

impl RecordedRequest {
    /// Decoded value of a query parameter.
    pub fn query_param(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// Handle to the fake apiserver; cheap to clone, all clones share state.
#[derive(Clone)]
pub struct FakeKube {
    state: Arc<Mutex<State>>,
}

impl Default for FakeKube {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeKube {
    pub fn new() -> Self {
        let state = State {
            objects: BTreeMap::new(),
            rv: 0,
            uids: 0,
            kinds: HashMap::new(),
            histories: HashMap::new(),
            history_limit: DEFAULT_WATCH_HISTORY,
            compacted: 0,
            watchers: Vec::new(),
            next_watcher: 0,
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            requests: Vec::new(),
            faults: Vec::new(),
            stalled: Vec::new(),
            held: Vec::new(),
            // CRDs themselves have a status subresource in the real apiserver too.
            status_groups: ["accessplane.io", "apiextensions.k8s.io"]
                .map(String::from)
                .into(),
            warnings: Vec::new(),
            crds_required: false,
            crd_cache: HashMap::new(),
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A real `kube::Client` talking to this fake, default namespace "default".
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Current stored object; `namespace` is "" for cluster-scoped objects.
    pub fn get(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        self.lock()
            .objects
            .get(&Key::new(api_version, plural, namespace, name))
            .cloned()
    }

    /// All stored objects of a resource, sorted by (namespace, name); `None` = all namespaces.
    pub fn list(&self, api_version: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let st = self.lock();
        st.select(api_version, plural, namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Seed or overwrite an object directly, bypassing admission (as only etcd access
    /// could: no schema, no CEL rules, no pruning; status is kept as given).
    /// The plural is guessed from `kind` (see [`guess_plural`]); use [`FakeKube::upsert`]
    /// for irregular plurals. Emits a watch event like a normal write and returns the stored
    /// object.
    pub fn put_object(&self, value: Value) -> Value {
        let kind = value["kind"].as_str().expect("put_object needs a kind");
        let plural = guess_plural(kind);
        self.upsert(&plural, value)
    }

    /// Like [`FakeKube::put_object`] with an explicit plural.
    pub fn upsert(&self, plural: &str, mut value: Value) -> Value {
        let mut st = self.lock();
        let api_version = value["apiVersion"]
            .as_str()
            .expect("upsert needs an apiVersion")
            .to_string();
        strip_nulls(&mut value);
        let key = Key::new(
            &api_version,
            plural,
            meta_str(&value, "namespace").unwrap_or(""),
            meta_str(&value, "name").expect("upsert needs metadata.name"),
        );
        if let Some(kind) = value["kind"].as_str() {
            st.kinds
                .insert((api_version, plural.to_string()), kind.to_string());
        }
        let prev = st.objects.get(&key).cloned();
        let meta = metadata_mut(&mut value);
        if !meta.contains_key("uid") {
            let uid = prev
                .as_ref()
                .and_then(|p| meta_str(p, "uid").map(String::from))
                .unwrap_or_else(|| st.next_uid());
            meta.insert("uid".into(), uid.into());
        }
        meta.entry("creationTimestamp")
            .or_insert_with(|| now().into());
        let rv = st.bump_rv();
        set_meta(&mut value, "resourceVersion", rv.to_string().into());
        normalize_meta(&mut value);
        let kind = if prev.is_some() { "MODIFIED" } else { "ADDED" };
        st.objects.insert(key.clone(), value.clone());
        st.emit(kind, &key, &value, prev.as_ref());
        value
    }

    /// Remove an object immediately (ignoring finalizers), emitting a DELETED event.
    pub fn remove(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let mut st = self.lock();
        let key = Key::new(api_version, plural, namespace, name);
        let mut obj = st.objects.remove(&key)?;
        let rv = st.bump_rv();
        set_meta(&mut obj, "resourceVersion", rv.to_string().into());
        st.emit("DELETED", &key, &obj, None);
        Some(obj)
    }

    /// Every stored object of every resource, as (apiVersion, plural, object).
    pub fn all_objects(&self) -> Vec<(String, String, Value)> {
        self.lock()
            .objects
            .iter()
            .map(|(k, v)| (k.api_version.clone(), k.plural.clone(), v.clone()))
            .collect()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Recorded requests other than GET (i.e. writes).
    pub fn writes(&self) -> Vec<RecordedRequest> {
        let st = self.lock();
        st.requests
            .iter()
            .filter(|r| r.method != "GET")
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// `events.k8s.io/v1` Events in a namespace (what `Recorder::publish` writes).
    pub fn events(&self, namespace: &str) -> Vec<Value> {
        self.list("events.k8s.io/v1", "events", Some(namespace))
    }

    /// Make the next `times` requests whose method equals `method` ("*" = any) and whose
    /// path contains `path_contains` fail with `status` and a matching `Status` body.
    pub fn fail_next(&self, method: &str, path_contains: &str, status: u16, times: usize) {
        self.lock().faults.push(Fault {
            method: method.to_ascii_uppercase(),
            path_contains: path_contains.to_string(),
            body_contains: None,
            status,
            remaining: times,
        });
    }

    /// Like [`FakeKube::fail_next`], only for requests whose (compact JSON) body also
    /// contains `body_contains`, e.g. one annotation's key in a metadata patch.
    pub fn fail_next_with_body(
        &self,
        method: &str,
        path_contains: &str,
        body_contains: &str,
        status: u16,
        times: usize,
    ) {
        self.lock().faults.push(Fault {
            method: method.to_ascii_uppercase(),
            path_contains: path_contains.to_string(),
            body_contains: Some(body_contains.to_string()),
            status,
            remaining: times,
        });
    }

    /// While `stalled`, requests whose path contains `path_contains` get no answer (as
    /// from an apiserver that hangs); they are answered once the stall is lifted.
    pub fn stall(&self, path_contains: &str, stalled: bool) {
        let mut st = self.lock();
        st.stalled.retain(|p| p != path_contains);
        if stalled {
            st.stalled.push(path_contains.to_string());
        }
    }

    fn is_stalled(&self, path: &str) -> bool {
        self.lock()
            .stalled
            .iter()
            .any(|p| path.contains(p.as_str()))
    }

    /// While `held`, requests whose path contains `path_contains` are applied but their
    /// answer is held back (as from an apiserver whose response is lost on the way):
    /// a client killed meanwhile never learns that its write took effect.
    pub fn hold_answers(&self, path_contains: &str, held: bool) {
        let mut st = self.lock();
        st.held.retain(|p| p != path_contains);
        if held {
            st.held.push(path_contains.to_string());
        }
    }

    fn is_held(&self, path: &str) -> bool {
        self.lock().held.iter().any(|p| path.contains(p.as_str()))
    }

    /// Drops every fault not yet consumed.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Applies a merge patch (like `kubectl patch --type merge`) directly: bypasses fault
    /// injection and the request log, but otherwise behaves like a PATCH (admission with
    /// kubectl's strict field validation, generation bump on spec changes,
    /// resourceVersion, watch event).
    pub fn merge_patch(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, String> {
        let route = Route::parse(&resource_path(api_version, plural, namespace, name))
            .expect("valid route");
        self.lock()
            .patch(
                &route,
                name,
                Some("application/merge-patch+json"),
                patch,
                false,
                WriteOpts::kubectl(Via::Patch),
            )
            .map_err(|e| format!("{} {}", e.code, e.message))
    }

    /// Deletes like `kubectl delete` (graceful: objects with finalizers are only marked),
    /// bypassing fault injection and the request log.
    pub fn delete_object(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, String> {
        self.lock()
            .delete(&Key::new(api_version, plural, namespace, name), false, None)
            .map_err(|e| format!("{} {}", e.code, e.message))
    }

    /// Enable/disable status-subresource semantics for an API group
    /// (on by default for "accessplane.io" and "apiextensions.k8s.io").
    pub fn set_status_subresource(&self, group: &str, enabled: bool) {
        let mut st = self.lock();
        if enabled {
            st.status_groups.insert(group.to_string());
        } else {
            st.status_groups.remove(group);
        }
    }

    /// Close all open watch streams, as if the apiserver dropped the connections.
    pub fn disconnect_watches(&self) {
        self.lock().watchers.clear();
    }

    /// How many events of each resource (apiVersion, plural) are kept for watches to
    /// resume from, like the apiserver's watch cache (default [`DEFAULT_WATCH_HISTORY`]);
    /// older ones are dropped now and from then on. A watch from before the oldest kept
    /// event gets `410 Gone` (an ERROR event), and kube's watcher relists.
    pub fn set_watch_history(&self, events: usize) {
        let mut st = self.lock();
        st.history_limit = events;
        for history in st.histories.values_mut() {
            history.trim(events);
        }
    }

    /// Compacts now, as etcd's periodic compaction does: every watch and paged List from
    /// a resourceVersion before the current one is answered `410 Gone` (watches with an
    /// ERROR event, Lists with the apiserver's continue-expired Status).
    pub fn compact(&self) {
        let mut st = self.lock();
        let now = st.rv;
        st.compacted = now;
        for history in st.histories.values_mut() {
            history.floor = history.floor.max(now);
            history.events.clear();
        }
    }

    /// How often a watch that allows bookmarks (`allowWatchBookmarks=true`, kube's
    /// default) gets a BOOKMARK with the current resourceVersion (the apiserver: every
    /// minute, the default here too, and 2 s before the watch's timeout).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.lock().bookmark_interval = every;
    }

    /// From now on, resources of groups that are not built into Kubernetes are served
    /// only while their CRD (`{plural}.{group}`, serving the version) is stored, as on a
    /// real apiserver: any other request for them is its plain-text `404 page not found`.
    /// Off by default, so tests that never install CRDs keep working; custom resources
    /// are then admitted with the stored CRD only. See [`FakeKube::install_crds_except`].
    pub fn require_crds(&self) {
        self.lock().crds_required = true;
    }

    /// Stores the operator's CRDs (`accessplane::kinds::all_crds`, what `crds/` holds), all
    /// but those of the given kinds, Established, as `kubectl apply -f crds/` would.
    pub fn install_crds_except(&self, kinds: &[&str]) {
        let route = Route::parse(&format!("/apis/{CRD_API_VERSION}/{CRDS}")).expect("route");
        let mut st = self.lock();
        for (_, crd) in accessplane::kinds::all_crds() {
            if kinds.contains(&crd.spec.names.kind.as_str()) {
                continue;
            }
            let crd = serde_json::to_value(&crd).expect("a CRD serializes");
            st.create(&route, crd, WriteOpts::kubectl(Via::Post))
                .unwrap_or_else(|e| panic!("CRD not installed: {} {}", e.code, e.message));
        }
    }

    /// Current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test must not poison the fake for other assertions.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self, parts: http::request::Parts, body: Bytes) -> Response<FakeBody> {
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        // All values, comma-joined, so a header sent twice does not go unnoticed.
        let user_agents: Vec<&str> = parts
            .headers
            .get_all(http::header::USER_AGENT)
            .iter()
            .map(|v| v.to_str().unwrap_or("<non-ascii>"))
            .collect();
        let user_agent = (!user_agents.is_empty()).then(|| user_agents.join(", "));
        let body = parse_body(&body);
        let mut st = self.lock();
        st.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
            user_agent,
            warnings: vec![],
        });
        let body_text = body.as_ref().map(Value::to_string).unwrap_or_default();
        if let Some(code) = st.take_fault(parts.method.as_str(), &path, &body_text) {
            return error_response(ApiError::from_code(code, "injected failure"), &[]);
        }
        let q: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        st.warnings.clear();
        if let Some(route) = Route::parse(&path)
            && !st.served(&route)
        {
            // The end of the apiserver's delegation chain (util/notfoundhandler).
            return Response::builder()
                .status(StatusCode::NOT_FOUND)
                .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .header("X-Content-Type-Options", "nosniff")
                .body(Full::new(Bytes::from_static(b"404 page not found\n")).boxed_unsync())
                .expect("valid response");
        }
        let result = match Route::parse(&path) {
            Some(route) => st.dispatch(&parts.method, &route, &q, content_type.as_deref(), body),
            None => Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            )),
        };
        let warnings = std::mem::take(&mut st.warnings);
        if let Some(recorded) = st.requests.last_mut() {
            recorded.warnings = warnings.clone();
        }
        let bookmark_interval = st.bookmark_interval;
        drop(st);
        match result {
            Ok(Reply::Json(code, v)) => json_response(code, &v, &warnings),
            Ok(Reply::Watch {
                rx,
                timeout,
                bookmarks,
            }) => {
                let bookmarks = bookmarks.map(|id| Bookmarks {
                    kube: self.clone(),
                    watcher: id,
                    every: bookmark_interval,
                });
                watch_response(rx, timeout, bookmarks)
            }
            Err(e) => error_response(e, &warnings),
        }
    }
}

impl tower::Service<Request<kube::client::Body>> for FakeKube {
    type Response = Response<FakeBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            while this.is_stalled(parts.uri.path()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let path = parts.uri.path().to_string();
            let response = this.handle(parts, bytes);
            while this.is_held(&path) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(response)
        })
    }
}

// ---------------------------------------------------------------------------------------
// State and request handling

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    api_version: String,
    plural: String,
    namespace: String,
    name: String,
}

impl Key {
    fn new(api_version: &str, plural: &str, namespace: &str, name: &str) -> Self {
        Self {
            api_version: api_version.into(),
            plural: plural.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

struct Fault {
    method: String,
    path_contains: String,
    body_contains: Option<String>,
    status: u16,
    remaining: usize,
}

/// Events kept per resource by default: far more than any test writes of one resource,
/// so only tests that ask for expiry ([`FakeKube::set_watch_history`],
/// [`FakeKube::compact`]) see it.
pub const DEFAULT_WATCH_HISTORY: usize = 10_000;

/// The apiserver's bookmark frequency (storage/cacher: `defaultBookmarkFrequency`).
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// The changes of one resource a watch can resume from, like one watch cache.
#[derive(Default)]
struct History {
    events: std::collections::VecDeque<Change>,
    /// Every change up to this resourceVersion is gone: a watch from before it is 410.
    floor: u64,
}

impl History {
    fn trim(&mut self, limit: usize) {
        while self.events.len() > limit {
            if let Some(gone) = self.events.pop_front() {
                self.floor = self.floor.max(gone.rv);
            }
        }
    }
}

/// One committed change, kept (for a while) so that watches can resume after it.
struct Change {
    rv: u64,
    key: Key,
    kind: &'static str,
    obj: Value,
    prev: Option<Value>,
}

struct Watcher {
    id: u64,
    filter: Filter,
    tx: mpsc::UnboundedSender<Bytes>,
}

struct State {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    uids: u64,
    /// Kind per (apiVersion, plural), learned from writes; used for list kinds.
    kinds: HashMap<(String, String), String>,
    /// Recent changes per (apiVersion, plural), at most `history_limit` each.
    histories: HashMap<(String, String), History>,
    history_limit: usize,
    /// The resourceVersion of the last compaction ([`FakeKube::compact`]).
    compacted: u64,
    watchers: Vec<Watcher>,
    next_watcher: u64,
    bookmark_interval: Duration,
    requests: Vec<RecordedRequest>,
    faults: Vec<Fault>,
    /// Path fragments whose requests get no answer for now.
    stalled: Vec<String>,
    /// Path fragments whose requests are applied but get no answer for now.
    held: Vec<String>,
    status_groups: BTreeSet<String>,
    /// `Warning`s of the request being answered.
    warnings: Vec<String>,
    /// Whether resources of non-built-in groups need an installed CRD (else 404).
    crds_required: bool,
    /// Compiled schemas of stored CRDs, by CRD name: (its resourceVersion, schemas).
    crd_cache: HashMap<String, (String, Vec<Arc<CrdSchema>>)>,
}

/// `fieldValidation` of a write: what happens to fields the schema does not declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldValidation {
    /// Pruned silently.
    Ignore,
    /// Pruned, with a `Warning` each (the apiserver's default).
    Warn,
    /// Refused.
    Strict,
}

/// How a write reached the store: which decoding its body went through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Post,
    Put,
    /// A JSON or merge patch (the patched object is decoded).
    Patch,
    /// Server-side apply (the configuration is converted to the schema's type).
    Apply,
}

#[derive(Clone, Copy, Debug)]
struct WriteOpts {
    validation: FieldValidation,
    dry_run: bool,
    via: Via,
}

impl WriteOpts {
    fn from_query(q: &HashMap<String, String>, via: Via, verb: &str) -> ApiResult<Self> {
        let validation = match q.get("fieldValidation").map(String::as_str) {
            None | Some("" | "Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some("Strict") => FieldValidation::Strict,
            Some(other) => {
                let err = FieldError::new(
                    fake_admission::NOT_SUPPORTED,
                    "fieldValidation",
                    Some(other.into()),
                    r#"supported values: "", "Ignore", "Strict", "Warn""#,
                );
                return Err(ApiError::invalid_fields(
                    "meta.k8s.io",
                    &format!("{verb}Options"),
                    "",
                    &[err],
                ));
            }
        };
        Ok(Self {
            validation,
            dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
            via,
        })
    }

    /// What the fake's own helpers use: kubectl's defaults (strict field validation).
    fn kubectl(via: Via) -> Self {
        Self {
            validation: FieldValidation::Strict,
            dry_run: false,
            via,
        }
    }
}

enum Reply {
    Json(u16, Value),
    Watch {
        rx: mpsc::UnboundedReceiver<Bytes>,
        timeout: Option<Duration>,
        /// The watcher's id when it asked for bookmarks.
        bookmarks: Option<u64>,
    },
}

type ApiResult<T> = Result<T, ApiError>;

impl State {
    fn dispatch(
        &mut self,
        method: &Method,
        r: &Route,
        q: &HashMap<String, String>,
        content_type: Option<&str>,
        body: Option<Value>,
    ) -> ApiResult<Reply> {
        let status_only = match r.sub.as_deref() {
            None => false,
            Some("status") => true,
            Some(other) => {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("subresource {other} not supported"),
                ));
            }
        };
        let is_watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
        let body = || {
            body.clone()
                .ok_or_else(|| ApiError::bad_request("request body required"))
        };
        let json = |code, v| Ok(Reply::Json(code, v));
        match (method.as_str(), &r.name) {
            ("GET", None) if is_watch => self.watch(r, q),
            ("GET", None) => json(200, self.list_response(r, q)?),
            ("GET", Some(name)) => json(200, self.get_existing(&r.key(name))?),
            ("POST", None) => {
                let opts = WriteOpts::from_query(q, Via::Post, "Create")?;
                json(201, self.create(r, body()?, opts)?)
            }
            ("PUT", Some(name)) => {
                let opts = WriteOpts::from_query(q, Via::Put, "Update")?;
                let key = r.key(name);
                let old = self.get_existing(&key)?;
                json(
                    200,
                    self.commit_update(&key, &old, body()?, status_only, opts)?,
                )
            }
            ("PATCH", Some(name)) => {
                let opts = WriteOpts::from_query(q, Via::Patch, "Patch")?;
                json(
                    200,
                    self.patch(r, name, content_type, body()?, status_only, opts)?,
                )
            }
            ("DELETE", Some(name)) => json(
                200,
                self.delete(&r.key(name), q.get("dryRun").is_some(), body().ok())?,
            ),
            ("DELETE", None) => {
                let filter = Filter::from_query(r, q)?;
                let keys: Vec<Key> = self
                    .select(&r.api_version, &r.plural, r.namespace.as_deref())
                    .filter(|(_, v)| filter.matches(v))
                    .map(|(k, _)| k.clone())
                    .collect();
                let items = keys
                    .iter()
                    .map(|k| self.delete(k, false, None))
                    .collect::<ApiResult<Vec<_>>>()?;
                json(200, self.list_value(r, items))
            }
            _ => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{method} not allowed on {}", r.plural),
            )),
        }
    }

    fn select<'a>(
        &'a self,
        api_version: &'a str,
        plural: &'a str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        self.objects.iter().filter(move |(k, _)| {
            k.api_version == api_version
                && k.plural == plural
                && namespace.is_none_or(|ns| k.namespace == ns)
        })
    }

    fn get_existing(&self, key: &Key) -> ApiResult<Value> {
        self.objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(key))
    }

    fn list_value(&self, r: &Route, items: Vec<Value>) -> Value {
        json!({
            "kind": format!("{}List", self.kind_of(&r.api_version, &r.plural)),
            "apiVersion": r.api_version,
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        })
    }

    /// A List, paged like the apiserver's: `limit` caps a page and `metadata.continue`
    /// resumes after its last item. Every page reports the first page's resourceVersion,
    /// so a watch from it replays whatever changed while the pages were read.
    fn list_response(&self, r: &Route, q: &HashMap<String, String>) -> ApiResult<Value> {
        let filter = Filter::from_query(r, q)?;
        let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
            None => usize::MAX,
            Some(Ok(0)) => usize::MAX,
            Some(Ok(limit)) => limit,
            Some(Err(_)) => return Err(ApiError::bad_request("invalid limit")),
        };
        let (rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
            None => (self.rv, None),
            Some(token) => {
                let (rv, after) = token
                    .split_once(':')
                    .and_then(|(rv, after)| Some((rv.parse::<i64>().ok()?, after)))
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                // -1: the inconsistent token of an expired one (continue at the latest).
                let rv = u64::try_from(rv).unwrap_or(self.rv);
                if rv < self.compacted {
                    // storage/etcd3: the snapshot the pages were read at is compacted.
                    let mut gone = ApiError::new(410, "Expired", INCONSISTENT_CONTINUE);
                    gone.list_meta = Some(json!({"continue": format!("-1:{after}")}));
                    return Err(gone);
                }
                let (ns, name) = after.split_once('/').unwrap_or(("", after));
                (rv, Some((ns.to_string(), name.to_string())))
            }
        };
        let mut selected = self
            .select(&r.api_version, &r.plural, r.namespace.as_deref())
            .filter(|(k, _)| {
                after
                    .as_ref()
                    .is_none_or(|(ns, name)| (&k.namespace, &k.name) > (ns, name))
            })
            .filter(|(_, v)| filter.matches(v));
        let mut items = Vec::new();
        let mut last = None;
        for (k, v) in selected.by_ref().take(limit) {
            items.push(v.clone());
            last = Some(k);
        }
        let mut list = self.list_value(r, items);
        list["metadata"]["resourceVersion"] = json!(rv.to_string());
        if let Some(k) = last.filter(|_| selected.next().is_some()) {
            list["metadata"]["continue"] = json!(format!("{rv}:{}/{}", k.namespace, k.name));
        }
        Ok(list)
    }

    fn watch(&mut self, r: &Route, q: &HashMap<String, String>) -> ApiResult<Reply> {
        let filter = Filter::from_query(r, q)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let since = q.get("resourceVersion").map(String::as_str).unwrap_or("");
        let initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
        if since.is_empty() || since == "0" || initial {
            // "Any" / streaming-list semantics: synthesize ADDED for the current state.
            for (_, obj) in self.select(&r.api_version, &r.plural, r.namespace.as_deref()) {
                if filter.matches(obj) {
                    let _ = tx.send(event_line("ADDED", obj));
                }
            }
            if initial {
                let bookmark = json!({
                    "kind": self.kind_of(&r.api_version, &r.plural),
                    "apiVersion": r.api_version,
                    "metadata": {
                        "resourceVersion": self.rv.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                });
                let _ = tx.send(event_line("BOOKMARK", &bookmark));
            }
        } else {
            let since: u64 = since
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {since:?}")))?;
            let resource = (r.api_version.clone(), r.plural.clone());
            let history = self.histories.get(&resource);
            let floor = history.map_or(0, |h| h.floor).max(self.compacted);
            if since < floor {
                // storage/cacher: past authorization and a parsable resourceVersion, the
                // error is a watch event (the stream is a 200 that ends after it).
                let gone = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {since} ({floor})"),
                );
                let _ = tx.send(event_line("ERROR", &status_value(&gone)));
                return Ok(Reply::Watch {
                    rx,
                    timeout: None,
                    bookmarks: None,
                });
            }
            for c in history
                .into_iter()
                .flat_map(|h| h.events.iter())
                .filter(|c| c.rv > since)
            {
                if let Some((kind, obj)) = filter.translate(c) {
                    let _ = tx.send(event_line(kind, obj));
                }
            }
        }
        self.next_watcher += 1;
        let id = self.next_watcher;
        self.watchers.push(Watcher { id, filter, tx });
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs);
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        Ok(Reply::Watch {
            rx,
            timeout,
            bookmarks: bookmarks.then_some(id),
        })
    }

    /// A BOOKMARK at the current resourceVersion for watcher `id`, queued behind the
    /// events already sent to it; false once the watcher is gone.
    fn bookmark(&mut self, id: u64) -> bool {
        let rv = self.rv.to_string();
        let Some(w) = self.watchers.iter().find(|w| w.id == id) else {
            return false;
        };
        let bookmark = json!({
            "kind": self.kind_of(&w.filter.api_version, &w.filter.plural),
            "apiVersion": w.filter.api_version,
            "metadata": {"resourceVersion": rv},
        });
        w.tx.send(event_line("BOOKMARK", &bookmark)).is_ok()
    }

    fn create(&mut self, r: &Route, mut obj: Value, opts: WriteOpts) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("body must be a JSON object"));
        }
        strip_nulls(&mut obj);
        let schema = self.crd_schema(&r.api_version, &r.plural);
        if let Some(schema) = &schema
            && opts.via != Via::Apply
        {
            self.decode(schema, &mut obj, opts)?;
        }
        let ns = r.namespace.clone().unwrap_or_default();
        if let Some(body_ns) = meta_str(&obj, "namespace")
            && !body_ns.is_empty()
            && body_ns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let name = match (meta_str(&obj, "name"), meta_str(&obj, "generateName")) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(prefix)) => format!("{prefix}{}", self.random_suffix()),
            _ => {
                return Err(ApiError::invalid(
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        let key = r.key(&name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", r.plural),
            ));
        }
        let kind = match obj["kind"].as_str() {
            Some(k) => k.to_string(),
            None => self.kind_of(&r.api_version, &r.plural),
        };
        self.kinds
            .insert((r.api_version.clone(), r.plural.clone()), kind.clone());
        obj["apiVersion"] = r.api_version.clone().into();
        obj["kind"] = kind.into();
        let uid = self.next_uid();
        let meta = metadata_mut(&mut obj);
        meta.insert("name".into(), name.clone().into());
        if !ns.is_empty() {
            meta.insert("namespace".into(), ns.into());
        }
        meta.insert("uid".into(), uid.into());
        meta.insert("creationTimestamp".into(), now().into());
        for server_owned in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            meta.remove(server_owned);
        }
        if self.has_status_subresource(&r.api_version) {
            // The apiserver ignores status on create when /status is a subresource.
            obj.as_object_mut().unwrap().remove("status");
            set_meta(&mut obj, "generation", 1.into());
        }
        crd_hook(&key, &mut obj);
        secret_hook(&key, &mut obj);
        normalize_meta(&mut obj);
        if let Some(schema) = &schema {
            let errs = schema.validate_create(&obj);
            if !errs.is_empty() {
                return Err(ApiError::invalid_fields(
                    &schema.group,
                    &schema.kind,
                    &name,
                    &errs,
                ));
            }
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let rv = self.bump_rv();
        set_meta(&mut obj, "resourceVersion", rv.to_string().into());
        self.objects.insert(key.clone(), obj.clone());
        self.emit("ADDED", &key, &obj, None);
        Ok(obj)
    }

    fn patch(
        &mut self,
        r: &Route,
        name: &str,
        content_type: Option<&str>,
        body: Value,
        status_only: bool,
        mut opts: WriteOpts,
    ) -> ApiResult<Value> {
        let key = r.key(name);
        let ct = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        // The real apiserver refuses an apply configuration without its type (400
        // "invalid object type: /, Kind="), for creates and updates alike.
        if ct == "application/apply-patch+yaml"
            && (body["apiVersion"].as_str().is_none() || body["kind"].as_str().is_none())
        {
            return Err(ApiError::bad_request(format!(
                "invalid object type: {}, Kind={}",
                body["apiVersion"].as_str().unwrap_or("/"),
                body["kind"].as_str().unwrap_or("")
            )));
        }
        let schema = self.crd_schema(&r.api_version, &r.plural);
        if ct == "application/apply-patch+yaml" {
            opts.via = Via::Apply;
            if let Some(schema) = &schema {
                apply_typed(schema, &body)?;
            }
        } else if ct == "application/strategic-merge-patch+json" && schema.is_some() {
            // Custom resources have no strategic merge (no patch strategies in a CRD).
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let Some(old) = self.objects.get(&key).cloned() else {
            // Server-side apply creates missing objects.
            if ct == "application/apply-patch+yaml" && !status_only {
                let mut obj = body;
                set_meta(&mut obj, "name", name.into());
                return self.create(r, obj, opts);
            }
            return Err(ApiError::not_found(&key));
        };
        let mut doc = old.clone();
        match ct {
            "application/json-patch+json" => apply_json_patch(&mut doc, body)?,
            // Strategic merge and server-side apply are approximated by an RFC 7386 merge.
            "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/apply-patch+yaml" => json_patch::merge(&mut doc, &body),
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format ({other})"),
                ));
            }
        }
        self.commit_update(&key, &old, doc, status_only, opts)
    }

    /// Shared tail of PUT and PATCH: apply apiserver invariants, then store the result
    /// (or return the old object untouched if nothing changed).
    fn commit_update(
        &mut self,
        key: &Key,
        old: &Value,
        mut new: Value,
        status_only: bool,
        opts: WriteOpts,
    ) -> ApiResult<Value> {
        if !new.is_object() {
            return Err(ApiError::bad_request("body must be a JSON object"));
        }
        strip_nulls(&mut new);
        let schema = self.crd_schema(&key.api_version, &key.plural);
        if let Some(schema) = &schema
            && opts.via != Via::Apply
        {
            self.decode(schema, &mut new, opts)?;
        }
        let old_rv = meta_str(old, "resourceVersion").unwrap_or("");
        if let Some(rv) = meta_str(&new, "resourceVersion")
            && !rv.is_empty()
            && rv != old_rv
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    key.plural, key.name
                ),
            ));
        }
        let status_sub = self.has_status_subresource(&key.api_version);
        if status_only {
            // /status writes change nothing but status.
            let status = new.get("status").cloned();
            new = old.clone();
            set_or_remove(&mut new, "status", status);
        } else if status_sub {
            set_or_remove(&mut new, "status", old.get("status").cloned());
        }
        // Identity and server-managed fields cannot be changed by clients.
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old["metadata"].get(field) {
                Some(v) => set_meta(&mut new, field, v.clone()),
                None => _ = metadata_mut(&mut new).remove(field),
            }
        }
        normalize_meta(&mut new);
        if old["metadata"].get("deletionTimestamp").is_some() {
            let before = finalizers(old);
            if finalizers(&new).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        if status_sub && new.get("spec") != old.get("spec") {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
            set_meta(&mut new, "generation", (generation + 1).into());
        }
        crd_hook(key, &mut new);
        secret_hook(key, &mut new);
        set_meta(&mut new, "resourceVersion", old_rv.into());
        if let Some(schema) = &schema {
            let errs = if status_only {
                schema.validate_status_update(&new, old)
            } else {
                schema.validate_update(&new, old)
            };
            if !errs.is_empty() {
                return Err(ApiError::invalid_fields(
                    &schema.group,
                    &schema.kind,
                    &key.name,
                    &errs,
                ));
            }
        }
        if new == *old || opts.dry_run {
            return Ok(new); // no-op: no new resourceVersion, no watch event
        }
        let rv = self.bump_rv();
        set_meta(&mut new, "resourceVersion", rv.to_string().into());
        if old["metadata"].get("deletionTimestamp").is_some() && finalizers(&new).is_empty() {
            self.objects.remove(key);
            self.emit("DELETED", key, &new, Some(old));
        } else {
            self.objects.insert(key.clone(), new.clone());
            self.emit("MODIFIED", key, &new, Some(old));
        }
        Ok(new)
    }

    fn delete(&mut self, key: &Key, dry_run: bool, opts: Option<Value>) -> ApiResult<Value> {
        let old = self.get_existing(key)?;
        if let Some(pre) = opts.as_ref().and_then(|o| o.get("preconditions")) {
            for (field, actual) in [
                ("resourceVersion", meta_str(&old, "resourceVersion")),
                ("uid", meta_str(&old, "uid")),
            ] {
                if let Some(want) = pre.get(field).and_then(Value::as_str)
                    && Some(want) != actual
                {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Precondition failed: {field} in precondition: {want}, {field} in object meta: {}",
                            actual.unwrap_or("")
                        ),
                    ));
                }
            }
        }
        if dry_run {
            return Ok(old);
        }
        if !finalizers(&old).is_empty() {
            // Graceful deletion: mark once, keep the object until finalizers are gone.
            if old["metadata"].get("deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut new = old.clone();
            set_meta(&mut new, "deletionTimestamp", now().into());
            set_meta(&mut new, "deletionGracePeriodSeconds", 0.into());
            let rv = self.bump_rv();
            set_meta(&mut new, "resourceVersion", rv.to_string().into());
            self.objects.insert(key.clone(), new.clone());
            self.emit("MODIFIED", key, &new, Some(&old));
            return Ok(new);
        }
        let mut gone = self.objects.remove(key).unwrap_or(old);
        let rv = self.bump_rv();
        set_meta(&mut gone, "resourceVersion", rv.to_string().into());
        self.emit("DELETED", key, &gone, None);
        Ok(gone)
    }

    fn emit(&mut self, kind: &'static str, key: &Key, obj: &Value, prev: Option<&Value>) {
        let change = Change {
            rv: self.rv,
            key: key.clone(),
            kind,
            obj: obj.clone(),
            prev: prev.cloned(),
        };
        // Deliver to live watchers, dropping those whose stream has gone away.
        self.watchers.retain(|w| match w.filter.translate(&change) {
            Some((kind, obj)) => w.tx.send(event_line(kind, obj)).is_ok(),
            None => !w.tx.is_closed(),
        });
        let limit = self.history_limit;
        let history = self
            .histories
            .entry((key.api_version.clone(), key.plural.clone()))
            .or_default();
        history.events.push_back(change);
        history.trim(limit);
    }

    fn take_fault(&mut self, method: &str, path: &str, body: &str) -> Option<u16> {
        let fault = self.faults.iter_mut().find(|f| {
            f.remaining > 0
                && (f.method == "*" || f.method == method)
                && path.contains(&f.path_contains)
                && f.body_contains.as_ref().is_none_or(|b| body.contains(b))
        })?;
        fault.remaining -= 1;
        let status = fault.status;
        self.faults.retain(|f| f.remaining > 0);
        Some(status)
    }

    fn bump_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn next_uid(&mut self) -> String {
        self.uids += 1;
        format!("fa4e0000-0000-4000-8000-{:012x}", self.uids)
    }

    fn random_suffix(&mut self) -> String {
        // Deterministic stand-in for the apiserver's random 5-char suffix.
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.uids += 1;
        let mut n = self.uids as usize;
        (0..5)
            .map(|_| {
                let c = ALPHABET[n % ALPHABET.len()] as char;
                n /= ALPHABET.len();
                c
            })
            .collect()
    }

    /// Whether the apiserver serves this resource: always, unless CRDs are required and
    /// it belongs to a group only a CRD can define and no stored CRD serves it.
    fn served(&self, r: &Route) -> bool {
        let group = group_of(&r.api_version);
        if !self.crds_required || BUILT_IN_GROUPS.contains(&group) {
            return true;
        }
        let crd = Key::new(CRD_API_VERSION, CRDS, "", &format!("{}.{group}", r.plural));
        let version = r.api_version.rsplit('/').next().unwrap_or_default();
        self.objects.get(&crd).is_some_and(|crd| {
            crd["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["name"] == version && v["served"] != false)
        })
    }

    /// The schema custom resources of this resource are admitted with: the stored CRD's
    /// (`{plural}.{group}`), else (unless CRDs are required) the operator's own CRD.
    /// `None` for built-in resources and resources no CRD describes: stored as sent.
    fn crd_schema(&mut self, api_version: &str, plural: &str) -> Option<Arc<CrdSchema>> {
        let group = group_of(api_version);
        if group.is_empty() {
            return None;
        }
        let crd_name = format!("{plural}.{group}");
        let crd_key = Key::new(CRD_API_VERSION, CRDS, "", &crd_name);
        if let Some(crd) = self.objects.get(&crd_key) {
            let rv = meta_str(crd, "resourceVersion").unwrap_or("").to_string();
            let schemas = match self.crd_cache.get(&crd_name) {
                Some((cached, schemas)) if *cached == rv => schemas.clone(),
                _ => {
                    let schemas = CrdSchema::from_crd(crd);
                    self.crd_cache.insert(crd_name, (rv, schemas.clone()));
                    schemas
                }
            };
            return schemas.into_iter().find(|s| s.api_version() == api_version);
        }
        if self.crds_required {
            return None;
        }
        CrdSchema::operator_crds()
            .get(&(api_version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Decoding a custom resource's body: unknown fields pruned; warned about or refused
    /// as `fieldValidation` says (handlers/create.go, update.go, patch.go).
    fn decode(&mut self, schema: &CrdSchema, obj: &mut Value, opts: WriteOpts) -> ApiResult<()> {
        let before = (opts.via == Via::Patch && opts.validation == FieldValidation::Strict)
            .then(|| obj.to_string());
        let unknown = schema.prune(obj);
        if unknown.is_empty() {
            return Ok(());
        }
        match opts.validation {
            FieldValidation::Ignore => Ok(()),
            FieldValidation::Warn => {
                self.warnings.extend(
                    unknown
                        .iter()
                        .map(|f| format!("unknown field {}", go_quote(f))),
                );
                Ok(())
            }
            FieldValidation::Strict => {
                let strict = fake_admission::strict_decoding_error(&unknown);
                match (opts.via, before) {
                    // A JSON or merge patch: the patched object is what failed to decode.
                    (Via::Patch, Some(patched)) => {
                        let err = FieldError::new(
                            fake_admission::INVALID,
                            "patch",
                            Some(patched.into()),
                            &strict,
                        );
                        Err(ApiError::invalid_fields("", "", "", &[err]))
                    }
                    _ => Err(ApiError::bad_request(format!(
                        "{kind} in version {version} cannot be handled as a {kind}: {strict}",
                        kind = schema.kind,
                        version = go_quote(&schema.version),
                    ))),
                }
            }
        }
    }

    fn has_status_subresource(&self, api_version: &str) -> bool {
        self.status_groups.contains(group_of(api_version))
    }

    fn kind_of(&self, api_version: &str, plural: &str) -> String {
        self.kinds
            .get(&(api_version.to_string(), plural.to_string()))
            .cloned()
            .unwrap_or_else(|| guess_kind(plural))
    }
}

// ---------------------------------------------------------------------------------------
// Routing

/// The URL path of a (namespaced when `namespace` is not empty) object.
fn resource_path(api_version: &str, plural: &str, namespace: &str, name: &str) -> String {
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    if namespace.is_empty() {
        format!("{prefix}/{plural}/{name}")
    } else {
        format!("{prefix}/namespaces/{namespace}/{plural}/{name}")
    }
}

const CRD_API_VERSION: &str = "apiextensions.k8s.io/v1";

/// API groups served by kube-apiserver itself (no CRD needed).
const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];
const CRDS: &str = "customresourcedefinitions";

/// Server-side apply converts the configuration to the schema's type first: a field the
/// schema does not declare fails there, whatever `fieldValidation` says, with a plain
/// error the apiserver answers as a 500 (managedfields/internal/structuredmerge.go;
/// kubernetes/kubernetes#122480).
fn apply_typed(schema: &CrdSchema, config: &Value) -> ApiResult<()> {
    let unknown = schema.unknown_fields(config);
    if unknown.is_empty() {
        return Ok(());
    }
    let errors: Vec<String> = unknown
        .iter()
        .map(|f| format!(".{f}: field not declared in schema"))
        .collect();
    let errors = match errors.as_slice() {
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    Err(ApiError::new(
        500,
        "",
        format!(
            "failed to create typed patch object ({}/{}; {}, Kind={}): {errors}",
            meta_str(config, "namespace").unwrap_or(""),
            meta_str(config, "name").unwrap_or(""),
            schema.api_version(),
            schema.kind,
        ),
    ))
}

/// A parsed resource URL.
#[derive(Debug)]
struct Route {
    api_version: String,
    plural: String,
    /// `None` for cluster-scoped resources and all-namespace lists/watches.
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (api_version, rest) = match segs.as_slice() {
            ["api", version, rest @ ..] => (version.to_string(), rest),
            ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            // `/namespaces/{ns}` alone is the Namespace object itself.
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            _ => (None, rest),
        };
        let (plural, name, sub) = match rest {
            [plural] => (plural, None, None),
            [plural, name] => (plural, Some(name), None),
            [plural, name, sub] => (plural, Some(name), Some(sub)),
            _ => return None,
        };
        Some(Self {
            api_version,
            plural: plural.to_string(),
            namespace,
            name: name.map(|s| s.to_string()),
            sub: sub.map(|s| s.to_string()),
        })
    }

    fn key(&self, name: &str) -> Key {
        Key::new(
            &self.api_version,
            &self.plural,
            self.namespace.as_deref().unwrap_or(""),
            name,
        )
    }
}

// ---------------------------------------------------------------------------------------
// Selectors and watch filtering

#[derive(Debug)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    /// Parses the equality-based selector syntax (`a=b,c!=d,e,!f`).
    fn parse_all(selector: &str) -> ApiResult<Vec<Self>> {
        selector
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if let Some((k, v)) = s.split_once("!=") {
                    Ok(Self::NotEq(k.trim().into(), v.trim().into()))
                } else if let Some((k, v)) = s.split_once("==").or_else(|| s.split_once('=')) {
                    Ok(Self::Eq(k.trim().into(), v.trim().into()))
                } else if s.contains(' ') || s.contains('(') {
                    Err(ApiError::bad_request(format!(
                        "unsupported selector {s:?} (set-based selectors are not implemented)"
                    )))
                } else if let Some(k) = s.strip_prefix('!') {
                    Ok(Self::NotExists(k.into()))
                } else {
                    Ok(Self::Exists(s.into()))
                }
            })
            .collect()
    }

    fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        match self {
            Self::Eq(k, v) => lookup(k).as_deref() == Some(v),
            Self::NotEq(k, v) => lookup(k).as_deref() != Some(v),
            Self::Exists(k) => lookup(k).is_some(),
            Self::NotExists(k) => lookup(k).is_none(),
        }
    }
}

struct Filter {
    api_version: String,
    plural: String,
    namespace: Option<String>,
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Filter {
    fn from_query(r: &Route, q: &HashMap<String, String>) -> ApiResult<Self> {
        let sel = |k: &str| Requirement::parse_all(q.get(k).map(String::as_str).unwrap_or(""));
        Ok(Self {
            api_version: r.api_version.clone(),
            plural: r.plural.clone(),
            namespace: r.namespace.clone(),
            labels: sel("labelSelector")?,
            fields: sel("fieldSelector")?,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let label = |k: &str| obj["metadata"]["labels"][k].as_str().map(String::from);
        // Field selectors are dotted paths into the object (`metadata.name`, `spec.x`).
        let field = |path: &str| {
            let v = path.split('.').fold(obj, |v, seg| &v[seg]);
            match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }
        };
        self.labels.iter().all(|r| r.matches(label)) && self.fields.iter().all(|r| r.matches(field))
    }

    /// How a change looks to this watcher: objects moving in or out of the selector
    /// appear as ADDED/DELETED, like the apiserver's watch cache.
    fn translate<'c>(&self, c: &'c Change) -> Option<(&'static str, &'c Value)> {
        let k = &c.key;
        if k.api_version != self.api_version
            || k.plural != self.plural
            || self.namespace.as_ref().is_some_and(|ns| *ns != k.namespace)
        {
            return None;
        }
        let now = self.matches(&c.obj);
        let before = c.prev.as_ref().is_some_and(|p| self.matches(p));
        match (c.kind, before, now) {
            ("MODIFIED", true, false) => Some(("DELETED", &c.obj)),
            ("MODIFIED", false, true) => Some(("ADDED", &c.obj)),
            ("MODIFIED", false, false) => None,
            ("DELETED", _, _) => (now || before).then_some(("DELETED", &c.obj)),
            (kind, _, now) => now.then_some((kind, &c.obj)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors and responses

#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    /// `details` of the Status (e.g. the causes of a 422).
    details: Option<Value>,
    /// `metadata` of the Status (a fresh continue token).
    list_meta: Option<Value>,
}

/// storage/etcd3's answer to a continue token from before a compaction.
const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            list_meta: None,
        }
    }

    /// `errors.NewInvalid`: a 422 naming every field error in its causes.
    fn invalid_fields(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Self {
        let (message, details) = fake_admission::invalid_status(group, kind, name, errs);
        Self {
            details: Some(details),
            ..Self::invalid(message)
        }
    }

    fn from_code(code: u16, message: &str) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        Self::new(code, reason, message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    fn not_found(key: &Key) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", key.plural, key.name),
        )
    }
}

fn json_response(code: u16, v: &Value, warnings: &[String]) -> Response<FakeBody> {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(http::header::CONTENT_TYPE, "application/json");
    for warning in warnings {
        // RFC 7234 warning, as the apiserver writes it: code 299, agent "-".
        response = response.header("Warning", format!("299 - {}", go_quote(warning)));
    }
    response
        .body(Full::new(Bytes::from(v.to_string())).boxed_unsync())
        .expect("valid response")
}

fn status_value(e: &ApiError) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": e.message,
        "code": e.code,
    });
    if !e.reason.is_empty() {
        status["reason"] = e.reason.into();
    }
    if let Some(details) = &e.details {
        status["details"] = details.clone();
    }
    if let Some(meta) = &e.list_meta {
        status["metadata"] = meta.clone();
    }
    status
}

fn error_response(e: ApiError, warnings: &[String]) -> Response<FakeBody> {
    json_response(e.code, &status_value(&e), warnings)
}

/// Periodic bookmarks of one watch.
struct Bookmarks {
    kube: FakeKube,
    watcher: u64,
    every: Duration,
}

fn watch_response(
    rx: mpsc::UnboundedReceiver<Bytes>,
    timeout: Option<Duration>,
    bookmarks: Option<Bookmarks>,
) -> Response<FakeBody> {
    use tokio::time::{Instant, sleep_until};
    // The stream ends at `timeoutSeconds`, like the apiserver closing the watch.
    let deadline = timeout.map(|t| Instant::now() + t);
    // storage/cacher's nextBookmarkTime: every `every`, and 2 s before the deadline;
    // none once that time has passed.
    let next_bookmark = move |now: Instant, every: Duration| {
        let mut at = now + every;
        if let Some(pre) = deadline.and_then(|d| d.checked_sub(Duration::from_secs(2))) {
            at = at.min(pre);
        }
        (at > now).then_some(at)
    };
    let first = bookmarks
        .as_ref()
        .and_then(|b| next_bookmark(Instant::now(), b.every));
    let stream = futures::stream::unfold(
        (rx, bookmarks, first),
        move |(mut rx, bookmarks, mut bookmark_at)| async move {
            loop {
                tokio::select! {
                    line = rx.recv() => {
                        return line.map(|line| {
                            (Ok::<_, Infallible>(Frame::data(line)), (rx, bookmarks, bookmark_at))
                        });
                    }
                    _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                        return None;
                    }
                    _ = sleep_until(bookmark_at.unwrap_or_else(Instant::now)), if bookmark_at.is_some() => {
                        let b = bookmarks.as_ref().expect("bookmarks asked for");
                        bookmark_at = match b.kube.lock().bookmark(b.watcher) {
                            true => next_bookmark(Instant::now(), b.every),
                            false => None,
                        };
                    }
                }
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(stream).boxed_unsync())
        .expect("valid response")
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": obj}).to_string();
    line.push('\n');
    Bytes::from(line)
}

// ---------------------------------------------------------------------------------------
// JSON helpers

fn parse_body(body: &[u8]) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    serde_json::from_slice(body)
        .ok()
        .or_else(|| serde_yaml::from_slice(body).ok())
}

/// RFC 6902 with the apiserver's (evanphx/json-patch) leniency: `test` for `null` passes
/// on a missing path, which kube_runtime's finalizer helper relies on.
fn apply_json_patch(doc: &mut Value, body: Value) -> ApiResult<()> {
    let patch: json_patch::Patch = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    for op in &patch.0 {
        if let json_patch::PatchOperation::Test(t) = op
            && t.value.is_null()
            && doc.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(doc, std::slice::from_ref(op)).map_err(|e| {
            ApiError::invalid(format!(
                "the server rejected our request due to an error in our request: {e}"
            ))
        })?;
    }
    Ok(())
}

fn metadata_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    let map = obj.as_object_mut().expect("object");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().unwrap()
}

fn set_meta(obj: &mut Value, field: &str, v: Value) {
    metadata_mut(obj).insert(field.into(), v);
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str()
}

fn set_or_remove(obj: &mut Value, field: &str, v: Option<Value>) {
    let map = obj.as_object_mut().expect("object");
    match v {
        Some(v) => map.insert(field.into(), v),
        None => map.remove(field),
    };
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The apiserver never stores nulls for optional fields (Go `omitempty` / CRD pruning).
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Empty metadata collections are omitted on the wire, so compare/store them that way.
fn normalize_meta(obj: &mut Value) {
    let meta = metadata_mut(obj);
    for field in [
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        "managedFields",
    ] {
        let empty = match meta.get(field) {
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            _ => false,
        };
        if empty {
            meta.remove(field);
        }
    }
}

/// CRDs become Established immediately, so code waiting on `is_crd_established` proceeds.
fn crd_hook(key: &Key, obj: &mut Value) {
    if key.plural == "customresourcedefinitions"
        && group_of(&key.api_version) == "apiextensions.k8s.io"
    {
        obj["status"] = json!({
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
            ],
            "acceptedNames": obj["spec"]["names"].clone(),
            "storedVersions": obj["spec"]["versions"].as_array().map(|vs| {
                vs.iter().filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>()
            }).unwrap_or_default(),
        });
    }
}

/// Secrets' write-only `stringData` is folded into base64 `data`, as the apiserver does.
fn secret_hook(key: &Key, obj: &mut Value) {
    use base64::Engine as _;
    if key.api_version != "v1" || key.plural != "secrets" {
        return;
    }
    let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    let data = obj
        .as_object_mut()
        .unwrap()
        .entry("data")
        .or_insert_with(|| json!({}));
    for (k, v) in string_data {
        let plain = v.as_str().unwrap_or_default();
        data[k] = base64::engine::general_purpose::STANDARD
            .encode(plain)
            .into();
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Kind for a plural when no object of that resource has been written yet.
fn guess_kind(plural: &str) -> String {
    let known = [
        ("configmaps", "ConfigMap"),
        ("secrets", "Secret"),
        ("events", "Event"),
        ("namespaces", "Namespace"),
        ("serviceaccounts", "ServiceAccount"),
        ("customresourcedefinitions", "CustomResourceDefinition"),
        ("leases", "Lease"),
        ("pods", "Pod"),
        ("services", "Service"),
        ("deployments", "Deployment"),
    ];
    if let Some((_, k)) = known.iter().find(|(p, _)| *p == plural) {
        return k.to_string();
    }
    let singular = plural
        .strip_suffix("ies")
        .map(|s| format!("{s}y"))
        .or_else(|| plural.strip_suffix("ses").map(|s| format!("{s}s")))
        .or_else(|| plural.strip_suffix('s').map(String::from))
        .unwrap_or_else(|| plural.to_string());
    let mut chars = singular.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Conventional plural for a kind (`Widget` → `widgets`, `Policy` → `policies`).
pub fn guess_plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'o', 'u'])
    {
        format!("{stem}ies")
    } else if lower.ends_with('s') || lower.ends_with('x') || lower.ends_with("ch") {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}
