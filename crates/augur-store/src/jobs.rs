//! Job records, the pending and finished indexes, and idempotency keys.
//!
//! Which index keys a record needs follows from its state alone, so a leader
//! write is simply "these records, now": [`JobStore::commit`] derives the puts
//! and deletes and sends them as fenced transactions, many jobs per transaction.

use augur_core::{JobId, JobRecord, JobState};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    WatchStream,
};

use crate::codec::{decode, encode, FinishedEntry, PendingEntry};
use crate::keys::{prefix_end, Keys};
use crate::leadership::Fence;
use crate::{Result, StoreError};

/// Limits of the etcd cluster the store writes to.
#[derive(Clone, Debug)]
pub struct StoreLimits {
    /// etcd's `--max-txn-ops` (default 128): operations per transaction.
    pub max_txn_ops: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits { max_txn_ops: 128 }
    }
}

/// Result of a submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// The idempotency key was taken: this is the job it names.
    Existing(JobId),
}

/// What `list` keeps besides states (empty fields: any).
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub name_contains: String,
    pub owner: String,
    pub worker_id: String,
    /// Newest first (the cursor then continues backwards).
    pub newest_first: bool,
    /// Submitted at or after / before these unix ms; 0: no bound.
    pub submitted_after_ms: i64,
    pub submitted_before_ms: i64,
}

/// Job ids are made within this of their record's submission time; key
/// bounds drawn from times are widened by it (the filter is exact).
const ID_CLOCK_SLACK_MS: i64 = 1_000;

impl JobFilter {
    fn keeps(&self, job: &JobRecord) -> bool {
        (self.name_contains.is_empty() || job.spec.name.contains(&self.name_contains))
            && (self.owner.is_empty() || job.owner.as_deref() == Some(self.owner.as_str()))
            && (self.worker_id.is_empty()
                || job.worker_id.as_ref().map(|w| w.as_str()) == Some(self.worker_id.as_str()))
            && (self.submitted_after_ms <= 0 || job.submitted_at_ms >= self.submitted_after_ms)
            && (self.submitted_before_ms <= 0 || job.submitted_at_ms < self.submitted_before_ms)
    }
}

/// One page of `list`.
#[derive(Clone, Debug, Default)]
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    /// Id to continue after, when there may be more.
    pub next_after: Option<JobId>,
}

/// Read and write access to jobs.
#[derive(Clone)]
pub struct JobStore {
    client: Client,
    keys: Keys,
    limits: StoreLimits,
}

/// One job's record to write, with operations that must share its transaction.
pub struct JobWrite<'a> {
    pub job: &'a JobRecord,
    pub extra: Vec<TxnOp>,
}

/// Most records one `list_filtered` page reads.
const MAX_SCANNED: usize = 10_000;

/// The first 10 characters of a ULID: its time, Crockford base32 (whose
/// characters sort as the times do).
fn ulid_time_prefix(ms: u64) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut out = [b'0'; 10];
    let mut t = ms;
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(t % 32) as usize];
        t /= 32;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Operations per job in a commit: the record plus two index keys.
const OPS_PER_JOB: usize = 3;

impl JobStore {
    pub fn new(client: Client, keys: Keys, limits: StoreLimits) -> Self {
        JobStore {
            client,
            keys,
            limits,
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Stores a new pending job, its pending-index entry and its idempotency key in
    /// one transaction. If the idempotency key is taken, nothing is written and
    /// the existing job's id is returned. Needs no leadership: any coordinator may
    /// accept a submission.
    pub async fn create(&self, job: &JobRecord) -> Result<CreateOutcome> {
        let job_key = self.keys.job(&job.id);
        let mut guards = vec![Compare::version(job_key.clone(), CompareOp::Equal, 0)];
        let mut ops = vec![
            TxnOp::put(job_key, encode(job), None),
            TxnOp::put(
                self.keys.pending(&job.id),
                encode(&pending_entry(job)),
                None,
            ),
        ];
        let mut otherwise = vec![];
        if let Some(key) = &job.spec.idempotency_key {
            let idem = self.keys.idempotency(key);
            guards.push(Compare::version(idem.clone(), CompareOp::Equal, 0));
            ops.push(TxnOp::put(idem.clone(), job.id.to_string(), None));
            otherwise.push(TxnOp::get(idem, None));
        }
        let txn = Txn::new().when(guards).and_then(ops).or_else(otherwise);
        let resp = self.client.clone().txn(txn).await?;
        if resp.succeeded() {
            return Ok(CreateOutcome::Created);
        }
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                if let Some(kv) = get.kvs().first() {
                    let text = String::from_utf8_lossy(kv.value());
                    let id = text.parse().map_err(|e: augur_core::ids::IdError| {
                        StoreError::Corrupt {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            reason: e.to_string(),
                        }
                    })?;
                    return Ok(CreateOutcome::Existing(id));
                }
            }
        }
        // The job key itself existed. Ids are fresh ULIDs, so that is this
        // very job, written by an earlier try of this call whose answer was
        // lost (the caller retries ambiguous failures): it is created. Anything
        // else would be an id collision, reported rather than hidden.
        if let Some(stored) = self.get(&job.id).await? {
            if stored.submitted_at_ms == job.submitted_at_ms && stored.spec == job.spec {
                return Ok(CreateOutcome::Created);
            }
        }
        Err(StoreError::AlreadyExists {
            key: self.keys.job(&job.id),
            reason: "another job has this id".into(),
        })
    }

