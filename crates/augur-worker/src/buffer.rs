//! A bounded on-disk queue of finished-attempt results that the leader has not
//! acknowledged yet. A result is pushed when its attempt ends and removed only
//! when an `Ack` for it arrives, so neither a coordinator failover nor a worker
//! restart loses one; the agent replays [`ResultBuffer::pending`] on every
//! (re)connect. Results may therefore be delivered twice, which the leader
//! tolerates (a report for a finished attempt is stale and ignored).
//!
//! One file per result, `{dir}/{job_id}-{attempt}.json`, written to a temporary
//! name, fsynced and renamed, so a crash leaves either the whole result or
//! none. Unreadable files are moved to `{dir}/corrupt/` and never block the rest.
//!
//! The methods do blocking file I/O (push fsyncs); async callers run them with
//! `spawn_blocking`, which is why [`ResultBuffer`] is a cheap `Clone` handle.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use augur_core::Usage;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::executor::{ExecOutcome, ExecResult};
use crate::output::is_safe_job_id;

/// Schema version of buffered results.
pub const BUFFERED_RESULT_VERSION: u32 = 1;

/// Subdirectory where unreadable files are moved.
const CORRUPT_DIR: &str = "corrupt";

/// A finished attempt's result, as buffered on disk.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BufferedResult {
    /// Schema version ([`BUFFERED_RESULT_VERSION`]).
    pub v: u32,
    pub job_id: String,
    pub attempt: u32,
    /// Epoch of the leader that assigned the attempt.
    pub epoch: i64,
    /// `exited`, `timed_out`, `cancelled` or `start_failed` ([`ExecOutcome::as_str`]).
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub usage: Usage,
    pub stdout_tail: Vec<u8>,
    pub stderr_tail: Vec<u8>,
    pub message: String,
}

impl BufferedResult {
    /// The buffered form of an executor result. Tails are taken as they are;
    /// cut them to the coordinator's limit before pushing.
    pub fn from_exec(job_id: &str, attempt: u32, epoch: i64, result: &ExecResult) -> Self {
        let (exit_code, signal) = match &result.outcome {
            ExecOutcome::Exited { exit_code, signal } => (*exit_code, *signal),
            _ => (None, None),
        };
        BufferedResult {
            v: BUFFERED_RESULT_VERSION,
            job_id: job_id.to_string(),
            attempt,
            epoch,
            outcome: result.outcome.as_str().to_string(),
            exit_code,
            signal,
            started_at_ms: result.started_at_ms,
            finished_at_ms: result.finished_at_ms,
            usage: result.usage.clone(),
            stdout_tail: result.stdout_tail.clone(),
            stderr_tail: result.stderr_tail.clone(),
            message: result.message.clone(),
        }
    }

    /// The outcome as the executor's type; `None` for an unknown outcome name.
    pub fn exec_outcome(&self) -> Option<ExecOutcome> {
        match self.outcome.as_str() {
            "exited" => Some(ExecOutcome::Exited {
                exit_code: self.exit_code,
                signal: self.signal,
            }),
            "timed_out" => Some(ExecOutcome::TimedOut),
            "cancelled" => Some(ExecOutcome::Cancelled),
            "start_failed" => Some(ExecOutcome::StartFailed),
            _ => None,
        }
    }
}

/// Why a buffer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// As many results as allowed await acknowledgement; the worker should take
    /// no new work until some are acknowledged.
    #[error("result buffer is full: {max} results await acknowledgement")]
    Full { max: usize },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot encode result: {0}")]
    Encode(#[from] serde_json::Error),
    /// The id would not make a safe file name.
    #[error("job id {0:?} cannot be used as a file name")]
    InvalidJobId(String),
}

impl BufferError {
    /// Whether trying again later may succeed (after acks free space, or a
    /// transient I/O problem). Encoding and id errors never go away.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BufferError::Full { .. } | BufferError::Io { .. })
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Handle to the on-disk result buffer; clones share the same buffer.
#[derive(Clone, Debug)]
pub struct ResultBuffer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    max_entries: usize,
    /// Whether pushes are fsynced (file and directory).
    fsync: bool,
    /// `(job_id, attempt)` of every stored result. The lock also serialises file
    /// operations, so two pushes cannot both take the last free place.
    entries: Mutex<BTreeSet<(String, u32)>>,
}

