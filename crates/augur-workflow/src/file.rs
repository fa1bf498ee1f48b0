//! The workflow file as a user writes it (YAML, or the same structure as
//! JSON). Unknown fields are refused everywhere; nothing here is checked
//! beyond its shape: [`crate::validate`] turns a [`WorkflowFile`] into a
//! checked [`crate::Workflow`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// Largest workflow file accepted; larger ones are refused before parsing.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// A workflow file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowFile {
    pub name: String,
    /// Parameters and their defaults (overridden per run).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Timeout of the whole run, e.g. "2h"; absent: none.
    #[serde(default)]
    pub timeout: Option<String>,
    pub tasks: Vec<TaskFile>,
    /// Tasks run once the DAG is done, whatever happened in it.
    #[serde(default)]
    pub finally: Vec<TaskFile>,
}

/// One task: every field of a job spec, plus its place in the DAG.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    pub name: String,
    /// `[program, args...]`; `${{ }}` references are substituted.
    pub command: Vec<String>,
    /// Environment; `${{ }}` references are substituted in values.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub resources: Option<ResourcesFile>,
    /// Per-attempt timeout, e.g. "10m".
    #[serde(default)]
    pub timeout: Option<String>,
    /// Retries after the first attempt (0: none).
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub backoff: Option<BackoffFile>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub trigger: Option<Trigger>,
    /// Condition (see [`crate::template::Condition`]); false: the task is skipped.
    #[serde(default)]
    pub when: Option<String>,
    /// One task instance per item: a reference or a literal list.
    #[serde(default)]
    pub for_each: Option<ForEachFile>,
    /// Most instances of this task running at once.
    #[serde(default)]
    pub max_parallel: Option<u32>,
}

/// Resources as Kubernetes writes them: `{slots: 1, cpu: 500m, memory: 256Mi}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesFile {
    #[serde(default)]
    pub slots: u32,
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
}

/// Backoff between retries: `{initial: 1s, max: 1m, multiplier: 2}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffFile {
    #[serde(default)]
    pub initial: Option<String>,
    #[serde(default)]
    pub max: Option<String>,
    #[serde(default)]
    pub multiplier: f64,
}

/// When a task runs, given the states of its direct upstream instances
/// (Airflow's trigger rules).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Every upstream succeeded; a failed one makes this `upstream_failed`,
    /// a skipped one makes this `skipped`.
    #[default]
    AllSucceeded,
    /// Every upstream is done, whatever its state.
    AllDone,
    /// At least one upstream failed (or is upstream_failed); else skipped.
    OneFailed,
    /// At least one upstream succeeded; else upstream_failed if one failed,
    /// skipped otherwise.
    OneSucceeded,
    /// No upstream failed (skipped ones are fine); else upstream_failed.
    NoneFailed,
}

/// `for_each` as written: a `${{ }}` reference, or a literal list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ForEachFile {
    Reference(String),
    List(Vec<serde_json::Value>),
}

fn file_error(reason: String) -> ValidationError {
    ValidationError {
        task: None,
        field: "file".to_string(),
        reason,
    }
}

fn check_size(bytes: &[u8]) -> Result<(), ValidationError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(file_error(format!(
            "is {} bytes, the limit is {MAX_FILE_BYTES} (1 MiB)",
            bytes.len()
        )));
    }
    Ok(())
}

/// Parses YAML; files over [`MAX_FILE_BYTES`] are refused before parsing.
pub fn parse_yaml(bytes: &[u8]) -> Result<WorkflowFile, ValidationError> {
    check_size(bytes)?;
    let text = std::str::from_utf8(bytes).map_err(|e| file_error(format!("is not UTF-8 ({e})")))?;
    yaml_serde::from_str(text).map_err(|e| file_error(format!("is not a valid workflow: {e}")))
}

/// Parses JSON; files over [`MAX_FILE_BYTES`] are refused before parsing.
pub fn parse_json(bytes: &[u8]) -> Result<WorkflowFile, ValidationError> {
    check_size(bytes)?;
    serde_json::from_slice(bytes).map_err(|e| file_error(format!("is not a valid workflow: {e}")))
}

/// Parses by file name: `.json` as JSON, anything else as YAML.
pub fn parse_named(file_name: &str, bytes: &[u8]) -> Result<WorkflowFile, ValidationError> {
    if file_name.to_ascii_lowercase().ends_with(".json") {
        parse_json(bytes)
    } else {
        parse_yaml(bytes)
    }
}
