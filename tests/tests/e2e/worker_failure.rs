//! A worker dies (SIGKILL): its lease expires, its attempts count as lost and run
//! again elsewhere, and every job still succeeds with no attempt run twice.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use augur_e2e::{json_str, json_u64, poll_until, Cluster, ClusterConfig, Ledger};

const JOBS: usize = 6;
/// Each job sleeps this long after writing its ledger line.
const JOB_SECONDS: f64 = 3.0;
const DEADLINE: Duration = Duration::from_secs(120);

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Jobs running on `worker` that started less than half a job ago, so they are
/// sure to still be running when the worker is killed right after. Err unless
/// every job running there is that fresh.
fn freshly_running_on(
    cluster: &Cluster,
    ledger: &Ledger,
    worker: &str,
) -> Result<Vec<String>, String> {
    let running: Vec<_> = cluster
        .list_jobs(None)
        .into_iter()
        .filter(|job| {
            job["worker_id"] == worker && (job["state"] == "running" || job["state"] == "assigned")
        })
        .collect();
    if running.is_empty() {
        return Err(format!("nothing running on {worker}"));
    }
    let started = ledger.by_job();
    let mut fresh = Vec::new();
    for job in &running {
        let id = json_str(job, "id");
        let attempt = json_u64(job, "attempts") as u32;
        let line = started
            .get(id)
            .and_then(|lines| lines.iter().find(|e| e.attempt == attempt));
        match line {
            Some(entry) if now_secs() - entry.at < JOB_SECONDS / 2.0 => fresh.push(id.to_string()),
            _ => {
                return Err(format!(
                    "{id} on {worker} is assigned, or started too long ago"
                ))
            }
        }
    }
    Ok(fresh)
}

#[test]
fn jobs_of_a_killed_worker_run_again_elsewhere() {
    let mut cluster = Cluster::start(ClusterConfig {
        workers: 2,
        worker_slots: 1,
        ..ClusterConfig::default()
    });
    let ledger = Ledger::new(cluster.path("ledger"));
    let script = format!("{}; sleep {JOB_SECONDS}", ledger.append_command());
    let ids: Vec<String> = (0..JOBS)
        .map(|_| cluster.submit(&["--name", "sleeper", "--", "sh", "-c", &script]))
        .collect();

    let victims = poll_until(DEADLINE, "a job freshly started on w1", || {
        freshly_running_on(&cluster, &ledger, "w1")
    });
    cluster.kill_worker("w1");

    for id in &ids {
        let job = cluster.wait_terminal(id, DEADLINE);
        assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
        if victims.contains(id) {
            assert_eq!(
                json_u64(&job, "attempts"),
                2,
                "job was running on w1: {job}"
            );
            assert_eq!(json_str(&job, "worker_id"), "w2", "{job}");
        }
    }

    let entries = ledger.entries();
    let runs: BTreeSet<(&str, u32)> = entries
        .iter()
        .map(|e| (e.job_id.as_str(), e.attempt))
        .collect();
    assert_eq!(
        runs.len(),
        entries.len(),
        "some (job, attempt) ran twice: {entries:?}"
    );
    for id in &ids {
        let job = cluster.get_job(id);
        let last = json_u64(&job, "attempts") as u32;
        assert!(
            runs.contains(&(id.as_str(), last)),
            "job {id}'s attempt {last} left no ledger line"
        );
    }
    for id in &victims {
        assert!(
            runs.contains(&(id.as_str(), 1)),
            "victim {id}'s first attempt left no ledger line"
        );
    }

    poll_until(DEADLINE, "w1 to stop being ready", || {
        let workers = cluster.workers();
        let w1_ready = workers
            .iter()
            .any(|w| w["id"] == "w1" && w["state"] == "ready");
        if w1_ready {
            Err(format!("{workers:?}"))
        } else {
            Ok(())
        }
    });
}
