//! Workflows, pure: the file format ([`file`]), its validation into a checked
//! [`Workflow`] ([`validate`]), `${{ }}` templates and `when` conditions
//! ([`template`]), task outputs ([`outputs`]) and the state machine of one run
//! ([`engine`]). No I/O, no clock, no etcd or gRPC: the leader
//! (`augur-coordinator/src/leader/workflows/`) feeds the engine inputs and
//! carries out its effects.

pub mod engine;
pub mod file;
pub mod outputs;
pub mod template;
pub mod validate;

#[cfg(test)]
mod tests;

pub use engine::{Effect, Input, InstanceState, JobOutcome, RunOutcome, RunState, RunStatus};
pub use file::{Trigger, WorkflowFile};
pub use outputs::{OutputValue, Outputs};
pub use validate::{load, validate, ForEach, Task, ValidationError, Workflow};
