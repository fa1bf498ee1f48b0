//! Traces: one trace per job, from `job.submit` on the coordinator to
//! `job.execute` on the worker and into the job's own `TRACEPARENT`, collected by
//! an OTLP receiver built from the official protocol definitions — and the same
//! trace continued by a new leader after a failover.

use std::collections::HashSet;
use std::time::Duration;

use augur_e2e::otlp::{OtlpReceiver, ReceivedSpan};
use augur_e2e::{json_str, poll_until, Cluster, ClusterConfig};

const DEADLINE: Duration = Duration::from_secs(60);
const PHASES: [&str; 6] = [
    "job.submit",
    "job.queue",
    "job.place",
    "job.dispatch",
    "job.execute",
    "job.report",
];

fn traced_cluster(receiver: &OtlpReceiver, coordinators: usize) -> Cluster {
    let otlp = vec!["--otlp-endpoint".to_string(), receiver.endpoint()];
    Cluster::start(ClusterConfig {
        coordinators,
        workers: 2,
        extra_coordinator_args: otlp.clone(),
        extra_worker_args: otlp,
        ..ClusterConfig::default()
    })
}

/// `(trace id, parent span id)` of the `TRACEPARENT=` line a job printed.
fn printed_traceparent(stdout: &str) -> (String, String) {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TP="))
        .unwrap_or_else(|| panic!("no TP= line in {stdout:?}"));
    let parts: Vec<&str> = line.trim().split('-').collect();
    assert_eq!(parts.len(), 4, "malformed TRACEPARENT {line:?}");
    assert_eq!(parts[0], "00", "{line}");
    (parts[1].to_string(), parts[2].to_string())
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "expected one {name} in {spans:#?}");
    found[0]
}

fn attr<'a>(span: &'a ReceivedSpan, key: &str) -> &'a str {
    span.attributes
        .get(key)
        .map(String::as_str)
        .unwrap_or_else(|| {
            panic!(
                "{} has no attribute {key}: {:?}",
                span.name, span.attributes
            )
        })
}

