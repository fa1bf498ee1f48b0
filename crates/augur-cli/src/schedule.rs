//! `augur schedule create|list|delete|pause|resume`: periodic jobs, or
//! periodic runs of a workflow (`create --workflow FILE`).

use std::path::PathBuf;
use std::process::ExitCode;

use augur_proto::v1 as pb;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::client::{connect, parse_key_value, JobArgs};
use crate::Output;

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Create a schedule: NAME --cron EXPR [job flags] -- CMD [ARGS...], or
    /// NAME --cron EXPR --workflow FILE [--param k=v]...
    Create(Box<CreateArgs>),
    /// List schedules with their last and next ticks.
    List,
    /// Delete a schedule (jobs it already started are not affected).
    Delete(NameArg),
    /// Stop firing a schedule.
    Pause(NameArg),
    /// Fire a paused schedule again, from the next tick on.
    Resume(NameArg),
}

#[derive(Args, Debug)]
pub struct NameArg {
    name: String,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Schedule name ([A-Za-z0-9._-]).
    #[arg(value_name = "NAME")]
    schedule: String,
    /// Cron expression in UTC: "MIN HOUR DAY MONTH WEEKDAY", or six fields
    /// with seconds first ("*/10 * * * * *").
    #[arg(long)]
    cron: String,
    /// Ticks missed while no leader existed: fire-once (the latest) or skip.
    #[arg(long, default_value = "fire-once")]
    missed: String,
    /// Run this workflow file at each tick instead of a job (checked here
    /// first; no job flags, spec file or command with it).
    #[arg(long, value_name = "FILE", conflicts_with_all = JOB_ARGS)]
    workflow: Option<PathBuf>,
    /// Override a parameter of the --workflow, k=v (repeatable).
    #[arg(long = "param", value_name = "K=V", value_parser = parse_key_value, requires = "workflow")]
    params: Vec<(String, String)>,
    #[command(flatten)]
    job: JobArgs,
}

/// The ids of [`JobArgs`]' flags and command, which describe a job and so
/// conflict with `--workflow`.
const JOB_ARGS: [&str; 15] = [
    "name",
    "priority",
    "timeout",
    "retries",
    "backoff",
    "max_backoff",
    "labels",
    "constraints",
    "env",
    "workdir",
    "slots",
    "cpu",
    "memory",
    "file",
    "command",
];

impl CreateArgs {
    /// The request these flags describe: the workflow file is read and
    /// checked here, a job spec by the server.
    fn into_request(self) -> anyhow::Result<pb::CreateScheduleRequest> {
        let mut request = pb::CreateScheduleRequest {
            name: self.schedule,
            cron: self.cron,
            missed: self.missed,
            ..Default::default()
        };
        match self.workflow {
            Some(path) => {
                let params = crate::workflow::params_map(self.params)?;
                let local = crate::workflow::read_checked(&path, &params)?;
                request.workflow_source = local.source;
                request.workflow_file_name = local.file_name;
                request.workflow_params = params.into_iter().collect();
            }
            // clap's `requires` is not checked when a job command is given
            // too (it conflicts with --workflow), so it is checked here.
            None if !self.params.is_empty() => {
                return Err(crate::workflow::InvalidInput(
                    "InvalidArgument: --param: is only for --workflow schedules".to_string(),
                )
                .into())
            }
            None => request.spec = Some(self.job.into_spec()?.into()),
        }
        Ok(request)
    }
}

/// The table's COMMAND column: the command line, or `workflow NAME`.
fn runs_text(s: &pb::Schedule) -> String {
    if !s.workflow.is_empty() {
        return format!("workflow {}", s.workflow);
    }
    let spec = s.spec.clone().unwrap_or_default();
    format!("{} {}", spec.command, spec.args.join(" "))
        .trim_end()
        .to_string()
}

fn schedule_value(s: &pb::Schedule) -> serde_json::Value {
    let time = |ms: i64| {
        (ms > 0).then(|| {
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
            )
            .to_string()
        })
    };
    let spec = s.spec.clone().unwrap_or_default();
    json!({
        "name": s.name,
        "cron": s.cron,
        "paused": s.paused,
        "missed": s.missed,
        "workflow": (!s.workflow.is_empty()).then_some(&s.workflow),
        "command": spec.command,
        "args": spec.args,
        "created_at": time(s.created_at_ms),
        "last_tick": time(s.last_tick_ms),
        "next_tick": time(s.next_tick_ms),
        "owner": (!s.owner.is_empty()).then_some(&s.owner),
    })
}

fn print_one(output: Output, s: &pb::Schedule) {
    match output {
        Output::Json => println!("{}", schedule_value(s)),
        Output::Table => {
            let v = schedule_value(s);
            let next = v["next_tick"].as_str().unwrap_or("-");
            let state = if s.paused { "paused" } else { "active" };
            let workflow = if s.workflow.is_empty() {
                String::new()
            } else {
                format!("; workflow {}", s.workflow)
            };
            println!(
                "{}: {} ({state}; next tick {next}{workflow})",
                s.name, s.cron
            );
        }
    }
}

