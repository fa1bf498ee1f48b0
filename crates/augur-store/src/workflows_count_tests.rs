//! Instance counts of a run, through a retry.

use std::collections::BTreeMap;

use augur_workflow::{Effect, Input, JobOutcome, RunState};

use super::counts;

#[test]
fn counts_after_a_retry_are_those_of_the_instances_now() {
    let yaml = r#"
name: c
tasks:
  - {name: a, command: ["true"]}
  - {name: fan, depends_on: [a], for_each: ["1", "2", "3"], command: ["true"]}
  - {name: b, depends_on: [fan], command: ["true"]}
  - {name: notify, depends_on: [b], trigger: one_failed, command: ["true"]}
finally:
  - {name: end, command: ["true"]}
"#;
    let file = augur_workflow::file::parse_yaml(yaml.as_bytes()).expect("file");
    let wf = augur_workflow::validate(file).expect("valid");
    let mut run = RunState::new(&wf, BTreeMap::new(), "r", 0).expect("run");
    let mut now = 0;
    let mut feed = |run: &mut RunState, input: Input| {
        now += 1;
        run.handle(&wf, input, now)
    };
    let finish = |task: &str, item: Option<usize>, outcome: JobOutcome| Input::JobFinished {
        task: task.into(),
        item,
        outcome,
        outputs: BTreeMap::new(),
        attempts: 1,
        message: None,
    };
    feed(&mut run, Input::Started);
    feed(&mut run, finish("a", None, JobOutcome::Succeeded));
    feed(&mut run, finish("fan", Some(0), JobOutcome::Succeeded));
    feed(&mut run, finish("fan", Some(1), JobOutcome::Failed));
    feed(&mut run, finish("fan", Some(2), JobOutcome::Succeeded));
    // b is upstream_failed, so the one_failed handler runs.
    feed(&mut run, finish("notify", None, JobOutcome::Succeeded));
    let effects = feed(&mut run, finish("end", None, JobOutcome::Succeeded));
    assert!(
        effects.iter().any(|e| matches!(e, Effect::RunFinished(_))),
        "{effects:?}"
    );
    let c = counts(&run);
    assert_eq!(
        c.get("succeeded"),
        Some(&5),
        "a, 2 of fan, notify, end: {c:?}"
    );
    assert_eq!(c.get("failed"), Some(&1), "{c:?}");
    assert_eq!(c.get("upstream_failed"), Some(&1), "b: {c:?}");
    // Retry: the failed instance runs again, b, notify and end are
    // decided anew; nothing else changes.
    feed(&mut run, Input::Retry { from: None });
    let c = counts(&run);
    assert_eq!(c.get("succeeded"), Some(&3), "{c:?}");
    assert_eq!(c.get("running"), Some(&1), "{c:?}");
    assert_eq!(c.get("pending"), Some(&3), "b, notify, end: {c:?}");
    assert_eq!(c.get("failed"), None, "{c:?}");
}
