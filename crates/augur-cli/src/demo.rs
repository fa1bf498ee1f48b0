//! Parts of `augur dev --demo`: a small workflow submitted at its start
//! ([`workflow`]), and the learning part: four job classes of different
//! lengths on workers of different (simulated) speeds, so the leader's runtime
//! model visibly learns them; then the same burst under least-loaded and
//! under predictive, with both mean completion times printed.

use std::time::Duration;

use augur_proto::v1 as pb;

/// The demo's workflow (`examples/demo-workflow.yaml`): extract → count × 4 →
/// summarize, with outputs; well under a second a task.
const DEMO_WORKFLOW: &str = include_str!("../../../examples/demo-workflow.yaml");
const DEMO_WORKFLOW_FILE: &str = "demo-workflow.yaml";

/// Submits the demo's workflow once and says how to watch it; returns the
/// run id.
pub async fn workflow(endpoint: &str) -> anyhow::Result<String> {
    let mut client = crate::client::connect(endpoint).await?;
    let run = client
        .submit_workflow(pb::SubmitWorkflowRequest {
            source: DEMO_WORKFLOW.as_bytes().to_vec(),
            file_name: DEMO_WORKFLOW_FILE.into(),
            params: Default::default(),
            idempotency_key: String::new(),
        })
        .await?
        .into_inner();
    println!(
        "demo: submitted workflow run {} (extract -> count x 4 regions -> summarize, from examples/{DEMO_WORKFLOW_FILE})",
        run.run_id
    );
    println!(
        "      watch it: augur workflow get {}   (examples/nightly-etl.yaml is a larger one)",
        run.run_id
    );
    Ok(run.run_id)
}

/// Prints how the demo's workflow run stands (it has normally ended by the
/// time the jobs of the demo have).
pub async fn workflow_outcome(endpoint: &str, run_id: &str) -> anyhow::Result<()> {
    let mut client = crate::client::connect(endpoint).await?;
    let run = client
        .get_workflow(pb::GetWorkflowRequest {
            run_id: run_id.to_string(),
        })
        .await?
        .into_inner();
    let counts: Vec<String> = run
        .counts
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    let total = run
        .tasks
        .iter()
        .find(|t| t.name == "summarize")
        .and_then(|t| t.outputs.get("total"));
    match total {
        Some(total) => println!(
            "demo: workflow run {run_id} {} ({}); summarize's output total = {total}",
            run.state,
            counts.join(", ")
        ),
        None => println!(
            "demo: workflow run {run_id} {} ({})",
            run.state,
            counts.join(", ")
        ),
    }
    Ok(())
}

/// Job classes and their runtime on a speed-1 worker, seconds.
pub(crate) const CLASSES: [(&str, f64); 4] = [
    ("report-short", 0.2),
    ("etl-medium", 0.8),
    ("train-long", 2.0),
    ("batch-xl", 4.0),
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
    let mut placement = crate::connection::placement(endpoint).await?;
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
                return compare(endpoint).await;
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

/// Jobs per class of the demo's policy comparison.
const COMPARE_PER_CLASS: usize = 10;

/// Runs one burst under least-loaded and then under predictive (which stays in
/// force) and prints both mean completion times.
async fn compare(endpoint: &str) -> anyhow::Result<()> {
    println!(
        "demo: the same burst of {} jobs under least-loaded, then predictive...",
        COMPARE_PER_CLASS * CLASSES.len()
    );
    match crate::bench_placement::measure(endpoint, COMPARE_PER_CLASS).await {
        Ok(c) => {
            println!(
                "demo: mean job completion time least-loaded {:.2} s, predictive {:.2} s ({:.2}x); model error median |log2| {:.2}, {:.0}% of predictions from the model.",
                c.least_loaded_mean_jct_s(),
                c.predictive_mean_jct_s(),
                c.ratio(),
                c.median_abs_log2,
                c.from_model * 100.0
            );
            println!("      `augur bench --compare-placement 10 --slots 1` measures it on a larger burst.");
        }
        Err(e) => println!("demo: placement comparison skipped: {e:#}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_workflow_validates() {
        let workflow = augur_workflow::load(DEMO_WORKFLOW_FILE, DEMO_WORKFLOW.as_bytes());
        assert!(workflow.is_ok(), "{:?}", workflow.err());
        let names: Vec<String> = workflow
            .map(|w| w.tasks.into_iter().map(|t| t.name).collect())
            .unwrap_or_default();
        assert_eq!(names, ["extract", "count", "summarize"]);
    }
}
