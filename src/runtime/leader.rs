//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only
//! one reconciles. Written here rather than taken from a crate: the maintained crates
//! rely on server-side-apply conflicts, while this uses plain optimistic concurrency
//! (`resourceVersion`), which every apiserver (and the test apiserver) enforces.
//!
//! Rules: the holder renews every `renew_every`; anyone may take the lease once
//! `renewTime + leaseDurationSeconds` has passed. The holder may write only within
//! `valid_for` (the duration less one renewal period) of the start of its last
//! successful renewal, by its own monotonic clock: the [`Fence`] every write checks. When
//! that runs out (renewals failing or hanging, or the process frozen and woken), it
//! stops being leader at once, a renewal period before a standby may take the lease.
//! A graceful shutdown releases the lease so a standby takes over without waiting.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fence::Fence;

/// Lease timing.
#[derive(Clone, Debug)]
pub struct LeaseTiming {
    /// How long a lease stays valid after its last renewal.
    pub duration: Duration,
    /// How often the holder renews (and a standby retries).
    pub renew_every: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

impl LeaseTiming {
    /// How long after the start of a successful renewal this replica may write: the
    /// lease duration less one renewal period, a margin for the wall-clock skew between
    /// this replica (which stamps `renewTime`) and a standby (which reads it).
    pub fn valid_for(&self) -> Duration {
        self.duration.saturating_sub(self.renew_every)
    }

    /// Whether the holder gets at least one more renewal in before its validity ends, and
    /// the Lease can say the duration (`leaseDurationSeconds` is whole seconds: a fraction
    /// would be cut off there and eat into the margin).
    pub fn check(&self) -> Result<(), String> {
        if self.duration.subsec_nanos() != 0 || self.duration < Duration::from_secs(2) {
            return Err(format!(
                "the lease duration ({:?}) must be whole seconds, at least 2s",
                self.duration
            ));
        }
        if self.renew_every.is_zero() || self.renew_every * 2 > self.duration {
            return Err(format!(
                "the renew period ({:?}) must be more than zero and at most half the lease duration ({:?})",
                self.renew_every, self.duration
            ));
        }
        Ok(())
    }
}

/// One contender for a Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    /// The Lease's resourceVersion as last read, and when (by this replica's monotonic
    /// clock) it was first read so: another holder's lease has expired once it has not
    /// changed for a lease duration, whatever the two replicas' wall clocks say.
    observed: std::sync::Mutex<Option<(String, Instant)>>,
}

impl LeaderElector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timing,
            observed: std::sync::Mutex::new(None),
        }
    }

    /// One attempt to take or renew the lease; `Ok(true)` when this contender holds it.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, Some(now), 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let ours = holder == Some(self.identity.as_str());
        let unchanged_for = self.unchanged_for(current.metadata.resource_version.as_deref());
        if holder.is_some() && !ours && !expired(&spec, unchanged_for, now) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or_default() + i32::from(!ours);
        let acquired = if ours {
            spec.acquire_time.as_ref().map(|t| t.0)
        } else {
            Some(now)
        };
        let mut next = current.clone();
        next.spec = Some(self.spec(now, acquired, transitions));
        // The resourceVersion in `next` makes a concurrent change a 409: someone else won.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// How long the Lease has stood unchanged at `version`, as far as this replica has
    /// seen (zero when it has just changed or is read for the first time).
    fn unchanged_for(&self, version: Option<&str>) -> Duration {
        let version = version.unwrap_or_default();
        let mut observed = self.observed.lock().unwrap();
        match &*observed {
            Some((seen, at)) if seen == version => at.elapsed(),
            _ => {
                *observed = Some((version.to_string(), Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// Gives the lease up if this contender holds it.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut current) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = current.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Keeps trying and renewing until `stop` resolves, keeping `fence` open exactly while
    /// this replica may write and publishing whether it leads; releases the lease on the
    /// way out.
    pub async fn run(
        self,
        fence: Fence,
        leading: watch::Sender<bool>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let valid_for = self.timing.valid_for();
        loop {
            // A loss shows first, before another attempt: a process frozen past its
            // validity wakes up here (all timers due) and must not wait for a request.
            publish(&leading, fence.is_open(), &self);
            let started = Instant::now();
            // The lease is renewed as of the attempt's start (`try_acquire` stamps it
            // then). A holder's attempt may take until its validity ends; anyone else's
            // one renewal period (an attempt that hangs must neither keep a holder
            // leading past its validity nor keep a standby from trying again).
            let deadline = fence
                .valid_until()
                .filter(|until| *until > started)
                .unwrap_or(started + self.timing.renew_every);
            match tokio::time::timeout_at(deadline, self.try_acquire()).await {
                Ok(Ok(true)) => {
                    // A renewal that ends a lapse (writes were refused meanwhile) is a loss
                    // and a new term, not a continuation: say so before leading again.
                    if fence.renewed(started, valid_for) {
                        publish(&leading, false, &self);
                    }
                }
                Ok(Ok(false)) => fence.close(),
                // The validity runs out by itself if this goes on.
                Ok(Err(error)) => {
                    tracing::warn!(%error, lease = %self.name, "lease renewal failed")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "lease renewal did not answer in time")
                }
            }
            publish(&leading, fence.is_open(), &self);
            // Next renewal, or the end of the validity if that comes first (to say so then).
            let mut wake = started + self.timing.renew_every;
            if let Some(until) = fence.valid_until().filter(|until| *until < wake) {
                wake = until;
            }
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        fence.close();
        let _ = leading.send(false);
        if let Err(error) = self.release().await {
            tracing::warn!(%error, lease = %self.name, "could not release the lease");
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<Timestamp>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.duration.as_secs().max(1) as i32),
            acquire_time: acquired.map(MicroTime),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

/// Whether another holder's lease has run out: it has stood unchanged for its duration
/// by this replica's own clock (the holder renewed it before this replica first read it
/// so, and writes only within less than a duration of a renewal), or its `renewTime`
/// is more than two durations old by the wall clock (a lease left long ago is taken at
/// start-up without waiting; clocks may differ by up to a duration).
fn expired(spec: &LeaseSpec, unchanged_for: Duration, now: Timestamp) -> bool {
    let seconds = spec.lease_duration_seconds.unwrap_or(15).max(1);
    let duration = Duration::from_secs(seconds as u64);
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    unchanged_for > duration || renewed.0 + SignedDuration::from_secs(2 * i64::from(seconds)) < now
}

/// Says when leadership changes.
fn publish(leading: &watch::Sender<bool>, held: bool, elector: &LeaderElector) {
    if *leading.borrow() != held {
        tracing::info!(lease = %elector.name, identity = %elector.identity, leader = held, "leadership changed");
        let _ = leading.send(held);
    }
}

#[cfg(test)]
mod tests {
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
    async fn a_renewal_that_hangs_closes_the_fence_when_the_validity_ends_and_the_leader_recovers()
    {
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
}

#[cfg(test)]
mod timing_tests {
    use super::*;

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
}