impl ResultBuffer {
    /// Opens (creating it if needed) the buffer in `dir`, which holds at most
    /// `max_entries` results. Results pushed before a restart are found again;
    /// temporary files of an interrupted push are removed.
    pub fn open(dir: &Path, max_entries: usize) -> Result<Self, BufferError> {
        Self::open_with(dir, max_entries, true)
    }

    /// As [`ResultBuffer::open`]; with `fsync` false a push is written but not
    /// fsynced: it survives a crash of the worker process (the common case: OOM
    /// kill, SIGKILL, panic) but not of the machine. That is enough for
    /// at-least-once execution, because a machine crash also expires the
    /// worker's lease and the leader retries the attempt elsewhere.
    pub fn open_with(dir: &Path, max_entries: usize, fsync: bool) -> Result<Self, BufferError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut entries = BTreeSet::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                move_aside(dir, &path, "file name is not UTF-8");
                continue;
            };
            if name.ends_with(".tmp") {
                // Never renamed into place, so never acknowledged as stored.
                if let Err(e) = fs::remove_file(&path) {
                    warn!(
                        path = %path.display(),
                        error = %e,
                        "cannot remove leftover temporary file"
                    );
                }
            } else if name.ends_with(".json") {
                match parse_file_name(&name) {
                    Some(key) => {
                        entries.insert(key);
                    }
                    None => move_aside(dir, &path, "file name is not {job_id}-{attempt}.json"),
                }
            }
        }
        Ok(ResultBuffer {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                max_entries,
                fsync,
                entries: Mutex::new(entries),
            }),
        })
    }

    /// The buffer's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Most results the buffer holds.
    pub fn max_entries(&self) -> usize {
        self.inner.max_entries
    }

    /// Stores `result` durably (replacing an earlier push of the same attempt).
    /// Returns once the file and its directory entry are fsynced.
    pub fn push(&self, result: &BufferedResult) -> Result<(), BufferError> {
        if !is_safe_job_id(&result.job_id) {
            return Err(BufferError::InvalidJobId(result.job_id.clone()));
        }
        let key = (result.job_id.clone(), result.attempt);
        let mut entries = self.lock();
        if !entries.contains(&key) && entries.len() >= self.inner.max_entries {
            return Err(BufferError::Full {
                max: self.inner.max_entries,
            });
        }
        let bytes = serde_json::to_vec(result)?;
        let name = file_name(&key.0, key.1);
        let path = self.inner.dir.join(&name);
        let tmp = self.inner.dir.join(format!(".{name}.tmp"));
        let written = write_file(&tmp, &bytes, self.inner.fsync)
            .and_then(|()| fs::rename(&tmp, &path).map_err(io_error(&path)));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // The rename is durable only once the directory itself is synced.
        if self.inner.fsync {
            fs::File::open(&self.inner.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(&self.inner.dir))?;
        }
        entries.insert(key);
        Ok(())
    }

    /// Every stored result, oldest first (by finish time). A file that cannot
    /// be decoded is logged and moved to `corrupt/`; one that cannot be read
    /// right now is logged and skipped (it stays for the next call).
    pub fn pending(&self) -> Vec<BufferedResult> {
        let mut entries = self.lock();
        let mut results = Vec::with_capacity(entries.len());
        let mut gone = Vec::new();
        for key in entries.iter() {
            let path = self.inner.dir.join(file_name(&key.0, key.1));
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    gone.push(key.clone());
                    continue;
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot read buffered result");
                    continue;
                }
            };
            match serde_json::from_slice::<BufferedResult>(&bytes) {
                Ok(r) if r.job_id != key.0 || r.attempt != key.1 => {
                    move_aside(
                        &self.inner.dir,
                        &path,
                        "content does not match its file name",
                    );
                    gone.push(key.clone());
                }
                Ok(r) if r.v > BUFFERED_RESULT_VERSION => {
                    // Written by a newer worker; keep it for that worker rather than destroy it.
                    warn!(
                        path = %path.display(),
                        v = r.v,
                        "skipping buffered result of a newer version"
                    );
                }
                Ok(r) => results.push(r),
                Err(e) => {
                    move_aside(&self.inner.dir, &path, &e.to_string());
                    gone.push(key.clone());
                }
            }
        }
        for key in gone {
            entries.remove(&key);
        }
        results.sort_by(|a, b| {
            (a.finished_at_ms, &a.job_id, a.attempt).cmp(&(b.finished_at_ms, &b.job_id, b.attempt))
        });
        results
    }

    /// Forgets an acknowledged result. Acknowledging an unknown result is not an
    /// error: acks may repeat after a reconnect.
    pub fn ack(&self, job_id: &str, attempt: u32) -> Result<(), BufferError> {
        if !is_safe_job_id(job_id) {
            return Err(BufferError::InvalidJobId(job_id.to_string()));
        }
        let mut entries = self.lock();
        let path = self.inner.dir.join(file_name(job_id, attempt));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path)(e)),
        }
        // No directory fsync: if the removal is lost in a crash, the result is
        // sent once more and the leader ignores the duplicate.
        entries.remove(&(job_id.to_string(), attempt));
        Ok(())
    }

    /// Number of stored results.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no result awaits acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<(String, u32)>> {
        // The set stays consistent even if a holder panicked: it is only
        // changed after the file operation it mirrors succeeded.
        self.inner
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn file_name(job_id: &str, attempt: u32) -> String {
    format!("{job_id}-{attempt}.json")
}

