//! Learned placement from the operator's side, against a real cluster: `augur
//! placement show|set`, `augur model`, `augur runs export` (many pages, read
//! back by `tune`) and `augur tune` on both shipped traces, with `--apply`.

use std::time::Duration;

use augur_core::RunRecord;
use augur_e2e::process::workspace_root;
use augur_e2e::{json_str, Cluster, ClusterConfig};
use augur_store::{Keys, RunHistory, StoreLimits};
use etcd_client::Txn;
use serde_json::{json, Value};

use crate::placement_store::{block_on, cluster_without_workers, connect};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `augur <args>` must fail with exit 1 and `error: <code>: ...` naming `needle`.
fn assert_refused(cluster: &Cluster, args: &[&str], code: &str, needle: &str) {
    let out = cluster.cli(args);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "augur {args:?}: {stderr}");
    assert!(
        stderr.starts_with(&format!("error: {code}: ")) && stderr.contains(needle),
        "augur {args:?}: expected `error: {code}: ...{needle}...`, got {stderr}"
    );
}

#[test]
fn placement_model_and_runs_cli_round_trip_and_refuse_bad_input() {
    let cluster = Cluster::start(ClusterConfig {
        workers: 1,
        ..ClusterConfig::default()
    });
    let shown = cluster.cli_json(&["placement", "show"]);
    assert_eq!(shown["default"], true, "{shown}");
    assert_eq!(shown["config"]["policy"], "predictive", "{shown}");

    cluster.cli_ok(&["placement", "set", "--policy", "least-loaded"]);
    let shown = cluster.cli_json(&["placement", "show"]);
    assert_eq!(shown["config"]["policy"], "least-loaded", "{shown}");
    assert_eq!(shown["default"], false, "{shown}");
    let revision = shown["revision"].as_i64().expect("a revision");
    let stored = cluster
        .etcd_value("/augur/config/placement")
        .expect("the configuration is in etcd");
    assert!(stored.contains("\"least-loaded\""), "{stored}");
    // Fields not given keep their values.
    cluster.cli_ok(&["placement", "set", "--aging-rate", "0.25"]);
    let shown = cluster.cli_json(&["placement", "show"]);
    assert_eq!(shown["config"]["policy"], "least-loaded", "{shown}");
    assert_eq!(shown["config"]["aging_rate"], 0.25, "{shown}");
    let revision_after_good = shown["revision"].as_i64().expect("a revision");
    assert!(revision_after_good > revision);
    let stored = cluster.etcd_value("/augur/config/placement");

    assert_refused(
        &cluster,
        &["placement", "set", "--policy", "nonsense"],
        "InvalidArgument",
        "policy: unknown placement policy \"nonsense\"",
    );
    assert_refused(
        &cluster,
        &["placement", "set", "--policy", "oracle"],
        "InvalidArgument",
        "policy: oracle",
    );
    assert_refused(
        &cluster,
        &["placement", "set", "--aging-rate", "-1"],
        "InvalidArgument",
        "aging_rate",
    );
    assert_refused(
        &cluster,
        &["placement", "set", "--overrun-factor", "0.5"],
        "InvalidArgument",
        "overrun_factor",
    );
    assert_refused(
        &cluster,
        &["placement", "set"],
        "InvalidArgument",
        "nothing to set",
    );
    let shown = cluster.cli_json(&["placement", "show"]);
    assert_eq!(
        shown["revision"].as_i64(),
        Some(revision_after_good),
        "refusals wrote: {shown}"
    );
    assert_eq!(cluster.etcd_value("/augur/config/placement"), stored);

    // The model: none until the leader has trained one.
    let out = cluster.cli(&["--output", "json", "model"]);
    if out.status.success() {
        let model: Value = serde_json::from_slice(&out.stdout).expect("model JSON");
        assert!(model["version"].as_u64().is_some(), "{model}");
        assert!(model["training_runs"].as_u64().is_some(), "{model}");
    } else {
        assert!(
            stderr_of(&out).starts_with("error: NotFound: "),
            "{}",
            stderr_of(&out)
        );
    }

    // Runs export: JSON lines of run records (the finished job's, once the
    // leader records runs).
    let id = cluster.submit(&["--name", "hello", "--", "echo", "hi"]);
    let job = cluster.wait_terminal(&id, Duration::from_secs(60));
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    for args in [
        vec!["runs", "export"],
        vec!["runs", "export", "--since", "1h"],
    ] {
        let text = cluster.cli_ok(&args);
        let records: Vec<RunRecord> = text
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a run record ({e}): {line}"))
            })
            .collect();
        if records.is_empty() {
            eprintln!(
                "note: `augur {}` printed no runs (run records not written by this build)",
                args.join(" ")
            );
        } else {
            assert!(
                records.iter().any(|r| r.job_id == id),
                "job {id} missing from {text}"
            );
        }
    }
    let text = cluster.cli_ok(&["runs", "export", "--since", "2999-01-01T00:00:00Z"]);
    assert!(text.trim().is_empty(), "runs from the future: {text}");
    assert_refused(
        &cluster,
        &["runs", "export", "--since", "yesterday"],
        "InvalidArgument",
        "--since",
    );

    // Many pages: seeded records two hours old stream out in finish order,
    // `--limit` and `--since` cut them, and `tune` reads the export back.
    let seeded = seed_runs(&cluster, 1_203);
    let text = cluster.cli_ok(&["runs", "export"]);
    let exported: Vec<RunRecord> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a run record"))
        .collect();
    let ours: Vec<&RunRecord> = exported
        .iter()
        .filter(|r| r.job_id.starts_with("seeded-"))
        .collect();
    assert_eq!(ours.len(), seeded.len());
    assert!(
        ours.iter().zip(&seeded).all(|(a, b)| *a == b),
        "order or content differs"
    );
    assert!(exported
        .windows(2)
        .all(|w| w[0].finished_at_ms <= w[1].finished_at_ms));
    let limited = cluster.cli_ok(&["runs", "export", "--limit", "700"]);
    assert_eq!(limited.lines().count(), 700);
    let recent = cluster.cli_ok(&["runs", "export", "--since", "1h"]);
    assert!(
        !recent.contains("seeded-"),
        "--since 1h let old runs through"
    );
    let file = cluster.path("runs.jsonl");
    std::fs::write(&file, &text).expect("write the export");
    let out = cluster.cli(&[
        "--output",
        "json",
        "tune",
        "--runs",
        &file.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "tune on the export: {}",
        stderr_of(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("tune printed JSON");
    assert_eq!(
        report["jobs"].as_u64(),
        Some(exported.len() as u64),
        "{report}"
    );
}

/// Writes `count` run records that finished about two hours ago (a minute
/// apart) straight into the cluster's run history, as the leader would.
fn seed_runs(cluster: &Cluster, count: usize) -> Vec<RunRecord> {
    let now_ms = augur_e2e::unix_now() as i64 * 1000;
    let runs: Vec<RunRecord> = (0..count)
        .map(|i| {
            let runtime_ms = 1_000 * (1 + (i % 7) as u64) * (1 + (i % 3) as u64 * 10);
            let finished = now_ms - 2 * 3_600_000 - 60_000 * (count - i) as i64;
            serde_json::from_value(json!({
                "v": 1, "job_id": format!("seeded-{i:05}"), "name": format!("class-{}", i % 3),
                "user": format!("user-{}", i % 5), "attempt": 1, "outcome": "succeeded",
                "submitted_at_ms": finished - runtime_ms as i64 - 500, "queue_wait_ms": 500,
                "runtime_ms": runtime_ms, "finished_at_ms": finished,
            }))
            .expect("a valid run record")
        })
        .collect();
    block_on(async {
        let client = connect(cluster).await;
        let history = RunHistory::new(client.clone(), Keys::default(), StoreLimits::default());
        for chunk in runs.chunks(100) {
            let ops = chunk.iter().map(|r| history.put_op(r)).collect::<Vec<_>>();
            client
                .clone()
                .txn(Txn::new().and_then(ops))
                .await
                .expect("seed run records");
        }
    });
    runs
}

#[test]
fn tune_replays_both_shipped_traces_and_applies_its_recommendation() {
    // The cluster is there for --apply, and holds the cluster lock so the
    // replays do not compete with another test's cluster for the two cores.
    let cluster = cluster_without_workers();
    let traces = workspace_root().join("tests/data/traces");
    let kth = traces.join("KTH-SP2-1996-2.swf.gz");
    let nasa = traces.join("NASA-iPSC-1993-3.1-cln.swf.gz");
    let plot = cluster.path("kth.svg");
    // Sampled (3000 consecutive jobs) so a debug build takes seconds.
    let out = cluster.cli(&[
        "--output",
        "json",
        "tune",
        "--runs",
        &kth.to_string_lossy(),
        "--max-jobs",
        "3000",
        "--plot",
        &plot.to_string_lossy(),
        "--aging-rates",
        "0.02,0.5",
        "--apply",
    ]);
    assert!(out.status.success(), "tune KTH: {}", stderr_of(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("tune printed JSON");
    assert_eq!(report["jobs"], 3000, "{report}");
    let predictors: Vec<&str> = report["prediction"]
        .as_array()
        .expect("prediction array")
        .iter()
        .map(|q| {
            for field in [
                "within_2x",
                "median_abs_log2",
                "mean_accuracy",
                "underpredicted",
            ] {
                assert!(q[field].as_f64().is_some(), "{field} in {q}");
            }
            json_str(q, "predictor")
        })
        .collect();
    for name in [
        "model",
        "requested_time",
        "user_last2",
        "user_class_last2",
        "global_mean",
    ] {
        assert!(
            predictors.contains(&name),
            "predictor {name} missing: {predictors:?}"
        );
    }
    let policies: Vec<&str> = report["placement"]
        .as_array()
        .expect("placement array")
        .iter()
        .map(|q| {
            for field in [
                "mean_jct_s",
                "median_jct_s",
                "p99_bounded_slowdown",
                "makespan_s",
            ] {
                assert!(q[field].as_f64().is_some_and(|v| v > 0.0), "{field} in {q}");
            }
            json_str(q, "policy")
        })
        .collect();
    // predictive once per aging rate: the cluster's (0.1) and the two asked for.
    assert_eq!(
        policies,
        [
            "round-robin",
            "least-loaded",
            "fifo-fastest-idle",
            "predictive",
            "predictive",
            "predictive",
            "oracle"
        ]
    );
    let rows = report["placement"].as_array().expect("placement array");
    let agings: Vec<f64> = rows
        .iter()
        .filter(|q| q["policy"] == "predictive")
        .filter_map(|q| q["aging_rate"].as_f64())
        .collect();
    assert_eq!(agings, [0.02, 0.1, 0.5], "{report}");
    let recommended = json_str(&report["recommended"], "policy");
    assert_ne!(recommended, "oracle");
    assert_eq!(report["recommended"]["config"]["policy"], recommended);
    // The recommended aging rate is the one of the best live row.
    let best = rows
        .iter()
        .filter(|q| q["policy"] != "oracle")
        .min_by(|a, b| {
            let jct = |q: &&Value| q["mean_jct_s"].as_f64().unwrap_or(f64::MAX);
            jct(a).total_cmp(&jct(b))
        })
        .expect("rows");
    if best["policy"] == "predictive" {
        assert_eq!(
            report["recommended"]["config"]["aging_rate"], best["aging_rate"],
            "{report}"
        );
    }
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    assert!(
        svg.starts_with("<svg") && svg.contains("predictive"),
        "{svg}"
    );
    assert!(
        stderr_of(&out).contains("applied: placement policy"),
        "{}",
        stderr_of(&out)
    );
    let shown = cluster.cli_json(&["placement", "show"]);
    assert_eq!(shown["config"]["policy"], recommended, "{shown}");
    assert_eq!(
        shown["config"]["aging_rate"], report["recommended"]["config"]["aging_rate"],
        "{shown}"
    );

    let table = cluster.cli_ok(&[
        "tune",
        "--runs",
        &nasa.to_string_lossy(),
        "--max-jobs",
        "3000",
    ]);
    assert!(table.starts_with("3000 jobs replayed (SAMPLED"), "{table}");
    assert!(table.contains("recommended: policy"), "{table}");
    eprintln!("{table}");

    assert_refused(
        &cluster,
        &[
            "tune",
            "--runs",
            &kth.to_string_lossy(),
            "--format",
            "jsonl",
        ],
        "InvalidArgument",
        "line 1",
    );
    assert_refused(
        &cluster,
        &["tune", "--runs", "/no/such/runs.jsonl"],
        "NotFound",
        "/no/such/runs.jsonl",
    );
    assert_refused(
        &cluster,
        &["tune", "--runs", &kth.to_string_lossy(), "--workers", "8y1"],
        "InvalidArgument",
        "--workers",
    );
    assert_refused(
        &cluster,
        &["tune", "--runs", &kth.to_string_lossy(), "--load", "0"],
        "InvalidArgument",
        "--load",
    );
    for rates in ["0", "-0.1", "0.1,1000", "nan"] {
        assert_refused(
            &cluster,
            &[
                "tune",
                "--runs",
                &kth.to_string_lossy(),
                "--aging-rates",
                rates,
            ],
            "InvalidArgument",
            "--aging-rates",
        );
    }
}
