//! The state machine of one workflow run, pure like the leader's core:
//! [`RunState::handle`] takes an [`Input`] and the time and returns the
//! [`Effect`]s to carry out (create a job, cancel one, record the run's end).
//! No I/O, no clock; the state is serde-serialisable so it can be stored.
//!
//! Semantics (Airflow's, decided here where Airflow leaves a choice):
//! * A DAG task is decided once every instance of its direct upstream tasks is
//!   terminal. Its trigger rule ([`Trigger`]) then says run, `skipped` or
//!   `upstream_failed` (a `cancelled` upstream counts as failed). If it runs,
//!   `when` is evaluated (false: `skipped`), then `for_each` is expanded (a
//!   value that is not a list fails the task; an empty list skips it; more
//!   than [`MAX_INSTANCES`] fanned-out instances in the run, or items over
//!   [`MAX_ITEMS_BYTES`] in all, fail it). Instances wait
//!   (`waiting`) until fewer than `max_parallel` of the task run, then become
//!   jobs (`running`). A `when` or template that cannot be rendered fails the
//!   task (or instance) with the reason in its `message`.
//! * `finally` tasks are decided once every DAG task is done, whatever its
//!   state; their trigger is ignored (they have none).
//! * The run ends when every task is done: `failed` if any instance, DAG or
//!   finally, is `failed`, `upstream_failed` or `cancelled` (so a run whose
//!   failure was handled by a `one_failed` task is still failed), else
//!   `succeeded`.
//! * `Cancel` (and `Tick` past the run's timeout) cancels running jobs at
//!   once (their late results are ignored), skips everything else, finally
//!   tasks included, and ends the run `cancelled` (`timed_out`).
//! * `Retry` on an ended run re-runs failed, upstream_failed, cancelled and
//!   cancel-skipped instances and every task downstream of them (those from
//!   scratch, so a `for_each` is expanded anew), plus the finally tasks,
//!   keeping succeeded instances; `from: T` re-runs T and its downstream.
//!   A re-run instance gets a new idempotency key (`.../r{generation}`).

mod advance;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use augur_core::JobSpec;
use serde::{Deserialize, Serialize};

use crate::file::Trigger;
use crate::outputs::{OutputValue, Outputs};
use crate::template::Context;
use crate::validate::{param_list, render_spec, ForEach, Workflow, MAX_INSTANCES, MAX_ITEMS_BYTES};
use crate::ValidationError;

/// A task instance's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Pending,
    Waiting,
    Running,
    Succeeded,
    Failed,
    Skipped,
    UpstreamFailed,
    Cancelled,
}

impl InstanceState {
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            InstanceState::Pending | InstanceState::Waiting | InstanceState::Running
        )
    }

    /// Failed, upstream_failed or cancelled.
    pub fn is_bad(self) -> bool {
        matches!(
            self,
            InstanceState::Failed | InstanceState::UpstreamFailed | InstanceState::Cancelled
        )
    }
}

/// A run's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

/// How a task instance's job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    Succeeded,
    Failed,
    Cancelled,
}

/// What happened to the run.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Started,
    JobFinished {
        task: String,
        item: Option<usize>,
        outcome: JobOutcome,
        outputs: Outputs,
        /// Attempts the job made.
        attempts: u32,
        /// Why it ended as it did (kept on the instance), if anything to say.
        message: Option<String>,
    },
    /// The run was loaded from storage: decide and start whatever can be.
    Resume,
    Cancel,
    Retry {
        from: Option<String>,
    },
    /// Time passed (checks the run's timeout).
    Tick,
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    CreateJob {
        task: String,
        item: Option<usize>,
        spec: Box<JobSpec>,
        idempotency_key: String,
    },
    CancelJob {
        task: String,
        item: Option<usize>,
    },
    RunFinished(RunOutcome),
    /// An input that was refused (a retry of a running run, an unknown task).
    Rejected(String),
}

/// What a finished job says, for [`Input::JobFinished`].
struct JobResult {
    outcome: JobOutcome,
    outputs: Outputs,
    attempts: u32,
    message: Option<String>,
}

/// One task instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The `for_each` item; `None` when the task is not fanned out.
    pub item: Option<String>,
    pub state: InstanceState,
    /// Bumped each time a retry resets the instance (part of its key).
    pub generation: u32,
    #[serde(default)]
    pub outputs: Outputs,
    #[serde(default)]
    pub message: Option<String>,
    /// Skipped because the run was cancelled or timed out.
    #[serde(default)]
    pub interrupted: bool,
    /// The job running this instance (set by the caller when it creates it).
    #[serde(default)]
    pub job_id: Option<String>,
    /// Attempts its job made (known once it finished).
    #[serde(default)]
    pub attempts: u32,
}

