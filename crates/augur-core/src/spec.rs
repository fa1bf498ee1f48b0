//! Job specifications: the input form a user writes (`JobSpecInput`, durations as
//! human strings, unknown fields rejected) and the validated form Augur stores
//! and executes (`JobSpec`). Validation is the only way from one to the other.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;

/// Largest total size of a job's environment (keys + values).
pub const MAX_ENV_BYTES: usize = 64 * 1024;
/// Largest total size of command + arguments.
pub const MAX_ARGV_BYTES: usize = 256 * 1024;
/// Most arguments a job may have.
pub const MAX_ARGS: usize = 4096;
/// Most labels (and, separately, constraints) a job may carry.
pub const MAX_LABELS: usize = 256;
/// Longest label key.
pub const MAX_LABEL_KEY: usize = 63;
/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 256;
/// Longest job name.
pub const MAX_NAME: usize = 128;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
/// Longest per-attempt timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Priority range.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;
/// Most slots one job may request.
pub const MAX_SLOTS: u32 = 1024;
/// Largest declared memory (16 TiB).
pub const MAX_MEMORY_BYTES: u64 = 16 << 40;
/// Largest declared CPU (1000 cores).
pub const MAX_CPU_MILLIS: u64 = 1_000_000;
/// Most attempts a retry policy may allow.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest backoff cap.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);
/// Label keys Augur sets itself: a scheduled job carries `augur.schedule` and
/// `augur.schedule_tick_ms`, which its worker turns into `AUGUR_SCHEDULE` and
/// `AUGUR_SCHEDULED_AT_MS`. A submitter may not set them (it could make a job
/// pass for a schedule's tick).
pub const RESERVED_LABEL_PREFIX: &str = "augur.";

/// A job as a user writes it (CLI flags, a JSON/TOML file, or the gRPC message).
/// Unknown fields are an error, not silently ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSpecInput {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    pub priority: i32,
    /// e.g. "30s"; empty: no timeout.
    pub timeout: String,
    pub retry: RetryInput,
    pub resources: ResourcesInput,
    pub idempotency_key: String,
    pub constraints: BTreeMap<String, String>,
}

/// Retry policy as written by a user; zero/empty fields take defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryInput {
    pub max_attempts: u32,
    pub initial_backoff: String,
    pub max_backoff: String,
    pub multiplier: f64,
}

/// Resource request as written by a user; zero fields take defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcesInput {
    pub slots: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// What a job asks of its worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub slots: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// A validated job specification, as stored in etcd and sent to workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub priority: i32,
    pub timeout_ms: Option<u64>,
    pub retry: RetryPolicy,
    pub resources: Resources,
    pub idempotency_key: Option<String>,
    pub constraints: BTreeMap<String, String>,
}

impl JobSpec {
    /// Per-attempt timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }
}

/// A spec that was refused: which field, and why, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parses a human duration ("30s", "5m", "1h 30m", "250ms").
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, ValidationError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            field,
            format!("{text:?} is not a duration ({e}); write e.g. \"30s\", \"5m\" or \"1h30m\""),
        )
    })
}

fn optional_duration(field: &str, text: &str) -> Result<Option<Duration>, ValidationError> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        parse_duration(field, text).map(Some)
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(invalid(
            field,
            format!("is {} bytes, the limit is {max}", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(invalid(field, "contains a NUL byte"));
    }
    Ok(())
}

/// Whether a spec may carry labels under [`RESERVED_LABEL_PREFIX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReservedLabels {
    /// A submitter's spec: refused.
    Refused,
    /// A spec Augur built itself (a schedule's tick as assigned to a worker).
    Allowed,
}

/// Checks the labels a worker announces (any key, `augur.` ones included:
/// the worker's operator sets them).
pub fn check_worker_labels(
    field: &str,
    map: &BTreeMap<String, String>,
) -> Result<(), ValidationError> {
    check_label_map(field, map, ReservedLabels::Allowed)
}

fn check_label_map(
    field: &str,
    map: &BTreeMap<String, String>,
    reserved: ReservedLabels,
) -> Result<(), ValidationError> {
    if map.len() > MAX_LABELS {
        return Err(invalid(
            field,
            format!("has {} entries, the limit is {MAX_LABELS}", map.len()),
        ));
    }
    for (key, value) in map {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !key_ok {
            return Err(invalid(
                format!("{field}[{key:?}]"),
                format!("key must be 1..={MAX_LABEL_KEY} characters of letters, digits, '.', '_', '-', '/'"),
            ));
        }
        if reserved == ReservedLabels::Refused && key.starts_with(RESERVED_LABEL_PREFIX) {
            return Err(invalid(
                format!("{field}[{key:?}]"),
                format!(
                    "uses the reserved prefix {RESERVED_LABEL_PREFIX} (Augur sets those labels itself)"
                ),
            ));
        }
        check_text(&format!("{field}[{key:?}]"), value, MAX_LABEL_VALUE)?;
    }
    Ok(())
}

