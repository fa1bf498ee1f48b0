//! Periodic schedules, one key each. Users create, pause and delete them through
//! any coordinator (compare-and-swap on the key's revision); the leader records
//! the last tick it fired with a fenced write.

use augur_core::schedule::ScheduleRecord;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use crate::codec::{decode, encode};
use crate::keys::{prefix_end, Keys};
use crate::leadership::Fence;
use crate::{Result, StoreError};

/// A schedule and the revision it was read at.
#[derive(Clone, Debug)]
pub struct StoredSchedule {
    pub record: ScheduleRecord,
    pub mod_revision: i64,
}

/// Outcome of a conditional schedule write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Done,
    /// The key changed (or appeared, or vanished) since it was read.
    Conflict,
}

#[derive(Clone)]
pub struct ScheduleStore {
    client: Client,
    keys: Keys,
}

impl ScheduleStore {
    pub fn new(client: Client, keys: Keys) -> Self {
        ScheduleStore { client, keys }
    }

    /// Creates a schedule unless one of that name exists.
    pub async fn create(&self, record: &ScheduleRecord) -> Result<Written> {
        let key = self.keys.schedule(&record.name);
        let txn = Txn::new()
            .when(vec![Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(key, encode(record), None)]);
        let done = self.client.clone().txn(txn).await?.succeeded();
        Ok(if done {
            Written::Done
        } else {
            Written::Conflict
        })
    }

    pub async fn get(&self, name: &str) -> Result<Option<StoredSchedule>> {
        let resp = self
            .client
            .clone()
            .get(self.keys.schedule(name), None)
            .await?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(StoredSchedule {
                record: decode(kv.key(), kv.value())?,
                mod_revision: kv.mod_revision(),
            })),
            None => Ok(None),
        }
    }

    /// Every schedule (undecodable ones are skipped with a warning).
    pub async fn list(&self) -> Result<Vec<StoredSchedule>> {
        let prefix = self.keys.schedules_prefix();
        let opts = GetOptions::new().with_range(prefix_end(&prefix));
        let resp = self.client.clone().get(prefix, Some(opts)).await?;
        let mut out = Vec::new();
        for kv in resp.kvs() {
            match decode::<ScheduleRecord>(kv.key(), kv.value()) {
                Ok(record) => out.push(StoredSchedule {
                    record,
                    mod_revision: kv.mod_revision(),
                }),
                Err(e) => tracing::warn!(error = %e, "skipping undecodable schedule"),
            }
        }
        Ok(out)
    }

    /// Replaces a schedule if it is unchanged since `mod_revision` (user edits).
    pub async fn replace(&self, record: &ScheduleRecord, mod_revision: i64) -> Result<Written> {
        let key = self.keys.schedule(&record.name);
        let put = TxnOp::put(key.clone(), encode(record), None);
        self.if_unchanged(key, mod_revision, put).await
    }

    /// Records a fired tick: fenced (leader only) and conditional on the
    /// schedule being unchanged, so a concurrent pause or delete wins.
    pub async fn record_tick(
        &self,
        fence: &Fence,
        record: &ScheduleRecord,
        mod_revision: i64,
    ) -> Result<Written> {
        let key = self.keys.schedule(&record.name);
        let txn = Txn::new()
            .when(vec![
                fence.guard(),
                Compare::mod_revision(key.clone(), CompareOp::Equal, mod_revision),
            ])
            .and_then(vec![TxnOp::put(key.clone(), encode(record), None)]);
        let resp = self.client.clone().txn(txn).await?;
        if resp.succeeded() {
            return Ok(Written::Done);
        }
        // Tell a lost fence apart from a user edit.
        if !self.fence_holds(fence).await? {
            return Err(StoreError::Fenced {
                epoch: fence.epoch(),
            });
        }
        Ok(Written::Conflict)
    }

    async fn fence_holds(&self, fence: &Fence) -> Result<bool> {
        let txn = Txn::new().when(vec![fence.guard()]);
        Ok(self.client.clone().txn(txn).await?.succeeded())
    }

    /// Deletes schedule `name` if it is unchanged since it was read at
    /// `mod_revision` (so a check made on that read still holds).
    pub async fn delete_if(&self, name: &str, mod_revision: i64) -> Result<Written> {
        let key = self.keys.schedule(name);
        let delete = TxnOp::delete(key.clone(), None);
        self.if_unchanged(key, mod_revision, delete).await
    }

    /// Applies `op` if `key` is unchanged since `mod_revision`.
    async fn if_unchanged(&self, key: String, mod_revision: i64, op: TxnOp) -> Result<Written> {
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                key,
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then(vec![op]);
        let done = self.client.clone().txn(txn).await?.succeeded();
        Ok(if done {
            Written::Done
        } else {
            Written::Conflict
        })
    }
}
