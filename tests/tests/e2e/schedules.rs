//! Periodic schedules: CRUD with precise errors, and exactly one run per tick
//! across leader kills.

use std::collections::HashMap;
use std::time::Duration;

use augur_e2e::{poll_until, Cluster, ClusterConfig};

const DEADLINE: Duration = Duration::from_secs(60);

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn schedules_are_created_listed_paused_and_deleted_with_precise_errors() {
    let cluster = Cluster::start(ClusterConfig {
        workers: 1,
        ..ClusterConfig::default()
    });
    let bad = cluster.cli(&[
        "schedule",
        "create",
        "s1",
        "--cron",
        "61 * * * *",
        "--",
        "true",
    ]);
    assert!(stderr(&bad).contains("InvalidArgument: cron:"), "{bad:?}");
    let bad = cluster.cli(&[
        "schedule",
        "create",
        "bad/name",
        "--cron",
        "* * * * *",
        "--",
        "true",
    ]);
    assert!(stderr(&bad).contains("InvalidArgument: name:"), "{bad:?}");
    let bad = cluster.cli(&[
        "schedule",
        "create",
        "s1",
        "--cron",
        "* * * * *",
        "--missed",
        "sometimes",
        "--",
        "true",
    ]);
    assert!(stderr(&bad).contains("InvalidArgument: missed:"), "{bad:?}");
    let bad = cluster.cli(&[
        "schedule",
        "create",
        "s1",
        "--cron",
        "* * * * *",
        "--timeout",
        "5x",
        "--",
        "true",
    ]);
    assert!(stderr(&bad).contains("spec.timeout"), "{bad:?}");
    let none: serde_json::Value = cluster.cli_json(&["schedule", "list"]);
    assert_eq!(
        none,
        serde_json::json!([]),
        "refused creations wrote nothing"
    );

    cluster.cli_ok(&[
        "schedule",
        "create",
        "hourly",
        "--cron",
        "0 * * * *",
        "--",
        "echo",
        "hi",
    ]);
    let dup = cluster.cli(&[
        "schedule",
        "create",
        "hourly",
        "--cron",
        "0 * * * *",
        "--",
        "true",
    ]);
    assert!(stderr(&dup).contains("AlreadyExists"), "{dup:?}");
    let list = cluster.cli_json(&["schedule", "list"]);
    assert_eq!(list[0]["name"], "hourly", "{list}");
    assert!(list[0]["next_tick"].is_string(), "{list}");
    let paused = cluster.cli_json(&["schedule", "pause", "hourly"]);
    assert_eq!(paused["paused"], true, "{paused}");
    let resumed = cluster.cli_json(&["schedule", "resume", "hourly"]);
    assert_eq!(resumed["paused"], false, "{resumed}");
    cluster.cli_ok(&["schedule", "delete", "hourly"]);
    let gone = cluster.cli(&["schedule", "delete", "hourly"]);
    assert!(stderr(&gone).contains("NotFound"), "{gone:?}");
}

/// Lines `tick job attempt` written by every run of the schedule.
fn ledger_ticks(path: &std::path::Path) -> Vec<(i64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.parse().ok()?, parts.next()?.to_string()))
        })
        .collect()
}

#[test]
fn each_tick_runs_once_across_leader_kills() {
    let mut cluster = Cluster::start(ClusterConfig {
        coordinators: 3,
        workers: 2,
        ..ClusterConfig::default()
    });
    let ledger = cluster.path("ticks.ledger");
    let script = format!(
        "echo \"$AUGUR_SCHEDULED_AT_MS $AUGUR_JOB_ID $AUGUR_ATTEMPT\" >> {}",
        augur_e2e::shell_quote(&ledger.display().to_string())
    );
    cluster.cli_ok(&[
        "schedule",
        "create",
        "every-second",
        "--cron",
        "* * * * * *",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let wait_ticks = |at_least: usize| {
        poll_until(DEADLINE, format!("{at_least} ticks in the ledger"), || {
            let n = ledger_ticks(&ledger).len();
            if n >= at_least {
                Ok(())
            } else {
                Err(format!("{n} ticks"))
            }
        });
    };
    wait_ticks(3);
    for round in 0..2 {
        let leader = cluster.wait_leader(DEADLINE, "elected", |_| true);
        cluster.kill_node(&leader);
        let next = cluster.wait_leader(DEADLINE, "a survivor", |l| l != leader);
        eprintln!("round {round}: killed leader {leader}, {next} took over");
        let seen = ledger_ticks(&ledger).len();
        wait_ticks(seen + 3);
    }
    let out = cluster.cli_any(&["schedule", "pause", "every-second"]);
    assert!(out.status.success(), "{out:?}");
    // Let jobs already started finish writing.
    std::thread::sleep(Duration::from_secs(2));

    let ticks = ledger_ticks(&ledger);
    let mut runs: HashMap<i64, Vec<String>> = HashMap::new();
    for (tick, job) in &ticks {
        runs.entry(*tick).or_default().push(job.clone());
    }
    for (tick, jobs) in &runs {
        assert_eq!(
            jobs.len(),
            1,
            "tick {tick} ran {} times: {jobs:?}",
            jobs.len()
        );
        assert_eq!(tick % 1000, 0, "ticks fall on whole seconds: {tick}");
    }
    let mut sorted: Vec<i64> = runs.keys().copied().collect();
    sorted.sort_unstable();
    let gaps: Vec<i64> = sorted
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1000 - 1)
        .filter(|g| *g > 0)
        .collect();
    eprintln!(
        "{} ticks ran once each; missed-tick gaps (seconds without a leader): {gaps:?}",
        sorted.len()
    );
    assert!(sorted.len() >= 7, "too few ticks fired: {sorted:?}");
    // Only the two failovers may leave gaps, each about a lease TTL long.
    assert!(
        gaps.len() <= 2,
        "ticks missed outside the failovers: {gaps:?}"
    );
}
