//! What a worker says about itself when it registers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::WorkerId;

/// A worker's registration, stored under its own lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: WorkerId,
    /// Concurrent slots it offers.
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    /// Augur version it runs.
    pub version: String,
    /// `process` or `null`.
    pub executor: String,
    pub registered_at_ms: i64,
    /// The etcd lease it registered under: a new lease is a new incarnation.
    pub lease_id: i64,
    /// Set by `augur drain`: take no new work.
    #[serde(default)]
    pub draining: bool,
    /// What the worker offers to jobs (`None`: it did not say; placement
    /// then counts slots only).
    #[serde(default)]
    pub capacity: Option<Capacity>,
}

/// CPU and memory a worker offers to jobs: its machine's, or its cgroup's
/// limits where those are lower.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl WorkerInfo {
    /// Whether this worker satisfies every constraint of a job.
    pub fn matches(&self, constraints: &BTreeMap<String, String>) -> bool {
        constraints
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|have| have == v))
    }
}
