//! `/metrics` of both roles, live: `promtool check metrics` passes, every family
//! the design lists is there, counters move when jobs run, the OpenMetrics form
//! carries trace exemplars on the latency histograms, and no label is a job id.

use std::time::Duration;

use augur_e2e::exposition::{promtool_check_metrics, scrape, Exposition};
use augur_e2e::{json_str, poll_until, Cluster, ClusterConfig};

/// Deadline for a short job to reach a terminal state.
const JOB_DEADLINE: Duration = Duration::from_secs(60);
/// Deadline for metrics to reflect what the cluster did.
const METRICS_DEADLINE: Duration = Duration::from_secs(30);

/// Families each role must export, by the name Prometheus stores them under
/// (counters with `_total`, the info metric with `_info`, histograms bare).
const COORDINATOR_FAMILIES: &[&str] = &[
    "augur_jobs_submitted_total",
    "augur_jobs_finished_total",
    "augur_queue_depth",
    "augur_job_queue_wait_seconds",
    "augur_job_submit_to_start_seconds",
    "augur_job_runtime_seconds",
    "augur_placement_decisions_total",
    "augur_leader",
    "augur_leader_epoch",
    "augur_leader_transitions_total",
    "augur_workers",
    "augur_etcd_request_duration_seconds",
    "augur_trace_spans_dropped_total",
    "augur_build_info",
];
const WORKER_FAMILIES: &[&str] = &[
    "augur_worker_stream_reconnects_total",
    "augur_worker_result_buffer_depth",
    "augur_trace_spans_dropped_total",
    "augur_build_info",
];

/// Latency histograms that carry trace exemplars.
const EXEMPLAR_HISTOGRAMS: &[&str] = &[
    "augur_job_queue_wait_seconds_bucket",
    "augur_job_submit_to_start_seconds_bucket",
    "augur_job_runtime_seconds_bucket",
    "augur_worker_attempt_runtime_seconds_bucket",
];

/// One scrape of the coordinator and of each worker (classic format).
struct Scrapes {
    coordinator: Exposition,
    workers: Vec<Exposition>,
}

impl Scrapes {
    fn take(cluster: &Cluster, workers: &[String]) -> Result<(String, Vec<String>), String> {
        let coordinator = scrape(cluster.metrics_addr(0), false)?;
        let workers = workers
            .iter()
            .map(|w| scrape(cluster.worker_metrics_addr(w), false))
            .collect::<Result<_, _>>()?;
        Ok((coordinator, workers))
    }

    fn parse(texts: &(String, Vec<String>)) -> Result<Scrapes, String> {
        Ok(Scrapes {
            coordinator: Exposition::parse(&texts.0)?,
            workers: texts
                .1
                .iter()
                .map(|t| Exposition::parse(t))
                .collect::<Result<_, _>>()?,
        })
    }

    fn coordinator(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.coordinator.sum(name, labels)
    }

    fn workers(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.workers.iter().map(|w| w.sum(name, labels)).sum()
    }
}

/// A sample of one role (summed over its nodes), by name and label subset, and
/// by how much the workload must move it.
struct Move {
    coordinator: bool,
    name: &'static str,
    labels: &'static [(&'static str, &'static str)],
    by: f64,
}

const fn coordinator(
    name: &'static str,
    labels: &'static [(&'static str, &'static str)],
    by: f64,
) -> Move {
    Move {
        coordinator: true,
        name,
        labels,
        by,
    }
}

const fn worker(name: &'static str, by: f64) -> Move {
    Move {
        coordinator: false,
        name,
        labels: &[],
        by,
    }
}

