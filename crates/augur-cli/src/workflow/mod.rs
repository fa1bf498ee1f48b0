//! `augur workflow ...`: so far only `validate`, which needs no server.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

/// Exit code for a file that is not a valid workflow (as clap's for bad flags).
const INVALID_INPUT: u8 = 2;

#[derive(Subcommand, Debug)]
pub enum WorkflowCommand {
    /// Check a workflow file (YAML, or JSON for *.json) without a server.
    Validate(ValidateArgs),
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The workflow file.
    pub file: PathBuf,
}

pub fn run(command: WorkflowCommand) -> anyhow::Result<ExitCode> {
    match command {
        WorkflowCommand::Validate(args) => validate(&args.file),
    }
}

fn validate(path: &PathBuf) -> anyhow::Result<ExitCode> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    // Read one byte past the limit: the parser refuses an oversized file
    // without the whole of it being read.
    let mut bytes = Vec::new();
    file.take(augur_workflow::file::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match augur_workflow::load(name, &bytes) {
        Ok(w) => {
            println!("ok: {}", summary(&w));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: InvalidArgument: {}: {e}", path.display());
            Ok(ExitCode::from(INVALID_INPUT))
        }
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

    #[test]
    fn the_example_validates_and_a_broken_file_exits_2() {
        let example = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/nightly-etl.yaml"
        ));
        assert!(matches!(validate(&example), Ok(c) if c == ExitCode::SUCCESS));
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
}
