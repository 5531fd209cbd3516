//! The elector against an in-memory Lease endpoint (a mock at the Kubernetes API
//! seam) on tokio's paused clock: renewals that hang or fail, and recovery from them.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

/// How the endpoint answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Answer,
    Hang,
    Fail,
}

/// One Lease with resourceVersion conflicts, as the apiserver keeps it. `behind`:
/// how far the writer's wall clock runs behind (its `renewTime` stamps).
#[derive(Clone)]
struct LeaseApi(Arc<Mutex<(Option<Value>, u64, Mode)>>, Arc<Mutex<i64>>);

impl LeaseApi {
    fn new() -> Self {
        Self(
            Arc::new(Mutex::new((None, 0, Mode::Answer))),
            Arc::new(Mutex::new(0)),
        )
    }

    fn set_clock_behind(&self, seconds: i64) {
        *self.1.lock().unwrap() = seconds;
    }

    fn set_mode(&self, mode: Mode) {
        self.0.lock().unwrap().2 = mode;
    }

    fn holder(&self) -> Option<String> {
        let state = self.0.lock().unwrap();
        let holder = &state.0.as_ref()?["spec"]["holderIdentity"];
        holder.as_str().map(str::to_string)
    }

    /// The holder stopped renewing long ago (the lease expired by the wall clock,
    /// which tokio's paused clock does not move).
    fn expire(&self) {
        let mut state = self.0.lock().unwrap();
        if let Some(lease) = &mut state.0 {
            lease["spec"]["renewTime"] = json!("2000-01-01T00:00:00.000000Z");
        }
    }

    fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.answer(request).await) }
        });
        kube::Client::new(service, "ns")
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let mode = self.0.lock().unwrap().2;
        match mode {
            Mode::Hang => std::future::pending().await,
            Mode::Fail => return reply(StatusCode::INTERNAL_SERVER_ERROR, status(500)),
            Mode::Answer => {}
        }
        let method = request.method().clone();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let mut state = self.0.lock().unwrap();
        let (stored, version, _) = &mut *state;
        match method {
            Method::GET => match stored {
                Some(lease) => reply(StatusCode::OK, lease.clone()),
                None => reply(StatusCode::NOT_FOUND, status(404)),
            },
            Method::POST | Method::PUT => {
                let current = stored
                    .as_ref()
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                let conflict = match (&method, &current) {
                    (&Method::POST, Some(_)) => true,
                    (&Method::PUT, Some(rv)) => body["metadata"]["resourceVersion"] != *rv,
                    _ => false,
                };
                if conflict {
                    return reply(StatusCode::CONFLICT, status(409));
                }
                *version += 1;
                let mut lease = body;
                let behind = *self.1.lock().unwrap();
                if behind != 0 && !lease["spec"]["renewTime"].is_null() {
                    let stamp = Timestamp::now() - SignedDuration::from_secs(behind);
                    lease["spec"]["renewTime"] = json!(MicroTime(stamp));
                }
                lease["metadata"]["resourceVersion"] = json!(version.to_string());
                *stored = Some(lease.clone());
                reply(StatusCode::OK, lease)
            }
            _ => reply(StatusCode::METHOD_NOT_ALLOWED, status(405)),
        }
    }
}

fn status(code: u16) -> Value {
    let reason = match code {
        404 => "NotFound",
        409 => "Conflict",
        _ => "InternalError",
    };
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
           "reason": reason, "message": format!("HTTP {code}")})
}

/// Waits (in paused time) for leadership to become `held`; fails after two minutes.
async fn until(is_leader: &mut watch::Receiver<bool>, held: bool) {
    let wait = is_leader.wait_for(|l| *l == held);
    let outcome = tokio::time::timeout(Duration::from_secs(120), wait).await;
    assert!(outcome.is_ok(), "leadership never became {held}");
}

fn reply(code: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string().into_bytes()))
        .unwrap()
}

/// 15 s lease, renewed every 5 s: writes allowed for 10 s after a renewal.
fn contender(
    api: &LeaseApi,
    identity: &str,
) -> (Fence, watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let timing = LeaseTiming::default();
    let fence = Fence::for_lease(identity, timing.duration);
    let elector = LeaderElector::new(api.client(), "ns", "lease", identity, timing);
    let (leading, is_leader) = watch::channel(false);
    let task = tokio::spawn(elector.run(fence.clone(), leading, std::future::pending()));
    (fence, is_leader, task)
}

