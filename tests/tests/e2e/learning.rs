//! The learning loop on a live cluster: finished attempts leave run records,
//! the leader trains a runtime model on them and stores it, a new leader starts
//! warm with it, and a new placement configuration takes effect live.

use std::time::Duration;

use augur_e2e::chaos::coordinator_index;
use augur_e2e::exposition::{scrape, Exposition};
use augur_e2e::{json_str, poll_until, Cluster, ClusterConfig};

const DEADLINE: Duration = Duration::from_secs(90);

fn decisions(cluster: &Cluster, leader: &str, policy: &str) -> f64 {
    let text = scrape(cluster.metrics_addr(coordinator_index(leader)), false).unwrap_or_default();
    Exposition::parse(&text)
        .map(|e| e.sum("augur_placement_decisions_total", &[("policy", policy)]))
        .unwrap_or(0.0)
}

#[test]
fn runs_train_a_model_that_a_new_leader_loads_and_config_changes_apply_live() {
    let mut cluster = Cluster::start(ClusterConfig {
        coordinators: 2,
        workers: 2,
        extra_coordinator_args: vec![
            "--retrain-interval".into(),
            "1s".into(),
            "--min-training-runs".into(),
            "20".into(),
        ],
        ..ClusterConfig::default()
    });
    let mut ids = Vec::new();
    for i in 0..30 {
        let class = if i % 3 == 0 { "slow" } else { "fast" };
        let pause = if class == "slow" { "0.3" } else { "0.05" };
        ids.push(cluster.submit(&[
            "--name",
            class,
            "--label",
            "user=alice",
            "--",
            "sleep",
            pause,
        ]));
    }
    for id in &ids {
        let job = cluster.wait_terminal(id, DEADLINE);
        assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    }

    // Every finished attempt left a run record.
    let out = cluster.cli_ok(&["runs", "export"]);
    let runs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON run record per line"))
        .collect();
    for id in &ids {
        let run = runs
            .iter()
            .find(|r| r["job_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no run record for {id}"));
        assert!(run["runtime_ms"].as_u64().is_some_and(|ms| ms > 0), "{run}");
        assert_eq!(run["outcome"], "succeeded", "{run}");
    }

    // The leader trains on them and stores the model.
    let model = poll_until(DEADLINE, "a trained model", || {
        let out = cluster.cli(&["--output", "json", "model"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        let model: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        match model["version"].as_u64() {
            Some(v) if v >= 1 => Ok(model),
            _ => Err(model.to_string()),
        }
    });
    let version = model["version"].as_u64().unwrap_or(0);
    assert!(
        model["training_runs"].as_u64().unwrap_or(0) >= 20,
        "{model}"
    );

    // A new leader starts warm with the stored model.
    let old = cluster.wait_leader(DEADLINE, "elected", |_| true);
    cluster.kill_node(&old);
    let new = cluster.wait_leader(DEADLINE, "the survivor", |l| l != old);
    poll_until(DEADLINE, "the new leader's warm start", || {
        cluster
            .log_lines(&new)
            .iter()
            .filter(|l| l.contains("placement warm start"))
            .find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                v["model_version"].as_u64()
            })
            .filter(|v| *v >= version)
            .map(|_| ())
            .ok_or_else(|| "no warm start with the model yet".to_string())
    });

    // A placement configuration applies live, without a restart.
    let out = cluster.cli_any(&["placement", "set", "--policy", "least-loaded"]);
    assert!(out.status.success(), "{out:?}");
    poll_until(DEADLINE, "least-loaded decisions", || {
        let id = cluster.submit_via(coordinator_index(&new), &["--", "true"]);
        // Coordinator c1 may be the one killed: ask whoever answers.
        poll_until(DEADLINE, format!("job {id} to end"), || {
            match cluster.json_any(&["get", &id]) {
                Ok(job) if augur_e2e::is_terminal(&job) => Ok(()),
                Ok(job) => Err(json_str(&job, "state").to_string()),
                Err(e) => Err(e),
            }
        });
        let n = decisions(&cluster, &new, "least-loaded");
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{n} least-loaded decisions"))
        }
    });
}
