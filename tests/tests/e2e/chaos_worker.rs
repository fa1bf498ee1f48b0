//! Chaos: a worker cut off from etcd and the leader (SIGSTOP) for longer than
//! its lease. Its jobs' processes keep running in their own process groups, as
//! they would on the far side of a network partition. The leader requeues its
//! attempts as lost and they finish elsewhere; when the worker comes back, the
//! results of its stale attempts are acknowledged but not applied. And a worker
//! SIGKILLed a few times, to time worker-loss detection (kill to requeue).

use std::collections::BTreeSet;
use std::time::Duration;

use augur_e2e::chaos::parse_rfc3339;
use augur_e2e::{
    json_str, json_u64, poll_until, shell_quote, unix_now, Audit, Cluster, ClusterConfig, Figure,
    Ledger,
};

const LEASE_TTL: &str = "2s";
const WORKERS: usize = 3;
const SLOTS: u32 = 2;
/// Long enough that attempt 1 is still running when the worker is stopped, and
/// that attempt 2 is still running when it comes back with attempt 1's result.
const JOB_SECONDS: f64 = 4.0;
/// A bound on "stuck", not on speed.
const DEADLINE: Duration = Duration::from_secs(120);

/// A job that writes its ledger line, prints its attempt, runs, and leaves a
/// `done-<job>-<attempt>` file in `dir` when it ends.
fn script(ledger: &Ledger, dir: &str) -> String {
    format!(
        "{}; echo attempt=$AUGUR_ATTEMPT; sleep {JOB_SECONDS}; touch {}/done-$AUGUR_JOB_ID-$AUGUR_ATTEMPT",
        ledger.append_command(),
        shell_quote(dir)
    )
}

#[test]
fn chaos_partitioned_worker_is_fenced_out_and_its_jobs_finish_elsewhere() {
    let mut cluster = Cluster::start(ClusterConfig {
        coordinators: 1,
        workers: WORKERS,
        worker_slots: SLOTS,
        lease_ttl: LEASE_TTL,
        ..ClusterConfig::default()
    });
    let ledger = Ledger::new(cluster.path("ledger"));
    let dir = cluster.dir().to_string_lossy().into_owned();
    let script = script(&ledger, &dir);
    // Exactly as many jobs as slots: none waits, so none is placed on the
    // worker between the moment we look and the moment it is stopped.
    let ids: Vec<String> = (0..WORKERS * SLOTS as usize)
        .map(|_| cluster.submit(&["--name", "partitioned", "--", "sh", "-c", &script]))
        .collect();
    poll_until(DEADLINE, "every job to start", || {
        let started = ledger.by_job().len();
        (started == ids.len())
            .then_some(())
            .ok_or(format!("{started} started"))
    });
    let victims: BTreeSet<String> = cluster
        .list_jobs(None)
        .iter()
        .filter(|job| job["worker_id"] == "w1" && job["state"] == "running")
        .map(|job| json_str(job, "id").to_string())
        .collect();
    assert!(!victims.is_empty(), "nothing runs on w1");
    let runs = ledger.by_job();
    for id in &victims {
        let age = unix_now() - runs[id][0].at;
        assert!(
            age < JOB_SECONDS / 2.0,
            "{id} started {age:.1}s ago: it may end before w1 is stopped"
        );
    }

    let stopped_at = unix_now();
    cluster.stop_node("w1");
    let mut requeued = Figure::new("worker SIGSTOP to its jobs requeued (worker lease TTL 3s)");
    for id in &victims {
        cluster.wait_job(id, DEADLINE, "requeued", |job| {
            job["state"] == "pending" || json_u64(job, "attempts") >= 2
        });
        requeued.add(unix_now() - stopped_at);
    }
    requeued.print();
    // The leader's own account of when it gave up on w1 (the message has had
    // two wordings; either will do for a printed figure).
    let gave_up = [
        "worker gone; requeuing its jobs",
        "worker lease expired; requeuing its jobs",
    ]
    .iter()
    .flat_map(|message| cluster.log_times("c1", message))
    .filter(|t| *t >= stopped_at)
    .min_by(f64::total_cmp);
    eprintln!(
        "figure: worker SIGSTOP to the leader requeuing its jobs (its log): {}",
        gave_up.map_or("n/a".to_string(), |t| format!("{:.2}s", t - stopped_at))
    );
    // w1 stays stopped until attempt 1 of each victim has ended (so w1 holds
    // their results when it comes back) and attempt 2 has started elsewhere
    // (so it comes back while attempt 2 runs, which its stale result must not end).
    poll_until(
        DEADLINE,
        "stale attempts to end and attempts 2 to start elsewhere",
        || {
            let runs = ledger.by_job();
            let left: Vec<&String> = victims
                .iter()
                .filter(|id| {
                    let ended = std::path::Path::new(&format!("{dir}/done-{id}-1")).exists();
                    let rerun = runs[*id].iter().any(|e| e.attempt == 2);
                    !(ended && rerun)
                })
                .collect();
            left.is_empty()
                .then_some(())
                .ok_or(format!("not yet: {left:?}"))
        },
    );
    let woke_at = unix_now();
    cluster.cont_node("w1");
    eprintln!(
        "w1 stopped for {:.1}s; {} of its jobs requeued",
        woke_at - stopped_at,
        victims.len()
    );

    // w1 comes back by itself: registered again and ready for work.
    poll_until(DEADLINE, "w1 to be ready again", || {
        let workers = cluster.json_any(&["workers"])?;
        let ready = workers
            .as_array()
            .is_some_and(|all| all.iter().any(|w| w["id"] == "w1" && w["state"] == "ready"));
        ready.then_some(()).ok_or(workers.to_string())
    });
    // Its stale results were acknowledged (not lost, not kept forever).
    poll_until(DEADLINE, "w1's result buffer to drain", || {
        let depth = cluster.worker_metric("w1", "augur_worker_result_buffer_depth")?;
        (depth == 0.0)
            .then_some(())
            .ok_or(format!("{depth} results buffered"))
    });

    let ids: BTreeSet<String> = ids.into_iter().collect();
    let audit = Audit::collect(&cluster, &ids, &ledger, DEADLINE);
    eprintln!("audit: {}", audit.summary());
    audit.assert_all_succeeded();
    audit.assert_no_attempt_twice();
    audit.assert_ran_once_unless(|id| victims.contains(id));
    for id in &victims {
        let job = &audit.jobs[id];
        assert_eq!(json_u64(job, "attempts"), 2, "{job}");
        assert_ne!(job["worker_id"], "w1", "{job}");
        let tail = json_str(job, "stdout_tail");
        assert!(
            tail.contains("attempt=2") && !tail.contains("attempt=1"),
            "the record shows another attempt's output than attempt 2's: {job}"
        );
        // The stale result (which came back while attempt 2 ran) did not end it.
        let second = audit.runs[id]
            .iter()
            .find(|e| e.attempt == 2)
            .map(|e| e.at)
            .unwrap_or(f64::INFINITY);
        let finished = parse_rfc3339(json_str(job, "finished_at")).unwrap_or(0.0);
        assert!(
            finished >= second + JOB_SECONDS - 0.5,
            "finished {:.1}s after attempt 2 started, before attempt 2 could end: {job}",
            finished - second
        );
    }
}

