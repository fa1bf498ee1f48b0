//! Chaos: the leader dies (SIGKILL) or shuts down (SIGTERM) while jobs are in
//! flight. Every job still succeeds, no attempt runs twice, and no job runs
//! again because the leader changed (no worker dies here, so each job writes
//! exactly one ledger line). The failover time is measured and printed.
//!
//! How failover is timed: right after the signal, a marker job with the highest
//! priority is submitted through a follower. Only a new leader can dispatch it,
//! and it jumps the queue, so its ledger line (written the moment it starts)
//! minus the signal time is "signal to a new leader dispatching". The new
//! leader's log gives the election time too. These are printed, never asserted.
//!
//! Every chaos test (here and in `chaos_*.rs`) is named `chaos_*`, so
//! `cargo nextest run -p augur-e2e -E 'test(/chaos_/)'` runs the set: about
//! three minutes on two cores, the longest test under a minute.

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use augur_e2e::{
    coordinator_index, ledger_script, poll_until, unix_now, Audit, Cluster, Figure, Ledger,
};

/// Lease TTL of every process: failover should take about this plus ~0.5 s.
use augur_e2e::chaos::{chaos_cluster, CHAOS_LEASE_TTL as LEASE_TTL};
/// Short jobs of the big workload.
const SHORT_JOBS: usize = 300;
const SHORT_JOB_SECONDS: f64 = 0.2;
/// Rounds of each kind of leader loss in the figures test.
const ROUNDS: usize = 5;
/// Jobs in flight when each round's leader goes.
const IN_FLIGHT: usize = 12;
const IN_FLIGHT_SECONDS: f64 = 0.5;
/// A bound on "stuck", not on speed.
const DEADLINE: Duration = Duration::from_secs(180);

/// What a takeover looked like, in seconds after the old leader's signal.
struct Takeover {
    new_leader: String,
    marker: String,
    /// The marker job's ledger line.
    marker_started: f64,
    /// The new leader's `elected leader` log line, if found.
    elected: Option<f64>,
}

/// Once the leader `old` got its signal at `at` (Unix seconds): submits a marker
/// job with the top priority through coordinator `via`, and waits until it runs
/// and another coordinator leads.
fn takeover(cluster: &Cluster, ledger: &Ledger, via: usize, old: &str, at: f64) -> Takeover {
    let marker = cluster.submit_via(
        via,
        &[
            "--name",
            "failover-marker",
            "--priority",
            "1000",
            "--",
            "sh",
            "-c",
            &ledger.append_command(),
        ],
    );
    let started = poll_until(DEADLINE, format!("marker {marker} to start"), || {
        ledger
            .by_job()
            .get(&marker)
            .and_then(|lines| lines.first().map(|e| e.at))
            .ok_or_else(|| "not yet".to_string())
    });
    let new_leader = poll_until(
        DEADLINE,
        format!("a leader other than {old}"),
        || match cluster.leader_via(via) {
            Some(leader) if leader != old => Ok(leader),
            other => Err(format!("leader {other:?}")),
        },
    );
    let elected = cluster
        .log_times(&new_leader, "elected leader")
        .into_iter()
        .filter(|t| *t >= at)
        .min_by(f64::total_cmp);
    Takeover {
        new_leader,
        marker,
        marker_started: started - at,
        elected: elected.map(|t| t - at),
    }
}

fn seconds(value: Option<f64>) -> String {
    value.map_or("n/a".to_string(), |s| format!("{s:.2}s"))
}

