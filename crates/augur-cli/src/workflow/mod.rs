//! `augur workflow ...`: `validate` checks a file without a server; `submit`,
//! `get`, `list`, `cancel` and `retry` talk to a cluster's API.
//!
//! A file is always checked here before it is sent (`submit`, `schedule
//! create --workflow`): a bad file, an oversized one or an undeclared
//! `--param` is refused with exit 2 and nothing reaches the server.

mod show;
mod submit;

pub use submit::wait_for_end;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use augur_proto::v1 as pb;
use clap::{Args, Subcommand};

use crate::client::{connect, EXIT_CANCELLED, EXIT_FAILED, EXIT_TIMED_OUT};
use crate::Output;

/// Exit code for a file that is not a valid workflow (as clap's for bad flags).
pub const INVALID_INPUT: u8 = 2;

/// The run states `list --state` accepts (the proto's `WorkflowRun.state`).
const RUN_STATES: [&str; 5] = ["running", "succeeded", "failed", "cancelled", "timed_out"];

/// Input refused before anything was sent: `main` prints it and exits
/// [`INVALID_INPUT`]. Its text is the whole message (`InvalidArgument: ...`).
#[derive(Debug)]
pub struct InvalidInput(pub String);

impl std::fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

#[derive(Subcommand, Debug)]
pub enum WorkflowCommand {
    /// Check a workflow file (YAML, or JSON for *.json) without a server.
    Validate(ValidateArgs),
    /// Submit a workflow file; prints the run id.
    Submit(submit::SubmitArgs),
    /// Show one run and its task instances.
    Get(show::GetArgs),
    /// List runs, newest first.
    List(ListArgs),
    /// Cancel a run: its running jobs are cancelled, the rest skipped.
    Cancel(RunId),
    /// Re-run what failed in an ended run (or, --from T, T and its downstream).
    Retry(RetryArgs),
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The workflow file.
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct RunId {
    /// Run id.
    id: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only runs in this state.
    #[arg(long, value_parser = RUN_STATES)]
    state: Option<String>,
    /// At most this many runs (the server's default is 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: Option<u32>,
}

#[derive(Args, Debug)]
pub struct RetryArgs {
    /// Run id.
    id: String,
    /// Re-run this task and everything downstream of it (default: what failed).
    #[arg(long, value_name = "TASK")]
    from: Option<String>,
}

pub async fn run(
    endpoint: &str,
    output: Output,
    command: WorkflowCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        WorkflowCommand::Validate(args) => validate(&args.file),
        WorkflowCommand::Submit(args) => submit::submit(endpoint, output, args).await,
        WorkflowCommand::Get(args) => show::get(endpoint, output, args).await,
        WorkflowCommand::List(args) => list(endpoint, output, args).await,
        WorkflowCommand::Cancel(RunId { id }) => {
            let mut client = connect(endpoint).await?;
            let run = client
                .cancel_workflow(pb::CancelWorkflowRequest { run_id: id })
                .await?
                .into_inner();
            show::print_state(output, &run);
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::Retry(args) => {
            let mut client = connect(endpoint).await?;
            let run = client
                .retry_workflow(pb::RetryWorkflowRequest {
                    run_id: args.id,
                    from: args.from.unwrap_or_default(),
                })
                .await?
                .into_inner();
            show::print_state(output, &run);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn list(endpoint: &str, output: Output, args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut client = connect(endpoint).await?;
    let runs = client
        .list_workflows(pb::ListWorkflowsRequest {
            state: args.state.unwrap_or_default(),
            limit: args.limit.unwrap_or(0),
        })
        .await?
        .into_inner()
        .runs;
    match output {
        Output::Json => {
            let values: Vec<_> = runs.iter().map(|r| show::run_value(r, false)).collect();
            println!("{}", serde_json::Value::Array(values));
        }
        Output::Table => print!("{}", show::run_table(&runs)),
    }
    Ok(ExitCode::SUCCESS)
}

/// A workflow file read from disk and checked here.
pub struct LocalFile {
    /// The file name alone (it tells the server YAML from JSON).
    pub file_name: String,
    pub source: Vec<u8>,
    pub workflow: augur_workflow::Workflow,
}

/// Reads and checks a workflow file, and the `--param` overrides against its
/// declared params. I/O errors are plain errors (exit 1); a file that is too
/// large or invalid, or an undeclared param, is an [`InvalidInput`] (exit 2)
/// in `validate`'s format: `InvalidArgument: FILE: task "T": FIELD: reason`.
pub fn read_checked(path: &Path, params: &BTreeMap<String, String>) -> anyhow::Result<LocalFile> {
    let invalid = |e: &dyn std::fmt::Display| {
        anyhow::Error::new(InvalidInput(format!(
            "InvalidArgument: {}: {e}",
            path.display()
        )))
    };
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let limit = augur_workflow::file::MAX_FILE_BYTES;
    if let Ok(meta) = file.metadata() {
        if meta.is_file() && meta.len() > limit as u64 {
            return Err(invalid(&format!(
                "file: is {} bytes, the limit is {limit} (1 MiB)",
                meta.len()
            )));
        }
    }
    // Read one byte past the limit (a file that grew, or a pipe): the parser
    // refuses an oversized file without the whole of it being read.
    let mut source = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut source)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let workflow = augur_workflow::load(&file_name, &source).map_err(|e| invalid(&e))?;
    // The engine's own check of run params: undeclared ones are refused.
    augur_workflow::RunState::new(&workflow, params.clone(), "local-check", 0)
        .map_err(|e| invalid(&e))?;
    Ok(LocalFile {
        file_name,
        source,
        workflow,
    })
}

/// `--param k=v` flags as a map; a key given twice is refused.
pub fn params_map(pairs: Vec<(String, String)>) -> Result<BTreeMap<String, String>, InvalidInput> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if map.contains_key(&k) {
            return Err(InvalidInput(format!(
                "InvalidArgument: --param: {k:?} is given twice"
            )));
        }
        map.insert(k, v);
    }
    Ok(map)
}

/// The exit code for a run's final state, as `augur submit --wait` does for
/// jobs: 0 succeeded, 10 failed (and any state this CLI does not know), 11
/// timed out, 12 cancelled.
pub fn exit_code(state: &str) -> u8 {
    match state {
        "succeeded" => 0,
        "timed_out" => EXIT_TIMED_OUT,
        "cancelled" => EXIT_CANCELLED,
        _ => EXIT_FAILED,
    }
}

fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    match read_checked(path, &BTreeMap::new()) {
        Ok(local) => {
            println!("ok: {}", summary(&local.workflow));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e.downcast::<InvalidInput>() {
            Ok(invalid) => {
                eprintln!("error: {invalid}");
                Ok(ExitCode::from(INVALID_INPUT))
            }
            Err(e) => Err(e),
        },
    }
}

fn summary(w: &augur_workflow::Workflow) -> String {
    let finally = w.tasks.len() - w.dag_len;
    let fanned = w.tasks.iter().filter(|t| t.for_each.is_some()).count();
    let params: Vec<&str> = w.params.keys().map(String::as_str).collect();
    let params = if params.is_empty() {
        "none".to_string()
    } else {
        params.join(", ")
    };
    format!(
        "{} tasks ({finally} finally), {fanned} fanned out, workflow {:?}, params: {params}",
        w.tasks.len(),
        w.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/nightly-etl.yaml"
        ))
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The message of an [`InvalidInput`], or a panic for any other outcome.
    fn refusal(result: anyhow::Result<LocalFile>) -> String {
        match result {
            Ok(_) => panic!("accepted"),
            Err(e) => match e.downcast::<InvalidInput>() {
                Ok(invalid) => invalid.0,
                Err(e) => panic!("not an InvalidInput: {e:#}"),
            },
        }
    }

