//! Chaos: a leader frozen by SIGSTOP while etcd still names it (its lease has
//! not run out). A follower must go on answering `augur cluster` and `augur
//! workers` — from etcd, naming the leader it believes in — and a call it has
//! to forward (`augur cancel`) must fail with `Unavailable` naming that leader
//! rather than hang or come back `Cancelled`. Once the leader is woken, the
//! same follower forwards to it again.

use std::time::Duration;

use augur_e2e::{coordinator_index, coordinator_name, Cluster, ClusterConfig};
use serde_json::Value;

/// Long enough that etcd keeps naming the frozen leader for the whole freeze.
const LEASE_TTL: &str = "30s";
/// How long one CLI call may take while the leader is frozen: a liveness
/// bound (the call must not hang), not a speed assertion.
const CLI_BOUND: Duration = Duration::from_secs(15);
/// A bound on "stuck", not on speed.
const DEADLINE: Duration = Duration::from_secs(120);
/// A well-formed job id no job has.
const NO_SUCH_JOB: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

/// `augur --output json <args>` through coordinator `via`, which must answer.
fn json_via(cluster: &Cluster, via: usize, args: &[&str]) -> Value {
    let mut full = vec!["--output", "json"];
    full.extend_from_slice(args);
    let out = cluster
        .cli_within(via, &full, CLI_BOUND)
        .unwrap_or_else(|hung| panic!("`augur {}` hung: {hung}", full.join(" ")));
    assert!(
        out.status.success(),
        "`augur {}` via {} exited {}: {}",
        full.join(" "),
        coordinator_name(via),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("`augur {}` printed non-JSON: {e}", full.join(" ")))
}

fn worker_ids(workers: &Value) -> Vec<String> {
    let mut ids: Vec<String> = workers
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|w| w["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

// Regression (issue 12): after a leader SIGSTOP, `augur cluster` and `augur
// workers` on a follower waited 5 s and failed with `Cancelled: Timeout expired`.
#[test]
fn chaos_followers_answer_reads_and_fail_forwards_fast_while_the_leader_is_frozen() {
    let mut cluster = Cluster::start(ClusterConfig {
        coordinators: 3,
        workers: 2,
        worker_slots: 2,
        lease_ttl: LEASE_TTL,
        ..ClusterConfig::default()
    });
    let leader = cluster.wait_leader(DEADLINE, "elected", |_| true);
    let via = (coordinator_index(&leader) + 1) % 3;

    cluster.stop_node(&leader);

    let status = json_via(&cluster, via, &["cluster"]);
    assert_eq!(status["leader"], leader.as_str(), "{status}");
    assert_eq!(
        status["answered_by"],
        coordinator_name(via).as_str(),
        "{status}"
    );
    assert!(status["epoch"].as_i64().is_some_and(|e| e > 0), "{status}");
    assert_eq!(worker_ids(&status["workers"]), ["w1", "w2"], "{status}");

    let workers = json_via(&cluster, via, &["workers"]);
    assert_eq!(worker_ids(&workers), ["w1", "w2"], "{workers}");

    // A call that must be forwarded. Its job id exists nowhere: the frozen
    // leader reads the request when it wakes, and must not cancel anything then.
    let cancel = cluster
        .cli_within(via, &["cancel", NO_SUCH_JOB], CLI_BOUND)
        .unwrap_or_else(|hung| panic!("`augur cancel` hung: {hung}"));
    let stderr = String::from_utf8_lossy(&cancel.stderr);
    assert!(!cancel.status.success(), "cancel succeeded: {stderr}");
    assert!(
        stderr.contains("Unavailable") && stderr.contains(&format!("leader {leader}")),
        "a forward to the frozen leader must be Unavailable naming it: {stderr}"
    );
    // The premise: everything above happened while etcd named the frozen leader.
    assert_eq!(
        cluster.election_leader().as_deref(),
        Some(leader.as_str()),
        "the frozen leader lost its lease during the checks; raise LEASE_TTL"
    );

    cluster.cont_node(&leader);
    // The woken leader answers again, and the follower forwards to it: a job
    // submitted now runs (so its worker's stream is live again), and a cancel
    // through the follower stops it.
    let job = cluster.submit_via(via, &["--name", "sleeper", "--", "sleep", "600"]);
    cluster.wait_job(&job, DEADLINE, "running", |j| j["state"] == "running");
    let status = json_via(&cluster, via, &["cluster"]);
    assert_eq!(status["leader"], leader.as_str(), "{status}");
    let out = cluster
        .cli_within(via, &["cancel", &job], CLI_BOUND)
        .unwrap_or_else(|hung| panic!("`augur cancel` hung: {hung}"));
    assert!(
        out.status.success(),
        "a cancel forwarded to the woken leader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = cluster.wait_job(&job, DEADLINE, "cancelled", |j| j["state"] == "cancelled");
    assert_eq!(ended["state"], "cancelled", "{ended}");
}
