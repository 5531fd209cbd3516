//! Behaviour of [`UpstreamClient`] against tiny local servers.

use std::collections::VecDeque;
use std::io::Write;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::upstream::{IssuedToken, TokenExchange, oauth_token_request};
use reqwest::Method;

const SENTINEL: &str = "SENTINEL-SECRET-123";
const TOKEN_SENTINEL: &str = "SENTINEL-TOKEN";

/// A canned response: status, headers, body.
type Reply = (u16, Vec<(&'static str, &'static str)>, &'static str);

/// Server state: scripted API replies, arrivals, and a token endpoint.
#[derive(Default)]
struct Upstream {
    script: Mutex<VecDeque<Reply>>,
    arrivals: Mutex<Vec<(Instant, Option<String>)>>,
    token_calls: AtomicU32,
    /// Delay before answering API calls.
    delay: Mutex<Duration>,
}

impl Upstream {
    fn scripted(replies: Vec<Reply>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(replies.into()),
            ..Self::default()
        })
    }

    fn arrivals(&self) -> Vec<(Instant, Option<String>)> {
        self.arrivals.lock().unwrap().clone()
    }
}

async fn api(State(up): State<Arc<Upstream>>, headers: HeaderMap) -> Response {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    up.arrivals.lock().unwrap().push((Instant::now(), auth));
    let delay = *up.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let (status, headers, body) =
        up.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((200, vec![], r#"{"ok":true}"#));
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (k, v) in headers {
        response.headers_mut().insert(k, v.parse().unwrap());
    }
    response
}

/// Issues `SENTINEL-TOKEN-<n>` to client `client-id` with the sentinel secret.
async fn token(State(up): State<Arc<Upstream>>, headers: HeaderMap) -> Response {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("client-id:{SENTINEL}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client","error_description":"bad client credentials"}"#,
        )
            .into_response();
    }
    let n = up.token_calls.fetch_add(1, Ordering::SeqCst) + 1;
    format!(r#"{{"access_token":"{TOKEN_SENTINEL}-{n}","token_type":"Bearer","expires_in":3600}}"#)
        .into_response()
}

async fn serve(up: Arc<Upstream>) -> url::Url {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = Router::new()
        .route("/token", post(token))
        .route("/api/{*rest}", any(api))
        .with_state(up);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/").parse().unwrap()
}

struct BasicExchange {
    url: url::Url,
    secret: SecretString,
}

impl TokenExchange for BasicExchange {
    fn exchange<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<IssuedToken, UpstreamError>> {
        Box::pin(oauth_token_request(
            http,
            "test",
            &self.url,
            &[("grant_type", "client_credentials")],
            Some(("client-id", &self.secret)),
        ))
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        budget: Duration::from_secs(5),
    }
}

fn config(root: &url::Url, credentials: Credentials) -> UpstreamConfig {
    let mut config = UpstreamConfig::new("test", root.join("api/v1").unwrap(), credentials);
    config.rate_limit = RateLimit {
        requests_per_second: NonZeroU32::new(1000).unwrap(),
        burst: NonZeroU32::new(1000).unwrap(),
    };
    config.retry = fast_retry();
    config
}

fn exchange_client(root: &url::Url, secret: &str) -> UpstreamClient {
    let exchange = BasicExchange {
        url: root.join("token").unwrap(),
        secret: secret.into(),
    };
    UpstreamClient::new(config(root, Credentials::Exchange(Arc::new(exchange)))).unwrap()
}

#[tokio::test]
async fn unauthorized_refreshes_once_and_retries_once() {
    let up = Upstream::scripted(vec![(
        401,
        vec![],
        r#"{"code":"unauthenticated","message":"expired"}"#,
    )]);
    let root = serve(up.clone()).await;
    let client = exchange_client(&root, SENTINEL);

    client.send(Call::get("get", "/things/1")).await.unwrap();

    let arrivals = up.arrivals();
    assert_eq!(arrivals.len(), 2);
    assert_eq!(up.token_calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        arrivals[1].1.as_deref(),
        Some(format!("Bearer {TOKEN_SENTINEL}-2").as_str())
    );
}

#[tokio::test]
async fn second_unauthorized_is_an_authentication_error() {
    let up = Upstream::scripted(vec![(401, vec![], ""), (401, vec![], "")]);
    let root = serve(up.clone()).await;
    let client = exchange_client(&root, SENTINEL);

    let err = client
        .send(Call::get("get", "/things/1"))
        .await
        .unwrap_err();

    assert_eq!(err.class(), ErrorClass::Authentication);
    assert_eq!(up.arrivals().len(), 2);
    assert_eq!(up.token_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retry_after_seconds_is_honoured_even_for_creates() {
    let up = Upstream::scripted(vec![(
        429,
        vec![("retry-after", "1")],
        "Rate Limit Exceeded",
    )]);
    let root = serve(up.clone()).await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    client
        .send(Call::post("create", "/things").json(serde_json::json!({"a": 1})))
        .await
        .unwrap();

    let arrivals = up.arrivals();
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1].0 - arrivals[0].0;
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
}

#[tokio::test]
async fn retry_after_holds_back_every_call_of_the_connection() {
    let up = Upstream::scripted(vec![(429, vec![("retry-after", "1")], "")]);
    let root = serve(up.clone()).await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    let throttled = tokio::spawn({
        let client = client.clone();
        async move { client.send(Call::get("get", "/things/1")).await }
    });
    // Once the 429 has reached the client, start unrelated calls on the same Connection.
    while client.inner.limiter.paused().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let others = futures::future::join_all(
        (0..3).map(|i| client.send(Call::get("get", format!("/other/{i}")))),
    );
    for response in others.await {
        response.unwrap();
    }
    throttled.await.unwrap().unwrap();

    let arrivals = up.arrivals();
    assert_eq!(arrivals.len(), 5);
    let answered = arrivals[0].0;
    for (at, _) in &arrivals[1..] {
        assert!(
            *at - answered >= Duration::from_secs(1),
            "a call arrived {:?} after a Retry-After of 1 s",
            *at - answered
        );
    }
}

#[tokio::test]
async fn retry_after_ms_is_honoured() {
    let up = Upstream::scripted(vec![(503, vec![("retry-after-ms", "300")], "")]);
    let root = serve(up.clone()).await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    client.send(Call::get("get", "/things")).await.unwrap();

    let arrivals = up.arrivals();
    assert_eq!(arrivals.len(), 2);
    assert!(arrivals[1].0 - arrivals[0].0 >= Duration::from_millis(300));
}

#[tokio::test]
async fn service_unavailable_twice_then_success() {
    let up = Upstream::scripted(vec![(503, vec![], ""), (503, vec![], "")]);
    let root = serve(up.clone()).await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    let response = client.send(Call::put("update", "/things/1")).await.unwrap();

    assert_eq!(response.status, 200);
    assert_eq!(up.arrivals().len(), 3);
}

#[tokio::test]
async fn a_status_the_call_takes_as_an_answer_is_not_retried() {
    let conflict = r#"{"name":"Conflict","message":"already exists"}"#;
    let up = Upstream::scripted(vec![(409, vec![], conflict), (409, vec![], conflict)]);
    let root = serve(up.clone()).await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    let answered = client
        .send(Call::post("create", "/things").answered_by(409))
        .await;
    assert_eq!(answered.unwrap_err().status(), Some(409));
    assert_eq!(up.arrivals().len(), 1, "answered at once");

    // Without it, a 409 is a race worth retrying.
    let retried = client.send(Call::put("update", "/things/1")).await;
    assert!(retried.is_ok(), "the third reply is a 200");
    assert_eq!(up.arrivals().len(), 3);
}

#[tokio::test]
async fn persistent_errors_exhaust_the_attempts() {
    let up = Upstream::scripted(vec![(502, vec![], ""); 10]);
    let root = serve(up.clone()).await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    let err = client.send(Call::get("get", "/things")).await.unwrap_err();

    assert!(
        matches!(err, UpstreamError::RetriesExhausted { attempts: 4, .. }),
        "{err:?}"
    );
    assert_eq!(err.status(), Some(502));
    assert_eq!(up.arrivals().len(), 4);
}

#[tokio::test]
async fn retry_after_beyond_the_budget_gives_up_at_once() {
    let up = Upstream::scripted(vec![(429, vec![("retry-after", "120")], "")]);
    let root = serve(up.clone()).await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    let err = client.send(Call::get("get", "/things")).await.unwrap_err();

    assert!(
        matches!(err, UpstreamError::RetriesExhausted { attempts: 1, .. }),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(up.arrivals().len(), 1);
}

#[tokio::test]
async fn connect_body_on_bad_request_is_terminal() {
    let up = Upstream::scripted(vec![(
        400,
        vec![],
        r#"{"code":"invalid_argument","message":"name is required","detail":"x"}"#,
    )]);
    let root = serve(up.clone()).await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    let err = client
        .send(Call::put("update", "/things/1"))
        .await
        .unwrap_err();

    match &err {
        UpstreamError::Api {
            status: 400,
            code: Some(code),
            message,
            ..
        } => {
            assert_eq!(code, "invalid_argument");
            assert_eq!(message, "name is required");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert_eq!(up.arrivals().len(), 1);
}

#[tokio::test]
async fn create_is_not_retried_after_server_error() {
    let up = Upstream::scripted(vec![(500, vec![], "")]);
    let root = serve(up.clone()).await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    let err = client
        .send(Call::post("create", "/things"))
        .await
        .unwrap_err();

    assert_eq!(err.status(), Some(500));
    assert!(err.may_have_applied());
    assert_eq!(up.arrivals().len(), 1);
}

#[tokio::test]
async fn create_timeout_is_ambiguous_and_not_retried() {
    let up = Upstream::scripted(vec![]);
    *up.delay.lock().unwrap() = Duration::from_secs(2);
    let root = serve(up.clone()).await;
    let mut config = config(&root, Credentials::StaticBearer("t".into()));
    config.timeout = Duration::from_millis(200);
    let client = UpstreamClient::new(config).unwrap();

    let err = client
        .send(Call::post("create", "/things"))
        .await
        .unwrap_err();

    assert!(
        matches!(err, UpstreamError::Transport { sent: true, .. }),
        "{err:?}"
    );
    assert_eq!(up.arrivals().len(), 1);
}

/// Accepts connections, reads one request fully, then drops the connection.
async fn dropping_server() -> (url::Url, Arc<AtomicU32>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU32::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request_complete(&buf) {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = socket.shutdown().await;
        }
    });
    (format!("http://{addr}/").parse().unwrap(), requests)
}

fn request_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = text[..end]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    buf.len() >= end + 4 + length
}

#[tokio::test]
async fn create_dropped_after_send_is_ambiguous_after_one_attempt() {
    let (root, requests) = dropping_server().await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    let err = client
        .send(Call::post("create", "/things").json(serde_json::json!({"name": "x"})))
        .await
        .unwrap_err();

    assert!(
        matches!(err, UpstreamError::Transport { sent: true, .. }),
        "{err:?}"
    );
    assert!(err.may_have_applied());
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn idempotent_call_dropped_after_send_is_retried() {
    let (root, requests) = dropping_server().await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    let err = client.send(Call::get("get", "/things")).await.unwrap_err();

    assert!(
        matches!(err, UpstreamError::RetriesExhausted { attempts: 4, .. }),
        "{err:?}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn create_is_retried_when_the_connection_was_refused() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let root: url::Url = format!("http://{}/", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(listener);
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    let err = client
        .send(Call::post("create", "/things"))
        .await
        .unwrap_err();

    match &err {
        UpstreamError::RetriesExhausted {
            attempts: 4, last, ..
        } => {
            assert!(matches!(
                **last,
                UpstreamError::Transport { sent: false, .. }
            ));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.may_have_applied());
}

#[tokio::test]
async fn concurrent_calls_share_one_token_exchange() {
    let up = Upstream::scripted(vec![]);
    let root = serve(up.clone()).await;
    let client = exchange_client(&root, SENTINEL);

    let results = futures::future::join_all(
        (0..20).map(|i| client.send(Call::get("get", format!("/t/{i}")))),
    )
    .await;

    assert!(results.iter().all(Result::is_ok));
    assert_eq!(up.token_calls.load(Ordering::SeqCst), 1);
    assert_eq!(up.arrivals().len(), 20);
}

#[tokio::test]
async fn json_decodes_and_reports_decode_errors_with_operation() {
    let up = Upstream::scripted(vec![
        (200, vec![], r#"{"data":{"id":"a"}}"#),
        (200, vec![], "not json"),
        (204, vec![], ""),
    ]);
    let root = serve(up.clone()).await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();

    let value: serde_json::Value = client.json(Call::get("get_thing", "/t")).await.unwrap();
    assert_eq!(value["data"]["id"], "a");
    let err = client
        .json::<serde_json::Value>(Call::get("get_thing", "/t"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Decode {
                operation: "get_thing",
                ..
            }
        ),
        "{err:?}"
    );
    let () = client
        .json(Call::delete("delete_thing", "/t"))
        .await
        .unwrap();
}

#[tokio::test]
async fn paths_and_queries_are_appended_to_the_base_url() {
    let up = Upstream::scripted(vec![]);
    let root = serve(up.clone()).await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into()))).unwrap();
    assert_eq!(
        client.url_for("/persona/vs_a%20b%2Fc").as_str(),
        format!("{root}api/v1/persona/vs_a%20b%2Fc")
    );
    client
        .send(Call::get("list", "/things").query("page_size", "10"))
        .await
        .unwrap();
}

#[test]
fn base_url_with_credentials_is_rejected() {
    let url: url::Url = format!("https://user:{SENTINEL}@example.com/")
        .parse()
        .unwrap();
    let err = UpstreamClient::new(UpstreamConfig::new(
        "test",
        url,
        Credentials::StaticBearer("t".into()),
    ))
    .err()
    .unwrap();
    assert!(matches!(err, UpstreamError::Config { .. }));
    assert!(!format!("{err} {err:?}").contains(SENTINEL));
}

/// A `MakeWriter` collecting log output in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn credentials_never_reach_errors_or_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Another test's thread (no subscriber) may register a call site as "never
    // interested" while this one is being installed: rebuild that cache now and then.
    tracing::callsite::rebuild_interest_cache();
    let relisten = tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tracing::callsite::rebuild_interest_cache();
        }
    });

    let up = Upstream::scripted(vec![
        (
            401,
            vec![],
            r#"{"code":"unauthenticated","message":"expired"}"#,
        ),
        (500, vec![], "boom"),
        (401, vec![], "nope"),
        (
            403,
            vec![],
            r#"{"name":"Forbidden","message":"read-only key"}"#,
        ),
    ]);
    let root = serve(up.clone()).await;
    let mut errors = Vec::new();

    // Token exchange succeeds (token is a sentinel too), API answers 401 then 500.
    let client = exchange_client(&root, SENTINEL);
    errors.push(client.send(Call::post("create", "/t")).await.unwrap_err());
    // Token endpoint refuses the credentials.
    let wrong = exchange_client(&root, &format!("{SENTINEL}-wrong"));
    let refused = wrong.send(Call::get("get", "/t")).await.unwrap_err();
    assert_eq!(refused.class(), ErrorClass::Authentication);
    errors.push(refused);
    // Static bearer and Basic credentials against 401/403.
    let bearer =
        UpstreamClient::new(config(&root, Credentials::StaticBearer(SENTINEL.into()))).unwrap();
    errors.push(bearer.send(Call::get("get", "/t")).await.unwrap_err());
    let basic = UpstreamClient::new(config(
        &root,
        Credentials::Basic {
            username: "user".into(),
            api_key: SENTINEL.into(),
        },
    ))
    .unwrap();
    errors.push(basic.send(Call::get("get", "/t")).await.unwrap_err());
    // Transport failure with credentials attached.
    let (dropping, _) = dropping_server().await;
    let transport = UpstreamClient::new(config(
        &dropping,
        Credentials::StaticBearer(SENTINEL.into()),
    ))
    .unwrap();
    errors.push(transport.send(Call::get("get", "/t")).await.unwrap_err());

    assert_eq!(errors.len(), 5);
    for err in &errors {
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("SENTINEL"), "credential leaked: {shown}");
    }
    relisten.abort();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("upstream"), "nothing captured: {logs}");
    assert!(
        !logs.contains("SENTINEL"),
        "credential leaked into logs:\n{logs}"
    );
}