/// One task of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRun {
    /// Its trigger, `when` and `for_each` have been evaluated.
    pub decided: bool,
    /// Decided not to run: one instance stands for the task's state.
    pub placeholder: bool,
    pub fanned: bool,
    pub instances: Vec<Instance>,
    /// Generation given to instances created from now on.
    pub generation: u32,
    /// Instances not terminal (kept by `set_state` and `recount`, so a
    /// 10,000-wide fan-out is not rescanned on every result).
    #[serde(default)]
    pub open: usize,
    /// Instances running.
    #[serde(default)]
    pub running: usize,
    /// No instance before this one is waiting.
    #[serde(default)]
    pub cursor: usize,
}

impl TaskRun {
    fn done(&self) -> bool {
        self.decided && self.open == 0
    }

    /// Recomputes the counters after instances were changed wholesale (or
    /// after the task was loaded from storage).
    pub fn recount(&mut self) {
        self.open = self
            .instances
            .iter()
            .filter(|i| !i.state.is_terminal())
            .count();
        self.running = self
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count();
        self.cursor = 0;
    }

    /// Changes one instance's state, keeping the counters.
    fn set_state(&mut self, k: usize, state: InstanceState) {
        let Some(instance) = self.instances.get_mut(k) else {
            return;
        };
        let old = instance.state;
        instance.state = state;
        if !old.is_terminal() {
            self.open -= 1;
        }
        if old == InstanceState::Running {
            self.running -= 1;
        }
        if !state.is_terminal() {
            self.open += 1;
        }
        if state == InstanceState::Running {
            self.running += 1;
        }
    }

    fn settle(&mut self, state: InstanceState, message: Option<String>) {
        self.decided = true;
        self.placeholder = true;
        self.fanned = false;
        self.instances = vec![Instance {
            item: None,
            state,
            generation: self.generation,
            outputs: Outputs::new(),
            message,
            interrupted: false,
            job_id: None,
            attempts: 0,
        }];
        self.recount();
    }

    /// The state shown for the task as a whole (`pending` before it is
    /// decided; the worst instance state after).
    pub fn state(&self) -> InstanceState {
        if !self.decided {
            return InstanceState::Pending;
        }
        let order = [
            InstanceState::Running,
            InstanceState::Waiting,
            InstanceState::Failed,
            InstanceState::UpstreamFailed,
            InstanceState::Cancelled,
            InstanceState::Succeeded,
        ];
        order
            .into_iter()
            .find(|s| self.instances.iter().any(|i| i.state == *s))
            .unwrap_or(InstanceState::Skipped)
    }
}

/// One run of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub run_id: String,
    pub workflow_name: String,
    pub params: BTreeMap<String, String>,
    pub status: RunStatus,
    pub started: bool,
    pub submitted_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub deadline_ms: Option<i64>,
    /// Parallel to [`Workflow::tasks`].
    pub tasks: Vec<TaskRun>,
}

enum Verdict {
    Run,
    Skip,
    UpstreamFailed,
}

fn trigger_verdict(trigger: Trigger, states: &[InstanceState]) -> Verdict {
    if states.is_empty() {
        return Verdict::Run;
    }
    let any_bad = states.iter().any(|s| s.is_bad());
    let any_ok = states.contains(&InstanceState::Succeeded);
    let all_ok = states.iter().all(|s| *s == InstanceState::Succeeded);
    match trigger {
        Trigger::AllSucceeded if all_ok => Verdict::Run,
        Trigger::AllSucceeded if any_bad => Verdict::UpstreamFailed,
        Trigger::AllSucceeded => Verdict::Skip,
        Trigger::AllDone => Verdict::Run,
        Trigger::OneFailed if any_bad => Verdict::Run,
        Trigger::OneFailed => Verdict::Skip,
        Trigger::OneSucceeded if any_ok => Verdict::Run,
        Trigger::OneSucceeded if any_bad => Verdict::UpstreamFailed,
        Trigger::OneSucceeded => Verdict::Skip,
        Trigger::NoneFailed if any_bad => Verdict::UpstreamFailed,
        Trigger::NoneFailed => Verdict::Run,
    }
}

/// An output value as a JSON value (to aggregate fanned-out instances).
fn output_json(v: &OutputValue) -> serde_json::Value {
    match v {
        OutputValue::Text(s) => serde_json::Value::String(s.clone()),
        OutputValue::Json(j) => j.clone(),
        OutputValue::Lines(l) => {
            serde_json::Value::Array(l.iter().cloned().map(serde_json::Value::String).collect())
        }
    }
}