/// 3 successes, a failure retried twice (3 attempts), a timeout: 5 jobs, 7 attempts.
const MOVES: &[Move] = &[
    coordinator("augur_jobs_submitted_total", &[], 5.0),
    coordinator(
        "augur_jobs_finished_total",
        &[("outcome", "succeeded")],
        3.0,
    ),
    coordinator("augur_jobs_finished_total", &[("outcome", "failed")], 1.0),
    coordinator(
        "augur_jobs_finished_total",
        &[("outcome", "timed_out")],
        1.0,
    ),
    coordinator("augur_job_retries_total", &[], 2.0),
    coordinator("augur_job_queue_wait_seconds_count", &[], 7.0),
    coordinator("augur_job_submit_to_start_seconds_count", &[], 7.0),
    coordinator("augur_job_runtime_seconds_count", &[], 7.0),
    coordinator("augur_placement_decisions_total", &[], 7.0),
    coordinator("augur_api_requests_total", &[("operation", "submit")], 5.0),
    coordinator(
        "augur_etcd_request_duration_seconds_count",
        &[("operation", "create")],
        5.0,
    ),
    worker("augur_worker_attempts_finished_total", 7.0),
    worker("augur_worker_attempt_runtime_seconds_count", 7.0),
];

/// Checks every [`MOVES`] row; returns every mismatch.
fn check_moves(before: &Scrapes, after: &Scrapes) -> Result<(), String> {
    let mut wrong = Vec::new();
    for row in MOVES {
        let value = |s: &Scrapes| {
            if row.coordinator {
                s.coordinator(row.name, row.labels)
            } else {
                s.workers(row.name, row.labels)
            }
        };
        let delta = value(after) - value(before);
        if (delta - row.by).abs() > 1e-9 {
            wrong.push(format!(
                "{}{:?} moved by {delta}, expected {}",
                row.name, row.labels, row.by
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// A 26-character Crockford base32 string: what a job id (ULID) looks like.
fn looks_like_ulid(value: &str) -> bool {
    value.len() == 26
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"ILOU".contains(c)))
}

#[test]
fn live_metrics_pass_promtool_and_move_with_jobs() {
    let cluster = Cluster::start(ClusterConfig {
        workers: 2,
        ..ClusterConfig::default()
    });
    let workers = cluster.live_workers();
    let before = Scrapes::parse(&poll_until(METRICS_DEADLINE, "a first scrape", || {
        Scrapes::take(&cluster, &workers)
    }))
    .expect("parse the first scrape");

    // The workload MOVES expects.
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(cluster.submit(&["--", "sh", "-c", &format!("echo ok {i}")]));
    }
    let failing = cluster.submit(&[
        "--retries",
        "2",
        "--backoff",
        "200ms",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    let timing_out = cluster.submit(&["--timeout", "1s", "--", "sleep", "30"]);
    ids.extend([failing.clone(), timing_out.clone()]);
    for id in &ids {
        cluster.wait_terminal(id, JOB_DEADLINE);
    }
    assert_eq!(json_str(&cluster.get_job(&failing), "state"), "failed");
    assert_eq!(
        json_str(&cluster.get_job(&timing_out), "state"),
        "timed_out"
    );

    let (after_texts, after) = poll_until(METRICS_DEADLINE, "metrics to count the 5 jobs", || {
        let texts = Scrapes::take(&cluster, &workers)?;
        let after = Scrapes::parse(&texts)?;
        check_moves(&before, &after)?;
        // Gauges settle once every result is acknowledged.
        let settled = [
            (
                "augur_queue_depth",
                after.coordinator("augur_queue_depth", &[]),
            ),
            (
                "augur_jobs_running",
                after.coordinator("augur_jobs_running", &[]),
            ),
            (
                "augur_worker_result_buffer_depth",
                after.workers("augur_worker_result_buffer_depth", &[]),
            ),
            (
                "augur_worker_running_attempts",
                after.workers("augur_worker_running_attempts", &[]),
            ),
        ];
        match settled.iter().find(|(_, v)| *v != 0.0) {
            Some((name, v)) => Err(format!("{name} is {v}, not yet 0")),
            None => Ok((texts, after)),
        }
    });
    let etcd_commits = |s: &Scrapes| {
        s.coordinator(
            "augur_etcd_request_duration_seconds_count",
            &[("operation", "commit")],
        )
    };
    assert!(
        etcd_commits(&after) > etcd_commits(&before),
        "no etcd commit was timed"
    );

    // promtool lints the live classic output of both roles.
    let mut outputs = vec![("c1".to_string(), after_texts.0.clone())];
    outputs.extend(workers.iter().cloned().zip(after_texts.1.iter().cloned()));
    for (node, text) in &outputs {
        let out = promtool_check_metrics(text, &cluster.path(&format!("metrics-{node}.txt")));
        assert!(
            out.status.success(),
            "promtool check metrics failed on {node}'s /metrics ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "metrics: promtool check metrics passed on {node} ({} lines)",
            text.lines().count()
        );
    }

    for family in COORDINATOR_FAMILIES {
        assert!(
            after.coordinator.has_family(family),
            "coordinator does not export {family}"
        );
    }
    for (name, worker) in workers.iter().zip(&after.workers) {
        for family in WORKER_FAMILIES {
            assert!(
                worker.has_family(family),
                "worker {name} does not export {family}"
            );
        }
        assert_eq!(
            worker.sum("augur_worker_slots", &[]),
            4.0,
            "worker {name} slots"
        );
        assert_eq!(
            worker.sum("augur_build_info", &[("role", "worker")]),
            1.0,
            "{name}"
        );
    }
    assert_eq!(
        after.coordinator("augur_leader", &[]),
        1.0,
        "c1 should lead"
    );
    assert!(
        after.coordinator("augur_leader_epoch", &[]) > 0.0,
        "leader epoch unset"
    );
    assert!(after.coordinator("augur_leader_transitions_total", &[]) >= 1.0);
    assert_eq!(
        after.coordinator("augur_workers", &[("state", "ready")]),
        2.0
    );
    assert_eq!(
        after.coordinator("augur_build_info", &[("role", "coordinator")]),
        1.0
    );

    // OpenMetrics (what Prometheus asks for) carries trace ids as exemplars.
    let mut texts = Vec::new();
    for (node, addr) in cluster.metrics_targets() {
        let text =
            scrape(&addr, true).unwrap_or_else(|e| panic!("OpenMetrics scrape of {node}: {e}"));
        assert!(
            text.trim_end().ends_with("# EOF"),
            "{node}: OpenMetrics without # EOF"
        );
        let parsed = Exposition::parse(&text).unwrap_or_else(|e| panic!("{node}: {e}"));
        let exemplars: Vec<&str> = parsed
            .samples
            .iter()
            .filter(|s| EXEMPLAR_HISTOGRAMS.contains(&s.name.as_str()))
            .filter_map(|s| {
                s.exemplar
                    .as_ref()?
                    .labels
                    .get("trace_id")
                    .map(String::as_str)
            })
            .collect();
        for trace_id in &exemplars {
            assert!(
                trace_id.len() == 32
                    && trace_id.chars().all(|c| c.is_ascii_hexdigit())
                    && trace_id.chars().any(|c| c != '0'),
                "{node}: exemplar trace_id {trace_id:?} is not a W3C trace id"
            );
        }
        // A worker that ran no attempt has observed nothing yet.
        let observed =
            node.starts_with('c') || parsed.sum("augur_worker_attempts_finished_total", &[]) > 0.0;
        assert!(
            !observed || !exemplars.is_empty(),
            "{node}: no trace exemplar on a latency histogram"
        );
        eprintln!(
            "metrics: {node} OpenMetrics carries {} trace exemplars",
            exemplars.len()
        );
        texts.push((node, text, parsed));
    }

    // Ids go into exemplars and spans, never labels.
    for (node, text, parsed) in &texts {
        for id in &ids {
            assert!(
                !text.contains(id.as_str()),
                "{node}'s /metrics mentions job id {id}"
            );
        }
        for sample in &parsed.samples {
            for (label, value) in &sample.labels {
                assert!(
                    !looks_like_ulid(value),
                    "{node}: {}{{{label}={value:?}}} looks like a job id",
                    sample.name
                );
            }
        }
    }
}
