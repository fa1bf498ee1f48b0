//! Worker registrations: each worker writes its [`WorkerInfo`] under its own
//! lease, so a dead worker's key disappears when the lease expires and the leader
//! sees a delete event.

use augur_core::{WorkerId, WorkerInfo};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchStream,
};

use crate::codec::{decode, encode};
use crate::keys::{prefix_end, Keys};
use crate::lease::LeaseHandle;
use crate::Result;

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

    /// Registers (or re-registers) a worker under `lease`.
    pub async fn register(&self, info: &WorkerInfo, lease: &LeaseHandle) -> Result<()> {
        let opts = PutOptions::new().with_lease(lease.id());
        self.client
            .clone()
            .put(self.keys.worker(&info.id), encode(info), Some(opts))
            .await?;
        Ok(())
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