/// `accessplane plan`'s guarantee, enforced where requests leave the process: a
/// read-only client sends GETs and searches marked as reads, and refuses every other
/// call before it reaches the network (the server sees nothing of them).
#[tokio::test]
async fn a_read_only_client_sends_reads_and_refuses_every_write() {
    let up = Upstream::scripted(vec![]);
    let root = serve(up.clone()).await;
    let client = UpstreamClient::new(config(&root, Credentials::StaticBearer("t".into())))
        .unwrap()
        .read_only();

    client.send(Call::get("get", "/things/1")).await.unwrap();
    client
        .send(
            Call::post("search", "/search")
                .json(serde_json::json!({}))
                .reads(),
        )
        .await
        .unwrap();
    assert_eq!(up.arrivals().len(), 2);

    for call in [
        Call::post("create", "/things").json(serde_json::json!({"a": 1})),
        Call::post("update", "/things/1").idempotent(),
        Call::put("replace", "/things/1"),
        Call::delete("delete", "/things/1"),
        Call::new(Method::PATCH, "patch", "/things/1"),
    ] {
        let method = call.method.clone();
        let error = client.send(call).await.unwrap_err();
        assert!(
            matches!(&error, UpstreamError::WriteRefused { .. }),
            "{method}: {error:?}"
        );
        assert!(error.to_string().contains("plan mode"), "{error}");
        assert!(!error.may_have_applied());
    }
    assert_eq!(up.arrivals().len(), 2, "no write reached the server");
}
