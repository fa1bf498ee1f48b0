//! Subcommands that talk to a cluster's API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use augur_core::{JobSpecInput, JobState};
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_client::JobServiceClient;
use clap::Args;

use crate::connection::Conn;
use crate::render;
use crate::Output;

/// Exit codes of `submit --wait` for jobs that did not succeed.
pub const EXIT_FAILED: u8 = 10;
pub const EXIT_TIMED_OUT: u8 = 11;
pub const EXIT_CANCELLED: u8 = 12;

/// What a job is: shared by `augur submit` and `augur schedule create`.
#[derive(Args, Debug)]
pub struct JobArgs {
    /// Job class name (default: the command's file name).
    #[arg(long)]
    name: Option<String>,
    /// Higher runs first (-1000..=1000).
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Per-attempt time limit, e.g. "30s", "10m".
    #[arg(long, allow_hyphen_values = true, value_parser = duration_text)]
    timeout: Option<String>,
    /// Retries after a failure of the job itself (attempts = retries + 1).
    #[arg(long)]
    retries: Option<u32>,
    /// First retry backoff, e.g. "1s"; doubles per retry, with jitter.
    #[arg(long, allow_hyphen_values = true, value_parser = duration_text)]
    backoff: Option<String>,
    /// Cap of the retry backoff, e.g. "5m".
    #[arg(long, allow_hyphen_values = true, value_parser = duration_text)]
    max_backoff: Option<String>,
    /// Label k=v (repeatable).
    #[arg(long = "label", value_parser = parse_key_value)]
    labels: Vec<(String, String)>,
    /// Worker label the job requires, k=v (repeatable); `node=ID` pins a worker.
    #[arg(long = "constraint", value_parser = parse_key_value)]
    constraints: Vec<(String, String)>,
    /// Environment variable K=V (repeatable).
    #[arg(long = "env", value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// Working directory (absolute).
    #[arg(long)]
    workdir: Option<String>,
    /// Slots the job occupies.
    #[arg(long)]
    slots: Option<u32>,
    /// CPU the job asks for: cores (0.5, 2) or millicores (250m).
    #[arg(long, allow_hyphen_values = true, value_parser = cpu_quantity)]
    cpu: Option<u64>,
    /// Memory the job asks for: bytes with k, M, G, T or Ki, Mi, Gi, Ti (e.g. 64Mi, 2G).
    #[arg(long, allow_hyphen_values = true, value_parser = memory_quantity)]
    memory: Option<u64>,
    /// A JSON or TOML job spec file; flags given too override its fields.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Command and arguments, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

impl JobArgs {
    /// The spec these flags describe (validated by the server).
    pub fn into_spec(self) -> anyhow::Result<JobSpecInput> {
        let mut spec = match &self.file {
            Some(path) => read_spec_file(path)?,
            None => JobSpecInput::default(),
        };
        if let Some((command, rest)) = self.command.split_first() {
            spec.command = command.clone();
            spec.args = rest.to_vec();
        } else if self.file.is_none() {
            bail!("InvalidArgument: no command given; write it after `--`, e.g. `augur submit -- echo hello`");
        }
        if let Some(v) = self.name {
            spec.name = v;
        }
        if let Some(v) = self.priority {
            spec.priority = v;
        }
        if let Some(v) = self.timeout {
            spec.timeout = v;
        }
        if let Some(v) = self.retries {
            spec.retry.max_attempts = v.saturating_add(1);
        }
        if let Some(v) = self.backoff {
            spec.retry.initial_backoff = v;
        }
        if let Some(v) = self.max_backoff {
            spec.retry.max_backoff = v;
        }
        if let Some(v) = self.workdir {
            spec.working_dir = v;
        }
        if let Some(v) = self.slots {
            spec.resources.slots = v;
        }
        if let Some(v) = self.cpu {
            spec.resources.cpu_millis = v;
        }
        if let Some(v) = self.memory {
            spec.resources.memory_bytes = v;
        }
        spec.labels.extend(self.labels);
        spec.constraints.extend(self.constraints);
        spec.env.extend(self.env);
        Ok(spec)
    }
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Submitting twice with one key yields one job.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait for the job to end; exit 0 only if it succeeded (10 failed, 11 timed out, 12 cancelled).
    #[arg(long)]
    wait: bool,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Job id.
    id: String,
}

#[derive(Args, Debug)]
pub struct DrainArgs {
    /// Worker id.
    worker: String,
    /// Make the worker eligible for new work again.
    #[arg(long)]
    cancel: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only jobs in this state (repeatable).
    #[arg(long = "state")]
    states: Vec<String>,
    /// At most this many jobs (default: all).
    #[arg(long)]
    limit: Option<usize>,
}

fn cpu_quantity(text: &str) -> Result<u64, String> {
    augur_core::quantity::parse_cpu_millis(text).map_err(|e| e.to_string())
}

fn memory_quantity(text: &str) -> Result<u64, String> {
    augur_core::quantity::parse_memory_bytes(text).map_err(|e| e.to_string())
}

/// A duration flag's text, checked for what the CLI can tell: a negative one
/// is refused here (clap would otherwise suggest `-- -1s`, which makes it the
/// command); the coordinator checks the rest and names the spec field.
fn duration_text(text: &str) -> Result<String, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!(
            "{text:?}: durations cannot be negative (e.g. 30s, 10m)"
        ));
    }
    Ok(text.to_string())
}

pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

pub async fn connect(endpoint: &str) -> anyhow::Result<JobServiceClient<Conn>> {
    crate::connection::jobs(endpoint).await
}

/// An error for humans: gRPC statuses as "Code: message".
pub fn describe(err: &anyhow::Error) -> String {
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        return format!("{:?}: {}", status.code(), status.message());
    }
    format!("{err:#}")
}

fn read_spec_file(path: &PathBuf) -> anyhow::Result<JobSpecInput> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    let spec = if is_toml {
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("InvalidArgument: {}: {e}", path.display()))?
    } else {
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("InvalidArgument: {}: {e}", path.display()))?
    };
    Ok(spec)
}

pub async fn submit(endpoint: &str, output: Output, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let mut spec = args.job.into_spec()?;
    if let Some(v) = args.idempotency_key {
        spec.idempotency_key = v;
    }
    let mut client = connect(endpoint).await?;
    let response = client
        .submit_job(pb::SubmitJobRequest {
            spec: Some(spec.into()),
        })
        .await?
        .into_inner();
    println!("{}", response.job_id);
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let job = wait_for_end(&mut client, &response.job_id).await?;
    if output == Output::Json {
        println!("{}", render::job_json(&job));
    }
    let code = match pb::JobState::try_from(job.state) {
        Ok(pb::JobState::Succeeded) => 0,
        Ok(pb::JobState::TimedOut) => EXIT_TIMED_OUT,
        Ok(pb::JobState::Cancelled) => EXIT_CANCELLED,
        _ => EXIT_FAILED,
    };
    if code != 0 {
        eprintln!(
            "job {} ended {}: {}",
            job.id,
            render::state_name(job.state),
            job.message
        );
    }
    Ok(ExitCode::from(code))
}

