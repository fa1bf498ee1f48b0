//! Job resource limits on real cgroups (this machine: cgroup v1, root): a job
//! past its memory limit ends `oom_killed`, a CPU-limited job is slowed down,
//! a fork bomb stops at the pids limit while the worker keeps running jobs,
//! a daemonised grandchild dies with its attempt, cgroup usage reaches the run
//! records, and a bad `--cgroup-parent` stops the worker at start.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use augur_e2e::exposition::{scrape, Exposition};
use augur_e2e::{
    augur_bin, json_str, pid_alive, poll_until, run_with_timeout, Cluster, ClusterConfig,
};
use serde_json::Value;

const JOB_DEADLINE: Duration = Duration::from_secs(90);
/// A shell loop of about a second of one core on this machine.
const BUSY_LOOP: &str = "i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); done";

fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// One worker with two slots that must enforce limits (it refuses to start
/// otherwise) and allows 64 processes per attempt.
fn limited_cluster() -> Cluster {
    Cluster::start(ClusterConfig {
        workers: 1,
        worker_slots: 2,
        extra_worker_args: ["--enforce-resources", "--max-job-pids", "64"]
            .map(String::from)
            .to_vec(),
        ..ClusterConfig::default()
    })
}

fn run_records(cluster: &Cluster) -> Vec<Value> {
    cluster
        .cli_ok(&["runs", "export"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON run record per line"))
        .collect()
}

fn run_record(cluster: &Cluster, id: &str) -> Value {
    poll_until(
        Duration::from_secs(20),
        format!("a run record of {id}"),
        || {
            run_records(cluster)
                .into_iter()
                .find(|r| r["job_id"] == id)
                .ok_or_else(|| "not recorded yet".to_string())
        },
    )
}

fn u64_of(record: &Value, field: &str) -> u64 {
    record[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a number in {record}"))
}

/// The cgroup directories an attempt of job `id` would have on this v1 host,
/// under the worker's default parents.
fn attempt_dirs(worker_pid: u32, id: &str) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{worker_pid}/cgroup")).expect("cgroup");
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _ = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?.trim_start_matches('/');
            ["memory", "cpu", "pids"]
                .iter()
                .find(|c| controllers.split(',').any(|x| x == **c))
                .map(|c| {
                    PathBuf::from("/sys/fs/cgroup")
                        .join(c)
                        .join(path)
                        .join("augur")
                        .join(format!("{id}-1"))
                })
        })
        .collect()
}

