//! Augur's worker: runs job attempts as process groups and keeps their results
//! safe on disk until the leader acknowledges them.
//!
//! - [`executor`] runs one attempt (spawn, timeout, cancel, resource usage, output tails).
//! - [`buffer`] is the durable queue of finished results not yet acknowledged.
//! - [`output`] keeps the full output tails of recent attempts for a retention period.
//! - [`cgroup`] runs each attempt in a cgroup of its own with the job's limits (v1 and v2).
//! - [`capacity`] measures the CPU and memory this worker offers to jobs.
//!
//! Each module has its own `thiserror` error enum; none of them talks to the network.

pub mod agent;
pub mod buffer;
pub mod capacity;
pub mod cgroup;
mod convert;
mod drain;
pub mod executor;
pub mod output;

pub use agent::{run, WorkerConfig};
pub use capacity::detect as detect_capacity;

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Buffer(#[from] buffer::BufferError),
    #[error(transparent)]
    Output(#[from] output::OutputError),
    #[error("no leader elected")]
    NoLeader,
    #[error("cannot reach the leader: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream: {0}")]
    Stream(#[from] tonic::Status),
}