pub async fn run(
    endpoint: &str,
    output: Output,
    command: ScheduleCommand,
) -> anyhow::Result<ExitCode> {
    let mut client = connect(endpoint).await?;
    match command {
        ScheduleCommand::Create(args) => {
            let created = client
                .create_schedule(args.into_request()?)
                .await?
                .into_inner();
            print_one(output, &created);
        }
        ScheduleCommand::List => {
            let list = client
                .list_schedules(pb::ListSchedulesRequest {})
                .await?
                .into_inner();
            match output {
                Output::Json => {
                    let values: Vec<_> = list.schedules.iter().map(schedule_value).collect();
                    println!("{}", serde_json::Value::Array(values));
                }
                Output::Table => {
                    println!(
                        "{:<24}  {:<20}  {:<7}  {:<9}  {:<25}  COMMAND",
                        "NAME", "CRON", "STATE", "MISSED", "NEXT TICK"
                    );
                    for s in &list.schedules {
                        let v = schedule_value(s);
                        println!(
                            "{:<24}  {:<20}  {:<7}  {:<9}  {:<25}  {}",
                            s.name,
                            s.cron,
                            if s.paused { "paused" } else { "active" },
                            s.missed,
                            v["next_tick"].as_str().unwrap_or("-"),
                            runs_text(s)
                        );
                    }
                }
            }
        }
        ScheduleCommand::Delete(NameArg { name }) => {
            client
                .delete_schedule(pb::DeleteScheduleRequest { name: name.clone() })
                .await?;
            println!("{name}: deleted");
        }
        ScheduleCommand::Pause(NameArg { name }) => {
            let s = client
                .pause_schedule(pb::PauseScheduleRequest { name, paused: true })
                .await?
                .into_inner();
            print_one(output, &s);
        }
        ScheduleCommand::Resume(NameArg { name }) => {
            let s = client
                .pause_schedule(pb::PauseScheduleRequest {
                    name,
                    paused: false,
                })
                .await?
                .into_inner();
            print_one(output, &s);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: ScheduleCommand,
    }

    fn parse(args: &[&str]) -> Result<CreateArgs, clap::Error> {
        let mut full = vec!["schedule", "create", "s", "--cron", "* * * * *"];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full)?.command {
            ScheduleCommand::Create(args) => Ok(*args),
            other => panic!("not create: {other:?}"),
        }
    }

    #[test]
    fn a_workflow_schedule_takes_params_and_no_job_flags() {
        let args = parse(&["--workflow", "wf.yaml", "--param", "a=b"]).expect("parses");
        assert_eq!(args.workflow, Some(PathBuf::from("wf.yaml")));
        assert_eq!(args.params, [("a".to_string(), "b".to_string())]);
        for bad in [
            &["--workflow", "wf.yaml", "--", "echo", "hi"][..],
            &["--workflow", "wf.yaml", "--file", "spec.json"],
            &["--workflow", "wf.yaml", "--priority", "3"],
            &["--workflow", "wf.yaml", "--env", "A=1"],
            &["--param", "a=b"],
            &["--workflow", "wf.yaml", "--param", "ab"],
        ] {
            let e = parse(bad).expect_err("refused");
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
        // Past clap (see `into_request`), still refused before sending.
        let args = parse(&["--param", "a=b", "--", "echo", "hi"]).expect("parses");
        let e = args.into_request().expect_err("refused");
        assert_eq!(
            e.downcast_ref::<crate::workflow::InvalidInput>()
                .map(|e| e.0.as_str()),
            Some("InvalidArgument: --param: is only for --workflow schedules")
        );
        let job = parse(&["--", "echo", "hi"]).expect("parses");
        let request = job.into_request().expect("a job schedule");
        assert_eq!(request.spec.map(|s| s.command).as_deref(), Some("echo"));
        assert!(request.workflow_source.is_empty());
    }

    #[test]
    fn a_workflow_schedule_sends_the_checked_file_and_its_params() {
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/nightly-etl.yaml"
        );
        let args = parse(&["--workflow", example, "--param", "mode=partial"]).expect("parses");
        let request = args.into_request().expect("valid");
        assert!(request.spec.is_none());
        assert_eq!(request.workflow_file_name, "nightly-etl.yaml");
        assert_eq!(
            request.workflow_source,
            std::fs::read(example).expect("the example")
        );
        assert_eq!(
            request.workflow_params.get("mode").map(String::as_str),
            Some("partial")
        );
        let args = parse(&["--workflow", example, "--param", "nope=1"]).expect("parses");
        let e = args.into_request().expect_err("undeclared");
        assert!(e.downcast_ref::<crate::workflow::InvalidInput>().is_some());
    }

    #[test]
    fn workflow_schedules_show_their_workflow() {
        let s = pb::Schedule {
            name: "nightly".into(),
            workflow: "nightly-etl".into(),
            ..Default::default()
        };
        assert_eq!(runs_text(&s), "workflow nightly-etl");
        assert_eq!(schedule_value(&s)["workflow"], "nightly-etl");
        let job = pb::Schedule {
            spec: Some(pb::JobSpec {
                command: "echo".into(),
                args: vec!["hi".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(runs_text(&job), "echo hi");
        assert_eq!(schedule_value(&job)["workflow"], serde_json::Value::Null);
    }
}
