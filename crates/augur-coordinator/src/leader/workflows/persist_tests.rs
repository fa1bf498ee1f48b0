//! What the leader writes about a run, read back, is the run: over random
//! results, cancels and retries, applying every diff to a store held in
//! memory and rebuilding the engine's state from it (as a new leader does)
//! gives the state the leader holds.

use std::collections::BTreeMap;

use augur_core::{JobId, JobRecord, JobSpecInput};
use augur_store::workflows::{InstanceRecord, TaskRecord};
use augur_store::{RunHeader, StoredRun, WorkflowWrite};
use augur_workflow::{Effect, Input, InstanceState, JobOutcome, RunState, Workflow};
use proptest::prelude::*;

use super::persist::{diff, Persisted};

const YAML: &str = r#"
name: p
tasks:
  - {name: a, command: [sh, -c, 'seq 1 4 > "$AUGUR_OUTPUTS/items.lines"']}
  - {name: fan, depends_on: [a], for_each: '${{ tasks.a.outputs.items }}', max_parallel: 2, command: [echo, '${{ item }}']}
  - {name: side, depends_on: [a], command: ["true"]}
  - {name: join, depends_on: [fan, side], trigger: all_done, command: ["true"]}
finally:
  - {name: end, command: ["true"]}
"#;

/// etcd, as far as workflow records go.
struct Etcd {
    header: RunHeader,
    tasks: Vec<Option<TaskRecord>>,
    instances: BTreeMap<(usize, usize), InstanceRecord>,
}

impl Etcd {
    fn apply(&mut self, writes: &[WorkflowWrite]) {
        for w in writes {
            match w {
                WorkflowWrite::Header(h) => self.header = (**h).clone(),
                WorkflowWrite::Task { task, record, .. } => {
                    self.tasks[*task] = Some(record.clone())
                }
                WorkflowWrite::Truncate { task, from, .. } => {
                    self.instances.retain(|&(t, k), _| t != *task || k < *from)
                }
                WorkflowWrite::Instance {
                    task,
                    index,
                    record,
                    ..
                } => {
                    self.instances.insert((*task, *index), (**record).clone());
                }
                WorkflowWrite::Ended { .. } | WorkflowWrite::Reopened { .. } => {}
            }
        }
    }

    fn read(&self, file: &augur_workflow::WorkflowFile) -> RunState {
        StoredRun {
            header: self.header.clone(),
            file: file.clone(),
            tasks: self.tasks.clone(),
            instances: self.instances.clone(),
        }
        .state()
    }
}

fn normalised(state: &RunState) -> RunState {
    let mut s = state.clone();
    for t in &mut s.tasks {
        t.recount();
    }
    s
}

#[derive(Clone, Debug)]
enum Step {
    Finish(usize, u8),
    Cancel,
    Retry(Option<usize>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (any::<usize>(), 0u8..3).prop_map(|(k, o)| Step::Finish(k, o)),
        1 => Just(Step::Cancel),
        2 => proptest::option::of(0usize..5).prop_map(Step::Retry),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn what_is_written_reads_back_as_the_run(steps in proptest::collection::vec(step(), 1..40)) {
        let file = augur_workflow::file::parse_yaml(YAML.as_bytes()).expect("file");
        let wf: Workflow = augur_workflow::validate(file.clone()).expect("valid");
        let mut state = RunState::new(&wf, BTreeMap::new(), "wf-01J0000000000000000000000", 0).expect("state");
        let header = RunHeader {
            v: 1, id: state.run_id.clone(), name: wf.name.clone(), owner: None,
            params: BTreeMap::new(), status: state.status, started: false,
            submitted_at_ms: 0, finished_at_ms: None, deadline_ms: None,
            idempotency_key: None, trace_context: BTreeMap::new(), schedule: None,
            tasks: wf.tasks.len(), counts: BTreeMap::new(),
        };
        let mut etcd = Etcd { header: header.clone(), tasks: vec![None; wf.tasks.len()], instances: BTreeMap::new() };
        let mut persisted = Persisted { header, tasks: state.tasks.clone() };
        let mut now = 0;
        let mut inputs = vec![Input::Started];
        inputs.extend(steps.iter().map(|s| match s {
            Step::Cancel => Input::Cancel,
            Step::Retry(from) => Input::Retry { from: from.map(|t| wf.tasks[t].name.clone()) },
            // Resolved against the running instances below.
            Step::Finish(..) => Input::Tick,
        }));
        for (i, input) in inputs.into_iter().enumerate() {
            now += 1;
            let input = match (i.checked_sub(1).and_then(|j| steps.get(j)), input) {
                (Some(Step::Finish(pick, outcome)), _) => {
                    let running: Vec<(usize, usize)> = state.tasks.iter().enumerate()
                        .flat_map(|(t, r)| r.instances.iter().enumerate()
                            .filter(|(_, x)| x.state == InstanceState::Running)
                            .map(move |(k, _)| (t, k)))
                        .collect();
                    let Some(&(t, k)) = running.get(pick % running.len().max(1)) else { continue };
                    let mut outputs = BTreeMap::new();
                    if t == 0 {
                        outputs.insert("items".to_string(), augur_workflow::OutputValue::Lines(
                            (1..=4).map(|n| n.to_string()).collect()));
                    }
                    Input::JobFinished {
                        task: wf.tasks[t].name.clone(),
                        item: state.tasks[t].fanned.then_some(k),
                        outcome: [JobOutcome::Succeeded, JobOutcome::Failed, JobOutcome::Cancelled][*outcome as usize],
                        outputs, attempts: 1, message: None,
                    }
                }
                (_, input) => input,
            };
            let effects = state.handle(&wf, input, now);
            let mut jobs = BTreeMap::new();
            for e in effects {
                if let Effect::CreateJob { task, item, spec, .. } = e {
                    let t = wf.index(&task).expect("task");
                    let k = item.unwrap_or(0);
                    let job = JobRecord::new(JobId::generate(), *spec, now);
                    state.set_job(t, k, job.id.to_string());
                    jobs.insert((t, k), job);
                }
            }
            let created = jobs.len();
            let (writes, applied) = diff(&state, &persisted, &mut jobs);
            prop_assert!(jobs.is_empty(), "every created job rides with its instance");
            let carried = writes.iter().filter(|w| matches!(w, WorkflowWrite::Instance { job: Some(_), .. })).count();
            prop_assert_eq!(carried, created);
            etcd.apply(&writes);
            persisted.apply(&state, applied);
            prop_assert_eq!(normalised(&etcd.read(&file)), normalised(&state));
            prop_assert_eq!(normalised(&RunState { tasks: persisted.tasks.clone(), ..state.clone() }), normalised(&state));
        }
        let _ = JobSpecInput::default();
    }
}
