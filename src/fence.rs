//! Leadership as a write fence: a replica writes (upstream, or to Kubernetes) only while
//! it can prove by its own clock that it holds the leader-election Lease.
//!
//! Knowing that another replica may lead is not enough to stop writing: a process that
//! was frozen (SIGSTOP, a cgroup freeze, a paused VM) wakes up with its work in flight
//! and no idea that time passed. So every write checks, synchronously and right before
//! it is sent, that the Lease was renewed less than its validity ago, measured on the
//! monotonic clock (which keeps counting while the process is stopped). The leader
//! elector (in the runtime) extends the validity after each renewal; nothing else
//! does, and checking costs no request.
//!
//! What is left: a freeze between the check and the send lets one request out late. A
//! SaaS API without conditional writes (no `If-Match`, no fencing token) cannot refuse
//! it; the validity ends a renewal period before a standby may take the Lease, so the
//! freeze has to fall in that microsecond window and outlast the margin to matter.
//!
//! The same gate refuses every write of a read-only client (`accessplane plan`), which
//! is not a matter of timing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Whether this replica may write now; cheap to clone. [`Fence::open`] (no leader
/// election) always may.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    lease: Option<Arc<Lease>>,
}

#[derive(Debug)]
struct Lease {
    /// Who this replica is in the Lease (`holderIdentity`), also written into create marks.
    identity: String,
    /// The Lease's duration: how long a standby waits after the last renewal.
    duration: Duration,
    /// Until when writes are allowed: set by each renewal, `None` while not leading.
    valid_until: Mutex<Option<Instant>>,
    /// When this replica last started leading (a renewal that found the fence closed).
    leading_since: Mutex<Option<Instant>>,
}

/// A write refused because this replica cannot prove it leads.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fenced(String);

impl Fence {
    /// No leader election: every write may go.
    pub fn open() -> Self {
        Self::default()
    }

    /// A fence that opens only while the Lease held as `identity` is valid (closed until
    /// the first renewal).
    pub fn for_lease(identity: &str, duration: Duration) -> Self {
        Self {
            lease: Some(Arc::new(Lease {
                identity: identity.into(),
                duration,
                valid_until: Mutex::new(None),
                leading_since: Mutex::new(None),
            })),
        }
    }

    /// Whether a write may be sent now. Call it right before sending.
    pub fn check(&self) -> Result<(), Fenced> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        let now = Instant::now();
        match lease.until() {
            Some(until) if now < until => Ok(()),
            Some(until) => Err(Fenced(format!(
                "write refused: the leader-election lease ran out {:.1} s ago (not renewed in time); another replica may lead",
                (now - until).as_secs_f64()
            ))),
            None => Err(Fenced(
                "write refused: this replica does not hold the leader-election lease".into(),
            )),
        }
    }

    /// Whether writes may go now.
    pub fn is_open(&self) -> bool {
        self.check().is_ok()
    }

    /// When the current validity ends (`None`: open for good, or not leading).
    pub fn valid_until(&self) -> Option<Instant> {
        self.lease.as_ref()?.until()
    }

    /// A renewal that started at `renewed` succeeded: writes may go for `valid_for` after
    /// it. Returns whether the fence had been closed (a first acquisition, or a lapse that
    /// this renewal ends: the caller must treat the lapse as a loss of leadership).
    pub fn renewed(&self, renewed: Instant, valid_for: Duration) -> bool {
        let Some(lease) = &self.lease else {
            return false;
        };
        let now = Instant::now();
        let mut until = lease.valid_until.lock().unwrap();
        let was_closed = until.is_none_or(|u| u <= now);
        *until = Some(renewed + valid_for);
        if was_closed && renewed + valid_for > now {
            *lease.leading_since.lock().unwrap() = Some(now);
        }
        was_closed
    }

    /// When this replica last started leading, while it leads: every write of another
    /// replica was sent before (its own fence had closed), so none can still arrive one
    /// request timeout later.
    pub fn leading_since(&self) -> Option<Instant> {
        let lease = self.lease.as_ref()?;
        self.is_open()
            .then(|| *lease.leading_since.lock().unwrap())?
    }

    /// Someone else holds the Lease (or it was released): no write from now on.
    pub fn close(&self) {
        if let Some(lease) = &self.lease {
            *lease.valid_until.lock().unwrap() = None;
        }
    }

    /// This replica's identity in the Lease, when leader election is on.
    pub fn identity(&self) -> Option<&str> {
        self.lease.as_deref().map(|l| l.identity.as_str())
    }

    /// The Lease's duration, when leader election is on.
    pub fn lease_duration(&self) -> Option<Duration> {
        self.lease.as_deref().map(|l| l.duration)
    }

    /// `client` with every request that is not a read (GET, which includes lists and
    /// watches) checked against this fence first; a refused one fails with
    /// `kube::Error::Service` holding [`Fenced`] (see [`is_fenced_kube`]).
    pub fn kube_client(&self, client: kube::Client) -> kube::Client {
        if self.lease.is_none() {
            return client;
        }
        let default_namespace = client.default_namespace().to_string();
        let fence = self.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let (fence, client) = (fence.clone(), client.clone());
            async move {
                if request.method() != http::Method::GET {
                    fence.check().map_err(|refused| {
                        tracing::warn!(
                            method = %request.method(),
                            path = request.uri().path(),
                            "{refused}"
                        );
                        kube::Error::Service(Box::new(refused))
                    })?;
                }
                client.send(request).await
            }
        });
        kube::Client::new(service, default_namespace)
    }
}

impl Lease {
    fn until(&self) -> Option<Instant> {
        *self.valid_until.lock().unwrap()
    }
}

/// Whether a Kubernetes error is a write the fence refused.
pub fn is_fenced_kube(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Service(e) if e.is::<Fenced>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_fence_is_open_only_within_the_validity_of_the_last_renewal() {
        let fence = Fence::for_lease("replica-a", Duration::from_secs(15));
        assert!(!fence.is_open(), "closed until the first renewal");
        assert_eq!(fence.identity(), Some("replica-a"));
        fence.renewed(Instant::now(), Duration::from_secs(10));
        assert!(fence.is_open());
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(fence.is_open());
        tokio::time::advance(Duration::from_millis(1)).await;
        let refused = fence.check().unwrap_err().to_string();
        assert!(refused.contains("ran out 0.0 s ago"), "{refused}");
        fence.renewed(Instant::now(), Duration::from_secs(10));
        assert!(fence.is_open(), "a later renewal opens it again");
        fence.close();
        assert!(!fence.is_open());
        assert!(Fence::open().is_open(), "no leader election: always open");
    }
}
