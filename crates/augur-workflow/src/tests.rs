//! Parsing and validation: the issue's example, and one test per refusal.

use crate::file::{parse_json, parse_yaml, MAX_FILE_BYTES};
use crate::validate::{validate, ForEach, ValidationError, Workflow};

const ISSUE_EXAMPLE: &str = r#"
name: nightly-etl
params: {day: "2026-12-04", mode: full}         # defaults; overridden by --param k=v
timeout: 2h                                      # whole run
tasks:
  - name: extract
    command: [sh, -c, 'ls /data/${{ params.day }} > "$AUGUR_OUTPUTS/files.lines"; echo 3 > "$AUGUR_OUTPUTS/count"']
    retries: 2
    timeout: 10m
  - name: transform
    depends_on: [extract]
    for_each: ${{ tasks.extract.outputs.files }}   # one task instance per item (dynamic fan-out)
    max_parallel: 4
    command: [./transform.sh, '${{ item }}']
    resources: {cpu: 500m, memory: 256Mi}
  - name: load
    depends_on: [transform]                       # waits for every instance
    when: '${{ params.mode }} == full'            # otherwise: skipped
    command: [./load.sh]
  - name: notify-failure
    depends_on: [load]
    trigger: one_failed                           # all_succeeded (default) | all_done | one_failed | one_succeeded | none_failed
    command: [./page-oncall.sh, '${{ workflow.id }}']
finally:                                          # always runs once the DAG is done (Tekton finally / Argo onExit)
  - name: cleanup
    command: [./cleanup.sh]
"#;

fn check(yaml: &str) -> Result<Workflow, ValidationError> {
    validate(parse_yaml(yaml.as_bytes())?)
}

fn refused(yaml: &str) -> ValidationError {
    match check(yaml) {
        Ok(w) => panic!("accepted: {w:?}"),
        Err(e) => e,
    }
}

#[test]
fn the_issue_example_parses_and_validates() {
    let w = match check(ISSUE_EXAMPLE) {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(w.dag_len, 4);
    assert_eq!(w.tasks.len(), 5);
    assert_eq!(w.timeout_ms, Some(2 * 3600 * 1000));
    let transform = &w.tasks[1];
    assert_eq!(transform.name, "transform");
    assert_eq!(transform.upstream, vec![0]);
    assert_eq!(
        transform.for_each,
        Some(ForEach::Output {
            task: 0,
            key: "files".to_string()
        })
    );
    assert_eq!(transform.spec.resources.cpu_millis, 500);
    assert_eq!(transform.spec.resources.memory_bytes, 256 << 20);
    assert_eq!(w.tasks[0].spec.retry.max_attempts, 3);
    assert_eq!(w.tasks[0].spec.command, "sh");
    assert!(w.tasks[4].finally);
}

#[test]
fn the_shipped_example_validates() {
    let bytes = include_bytes!("../../../examples/nightly-etl.yaml");
    let w = crate::load("nightly-etl.yaml", bytes);
    assert!(w.is_ok(), "{:?}", w.err());
}

#[test]
fn json_is_the_same_structure() {
    let json = r#"{"name": "j", "tasks": [{"name": "a", "command": ["echo", "hi"]},
        {"name": "b", "depends_on": ["a"], "command": ["true"], "trigger": "all_done"}]}"#;
    let w = parse_json(json.as_bytes()).and_then(validate);
    assert!(w.is_ok_and(|w| w.tasks[1].upstream == vec![0]));
}