/// `(job_id, attempt)` from `{job_id}-{attempt}.json`. The attempt is after the
/// last `-`, so ids containing `-` parse too.
fn parse_file_name(name: &str) -> Option<(String, u32)> {
    let (job_id, attempt) = name.strip_suffix(".json")?.rsplit_once('-')?;
    let attempt = attempt.parse().ok()?;
    is_safe_job_id(job_id).then(|| (job_id.to_string(), attempt))
}

fn write_file(path: &Path, bytes: &[u8], fsync: bool) -> Result<(), BufferError> {
    let mut file = fs::File::create(path).map_err(io_error(path))?;
    file.write_all(bytes).map_err(io_error(path))?;
    if !fsync {
        return Ok(());
    }
    file.sync_all().map_err(io_error(path))
}

/// Moves an unusable file to `corrupt/` so it is kept for inspection but no
/// longer counted or read. Failures are logged: this runs on recovery paths.
fn move_aside(dir: &Path, path: &Path, why: &str) {
    warn!(path = %path.display(), reason = why, "moving corrupt buffered result aside");
    let corrupt = dir.join(CORRUPT_DIR);
    if let Err(e) = fs::create_dir_all(&corrupt) {
        warn!(dir = %corrupt.display(), error = %e, "cannot create directory for corrupt results");
        return;
    }
    let Some(name) = path.file_name() else { return };
    let mut target_name = name.to_os_string();
    // A timestamp keeps an earlier corrupt copy of the same name.
    target_name.push(format!(".{}", augur_core::now_ms()));
    if let Err(e) = fs::rename(path, corrupt.join(target_name)) {
        warn!(path = %path.display(), error = %e, "cannot move corrupt result aside");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(job_id: &str, attempt: u32, finished_at_ms: i64) -> BufferedResult {
        BufferedResult {
            v: BUFFERED_RESULT_VERSION,
            job_id: job_id.to_string(),
            attempt,
            epoch: 7,
            outcome: "exited".into(),
            exit_code: Some(1),
            signal: None,
            started_at_ms: finished_at_ms - 10,
            finished_at_ms,
            usage: Usage {
                runtime_ms: 10,
                user_cpu_us: 5,
                system_cpu_us: 1,
                max_rss_kb: 900,
            },
            stdout_tail: b"out\xff".to_vec(),
            stderr_tail: b"err".to_vec(),
            message: "exited with code 1".into(),
        }
    }

    #[test]
    fn push_pending_ack_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = ResultBuffer::open(dir.path(), 10).unwrap();
        assert!(buffer.is_empty());
        buffer.push(&result("JOBB", 1, 200)).unwrap();
        buffer.push(&result("JOBA", 2, 100)).unwrap();
        buffer.push(&result("JOBC", 1, 300)).unwrap();
        assert!(dir.path().join("JOBA-2.json").exists());
        assert_eq!(buffer.len(), 3);
        let pending = buffer.pending();
        let order: Vec<_> = pending.iter().map(|r| r.job_id.as_str()).collect();
        assert_eq!(order, ["JOBA", "JOBB", "JOBC"]);
        assert_eq!(pending[0], result("JOBA", 2, 100));

        buffer.ack("JOBB", 1).unwrap();
        buffer.ack("JOBB", 1).unwrap(); // a repeated ack is fine
        assert_eq!(buffer.len(), 2);
        drop(buffer);

        let reopened = ResultBuffer::open(dir.path(), 10).unwrap();
        assert_eq!(reopened.len(), 2);
        let order: Vec<_> = reopened.pending().into_iter().map(|r| r.job_id).collect();
        assert_eq!(order, ["JOBA", "JOBC"]);
    }

    #[test]
    fn full_buffer_refuses_new_results_but_accepts_a_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = ResultBuffer::open(dir.path(), 2).unwrap();
        buffer.push(&result("A", 1, 1)).unwrap();
        buffer.push(&result("B", 1, 2)).unwrap();
        let err = buffer.push(&result("C", 1, 3)).unwrap_err();
        assert!(matches!(err, BufferError::Full { max: 2 }), "{err}");
        assert!(err.is_retryable());
        // Re-pushing a stored attempt replaces it rather than needing a place.
        buffer.push(&result("B", 1, 2)).unwrap();
        buffer.ack("A", 1).unwrap();
        buffer.push(&result("C", 1, 3)).unwrap();
        assert_eq!(buffer.len(), 2);
    }

    #[test]
    fn corrupt_files_are_moved_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = ResultBuffer::open(dir.path(), 10).unwrap();
        buffer.push(&result("GOOD", 1, 1)).unwrap();
        buffer.push(&result("BAD", 1, 2)).unwrap();
        fs::write(dir.path().join("BAD-1.json"), b"{ truncated").unwrap();
        fs::write(dir.path().join("not-a-result.json"), b"{}").unwrap();
        fs::write(dir.path().join(".X-1.json.tmp"), b"half").unwrap();

        let reopened = ResultBuffer::open(dir.path(), 10).unwrap();
        assert!(!dir.path().join(".X-1.json.tmp").exists());
        let pending = reopened.pending();
        assert_eq!(pending, vec![result("GOOD", 1, 1)]);
        assert_eq!(reopened.len(), 1);
        assert!(!dir.path().join("BAD-1.json").exists());
        let moved = fs::read_dir(dir.path().join(CORRUPT_DIR)).unwrap().count();
        assert_eq!(
            moved, 2,
            "BAD-1.json and not-a-result.json are kept for inspection"
        );
    }

    #[test]
    fn file_names_parse_back_and_unsafe_ids_are_refused() {
        assert_eq!(parse_file_name("01ABC-3.json"), Some(("01ABC".into(), 3)));
        assert_eq!(parse_file_name("a-b-12.json"), Some(("a-b".into(), 12)));
        assert_eq!(parse_file_name("nodash.json"), None);
        let dir = tempfile::tempdir().unwrap();
        let buffer = ResultBuffer::open(dir.path(), 10).unwrap();
        let err = buffer.push(&result("../evil", 1, 1)).unwrap_err();
        assert!(matches!(err, BufferError::InvalidJobId(_)));
        assert!(!err.is_retryable());
    }

    #[test]
    fn converts_from_an_executor_result() {
        let exec = ExecResult {
            outcome: ExecOutcome::TimedOut,
            started_at_ms: 1,
            finished_at_ms: 2,
            usage: Usage::default(),
            stdout_tail: b"o".to_vec(),
            stderr_tail: Vec::new(),
            message: "timed out".into(),
            pid: Some(42),
        };
        let buffered = BufferedResult::from_exec("J", 3, 9, &exec);
        assert_eq!(buffered.outcome, "timed_out");
        assert_eq!(buffered.exec_outcome(), Some(ExecOutcome::TimedOut));
        let exited = BufferedResult::from_exec(
            "J",
            3,
            9,
            &ExecResult {
                outcome: ExecOutcome::Exited {
                    exit_code: None,
                    signal: Some(9),
                },
                ..exec
            },
        );
        assert_eq!(
            exited.exec_outcome(),
            Some(ExecOutcome::Exited {
                exit_code: None,
                signal: Some(9)
            })
        );
    }
}