/// Prints the trace as an indented tree (visible with `--nocapture`).
fn print_tree(spans: &[ReceivedSpan]) {
    fn walk(spans: &[ReceivedSpan], parent: &str, depth: usize) {
        for span in spans.iter().filter(|s| s.parent_span_id == parent) {
            let mut keys: Vec<_> = span
                .attributes
                .iter()
                .filter(|(k, _)| !k.starts_with("augur.job.id"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            keys.sort();
            eprintln!(
                "{}{} [{}] {}",
                "  ".repeat(depth),
                span.name,
                span.service,
                keys.join(" ")
            );
            walk(spans, &span.span_id, depth + 1);
        }
    }
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let root = spans
        .iter()
        .find(|s| !ids.contains(s.parent_span_id.as_str()))
        .map(|s| s.parent_span_id.clone())
        .unwrap_or_default();
    eprintln!(
        "trace {}:",
        spans.first().map(|s| s.trace_id.as_str()).unwrap_or("")
    );
    walk(spans, &root, 1);
}

fn has_all_phases(spans: &[ReceivedSpan]) -> bool {
    PHASES.iter().all(|p| spans.iter().any(|s| s.name == *p))
}

#[test]
fn one_trace_follows_a_job_from_submit_into_its_process() {
    let receiver = OtlpReceiver::start();
    let cluster = traced_cluster(&receiver, 1);
    let id = cluster.submit(&[
        "--name",
        "traced",
        "--",
        "sh",
        "-c",
        "echo \"TP=$TRACEPARENT\"",
    ]);
    let job = cluster.wait_terminal(&id, DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    let (trace_id, job_parent) = printed_traceparent(json_str(&job, "stdout_tail"));

    let spans = receiver.wait_trace(&trace_id, DEADLINE, "every phase span", has_all_phases);
    print_tree(&spans);
    let submit = one(&spans, "job.submit");
    assert_eq!(submit.service, "augur-coordinator");
    assert_eq!(attr(submit, "rpc.system"), "grpc");
    assert_eq!(attr(submit, "rpc.method"), "SubmitJob");
    assert_eq!(attr(submit, "augur.job.id"), id);
    for phase in ["job.queue", "job.place", "job.dispatch", "job.report"] {
        let span = one(&spans, phase);
        assert_eq!(
            span.parent_span_id, submit.span_id,
            "{phase} is not a child of job.submit"
        );
        assert_eq!(attr(span, "augur.job.id"), id, "{phase}");
    }
    let place = one(&spans, "job.place");
    // The default policy is predictive; with no history yet it falls back to
    // least-loaded and says so in the span.
    assert_eq!(attr(place, "augur.placement.policy"), "predictive");
    assert!(!attr(place, "augur.placement.fallback").is_empty());
    assert_eq!(
        attr(place, "augur.placement.chosen"),
        json_str(&job, "worker_id")
    );
    assert!(!attr(place, "augur.placement.candidates").is_empty());

    let dispatch = one(&spans, "job.dispatch");
    let execute = one(&spans, "job.execute");
    assert_eq!(execute.service, "augur-worker");
    assert_eq!(
        execute.parent_span_id, dispatch.span_id,
        "job.execute is not a child of job.dispatch"
    );
    assert_eq!(attr(execute, "process.exit.code"), "0");
    assert_eq!(attr(execute, "augur.job.attempt"), "1");
    assert_eq!(
        attr(execute, "augur.worker.id"),
        json_str(&job, "worker_id")
    );
    assert_eq!(attr(execute, "cicd.pipeline.task.name"), "traced");
    assert_eq!(attr(execute, "augur.attempt.outcome"), "exited");
    assert!(attr(execute, "process.pid").parse::<u32>().is_ok());
    // The job's own TRACEPARENT names job.execute as its parent.
    assert_eq!(
        job_parent, execute.span_id,
        "the job's TRACEPARENT does not point at job.execute"
    );
    assert_eq!(
        attr(one(&spans, "job.report"), "augur.job.state"),
        "succeeded"
    );
}

#[test]
fn a_failed_attempt_is_marked_in_its_span() {
    let receiver = OtlpReceiver::start();
    let cluster = traced_cluster(&receiver, 1);
    let id = cluster.submit(&["--", "sh", "-c", "echo \"TP=$TRACEPARENT\"; exit 7"]);
    let job = cluster.wait_terminal(&id, DEADLINE);
    assert_eq!(json_str(&job, "state"), "failed", "{job}");
    let (trace_id, _) = printed_traceparent(json_str(&job, "stdout_tail"));
    let spans = receiver.wait_trace(&trace_id, DEADLINE, "every phase span", has_all_phases);
    let execute = one(&spans, "job.execute");
    assert_eq!(attr(execute, "process.exit.code"), "7");
    assert_eq!(attr(execute, "error.type"), "failed");
    assert_eq!(
        execute.status_code, 2,
        "job.execute should have error status"
    );
    assert_eq!(attr(one(&spans, "job.report"), "error.type"), "failed");
}

/// The pid of coordinator `node` of this cluster, found by its command line.
fn coordinator_pid(cluster: &Cluster, node: &str) -> u32 {
    let wanted = ["coordinator", "--node-id", node, cluster.etcd_url()];
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if wanted.iter().all(|w| args.iter().any(|a| a == w)) {
            return pid;
        }
    }
    panic!("no coordinator {node} process found");
}

#[test]
fn a_new_leader_continues_the_same_trace() {
    let receiver = OtlpReceiver::start();
    let cluster = traced_cluster(&receiver, 2);
    // Attempt 1 fails; attempt 2 runs after a backoff long enough to kill the leader.
    let script = "echo \"TP=$TRACEPARENT\"; [ \"$AUGUR_ATTEMPT\" -ge 2 ]";
    let id = cluster.submit(&[
        "--retries",
        "1",
        "--backoff",
        "10s",
        "--",
        "sh",
        "-c",
        script,
    ]);
    poll_until(DEADLINE, "attempt 1 to fail and wait for its retry", || {
        let job = cluster.get_job(&id);
        match (json_str(&job, "state"), job["attempts"].as_u64()) {
            ("pending", Some(1)) => Ok(()),
            (state, attempts) => Err(format!("{state} after {attempts:?} attempts")),
        }
    });
    // Spans still queued in a SIGKILLed process are lost by design; kill the
    // leader only once its spans of attempt 1 have reached the receiver.
    let (first_trace, _) = printed_traceparent(json_str(&cluster.get_job(&id), "stdout_tail"));
    receiver.wait_trace(&first_trace, DEADLINE, "attempt 1's spans", |s| {
        s.iter().any(|x| x.name == "job.report") && s.iter().any(|x| x.name == "job.dispatch")
    });
    let leader = json_str(&cluster.cluster_status(), "leader").to_string();
    let pid = coordinator_pid(&cluster, &leader);
    // SAFETY: plain kill(2) on a pid we just found; no memory is involved.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };

    let survivor = if leader == "c1" { 1 } else { 0 };
    let job = poll_until(DEADLINE, "the job to end under the new leader", || {
        let out = cluster.cli_at(survivor, &["--output", "json", "get", &id]);
        let job: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {out:?}"))?;
        if augur_e2e::is_terminal(&job) {
            Ok(job)
        } else {
            Err(json_str(&job, "state").to_string())
        }
    });
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let (trace_id, _) = printed_traceparent(json_str(&job, "stdout_tail"));
    let spans = receiver.wait_trace(&trace_id, DEADLINE, "two attempts in one trace", |s| {
        s.iter().filter(|x| x.name == "job.execute").count() == 2
            && s.iter().filter(|x| x.name == "job.report").count() == 2
    });
    let submit = one(&spans, "job.submit");
    let epochs: HashSet<&str> = spans
        .iter()
        .filter(|s| s.name == "job.dispatch")
        .map(|s| attr(s, "augur.leader.epoch"))
        .collect();
    assert_eq!(
        epochs.len(),
        2,
        "both leaders dispatched into this trace: {spans:#?}"
    );
    for span in spans
        .iter()
        .filter(|s| s.name != "job.submit" && s.name != "job.execute")
    {
        assert_eq!(
            span.parent_span_id, submit.span_id,
            "{} left the job's trace tree",
            span.name
        );
    }
    let attempts: HashSet<&str> = spans
        .iter()
        .filter(|s| s.name == "job.execute")
        .map(|s| attr(s, "augur.job.attempt"))
        .collect();
    assert_eq!(attempts, HashSet::from(["1", "2"]));
}
