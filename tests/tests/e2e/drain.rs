//! Draining: `augur drain` stops new placements on a worker while its running
//! jobs finish; SIGTERM drains a worker with a deadline and hands back what is
//! left, which runs again elsewhere.

use std::time::Duration;

use augur_e2e::{json_str, pid_alive, poll_until, Cluster, ClusterConfig};

const DEADLINE: Duration = Duration::from_secs(60);

fn worker_state(cluster: &Cluster, id: &str) -> String {
    cluster
        .workers()
        .into_iter()
        .find(|w| w["id"] == id)
        .map(|w| json_str(&w, "state").to_string())
        .unwrap_or_else(|| "absent".to_string())
}

#[test]
fn drained_worker_finishes_its_jobs_and_gets_no_new_ones() {
    let cluster = Cluster::start(ClusterConfig {
        workers: 2,
        worker_slots: 2,
        ..ClusterConfig::default()
    });
    // Something running on w1 before the drain.
    let running = cluster.submit(&["--constraint", "node=w1", "--", "sleep", "2"]);
    poll_until(DEADLINE, "the first job to run on w1", || {
        match json_str(&cluster.get_job(&running), "state") {
            "running" => Ok(()),
            other => Err(other.to_string()),
        }
    });
    let out = cluster.cli_ok(&["drain", "w1"]);
    assert!(out.contains("draining"), "{out}");
    poll_until(DEADLINE, "w1 to show as draining", || {
        match worker_state(&cluster, "w1").as_str() {
            "draining" => Ok(()),
            other => Err(other.to_string()),
        }
    });
    let later: Vec<String> = (0..8).map(|_| cluster.submit(&["--", "true"])).collect();
    for id in &later {
        let job = cluster.wait_terminal(id, DEADLINE);
        assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
        assert_eq!(
            json_str(&job, "worker_id"),
            "w2",
            "placed on a draining worker: {job}"
        );
    }
    let first = cluster.wait_terminal(&running, DEADLINE);
    assert_eq!(json_str(&first, "state"), "succeeded", "{first}");
    assert_eq!(json_str(&first, "worker_id"), "w1");
    assert_eq!(
        first["attempts"], 1,
        "the drain must not restart running work: {first}"
    );

    cluster.cli_ok(&["drain", "--cancel", "w1"]);
    poll_until(DEADLINE, "w1 to be ready again", || {
        match worker_state(&cluster, "w1").as_str() {
            "ready" => Ok(()),
            other => Err(other.to_string()),
        }
    });
    // Unknown and malformed workers are refused precisely.
    let out = cluster.cli(&["drain", "nosuchworker"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{out:?}"
    );
    let out = cluster.cli(&["drain", "bad/id"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidArgument"),
        "{out:?}"
    );
}

#[test]
fn sigterm_drains_then_hands_back_what_is_left() {
    let cluster = Cluster::start(ClusterConfig {
        workers: 2,
        worker_slots: 2,
        extra_worker_args: vec!["--drain-timeout".into(), "3s".into()],
        ..ClusterConfig::default()
    });
    // A job that cannot finish within the drain, and a short one beside it.
    let long = cluster.submit(&[
        "--",
        "sh",
        "-c",
        "[ \"$AUGUR_ATTEMPT\" -ge 2 ] || sleep 300",
    ]);
    let running = |id: &str| {
        poll_until(DEADLINE, format!("job {id} running"), || {
            match json_str(&cluster.get_job(id), "state") {
                "running" => Ok(()),
                other => Err(other.to_string()),
            }
        })
    };
    running(&long);
    let victim = json_str(&cluster.get_job(&long), "worker_id").to_string();
    let short = cluster.submit(&[
        "--constraint",
        &format!("node={victim}"),
        "--",
        "sleep",
        "1",
    ]);
    running(&short);
    let pid = cluster.worker_pid(&victim);
    // SAFETY: kill(2) with a pid of our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };

    let short_job = cluster.wait_terminal(&short, DEADLINE);
    assert_eq!(json_str(&short_job, "state"), "succeeded", "{short_job}");
    assert_eq!(short_job["attempts"], 1, "{short_job}");
    let long_job = cluster.wait_terminal(&long, DEADLINE);
    assert_eq!(json_str(&long_job, "state"), "succeeded", "{long_job}");
    assert_eq!(
        long_job["attempts"], 2,
        "handed back and run again: {long_job}"
    );
    assert_ne!(json_str(&long_job, "worker_id"), victim, "{long_job}");
    poll_until(DEADLINE, "the drained worker to exit", || {
        if pid_alive(pid) {
            Err("still running".to_string())
        } else {
            Ok(())
        }
    });
}
