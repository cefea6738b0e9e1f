//! Our one lease of `ttl`: granted lazily by the first operation that needs it, kept alive by
//! one keepalive per lease-using call, re-granted when etcd reports it gone or the ttl changed.

use super::client::Client;
use super::connection::lock;
use super::retry::Failed;
use super::EtcdDcs;
use crate::DcsError;
use std::future::Future;
use std::time::Duration;
use tokio::sync::MutexGuard;
use tokio::time::{timeout_at, Instant};
use tonic::Status;
use tracing::{info, warn};

pub(super) struct LeaseState {
    id: Option<i64>,
    /// The ttl `id` was granted with.
    granted: Duration,
}

impl LeaseState {
    pub fn new() -> LeaseState {
        LeaseState {
            id: None,
            granted: Duration::ZERO,
        }
    }
}

/// The lease state, locked for one lease-using operation, with a live lease and the operation's
/// deadline.
pub(super) struct Leased<'a> {
    state: MutexGuard<'a, LeaseState>,
    pub lease: i64,
    pub deadline: Instant,
}

fn ttl_seconds(ttl: Duration) -> i64 {
    // etcd leases have whole seconds; round up so keys never expire earlier than asked.
    (ttl.as_secs_f64().ceil() as i64).max(1)
}

impl EtcdDcs {
    /// Locks the lease state (so that concurrent callers never grant two leases) and makes sure
    /// we hold a live lease, all within one `retry_timeout` from now.
    pub(super) async fn leased(&self, doing: &'static str) -> Result<Leased<'_>, DcsError> {
        let deadline = self.deadline();
        let mut state = timeout_at(deadline, self.lease.lock())
            .await
            .map_err(|_| self.timed_out(doing))?;
        let lease = self.ensure_lease(&mut state, deadline).await?;
        Ok(Leased {
            state,
            lease,
            deadline,
        })
    }

    /// Keeps our lease alive (one keepalive), granting a new one if there is none, etcd lost it
    /// or the ttl changed.
    async fn ensure_lease(&self, st: &mut LeaseState, deadline: Instant) -> Result<i64, DcsError> {
        let ttl = *lock(&self.ttl);
        if st.id.is_some() && st.granted != ttl {
            info!(member = self.label(), old = ?st.granted, new = ?ttl, "ttl changed; taking a new lease");
            // Not revoked: that would drop the leader key at once. The old lease just expires,
            // and the member and leader keys move to the new lease on their next write.
            self.forget_lease(st);
        }
        if let Some(id) = st.id {
            let answer = self
                .retry("keeping the lease alive", deadline, |c| async move {
                    c.lease_keep_alive(id).await
                })
                .await;
            match answer {
                // etcd answers a keepalive of an unknown lease with TTL 0.
                Ok(resp) if resp.ttl > 0 => return Ok(id),
                Ok(_) | Err(Failed::LeaseGone(_)) => {
                    warn!(
                        member = self.label(),
                        lease = id,
                        "our etcd lease expired; granting a new one"
                    );
                    self.forget_lease(st);
                }
                Err(Failed::Dcs(e)) => return Err(e),
            }
        }
        let seconds = ttl_seconds(ttl);
        let granted = self
            .retry("granting a lease", deadline, |c| async move {
                c.lease_grant(seconds).await
            })
            .await?;
        if !granted.error.is_empty() || granted.id == 0 {
            return Err(DcsError::Rejected {
                doing: "granting a lease",
                message: format!("etcd granted no lease: {}", granted.error),
            });
        }
        info!(
            member = self.label(),
            lease = granted.id,
            ttl = seconds,
            "granted etcd lease"
        );
        st.id = Some(granted.id);
        st.granted = ttl;
        Ok(granted.id)
    }

    fn forget_lease(&self, st: &mut LeaseState) {
        st.id = None;
        lock(&self.member_written).take();
    }

    /// Runs `op` with our lease; if etcd says the lease is gone, grants a new one and tries once
    /// more. Returns the result and the lease it was obtained with.
    pub(super) async fn on_lease<T, F, Fut>(
        &self,
        leased: &mut Leased<'_>,
        doing: &'static str,
        mut op: F,
    ) -> Result<(T, i64), DcsError>
    where
        F: FnMut(Client, i64) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let (lease, deadline) = (leased.lease, leased.deadline);
        match self.retry(doing, deadline, |c| op(c, lease)).await {
            Ok(v) => Ok((v, lease)),
            Err(Failed::LeaseGone(_)) => {
                warn!(
                    member = self.label(),
                    lease, doing, "our etcd lease disappeared; granting a new one and retrying"
                );
                self.forget_lease(&mut leased.state);
                let lease = self.ensure_lease(&mut leased.state, deadline).await?;
                leased.lease = lease;
                let v = self.retry(doing, deadline, |c| op(c, lease)).await?;
                Ok((v, lease))
            }
            Err(Failed::Dcs(e)) => Err(e),
        }
    }

    /// `Lease.LeaseRevoke` of our lease, if we have one: our member and leader keys go at once.
    pub(super) async fn revoke_lease(&self) -> Result<(), DcsError> {
        const DOING: &str = "revoking the lease";
        let deadline = self.deadline();
        let mut st = timeout_at(deadline, self.lease.lock())
            .await
            .map_err(|_| self.timed_out(DOING))?;
        let Some(id) = st.id.take() else {
            return Ok(());
        };
        lock(&self.member_written).take();
        let revoked = self
            .retry(DOING, deadline, |c| async move { c.lease_revoke(id).await })
            .await;
        match revoked {
            Ok(_) | Err(Failed::LeaseGone(_)) => {
                info!(
                    member = self.label(),
                    lease = id,
                    "released the etcd lease: our member and leader keys are gone"
                );
                Ok(())
            }
            Err(Failed::Dcs(e)) => {
                // Keep it so that a later call can try again.
                st.id = Some(id);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(ttl_seconds(Duration::from_secs(30)), 30);
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
    }
}