/// The idempotency key of an instance's job.
pub fn idempotency_key(run: &str, task: &str, item: Option<usize>, generation: u32) -> String {
    let item = item.map_or_else(|| "-".to_string(), |i| i.to_string());
    if generation == 0 {
        format!("wf/{run}/{task}/{item}")
    } else {
        format!("wf/{run}/{task}/{item}/r{generation}")
    }
}

impl RunState {
    /// A run of `workflow` with `params` overriding its defaults (an unknown
    /// parameter is refused). Nothing happens until [`Input::Started`].
    pub fn new(
        workflow: &Workflow,
        params: BTreeMap<String, String>,
        run_id: impl Into<String>,
        now_ms: i64,
    ) -> Result<RunState, ValidationError> {
        let mut merged = workflow.params.clone();
        for (k, v) in params {
            if !merged.contains_key(&k) {
                return Err(ValidationError {
                    task: None,
                    field: "params".to_string(),
                    reason: format!("{k:?} is not a parameter of workflow {:?}", workflow.name),
                });
            }
            merged.insert(k, v);
        }
        Ok(RunState {
            run_id: run_id.into(),
            workflow_name: workflow.name.clone(),
            params: merged,
            status: RunStatus::Running,
            started: false,
            submitted_at_ms: now_ms,
            finished_at_ms: None,
            deadline_ms: None,
            tasks: vec![TaskRun::default(); workflow.tasks.len()],
        })
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        self.status != RunStatus::Running
    }

    /// Applies one input.
    pub fn handle(&mut self, workflow: &Workflow, input: Input, now_ms: i64) -> Vec<Effect> {
        if self.tasks.len() != workflow.tasks.len() {
            return vec![Effect::Rejected(
                "this run state belongs to another workflow".to_string(),
            )];
        }
        match input {
            Input::Started => {
                if self.started {
                    return Vec::new();
                }
                self.started = true;
                self.deadline_ms = workflow.timeout_ms.map(|t| now_ms.saturating_add(t as i64));
                self.advance(workflow, now_ms)
            }
            Input::JobFinished {
                task,
                item,
                outcome,
                outputs,
                attempts,
                message,
            } => {
                let result = JobResult {
                    outcome,
                    outputs,
                    attempts,
                    message,
                };
                self.job_finished(workflow, &task, item, result, now_ms)
            }
            Input::Resume => self.advance(workflow, now_ms),
            Input::Cancel => self.interrupt(workflow, RunOutcome::Cancelled, now_ms),
            Input::Tick => match self.deadline_ms {
                Some(d) if now_ms >= d && !self.is_finished() => {
                    self.interrupt(workflow, RunOutcome::TimedOut, now_ms)
                }
                _ => Vec::new(),
            },
            Input::Retry { from } => self.retry(workflow, from.as_deref(), now_ms),
        }
    }

    /// Records the job created for instance `index` of task `task`.
    pub fn set_job(&mut self, task: usize, index: usize, job_id: String) {
        if let Some(i) = self
            .tasks
            .get_mut(task)
            .and_then(|t| t.instances.get_mut(index))
        {
            i.job_id = Some(job_id);
        }
    }

    fn job_finished(
        &mut self,
        workflow: &Workflow,
        task: &str,
        item: Option<usize>,
        result: JobResult,
        now_ms: i64,
    ) -> Vec<Effect> {
        let JobResult {
            outcome,
            outputs,
            attempts,
            message,
        } = result;
        let Some(t) = workflow.index(task) else {
            return vec![Effect::Rejected(format!("no task {task:?}"))];
        };
        let run = &mut self.tasks[t];
        let index = match (item, run.fanned) {
            (None, false) => 0,
            (Some(k), true) => k,
            _ => return Vec::new(),
        };
        let Some(instance) = run.instances.get_mut(index) else {
            return Vec::new();
        };
        if instance.state != InstanceState::Running {
            // A duplicate, or a result after a cancel: already decided.
            return Vec::new();
        }
        instance.outputs = outputs;
        instance.attempts = attempts;
        if message.is_some() {
            instance.message = message;
        }
        let state = match outcome {
            JobOutcome::Succeeded => InstanceState::Succeeded,
            JobOutcome::Failed => InstanceState::Failed,
            JobOutcome::Cancelled => InstanceState::Cancelled,
        };
        run.set_state(index, state);
        self.advance(workflow, now_ms)
    }

