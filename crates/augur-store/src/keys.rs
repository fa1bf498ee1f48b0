//! The etcd key layout. Every key Augur writes is built here from typed ids; no
//! key string is formatted anywhere else.
//!
//! ```text
//! {prefix}/election                          leader election (etcd Election API)
//! {prefix}/workers/{worker_id}               WorkerInfo, under the worker's lease
//! {prefix}/jobs/{job_id}                     JobRecord
//! {prefix}/index/pending/{job_id}            PendingEntry (priority, not_before)
//! {prefix}/index/finished/{ms:020}/{job_id}  FinishedEntry, for retention in age order
//! {prefix}/idempotency/{key}                 job id
//! {prefix}/runs/{ms:020}/{job_id}/{attempt} RunRecord, in finish order, retention bounded
//! {prefix}/model/current                    StoredModel: the current runtime model
//! {prefix}/config/placement                 placement configuration (JSON)
//! {prefix}/auth/tokens/{name}                TokenRecord: an API token's hash and role
//! {prefix}/workflows/runs/{run}              RunHeader: a workflow run's state and params
//! {prefix}/workflows/specs/{run}             SpecRecord: its workflow file, stored once
//! {prefix}/workflows/tasks/{run}/{t:04}      TaskRecord: one task's decision and items
//! {prefix}/workflows/instances/{run}/{t:04}/{k:05}  InstanceRecord: one task instance
//! {prefix}/workflows/active/{run}            "": runs not yet ended (the leader loads them)
//! {prefix}/workflows/idempotency/{key}       run id
//! ```

use augur_core::{JobId, WorkerId};

/// Builds keys under one prefix (default `/augur`).
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new("/augur")
    }
}

impl Keys {
    /// `prefix` without a trailing slash, e.g. `/augur`.
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn election(&self) -> String {
        format!("{}/election", self.prefix)
    }

    pub fn workers_prefix(&self) -> String {
        format!("{}/workers/", self.prefix)
    }

    pub fn worker(&self, id: &WorkerId) -> String {
        format!("{}{id}", self.workers_prefix())
    }

    pub fn jobs_prefix(&self) -> String {
        format!("{}/jobs/", self.prefix)
    }

    pub fn job(&self, id: &JobId) -> String {
        format!("{}{id}", self.jobs_prefix())
    }

    pub fn pending_prefix(&self) -> String {
        format!("{}/index/pending/", self.prefix)
    }

    pub fn pending(&self, id: &JobId) -> String {
        format!("{}{id}", self.pending_prefix())
    }

    pub fn finished_prefix(&self) -> String {
        format!("{}/index/finished/", self.prefix)
    }

    pub fn finished(&self, finished_at_ms: i64, id: &JobId) -> String {
        format!(
            "{}{:020}/{id}",
            self.finished_prefix(),
            finished_at_ms.max(0)
        )
    }

    pub fn schedules_prefix(&self) -> String {
        format!("{}/schedules/", self.prefix)
    }

    /// A schedule's key; names are validated to `[A-Za-z0-9._-]`.
    pub fn schedule(&self, name: &str) -> String {
        format!("{}{name}", self.schedules_prefix())
    }

    pub fn idempotency(&self, key: &str) -> String {
        format!("{}/idempotency/{key}", self.prefix)
    }

    pub fn runs_prefix(&self) -> String {
        format!("{}/runs/", self.prefix)
    }

    /// The first history key of runs that finished at or after `finished_at_ms`.
    pub fn runs_since(&self, finished_at_ms: i64) -> String {
        format!("{}{:020}", self.runs_prefix(), finished_at_ms.max(0))
    }

    /// A run's history key. Job ids of imported runs are free text, so `%` and
    /// `/` in them are escaped to keep the key's segments.
    pub fn run(&self, finished_at_ms: i64, job_id: &str, attempt: u32) -> String {
        let job_id = job_id.replace('%', "%25").replace('/', "%2F");
        format!("{}/{job_id}/{attempt}", self.runs_since(finished_at_ms))
    }

