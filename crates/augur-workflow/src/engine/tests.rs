//! The engine: named scenarios and property tests over random DAGs,
//! outcomes and orders.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::file::parse_yaml;
use crate::outputs::OutputValue;
use crate::validate::validate;

fn workflow(yaml: &str) -> Workflow {
    match parse_yaml(yaml.as_bytes()).and_then(validate) {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    }
}

struct Run {
    wf: Workflow,
    state: RunState,
    effects: Vec<Effect>,
    now: i64,
}

impl Run {
    fn start(yaml: &str) -> Run {
        Run::start_with(yaml, BTreeMap::new())
    }

    fn start_with(yaml: &str, params: BTreeMap<String, String>) -> Run {
        let wf = workflow(yaml);
        let state = match RunState::new(&wf, params, "run1", 0) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let mut run = Run {
            wf,
            state,
            effects: Vec::new(),
            now: 0,
        };
        run.feed(Input::Started);
        run
    }

    fn feed(&mut self, input: Input) -> Vec<Effect> {
        self.now += 1;
        let out = self.state.handle(&self.wf, input, self.now);
        self.effects.extend(out.iter().cloned());
        out
    }

    fn finish(&mut self, task: &str, item: Option<usize>, outcome: JobOutcome) -> Vec<Effect> {
        self.finish_with(task, item, outcome, Outputs::new())
    }

    fn finish_with(
        &mut self,
        task: &str,
        item: Option<usize>,
        outcome: JobOutcome,
        outputs: Outputs,
    ) -> Vec<Effect> {
        self.feed(Input::JobFinished {
            task: task.to_string(),
            item,
            outcome,
            outputs,
            attempts: 1,
            message: None,
        })
    }

    fn task(&self, name: &str) -> &TaskRun {
        let i = self.wf.index(name).unwrap_or(usize::MAX);
        &self.state.tasks[i]
    }

    fn state_of(&self, name: &str) -> InstanceState {
        self.task(name).state()
    }

    fn created(&self) -> Vec<(String, Option<usize>)> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::CreateJob { task, item, .. } => Some((task.clone(), *item)),
                _ => None,
            })
            .collect()
    }

    fn outcome(&self) -> Option<RunOutcome> {
        self.effects.iter().find_map(|e| match e {
            Effect::RunFinished(o) => Some(*o),
            _ => None,
        })
    }
}

const ROOT: &str = "name: t\ntasks:\n- {name: a, command: [x]}\n- {name: b, command: [x]}\n";

fn with_join(trigger: &str) -> String {
    format!("{ROOT}- {{name: j, depends_on: [a, b], trigger: {trigger}, command: [x]}}\n")
}

/// Runs a, b with the given outcomes; the state of j.
fn trigger_case(trigger: &str, a: JobOutcome, b: JobOutcome) -> InstanceState {
    let mut run = Run::start(&with_join(trigger));
    assert_eq!(run.created().len(), 2);
    run.finish("a", None, a);
    run.finish("b", None, b);
    run.state_of("j")
}

use JobOutcome::{Failed as F, Succeeded as S};

#[test]
fn all_succeeded_runs_only_when_every_upstream_succeeded() {
    assert_eq!(trigger_case("all_succeeded", S, S), InstanceState::Running);
    assert_eq!(
        trigger_case("all_succeeded", S, F),
        InstanceState::UpstreamFailed
    );
}

#[test]
fn all_done_runs_whatever_happened() {
    assert_eq!(trigger_case("all_done", F, F), InstanceState::Running);
    assert_eq!(trigger_case("all_done", S, F), InstanceState::Running);
}

#[test]
fn one_failed_runs_on_a_failure_and_is_skipped_otherwise() {
    assert_eq!(trigger_case("one_failed", S, F), InstanceState::Running);
    assert_eq!(trigger_case("one_failed", S, S), InstanceState::Skipped);
}

#[test]
fn one_succeeded_runs_on_a_success() {
    assert_eq!(trigger_case("one_succeeded", F, S), InstanceState::Running);
    assert_eq!(
        trigger_case("one_succeeded", F, F),
        InstanceState::UpstreamFailed
    );
}

