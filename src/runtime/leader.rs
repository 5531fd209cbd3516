//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only
//! one reconciles. Written here rather than taken from a crate: the maintained crates
//! rely on server-side-apply conflicts, while this uses plain optimistic concurrency
//! (`resourceVersion`), which every apiserver (and the test apiserver) enforces.
//!
//! Rules: the holder renews every `renew_every`; anyone may take the lease once
//! `renewTime + leaseDurationSeconds` has passed; a holder that cannot renew within its
//! own lease duration (an error, or a request that hangs) stops being leader at once, a
//! renewal period before the lease expires (the caller then stops writing); a
//! graceful shutdown releases the lease so a standby takes over without waiting.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

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

/// One contender for a Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
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
        if holder.is_some() && !ours && !expired(&spec, now) {
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

    /// Keeps trying and renewing until `stop` resolves, publishing whether this replica
    /// leads; releases the lease on the way out.
    pub async fn run(
        self,
        leading: watch::Sender<bool>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        // Leader only while the last renewal is safely within the lease: a standby may
        // take it over once it expires.
        let margin = self.timing.duration.saturating_sub(self.timing.renew_every);
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            // The lease is renewed as of the attempt's start (`try_acquire` stamps it
            // then), and an attempt that hangs (no client-side read timeout) must not keep
            // this replica leading past that margin.
            let started = tokio::time::Instant::now();
            let deadline = last_renewal.map_or(started + margin, |at| at + margin);
            let attempt = tokio::time::timeout_at(deadline, self.try_acquire()).await;
            let held = match attempt {
                Ok(Ok(held)) => {
                    last_renewal = held.then_some(started);
                    held
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, lease = %self.name, "lease renewal failed");
                    last_renewal.is_some_and(|at| at.elapsed() < margin)
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "lease renewal did not answer in time");
                    false
                }
            };
            if *leading.borrow() != held {
                tracing::info!(lease = %self.name, identity = %self.identity, leader = held, "leadership changed");
                let _ = leading.send(held);
            }
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(self.timing.renew_every) => {}
            }
        }
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

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    renewed.0 + duration < now
}
