//! Run history: one [`RunRecord`] per finished attempt, keyed by finish time so
//! that a range read is chronological and retention deletes the oldest first.
//!
//! The leader writes a record in the same fenced transaction as the job's
//! terminal (or retry) transition ([`RunHistory::put_op`]), so a record exists
//! exactly when its transition is durable. Readers page through the history in
//! finish order ([`RunHistory::list`]); the trainer reads it whole
//! ([`RunHistory::all_since`]), which retention ([`RunHistory::purge`]) keeps
//! bounded. A record that does not decode is skipped with a warning: one bad
//! value must not hide the rest of the history nor stop training.

use augur_core::RunRecord;
use etcd_client::{Client, GetOptions, SortOrder, SortTarget, Txn, TxnOp};

use crate::codec::{decode, encode};
use crate::jobs::StoreLimits;
use crate::keys::{prefix_end, Keys};
use crate::leadership::Fence;
use crate::{Result, StoreError};

/// Records read per etcd range request.
const READ_CHUNK: usize = 500;

/// Read and write access to the run history.
#[derive(Clone)]
pub struct RunHistory {
    client: Client,
    keys: Keys,
    limits: StoreLimits,
}

impl RunHistory {
    pub fn new(client: Client, keys: Keys, limits: StoreLimits) -> Self {
        RunHistory {
            client,
            keys,
            limits,
        }
    }

    /// The put of `run` under its history key, for the caller's fenced
    /// transaction (the one that makes the attempt's transition durable).
    pub fn put_op(&self, run: &RunRecord) -> TxnOp {
        TxnOp::put(self.key_of(run), encode(run), None)
    }

    /// The history key of `run`.
    pub fn key_of(&self, run: &RunRecord) -> String {
        self.keys.run(run.finished_at_ms, &run.job_id, run.attempt)
    }

    /// Up to `limit` records (at least one) in finish order, from those that
    /// finished at or after `since_ms` (all when `None`) and after the key
    /// `after_key` (a cursor returned by an earlier call). Returns the records
    /// and the cursor to continue from, `None` when the history is exhausted.
    pub async fn list(
        &self,
        since_ms: Option<i64>,
        limit: usize,
        after_key: Option<&str>,
    ) -> Result<(Vec<RunRecord>, Option<String>)> {
        let limit = limit.max(1);
        let prefix = self.keys.runs_prefix();
        let end = prefix_end(&prefix);
        let mut start = match since_ms {
            Some(ms) => self.keys.runs_since(ms).into_bytes(),
            None => prefix.into_bytes(),
        };
        if let Some(after) = after_key {
            let mut next = after.as_bytes().to_vec();
            next.push(0);
            start = start.max(next);
        }
        let mut runs = Vec::new();
        loop {
            let want = (limit - runs.len()).min(READ_CHUNK);
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(want as i64)
                .with_sort(SortTarget::Key, SortOrder::Ascend);
            let resp = self.client.clone().get(start.clone(), Some(opts)).await?;
            for kv in resp.kvs() {
                match decode::<RunRecord>(kv.key(), kv.value()) {
                    Ok(run) => runs.push(run),
                    Err(e) => tracing::warn!(error = %e, "skipping undecodable run record"),
                }
            }
            let Some(last) = resp.kvs().last() else {
                return Ok((runs, None));
            };
            let cursor = String::from_utf8_lossy(last.key()).into_owned();
            if !resp.more() {
                return Ok((runs, None));
            }
            if runs.len() >= limit {
                return Ok((runs, Some(cursor)));
            }
            start = last.key().to_vec();
            start.push(0);
        }
    }

    /// Every record that finished at or after `since_ms` (all when `None`), in
    /// finish order. Retention keeps this bounded (`--retention-count`).
    pub async fn all_since(&self, since_ms: Option<i64>) -> Result<Vec<RunRecord>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) = self.list(since_ms, 5_000, cursor.as_deref()).await?;
            all.extend(page);
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// How many records the history holds (undecodable ones included).
    pub async fn count(&self) -> Result<usize> {
        let count = crate::count_keys(&self.client, self.keys.runs_prefix()).await?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Deletes the records that finished before `cutoff_ms`, and beyond the
    /// newest `keep_max`, oldest first, in fenced transactions of at most
    /// `max_txn_ops` deletes. Returns how many were removed; a failed guard is
    /// [`StoreError::Fenced`] (what was deleted before it stays deleted, which
    /// is harmless: the next leader finishes the job).
    pub async fn purge(&self, fence: &Fence, cutoff_ms: i64, keep_max: usize) -> Result<usize> {
        let prefix = self.keys.runs_prefix();
        let end = prefix_end(&prefix);
        let over_count = self.count().await?.saturating_sub(keep_max);
        let cutoff_key = self.keys.runs_since(cutoff_ms);
        let per_txn = self.limits.max_txn_ops.max(1);
        let mut removed = 0usize;
        let mut start = prefix.into_bytes();
        loop {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(per_txn as i64)
                .with_sort(SortTarget::Key, SortOrder::Ascend)
                .with_keys_only();
            let resp = self.client.clone().get(start.clone(), Some(opts)).await?;
            let mut ops = Vec::new();
            let mut done = !resp.more();
            for kv in resp.kvs() {
                let too_old = kv.key() < cutoff_key.as_bytes();
                if !too_old && removed + ops.len() >= over_count {
                    // Keys ascend by finish time: everything after is newer.
                    done = true;
                    break;
                }
                ops.push(TxnOp::delete(kv.key().to_vec(), None));
            }
            if !ops.is_empty() {
                let count = ops.len();
                let txn = Txn::new().when(vec![fence.guard()]).and_then(ops);
                if !self.client.clone().txn(txn).await?.succeeded() {
                    return Err(StoreError::Fenced {
                        epoch: fence.epoch(),
                    });
                }
                removed += count;
            }
            match resp.kvs().last() {
                Some(last) if !done => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(removed),
            }
        }
    }
}