#[test]
fn none_failed_runs_past_skipped_upstream() {
    assert_eq!(trigger_case("none_failed", S, S), InstanceState::Running);
    assert_eq!(
        trigger_case("none_failed", S, F),
        InstanceState::UpstreamFailed
    );
    let mut run = Run::start(
        "name: t\ntasks:\n- {name: a, command: [x], when: 'false'}\n- {name: b, depends_on: [a], trigger: none_failed, command: [x]}\n- {name: c, depends_on: [a], command: [x]}\n",
    );
    assert_eq!(run.state_of("a"), InstanceState::Skipped);
    assert_eq!(run.state_of("b"), InstanceState::Running);
    // all_succeeded with a skipped upstream is skipped, not failed.
    assert_eq!(run.state_of("c"), InstanceState::Skipped);
    run.finish("b", None, S);
    assert_eq!(run.outcome(), Some(RunOutcome::Succeeded));
}

#[test]
fn when_true_runs_and_when_false_skips() {
    let yaml = "name: t\nparams: {mode: full}\ntasks:\n- {name: a, command: [x], when: '${{ params.mode }} == full'}\n";
    let run = Run::start(yaml);
    assert_eq!(run.state_of("a"), InstanceState::Running);
    let run = Run::start_with(
        yaml,
        BTreeMap::from([("mode".to_string(), "delta".to_string())]),
    );
    assert_eq!(run.state_of("a"), InstanceState::Skipped);
    assert_eq!(run.outcome(), Some(RunOutcome::Succeeded));
}

#[test]
fn unknown_params_are_refused_at_submission() {
    let wf = workflow(ROOT);
    let r = RunState::new(
        &wf,
        BTreeMap::from([("zz".to_string(), "1".to_string())]),
        "r",
        0,
    );
    assert!(r.is_err());
}

const WITH_FINALLY: &str = "name: t\ntasks:\n- {name: a, command: [x]}\n- {name: b, depends_on: [a], command: [x]}\nfinally:\n- {name: f, command: [echo, '${{ workflow.id }}']}\n";

#[test]
fn finally_runs_after_success() {
    let mut run = Run::start(WITH_FINALLY);
    run.finish("a", None, S);
    assert_eq!(run.state_of("f"), InstanceState::Pending);
    run.finish("b", None, S);
    assert_eq!(run.state_of("f"), InstanceState::Running);
    assert_eq!(run.outcome(), None);
    run.finish("f", None, S);
    assert_eq!(run.outcome(), Some(RunOutcome::Succeeded));
    let spec = run.effects.iter().find_map(|e| match e {
        Effect::CreateJob { task, spec, .. } if task == "f" => Some(spec.clone()),
        _ => None,
    });
    assert_eq!(spec.map(|s| s.args), Some(vec!["run1".to_string()]));
}

#[test]
fn finally_runs_after_failure_and_the_run_fails() {
    let mut run = Run::start(WITH_FINALLY);
    run.finish("a", None, F);
    assert_eq!(run.state_of("b"), InstanceState::UpstreamFailed);
    assert_eq!(run.state_of("f"), InstanceState::Running);
    run.finish("f", None, S);
    assert_eq!(run.outcome(), Some(RunOutcome::Failed));
    assert_eq!(run.state.status, RunStatus::Failed);
}

fn lines(items: &[String]) -> Outputs {
    BTreeMap::from([("files".to_string(), OutputValue::Lines(items.to_vec()))])
}

const FAN: &str = "name: t\ntasks:\n- {name: extract, command: [x]}\n- {name: transform, depends_on: [extract], for_each: '${{ tasks.extract.outputs.files }}', max_parallel: 4, command: [t, '${{ item }}']}\n- {name: load, depends_on: [transform], command: [l, '${{ tasks.transform.outputs.n }}']}\n";

