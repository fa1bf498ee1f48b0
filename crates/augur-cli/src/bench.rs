//! `augur bench`: end-to-end throughput and submit-to-start latency on a cluster
//! of its own, next to the raw etcd fenced-transaction rate that bounds it.
//! Figures are printed, never asserted on. `--workflow fanout` measures a
//! workflow run instead (`bench_workflow.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_client::JobServiceClient;
use clap::Args;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde_json::json;

use crate::bench_workflow::WorkflowBench;
use crate::connection::Conn;
use crate::dev::{LocalCluster, LocalSpec};
use crate::serve::ExecutorKind;
use crate::Output;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Jobs to run.
    #[arg(long, default_value_t = 5000)]
    jobs: usize,
    #[arg(long, value_enum, default_value_t = ExecutorKind::Null)]
    pub executor: ExecutorKind,
    /// Workers in the benchmark cluster.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 64)]
    pub slots: u32,
    /// Submissions in flight (closed loop).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Open loop: submit at this many jobs per second instead.
    #[arg(long)]
    rate: Option<f64>,
    /// Fenced transactions for the raw etcd measurement.
    #[arg(long, default_value_t = 20_000)]
    etcd_txns: usize,
    /// etcd binary (default: `etcd` on PATH).
    #[arg(long)]
    pub etcd_bin: Option<std::path::PathBuf>,
    /// Instead: run one workload under least-loaded and under predictive on
    /// workers of speeds 1, 2, 4 (process executor) and compare mean job
    /// completion time; this many jobs per class per burst.
    #[arg(long)]
    compare_placement: Option<usize>,
    /// Instead: run one workflow and print its duration, critical path and
    /// scheduling overhead per task; `fanout` is 1 → WIDTH → 1.
    #[arg(long, value_enum, conflicts_with = "compare_placement")]
    workflow: Option<WorkflowBench>,
    /// Instances of the fanned-out task of `--workflow fanout`.
    #[arg(long, default_value_t = 100, requires = "workflow",
          value_parser = clap::value_parser!(u64).range(1..))]
    width: u64,
}

/// The worker executor of a benchmark cluster.
pub fn executor(kind: ExecutorKind) -> augur_worker::executor::Executor {
    match kind {
        ExecutorKind::Null => augur_worker::executor::Executor::Null,
        ExecutorKind::Process => augur_worker::executor::Executor::Process(Default::default()),
    }
}

pub async fn run(args: BenchArgs, output: Output) -> anyhow::Result<()> {
    if args.jobs == 0 || args.concurrency == 0 {
        anyhow::bail!("--jobs and --concurrency must be positive");
    }
    if let Some(per_class) = args.compare_placement {
        return compare_placement(&args, per_class).await;
    }
    if let Some(WorkflowBench::Fanout) = args.workflow {
        let width = usize::try_from(args.width).context("--width is too large")?;
        return crate::bench_workflow::run(&args, width, output).await;
    }
    let executor = executor(args.executor);
    let cluster = LocalCluster::start(LocalSpec {
        secure: false,
        data_dir: None,
        listen: "127.0.0.1:0".parse()?,
        workers: args.workers,
        slots: args.slots,
        executor,
        etcd_bin: args.etcd_bin.clone(),
        max_txn_ops: 1024,
        retention_count: args.jobs * 2 + 1000,
        // Recorded as in production, not exported.
        metrics: augur_telemetry::Metrics::new(true, true),
    })
    .await?;
    let result = measure(&args, &cluster).await;
    cluster.stop().await;
    let (raw_txn_per_s, jobs_per_s, p50, p99, wall) = result?;
    let report = json!({
        "jobs": args.jobs,
        "executor": format!("{:?}", args.executor).to_lowercase(),
        "workers": args.workers,
        "slots_per_worker": args.slots,
        "mode": match args.rate { Some(r) => format!("open loop at {r} jobs/s"), None => format!("closed loop, {} in flight", args.concurrency) },
        "elapsed_s": wall,
        "jobs_per_s": jobs_per_s,
        "submit_to_start_p50_ms": p50,
        "submit_to_start_p99_ms": p99,
        "etcd_fenced_txn_per_s": raw_txn_per_s,
        "jobs_per_s_over_etcd_txn_per_s": jobs_per_s / raw_txn_per_s.max(1.0),
    });
    match output {
        Output::Json => println!("{report}"),
        Output::Table => {
            println!("jobs                     {}", args.jobs);
            println!(
                "executor                 {}",
                report["executor"].as_str().unwrap_or("")
            );
            println!(
                "mode                     {}",
                report["mode"].as_str().unwrap_or("")
            );
            println!("throughput               {jobs_per_s:.0} jobs/s (submit of the first to end of the last)");
            println!("submit-to-start p50/p99  {p50:.2} / {p99:.2} ms");
            println!("raw etcd fenced txns     {raw_txn_per_s:.0} /s (compare create revision + 2 puts, 64 in flight)");
            println!(
                "jobs per fenced txn-slot {:.2}",
                jobs_per_s / raw_txn_per_s.max(1.0)
            );
        }
    }
    Ok(())
}

