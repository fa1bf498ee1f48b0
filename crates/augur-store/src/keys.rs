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

    pub fn idempotency(&self, key: &str) -> String {
        format!("{}/idempotency/{key}", self.prefix)
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
}