    pub async fn get(&self, id: &JobId) -> Result<Option<JobRecord>> {
        let resp = self.client.clone().get(self.keys.job(id), None).await?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(decode(kv.key(), kv.value())?)),
            None => Ok(None),
        }
    }

    /// Jobs in id (= submission) order after `after`, keeping those whose state is
    /// in `states` (all when empty), up to `page_size`. Undecodable records are
    /// skipped with a warning so one bad value cannot hide every other job.
    pub async fn list(
        &self,
        states: &[JobState],
        page_size: usize,
        after: Option<&JobId>,
    ) -> Result<JobPage> {
        self.list_filtered(states, &JobFilter::default(), page_size, after)
            .await
    }

    /// As [`JobStore::list`], keeping only jobs `filter` keeps, in either
    /// direction. At most [`MAX_SCANNED`] records are read for one page, so
    /// a filter matching nothing answers a short page with a cursor rather
    /// than reading every job.
    pub async fn list_filtered(
        &self,
        states: &[JobState],
        filter: &JobFilter,
        page_size: usize,
        after: Option<&JobId>,
    ) -> Result<JobPage> {
        let keep = |job: &JobRecord| {
            (states.is_empty() || states.contains(&job.state)) && filter.keeps(job)
        };
        if filter.newest_first {
            return self.list_newest(keep, filter, page_size, after).await;
        }
        let prefix = self.keys.jobs_prefix();
        let end = prefix_end(&prefix);
        let mut start = match after {
            Some(id) => {
                let mut k = self.keys.job(id).into_bytes();
                k.push(0);
                k
            }
            None if filter.submitted_after_ms > 0 => {
                let t = (filter.submitted_after_ms - ID_CLOCK_SLACK_MS).max(0) as u64;
                format!("{prefix}{}", ulid_time_prefix(t)).into_bytes()
            }
            None => prefix.clone().into_bytes(),
        };
        let before_key = (filter.submitted_before_ms > 0).then(|| {
            let t = (filter.submitted_before_ms + ID_CLOCK_SLACK_MS) as u64;
            format!("{prefix}{}", ulid_time_prefix(t)).into_bytes()
        });
        let mut page = JobPage::default();
        let chunk = (page_size * 2).clamp(64, 1000) as i64;
        let mut scanned = 0usize;
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(chunk);
            let resp = self.client.clone().get(start.clone(), Some(opts)).await?;
            let kvs = resp.kvs();
            for kv in kvs {
                scanned += 1;
                match decode::<JobRecord>(kv.key(), kv.value()) {
                    Ok(job) if keep(&job) => {
                        page.jobs.push(job);
                        if page.jobs.len() == page_size {
                            page.next_after = page.jobs.last().map(|j| j.id);
                            return Ok(page);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "skipping undecodable job record"),
                }
            }
            let Some(last) = kvs.last() else {
                return Ok(page);
            };
            if !resp.more()
                || before_key
                    .as_ref()
                    .is_some_and(|b| last.key() >= b.as_slice())
            {
                return Ok(page);
            }
            start = last.key().to_vec();
            start.push(0);
            if scanned >= MAX_SCANNED {
                page.next_after = self.keys.job_id_of(&String::from_utf8_lossy(last.key()));
                return Ok(page);
            }
        }
    }

    /// Newest first. etcd sorts a descending range only after reading all
    /// of it (its limit then applies to the sorted result), which over
    /// 100,000 jobs costs a fifth of a second a call; job ids are ULIDs, so
    /// ranges of submission time are read in etcd's own (ascending) order
    /// instead, from the cursor backwards: a window holding more than one
    /// read's worth is halved, one holding too few is followed by a wider
    /// one.
    async fn list_newest(
        &self,
        keep: impl Fn(&JobRecord) -> bool,
        filter: &JobFilter,
        page_size: usize,
        after: Option<&JobId>,
    ) -> Result<JobPage> {
        let prefix = self.keys.jobs_prefix();
        let before = (filter.submitted_before_ms > 0)
            .then_some(filter.submitted_before_ms + ID_CLOCK_SLACK_MS);
        let mut upper: Vec<u8> = match (after, before) {
            (Some(id), _) => self.keys.job(id).into_bytes(),
            (None, Some(t)) => format!("{prefix}{}", ulid_time_prefix(t as u64)).into_bytes(),
            (None, None) => prefix_end(&prefix),
        };
        // The newest time a window may start at: ids from the future (a
        // skewed clock) are in the first window, which ends at the prefix end.
        let mut upper_ms = match (after, before) {
            (Some(id), _) => id.timestamp_ms() as i64,
            (None, Some(t)) => t,
            (None, None) => augur_core::now_ms() + 60_000,
        };
        // Windows older than this hold nothing the filter keeps.
        let floor_ms = (filter.submitted_after_ms - ID_CLOCK_SLACK_MS).max(0);
        let mut window_ms: i64 = 60_000;
        let limit = 1000i64;
        let mut page = JobPage::default();
        let mut scanned = 0usize;
        loop {
            let lower_ms = (upper_ms - window_ms).max(0);
            let lower = format!("{prefix}{}", ulid_time_prefix(lower_ms as u64)).into_bytes();
            // Keys only first: a window holding too many is narrowed
            // without moving their values.
            let probe = GetOptions::new()
                .with_range(upper.clone())
                .with_limit(limit)
                .with_keys_only();
            let probed = self.client.clone().get(lower.clone(), Some(probe)).await?;
            if probed.more() && window_ms > 1 {
                // The probe holds the window's oldest keys: how much time
                // they span says how narrow a window holds fewer.
                let time_of = |kv: Option<&etcd_client::KeyValue>| {
                    kv.and_then(|kv| self.keys.job_id_of(&String::from_utf8_lossy(kv.key())))
                        .map(|id| id.timestamp_ms() as i64)
                };
                let span = match (time_of(probed.kvs().first()), time_of(probed.kvs().last())) {
                    (Some(a), Some(b)) => (b - a).max(1),
                    _ => window_ms,
                };
                window_ms = (window_ms / 2).min(span / 2).max(1);
                continue;
            }
            if probed.kvs().is_empty() && lower_ms > floor_ms {
                upper = lower;
                upper_ms = lower_ms;
                window_ms = window_ms.saturating_mul(4).min(365 * 24 * 3_600_000);
                continue;
            }
            // Values of the newest keys of the window only, as many as the
            // page may still need (twice, for filters).
            let keys = probed.kvs();
            let want = ((page_size - page.jobs.len()) * 2).clamp(64, limit as usize);
            let from_idx = keys.len().saturating_sub(want);
            let from = match keys.get(from_idx) {
                Some(kv) if from_idx > 0 => kv.key().to_vec(),
                _ => lower.clone(),
            };
            let opts = GetOptions::new()
                .with_range(upper.clone())
                .with_limit(want as i64);
            let resp = self.client.clone().get(from.clone(), Some(opts)).await?;
            for kv in resp.kvs().iter().rev() {
                scanned += 1;
                match decode::<JobRecord>(kv.key(), kv.value()) {
                    Ok(job) if keep(&job) => {
                        page.jobs.push(job);
                        if page.jobs.len() == page_size {
                            page.next_after = page.jobs.last().map(|j| j.id);
                            return Ok(page);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "skipping undecodable job record"),
                }
            }
            upper = from;
            if scanned >= MAX_SCANNED {
                // Continue from here next time (a cursor needs a job id:
                // the oldest one read, if any).
                page.next_after = resp
                    .kvs()
                    .first()
                    .and_then(|kv| self.keys.job_id_of(&String::from_utf8_lossy(kv.key())));
                return Ok(page);
            }
            if from_idx > 0 {
                // The rest of this window, older than what was read.
                continue;
            }
            if lower_ms <= floor_ms {
                return Ok(page);
            }
            upper_ms = lower_ms;
            if (keys.len() as i64) < limit / 4 {
                window_ms = window_ms.saturating_mul(4).min(365 * 24 * 3_600_000);
            }
        }
    }

    /// How many jobs are pending: the entries of the pending index, counted
    /// by etcd without sending them.
    pub async fn count_pending(&self) -> Result<u64> {
        crate::count_keys(&self.client, self.keys.pending_prefix()).await
    }

    /// Every job not in a terminal state, and the revision they were read at (a
    /// watch started after it misses nothing).
    pub async fn load_active(&self) -> Result<(Vec<JobRecord>, i64)> {
        let prefix = self.keys.jobs_prefix();
        let end = prefix_end(&prefix);
        let mut start = prefix.into_bytes();
        let mut jobs = Vec::new();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(1000);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = self.client.clone().get(start.clone(), Some(opts)).await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            for kv in resp.kvs() {
                match decode::<JobRecord>(kv.key(), kv.value()) {
                    Ok(job) if !job.state.is_terminal() => jobs.push(job),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "undecodable job record left as it is"),
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok((jobs, revision)),
            }
        }
    }

    /// Writes these records as they are now, with the index keys their states
    /// call for, in as few fenced transactions as etcd's op limit allows. A failed
    /// guard is [`StoreError::Fenced`]: the caller is no longer leader.
    pub async fn commit(&self, fence: &Fence, jobs: &[&JobRecord]) -> Result<()> {
        let writes: Vec<JobWrite> = jobs
            .iter()
            .map(|job| JobWrite {
                job,
                extra: Vec::new(),
            })
            .collect();
        self.commit_writes(fence, writes).await
    }

    /// As [`JobStore::commit`], with extra operations that must land in the same
    /// transaction as their job's record (e.g. the run record of a finished
    /// attempt). A job's operations are never split across transactions.
    pub async fn commit_writes(&self, fence: &Fence, writes: Vec<JobWrite<'_>>) -> Result<()> {
        let budget = self.limits.max_txn_ops.saturating_sub(1).max(OPS_PER_JOB);
        let mut ops: Vec<TxnOp> = Vec::new();
        for write in writes {
            let mut job_ops = self.record_ops(write.job);
            job_ops.extend(write.extra);
            if !ops.is_empty() && ops.len() + job_ops.len() > budget {
                self.commit_ops(fence, std::mem::take(&mut ops)).await?;
            }
            ops.extend(job_ops);
        }
        if !ops.is_empty() {
            self.commit_ops(fence, ops).await?;
        }
        Ok(())
    }

    /// The put of a run record under its history key (as `RunHistory::put_op`).
    pub(crate) fn run_put_op(&self, run: &augur_core::RunRecord) -> TxnOp {
        TxnOp::put(
            self.keys.run(run.finished_at_ms, &run.job_id, run.attempt),
            encode(run),
            None,
        )
    }

    /// The record and the index keys its state calls for.
    fn record_ops(&self, job: &JobRecord) -> Vec<TxnOp> {
        let mut ops = Vec::with_capacity(OPS_PER_JOB);
        ops.push(TxnOp::put(self.keys.job(&job.id), encode(job), None));
        if job.state == JobState::Pending {
            ops.push(TxnOp::put(
                self.keys.pending(&job.id),
                encode(&pending_entry(job)),
                None,
            ));
        } else {
            ops.push(TxnOp::delete(self.keys.pending(&job.id), None));
        }
        if job.state.is_terminal() {
            let at = job.finished_at_ms.unwrap_or(job.submitted_at_ms);
            let entry = FinishedEntry {
                v: 1,
                idempotency_key: job.spec.idempotency_key.clone(),
            };
            ops.push(TxnOp::put(
                self.keys.finished(at, &job.id),
                encode(&entry),
                None,
            ));
        }
        ops
    }

    async fn commit_ops(&self, fence: &Fence, ops: Vec<TxnOp>) -> Result<()> {
        let txn = Txn::new().when(vec![fence.guard()]).and_then(ops);
        let resp = self.client.clone().txn(txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::Fenced {
                epoch: fence.epoch(),
            });
        }
        Ok(())
    }

    /// Starts watching the pending index after `revision`; new submissions made
    /// through any coordinator appear here.
    pub async fn watch_pending(&self, after_revision: i64) -> Result<PendingWatch> {
        let prefix = self.keys.pending_prefix();
        let stream = crate::watch_prefix(&self.client, &prefix, after_revision).await?;
        Ok(PendingWatch { stream, prefix })
    }

    /// Compacts etcd's history to `keep` revisions before the current one, so
    /// the database does not grow without bound; returns the revision compacted
    /// to, if any. Watches that far behind would be cancelled (their owners
    /// reload), so `keep` should be generous.
    pub async fn compact_history(&self, keep: i64) -> Result<Option<i64>> {
        let resp = self
            .client
            .clone()
            .get(
                self.keys.prefix(),
                Some(GetOptions::new().with_count_only()),
            )
            .await?;
        let current = resp.header().map(|h| h.revision()).unwrap_or(0);
        let target = current - keep;
        if target <= 0 {
            return Ok(None);
        }
        match self.client.clone().compact(target, None).await {
            Ok(_) => Ok(Some(target)),
            // Already compacted past it (by etcd's own auto-compaction): fine.
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("compacted") => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes finished jobs (record, finished-index entry, idempotency key) that
    /// finished before `cutoff_ms`, and beyond the newest `keep_max`. Returns how
    /// many were removed. Fenced: only the leader cleans up.
    pub async fn purge_finished(
        &self,
        fence: &Fence,
        cutoff_ms: i64,
        keep_max: usize,
    ) -> Result<usize> {
        let prefix = self.keys.finished_prefix();
        let end = prefix_end(&prefix);
        let count_resp = self
            .client
            .clone()
            .get(
                prefix.clone(),
                Some(GetOptions::new().with_range(end.clone()).with_count_only()),
            )
            .await?;
        let total = count_resp.count().max(0) as usize;
        let over_count = total.saturating_sub(keep_max);
        let cutoff_key = self.keys.finished_prefix() + &format!("{:020}", cutoff_ms.max(0));
        let per_txn = (self.limits.max_txn_ops / OPS_PER_JOB).max(1);
        let mut removed = 0usize;
        let mut start = prefix.into_bytes();
        loop {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(per_txn as i64)
                .with_sort(SortTarget::Key, SortOrder::Ascend);
            let resp = self.client.clone().get(start.clone(), Some(opts)).await?;
            let mut ops = Vec::new();
            for kv in resp.kvs() {
                let too_old = kv.key() < cutoff_key.as_bytes();
                if !too_old && removed >= over_count {
                    break;
                }
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                ops.push(TxnOp::delete(kv.key().to_vec(), None));
                if let Some(id) = self.keys.job_id_of(&key) {
                    ops.push(TxnOp::delete(self.keys.job(&id), None));
                }
                if let Ok(entry) = decode::<FinishedEntry>(kv.key(), kv.value()) {
                    if let Some(k) = entry.idempotency_key {
                        ops.push(TxnOp::delete(self.keys.idempotency(&k), None));
                    }
                }
                removed += 1;
            }
            if ops.is_empty() {
                return Ok(removed);
            }
            let txn = Txn::new().when(vec![fence.guard()]).and_then(ops);
            if !self.client.clone().txn(txn).await?.succeeded() {
                return Err(StoreError::Fenced {
                    epoch: fence.epoch(),
                });
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(removed),
            }
        }
    }
}

pub(crate) fn pending_entry(job: &JobRecord) -> PendingEntry {
    PendingEntry {
        v: 1,
        priority: job.spec.priority,
        not_before_ms: job.not_before_ms,
    }
}

/// A watch on the pending index.
pub struct PendingWatch {
    stream: WatchStream,
    prefix: String,
}

impl PendingWatch {
    /// Ids of jobs put into the pending index since the last call. Errors when
    /// the watch ends (the caller reloads and watches again).
    pub async fn next(&mut self) -> Result<Vec<JobId>> {
        crate::next_puts(&mut self.stream, &self.prefix, |id| id.parse().ok()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulid_time_prefixes_are_the_ids_own() {
        for _ in 0..100 {
            let id = JobId::generate();
            assert_eq!(
                ulid_time_prefix(id.timestamp_ms()),
                id.to_string()[..10],
                "{id}"
            );
        }
        assert!(ulid_time_prefix(999) < ulid_time_prefix(1000));
        assert_eq!(ulid_time_prefix(0), "0000000000");
    }
}
