//! What the leader needs of the store, as a trait: read a job, and commit a
//! batch of job records (each with the run record of the attempt it ends) in
//! fenced transactions. The etcd implementation is [`JobStore`]; the
//! in-memory one, [`MemoryJobStore`], keeps the same compare and fence
//! semantics so the leader's shell can be tested without etcd. No etcd type
//! crosses this boundary.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use augur_core::{JobId, JobRecord, RunRecord};

use crate::jobs::{JobStore, JobWrite};
use crate::leadership::Fence;
use crate::{Result, StoreError};

/// One job's new record, with the run record written in the same transaction.
#[derive(Clone, Debug)]
pub struct RecordWrite {
    pub job: JobRecord,
    pub run: Option<RunRecord>,
}

/// The store as the leader's shell uses it.
pub trait LeaderStore: Clone + Send + Sync + 'static {
    /// The job's record, if it exists.
    fn get_job(&self, id: &JobId) -> impl Future<Output = Result<Option<JobRecord>>> + Send;

    /// Writes every record (with its index keys and run record), guarded by
    /// `fence`; [`StoreError::Fenced`] if this leadership is over. A job's
    /// writes are never split across transactions.
    fn commit_batch(
        &self,
        fence: &Fence,
        writes: &[RecordWrite],
    ) -> impl Future<Output = Result<()>> + Send;
}

impl LeaderStore for JobStore {
    async fn get_job(&self, id: &JobId) -> Result<Option<JobRecord>> {
        self.get(id).await
    }

    async fn commit_batch(&self, fence: &Fence, writes: &[RecordWrite]) -> Result<()> {
        let writes: Vec<JobWrite> = writes
            .iter()
            .map(|w| JobWrite {
                job: &w.job,
                extra: w.run.iter().map(|run| self.run_put_op(run)).collect(),
            })
            .collect();
        self.commit_writes(fence, writes).await
    }
}

/// An in-memory store with etcd's fencing semantics: commits carry a fence,
/// and fail as [`StoreError::Fenced`] once a newer epoch has been elected
/// ([`MemoryJobStore::elect`]). It can also be told to fail the next commits
/// as if etcd were unreachable.
#[derive(Clone, Default)]
pub struct MemoryJobStore {
    inner: Arc<Mutex<Memory>>,
}

#[derive(Default)]
struct Memory {
    /// The epoch of the current leadership (the election key's create revision).
    epoch: i64,
    jobs: HashMap<JobId, JobRecord>,
    /// Run records by (job, attempt).
    runs: BTreeMap<(String, u32), RunRecord>,
    /// Transactions committed so far.
    commits: u64,
    /// Commits still to fail with a transport error.
    failing: u32,
}

impl MemoryJobStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A leadership of `epoch` begins; fences of older epochs fail from now on.
    pub fn elect(&self, epoch: i64) -> Fence {
        self.lock().epoch = epoch;
        Fence::for_epoch(b"memory/election".to_vec(), epoch)
    }

    /// The next `n` commits fail as if etcd were unreachable.
    pub fn fail_next_commits(&self, n: u32) {
        self.lock().failing = n;
    }

    /// Puts a record as a submission would (no fence: followers write these).
    pub fn insert(&self, job: JobRecord) {
        self.lock().jobs.insert(job.id, job);
    }

    pub fn job(&self, id: &JobId) -> Option<JobRecord> {
        self.lock().jobs.get(id).cloned()
    }

    pub fn jobs(&self) -> Vec<JobRecord> {
        self.lock().jobs.values().cloned().collect()
    }

    pub fn runs(&self) -> Vec<RunRecord> {
        self.lock().runs.values().cloned().collect()
    }

    pub fn commits(&self) -> u64 {
        self.lock().commits
    }
}

impl LeaderStore for MemoryJobStore {
    async fn get_job(&self, id: &JobId) -> Result<Option<JobRecord>> {
        Ok(self.job(id))
    }

    async fn commit_batch(&self, fence: &Fence, writes: &[RecordWrite]) -> Result<()> {
        let mut memory = self.lock();
        if memory.failing > 0 {
            memory.failing -= 1;
            return Err(StoreError::Unavailable("memory store told to fail".into()));
        }
        if fence.epoch() != memory.epoch {
            return Err(StoreError::Fenced {
                epoch: fence.epoch(),
            });
        }
        for write in writes {
            memory.jobs.insert(write.job.id, write.job.clone());
            if let Some(run) = &write.run {
                memory
                    .runs
                    .insert((run.job_id.clone(), run.attempt), run.clone());
            }
        }
        memory.commits += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_core::{JobSpecInput, WorkerId};

    fn job() -> JobRecord {
        let spec = JobSpecInput {
            name: "t".into(),
            command: "true".into(),
            ..Default::default()
        }
        .validate()
        .expect("valid spec");
        JobRecord::new(JobId::generate(), spec, 1_000)
    }

    fn write(job: &JobRecord) -> [RecordWrite; 1] {
        [RecordWrite {
            job: job.clone(),
            run: None,
        }]
    }

    #[tokio::test]
    async fn an_older_fence_cannot_commit_after_a_new_election() {
        let store = MemoryJobStore::new();
        let old = store.elect(5);
        let mut record = job();
        store
            .commit_batch(&old, &write(&record))
            .await
            .expect("current leader commits");
        let _new = store.elect(9);
        record.worker_id = Some(WorkerId::new("w1").expect("id"));
        let err = store
            .commit_batch(&old, &write(&record))
            .await
            .expect_err("deposed leader is fenced");
        assert!(matches!(err, StoreError::Fenced { epoch: 5 }));
        assert_eq!(store.job(&record.id).and_then(|j| j.worker_id), None);
        assert_eq!(store.commits(), 1);
    }

    #[tokio::test]
    async fn a_failing_commit_changes_nothing() {
        let store = MemoryJobStore::new();
        let fence = store.elect(1);
        store.fail_next_commits(1);
        let record = job();
        let write = write(&record);
        assert!(store.commit_batch(&fence, &write).await.is_err());
        assert!(store.job(&record.id).is_none());
        store
            .commit_batch(&fence, &write)
            .await
            .expect("second try commits");
        assert!(store.job(&record.id).is_some());
    }
}