    pub fn model_current(&self) -> String {
        format!("{}/model/current", self.prefix)
    }

    pub fn placement_config(&self) -> String {
        format!("{}/config/placement", self.prefix)
    }

    pub fn tokens_prefix(&self) -> String {
        format!("{}/auth/tokens/", self.prefix)
    }

    /// A token's key; names are validated to `[A-Za-z0-9._-]`.
    pub fn token(&self, name: &str) -> String {
        format!("{}{name}", self.tokens_prefix())
    }

    /// Headers of workflow runs (ids sort by submission time).
    pub fn workflow_runs_prefix(&self) -> String {
        format!("{}/workflows/runs/", self.prefix)
    }

    /// A run's header; run ids are checked (`wf-` and a job-id-like ULID).
    pub fn workflow_run(&self, run: &str) -> String {
        format!("{}{run}", self.workflow_runs_prefix())
    }

    pub fn workflow_spec(&self, run: &str) -> String {
        format!("{}/workflows/specs/{run}", self.prefix)
    }

    /// Every task record of a run.
    pub fn workflow_tasks_prefix(&self, run: &str) -> String {
        format!("{}/workflows/tasks/{run}/", self.prefix)
    }

    pub fn workflow_task(&self, run: &str, task: usize) -> String {
        format!("{}{task:04}", self.workflow_tasks_prefix(run))
    }

    /// Every instance record of a run.
    pub fn workflow_instances_prefix(&self, run: &str) -> String {
        format!("{}/workflows/instances/{run}/", self.prefix)
    }

    /// Every instance record of one task of a run.
    pub fn workflow_task_instances_prefix(&self, run: &str, task: usize) -> String {
        format!("{}{task:04}/", self.workflow_instances_prefix(run))
    }

    pub fn workflow_instance(&self, run: &str, task: usize, index: usize) -> String {
        format!(
            "{}{index:05}",
            self.workflow_task_instances_prefix(run, task)
        )
    }

    pub fn workflow_active_prefix(&self) -> String {
        format!("{}/workflows/active/", self.prefix)
    }

    pub fn workflow_active(&self, run: &str) -> String {
        format!("{}{run}", self.workflow_active_prefix())
    }

    pub fn workflow_idempotency(&self, key: &str) -> String {
        format!("{}/workflows/idempotency/{key}", self.prefix)
    }

    /// The job id at the end of a `jobs/` or `index/*/` key.
    pub fn job_id_of(&self, key: &str) -> Option<JobId> {
        key.rsplit('/').next()?.parse().ok()
    }

    /// The worker id at the end of a `workers/` key.
    pub fn worker_id_of(&self, key: &str) -> Option<WorkerId> {
        WorkerId::new(key.strip_prefix(&self.workers_prefix())?).ok()
    }
}

/// The first key after every key starting with `prefix` (etcd range end).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_ids() {
        let keys = Keys::new("/augur/");
        let id = JobId::generate();
        assert_eq!(keys.job_id_of(&keys.job(&id)), Some(id));
        assert_eq!(keys.job_id_of(&keys.finished(5, &id)), Some(id));
        assert!(keys
            .finished(5, &id)
            .starts_with("/augur/index/finished/00000000000000000005/"));
        let w = WorkerId::new("w-1").unwrap();
        assert_eq!(keys.worker_id_of(&keys.worker(&w)), Some(w));
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
    }

    #[test]
    fn run_keys_sort_by_finish_time_and_keep_their_segments() {
        let keys = Keys::new("/augur");
        assert_eq!(
            keys.run(42, "01J0", 2),
            "/augur/runs/00000000000000000042/01J0/2"
        );
        assert!(keys.run(9, "z", 1) < keys.run(10, "a", 1));
        assert!(keys.run(10, "a", 1) >= keys.runs_since(10));
        assert_eq!(
            keys.run(-5, "a/b%", 1),
            "/augur/runs/00000000000000000000/a%2Fb%25/1"
        );
        assert_eq!(keys.model_current(), "/augur/model/current");
        assert_eq!(keys.placement_config(), "/augur/config/placement");
    }
}
