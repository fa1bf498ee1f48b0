//! Learned placement from the command line: `augur runs export`, `augur tune`,
//! `augur model` and `augur placement show|set`.
//!
//! `tune` runs locally (the simulator and the predictors are pure library code
//! in `augur-placement`); only `--apply` talks to the cluster. Errors read
//! `<gRPC code>: <message>` like every other subcommand's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::connection::Conn;
use anyhow::{anyhow, Context};
use augur_core::RunRecord;
use augur_placement::import::{read_jsonl, read_swf};
use augur_placement::{
    parse_workers, render_svg, render_table, tune, PlacementConfig, TuneOptions,
};
use augur_proto::v1 as pb;
use augur_proto::v1::placement_service_client::PlacementServiceClient;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::Output;

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// Write recorded runs as JSON lines (oldest first): `augur runs export > runs.jsonl`.
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Only runs that finished since then: an RFC 3339 time
    /// (2024-05-01T12:00:00Z) or a duration ago (24h, 30m).
    #[arg(long)]
    since: Option<String>,
    /// At most this many runs (the oldest that match).
    #[arg(long)]
    limit: Option<u64>,
}

/// Input format of `tune --runs`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum TraceFormat {
    /// JSON lines of run records (`augur runs export`).
    Jsonl,
    /// Standard Workload Format (Parallel Workloads Archive).
    Swf,
}

impl TraceFormat {
    fn name(self) -> &'static str {
        match self {
            TraceFormat::Jsonl => "jsonl",
            TraceFormat::Swf => "swf",
        }
    }
}

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Recorded runs: JSONL from `augur runs export` or an SWF trace, plain or gzip.
    #[arg(long)]
    runs: PathBuf,
    /// Input format; by default swf for *.swf and *.swf.gz, jsonl otherwise.
    #[arg(long, value_enum)]
    format: Option<TraceFormat>,
    /// Simulated workers as COUNTxSPEED[:SLOTS],... (default 8x1,4x2,4x4).
    #[arg(long)]
    workers: Option<String>,
    /// Offered load the arrivals are rescaled to (default 0.8).
    #[arg(long, allow_negative_numbers = true)]
    load: Option<f64>,
    /// Chooses the sampled window (default 1); simulations are deterministic.
    #[arg(long)]
    seed: Option<u64>,
    /// Replay at most N consecutive jobs (by submission), to keep it quick.
    #[arg(long)]
    max_jobs: Option<usize>,
    /// Also simulate `predictive` with these aging rates (comma-separated,
    /// each in (0, 100]); the best one is recommended (and stored by --apply).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    aging_rates: Vec<f64>,
    /// Write an SVG plot of prediction error and job completion time per policy.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Store the recommended configuration in the cluster at --endpoint; the
    /// leader applies it live.
    #[arg(long)]
    apply: bool,
}

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// With --output json, include the model itself.
    #[arg(long)]
    include_model: bool,
}

#[derive(Subcommand, Debug)]
pub enum PlacementCommand {
    /// Show the placement configuration in force.
    Show,
    /// Change the placement configuration (other fields keep their values).
    Set(SetArgs),
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// round-robin, least-loaded, fifo-fastest-idle or predictive.
    #[arg(long)]
    policy: Option<String>,
    /// Seconds of predicted runtime forgiven per second waited (> 0).
    #[arg(long, allow_negative_numbers = true)]
    aging_rate: Option<f64>,
    /// A running job past its prediction is assumed to need this many times its
    /// elapsed time in total (>= 1).
    #[arg(long, allow_negative_numbers = true)]
    overrun_factor: Option<f64>,
}

async fn connect(endpoint: &str) -> anyhow::Result<PlacementServiceClient<Conn>> {
    crate::connection::placement(endpoint).await
}

