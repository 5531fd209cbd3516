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
mod tests;
