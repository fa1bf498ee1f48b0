//! What changed in a run since it was last written, as store writes.
//!
//! The leader keeps, per run, a copy of what etcd holds (`Persisted`); after
//! the engine handled a burst of inputs, [`diff`] compares the two and yields
//! the task, instance and header records to write. An instance whose record
//! is absent is `waiting` at its task's generation, so the thousands of
//! instances a fan-out starts with cost no write until they become jobs.

use std::collections::BTreeMap;

use augur_core::JobRecord;
use augur_store::workflows::{InstanceRecord, TaskRecord};
use augur_store::{RunHeader, WorkflowWrite};
use augur_workflow::engine::{Instance, TaskRun};
use augur_workflow::{InstanceState, RunState};

/// What etcd holds of a run (as far as this leader wrote or read it).
#[derive(Clone, Debug)]
pub(super) struct Persisted {
    pub header: RunHeader,
    pub tasks: Vec<TaskRun>,
}

/// What a diff changes in `Persisted` once its writes commit.
#[derive(Debug, Default)]
pub(super) struct Applied {
    header: Option<RunHeader>,
    /// Tasks copied whole.
    tasks: Vec<usize>,
    /// Single instances copied.
    instances: Vec<(usize, usize)>,
}

impl Persisted {
    pub fn apply(&mut self, state: &RunState, applied: Applied) {
        if let Some(h) = applied.header {
            self.header = h;
        }
        for t in applied.tasks {
            if let (Some(slot), Some(cur)) = (self.tasks.get_mut(t), state.tasks.get(t)) {
                *slot = cur.clone();
            }
        }
        for (t, k) in applied.instances {
            let (Some(slot), Some(cur)) = (
                self.tasks.get_mut(t),
                state.tasks.get(t).and_then(|r| r.instances.get(k)),
            ) else {
                continue;
            };
            if let Some(i) = slot.instances.get_mut(k) {
                *i = cur.clone();
            }
        }
    }
}

/// Absent from etcd means exactly this.
fn implicit(i: &Instance, generation: u32) -> bool {
    i.state == InstanceState::Waiting
        && i.generation == generation
        && i.message.is_none()
        && i.job_id.is_none()
        && i.outputs.is_empty()
        && !i.interrupted
}

fn task_fields_changed(a: &TaskRun, b: &TaskRun) -> bool {
    a.decided != b.decided
        || a.placeholder != b.placeholder
        || a.fanned != b.fanned
        || a.generation != b.generation
        || a.instances.len() != b.instances.len()
        || (a.fanned
            && a.instances
                .iter()
                .zip(&b.instances)
                .any(|(x, y)| x.item != y.item))
}

/// The writes that bring etcd from `old` to `state`: task records, then
/// instances (with the jobs created for them, taken from `jobs`), then the
/// header (with `Ended` when the run ended), in that order so that a prefix
/// of them committed is a state a new leader can resume.
pub(super) fn diff(
    state: &RunState,
    old: &Persisted,
    jobs: &mut BTreeMap<(usize, usize), JobRecord>,
) -> (Vec<WorkflowWrite>, Applied) {
    let run = &state.run_id;
    let mut writes = Vec::new();
    let mut applied = Applied::default();
    let empty = TaskRun::default();
    for (t, cur) in state.tasks.iter().enumerate() {
        let before = old.tasks.get(t).unwrap_or(&empty);
        let whole = task_fields_changed(cur, before);
        if whole {
            writes.push(WorkflowWrite::Task {
                run: run.clone(),
                task: t,
                record: TaskRecord::of(cur),
            });
            applied.tasks.push(t);
            if before.instances.len() > cur.instances.len() {
                writes.push(WorkflowWrite::Truncate {
                    run: run.clone(),
                    task: t,
                    from: cur.instances.len(),
                });
            }
        }
        // A task reset by a retry: records of the old generation at indices
        // the new one also has are overwritten, whatever they hold.
        let reset = whole && before.generation != cur.generation;
        for (k, i) in cur.instances.iter().enumerate() {
            let same = if reset {
                k >= before.instances.len() && implicit(i, cur.generation)
            } else {
                match before.instances.get(k) {
                    Some(p) => p == i,
                    None => implicit(i, cur.generation),
                }
            };
            if same && !jobs.contains_key(&(t, k)) {
                continue;
            }
            writes.push(WorkflowWrite::Instance {
                run: run.clone(),
                task: t,
                index: k,
                record: Box::new(InstanceRecord::of(i)),
                job: jobs.remove(&(t, k)).map(Box::new),
            });
            if !whole {
                applied.instances.push((t, k));
            }
        }
    }
    let mut header = old.header.clone();
    header.update_from(state);
    if header != old.header {
        writes.push(WorkflowWrite::Header(Box::new(header.clone())));
        if state.is_finished() {
            writes.push(WorkflowWrite::Ended { run: run.clone() });
        } else if old.header.status != augur_workflow::RunStatus::Running {
            writes.push(WorkflowWrite::Reopened { run: run.clone() });
        }
        applied.header = Some(header);
    }
    (writes, applied)
}