    fn interrupt(&mut self, workflow: &Workflow, outcome: RunOutcome, now_ms: i64) -> Vec<Effect> {
        if self.is_finished() {
            return Vec::new();
        }
        let mut effects = Vec::new();
        let reason = match outcome {
            RunOutcome::TimedOut => "the run timed out",
            _ => "the run was cancelled",
        };
        for (t, run) in self.tasks.iter_mut().enumerate() {
            if !run.decided {
                run.settle(InstanceState::Skipped, Some(reason.to_string()));
                if let Some(i) = run.instances.first_mut() {
                    i.interrupted = true;
                }
                continue;
            }
            let fanned = run.fanned;
            for (k, inst) in run.instances.iter_mut().enumerate() {
                match inst.state {
                    InstanceState::Running => {
                        inst.state = InstanceState::Cancelled;
                        inst.message = Some(reason.to_string());
                        effects.push(Effect::CancelJob {
                            task: workflow.tasks[t].name.clone(),
                            item: fanned.then_some(k),
                        });
                    }
                    InstanceState::Waiting | InstanceState::Pending => {
                        inst.state = InstanceState::Skipped;
                        inst.message = Some(reason.to_string());
                        inst.interrupted = true;
                    }
                    _ => {}
                }
            }
            run.recount();
        }
        effects.push(self.finish(outcome, now_ms));
        effects
    }

    fn finish(&mut self, outcome: RunOutcome, now_ms: i64) -> Effect {
        self.status = match outcome {
            RunOutcome::Succeeded => RunStatus::Succeeded,
            RunOutcome::Failed => RunStatus::Failed,
            RunOutcome::Cancelled => RunStatus::Cancelled,
            RunOutcome::TimedOut => RunStatus::TimedOut,
        };
        self.finished_at_ms = Some(now_ms);
        Effect::RunFinished(outcome)
    }

    fn retry(&mut self, workflow: &Workflow, from: Option<&str>, now_ms: i64) -> Vec<Effect> {
        if !self.is_finished() {
            return vec![Effect::Rejected("the run is still running".to_string())];
        }
        let finally: BTreeSet<usize> = (workflow.dag_len..workflow.tasks.len()).collect();
        // Tasks reset from scratch, and tasks whose bad instances alone are reset.
        let (full, partial): (BTreeSet<usize>, BTreeSet<usize>) = match from {
            Some(name) => {
                let Some(t) = workflow.index(name) else {
                    return vec![Effect::Rejected(format!("no task {name:?}"))];
                };
                let mut full = workflow.downstream_of(t);
                full.extend(&finally);
                (full, BTreeSet::new())
            }
            None => {
                let seeds: BTreeSet<usize> = (0..workflow.dag_len)
                    .filter(|&t| {
                        self.tasks[t]
                            .instances
                            .iter()
                            .any(|i| i.state.is_bad() || i.interrupted)
                    })
                    .collect();
                if seeds.is_empty()
                    && !finally.iter().any(|&t| {
                        self.tasks[t]
                            .instances
                            .iter()
                            .any(|i| i.state.is_bad() || i.interrupted)
                    })
                {
                    return vec![Effect::Rejected(
                        "nothing to retry: no task failed or was cancelled".to_string(),
                    )];
                }
                let mut full = finally.clone();
                for &s in &seeds {
                    full.extend(workflow.downstream_of(s).into_iter().filter(|&d| d != s));
                }
                let mut partial = BTreeSet::new();
                for &s in &seeds {
                    if full.contains(&s) {
                        continue;
                    }
                    if self.tasks[s].placeholder {
                        full.insert(s);
                    } else {
                        partial.insert(s);
                    }
                }
                (full, partial)
            }
        };
        for &t in &full {
            let run = &mut self.tasks[t];
            let top = run
                .instances
                .iter()
                .map(|i| i.generation)
                .max()
                .unwrap_or(0);
            run.generation = run.generation.max(top) + 1;
            run.decided = false;
            run.placeholder = false;
            run.fanned = false;
            run.instances.clear();
            run.recount();
        }
        for &t in &partial {
            let run = &mut self.tasks[t];
            for inst in &mut run.instances {
                if inst.state.is_bad() || inst.interrupted {
                    inst.state = InstanceState::Waiting;
                    inst.generation += 1;
                    inst.outputs.clear();
                    inst.message = None;
                    inst.interrupted = false;
                    inst.job_id = None;
                    inst.attempts = 0;
                }
            }
            run.recount();
        }
        self.status = RunStatus::Running;
        self.started = true;
        self.finished_at_ms = None;
        self.deadline_ms = workflow.timeout_ms.map(|t| now_ms.saturating_add(t as i64));
        self.advance(workflow, now_ms)
    }
}