#[test]
fn fan_out_over_fifty_items_then_a_join() {
    let mut run = Run::start(FAN);
    let items: Vec<String> = (0..50).map(|i| format!("f{i}.csv")).collect();
    run.finish_with("extract", None, S, lines(&items));
    let running = |r: &Run| {
        r.task("transform")
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count()
    };
    assert_eq!(running(&run), 4, "max_parallel bounds running instances");
    for k in 0..50 {
        assert_eq!(run.state_of("load"), InstanceState::Pending);
        assert!(running(&run) <= 4);
        let out = BTreeMap::from([("n".to_string(), OutputValue::Text(k.to_string()))]);
        run.finish_with("transform", Some(k), S, out);
    }
    assert_eq!(run.state_of("load"), InstanceState::Running);
    let created = run.created();
    assert_eq!(created.iter().filter(|(t, _)| t == "transform").count(), 50);
    let keys: BTreeSet<String> = run
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::CreateJob {
                idempotency_key, ..
            } => Some(idempotency_key.clone()),
            _ => None,
        })
        .collect();
    assert!(keys.contains("wf/run1/transform/49"));
    assert!(keys.contains("wf/run1/extract/-"));
    // Item args and the join's aggregated output.
    let args = |task: &str| {
        run.effects
            .iter()
            .filter_map(|e| match e {
                Effect::CreateJob { task: t, spec, .. } if t == task => Some(spec.args.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(args("transform")[7], vec!["f7.csv".to_string()]);
    let load_args = args("load");
    assert!(
        load_args[0][0].starts_with("[\"0\",\"1\","),
        "{load_args:?}"
    );
    run.finish("load", None, S);
    assert_eq!(run.outcome(), Some(RunOutcome::Succeeded));
}

#[test]
fn a_for_each_output_that_is_not_a_list_fails_the_task() {
    let mut run = Run::start(FAN);
    let out = BTreeMap::from([("files".to_string(), OutputValue::Text("one".to_string()))]);
    run.finish_with("extract", None, S, out);
    let t = run.task("transform");
    assert_eq!(t.state(), InstanceState::Failed);
    let message = t.instances[0].message.clone().unwrap_or_default();
    assert!(message.contains("not a list"), "{message}");
    assert_eq!(run.state_of("load"), InstanceState::UpstreamFailed);
    assert_eq!(run.outcome(), Some(RunOutcome::Failed));
}

#[test]
fn an_empty_fan_out_is_skipped() {
    let mut run = Run::start(FAN);
    run.finish_with("extract", None, S, lines(&[]));
    assert_eq!(run.state_of("transform"), InstanceState::Skipped);
    assert_eq!(run.state_of("load"), InstanceState::Skipped);
}

#[test]
fn cancel_cancels_running_jobs_and_skips_the_rest() {
    let mut run = Run::start(WITH_FINALLY);
    let out = run.feed(Input::Cancel);
    assert_eq!(
        out,
        vec![
            Effect::CancelJob {
                task: "a".to_string(),
                item: None
            },
            Effect::RunFinished(RunOutcome::Cancelled),
        ]
    );
    assert_eq!(run.state_of("a"), InstanceState::Cancelled);
    assert_eq!(run.state_of("b"), InstanceState::Skipped);
    assert_eq!(run.state_of("f"), InstanceState::Skipped);
    // A late result and a second cancel change nothing.
    assert!(run.finish("a", None, S).is_empty());
    assert!(run.feed(Input::Cancel).is_empty());
}

#[test]
fn the_run_times_out() {
    let mut run = Run::start("name: t\ntimeout: 1s\ntasks:\n- {name: a, command: [x]}\n");
    assert!(run.feed(Input::Tick).is_empty());
    run.now = 1_000;
    let out = run.feed(Input::Tick);
    assert_eq!(out.last(), Some(&Effect::RunFinished(RunOutcome::TimedOut)));
    assert_eq!(run.state.status, RunStatus::TimedOut);
}

#[test]
fn retry_reruns_what_failed_and_downstream_keeping_successes() {
    let yaml = "name: t\ntasks:\n- {name: a, command: [x]}\n- {name: b, command: [x]}\n- {name: c, depends_on: [a, b], command: [x]}\nfinally:\n- {name: f, command: [x]}\n";
    let mut run = Run::start(yaml);
    run.finish("a", None, S);
    run.finish("b", None, F);
    run.finish("f", None, S);
    assert_eq!(run.outcome(), Some(RunOutcome::Failed));
    let before = run.effects.len();
    let out = run.feed(Input::Retry { from: None });
    let keys: Vec<String> = out
        .iter()
        .filter_map(|e| match e {
            Effect::CreateJob {
                idempotency_key, ..
            } => Some(idempotency_key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, vec!["wf/run1/b/-/r1".to_string()]);
    assert_eq!(run.state_of("a"), InstanceState::Succeeded);
    assert_eq!(run.state_of("c"), InstanceState::Pending);
    run.finish("b", None, S);
    run.finish("c", None, S);
    run.finish("f", None, S);
    assert_eq!(
        run.effects[before..].last(),
        Some(&Effect::RunFinished(RunOutcome::Succeeded))
    );
    // Retrying a succeeded run has nothing to do; from a task reruns it.
    assert!(matches!(
        run.feed(Input::Retry { from: None }).as_slice(),
        [Effect::Rejected(_)]
    ));
    let out = run.feed(Input::Retry {
        from: Some("c".to_string()),
    });
    assert!(matches!(out.as_slice(), [Effect::CreateJob { task, .. }] if task == "c"));
    assert!(matches!(
        run.feed(Input::Retry { from: None }).as_slice(),
        [Effect::Rejected(_)]
    ));
}

#[test]
fn retry_of_a_cancelled_fan_out_reruns_only_unfinished_items() {
    let mut run = Run::start(FAN);
    let items: Vec<String> = (0..6).map(|i| i.to_string()).collect();
    run.finish_with("extract", None, S, lines(&items));
    run.finish("transform", Some(0), S);
    run.finish("transform", Some(1), S);
    run.feed(Input::Cancel);
    let out = run.feed(Input::Retry { from: None });
    let mut items: Vec<Option<usize>> = out
        .iter()
        .filter_map(|e| match e {
            Effect::CreateJob { item, .. } => Some(*item),
            _ => None,
        })
        .collect();
    items.sort();
    assert_eq!(items, vec![Some(2), Some(3), Some(4), Some(5)]);
}

#[test]
fn a_run_state_round_trips_through_json() {
    let mut run = Run::start(FAN);
    run.finish_with("extract", None, S, lines(&["a".to_string()]));
    let text = serde_json::to_string(&run.state).unwrap_or_default();
    let back: Result<RunState, _> = serde_json::from_str(&text);
    assert_eq!(back.ok().as_ref(), Some(&run.state));
}

// ---- property tests ----

/// A random DAG: task i depends on a subset of tasks before it.
fn dag() -> impl Strategy<Value = String> {
    (2usize..9)
        .prop_flat_map(|n| {
            let tasks = (0..n)
                .map(|i| {
                    (
                        prop::collection::vec(any::<bool>(), i),
                        0usize..5,
                        prop::option::of(0usize..4),
                        any::<bool>(),
                    )
                })
                .collect::<Vec<_>>();
            (tasks, any::<bool>())
        })
        .prop_map(|(tasks, with_finally)| {
            let triggers = [
                "all_succeeded",
                "all_done",
                "one_failed",
                "one_succeeded",
                "none_failed",
            ];
            let mut yaml = "name: p\ntasks:\n".to_string();
            for (i, (deps, trigger, fan, when)) in tasks.iter().enumerate() {
                let deps: Vec<String> = deps
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| **d)
                    .map(|(j, _)| format!("t{j}"))
                    .collect();
                yaml.push_str(&format!(
                    "- {{name: t{i}, command: [x], depends_on: [{}], trigger: {}",
                    deps.join(", "),
                    triggers[*trigger]
                ));
                if let Some(width) = fan {
                    let items: Vec<String> = (0..*width).map(|k| k.to_string()).collect();
                    yaml.push_str(&format!(
                        ", for_each: [{}], max_parallel: 2",
                        items.join(", ")
                    ));
                }
                if !*when {
                    yaml.push_str(", when: 'a != a'");
                }
                yaml.push_str("}\n");
            }
            if with_finally {
                yaml.push_str("finally:\n- {name: fin, command: [x]}\n");
            }
            yaml
        })
}

#[derive(Clone, Debug)]
enum Step {
    /// Finish the n-th running job (modulo) with this outcome.
    Finish(usize, u8),
    Cancel,
    Retry,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (any::<usize>(), 0u8..3).prop_map(|(n, o)| Step::Finish(n, o)),
        1 => Just(Step::Cancel),
        1 => Just(Step::Retry),
    ]
}

fn outcome(o: u8) -> JobOutcome {
    match o {
        0 => JobOutcome::Succeeded,
        1 => JobOutcome::Failed,
        _ => JobOutcome::Cancelled,
    }
}

/// Checks every CreateJob in `effects` against the state before it.
fn check_creates(
    run: &Run,
    effects: &[Effect],
    keys: &mut BTreeSet<String>,
    running: &mut BTreeSet<(String, Option<usize>)>,
) -> Result<(), TestCaseError> {
    for e in effects {
        match e {
            Effect::CreateJob {
                task,
                item,
                idempotency_key,
                ..
            } => {
                prop_assert!(
                    keys.insert(idempotency_key.clone()),
                    "key {} created twice",
                    idempotency_key
                );
                prop_assert!(
                    running.insert((task.clone(), *item)),
                    "{task}/{item:?} created while running"
                );
                let t = run.wf.index(task).unwrap_or(usize::MAX);
                let spec = &run.wf.tasks[t];
                for &u in &spec.upstream {
                    for inst in &run.state.tasks[u].instances {
                        prop_assert!(
                            inst.state.is_terminal(),
                            "{task} created before its upstream {} ended",
                            run.wf.tasks[u].name
                        );
                    }
                    prop_assert!(run.state.tasks[u].decided);
                }
                if spec.finally {
                    prop_assert!((0..run.wf.dag_len).all(|d| run.state.tasks[d].done()));
                }
            }
            Effect::CancelJob { task, item } => {
                prop_assert!(
                    running.remove(&(task.clone(), *item)),
                    "cancel of a job not running"
                );
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn the_engine_keeps_its_promises(yaml in dag(), steps in prop::collection::vec(step(), 0..60)) {
        let mut run = Run::start(&yaml);
        let mut keys = BTreeSet::new();
        let mut running = BTreeSet::new();
        let first = run.effects.clone();
        check_creates(&run, &first, &mut keys, &mut running)?;
        for step in steps {
            let effects = match step {
                Step::Finish(n, o) => {
                    let Some((task, item)) = running.iter().nth(n % running.len().max(1)).cloned() else { continue };
                    running.remove(&(task.clone(), item));
                    run.finish(&task, item, outcome(o))
                }
                Step::Cancel => {
                    let was_running = !run.state.is_finished();
                    let out = run.feed(Input::Cancel);
                    if was_running {
                        prop_assert_eq!(out.last(), Some(&Effect::RunFinished(RunOutcome::Cancelled)));
                    }
                    out
                }
                Step::Retry => run.feed(Input::Retry { from: None }),
            };
            check_creates(&run, &effects, &mut keys, &mut running)?;
            if run.state.is_finished() {
                prop_assert!(running.is_empty(), "run ended with jobs running: {:?}", running);
            }
        }
        // Finishing every job ends the run.
        let mut guard = 0;
        while let Some((task, item)) = running.iter().next().cloned() {
            running.remove(&(task.clone(), item));
            let effects = run.finish(&task, item, JobOutcome::Succeeded);
            check_creates(&run, &effects, &mut keys, &mut running)?;
            guard += 1;
            prop_assert!(guard < 10_000);
        }
        prop_assert!(run.state.is_finished(), "run never ended: {:?}", run.state);
        let last_end = run.effects.iter().rev().find_map(|e| match e {
            Effect::RunFinished(o) => Some(*o),
            _ => None,
        });
        let expected = match run.state.status {
            RunStatus::Succeeded => Some(RunOutcome::Succeeded),
            RunStatus::Failed => Some(RunOutcome::Failed),
            RunStatus::Cancelled => Some(RunOutcome::Cancelled),
            RunStatus::TimedOut => Some(RunOutcome::TimedOut),
            RunStatus::Running => None,
        };
        prop_assert_eq!(last_end, expected);
    }
}

#[test]
fn a_fan_out_of_ten_thousand_runs_to_the_end() {
    // 1 + 10,000 + 1 instances: the fan-out is at the limit, the two tasks
    // that are not fanned out do not count.
    let mut run = Run::start(FAN.replace("max_parallel: 4", "max_parallel: 500").as_str());
    let items: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    let started = std::time::Instant::now();
    run.finish_with("extract", None, S, lines(&items));
    for k in 0..10_000 {
        let out = BTreeMap::from([("n".to_string(), OutputValue::Text(k.to_string()))]);
        run.finish_with("transform", Some(k), S, out);
    }
    run.finish("load", None, S);
    eprintln!("10,000-wide fan-out driven in {:?}", started.elapsed());
    assert_eq!(run.created().len(), 10_002);
    assert_eq!(run.outcome(), Some(RunOutcome::Succeeded));
    // One more item would take the run over the limit.
    let mut run = Run::start(FAN);
    let items: Vec<String> = (0..10_001).map(|i| i.to_string()).collect();
    run.finish_with("extract", None, S, lines(&items));
    assert_eq!(run.state_of("transform"), InstanceState::Failed);
    assert!(run.task("transform").instances[0]
        .message
        .as_deref()
        .unwrap_or_default()
        .contains("10000"));
}