/// Raw etcd: transactions shaped like a leader write, 64 in flight.
async fn raw_etcd(endpoint: &str, count: usize) -> anyhow::Result<f64> {
    let client = augur_store::connect(&[endpoint.to_string()], Duration::from_secs(10)).await?;
    let fence_key = "/bench/fence";
    let put = client.clone().put(fence_key, "x", None).await?;
    let revision = put.header().map(|h| h.revision()).unwrap_or(0);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut c = client.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, etcd_client::Error>(());
                }
                let txn = Txn::new()
                    .when(vec![Compare::create_revision(
                        fence_key,
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then(vec![
                        TxnOp::put(format!("/bench/a/{i}"), "v", None),
                        TxnOp::put(format!("/bench/b/{i}"), "v", None),
                    ]);
                c.txn(txn).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Every job record of the cluster.
async fn all_jobs(client: &mut JobServiceClient<Conn>) -> anyhow::Result<Vec<pb::Job>> {
    let mut token = String::new();
    let mut jobs = Vec::new();
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                states: vec![],
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return Ok(jobs);
        }
        token = page.next_page_token;
    }
}

async fn measure(
    args: &BenchArgs,
    cluster: &LocalCluster,
) -> anyhow::Result<(f64, f64, f64, f64, f64)> {
    let raw = raw_etcd(&cluster.etcd.endpoint, args.etcd_txns)
        .await
        .context("raw etcd measurement")?;
    let client = crate::client::connect(&cluster.endpoint).await?;
    let spec = |i: usize| {
        let input = augur_core::JobSpecInput {
            name: "bench".into(),
            command: "true".into(),
            args: vec![i.to_string()],
            ..Default::default()
        };
        pb::SubmitJobRequest {
            spec: Some(input.into()),
        }
    };
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    match args.rate {
        None => {
            for _ in 0..args.concurrency {
                let mut c = client.clone();
                let next = next.clone();
                let total = args.jobs;
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= total {
                            return Ok::<_, tonic::Status>(());
                        }
                        c.submit_job(spec(i)).await?;
                    }
                }));
            }
        }
        Some(rate) => {
            let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for i in 0..args.jobs {
                tick.tick().await;
                let mut c = client.clone();
                tasks.push(tokio::spawn(async move {
                    c.submit_job(spec(i)).await.map(|_| ())
                }));
            }
        }
    }
    for t in tasks {
        t.await??;
    }
    // Wait until nothing is pending or running.
    let mut c = client.clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = c
            .cluster_status(pb::ClusterStatusRequest {})
            .await?
            .into_inner();
        if s.pending_jobs == 0 && s.running_jobs == 0 {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("jobs did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The leader's counts drop to zero when it has the results, possibly
    // before their terminal records are written: wait for the records too.
    let terminal = |jobs: &[pb::Job]| {
        jobs.iter()
            .filter(|j| crate::render::is_terminal(j.state))
            .count()
    };
    let mut jobs = all_jobs(&mut c).await?;
    while terminal(&jobs) < args.jobs {
        if Instant::now() > deadline {
            anyhow::bail!("jobs did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        jobs = all_jobs(&mut c).await?;
    }
    let wall = started.elapsed().as_secs_f64();
    // Read every record back for exact per-job figures.
    let mut latencies = Vec::with_capacity(args.jobs);
    let mut last_finish = 0i64;
    let mut first_submit = i64::MAX;
    let mut succeeded = 0usize;
    for job in &jobs {
        if job.state == pb::JobState::Succeeded as i32 {
            succeeded += 1;
        }
        latencies.push((job.started_at_ms - job.submitted_at_ms) as f64);
        last_finish = last_finish.max(job.finished_at_ms);
        first_submit = first_submit.min(job.submitted_at_ms);
    }
    if succeeded != args.jobs {
        anyhow::bail!("{succeeded} of {} jobs succeeded", args.jobs);
    }
    latencies.sort_by(f64::total_cmp);
    let span_s = ((last_finish - first_submit).max(1) as f64) / 1000.0;
    Ok((
        raw,
        args.jobs as f64 / span_s,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        wall,
    ))
}

async fn compare_placement(args: &BenchArgs, per_class: usize) -> anyhow::Result<()> {
    if per_class == 0 {
        anyhow::bail!("--compare-placement must be positive");
    }
    let cluster = LocalCluster::start(LocalSpec {
        secure: false,
        data_dir: None,
        listen: "127.0.0.1:0".parse()?,
        workers: crate::dev::DEV_SPEEDS.len() as u32,
        slots: args.slots.min(4),
        executor: augur_worker::executor::Executor::Process(Default::default()),
        etcd_bin: args.etcd_bin.clone(),
        max_txn_ops: 1024,
        retention_count: 100_000,
        metrics: augur_telemetry::Metrics::new(true, true),
    })
    .await?;
    let report = crate::bench_placement::compare(&cluster.endpoint, per_class).await;
    cluster.stop().await;
    println!("{}", report?);
    Ok(())
}
