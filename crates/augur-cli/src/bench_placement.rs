//! `augur bench --compare-placement`: the same workload under `least-loaded`
//! and under `predictive` on one live cluster of workers with different
//! (simulated) speeds, after a warm-up that lets the leader train its model.
//! Prints mean job completion time for each and their ratio; asserts nothing.

use std::time::Duration;

use augur_proto::v1 as pb;
use augur_proto::v1::placement_service_client::PlacementServiceClient;
use serde_json::json;

use crate::demo::{job, CLASSES};

/// Submits `per_class` jobs of every class, in a shuffled but fixed order, and
/// returns the mean submission-to-finish time in seconds once all have ended.
async fn burst(endpoint: &str, per_class: usize, round: usize) -> anyhow::Result<f64> {
    let mut client = crate::client::connect(endpoint).await?;
    let mut order: Vec<(&str, f64)> = Vec::new();
    for i in 0..per_class {
        for k in 0..CLASSES.len() {
            // Rotate so classes interleave differently from round to round.
            order.push(CLASSES[(i + k + round) % CLASSES.len()]);
        }
    }
    let mut ids = Vec::new();
    for (name, seconds) in order {
        ids.push(
            client
                .submit_job(job(name, seconds))
                .await?
                .into_inner()
                .job_id,
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut total = 0.0;
    for id in &ids {
        loop {
            let j = client
                .get_job(pb::GetJobRequest { job_id: id.clone() })
                .await?
                .into_inner();
            if crate::render::is_terminal(j.state) {
                total += (j.finished_at_ms - j.submitted_at_ms) as f64 / 1000.0;
                break;
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("job {id} did not finish within 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(total / ids.len() as f64)
}

async fn set_policy(endpoint: &str, policy: &str) -> anyhow::Result<()> {
    let mut placement = PlacementServiceClient::connect(endpoint.to_string()).await?;
    placement
        .set_placement_config(pb::SetPlacementConfigRequest {
            json: json!({ "policy": policy }).to_string(),
            expected_revision: None,
        })
        .await?;
    // The leader follows the stored configuration through a watch.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Runs the comparison; returns a JSON report.
pub async fn compare(endpoint: &str, per_class: usize) -> anyhow::Result<serde_json::Value> {
    // Warm-up: history and a trained model.
    burst(endpoint, per_class, 0).await?;
    let mut placement = PlacementServiceClient::connect(endpoint.to_string()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let model_version = loop {
        match placement
            .get_model(pb::GetModelRequest {
                include_model: false,
            })
            .await
        {
            Ok(m) => break m.into_inner().version,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await
            }
            Err(e) => anyhow::bail!("no model was trained after the warm-up: {}", e.message()),
        }
    };
    let mut results = Vec::new();
    for (round, policy) in ["least-loaded", "predictive"].into_iter().enumerate() {
        set_policy(endpoint, policy).await?;
        let mean = burst(endpoint, per_class, round + 1).await?;
        results.push((policy, mean));
    }
    let (ll, pr) = (results[0].1, results[1].1);
    Ok(json!({
        "jobs_per_burst": per_class * CLASSES.len(),
        "model_version": model_version,
        "least_loaded_mean_jct_s": ll,
        "predictive_mean_jct_s": pr,
        "predictive_over_least_loaded": pr / ll.max(1e-9),
    }))
}
