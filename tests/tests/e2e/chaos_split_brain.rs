//! Chaos: two coordinators that could both believe they lead. A leader frozen
//! (SIGSTOP) past its lease wakes up after another took over: its writes fail
//! the fence and it steps down without dispatching anything. And a rolling
//! restart of every coordinator under a steady submission load loses and
//! duplicates nothing.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use augur_e2e::{
    coordinator_index, coordinator_name, ledger_script, poll_until, unix_now, Audit, Cluster,
    Ledger, Submitter,
};

use augur_e2e::chaos::chaos_cluster;
/// How long the old leader stays frozen: well past its lease TTL, and long
/// enough for the new leader to reconcile (TTL + 2 s at most) and dispatch.
const FROZEN: Duration = Duration::from_secs(8);
const JOB_SECONDS: f64 = 0.5;
/// Jobs per batch (a batch fills the workers' 12 slots).
const BATCH: usize = 12;
/// Jobs submitted during the rolling restart, one every `SUBMIT_EVERY`.
const ROLLING_JOBS: usize = 150;
const SUBMIT_EVERY: Duration = Duration::from_millis(100);
/// How long a CLI call may take while a coordinator is frozen: a liveness
/// bound (the call must not hang), not a speed assertion.
const CLI_BOUND: Duration = Duration::from_secs(15);
/// From etcd naming a new leader to its first dispatch: its reconciliation
/// grace (TTL + 2 s) plus ample slack. Beyond this, it is not dispatching.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);
/// A bound on "stuck", not on speed.
const DEADLINE: Duration = Duration::from_secs(180);

/// Submits a batch of ledger jobs through coordinator `via`; returns their ids.
fn batch(cluster: &Cluster, via: usize, script: &str, name: &str) -> Vec<String> {
    (0..BATCH)
        .map(|_| cluster.submit_via(via, &["--name", name, "--", "sh", "-c", script]))
        .collect()
}

fn wait_started(ledger: &Ledger, ids: &[String], deadline: Duration, what: &str) {
    poll_until(deadline, what, || {
        let runs = ledger.by_job();
        let waiting = ids.iter().filter(|id| !runs.contains_key(*id)).count();
        if waiting == 0 {
            Ok(())
        } else {
            Err(format!("{waiting} of {} not started", ids.len()))
        }
    });
}