/// The default job name: the command's file name.
fn default_name(command: &str) -> String {
    let base = command.rsplit('/').next().unwrap_or(command);
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME)
        .collect();
    if cleaned.is_empty() {
        "job".to_string()
    } else {
        cleaned
    }
}

impl JobSpecInput {
    /// Validates a submitter's input and produces the spec Augur stores. Every
    /// refusal names the field (`spec.timeout`, `spec.env`, ...) and the limit
    /// it broke. Labels under [`RESERVED_LABEL_PREFIX`] are refused.
    pub fn validate(&self) -> Result<JobSpec, ValidationError> {
        self.validate_with(ReservedLabels::Refused)
    }

    /// As [`JobSpecInput::validate`], for a spec Augur built itself rather
    /// than one a submitter wrote: labels under [`RESERVED_LABEL_PREFIX`] are
    /// allowed (a worker re-checks the assignment of a scheduled job, which
    /// carries `augur.schedule`). Never use it on a caller's input.
    pub fn validate_internal(&self) -> Result<JobSpec, ValidationError> {
        self.validate_with(ReservedLabels::Allowed)
    }

    fn validate_with(&self, reserved: ReservedLabels) -> Result<JobSpec, ValidationError> {
        if self.command.trim().is_empty() {
            return Err(invalid("spec.command", "must not be empty"));
        }
        check_text("spec.command", &self.command, 4096)?;
        if self.args.len() > MAX_ARGS {
            return Err(invalid(
                "spec.args",
                format!("has {} arguments, the limit is {MAX_ARGS}", self.args.len()),
            ));
        }
        let mut argv_bytes = self.command.len();
        for (i, arg) in self.args.iter().enumerate() {
            if arg.contains('\0') {
                return Err(invalid(format!("spec.args[{i}]"), "contains a NUL byte"));
            }
            argv_bytes += arg.len();
        }
        if argv_bytes > MAX_ARGV_BYTES {
            return Err(invalid(
                "spec.args",
                format!(
                    "command and arguments are {argv_bytes} bytes, the limit is {MAX_ARGV_BYTES}"
                ),
            ));
        }

        let mut env_bytes = 0usize;
        for (key, value) in &self.env {
            let key_ok = !key.is_empty()
                && !key.contains('=')
                && !key.contains('\0')
                && !key.chars().next().is_some_and(|c| c.is_ascii_digit());
            if !key_ok {
                return Err(invalid(
                    format!("spec.env[{key:?}]"),
                    "is not a valid variable name (empty, starts with a digit, or contains '=' or NUL)",
                ));
            }
            if key.starts_with("AUGUR_") || key == "TRACEPARENT" || key == "TRACESTATE" {
                return Err(invalid(
                    format!("spec.env[{key:?}]"),
                    "is reserved: Augur sets AUGUR_*, TRACEPARENT and TRACESTATE itself",
                ));
            }
            if value.contains('\0') {
                return Err(invalid(
                    format!("spec.env[{key:?}]"),
                    "value contains a NUL byte",
                ));
            }
            env_bytes += key.len() + value.len() + 2;
        }
        if env_bytes > MAX_ENV_BYTES {
            return Err(invalid(
                "spec.env",
                format!("is {env_bytes} bytes, the limit is {MAX_ENV_BYTES}"),
            ));
        }

        let working_dir = if self.working_dir.is_empty() {
            None
        } else {
            check_text("spec.working_dir", &self.working_dir, 4096)?;
            if !self.working_dir.starts_with('/') {
                return Err(invalid("spec.working_dir", "must be an absolute path"));
            }
            Some(self.working_dir.clone())
        };

        check_label_map("spec.labels", &self.labels, reserved)?;
        // Constraints match worker labels, which may use any key.
        check_label_map(
            "spec.constraints",
            &self.constraints,
            ReservedLabels::Allowed,
        )?;

        let name = if self.name.is_empty() {
            default_name(&self.command)
        } else {
            let ok = self.name.len() <= MAX_NAME
                && self
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return Err(invalid(
                    "spec.name",
                    format!(
                        "must be 1..={MAX_NAME} characters of letters, digits, '.', '_' and '-'"
                    ),
                ));
            }
            self.name.clone()
        };