async fn for_a_while(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_renews_in_time_keeps_the_lease_and_its_fence_open() {
    let api = LeaseApi::new();
    let (fence, is_leader, _a) = contender(&api, "a");
    for_a_while(1).await;
    assert!(*is_leader.borrow() && fence.is_open());
    // One failed renewal is not a loss: the next one comes within the validity.
    api.set_mode(Mode::Fail);
    for_a_while(5).await;
    assert!(fence.is_open(), "still within the 10 s validity");
    api.set_mode(Mode::Answer);
    for_a_while(60).await;
    assert!(*is_leader.borrow() && fence.is_open());
    assert_eq!(api.holder().as_deref(), Some("a"));
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_hangs_closes_the_fence_when_the_validity_ends_and_the_leader_recovers() {
    let api = LeaseApi::new();
    let (fence, mut is_leader, _a) = contender(&api, "a");
    for_a_while(1).await;
    let renewed = tokio::time::Instant::now();
    api.set_mode(Mode::Hang);
    until(&mut is_leader, false).await;
    // The last renewal that answered started at most 5 s before the hang began.
    let lost_after = renewed.elapsed();
    assert!(
        lost_after <= Duration::from_secs(10),
        "closed {lost_after:?} after the last renewal"
    );
    assert!(!fence.is_open());
    // The apiserver answers again: the elector tries again and leads again.
    api.set_mode(Mode::Answer);
    until(&mut is_leader, true).await;
    assert!(fence.is_open());
}

#[tokio::test(start_paused = true)]
async fn a_standby_whose_attempt_timed_out_takes_the_lease_once_it_expires() {
    let api = LeaseApi::new();
    let (fence_a, is_a, a) = contender(&api, "a");
    for_a_while(1).await;
    assert!(*is_a.borrow());
    // b starts while the apiserver hangs: its attempts time out.
    api.set_mode(Mode::Hang);
    let (fence_b, mut is_b, _b) = contender(&api, "b");
    for_a_while(20).await;
    assert!(!fence_a.is_open(), "a cannot renew either");
    assert!(!fence_b.is_open());
    a.abort(); // a is gone for good
    // a's lease has expired by the time the apiserver is back; b must still try.
    api.expire();
    api.set_mode(Mode::Answer);
    until(&mut is_b, true).await;
    assert!(fence_b.is_open());
}

/// A leader whose wall clock runs 20 s behind stamps `renewTime`s that look expired
/// to a standby's clock; the standby still waits for the Lease to stand unchanged for
/// a duration, so the two never write at the same time.
#[tokio::test(start_paused = true)]
async fn a_leader_whose_clock_runs_behind_is_not_taken_over_while_it_renews() {
    let api = LeaseApi::new();
    api.set_clock_behind(20);
    let (fence_a, _, a) = contender(&api, "a");
    for_a_while(1).await;
    assert!(fence_a.is_open());
    let (fence_b, _, _b) = contender(&api, "b");
    for _ in 0..600 {
        assert!(!(fence_a.is_open() && fence_b.is_open()), "two writers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api.holder().as_deref(), Some("a"), "a renews and keeps it");
    // a stops renewing: b takes over once the Lease stood still for 15 s, not before
    // a's validity (10 s after its last renewal) ended.
    a.abort();
    for _ in 0..300 {
        assert!(!(fence_a.is_open() && fence_b.is_open()), "two writers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api.holder().as_deref(), Some("b"));
    assert!(fence_b.is_open());
}

#[test]
fn lease_timing_needs_whole_seconds_and_a_renewal_within_half_the_lease() {
    let timing = |duration: u64, renew: u64| LeaseTiming {
        duration: Duration::from_millis(duration),
        renew_every: Duration::from_millis(renew),
    };
    assert!(timing(15_000, 5_000).check().is_ok());
    assert!(timing(3_000, 1_000).check().is_ok());
    let fraction = timing(1_999, 999).check().unwrap_err();
    assert!(fraction.contains("whole seconds"), "{fraction}");
    assert!(timing(10_000, 6_000).check().is_err(), "more than half");
    assert!(timing(10_000, 0).check().is_err());
    assert_eq!(timing(15_000, 5_000).valid_for(), Duration::from_secs(10));
}
