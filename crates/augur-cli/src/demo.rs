//! The learning part of `augur dev --demo`: three job classes of different
//! lengths on workers of different (simulated) speeds, so the leader's runtime
//! model visibly learns them.

use std::time::Duration;

use augur_proto::v1 as pb;
use augur_proto::v1::placement_service_client::PlacementServiceClient;

/// Job classes and their runtime on a speed-1 worker, seconds.
pub(crate) const CLASSES: [(&str, f64); 3] = [
    ("report-short", 0.2),
    ("etl-medium", 0.8),
    ("train-long", 2.0),
];
const JOBS_PER_CLASS: usize = 12;

pub(crate) fn job(name: &str, seconds: f64) -> pb::SubmitJobRequest {
    // Sleep the class's duration divided by the worker's declared speed.
    let script = format!(
        r#"sleep $(awk -v s="${{AUGUR_WORKER_SPEED:-1}}" 'BEGIN {{ printf "%.3f", {seconds} / s }}')"#
    );
    let spec = augur_core::JobSpecInput {
        name: name.to_string(),
        command: "sh".into(),
        args: vec!["-c".into(), script],
        labels: [("user".to_string(), "demo".to_string())].into(),
        ..Default::default()
    };
    pb::SubmitJobRequest {
        spec: Some(spec.into()),
    }
}

/// Submits the classes, waits for them, and shows the model the leader trained.
pub async fn learning(endpoint: &str) -> anyhow::Result<()> {
    let mut client = crate::client::connect(endpoint).await?;
    println!(
        "demo: {} jobs in {} classes on workers of different speeds (label speed; durations scale by it)...",
        JOBS_PER_CLASS * CLASSES.len(),
        CLASSES.len()
    );
    let mut ids = Vec::new();
    for round in 0..JOBS_PER_CLASS {
        for (name, seconds) in CLASSES {
            ids.push(
                client
                    .submit_job(job(name, seconds))
                    .await?
                    .into_inner()
                    .job_id,
            );
        }
        if round == JOBS_PER_CLASS / 2 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            let job = client
                .get_job(pb::GetJobRequest { job_id: id.clone() })
                .await?
                .into_inner();
            if crate::render::is_terminal(job.state) || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut placement = PlacementServiceClient::connect(endpoint.to_string()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match placement
            .get_model(pb::GetModelRequest {
                include_model: false,
            })
            .await
        {
            Ok(model) => {
                let m = model.into_inner();
                println!(
                    "demo: the leader trained runtime model v{} on {} recorded runs; new jobs are now ordered and placed by predicted runtime.",
                    m.version, m.training_runs
                );
                println!("      `augur model`, `augur runs export`, and the job.place spans show what it predicts.");
                return Ok(());
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await
            }
            Err(e) => {
                println!("demo: no model yet ({}); it trains every few seconds once 20 runs are recorded.", e.message());
                return Ok(());
            }
        }
    }
}