#[test]
fn cgroups_enforce_memory_cpu_and_pids_and_report_usage() {
    if !is_root() {
        eprintln!("skipped: cgroups need root");
        return;
    }
    let cluster = limited_cluster();
    let worker_pid = cluster.worker_pid("w1");

    // Memory: 200 MB through `tail` under a 64 MiB limit.
    let oom = cluster.submit(&[
        "--memory",
        "64Mi",
        "--",
        "sh",
        "-c",
        "head -c 200000000 /dev/zero | tail",
    ]);
    let job = cluster.wait_terminal(&oom, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "failed", "{job}");
    assert!(json_str(&job, "message").contains("oom_killed"), "{job}");
    let record = run_record(&cluster, &oom);
    assert_eq!(json_str(&record, "outcome"), "oom_killed", "{record}");
    let peak = u64_of(&record, "peak_memory_bytes");
    assert!(peak > 32 << 20 && peak <= 65 << 20, "peak {peak}: {record}");
    for dir in attempt_dirs(worker_pid, &oom) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    poll_until(Duration::from_secs(20), "oom_killed counted", || {
        let text = scrape(cluster.metrics_addr(0), false)?;
        let counted = Exposition::parse(&text)?
            .sum("augur_jobs_finished_total", &[("outcome", "oom_killed")]);
        (counted >= 1.0)
            .then_some(())
            .ok_or_else(|| format!("augur_jobs_finished_total{{outcome=oom_killed}} = {counted}"))
    });

    // CPU: the same loop unlimited, then at a quarter of a core, one at a time.
    let unlimited = cluster.submit(&["--", "sh", "-c", BUSY_LOOP]);
    let job = cluster.wait_terminal(&unlimited, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    let limited = cluster.submit(&["--cpu", "250m", "--", "sh", "-c", BUSY_LOOP]);
    let job = cluster.wait_terminal(&limited, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    let fast = run_record(&cluster, &unlimited);
    let slow = run_record(&cluster, &limited);
    let (fast_ms, slow_ms) = (u64_of(&fast, "runtime_ms"), u64_of(&slow, "runtime_ms"));
    let ratio = slow_ms as f64 / fast_ms.max(1) as f64;
    println!("busy loop: unlimited {fast_ms} ms, --cpu 250m {slow_ms} ms, ratio {ratio:.2}");
    assert!(ratio >= 2.0, "a quarter core ran {ratio:.2}x as long");
    // Usage from the cgroup: CPU close to the loop's work, memory non-zero.
    for record in [&fast, &slow] {
        assert!(u64_of(record, "cgroup_cpu_us") > 100_000, "{record}");
        assert!(u64_of(record, "peak_memory_bytes") > 0, "{record}");
    }
    println!(
        "cgroup cpu: unlimited {} us, limited {} us",
        u64_of(&fast, "cgroup_cpu_us"),
        u64_of(&slow, "cgroup_cpu_us")
    );

    // Pids: a fork bomb for 5 s (the leader `exec`s, so it needs no fork of
    // its own once the bomb is lit); meanwhile the other slot runs a job.
    let bomb = cluster.submit(&[
        "--timeout",
        "60s",
        "--",
        "sh",
        "-c",
        "bomb() { bomb | bomb & }; bomb; exec sleep 5",
    ]);
    cluster.wait_job(&bomb, JOB_DEADLINE, "running", |j| j["state"] == "running");
    let alive = cluster.submit(&["--", "echo", "alive"]);
    let job = cluster.wait_terminal(&alive, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    assert_eq!(json_str(&job, "stdout_tail"), "alive\n", "{job}");
    let job = cluster.wait_terminal(&bomb, JOB_DEADLINE);
    println!("fork bomb: {}", json_str(&job, "message"));
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    assert!(
        json_str(&job, "stderr_tail").contains("Cannot fork"),
        "the bomb never hit the pids limit: {job}"
    );
    for dir in attempt_dirs(worker_pid, &bomb) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    let after = cluster.submit(&["--", "echo", "after"]);
    let job = cluster.wait_terminal(&after, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    assert!(pid_alive(worker_pid), "the worker died under the fork bomb");
}

#[test]
fn cgroups_cancel_kills_a_daemonised_grandchild() {
    if !is_root() {
        eprintln!("skipped: cgroups need root");
        return;
    }
    let cluster = limited_cluster();
    let worker_pid = cluster.worker_pid("w1");
    // The worker reported what it offers.
    let workers = cluster.workers();
    let capacity = &workers[0]["capacity"];
    assert!(
        capacity["cpu_millis"].as_u64().is_some_and(|c| c >= 1000),
        "{workers:?}"
    );
    assert!(
        capacity["memory_bytes"].as_u64().is_some_and(|m| m > 0),
        "{workers:?}"
    );
    let pidfile = cluster.path("daemon.pid");
    let script = format!(
        "setsid sh -c 'echo $$ > {0}; exec sleep 1000' </dev/null >/dev/null 2>&1 & exec sleep 1000",
        pidfile.display()
    );
    let id = cluster.submit(&["--", "sh", "-c", &script]);
    let daemon: u32 = poll_until(JOB_DEADLINE, "the daemon's pid", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| "no pid yet".to_string())
    });
    assert!(pid_alive(daemon), "the daemon is running");
    cluster.cli_ok(&["cancel", &id]);
    let job = cluster.wait_terminal(&id, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "cancelled", "{job}");
    let gone = poll_until(Duration::from_secs(10), "the daemon to be killed", || {
        (!pid_alive(daemon))
            .then_some(true)
            .ok_or_else(|| format!("{daemon} alive"))
    });
    assert!(gone);
    for dir in attempt_dirs(worker_pid, &id) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn cgroups_a_missing_cgroup_parent_stops_the_worker_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_with_timeout(
        Command::new(augur_bin())
            .arg("worker")
            .args(["--cgroup-parent", "/no/such/augur-parent"])
            .arg("--data-dir")
            .arg(dir.path()),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the worker started: {stderr}");
    assert!(
        stderr.contains("--cgroup-parent /no/such/augur-parent"),
        "the error names the flag: {stderr}"
    );
    assert!(
        !PathBuf::from("/sys/fs/cgroup/memory/no").exists(),
        "nothing was created"
    );
}
