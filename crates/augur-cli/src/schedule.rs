//! `augur schedule create|list|delete|pause|resume`: periodic jobs.

use std::process::ExitCode;

use augur_proto::v1 as pb;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::client::{connect, JobArgs};
use crate::Output;

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Create a schedule: NAME --cron EXPR [job flags] -- CMD [ARGS...].
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
    #[command(flatten)]
    job: JobArgs,
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
            println!("{}: {} ({state}; next tick {next})", s.name, s.cron);
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
            let args = *args;
            let spec = args.job.into_spec()?;
            let created = client
                .create_schedule(pb::CreateScheduleRequest {
                    name: args.schedule,
                    cron: args.cron,
                    spec: Some(spec.into()),
                    missed: args.missed,
                })
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
                        let spec = s.spec.clone().unwrap_or_default();
                        println!(
                            "{:<24}  {:<20}  {:<7}  {:<9}  {:<25}  {} {}",
                            s.name,
                            s.cron,
                            if s.paused { "paused" } else { "active" },
                            s.missed,
                            v["next_tick"].as_str().unwrap_or("-"),
                            spec.command,
                            spec.args.join(" ")
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