        if !PRIORITY_RANGE.contains(&self.priority) {
            return Err(invalid(
                "spec.priority",
                format!(
                    "{} is outside {}..={}",
                    self.priority,
                    PRIORITY_RANGE.start(),
                    PRIORITY_RANGE.end()
                ),
            ));
        }

        let timeout = optional_duration("spec.timeout", &self.timeout)?;
        if let Some(t) = timeout {
            // Stored in whole milliseconds: a sub-millisecond timeout would
            // become 0, which no attempt can meet.
            if t < Duration::from_millis(1) {
                return Err(invalid(
                    "spec.timeout",
                    "must be at least 1ms (leave empty for no timeout)",
                ));
            }
            if t > MAX_TIMEOUT {
                return Err(invalid("spec.timeout", "must be at most 7 days"));
            }
        }

        let retry = self.retry.validate()?;
        let resources = self.resources.validate()?;

        let idempotency_key = if self.idempotency_key.is_empty() {
            None
        } else {
            let k = &self.idempotency_key;
            if k.len() > MAX_IDEMPOTENCY_KEY {
                return Err(invalid(
                    "spec.idempotency_key",
                    format!("is {} bytes, the limit is {MAX_IDEMPOTENCY_KEY}", k.len()),
                ));
            }
            if !k.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid(
                    "spec.idempotency_key",
                    "must be printable ASCII without spaces",
                ));
            }
            Some(k.clone())
        };

        Ok(JobSpec {
            name,
            command: self.command.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            working_dir,
            labels: self.labels.clone(),
            priority: self.priority,
            timeout_ms: timeout.map(|t| t.as_millis() as u64),
            retry,
            resources,
            idempotency_key,
            constraints: self.constraints.clone(),
        })
    }
}

impl RetryInput {
    fn validate(&self) -> Result<RetryPolicy, ValidationError> {
        let defaults = RetryPolicy::default();
        let max_attempts = match self.max_attempts {
            0 => defaults.max_attempts,
            n if n > MAX_ATTEMPTS => {
                return Err(invalid(
                    "spec.retry.max_attempts",
                    format!("{n} is more than the limit of {MAX_ATTEMPTS}"),
                ))
            }
            n => n,
        };
        let initial = optional_duration("spec.retry.initial_backoff", &self.initial_backoff)?
            .unwrap_or(Duration::from_millis(defaults.initial_backoff_ms));
        let max = optional_duration("spec.retry.max_backoff", &self.max_backoff)?
            .unwrap_or(Duration::from_millis(defaults.max_backoff_ms).max(initial));
        if max > MAX_BACKOFF {
            return Err(invalid("spec.retry.max_backoff", "must be at most 24h"));
        }
        if initial > max {
            return Err(invalid(
                "spec.retry.initial_backoff",
                format!(
                    "{} is longer than max_backoff {}",
                    humantime::format_duration(initial),
                    humantime::format_duration(max)
                ),
            ));
        }
        let multiplier = if self.multiplier == 0.0 {
            defaults.multiplier
        } else {
            self.multiplier
        };
        if !(1.0..=10.0).contains(&multiplier) {
            return Err(invalid(
                "spec.retry.multiplier",
                format!("{multiplier} is outside 1.0..=10.0"),
            ));
        }
        Ok(RetryPolicy {
            max_attempts,
            initial_backoff_ms: initial.as_millis() as u64,
            max_backoff_ms: max.as_millis() as u64,
            multiplier,
            jitter: defaults.jitter,
        })
    }
}