#[test]
fn tasks_are_sorted_topologically() {
    let w = check(
        "name: t\ntasks:\n- {name: c, depends_on: [b], command: [x]}\n- {name: b, depends_on: [a], command: [x]}\n- {name: a, command: [x]}\n",
    );
    let names: Vec<String> = w
        .map(|w| w.tasks.into_iter().map(|t| t.name).collect())
        .unwrap_or_default();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn a_cycle_is_named() {
    let e = refused(
        "name: t\ntasks:\n- {name: a, depends_on: [c], command: [x]}\n- {name: b, depends_on: [a], command: [x]}\n- {name: c, depends_on: [b], command: [x]}\n- {name: d, depends_on: [a], command: [x]}\n",
    );
    assert_eq!(e.field, "depends_on");
    assert!(e.reason.contains("cycle"), "{e}");
    // Any rotation of a -> b -> c -> a.
    let ok = ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"];
    assert!(ok.iter().any(|c| e.reason.contains(c)), "{e}");
}

#[test]
fn a_self_dependency_is_a_cycle() {
    let e = refused("name: t\ntasks:\n- {name: a, depends_on: [a], command: [x]}\n");
    assert!(e.reason.contains("a -> a"), "{e}");
}

#[test]
fn unknown_depends_on_is_refused() {
    let e = refused("name: t\ntasks:\n- {name: a, depends_on: [nope], command: [x]}\n");
    assert_eq!(
        e.to_string(),
        "task \"a\": depends_on: \"nope\" is not a task of this workflow"
    );
}

#[test]
fn depending_on_a_finally_task_is_refused() {
    let e = refused("name: t\ntasks:\n- {name: a, depends_on: [f], command: [x]}\nfinally:\n- {name: f, command: [x]}\n");
    assert!(e.reason.contains("finally"), "{e}");
}

#[test]
fn outputs_of_a_task_not_upstream_are_refused() {
    let e = refused(
        "name: t\ntasks:\n- {name: a, command: [x]}\n- {name: b, command: [echo, '${{ tasks.a.outputs.k }}']}\n",
    );
    assert_eq!(e.task.as_deref(), Some("b"));
    assert_eq!(e.field, "command[1]");
    assert!(e.reason.contains("not upstream"), "{e}");
    // Transitively upstream is fine.
    assert!(check(
        "name: t\ntasks:\n- {name: a, command: [x]}\n- {name: b, depends_on: [a], command: [x]}\n- {name: c, depends_on: [b], command: [echo, '${{ tasks.a.outputs.k }}'], env: {K: '${{ tasks.b.outputs.j }}'}}\n"
    )
    .is_ok());
    let e = refused(
        "name: t\ntasks:\n- {name: a, command: [x], env: {K: '${{ tasks.zz.outputs.j }}'}}\n",
    );
    assert_eq!(e.field, "env[\"K\"]");
}

#[test]
fn unknown_params_and_items_are_refused() {
    let e = refused("name: t\ntasks:\n- {name: a, command: [echo, '${{ params.day }}']}\n");
    assert!(e.reason.contains("no parameter"), "{e}");
    let e = refused("name: t\ntasks:\n- {name: a, command: [echo, '${{ item }}']}\n");
    assert!(e.reason.contains("for_each"), "{e}");
    let e = refused("name: t\ntasks:\n- {name: a, command: [echo, '${{ params.day']}\n");
    assert!(e.reason.contains("never closed"), "{e}");
}

#[test]
fn duplicate_names_are_refused_across_tasks_and_finally() {
    let e = refused("name: t\ntasks:\n- {name: a, command: [x]}\n- {name: a, command: [y]}\n");
    assert_eq!((e.task.as_deref(), e.field.as_str()), (Some("a"), "name"));
    let e = refused(
        "name: t\ntasks:\n- {name: a, command: [x]}\nfinally:\n- {name: a, command: [y]}\n",
    );
    assert!(e.reason.contains("more than one task"), "{e}");
}

#[test]
fn unknown_fields_are_refused_everywhere() {
    for yaml in [
        "name: t\nnope: 1\ntasks:\n- {name: a, command: [x]}\n",
        "name: t\ntasks:\n- {name: a, command: [x], comand: [y]}\n",
        "name: t\ntasks:\n- {name: a, command: [x], resources: {gpu: 1}}\n",
        "name: t\ntasks:\n- {name: a, command: [x], backoff: {start: 1s}}\n",
        "name: t\ntasks:\n- {name: a, command: [x], trigger: sometimes}\n",
    ] {
        let e = refused(yaml);
        assert_eq!(e.field, "file", "{yaml}");
        assert!(e.reason.contains("unknown"), "{yaml}: {e}");
    }
}

#[test]
fn bad_durations_and_quantities_are_refused() {
    let e = refused("name: t\ntimeout: soon\ntasks:\n- {name: a, command: [x]}\n");
    assert_eq!((e.task, e.field.as_str()), (None, "timeout"));
    let e = refused("name: t\ntasks:\n- {name: a, command: [x], timeout: 10 parsecs}\n");
    assert_eq!(
        (e.task.as_deref(), e.field.as_str()),
        (Some("a"), "timeout")
    );
    let e = refused("name: t\ntasks:\n- {name: a, command: [x], resources: {cpu: lots}}\n");
    assert_eq!(e.field, "resources.cpu");
    let e = refused("name: t\ntasks:\n- {name: a, command: [x], resources: {memory: 3Qi}}\n");
    assert_eq!(e.field, "resources.memory");
    let e =
        refused("name: t\ntasks:\n- {name: a, command: [x], backoff: {initial: 1m, max: 1s}}\n");
    assert_eq!(e.field, "backoff.initial");
    let e = refused("name: t\ntasks:\n- {name: a, command: [x], retries: 100}\n");
    assert_eq!(e.field, "retries");
}

#[test]
fn job_fields_are_validated_through_the_job_spec() {
    let e = refused("name: t\ntasks:\n- {name: a, command: [x], env: {AUGUR_X: '${{ params.p }}'}}\nparams: {p: v}\n");
    assert_eq!(
        (e.task.as_deref(), e.field.as_str()),
        (Some("a"), "env[\"AUGUR_X\"]")
    );
    let e = refused("name: t\ntasks:\n- {name: a, command: [x], priority: 5000}\n");
    assert_eq!(e.field, "priority");
    let e = refused("name: t\ntasks:\n- {name: a, command: [x], working_dir: relative}\n");
    assert_eq!(e.field, "working_dir");
    let e = refused("name: t\ntasks:\n- {name: a, command: []}\n");
    assert_eq!(e.field, "command");
    // A reference in the program itself is rendered with a dummy first.
    assert!(check(
        "name: t\nparams: {p: echo}\ntasks:\n- {name: a, command: ['${{ params.p }}']}\n"
    )
    .is_ok());
}

#[test]
fn for_each_must_be_a_list() {
    let e = refused("name: t\ntasks:\n- {name: a, command: [x], for_each: 'a,b'}\n");
    assert_eq!(e.field, "for_each");
    let e = refused("name: t\ntasks:\n- {name: a, command: [x], for_each: '${{ workflow.id }}'}\n");
    assert!(e.reason.contains("not a list"), "{e}");
    let e = refused("name: t\nparams: {p: plain}\ntasks:\n- {name: a, command: [x], for_each: '${{ params.p }}'}\n");
    assert!(e.reason.contains("JSON list"), "{e}");
    assert!(check("name: t\nparams: {p: '[1, 2]'}\ntasks:\n- {name: a, command: [x, '${{ item }}'], for_each: '${{ params.p }}'}\n").is_ok());
    assert!(check(
        "name: t\ntasks:\n- {name: a, command: [x, '${{ item }}'], for_each: [a, 2, true]}\n"
    )
    .is_ok());
    let e = refused("name: t\ntasks:\n- {name: a, command: [x], for_each: {a: 1}}\n");
    assert_eq!(e.field, "file");
}

#[test]
fn more_than_ten_thousand_static_instances_are_refused() {
    let items: Vec<String> = (0..10_001).map(|i| i.to_string()).collect();
    let yaml = format!(
        "name: t\ntasks:\n- {{name: a, command: [x], for_each: [{}]}}\n",
        items.join(",")
    );
    let e = refused(&yaml);
    assert!(e.reason.contains("10000"), "{e}");
    let yaml = format!(
        "name: t\ntasks:\n- {{name: a, command: [x], for_each: [{}]}}\n",
        items[..10_000].join(",")
    );
    assert!(check(&yaml).is_ok());
}

#[test]
fn bad_when_is_refused() {
    let e = refused("name: t\ntasks:\n- {name: a, command: [x], when: maybe}\n");
    assert_eq!(e.field, "when");
    let e = refused("name: t\ntasks:\n- {name: a, command: [x], when: '${{ params.x }} == 1'}\n");
    assert!(e.reason.contains("no parameter"), "{e}");
    let e = refused(
        "name: t\ntasks:\n- {name: a, command: [x], for_each: [1], when: '${{ item }} == 1'}\n",
    );
    assert_eq!(e.field, "when");
}

#[test]
fn finally_tasks_take_no_depends_on_or_trigger() {
    let e = refused("name: t\ntasks:\n- {name: a, command: [x]}\nfinally:\n- {name: f, depends_on: [a], command: [x]}\n");
    assert_eq!(
        (e.task.as_deref(), e.field.as_str()),
        (Some("f"), "depends_on")
    );
    let e = refused("name: t\ntasks:\n- {name: a, command: [x]}\nfinally:\n- {name: f, trigger: all_done, command: [x]}\n");
    assert_eq!(e.field, "trigger");
    // A finally task may read any DAG task's outputs.
    assert!(check("name: t\ntasks:\n- {name: a, command: [x]}\nfinally:\n- {name: f, command: [x, '${{ tasks.a.outputs.k }}']}\n").is_ok());
}

#[test]
fn files_over_one_mib_are_refused_before_parsing() {
    let mut big = b"name: t\n".to_vec();
    big.resize(MAX_FILE_BYTES + 1, b'#');
    let e = parse_yaml(&big).err();
    assert!(e.is_some_and(|e| e.field == "file" && e.reason.contains("1 MiB")));
    assert!(parse_json(&big).is_err());
}

#[test]
fn bad_names_are_refused() {
    let e = refused("name: t\ntasks:\n- {name: 'a.b', command: [x]}\n");
    assert_eq!(e.field, "name");
    let e = refused("name: 'bad name'\ntasks:\n- {name: a, command: [x]}\n");
    assert_eq!((e.task, e.field.as_str()), (None, "name"));
    let e = refused("name: t\ntasks: []\n");
    assert_eq!(e.field, "tasks");
}
