//! Augur's worker: runs job attempts as process groups and keeps their results
//! safe on disk until the leader acknowledges them.
//!
//! - [`executor`] runs one attempt (spawn, timeout, cancel, resource usage, output tails).
//! - [`buffer`] is the durable queue of finished results not yet acknowledged.
//! - [`output`] keeps the full output tails of recent attempts for a retention period.
//!
//! Each module has its own `thiserror` error enum; none of them talks to the network.

// pub mod agent; (added by the agent author)
pub mod buffer;
pub mod executor;
pub mod output;