fn time_value(ms: i64) -> Value {
    if ms <= 0 {
        return Value::Null;
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    Value::String(humantime::format_rfc3339_millis(t).to_string())
}

/// `--since`: an RFC 3339 time, or a duration before `now` ("24h", "24h ago").
pub fn parse_since(text: &str, now: SystemTime) -> Result<i64, String> {
    let trimmed = text.trim();
    let at = if let Ok(t) = humantime::parse_rfc3339_weak(trimmed) {
        t
    } else if let Ok(d) = humantime::parse_duration(trimmed.trim_end_matches("ago").trim()) {
        now.checked_sub(d)
            .ok_or_else(|| format!("--since {text:?}: reaches before the Unix epoch"))?
    } else {
        return Err(format!(
            "--since {text:?}: neither an RFC 3339 time (2024-05-01T12:00:00Z) nor a duration ago (24h, 30m)"
        ));
    };
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("--since {text:?}: is before the Unix epoch"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| format!("--since {text:?}: is too far in the future"))
}

pub async fn runs(endpoint: &str, command: RunsCommand) -> anyhow::Result<ExitCode> {
    let RunsCommand::Export(args) = command;
    let since_ms = match &args.since {
        Some(text) => {
            parse_since(text, SystemTime::now()).map_err(|e| anyhow!("InvalidArgument: {e}"))?
        }
        None => 0,
    };
    let mut client = connect(endpoint).await?;
    let mut stream = client
        .export_runs(pb::ExportRunsRequest {
            since_ms,
            limit: args.limit.unwrap_or(0),
        })
        .await?
        .into_inner();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut count = 0u64;
    while let Some(record) = stream.message().await? {
        let written = out
            .write_all(record.json.as_bytes())
            .and_then(|()| out.write_all(b"\n"));
        match written {
            Ok(()) => count += 1,
            // The reader went away (`| head`): not an error of ours.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(anyhow!("Internal: writing to stdout: {e}")),
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(anyhow!("Internal: writing to stdout: {e}"))
        }
        _ => {}
    }
    eprintln!("exported {count} runs");
    Ok(ExitCode::SUCCESS)
}

/// The gRPC-style code of a local file error.
fn io_code(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::NotFound => "NotFound",
        std::io::ErrorKind::PermissionDenied => "PermissionDenied",
        _ => "InvalidArgument",
    }
}

fn detect_format(path: &Path) -> TraceFormat {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.ends_with(".swf") || name.ends_with(".swf.gz") {
        TraceFormat::Swf
    } else {
        TraceFormat::Jsonl
    }
}

/// Reads the runs of `tune --runs` (blocking).
fn read_runs(path: &Path, format: TraceFormat) -> anyhow::Result<Vec<RunRecord>> {
    let shown = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| anyhow!("{}: --runs {shown}: {e}", io_code(&e)))?;
    let records = match format {
        TraceFormat::Swf => read_swf(file).map(|trace| trace.records),
        TraceFormat::Jsonl => read_jsonl(file),
    }
    .map_err(|e| {
        let other = match format {
            TraceFormat::Swf => "jsonl",
            TraceFormat::Jsonl => "swf",
        };
        anyhow!(
            "InvalidArgument: --runs {shown} (read as {}): {e} (if it is {other}, say --format {other})",
            format.name()
        )
    })?;
    if records.is_empty() {
        return Err(anyhow!(
            "InvalidArgument: --runs {shown}: holds no runs with a known runtime"
        ));
    }
    Ok(records)
}

/// The current configuration, its revision, and whether it is the default.
async fn current_config(
    client: &mut PlacementServiceClient<Conn>,
) -> anyhow::Result<(Value, i64, bool)> {
    let reply = client
        .get_placement_config(pb::GetPlacementConfigRequest {})
        .await?
        .into_inner();
    let value: Value = serde_json::from_str(&reply.json).map_err(|e| {
        anyhow!("Internal: the coordinator sent a configuration that is not JSON: {e}")
    })?;
    Ok((value, reply.revision, reply.is_default))
}

