//! Many short jobs at once: every accepted job runs exactly once, and the work
//! spreads over the workers.

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::Duration;

use augur_e2e::{is_terminal, json_str, json_u64, poll_every, Cluster, ClusterConfig, Ledger};

const JOBS: usize = 500;
/// Concurrent submitters (each runs the CLI once per job).
const SUBMITTERS: usize = 4;
/// Deadline for all jobs to finish; a bound on "stuck", not on speed.
const ALL_DONE_DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn five_hundred_short_jobs_each_run_exactly_once() {
    let cluster = Cluster::start(ClusterConfig::default());
    let ledger = Ledger::new(cluster.path("ledger"));
    let script = ledger.append_command();

    let ids: Vec<String> = thread::scope(|scope| {
        let submitters: Vec<_> = (0..SUBMITTERS)
            .map(|submitter| {
                let (cluster, script) = (&cluster, &script);
                scope.spawn(move || {
                    (0..JOBS)
                        .filter(|i| i % SUBMITTERS == submitter)
                        .map(|_| {
                            cluster.submit(&["--name", "ledger-line", "--", "sh", "-c", script])
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        submitters
            .into_iter()
            .flat_map(|s| s.join().expect("a submitter thread panicked"))
            .collect()
    });
    let submitted: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(submitted.len(), JOBS, "job ids are not unique");

    // Listing 500 jobs costs CPU the cluster needs: look once a second.
    let jobs = poll_every(
        Duration::from_secs(1),
        ALL_DONE_DEADLINE,
        format!("all {JOBS} jobs to end"),
        || {
            let jobs: Vec<_> = cluster
                .list_jobs(None)
                .into_iter()
                .filter(|job| submitted.contains(json_str(job, "id")))
                .collect();
            let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
            for job in &jobs {
                *by_state
                    .entry(json_str(job, "state").to_string())
                    .or_default() += 1;
            }
            if jobs.len() == JOBS && jobs.iter().all(is_terminal) {
                Ok(jobs)
            } else {
                Err(format!(
                    "{} of our jobs listed, by state {by_state:?}",
                    jobs.len()
                ))
            }
        },
    );

    let not_succeeded: Vec<_> = jobs.iter().filter(|j| j["state"] != "succeeded").collect();
    assert!(
        not_succeeded.is_empty(),
        "jobs that did not succeed: {not_succeeded:?}"
    );
    for job in &jobs {
        assert_eq!(json_u64(job, "attempts"), 1, "{job}");
    }
    let workers: BTreeSet<&str> = jobs.iter().map(|j| json_str(j, "worker_id")).collect();
    assert!(workers.len() > 1, "all jobs ran on {workers:?}");

    let entries = ledger.entries();
    assert_eq!(entries.len(), JOBS, "ledger has {} lines", entries.len());
    let runs: BTreeSet<(&str, u32)> = entries
        .iter()
        .map(|e| (e.job_id.as_str(), e.attempt))
        .collect();
    assert_eq!(runs.len(), JOBS, "some (job, attempt) ran twice");
    let ran: BTreeSet<String> = entries.iter().map(|e| e.job_id.clone()).collect();
    assert_eq!(
        ran, submitted,
        "the ledger's jobs differ from the submitted ones"
    );
}
