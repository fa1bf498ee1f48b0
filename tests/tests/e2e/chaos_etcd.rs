//! Chaos: etcd goes away for 10 s mid-workload, killed (and restarted on its
//! data dir and ports) or frozen (SIGSTOP, then SIGCONT). Meanwhile the API
//! refuses submissions with `Unavailable`, promptly; workers keep running their
//! jobs and buffer the results. When etcd is back everything resumes without
//! an operator: every accepted job succeeds, none runs twice.

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use augur_e2e::{
    ledger_script, poll_until, Audit, Cluster, ClusterConfig, Figure, Ledger, Submitter,
};

const LEASE_TTL: &str = "2s";
const OUTAGE: Duration = Duration::from_secs(10);
/// Jobs accepted before the outage; with 2 workers x 4 slots, some run through it.
const BEFORE: usize = 16;
const AFTER: usize = 8;
const JOB_SECONDS: f64 = 1.0;
/// How long a refused submission may take: the API must not hang while etcd is
/// away. A liveness bound, not a speed assertion.
const REFUSAL_BOUND: Duration = Duration::from_secs(15);
/// Submissions that started this long after etcd went away must be refused;
/// earlier ones may have reached etcd before it did.
const SETTLED: Duration = Duration::from_secs(1);
/// A bound on "stuck", not on speed.
const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outage {
    /// SIGKILL, then a restart on the same data dir and ports.
    Killed,
    /// SIGSTOP, then SIGCONT: connections hang instead of being refused.
    Frozen,
}

/// `augur submit` arguments of a workload job, without its idempotency key.
fn job_args(script: &str) -> [&str; 6] {
    ["--name", "etcd-outage", "--", "sh", "-c", script]
}

/// [`job_args`] under idempotency key `key`.
fn keyed_args<'a>(key: &'a str, script: &'a str) -> Vec<&'a str> {
    let mut args = vec!["--idempotency-key", key];
    args.extend(job_args(script));
    args
}

fn etcd_outage(outage: Outage) {
    let mut cluster = Cluster::start(ClusterConfig {
        coordinators: 2,
        workers: 2,
        worker_slots: 4,
        lease_ttl: LEASE_TTL,
        ..ClusterConfig::default()
    });
    let ledger = Ledger::new(cluster.path("ledger"));
    let script = ledger_script(&ledger, JOB_SECONDS);
    let submitter = Submitter::new(&cluster);
    let mut accepted: Vec<String> = (0..BEFORE)
        .map(|i| {
            let key = format!("before-{i}");
            let call = submitter.submit_at(i % 2, &keyed_args(&key, &script));
            call.result
                .unwrap_or_else(|e| panic!("submission {key} before the outage: {e}"))
        })
        .collect();
    poll_until(DEADLINE, "jobs to be running", || {
        let started = ledger.entries().len();
        (started >= 4)
            .then_some(())
            .ok_or(format!("{started} started"))
    });

    let down_at = Instant::now();
    match outage {
        Outage::Killed => cluster.kill_etcd(),
        Outage::Frozen => cluster.stop_node("etcd"),
    }
    // All through one coordinator, so that one circuit breaker sees them all.
    // It opens once half of at least 5 calls in 10 s failed: refused
    // connections (killed etcd) fail at once and open it after 5 calls; calls
    // that time out (frozen etcd) each wait for the request timeout, and one
    // after another do not reach 5 within the outage.
    let mut calls = Vec::new();
    while down_at.elapsed() < OUTAGE {
        let key = format!("during-{}", calls.len());
        let call = submitter.submit_at(0, &keyed_args(&key, &script));
        calls.push((key, call));
        thread::sleep(Duration::from_millis(200));
    }
    match outage {
        Outage::Killed => cluster.restart_etcd(),
        Outage::Frozen => cluster.cont_node("etcd"),
    }
    let back_at = Instant::now();
    let back_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());

    let mut refusals = Figure::new(&format!("{outage:?} etcd: time to refuse a submission"));
    let mut refused = Vec::new();
    for (key, call) in &calls {
        assert!(
            call.code.is_some() && call.elapsed <= REFUSAL_BOUND,
            "submission {key} during the outage took {:?} (bound {REFUSAL_BOUND:?}): {:?}",
            call.elapsed,
            call.result
        );
        let settled = call.started.duration_since(down_at) >= SETTLED;
        let ended_before_back = call.started + call.elapsed <= back_at;
        match &call.result {
            Ok(id) if settled && ended_before_back => {
                panic!("submission {key} was accepted (job {id}) while etcd was away")
            }
            Ok(id) => accepted.push(id.clone()),
            Err(error) => {
                if settled && ended_before_back {
                    assert!(
                        call.code == Some(1) && error.contains("error: Unavailable:"),
                        "submission {key} during the outage failed without a clear \
                         `Unavailable`: {error}"
                    );
                    refusals.add(call.elapsed.as_secs_f64());
                }
                refused.push(key.clone());
            }
        }
    }
    refusals.print();
    assert!(
        refusals.median().is_some(),
        "no submission was made while etcd was away: {calls:?}"
    );

    // Back to work without an operator: submissions go through again (a client
    // retries a refused one under its idempotency key), queued jobs run.
    let mut first_accept = None;
    for key in &refused {
        accepted.push(submitter.submit_anywhere(0, key, &job_args(&script), DEADLINE));
        first_accept.get_or_insert_with(|| back_at.elapsed());
    }
    for i in 0..AFTER {
        let key = format!("after-{i}");
        accepted.push(submitter.submit_anywhere(i % 2, &key, &job_args(&script), DEADLINE));
        first_accept.get_or_insert_with(|| back_at.elapsed());
    }
    eprintln!(
        "figure: {outage:?} etcd back: first submission accepted after {:.2}s; {} refused during \
         the outage, {} accepted in all",
        first_accept.unwrap_or_default().as_secs_f64(),
        refused.len(),
        accepted.len()
    );

    let ids: BTreeSet<String> = accepted.iter().cloned().collect();
    let audit = Audit::collect(&cluster, &ids, &ledger, DEADLINE);
    eprintln!("audit: {}", audit.summary());
    // How soon dispatching resumed: the first attempt that started after
    // etcd came back (the leader keeps or regains leadership at once).
    let resumed = ledger
        .entries()
        .iter()
        .map(|e| e.at - back_unix)
        .filter(|d| *d >= 0.0)
        .fold(f64::INFINITY, f64::min);
    eprintln!("figure: {outage:?} etcd back: first attempt started after {resumed:.2}s");
    audit.assert_all_succeeded();
    audit.assert_no_attempt_twice();
    audit.assert_ran_once_unless(|_| false);
}

#[test]
fn chaos_etcd_killed_for_ten_seconds_then_restarted() {
    etcd_outage(Outage::Killed);
}

#[test]
fn chaos_etcd_frozen_for_ten_seconds_then_resumed() {
    etcd_outage(Outage::Frozen);
}
