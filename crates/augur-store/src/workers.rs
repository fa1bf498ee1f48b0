//! Worker registrations: the leader writes each attached worker's
//! [`WorkerInfo`] under a lease it grants for that worker and renews while the
//! worker's stream heartbeats, so a dead worker's key disappears when the lease
//! expires and the leader sees a delete event. Workers themselves hold no etcd
//! access.

use std::time::Duration;

use augur_core::{WorkerId, WorkerInfo};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, WatchStream,
};

use crate::codec::{decode, encode};
use crate::keys::{prefix_end, Keys};
use crate::leadership::Fence;
use crate::{Result, StoreError};

/// A change in the set of registered workers.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkerEvent {
    /// Registered or updated.
    Up(WorkerInfo),
    /// Its key is gone: lease expired or revoked.
    Down(WorkerId),
}

/// The worker registry.
#[derive(Clone)]
pub struct WorkerRegistry {
    client: Client,
    keys: Keys,
}

impl WorkerRegistry {
    pub fn new(client: Client, keys: Keys) -> Self {
        WorkerRegistry { client, keys }
    }

    /// Grants a lease of `ttl` (whole seconds, at least 1) for a worker's
    /// registration. Nothing renews it until [`LeaseRenewer::renew`] is called.
    pub async fn grant(&self, ttl: Duration) -> Result<i64> {
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        Ok(self.client.clone().lease_grant(secs, None).await?.id())
    }

    /// Writes a worker's registration under its `lease_id`, only while
    /// `fence` holds (a deposed leader cannot register anyone).
    pub async fn register(&self, fence: &Fence, info: &WorkerInfo) -> Result<()> {
        let put = TxnOp::put(
            self.keys.worker(&info.id),
            encode(info),
            Some(PutOptions::new().with_lease(info.lease_id)),
        );
        let txn = Txn::new().when(vec![fence.guard()]).and_then(vec![put]);
        if self.client.clone().txn(txn).await?.succeeded() {
            Ok(())
        } else {
            Err(StoreError::Fenced {
                epoch: fence.epoch(),
            })
        }
    }

    /// A renewer of a worker's lease.
    pub async fn renewer(&self, lease_id: i64) -> Result<LeaseRenewer> {
        let (keeper, responses) = self.client.clone().lease_keep_alive(lease_id).await?;
        Ok(LeaseRenewer { keeper, responses })
    }

    /// Ends a worker's registration now (its key goes with the lease).
    pub async fn release(&self, lease_id: i64) -> Result<()> {
        crate::lease::revoke_id(&self.client, lease_id).await
    }

    /// Every registered worker and the revision read at.
    pub async fn list(&self) -> Result<(Vec<WorkerInfo>, i64)> {
        let prefix = self.keys.workers_prefix();
        let opts = GetOptions::new().with_range(prefix_end(&prefix));
        let resp = self.client.clone().get(prefix, Some(opts)).await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut workers = Vec::new();
        for kv in resp.kvs() {
            match decode::<WorkerInfo>(kv.key(), kv.value()) {
                Ok(w) => workers.push(w),
                Err(e) => tracing::warn!(error = %e, "skipping undecodable worker registration"),
            }
        }
        Ok((workers, revision))
    }

    pub async fn get(&self, id: &WorkerId) -> Result<Option<WorkerInfo>> {
        let resp = self.client.clone().get(self.keys.worker(id), None).await?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(decode(kv.key(), kv.value())?)),
            None => Ok(None),
        }
    }

    /// Marks a worker as draining (or not), keeping it under its own lease.
    /// Returns false if no such worker is registered.
    pub async fn set_draining(&self, id: &WorkerId, draining: bool) -> Result<bool> {
        loop {
            let key = self.keys.worker(id);
            let resp = self.client.clone().get(key.clone(), None).await?;
            let Some(kv) = resp.kvs().first() else {
                return Ok(false);
            };
            let mut info: WorkerInfo = decode(kv.key(), kv.value())?;
            info.draining = draining;
            let put = TxnOp::put(
                key.clone(),
                encode(&info),
                Some(PutOptions::new().with_lease(kv.lease())),
            );
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key,
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then(vec![put]);
            if self.client.clone().txn(txn).await?.succeeded() {
                return Ok(true);
            }
        }
    }

    /// Watches registrations after `revision`.
    pub async fn watch(&self, after_revision: i64) -> Result<WorkerWatch> {
        let prefix = self.keys.workers_prefix();
        let stream = crate::watch_prefix(&self.client, &prefix, after_revision).await?;
        Ok(WorkerWatch {
            stream,
            keys: self.keys.clone(),
            prefix,
        })
    }
}

/// Renews one lease on demand.
pub struct LeaseRenewer {
    keeper: LeaseKeeper,
    responses: LeaseKeepAliveStream,
}

impl LeaseRenewer {
    /// Renews the lease for its whole TTL; `false` once etcd says it expired.
    pub async fn renew(&mut self) -> Result<bool> {
        self.keeper.keep_alive().await?;
        match self.responses.message().await? {
            Some(resp) => Ok(resp.ttl() > 0),
            None => Err(StoreError::Unavailable(
                "lease keep-alive stream ended".into(),
            )),
        }
    }
}

/// A watch on the worker registry.
pub struct WorkerWatch {
    stream: WatchStream,
    keys: Keys,
    prefix: String,
}

impl WorkerWatch {
    /// The next batch of registry changes.
    pub async fn next(&mut self) -> Result<Vec<WorkerEvent>> {
        loop {
            let resp = crate::next_watch_response(&mut self.stream, &self.prefix).await?;
            let mut events = Vec::new();
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => match decode::<WorkerInfo>(kv.key(), kv.value()) {
                        Ok(info) => events.push(WorkerEvent::Up(info)),
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring undecodable worker registration")
                        }
                    },
                    EventType::Delete => {
                        if let Some(id) = self.keys.worker_id_of(&String::from_utf8_lossy(kv.key()))
                        {
                            events.push(WorkerEvent::Down(id));
                        }
                    }
                }
            }
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }
}
