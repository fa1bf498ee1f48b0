//! One job at a time through its life: success, retries with backoff, timeout,
//! cancellation and idempotent submission.

use std::path::Path;
use std::time::Duration;

use augur_e2e::{
    json_str, json_u64, pid_alive, poll_until, shell_quote, Cluster, ClusterConfig, Ledger,
};

/// Deadline for a short job to reach a terminal state.
const JOB_DEADLINE: Duration = Duration::from_secs(60);
/// Deadline for a killed process to disappear.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// Waits until `path` holds a pid (the job writes it; it may be empty at first).
fn read_pid_file(path: &Path) -> u32 {
    poll_until(JOB_DEADLINE, format!("a pid in {}", path.display()), || {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        text.trim().parse().map_err(|e| format!("{text:?}: {e}"))
    })
}

fn wait_pid_gone(pid: u32, what: &str) {
    poll_until(
        EXIT_DEADLINE,
        format!("{what} (pid {pid}) to be gone"),
        || {
            if pid_alive(pid) {
                Err("still alive".to_string())
            } else {
                Ok(())
            }
        },
    );
}

#[test]
fn echo_job_succeeds_with_its_output() {
    let cluster = Cluster::start(ClusterConfig::default());
    let id = cluster.submit(&["--", "echo", "hello"]);
    let job = cluster.wait_terminal(&id, JOB_DEADLINE);

    assert_eq!(json_str(&job, "id"), id);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    assert!(json_str(&job, "stdout_tail").contains("hello"), "{job}");
    assert_eq!(job["exit_code"], 0, "{job}");
    assert_eq!(json_u64(&job, "attempts"), 1, "{job}");
    let worker = json_str(&job, "worker_id").to_string();
    assert!(
        cluster.live_workers().contains(&worker),
        "ran on unknown worker {worker}"
    );
    for field in ["submitted_at", "started_at", "finished_at"] {
        assert!(job[field].is_string(), "{field} missing in {job}");
    }

    // What a job leaves in $AUGUR_OUTPUTS comes back with its result.
    let id = cluster.submit(&[
        "--",
        "sh",
        "-c",
        r#"echo 42 > "$AUGUR_OUTPUTS/answer"; printf 'x\ny\n' > "$AUGUR_OUTPUTS/items.lines""#,
    ]);
    let job = cluster.wait_terminal(&id, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    assert_eq!(job["outputs"]["answer"], "42\n", "{job}");
    assert_eq!(job["outputs"]["items.lines"], "x\ny\n", "{job}");
}

#[test]
fn failing_job_is_retried_with_backoff_then_fails() {
    let cluster = Cluster::start(ClusterConfig::default());
    let ledger = Ledger::new(cluster.path("ledger"));
    let script = format!("{}; exit 3", ledger.append_command());
    let id = cluster.submit(&[
        "--retries",
        "2",
        "--backoff",
        "200ms",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let job = cluster.wait_terminal(&id, JOB_DEADLINE);

    assert_eq!(json_str(&job, "state"), "failed", "{job}");
    assert_eq!(json_u64(&job, "attempts"), 3, "{job}");
    assert_eq!(job["exit_code"], 3, "{job}");

    let entries = ledger.entries();
    let attempts: Vec<u32> = entries.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "ledger: {entries:?}");
    assert!(
        entries.iter().all(|e| e.job_id == id),
        "ledger: {entries:?}"
    );
    // Backoff 200ms with at most 50% jitter: each retry starts at least 100ms after
    // the previous attempt started (a lower bound, not a speed assertion).
    for pair in entries.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= 0.095,
            "attempt {} started {gap:.3}s after the previous one",
            pair[1].attempt
        );
    }
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let cluster = Cluster::start(ClusterConfig::default());
    let pid_file = cluster.path("grandchild.pid");
    let script = format!(
        "sleep 300 & echo $! > {}; wait",
        shell_quote(&pid_file.to_string_lossy())
    );
    let id = cluster.submit(&["--timeout", "2s", "--", "sh", "-c", &script]);
    let job = cluster.wait_terminal(&id, JOB_DEADLINE);

    assert_eq!(json_str(&job, "state"), "timed_out", "{job}");
    assert_eq!(json_u64(&job, "attempts"), 1, "{job}");
    let grandchild = read_pid_file(&pid_file);
    wait_pid_gone(grandchild, "the job's background sleep");
}

#[test]
fn cancel_kills_a_running_job() {
    let cluster = Cluster::start(ClusterConfig::default());
    let pid_file = cluster.path("job.pid");
    let script = format!(
        "echo $$ > {}; sleep 300",
        shell_quote(&pid_file.to_string_lossy())
    );
    let id = cluster.submit(&["--", "sh", "-c", &script]);
    cluster.wait_job(&id, JOB_DEADLINE, "running", |job| {
        job["state"] == "running"
    });
    let pid = read_pid_file(&pid_file);
    assert!(
        pid_alive(pid),
        "the job's process {pid} died before the cancel"
    );

    let printed = cluster.cli_ok(&["cancel", &id]);
    assert!(!printed.trim().is_empty(), "`augur cancel` printed nothing");
    let job = cluster.wait_terminal(&id, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "cancelled", "{job}");
    wait_pid_gone(pid, "the cancelled job's process");
}

#[test]
fn idempotency_key_submits_and_runs_once() {
    let cluster = Cluster::start(ClusterConfig::default());
    let ledger = Ledger::new(cluster.path("ledger"));
    let script = ledger.append_command();
    let args = ["--idempotency-key", "k1", "--", "sh", "-c", &script];
    let first = cluster.submit(&args);
    let second = cluster.submit(&args);
    assert_eq!(first, second, "same idempotency key, different job ids");

    let job = cluster.wait_terminal(&first, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    // After the job ended, the key still maps to it and starts nothing new.
    let third = cluster.submit(&args);
    assert_eq!(
        first, third,
        "idempotency key forgotten after the job ended"
    );
    let job = cluster.get_job(&first);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    assert_eq!(json_u64(&job, "attempts"), 1, "{job}");

    let entries = ledger.entries();
    assert_eq!(entries.len(), 1, "ledger: {entries:?}");
    assert_eq!(entries[0].job_id, first);
    let jobs = cluster.list_jobs(None);
    assert_eq!(jobs.len(), 1, "jobs: {jobs:?}");
}
