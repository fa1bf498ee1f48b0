//! Defects found in the leader by review and by black-box fault injection,
//! each checked against a real cluster: two workers started with the same
//! `--node-id`, a job no worker can ever run, and an attempt lost on a
//! saturated cluster.

use std::process::Command;
use std::time::Duration;

use augur_e2e::{
    free_ports, json_str, kill_group, ledger_script, poll_until, spawn_logged, unix_now, Cluster,
    ClusterConfig, Ledger,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// A copied config started a second `augur worker --node-id w1` beside the
/// first: every job used to fail after three lost attempts, with no error
/// naming the clash. Now one of the two gets the work, the other is refused
/// with a message that says what is wrong, and every job succeeds.
#[test]
fn a_second_worker_with_the_same_node_id_is_refused_and_jobs_still_succeed() {
    let cluster = Cluster::start(ClusterConfig {
        workers: 1,
        ..ClusterConfig::default()
    });
    let data_dir = cluster.path("w1-twin");
    std::fs::create_dir_all(&data_dir).expect("twin data dir");
    let metrics = format!("127.0.0.1:{}", free_ports(1)[0]);
    let twin_log = cluster.path("worker-w1-twin.log");
    let mut twin = spawn_logged(
        Command::new(cluster.augur_bin())
            .arg("worker")
            .args(["--coordinators", &cluster.coordinator_urls()])
            .args(["--node-id", "w1", "--slots", "2", "--data-dir"])
            .arg(&data_dir)
            .args(["--metrics-listen", &metrics]),
        &twin_log,
    );
    let ids: Vec<String> = (0..6)
        .map(|i| cluster.submit(&["--", "sh", "-c", &format!("echo {i}")]))
        .collect();
    for id in &ids {
        let job = cluster.wait_terminal(id, DEADLINE);
        assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
        // Ran at its first attempt: nothing was lost to the clash.
        assert_eq!(job["attempts"].as_u64(), Some(1), "{job}");
    }
    // One of the two processes says why it gets no stream.
    poll_until(DEADLINE, "a refusal naming the clash", || {
        let logs = [
            std::fs::read_to_string(&twin_log).unwrap_or_default(),
            std::fs::read_to_string(cluster.path("worker-w1.log")).unwrap_or_default(),
        ];
        if logs
            .iter()
            .any(|l| l.contains("is a second worker running with --node-id w1"))
        {
            Ok(())
        } else {
            Err("no refusal in either worker's log yet".into())
        }
    });
    kill_group(twin.id());
    let _ = twin.wait();
}

/// `--slots 1000` was accepted and stayed pending forever with an empty
/// message. It is still accepted (workers may join), but says why it waits,
/// and the leader counts it.
#[test]
fn a_job_no_worker_can_run_says_why_it_waits() {
    let cluster = Cluster::start(ClusterConfig::default());
    let id = cluster.submit(&["--slots", "1000", "--", "true"]);
    let job = poll_until(DEADLINE, "the job to be flagged", || {
        let job = cluster.get_job(&id);
        let message = json_str(&job, "message");
        if message.starts_with("unschedulable: no worker has 1000 slots") {
            Ok(job)
        } else {
            Err(format!("message {message:?}"))
        }
    });
    assert_eq!(json_str(&job, "state"), "pending", "{job}");
    // The leader (whichever coordinator it is) counts it.
    poll_until(DEADLINE, "the unschedulable gauge", || {
        let pages: Vec<String> = cluster
            .metrics_targets()
            .iter()
            .map(|(_, addr)| metrics_page(addr))
            .collect();
        if pages
            .iter()
            .any(|p| p.lines().any(|l| l == "augur_jobs_unschedulable 1"))
        {
            Ok(())
        } else {
            Err("no coordinator reports augur_jobs_unschedulable 1".to_string())
        }
    });
    let cancel = cluster.cli(&["cancel", &id]);
    assert!(cancel.status.success(), "{cancel:?}");
}

/// The coordinator's metrics page, as text (classic format).
fn metrics_page(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// On a saturated cluster, an attempt lost with its worker used to go to the
/// back of the queue and wait behind every younger job. It keeps its place:
/// once requeued it is the next job to start.
#[test]
fn a_lost_attempt_runs_before_younger_queued_jobs() {
    let mut cluster = Cluster::start(ClusterConfig {
        workers: 2,
        worker_slots: 1,
        ..ClusterConfig::default()
    });
    // Submission order (the predictive policy would re-predict the requeued
    // job from the runs meanwhile and could order it first for that reason).
    cluster.cli_ok(&["placement", "set", "--policy", "least-loaded"]);
    poll_until(DEADLINE, "the leader to apply least-loaded", || {
        let status = cluster.cli_json(&["placement", "show"]);
        (status.to_string().contains("least-loaded"))
            .then_some(())
            .ok_or(status.to_string())
    });
    let ledger = Ledger::new(cluster.path("ledger"));
    let script = ledger_script(&ledger, 1.5);
    let ids: Vec<String> = (0..10)
        .map(|_| cluster.submit(&["--", "sh", "-c", &script]))
        .collect();
    // Both workers busy; kill the one running the older of the two jobs.
    let running = poll_until(DEADLINE, "two jobs running", || {
        let entries = ledger.entries();
        (entries.len() >= 2)
            .then(|| entries.iter().map(|e| e.job_id.clone()).collect::<Vec<_>>())
            .ok_or(format!("{} started", entries.len()))
    });
    let victim = ids
        .iter()
        .find(|id| running.contains(id))
        .expect("a running job")
        .clone();
    let worker = json_str(&cluster.get_job(&victim), "worker_id").to_string();
    let killed_at = unix_now();
    cluster.kill_worker(&worker);
    poll_until(DEADLINE, "the victim's attempt to be requeued", || {
        let job = cluster.get_job(&victim);
        let requeued = json_str(&job, "message").contains("lost")
            || job["attempts"].as_u64().is_some_and(|a| a >= 2);
        requeued
            .then_some(())
            .ok_or(json_str(&job, "message").to_string())
    });
    let requeued_seen = unix_now();
    for id in &ids {
        let job = cluster.wait_terminal(id, DEADLINE);
        assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    }
    let entries = ledger.entries();
    let rerun = entries
        .iter()
        .find(|e| e.job_id == victim && e.attempt == 2)
        .expect("the victim ran again");
    // Nothing younger started between its requeue and its re-run.
    if rerun.at > requeued_seen {
        let first_after = entries
            .iter()
            .filter(|e| e.at > requeued_seen)
            .min_by(|a, b| a.at.total_cmp(&b.at))
            .expect("a start after the requeue");
        assert_eq!(
            first_after.job_id, victim,
            "a younger job started before the requeued attempt"
        );
    }
    eprintln!(
        "figure: worker SIGKILL on a saturated cluster to the lost attempt running again: {:.2}s",
        rerun.at - killed_at
    );
}
