//! `augur workflow submit FILE [--param k=v]... [--idempotency-key K] [--wait]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use augur_proto::v1 as pb;
use augur_proto::v1::job_service_client::JobServiceClient;
use clap::Args;

use super::{exit_code, params_map, read_checked, show};
use crate::client::{connect, parse_key_value};
use crate::connection::Conn;
use crate::Output;

/// First and longest pause between two reads of a run being waited for.
const FIRST_POLL: Duration = Duration::from_millis(200);
const LONGEST_POLL: Duration = Duration::from_secs(1);
/// How long a run just submitted may be unknown to the coordinator answering
/// (another coordinator took the submission) before waiting gives up.
const NOT_FOUND_GRACE: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The workflow file (YAML, or JSON for *.json; at most 1 MiB).
    file: PathBuf,
    /// Override a declared parameter, k=v (repeatable).
    #[arg(long = "param", value_name = "K=V", value_parser = parse_key_value)]
    params: Vec<(String, String)>,
    /// Submitting twice with one key yields one run.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait for the run to end; exit 0 only if it succeeded (10 failed, 11 timed out, 12 cancelled).
    #[arg(long)]
    wait: bool,
}

pub async fn submit(endpoint: &str, output: Output, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let params = params_map(args.params)?;
    let local = read_checked(&args.file, &params)?;
    let mut client = connect(endpoint).await?;
    let response = client
        .submit_workflow(pb::SubmitWorkflowRequest {
            source: local.source,
            file_name: local.file_name,
            params: params.into_iter().collect(),
            idempotency_key: args.idempotency_key.unwrap_or_default(),
        })
        .await?
        .into_inner();
    println!("{}", response.run_id);
    if response.existing {
        eprintln!(
            "{}: an existing run of this idempotency key (nothing new was submitted)",
            response.run_id
        );
    }
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let run = wait_for_end(&mut client, &response.run_id).await?;
    if output == Output::Json {
        println!("{}", show::run_value(&run, true));
    }
    let code = exit_code(&run.state);
    if code != 0 {
        eprintln!("{}", show::ending(&run));
    }
    Ok(ExitCode::from(code))
}

/// The next pause: doubled, at most [`LONGEST_POLL`].
fn next_delay(delay: Duration) -> Duration {
    (delay * 2).min(LONGEST_POLL)
}

/// Reads the run until its state is not `running`.
pub async fn wait_for_end(
    client: &mut JobServiceClient<Conn>,
    id: &str,
) -> anyhow::Result<pb::WorkflowRun> {
    let started = Instant::now();
    let mut delay = FIRST_POLL;
    loop {
        let answer = client
            .get_workflow(pb::GetWorkflowRequest {
                run_id: id.to_string(),
            })
            .await;
        match answer {
            Ok(run) => {
                let run = run.into_inner();
                if run.state != "running" {
                    return Ok(run);
                }
            }
            // The run is accepted; a coordinator or etcd member going away
            // meanwhile is no reason to stop waiting for it.
            Err(status) if status.code() == tonic::Code::Unavailable => {}
            Err(status)
                if status.code() == tonic::Code::NotFound
                    && started.elapsed() < NOT_FOUND_GRACE => {}
            Err(status) => return Err(status.into()),
        }
        tokio::time::sleep(delay).await;
        delay = next_delay(delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: SubmitArgs,
    }

    #[test]
    fn params_are_key_value_flags() {
        let cli = Cli::try_parse_from([
            "submit", "wf.yaml", "--param", "dir=/tmp", "--param", "q=a=b", "--param", "empty=",
            "--wait",
        ])
        .expect("parses");
        assert_eq!(
            cli.args.params,
            [
                ("dir".to_string(), "/tmp".to_string()),
                ("q".to_string(), "a=b".to_string()),
                ("empty".to_string(), String::new()),
            ]
        );
        assert!(cli.args.wait);
        assert_eq!(cli.args.file, PathBuf::from("wf.yaml"));

        // No `=`, or no key: a flag error, which exits 2 as clap's do.
        for bad in ["dir", "=x"] {
            let e =
                Cli::try_parse_from(["submit", "wf.yaml", "--param", bad]).expect_err("not k=v");
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("is not KEY=VALUE"), "{e}");
        }
    }

    #[test]
    fn polling_backs_off_from_200_ms_to_1_s() {
        let mut delay = FIRST_POLL;
        let mut seen = vec![delay];
        for _ in 0..5 {
            delay = next_delay(delay);
            seen.push(delay);
        }
        let ms: Vec<u128> = seen.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [200, 400, 800, 1000, 1000, 1000]);
    }
}
