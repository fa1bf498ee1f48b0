//! Augur's domain: ids, validated job specs, job states and the pure transition
//! function, retry policy and worker descriptions.
//!
//! This crate does no I/O and knows nothing of etcd or gRPC: everything here is a
//! value or a function from values to values, so it can be property-tested.

pub mod auth;
pub mod ids;
pub mod job;
pub mod quantity;
pub mod retry;
pub mod run;
pub mod schedule;
pub mod spec;
pub mod transition;
pub mod worker;

pub use ids::{JobId, WorkerId};
pub use job::{CandidateNote, JobRecord, JobState, PlacementNote, Usage};
pub use retry::RetryPolicy;
pub use run::RunRecord;
pub use spec::{JobSpec, JobSpecInput, Resources, ValidationError};
pub use transition::{apply, AttemptOutcome, AttemptReport, Event, TransitionError};
pub use worker::{Capacity, WorkerInfo};

/// Current unix time in milliseconds. The only clock read in this crate's API
/// surface; pure functions take `now_ms` as an argument instead.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