/// How many of `ids` have started within `bound` (waits no longer once all have).
fn started_within(ledger: &Ledger, ids: &[String], bound: Duration) -> usize {
    let deadline = Instant::now() + bound;
    loop {
        let runs = ledger.by_job();
        let started = ids.iter().filter(|id| runs.contains_key(*id)).count();
        if started == ids.len() || Instant::now() >= deadline {
            return started;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The frozen leader's wake-up is checked in full, whatever goes wrong on the
/// way: liveness problems are collected as findings and reported together at
/// the end, so one run shows every broken promise. Fencing (no attempt twice)
/// and the final states are asserted outright.
#[test]
fn chaos_frozen_leader_is_fenced_when_it_wakes() {
    let mut cluster = chaos_cluster();
    let ledger = Ledger::new(cluster.path("ledger"));
    let script = ledger_script(&ledger, JOB_SECONDS);
    let old = cluster.wait_leader(DEADLINE, "elected", |_| true);
    let old_index = coordinator_index(&old);
    let via = (old_index + 1) % 3;
    let mut findings: Vec<String> = Vec::new();

    let mut ids = batch(&cluster, via, &script, "before-freeze");
    wait_started(
        &ledger,
        &ids[BATCH - 1..],
        DEADLINE,
        "the last job before the freeze to start",
    );
    let frozen_at = unix_now();
    cluster.stop_node(&old);

    // While etcd still names the frozen leader, a follower must still answer
    // (what it forwards to the leader needs a deadline). A liveness bound.
    if let Err(hung) = cluster.cli_within(via, &["--output", "json", "cluster"], CLI_BOUND) {
        findings.push(format!(
            "`augur cluster` through follower {} hung while leader {old} was frozen: {hung}",
            coordinator_name(via)
        ));
    }
    let new = poll_until(
        DEADLINE,
        "etcd to name a leader other than the frozen one",
        || match cluster.election_leader() {
            Some(leader) if leader != old => Ok(leader),
            other => Err(format!("election leader {other:?}")),
        },
    );
    let elected_after = unix_now() - frozen_at;
    // The new leader dispatches while the old one is still frozen.
    let during = batch(&cluster, via, &script, "during-freeze");
    let started = started_within(&ledger, &during, TAKEOVER_BOUND);
    if started < during.len() {
        findings.push(format!(
            "{new} (leader per etcd {elected_after:.1}s after the freeze) started only {started} \
             of {} jobs within {TAKEOVER_BOUND:?} while {old} was frozen",
            during.len()
        ));
    }
    ids.extend(during);
    // Frozen for well past its lease, whatever the above took.
    let frozen_for = Duration::from_secs_f64(unix_now() - frozen_at);
    thread::sleep(FROZEN.saturating_sub(frozen_for));

    let woke_at = unix_now();
    cluster.cont_node(&old);
    // It must notice, on its own, that it no longer leads.
    poll_until(
        DEADLINE,
        format!("{old} to log that its leadership ended"),
        || {
            let ended = cluster
                .log_times(&old, "leadership ended")
                .into_iter()
                .any(|t| t >= frozen_at);
            if ended {
                Ok(())
            } else {
                Err("no `leadership ended` line since the freeze".to_string())
            }
        },
    );
    let stepped_down: Vec<String> = cluster
        .log_lines(&old)
        .into_iter()
        .filter(|line| line.contains("stepping down") || line.contains("fencing guard failed"))
        .collect();
    eprintln!(
        "{old} woke after {:.1}s frozen ({new} led after {elected_after:.1}s) and stepped \
         down: {stepped_down:?}",
        woke_at - frozen_at
    );
    poll_until(
        DEADLINE,
        format!("{old} to see {new} as the leader"),
        || match cluster.leader_via(old_index) {
            Some(leader) if leader == new => Ok(()),
            other => Err(format!("{old} says the leader is {other:?}")),
        },
    );
    // The woken coordinator serves as a follower: submissions through it run.
    let after = batch(&cluster, old_index, &script, "after-wake");
    wait_started(
        &ledger,
        &after,
        DEADLINE,
        "jobs submitted through the woken coordinator",
    );
    ids.extend(after);

    let ids: BTreeSet<String> = ids.into_iter().collect();
    let audit = Audit::collect(&cluster, &ids, &ledger, DEADLINE);
    eprintln!("audit: {}", audit.summary());
    audit.assert_all_succeeded();
    // Fencing: whatever the old leader tried when it woke, no attempt ran twice.
    audit.assert_no_attempt_twice();
    let reran = audit.reruns(|_| false);
    if !reran.is_empty() {
        findings.push(format!(
            "{} jobs ran again although no worker died:\n{}",
            reran.len(),
            reran.join("\n")
        ));
    }
    if cluster.leader().as_deref() != Some(new.as_str()) {
        findings.push(format!("leadership moved again after {old} woke"));
    }
    assert!(
        findings.is_empty(),
        "a frozen leader broke {} promises:\n- {}",
        findings.len(),
        findings.join("\n- ")
    );
}

#[test]
fn chaos_rolling_restart_of_every_coordinator_under_load() {
    let mut cluster = chaos_cluster();
    let ledger = Ledger::new(cluster.path("ledger"));
    let script = ledger_script(&ledger, JOB_SECONDS);
    let submitter = Submitter::new(&cluster);
    let done = AtomicBool::new(false);

    let ids = thread::scope(|scope| {
        // Submits steadily, each job under an idempotency key so that retrying
        // it on another coordinator (its own went down) never makes a second job.
        let load = scope.spawn(|| {
            let mut ids = Vec::new();
            for i in 0..ROLLING_JOBS {
                if done.load(Ordering::SeqCst) && i >= ROLLING_JOBS / 2 {
                    break;
                }
                let key = format!("rolling-{i}");
                let args = ["--name", "rolling", "--", "sh", "-c", &script];
                ids.push(submitter.submit_anywhere(i % 3, &key, &args, DEADLINE));
                thread::sleep(SUBMIT_EVERY);
            }
            ids
        });
        for index in 0..3 {
            let name = coordinator_name(index);
            let was_leader = cluster.leader().as_deref() == Some(name.as_str());
            let status = cluster.terminate_node(&name, Duration::from_secs(30));
            assert!(status.success(), "{name} exited {status} on SIGTERM");
            cluster.restart_coordinator(&name);
            cluster.wait_ready(DEADLINE);
            eprintln!("rolling restart: {name} (leader: {was_leader}) restarted");
        }
        done.store(true, Ordering::SeqCst);
        load.join().expect("the load thread panicked")
    });

    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "two keys yielded one job: {ids:?}");
    let audit = Audit::collect(&cluster, &unique, &ledger, DEADLINE);
    eprintln!("audit: {}", audit.summary());
    audit.assert_all_succeeded();
    audit.assert_no_attempt_twice();
    audit.assert_ran_once_unless(|_| false);
}