pub async fn tune_runs(endpoint: &str, output: Output, args: TuneArgs) -> anyhow::Result<ExitCode> {
    let defaults = TuneOptions::default();
    let mut options = TuneOptions {
        workers: args.workers.clone().unwrap_or(defaults.workers.clone()),
        load: args.load.unwrap_or(defaults.load),
        seed: args.seed.unwrap_or(defaults.seed),
        max_jobs: args.max_jobs,
        aging_rates: args.aging_rates.clone(),
        ..defaults
    };
    augur_placement::tune::check_aging_rates(&options.aging_rates)
        .map_err(|e| anyhow!("InvalidArgument: --aging-rates: {e}"))?;
    parse_workers(&options.workers).map_err(|e| anyhow!("InvalidArgument: --workers: {e}"))?;
    if !(options.load.is_finite() && options.load > 0.0) {
        return Err(anyhow!(
            "InvalidArgument: --load: must be a positive number, got {}",
            options.load
        ));
    }
    if options.max_jobs == Some(0) {
        return Err(anyhow!("InvalidArgument: --max-jobs: must be at least 1"));
    }
    // With --apply, reach the cluster before spending time on the replay, and
    // simulate with its settings (aging, overrun correction) so the result is
    // what it would run.
    let mut apply = None;
    if args.apply {
        let mut client = connect(endpoint).await?;
        let (value, revision, _) = current_config(&mut client).await?;
        options.placement = serde_json::from_value::<PlacementConfig>(value).map_err(|e| {
            anyhow!("Internal: the cluster's placement configuration does not parse: {e}")
        })?;
        apply = Some((client, revision));
    }
    let format = args.format.unwrap_or_else(|| detect_format(&args.runs));
    let path = args.runs.clone();
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let records = read_runs(&path, format)?;
        tune(&records, &options).map_err(|e| anyhow!("InvalidArgument: {e}"))
    })
    .await
    .map_err(|e| anyhow!("Internal: the replay task failed: {e}"))??;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("Internal: encoding the report")?
        ),
        Output::Table => print!("{}", render_table(&report)),
    }
    if let Some(plot) = &args.plot {
        std::fs::write(plot, render_svg(&report))
            .map_err(|e| anyhow!("{}: --plot {}: {e}", io_code(&e), plot.display()))?;
        eprintln!("wrote {}", plot.display());
    }
    if let Some((mut client, revision)) = apply {
        let config = &report.recommended.config;
        let reply = client
            .set_placement_config(pb::SetPlacementConfigRequest {
                json: serde_json::to_string(config)
                    .context("Internal: encoding the configuration")?,
                expected_revision: Some(revision),
            })
            .await?
            .into_inner();
        eprintln!(
            "applied: placement policy {} (revision {}); the leader applies it live",
            config.policy, reply.revision
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn model(endpoint: &str, output: Output, args: ModelArgs) -> anyhow::Result<ExitCode> {
    let mut client = connect(endpoint).await?;
    let info = client
        .get_model(pb::GetModelRequest {
            include_model: args.include_model && output == Output::Json,
        })
        .await?
        .into_inner();
    let metrics: Value = serde_json::from_str(&info.metrics_json)
        .unwrap_or(Value::String(info.metrics_json.clone()));
    match output {
        Output::Json => {
            let mut value = json!({
                "version": info.version,
                "trained_at": time_value(info.trained_at_ms),
                "trained_at_ms": info.trained_at_ms,
                "training_runs": info.training_runs,
                "metrics": metrics,
            });
            if !info.model_json.is_empty() {
                value["model"] = serde_json::from_str(&info.model_json)
                    .unwrap_or(Value::String(info.model_json.clone()));
            }
            println!("{value}");
        }
        Output::Table => {
            println!("version:        {}", info.version);
            println!(
                "trained at:     {}",
                time_value(info.trained_at_ms).as_str().unwrap_or("-")
            );
            println!("training runs:  {}", info.training_runs);
            match &metrics {
                Value::Object(fields) if !fields.is_empty() => {
                    println!("metrics:");
                    for (name, value) in fields {
                        println!("  {name:<20} {value}");
                    }
                }
                Value::Object(_) | Value::Null => println!("metrics:        -"),
                other => println!("metrics:        {other}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_config(output: Output, reply: &pb::PlacementConfigJson) -> anyhow::Result<()> {
    let config: Value = serde_json::from_str(&reply.json).map_err(|e| {
        anyhow!("Internal: the coordinator sent a configuration that is not JSON: {e}")
    })?;
    match output {
        Output::Json => println!(
            "{}",
            json!({"config": config, "revision": reply.revision, "default": reply.is_default})
        ),
        Output::Table => {
            let field = |name: &str| config.get(name).cloned().unwrap_or(Value::Null);
            let policy = field("policy");
            println!("policy:          {}", policy.as_str().unwrap_or("-"));
            println!("aging rate:      {}", field("aging_rate"));
            println!("overrun factor:  {}", field("overrun_factor"));
            let predictor = field("predictor");
            println!(
                "cold start:      below {} runs of history, fallback {}",
                predictor.get("min_history").cloned().unwrap_or(Value::Null),
                predictor
                    .get("fallback")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
            );
            if reply.is_default {
                println!("revision:        none stored (defaults)");
            } else {
                println!("revision:        {}", reply.revision);
            }
        }
    }
    Ok(())
}

/// Attempts of `placement set` when another writer gets in between.
const SET_ATTEMPTS: usize = 5;

pub async fn placement(
    endpoint: &str,
    output: Output,
    command: PlacementCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        PlacementCommand::Show => {
            let mut client = connect(endpoint).await?;
            let reply = client
                .get_placement_config(pb::GetPlacementConfigRequest {})
                .await?
                .into_inner();
            print_config(output, &reply)?;
        }
        PlacementCommand::Set(args) => {
            if args.policy.is_none() && args.aging_rate.is_none() && args.overrun_factor.is_none() {
                return Err(anyhow!(
                    "InvalidArgument: nothing to set; give --policy, --aging-rate or --overrun-factor"
                ));
            }
            let mut client = connect(endpoint).await?;
            let mut attempt = 0;
            let reply = loop {
                attempt += 1;
                // Read-modify-write guarded by the revision read, so a
                // concurrent change is never silently overwritten.
                let (mut value, revision, _) = current_config(&mut client).await?;
                if let Some(policy) = &args.policy {
                    value["policy"] = json!(policy);
                }
                if let Some(rate) = args.aging_rate {
                    value["aging_rate"] = json!(rate);
                }
                if let Some(factor) = args.overrun_factor {
                    value["overrun_factor"] = json!(factor);
                }
                let result = client
                    .set_placement_config(pb::SetPlacementConfigRequest {
                        json: value.to_string(),
                        expected_revision: Some(revision),
                    })
                    .await;
                match result {
                    Ok(reply) => break reply.into_inner(),
                    Err(status)
                        if status.code() == tonic::Code::FailedPrecondition
                            && attempt < SET_ATTEMPTS => {}
                    Err(status) => return Err(status.into()),
                }
            };
            print_config(output, &reply)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_durations_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(100_000);
        assert_eq!(parse_since("24h", now), Ok((100_000 - 86_400) * 1000));
        assert_eq!(parse_since("30m ago", now), Ok((100_000 - 1_800) * 1000));
        assert_eq!(parse_since("1970-01-02T00:00:00Z", now), Ok(86_400_000));
        assert!(parse_since("48h", now).is_err(), "before the epoch");
        let err = parse_since("yesterday", now).expect_err("not a time");
        assert!(err.starts_with("--since \"yesterday\""), "{err}");
    }

    #[test]
    fn format_follows_the_file_name() {
        assert_eq!(detect_format(Path::new("a/KTH.swf.gz")), TraceFormat::Swf);
        assert_eq!(detect_format(Path::new("trace.SWF")), TraceFormat::Swf);
        assert_eq!(
            detect_format(Path::new("runs.jsonl.gz")),
            TraceFormat::Jsonl
        );
        assert_eq!(detect_format(Path::new("runs")), TraceFormat::Jsonl);
    }
}
