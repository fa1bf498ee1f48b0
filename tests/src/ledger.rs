//! Ledgers: files that job processes append one line per attempt to, so a test can
//! check from the outside how often, and when, each job really ran.
//!
//! Each line is `<job id> <attempt> <unix time with ns>`, written by one `echo`
//! with `>>` (`O_APPEND`): short appends from concurrent processes do not interleave.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::process::shell_quote;

/// One line of a ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerEntry {
    pub job_id: String,
    pub attempt: u32,
    /// Unix time in seconds at which the attempt wrote the line.
    pub at: f64,
}

/// A ledger file in a test's temp dir.
#[derive(Clone, Debug)]
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Ledger { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A shell command that appends this attempt's line; put it in a job's `sh -c`.
    pub fn append_command(&self) -> String {
        format!(
            "echo \"$AUGUR_JOB_ID $AUGUR_ATTEMPT $(date +%s.%N)\" >> {}",
            shell_quote(&self.path.to_string_lossy())
        )
    }

    /// Every line so far (none if the file does not exist yet). Panics on a
    /// malformed line: that would mean torn or interleaved writes.
    pub fn entries(&self) -> Vec<LedgerEntry> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("read ledger {}: {e}", self.path.display()),
        };
        text.lines().map(parse_line).collect()
    }

    /// The entries grouped by job id, in file order within each job.
    pub fn by_job(&self) -> BTreeMap<String, Vec<LedgerEntry>> {
        let mut jobs: BTreeMap<String, Vec<LedgerEntry>> = BTreeMap::new();
        for entry in self.entries() {
            jobs.entry(entry.job_id.clone()).or_default().push(entry);
        }
        jobs
    }
}

fn parse_line(line: &str) -> LedgerEntry {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let parsed = match fields.as_slice() {
        [job_id, attempt, at] => attempt
            .parse()
            .ok()
            .zip(at.parse().ok())
            .map(|(attempt, at)| LedgerEntry {
                job_id: job_id.to_string(),
                attempt,
                at,
            }),
        _ => None,
    };
    parsed.unwrap_or_else(|| {
        panic!("malformed ledger line {line:?} (expected `<job id> <attempt> <unix time>`)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn lines_written_by_the_shell_parse() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::new(dir.path().join("it's a ledger"));
        assert!(ledger.entries().is_empty());
        for attempt in ["1", "2"] {
            let status = Command::new("sh")
                .arg("-c")
                .arg(ledger.append_command())
                .env("AUGUR_JOB_ID", "01J0000000000000000000000A")
                .env("AUGUR_ATTEMPT", attempt)
                .status()
                .expect("run sh");
            assert!(status.success());
        }
        let entries = ledger.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].attempt, 2);
        assert!(entries[1].at >= entries[0].at && entries[0].at > 1.0e9);
        assert_eq!(ledger.by_job()["01J0000000000000000000000A"].len(), 2);
    }
}
