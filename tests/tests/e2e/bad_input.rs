//! Every bad input gets a clear error naming its field, and changes nothing: the
//! etcd revision is the same before and after the whole batch.

use std::time::Duration;

use augur_e2e::{json_str, poll_until, Cluster, ClusterConfig};
use serde_json::json;

/// A well-formed job id (a ULID) that no job has.
const UNKNOWN_JOB_ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
const DEADLINE: Duration = Duration::from_secs(60);

/// One refused request: CLI arguments, and what stderr must contain.
struct Case {
    what: &'static str,
    args: Vec<String>,
    stderr_contains: Vec<&'static str>,
}

fn case(what: &'static str, args: &[&str], stderr_contains: &[&'static str]) -> Case {
    Case {
        what,
        args: args.iter().map(|a| a.to_string()).collect(),
        stderr_contains: stderr_contains.to_vec(),
    }
}

/// Writes `spec` to a file in the cluster dir and returns `submit --file <path>`.
fn spec_file_case(
    cluster: &Cluster,
    what: &'static str,
    spec: serde_json::Value,
    stderr_contains: &[&'static str],
) -> Case {
    let path = cluster.path(&format!("{}.json", what.replace(' ', "-")));
    std::fs::write(&path, spec.to_string()).expect("write a job spec file");
    let path = path.to_string_lossy().into_owned();
    case(what, &["submit", "--file", &path], stderr_contains)
}

/// Waits until nothing writes to etcd for a while (cluster start-up is over).
fn quiet_revision(cluster: &Cluster) -> i64 {
    let mut last = (cluster.etcd_revision(), 0);
    poll_until(DEADLINE, "etcd writes to settle", || {
        let revision = cluster.etcd_revision();
        if revision == last.0 {
            last.1 += 1;
        } else {
            last = (revision, 0);
        }
        // Twenty polls (two seconds) without a write.
        if last.1 >= 20 {
            Ok(revision)
        } else {
            Err(format!("revision {revision}"))
        }
    })
}

#[test]
fn bad_input_is_refused_with_its_field_and_writes_nothing() {
    let cluster = Cluster::start(ClusterConfig {
        workers: 1,
        ..ClusterConfig::default()
    });
    let labels: serde_json::Map<String, serde_json::Value> =
        (0..257).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases = vec![
        spec_file_case(
            &cluster,
            "empty command",
            json!({"command": ""}),
            &["InvalidArgument", "spec.command"],
        ),
        case(
            "timeout 5x",
            &["submit", "--timeout", "5x", "--", "echo", "hi"],
            &["InvalidArgument", "spec.timeout"],
        ),
        case(
            "timeout 0s",
            &["submit", "--timeout", "0s", "--", "echo", "hi"],
            &["InvalidArgument", "spec.timeout"],
        ),
        spec_file_case(
            &cluster,
            "env over 64 KiB",
            json!({"command": "echo", "env": {"BIG": "x".repeat(70_000)}}),
            &["InvalidArgument", "spec.env", "65536"],
        ),
        spec_file_case(
            &cluster,
            "257 labels",
            json!({"command": "echo", "labels": labels}),
            &["InvalidArgument", "spec.labels", "257"],
        ),
        spec_file_case(
            &cluster,
            "unknown field",
            json!({"command": "echo", "timeout_secs": 5}),
            &["unknown field", "timeout_secs"],
        ),
        case(
            "priority 5000",
            &["submit", "--priority", "5000", "--", "echo", "hi"],
            &["InvalidArgument", "spec.priority"],
        ),
        case(
            "reserved env",
            &["submit", "--env", "AUGUR_JOB_ID=spoof", "--", "echo", "hi"],
            &["InvalidArgument", "spec.env", "AUGUR_JOB_ID"],
        ),
        case(
            "get malformed id",
            &["get", "not-a-job-id"],
            &["InvalidArgument"],
        ),
        case(
            "cancel malformed id",
            &["cancel", "not-a-job-id"],
            &["InvalidArgument"],
        ),
        case("get unknown id", &["get", UNKNOWN_JOB_ID], &["NotFound"]),
        case(
            "cancel unknown id",
            &["cancel", UNKNOWN_JOB_ID],
            &["NotFound"],
        ),
    ];

    let before = quiet_revision(&cluster);
    let mut failures = Vec::new();
    for case in &cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let out = cluster.cli(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut problems = Vec::new();
        if out.status.code() != Some(1) {
            problems.push(format!("{} (expected exit code 1)", out.status));
        }
        if !stderr.starts_with("error: ") {
            problems.push("stderr does not start with `error: `".to_string());
        }
        for needle in &case.stderr_contains {
            if !stderr.contains(needle) {
                problems.push(format!("stderr lacks {needle:?}"));
            }
        }
        if args[0] == "submit" && !stdout.trim().is_empty() {
            problems.push("printed a job id".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n  stdout: {}\n  stderr: {}",
                case.what,
                problems.join("; "),
                stdout.trim(),
                stderr.trim()
            ));
        }
    }
    let after = cluster.etcd_revision();
    if after != before {
        failures.push(format!(
            "the batch wrote to etcd (revision {before} -> {after}); keys written since: {:?}",
            cluster.etcd_keys_modified_since(before)
        ));
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The check above is not vacuous: a good submission does move the revision.
    let id = cluster.submit(&["--", "echo", "fine"]);
    assert!(
        cluster.etcd_revision() > before,
        "a good submission did not write to etcd"
    );
    let job = cluster.wait_terminal(&id, DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
}
