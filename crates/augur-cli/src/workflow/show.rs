//! Showing runs: `augur workflow get` and the JSON and tables of every
//! workflow command.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::process::ExitCode;

use augur_proto::v1 as pb;
use clap::Args;
use serde_json::{json, Value};

use crate::client::connect;
use crate::render;
use crate::Output;

/// A fanned-out task with more instances than this is one line of the table
/// (counts by state), unless `--all`.
pub const COLLAPSE_OVER: usize = 20;

/// Instance states in the order a table lists their counts.
const STATE_ORDER: [&str; 8] = [
    "pending",
    "waiting",
    "running",
    "succeeded",
    "failed",
    "skipped",
    "upstream_failed",
    "cancelled",
];

/// Bad instances named when a waited-for run did not succeed.
const ENDING_NAMED: usize = 5;

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Run id.
    id: String,
    /// Show every instance of a fanned-out task (by default a task with more
    /// than 20 is one line of counts).
    #[arg(long)]
    all: bool,
}

pub async fn get(endpoint: &str, output: Output, args: GetArgs) -> anyhow::Result<ExitCode> {
    let mut client = connect(endpoint).await?;
    let run = client
        .get_workflow(pb::GetWorkflowRequest { run_id: args.id })
        .await?
        .into_inner();
    match output {
        Output::Json => println!("{}", run_value(&run, true)),
        Output::Table => print!("{}", run_detail(&run, args.all)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `cancel` and `retry`: the run's new state.
pub fn print_state(output: Output, run: &pb::WorkflowRun) {
    match output {
        Output::Json => println!("{}", run_value(run, true)),
        Output::Table => println!("{}: {} ({})", run.id, run.state, counts_text(&run.counts)),
    }
}

fn text_or_null(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

/// One task instance; `item` and `item_index` are null for a task that is
/// not fanned out.
pub fn task_value(t: &pb::WorkflowTask) -> Value {
    json!({
        "name": t.name,
        "item": if t.fanned { Value::String(t.item.clone()) } else { Value::Null },
        "item_index": if t.fanned { json!(t.item_index) } else { Value::Null },
        "state": t.state,
        "job_id": text_or_null(&t.job_id),
        "attempts": t.attempts,
        "outputs": t.outputs.iter().collect::<BTreeMap<_, _>>(),
        "message": text_or_null(&t.message),
        "generation": t.generation,
        "finally": t.finally,
    })
}

/// A run as JSON; `with_tasks` false for list answers (which carry none).
pub fn run_value(run: &pb::WorkflowRun, with_tasks: bool) -> Value {
    let mut value = json!({
        "id": run.id,
        "name": run.name,
        "state": run.state,
        "params": run.params.iter().collect::<BTreeMap<_, _>>(),
        "submitted_at": render::time(run.submitted_at_ms),
        "finished_at": render::time(run.finished_at_ms),
        "owner": text_or_null(&run.owner),
        "trace_id": text_or_null(&run.trace_id),
        "counts": run.counts.iter().collect::<BTreeMap<_, _>>(),
    });
    if with_tasks {
        value["tasks"] = run.tasks.iter().map(task_value).collect();
    }
    value
}

/// Counts by state, in [`STATE_ORDER`] then by name: `3 succeeded, 1 failed`.
fn counts_text<'a>(counts: impl IntoIterator<Item = (&'a String, &'a u32)>) -> String {
    let counts: BTreeMap<&str, u32> = counts
        .into_iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    let rank = |s: &str| {
        STATE_ORDER
            .iter()
            .position(|o| *o == s)
            .unwrap_or(usize::MAX)
    };
    let mut states: Vec<(&str, u32)> = counts.into_iter().collect();
    states.sort_by_key(|(s, _)| (rank(s), *s));
    if states.is_empty() {
        return "no tasks".to_string();
    }
    states
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `73ms`, `12.3s`, `4m 5s`; `-` while running.
fn duration_text(run: &pb::WorkflowRun) -> String {
    if run.finished_at_ms <= 0 || run.submitted_at_ms <= 0 {
        return "-".to_string();
    }
    let ms = (run.finished_at_ms - run.submitted_at_ms).max(0) as u64;
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
    }
}

fn time_text(ms: i64) -> String {
    match render::time(ms) {
        Value::String(s) => s,
        _ => "-".to_string(),
    }
}

/// Text cut to `max` characters, with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn task_label(t: &pb::WorkflowTask) -> String {
    if t.finally {
        format!("{} (finally)", t.name)
    } else {
        t.name.clone()
    }
}

fn task_row(
    out: &mut String,
    task: &str,
    item: &str,
    state: &str,
    attempts: &str,
    job: &str,
    message: &str,
) {
    let line = format!("{task:<24}  {item:<24}  {state:<16}  {attempts:>8}  {job:<26}  {message}");
    let _ = writeln!(out, "{}", line.trim_end());
}

/// `augur workflow get`'s table: the run, then one line per task instance;
/// a fanned-out task of more than [`COLLAPSE_OVER`] instances is one line of
/// counts by state unless `all`.
pub fn run_detail(run: &pb::WorkflowRun, all: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  {}  {}  submitted {}  finished {}  took {}",
        run.id,
        run.name,
        run.state,
        time_text(run.submitted_at_ms),
        time_text(run.finished_at_ms),
        duration_text(run),
    );
    if !run.params.is_empty() {
        let params: BTreeMap<_, _> = run.params.iter().collect();
        let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "params: {}", params.join(" "));
    }
    task_row(
        &mut out, "TASK", "ITEM", "STATE", "ATTEMPTS", "JOB", "MESSAGE",
    );
    // Instances grouped by task, tasks in the order the server lists them.
    let mut order: Vec<(&str, bool)> = Vec::new();
    let mut groups: BTreeMap<(&str, bool), Vec<&pb::WorkflowTask>> = BTreeMap::new();
    for t in &run.tasks {
        let key = (t.name.as_str(), t.finally);
        groups
            .entry(key)
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(t);
    }
    let mut collapsed = 0usize;
    for key in order {
        let Some(instances) = groups.get(&key) else {
            continue;
        };
        let fanned = instances.iter().any(|t| t.fanned);
        if fanned && instances.len() > COLLAPSE_OVER && !all {
            collapsed += 1;
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            for t in instances {
                *counts.entry(t.state.clone()).or_default() += 1;
            }
            let attempts: u64 = instances.iter().map(|t| u64::from(t.attempts)).sum();
            task_row(
                &mut out,
                &cut(&task_label(instances[0]), 24),
                &format!("({} items)", instances.len()),
                &counts_text(&counts),
                &attempts.to_string(),
                "-",
                "",
            );
            continue;
        }
        for t in instances {
            let item = if t.fanned {
                cut(&format!("[{}] {}", t.item_index, t.item), 24)
            } else {
                "-".to_string()
            };
            let job = if t.job_id.is_empty() { "-" } else { &t.job_id };
            task_row(
                &mut out,
                &cut(&task_label(t), 24),
                &item,
                &t.state,
                &t.attempts.to_string(),
                job,
                &t.message,
            );
        }
    }
    if collapsed > 0 {
        let _ = writeln!(
            out,
            "({collapsed} fanned-out task(s) of more than {COLLAPSE_OVER} instances shown as counts; --all shows every instance)"
        );
    }
    out
}