#[test]
fn chaos_leader_sigkilled_mid_workload_loses_and_repeats_nothing() {
    let mut cluster = chaos_cluster();
    let ledger = Ledger::new(cluster.path("ledger"));
    let script = ledger_script(&ledger, SHORT_JOB_SECONDS);
    let leader = cluster.wait_leader(DEADLINE, "elected", |_| true);
    let followers: Vec<usize> = (0..3)
        .filter(|&i| i != coordinator_index(&leader))
        .collect();

    let per_follower = SHORT_JOBS / followers.len();
    let (mut ids, takeover) = thread::scope(|scope| {
        // Submissions go through the followers, so they continue while the
        // leader is dead: followers write new jobs to etcd themselves.
        let submitters: Vec<_> = followers
            .iter()
            .map(|&via| {
                let (cluster, script) = (&cluster, &script);
                scope.spawn(move || {
                    (0..per_follower)
                        .map(|_| {
                            cluster.submit_via(via, &["--name", "short", "--", "sh", "-c", script])
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        poll_until(DEADLINE, "a third of the jobs to have started", || {
            let started = ledger.entries().len();
            if started >= SHORT_JOBS / 3 {
                Ok(())
            } else {
                Err(format!("{started} started"))
            }
        });
        let at = unix_now();
        cluster.signal_node(&leader, libc::SIGKILL);
        let takeover = takeover(&cluster, &ledger, followers[0], &leader, at);
        let ids: Vec<String> = submitters
            .into_iter()
            .flat_map(|s| s.join().expect("a submitter thread panicked"))
            .collect();
        (ids, takeover)
    });
    cluster.reap_node(&leader, Duration::from_secs(10));
    eprintln!(
        "figure: leader {leader} SIGKILLed with {} of {SHORT_JOBS} jobs started; {} took over; \
         elected after {}, marker job started after {:.2}s (lease TTL {LEASE_TTL})",
        SHORT_JOBS / 3,
        takeover.new_leader,
        seconds(takeover.elected),
        takeover.marker_started,
    );

    ids.push(takeover.marker.clone());
    let ids: BTreeSet<String> = ids.into_iter().collect();
    assert_eq!(ids.len(), SHORT_JOBS + 1, "job ids are not unique");
    let audit = Audit::collect(&cluster, &ids, &ledger, DEADLINE);
    eprintln!("audit: {}", audit.summary());
    audit.assert_all_succeeded();
    audit.assert_no_attempt_twice();
    audit.assert_ran_once_unless(|_| false);
}

/// The kind of leader loss a round inflicts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Loss {
    Killed,
    ShutDown,
}

/// One round: fills the workers, takes the leader away, times the takeover,
/// restarts the old leader. Returns the ids of the round's jobs.
fn round(
    cluster: &mut Cluster,
    ledger: &Ledger,
    loss: Loss,
    figures: &mut [Figure; 2],
) -> Vec<String> {
    cluster.wait_ready(DEADLINE);
    let leader = cluster.wait_leader(DEADLINE, "elected", |_| true);
    let via = (coordinator_index(&leader) + 1) % 3;
    let script = ledger_script(ledger, IN_FLIGHT_SECONDS);
    let mut ids: Vec<String> = (0..IN_FLIGHT)
        .map(|_| cluster.submit_via(via, &["--name", "in-flight", "--", "sh", "-c", &script]))
        .collect();
    let last = ids.last().cloned().unwrap_or_default();
    poll_until(DEADLINE, "the round's last job to start", || {
        ledger
            .by_job()
            .contains_key(&last)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });

    let at = unix_now();
    let takeover = match loss {
        Loss::Killed => {
            cluster.kill_node(&leader);
            takeover(cluster, ledger, via, &leader, at)
        }
        Loss::ShutDown => {
            cluster.signal_node(&leader, libc::SIGTERM);
            let takeover = takeover(cluster, ledger, via, &leader, at);
            let status = cluster.reap_node(&leader, Duration::from_secs(30));
            assert!(status.success(), "{leader} exited {status} on SIGTERM");
            takeover
        }
    };
    eprintln!(
        "round: {loss:?} {leader}: {} elected after {}, marker started after {:.2}s",
        takeover.new_leader,
        seconds(takeover.elected),
        takeover.marker_started
    );
    figures[0].add(takeover.marker_started);
    if let Some(elected) = takeover.elected {
        figures[1].add(elected);
    }
    ids.push(takeover.marker);
    cluster.restart_coordinator(&leader);
    ids
}

#[test]
fn chaos_failover_time_over_repeated_kills_and_graceful_shutdowns() {
    let mut cluster = chaos_cluster();
    let ledger = Ledger::new(cluster.path("ledger"));
    let mut ids = BTreeSet::new();
    for loss in [Loss::Killed, Loss::ShutDown] {
        let signal = if loss == Loss::Killed {
            "SIGKILL"
        } else {
            "SIGTERM"
        };
        let mut figures = [
            Figure::new(&format!(
                "failover after {signal} of the leader: signal to a new leader dispatching \
                 (lease TTL {LEASE_TTL})"
            )),
            Figure::new(&format!(
                "failover after {signal} of the leader: signal to a new leader elected"
            )),
        ];
        for _ in 0..ROUNDS {
            ids.extend(round(&mut cluster, &ledger, loss, &mut figures));
        }
        for figure in &figures {
            figure.print();
        }
    }

    let audit = Audit::collect(&cluster, &ids, &ledger, DEADLINE);
    eprintln!("audit: {}", audit.summary());
    audit.assert_all_succeeded();
    audit.assert_no_attempt_twice();
    audit.assert_ran_once_unless(|_| false);
}
