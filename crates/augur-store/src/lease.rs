//! A lease kept alive in the background. Workers register under one and leaders
//! campaign under one; when it cannot be kept alive (etcd says it expired, or no
//! refresh succeeded for a whole TTL), `lost()` fires so the owner stops acting on
//! what the lease guaranteed.

use std::time::Duration;

use etcd_client::Client;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use crate::Result;

/// A granted lease and its keep-alive task. Dropping the handle stops the
/// keep-alive (the lease then expires after its TTL); `revoke` ends it at once.
pub struct LeaseHandle {
    id: i64,
    ttl: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
    client: Client,
}

impl LeaseHandle {
    /// Grants a lease of `ttl` (rounded up to whole seconds, at least 1 s) and
    /// starts refreshing it every TTL/3.
    pub async fn grant(client: &Client, ttl: Duration) -> Result<Self> {
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let mut c = client.clone();
        let granted = c.lease_grant(secs, None).await?;
        let id = granted.id();
        let ttl = Duration::from_secs(secs as u64);
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        // Fate of this task: it ends when the handle is dropped or revoked, or
        // when the lease is lost (which it reports through `lost`).
        tokio::spawn(
            keep_alive(client.clone(), id, ttl, lost.clone(), stop.clone())
                .instrument(info_span!("lease_keepalive", lease_id = id)),
        );
        Ok(LeaseHandle {
            id,
            ttl,
            lost,
            stop,
            client: client.clone(),
        })
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Fires once the lease is (or must be presumed) expired.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Revokes the lease now: keys attached to it are deleted at once.
    pub async fn revoke(self) -> Result<()> {
        self.stop.cancel();
        let mut c = self.client.clone();
        c.lease_revoke(self.id).await?;
        Ok(())
    }
}

/// Revokes the lease `id` (its keys go with it). A lease etcd does not know
/// (expired, or revoked already) counts as revoked.
pub async fn revoke_id(client: &Client, id: i64) -> Result<()> {
    let mut c = client.clone();
    match c.lease_revoke(id).await {
        Ok(_) => Ok(()),
        Err(etcd_client::Error::GRpcStatus(status)) if status.message().contains("not found") => {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

impl Drop for LeaseHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn keep_alive(
    client: Client,
    id: i64,
    ttl: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let period = (ttl / 3).max(Duration::from_millis(200));
    let mut last_ok = Instant::now();
    let mut stream = None;
    loop {
        if last_ok.elapsed() >= ttl {
            warn!(
                lease_id = id,
                "lease not refreshed for a whole ttl; presuming it expired"
            );
            lost.cancel();
            return;
        }
        if stream.is_none() {
            let mut c = client.clone();
            match c.lease_keep_alive(id).await {
                Ok(pair) => stream = Some(pair),
                Err(e) => debug!(lease_id = id, error = %e, "lease keep-alive stream failed"),
            }
        }
        if let Some((keeper, responses)) = stream.as_mut() {
            let refreshed = async {
                keeper.keep_alive().await?;
                responses.message().await
            };
            match tokio::time::timeout(period, refreshed).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => last_ok = Instant::now(),
                Ok(Ok(Some(_))) => {
                    warn!(lease_id = id, "etcd says the lease expired");
                    lost.cancel();
                    return;
                }
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => stream = None,
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}