async fn wait_for_end(client: &mut JobServiceClient<Conn>, id: &str) -> anyhow::Result<pb::Job> {
    let mut delay = Duration::from_millis(20);
    loop {
        let answer = client
            .get_job(pb::GetJobRequest {
                job_id: id.to_string(),
            })
            .await;
        let job = match answer {
            Ok(job) => job.into_inner(),
            // The job is accepted; a coordinator or etcd member going away
            // meanwhile is no reason to stop waiting for it.
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        if render::is_terminal(job.state) {
            return Ok(job);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

pub async fn get(endpoint: &str, output: Output, args: GetArgs) -> anyhow::Result<ExitCode> {
    let mut client = connect(endpoint).await?;
    let job = client
        .get_job(pb::GetJobRequest { job_id: args.id })
        .await?
        .into_inner();
    match output {
        Output::Json => println!("{}", render::job_json(&job)),
        Output::Table => print!("{}", render::job_detail(&job)),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(endpoint: &str, output: Output, args: ListArgs) -> anyhow::Result<ExitCode> {
    let states = args
        .states
        .iter()
        .map(|s| {
            s.parse::<JobState>()
                .map(|st| augur_coordinator::convert::state_to_pb(st) as i32)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("InvalidArgument: --state: {e}"))?;
    let mut client = connect(endpoint).await?;
    let mut jobs = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                states: states.clone(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        jobs.extend(page.jobs);
        if let Some(limit) = args.limit {
            if jobs.len() >= limit {
                jobs.truncate(limit);
                break;
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    match output {
        Output::Json => {
            let values: Vec<serde_json::Value> = jobs.iter().map(render::job_value).collect();
            println!("{}", serde_json::Value::Array(values));
        }
        Output::Table => print!("{}", render::job_table(&jobs)),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(endpoint: &str, output: Output, args: GetArgs) -> anyhow::Result<ExitCode> {
    let mut client = connect(endpoint).await?;
    let response = client
        .cancel_job(pb::CancelJobRequest { job_id: args.id })
        .await?
        .into_inner();
    let job = response
        .job
        .context("coordinator answered without the job")?;
    match output {
        Output::Json => println!("{}", render::job_json(&job)),
        Output::Table if job.cancel_requested && !render::is_terminal(job.state) => {
            println!(
                "{}: cancel requested (attempt {} is being stopped)",
                job.id, job.attempts
            )
        }
        Output::Table => println!("{}: {}", job.id, render::state_name(job.state)),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn workers(endpoint: &str, output: Output) -> anyhow::Result<ExitCode> {
    let mut client = connect(endpoint).await?;
    let workers = client
        .list_workers(pb::ListWorkersRequest {})
        .await?
        .into_inner()
        .workers;
    match output {
        Output::Json => {
            let values: Vec<serde_json::Value> = workers.iter().map(render::worker_value).collect();
            println!("{}", serde_json::Value::Array(values));
        }
        Output::Table => print!("{}", render::worker_table(&workers)),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cluster(endpoint: &str, output: Output) -> anyhow::Result<ExitCode> {
    let mut client = connect(endpoint).await?;
    let status = client
        .cluster_status(pb::ClusterStatusRequest {})
        .await?
        .into_inner();
    match output {
        Output::Json => println!("{}", render::cluster_value(&status)),
        Output::Table => {
            let leader = if status.leader.is_empty() {
                "(none)"
            } else {
                &status.leader
            };
            println!("leader:   {leader} {}", status.leader_address);
            println!("epoch:    {}", status.epoch);
            println!(
                "jobs:     {} pending, {} running",
                status.pending_jobs, status.running_jobs
            );
            println!("answered: {}", status.answered_by);
            print!("{}", render::worker_table(&status.workers));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn drain(endpoint: &str, output: Output, args: DrainArgs) -> anyhow::Result<ExitCode> {
    let mut client = connect(endpoint).await?;
    let response = client
        .drain_worker(pb::DrainWorkerRequest {
            worker_id: args.worker.clone(),
            cancel: args.cancel,
        })
        .await?
        .into_inner();
    match (output, response.worker) {
        (Output::Json, Some(w)) => println!("{}", render::worker_value(&w)),
        (_, Some(w)) if w.state == pb::WorkerState::Draining as i32 => {
            println!("{}: draining (no new jobs; running jobs finish)", w.id)
        }
        (_, Some(w)) => println!("{}: eligible for new jobs", w.id),
        (_, None) => println!("{}: no longer registered", args.worker),
    }
    Ok(ExitCode::SUCCESS)
}
