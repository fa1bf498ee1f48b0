//! Placement for Augur: the policies, one scheduler that both the live leader
//! and the simulator drive, the discrete-event cluster simulator, importers of
//! recorded runs and traces, and `tune`, which replays runs under every policy
//! and predictor and recommends a configuration.
//!
//! Nothing here does I/O: importers take readers, renderers return strings.

pub mod import;
pub mod policy;
pub mod resources;
pub mod scheduler;

pub use policy::{PlacementConfig, Policy, SchedulerConfig, UnknownPolicy};
pub use scheduler::{CandidateScore, Decision, JobRequest, Scheduler, WorkerSpec};
pub mod metrics;
pub mod render;
pub mod sim;
pub mod tune;

pub use render::{render_svg, render_table};
pub use sim::{parse_workers, simulate, SimOptions, SimResult, WorkerGroup};
pub use tune::{tune, Recommendation, TuneError, TuneOptions, TuneReport};
#[cfg(test)]
mod tests;
/// The runtime predictor the scheduler uses (for callers that evaluate it).
pub use augur_predict as predict;