/// Rounds of the worker-loss figure.
const LOSS_ROUNDS: usize = 3;

/// A worker SIGKILLed with a job running, a few times: its job is requeued once
/// its lease expires and finishes on the other worker. Prints the time from
/// the kill to the requeue (the "worker-loss detection" figure).
#[test]
fn chaos_killed_worker_requeue_time_over_rounds() {
    let mut cluster = Cluster::start(ClusterConfig {
        coordinators: 1,
        workers: 2,
        worker_slots: 1,
        lease_ttl: LEASE_TTL,
        ..ClusterConfig::default()
    });
    let ledger = Ledger::new(cluster.path("ledger"));
    let script = format!("{}; sleep 3", ledger.append_command());
    let mut requeued = Figure::new("worker SIGKILL to its job requeued (worker lease TTL 3s)");
    let mut ids = BTreeSet::new();
    let mut victims = BTreeSet::new();
    for _ in 0..LOSS_ROUNDS {
        cluster.wait_ready(DEADLINE);
        let id = cluster.submit(&["--name", "worker-loss", "--", "sh", "-c", &script]);
        let job = cluster.wait_job(&id, DEADLINE, "running", |job| {
            job["state"] == "running" && ledger.by_job().contains_key(json_str(job, "id"))
        });
        let worker = json_str(&job, "worker_id").to_string();
        let killed_at = unix_now();
        cluster.kill_worker(&worker);
        cluster.wait_job(&id, DEADLINE, "requeued", |job| {
            job["state"] == "pending" || json_u64(job, "attempts") >= 2
        });
        requeued.add(unix_now() - killed_at);
        cluster.start_worker(&worker);
        ids.insert(id.clone());
        victims.insert(id);
    }
    requeued.print();

    let audit = Audit::collect(&cluster, &ids, &ledger, DEADLINE);
    eprintln!("audit: {}", audit.summary());
    audit.assert_all_succeeded();
    audit.assert_no_attempt_twice();
    for id in &victims {
        assert_eq!(
            json_u64(&audit.jobs[id], "attempts"),
            2,
            "{}",
            audit.jobs[id]
        );
    }
}
