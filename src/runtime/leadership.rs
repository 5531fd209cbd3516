//! The operator's side of leader election: wait for the Lease, notice its loss, and end
//! the term (release the Lease, or let it run out). The election itself is
//! [`super::leader`]; what a lost Lease means for writes is [`crate::fence`].

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{oneshot, watch};

use super::LeaderElection;
use super::controllers::Shutdown;
use super::leader::LeaderElector;
use crate::fence::Fence;

/// Longest wait for the lease release at shutdown (one GET and one PUT).
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// This replica's term as leader: the elector's task and how to end it.
pub(super) struct Leadership {
    is_leader: watch::Receiver<bool>,
    elector: tokio::task::JoinHandle<()>,
    release: oneshot::Sender<()>,
    fence: Fence,
    /// Gives up the lease if the aborted elector renewed it once more on its way out.
    elector_for_release: LeaderElector,
}

/// How the controllers' run ended, for what becomes of the Lease.
pub(super) enum Ending {
    /// They stopped: their last writes were a leader's; the Lease is released.
    Stopped,
    /// The shutdown grace ran out with reconciles cancelled mid-request: requests already
    /// sent may still land, so the Lease is left to run out rather than released.
    Cancelled,
    /// The Lease was lost: nothing more is sent, and a Lease the elector took back on its
    /// way out is given up.
    Lost,
}

/// Runs the elector on `fence` and waits until this replica leads; `None` when
/// `shutdown` comes first (the elector has then stopped and released what it held).
/// The elector's own Lease writes go through `client`, which must not be fenced.
pub(super) async fn lead(
    client: &kube::Client,
    election: &LeaderElection,
    fence: &Fence,
    shutdown: Shutdown,
) -> Option<Leadership> {
    let elector = |client: &kube::Client| {
        LeaderElector::new(
            client.clone(),
            &election.namespace,
            &election.lease_name,
            &election.identity,
            election.timing.clone(),
        )
    };
    let (leading, mut is_leader) = watch::channel(false);
    let (release, released) = oneshot::channel::<()>();
    let task = tokio::spawn(elector(client).run(fence.clone(), leading, released.map(|_| ())));
    tracing::info!(lease = %election.lease_name, identity = %election.identity, "waiting for leadership");
    tokio::select! {
        _ = is_leader.wait_for(|leader| *leader).map(|r| r.is_ok()) => Some(Leadership {
            is_leader,
            elector: task,
            release,
            fence: fence.clone(),
            elector_for_release: elector(client),
        }),
        () = shutdown => {
            let _ = release.send(());
            let _ = tokio::time::timeout(RELEASE_WAIT, task).await;
            None
        }
    }
}

impl Leadership {
    /// Resolves when this replica stops leading other than by a shutdown's release.
    pub(super) fn lost(&self, shutdown: Shutdown) -> BoxFuture<'static, ()> {
        let mut is_leader = self.is_leader.clone();
        async move {
            let _ = is_leader
                .wait_for(|leader| !*leader)
                .map(|r| r.is_ok())
                .await;
            if shutdown.peek().is_some() {
                // Released on purpose during shutdown: not a loss.
                futures::future::pending::<()>().await;
            }
        }
        .boxed()
    }

    /// Ends the term as `ending` says.
    pub(super) async fn end(self, ending: Ending) {
        match ending {
            Ending::Stopped => {
                let _ = self.release.send(());
                let _ = tokio::time::timeout(RELEASE_WAIT, self.elector).await;
            }
            Ending::Cancelled | Ending::Lost => {
                // Stop contending and writing at once.
                self.fence.close();
                self.elector.abort();
                if matches!(ending, Ending::Lost) {
                    let released = self.elector_for_release.release();
                    let _ = tokio::time::timeout(RELEASE_WAIT, released).await;
                }
            }
        }
    }
}