    #[test]
    fn the_example_validates_and_a_broken_file_exits_2() {
        assert!(matches!(validate(&example()), Ok(c) if c == ExitCode::SUCCESS));
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir else {
            panic!("no temp dir")
        };
        let bad = dir.path().join("bad.yaml");
        assert!(std::fs::write(
            &bad,
            "name: t\ntasks:\n- {name: a, depends_on: [a], command: [x]}\n"
        )
        .is_ok());
        assert!(matches!(validate(&bad), Ok(c) if c == ExitCode::from(INVALID_INPUT)));
        assert!(validate(&dir.path().join("missing.yaml")).is_err());
    }

    #[test]
    fn a_file_is_checked_with_its_params_before_anything_is_sent() {
        let ok = read_checked(&example(), &params(&[("mode", "partial")])).expect("valid");
        assert_eq!(ok.file_name, "nightly-etl.yaml");
        assert_eq!(ok.workflow.name, "nightly-etl");
        assert!(!ok.source.is_empty());

        let undeclared = refusal(read_checked(&example(), &params(&[("nope", "1")])));
        assert!(undeclared.starts_with("InvalidArgument: "), "{undeclared}");
        assert!(
            undeclared.ends_with(
                "nightly-etl.yaml: params: \"nope\" is not a parameter of workflow \"nightly-etl\""
            ),
            "{undeclared}"
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; augur_workflow::file::MAX_FILE_BYTES + 10]).expect("write");
        let too_big = refusal(read_checked(&big, &BTreeMap::new()));
        assert!(
            too_big.ends_with("big.yaml: file: is 1048586 bytes, the limit is 1048576 (1 MiB)"),
            "{too_big}"
        );

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "name: t\ntasks:\n- {name: a, command: []}\n").expect("write");
        let message = refusal(read_checked(&bad, &BTreeMap::new()));
        assert!(message.contains("bad.yaml: task \"a\": "), "{message}");

        // A missing file is an I/O error (exit 1), not an invalid one.
        let missing = read_checked(&dir.path().join("missing.yaml"), &BTreeMap::new());
        assert!(matches!(missing, Err(e) if e.downcast_ref::<InvalidInput>().is_none()));
    }

    #[test]
    fn params_given_twice_are_refused() {
        let pairs = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "x=y".to_string()),
        ];
        assert_eq!(
            params_map(pairs).expect("distinct keys"),
            params(&[("a", "1"), ("b", "x=y")])
        );
        let twice = vec![
            ("a".to_string(), "1".to_string()),
            ("a".to_string(), "2".to_string()),
        ];
        let e = params_map(twice).expect_err("a key twice");
        assert_eq!(e.0, "InvalidArgument: --param: \"a\" is given twice");
    }

    #[test]
    fn run_states_map_to_the_exit_codes_of_submit_wait() {
        assert_eq!(exit_code("succeeded"), 0);
        assert_eq!(exit_code("failed"), 10);
        assert_eq!(exit_code("timed_out"), 11);
        assert_eq!(exit_code("cancelled"), 12);
        assert_eq!(exit_code("something-new"), 10);
        assert_eq!((EXIT_FAILED, EXIT_TIMED_OUT, EXIT_CANCELLED), (10, 11, 12));
    }
}