/// `augur workflow list`'s table.
pub fn run_table(runs: &[pb::WorkflowRun]) -> String {
    let mut out = String::new();
    let row = |out: &mut String, cols: [&str; 6]| {
        let [id, name, state, submitted, took, tasks] = cols;
        let _ = writeln!(
            out,
            "{id:<29}  {name:<24}  {state:<10}  {submitted:<24}  {took:>8}  {tasks}"
        );
    };
    row(
        &mut out,
        ["ID", "NAME", "STATE", "SUBMITTED", "TOOK", "TASKS"],
    );
    for run in runs {
        row(
            &mut out,
            [
                &run.id,
                &cut(&run.name, 24),
                &run.state,
                &time_text(run.submitted_at_ms),
                &duration_text(run),
                &counts_text(&run.counts),
            ],
        );
    }
    out
}

/// Why a waited-for run did not succeed: its state and first bad instances.
pub fn ending(run: &pb::WorkflowRun) -> String {
    let bad: Vec<&pb::WorkflowTask> = run
        .tasks
        .iter()
        .filter(|t| matches!(t.state.as_str(), "failed" | "upstream_failed" | "cancelled"))
        .collect();
    let mut text = format!("workflow run {} ended {}", run.id, run.state);
    if bad.is_empty() {
        return text;
    }
    let named: Vec<String> = bad
        .iter()
        .take(ENDING_NAMED)
        .map(|t| {
            let mut s = format!("task {:?}", t.name);
            if t.fanned {
                let _ = write!(s, " [{}]", t.item_index);
            }
            let _ = write!(s, " {}", t.state);
            if !t.message.is_empty() {
                let _ = write!(s, ": {}", t.message);
            }
            s
        })
        .collect();
    let _ = write!(text, ": {}", named.join("; "));
    if bad.len() > ENDING_NAMED {
        let _ = write!(text, "; and {} more", bad.len() - ENDING_NAMED);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, item: Option<(u32, &str)>, state: &str) -> pb::WorkflowTask {
        pb::WorkflowTask {
            name: name.to_string(),
            fanned: item.is_some(),
            item: item.map(|(_, s)| s.to_string()).unwrap_or_default(),
            item_index: item.map(|(i, _)| i).unwrap_or_default(),
            state: state.to_string(),
            ..Default::default()
        }
    }

    /// extract → transform × `width` → load, cleanup (finally).
    fn run(width: u32) -> pb::WorkflowRun {
        let mut tasks = vec![pb::WorkflowTask {
            job_id: "job-1".into(),
            attempts: 2,
            outputs: [("count".to_string(), "3".to_string())].into(),
            ..task("extract", None, "succeeded")
        }];
        for i in 0..width {
            let state = if i % 10 == 9 { "failed" } else { "succeeded" };
            tasks.push(pb::WorkflowTask {
                job_id: format!("job-t{i}"),
                attempts: 1,
                message: if state == "failed" {
                    "exit 1".into()
                } else {
                    String::new()
                },
                ..task("transform", Some((i, &format!("f{i}.txt"))), state)
            });
        }
        tasks.push(task("load", None, "upstream_failed"));
        tasks.push(pb::WorkflowTask {
            finally: true,
            job_id: "job-c".into(),
            attempts: 1,
            ..task("cleanup", None, "succeeded")
        });
        pb::WorkflowRun {
            id: "run-1".into(),
            name: "nightly-etl".into(),
            state: "failed".into(),
            params: [("dir".to_string(), "/etc".to_string())].into(),
            submitted_at_ms: 1_700_000_000_000,
            finished_at_ms: 1_700_000_012_345,
            tasks,
            owner: String::new(),
            trace_id: "abc123".into(),
            counts: [
                ("succeeded".to_string(), 3 + width - width / 10),
                ("failed".to_string(), width / 10),
                ("upstream_failed".to_string(), 1),
            ]
            .into(),
        }
    }

    #[test]
    fn a_run_as_json() {
        let v = run(2);
        let value = run_value(&v, true);
        assert_eq!(
            value,
            json!({
                "id": "run-1",
                "name": "nightly-etl",
                "state": "failed",
                "params": {"dir": "/etc"},
                "submitted_at": "2023-11-14T22:13:20.000Z",
                "finished_at": "2023-11-14T22:13:32.345Z",
                "owner": null,
                "trace_id": "abc123",
                "counts": {"succeeded": 5, "failed": 0, "upstream_failed": 1},
                "tasks": [
                    {"name": "extract", "item": null, "item_index": null, "state": "succeeded",
                     "job_id": "job-1", "attempts": 2, "outputs": {"count": "3"}, "message": null,
                     "generation": 0, "finally": false},
                    {"name": "transform", "item": "f0.txt", "item_index": 0, "state": "succeeded",
                     "job_id": "job-t0", "attempts": 1, "outputs": {}, "message": null,
                     "generation": 0, "finally": false},
                    {"name": "transform", "item": "f1.txt", "item_index": 1, "state": "succeeded",
                     "job_id": "job-t1", "attempts": 1, "outputs": {}, "message": null,
                     "generation": 0, "finally": false},
                    {"name": "load", "item": null, "item_index": null, "state": "upstream_failed",
                     "job_id": null, "attempts": 0, "outputs": {}, "message": null,
                     "generation": 0, "finally": false},
                    {"name": "cleanup", "item": null, "item_index": null, "state": "succeeded",
                     "job_id": "job-c", "attempts": 1, "outputs": {}, "message": null,
                     "generation": 0, "finally": true},
                ],
            })
        );
        // A list answer has no tasks; a running run has no finish time.
        let mut running = v.clone();
        running.finished_at_ms = 0;
        running.state = "running".into();
        let listed = run_value(&running, false);
        assert!(listed.get("tasks").is_none());
        assert_eq!(listed["finished_at"], Value::Null);
    }

    #[test]
    fn a_wide_fan_out_is_one_line_of_counts_unless_all() {
        let wide = run(25);
        let table = run_detail(&wide, false);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("run-1  nightly-etl  failed  submitted 2023-11-14T22:13:20.000Z  finished 2023-11-14T22:13:32.345Z  took 12.3s"),
            "{table}"
        );
        assert_eq!(lines[1], "params: dir=/etc");
        assert!(lines[2].starts_with("TASK "), "{table}");
        let transform: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("transform "))
            .collect();
        assert_eq!(transform.len(), 1, "{table}");
        assert!(transform[0].contains("(25 items)"), "{table}");
        assert!(transform[0].contains("23 succeeded, 2 failed"), "{table}");
        assert!(
            lines.iter().any(|l| l.starts_with("cleanup (finally) ")),
            "{table}"
        );
        assert!(table.ends_with("--all shows every instance)\n"), "{table}");
        // header, params, column names, extract, transform, load, cleanup, note
        assert_eq!(lines.len(), 8, "{table}");

        let every = run_detail(&wide, true);
        assert_eq!(
            every
                .lines()
                .filter(|l| l.starts_with("transform "))
                .count(),
            25
        );
        assert!(every.contains("[9] f9.txt"), "{every}");
        assert!(every
            .lines()
            .any(|l| l.contains("[9] f9.txt") && l.ends_with("exit 1")));
        assert!(!every.contains("--all"), "{every}");

        // At the threshold every instance has its line.
        let narrow = run_detail(&run(COLLAPSE_OVER as u32), false);
        assert_eq!(
            narrow
                .lines()
                .filter(|l| l.starts_with("transform "))
                .count(),
            COLLAPSE_OVER
        );
    }

    #[test]
    fn durations_read_well_at_every_scale() {
        let took = |ms: i64, finished: bool| {
            let mut r = run(0);
            r.finished_at_ms = if finished { r.submitted_at_ms + ms } else { 0 };
            duration_text(&r)
        };
        assert_eq!(took(73, true), "73ms");
        assert_eq!(took(12_345, true), "12.3s");
        assert_eq!(took(245_900, true), "4m 5s");
        assert_eq!(took(5, false), "-");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abcd", 4), "abcd");
    }

    #[test]
    fn counts_are_listed_in_state_order() {
        let counts: BTreeMap<String, u32> = [
            ("skipped", 1),
            ("failed", 2),
            ("running", 3),
            ("new_state", 4),
            ("succeeded", 0),
        ]
        .iter()
        .map(|(k, n)| (k.to_string(), *n))
        .collect();
        assert_eq!(
            counts_text(&counts),
            "3 running, 2 failed, 1 skipped, 4 new_state"
        );
        assert_eq!(counts_text(&BTreeMap::new()), "no tasks");
    }

    #[test]
    fn the_list_table_and_the_ending_of_a_failed_run() {
        let mut running = run(0);
        running.id = "run-2".into();
        running.state = "running".into();
        running.finished_at_ms = 0;
        let table = run_table(&[run(0), running]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID "));
        assert!(
            lines[1].contains(" 12.3s  3 succeeded, 1 upstream_failed"),
            "{table}"
        );
        assert!(
            lines[2].contains(" running ") && lines[2].contains("  -  "),
            "{table}"
        );

        assert_eq!(
            ending(&run(30)),
            "workflow run run-1 ended failed: task \"transform\" [9] failed: exit 1; \
             task \"transform\" [19] failed: exit 1; task \"transform\" [29] failed: exit 1; \
             task \"load\" upstream_failed"
        );
        assert!(ending(&run(70)).ends_with("task \"transform\" [49] failed: exit 1; and 3 more"));
        let mut cancelled = run(0);
        cancelled.state = "cancelled".into();
        cancelled.tasks.clear();
        assert_eq!(ending(&cancelled), "workflow run run-1 ended cancelled");
    }
}