impl ResourcesInput {
    fn validate(&self) -> Result<Resources, ValidationError> {
        let slots = if self.slots == 0 { 1 } else { self.slots };
        if slots > MAX_SLOTS {
            return Err(invalid(
                "spec.resources.slots",
                format!("{slots} is more than the limit of {MAX_SLOTS}"),
            ));
        }
        if self.memory_bytes > MAX_MEMORY_BYTES {
            return Err(invalid(
                "spec.resources.memory_bytes",
                "is more than 16 TiB",
            ));
        }
        if self.cpu_millis > MAX_CPU_MILLIS {
            return Err(invalid(
                "spec.resources.cpu_millis",
                "is more than 1000 cores",
            ));
        }
        Ok(Resources {
            slots,
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(command: &str) -> JobSpecInput {
        JobSpecInput {
            command: command.into(),
            ..Default::default()
        }
    }

    fn field_of(spec: JobSpecInput) -> String {
        spec.validate().expect_err("must be refused").field
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = input("/bin/echo").validate().unwrap();
        assert_eq!(spec.name, "echo");
        assert_eq!(spec.resources.slots, 1);
        assert_eq!(spec.retry.max_attempts, 1);
        assert_eq!(spec.timeout_ms, None);
    }

    #[test]
    fn bad_inputs_name_their_field() {
        assert_eq!(field_of(input("  ")), "spec.command");
        let mut s = input("x");
        s.timeout = "5 parsecs".into();
        assert_eq!(field_of(s), "spec.timeout");
        let mut s = input("x");
        s.timeout = "0s".into();
        assert_eq!(field_of(s), "spec.timeout");
        let mut s = input("x");
        s.env.insert("BIG".into(), "v".repeat(MAX_ENV_BYTES));
        assert_eq!(field_of(s), "spec.env");
        let mut s = input("x");
        for i in 0..=MAX_LABELS {
            s.labels.insert(format!("k{i}"), "v".into());
        }
        assert_eq!(field_of(s), "spec.labels");
        let mut s = input("x");
        s.env.insert("AUGUR_JOB_ID".into(), "spoof".into());
        assert_eq!(field_of(s), "spec.env[\"AUGUR_JOB_ID\"]");
        let mut s = input("x");
        s.retry.initial_backoff = "10m".into();
        s.retry.max_backoff = "1m".into();
        assert_eq!(field_of(s), "spec.retry.initial_backoff");
        let mut s = input("x");
        s.priority = 5000;
        assert_eq!(field_of(s), "spec.priority");
        let mut s = input("x");
        s.resources.slots = 100_000;
        assert_eq!(field_of(s), "spec.resources.slots");
        let mut s = input("x");
        s.working_dir = "relative".into();
        assert_eq!(field_of(s), "spec.working_dir");
    }

    // Regression (issue 12): `augur.*` labels carry schedule data into a job's
    // AUGUR_SCHEDULE* variables; a submitter must not be able to forge them.
    #[test]
    fn reserved_label_prefix_is_refused_from_submitters() {
        let mut s = input("x");
        s.labels.insert("augur.schedule".into(), "nightly".into());
        let err = s.validate().expect_err("reserved label");
        assert_eq!(err.field, "spec.labels[\"augur.schedule\"]");
        assert!(
            err.to_string().contains("uses the reserved prefix augur."),
            "{err}"
        );
        // Augur's own specs (a schedule's tick, re-checked by its worker) keep them.
        let spec = s
            .validate_internal()
            .expect("internal specs may carry them");
        assert_eq!(spec.labels["augur.schedule"], "nightly");
        // Only the exact prefix is reserved; constraints are not labels.
        let mut s = input("x");
        s.labels.insert("augury".into(), "v".into());
        s.labels.insert("team.augur.x".into(), "v".into());
        s.constraints.insert("augur.zone".into(), "a".into());
        s.validate().expect("not reserved");
    }

    #[test]
    fn argument_count_and_total_argv_size_are_capped() {
        let mut s = input("x");
        s.args = vec!["a".into(); MAX_ARGS];
        s.validate().expect("exactly MAX_ARGS arguments are fine");
        s.args.push("a".into());
        let err = s.validate().expect_err("one argument too many");
        assert_eq!(err.field, "spec.args");
        assert!(err.reason.contains(&MAX_ARGS.to_string()), "{err}");

        // The command counts towards the total: "x" + args of MAX_ARGV_BYTES - 1.
        let mut s = input("x");
        s.args = vec!["a".repeat(MAX_ARGV_BYTES - 1)];
        s.validate().expect("exactly MAX_ARGV_BYTES are fine");
        s.args.push("b".into());
        let err = s.validate().expect_err("one byte too many");
        assert_eq!(err.field, "spec.args");
        assert!(err.reason.contains(&MAX_ARGV_BYTES.to_string()), "{err}");
    }

    #[test]
    fn unknown_fields_in_a_spec_file_are_refused() {
        let err = serde_json::from_str::<JobSpecInput>(r#"{"command":"x","timeout_secs":5}"#)
            .expect_err("unknown field");
        assert!(
            err.to_string().contains("unknown field `timeout_secs`"),
            "{err}"
        );
    }
}
