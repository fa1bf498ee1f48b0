//! A bounded on-disk queue of finished-attempt results that the leader has not
//! acknowledged yet. A result is pushed when its attempt ends and removed only
//! when an `Ack` for it arrives, so neither a coordinator failover nor a worker
//! restart loses one; the agent replays [`ResultBuffer::pending`] on every
//! (re)connect. Results may therefore be delivered twice, which the leader
//! tolerates (a report for a finished attempt is stale and ignored).
//!
//! On disk it is an append-only log in segments, `{dir}/segment-{seq}.log`, one
//! JSON line per event (`put` a result, `ack` one). A push is one `write(2)`
//! (plus an fsync when asked for), not a file of its own: creating and deleting
//! a file per job cost more kernel time than the rest of the worker at a few
//! thousand jobs per second. A segment is deleted once every result it holds is
//! acknowledged. Replaying the segments on open rebuilds the set; a torn or
//! unreadable line (a crash mid-write) is skipped with a warning and never
//! blocks the rest. An ack whose line was lost only means the result is sent
//! once more, which the leader ignores.
//!
//! The methods do blocking file I/O; async callers run them with
//! `spawn_blocking`, which is why [`ResultBuffer`] is a cheap `Clone` handle.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::io::{BufRead, BufReader};

use augur_core::Usage;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::executor::{ExecOutcome, ExecResult};
use crate::output::is_safe_job_id;

/// Schema version of buffered results.
pub const BUFFERED_RESULT_VERSION: u32 = 1;

/// Events per segment before a new one is started.
const SEGMENT_EVENTS: u64 = 4096;

/// A finished attempt's result, as buffered on disk.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BufferedResult {
    /// Schema version ([`BUFFERED_RESULT_VERSION`]).
    pub v: u32,
    pub job_id: String,
    pub attempt: u32,
    /// Epoch of the leader that assigned the attempt.
    pub epoch: i64,
    /// `exited`, `timed_out`, `cancelled`, `start_failed` or `oom_killed`
    /// ([`ExecOutcome::as_str`]).
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub usage: Usage,
    pub stdout_tail: Vec<u8>,
    pub stderr_tail: Vec<u8>,
    pub message: String,
    /// What the attempt left in `$AUGUR_OUTPUTS` (absent in older records).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub outputs: std::collections::BTreeMap<String, String>,
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
            outputs: result.outputs.clone(),
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
            "oom_killed" => Some(ExecOutcome::OomKilled),
            _ => None,
        }
    }
}

/// Which attempt a buffered result is for: what a heartbeat lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRef {
    pub job_id: String,
    pub attempt: u32,
    /// Epoch of the leader that assigned the attempt.
    pub epoch: i64,
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

/// One line of the log.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Event {
    Put(Box<BufferedResult>),
    Ack { job_id: String, attempt: u32 },
}

type Key = (String, u32);

struct Segment {
    file: fs::File,
    seq: u64,
    events: u64,
}

struct State {
    /// Unacknowledged results and the segment holding each.
    entries: BTreeMap<Key, (BufferedResult, u64)>,
    /// Unacknowledged results per segment.
    live: HashMap<u64, usize>,
    current: Segment,
}

/// Handle to the on-disk result buffer; clones share the same buffer.
#[derive(Clone)]
pub struct ResultBuffer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ResultBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultBuffer")
            .field("dir", &self.inner.dir)
            .field("max_entries", &self.inner.max_entries)
            .finish()
    }
}

struct Inner {
    dir: PathBuf,
    max_entries: usize,
    /// Whether each event is fsynced.
    fsync: bool,
    state: Mutex<State>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("segment-{seq:010}.log"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn open_segment(dir: &Path, seq: u64) -> Result<Segment, BufferError> {
    let path = segment_path(dir, seq);
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_error(&path))?;
    Ok(Segment {
        file,
        seq,
        events: 0,
    })
}

impl ResultBuffer {
    /// Opens (or creates) the buffer in `dir`, fsyncing every event.
    pub fn open(dir: &Path, max_entries: usize) -> Result<Self, BufferError> {
        Self::open_with(dir, max_entries, true)
    }

    /// As [`ResultBuffer::open`]; with `fsync` false an event is written but not
    /// fsynced: it survives a crash of the worker process (the common case: OOM
    /// kill, SIGKILL, panic) but not of the machine. That is enough for
    /// at-least-once execution, because a machine crash also expires the
    /// worker's lease and the leader retries the attempt elsewhere.
    pub fn open_with(dir: &Path, max_entries: usize, fsync: bool) -> Result<Self, BufferError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut seqs: Vec<u64> = fs::read_dir(dir)
            .map_err(io_error(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_segment_name(&e.file_name().to_string_lossy()))
            .collect();
        seqs.sort_unstable();
        let mut entries: BTreeMap<Key, (BufferedResult, u64)> = BTreeMap::new();
        for &seq in &seqs {
            replay(&segment_path(dir, seq), seq, &mut entries)?;
        }
        let mut live: HashMap<u64, usize> = HashMap::new();
        for (_, seq) in entries.values() {
            *live.entry(*seq).or_default() += 1;
        }
        for &seq in &seqs {
            if !live.contains_key(&seq) {
                let path = segment_path(dir, seq);
                fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        let next = seqs.last().map_or(1, |s| s + 1);
        let current = open_segment(dir, next)?;
        Ok(ResultBuffer {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                max_entries,
                fsync,
                state: Mutex::new(State {
                    entries,
                    live,
                    current,
                }),
            }),
        })
    }

    /// Directory the buffer lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Most results the buffer holds.
    pub fn max_entries(&self) -> usize {
        self.inner.max_entries
    }

    /// Stores `result` (replacing an earlier push of the same attempt).
    pub fn push(&self, result: &BufferedResult) -> Result<(), BufferError> {
        if !is_safe_job_id(&result.job_id) {
            return Err(BufferError::InvalidJobId(result.job_id.clone()));
        }
        let key = (result.job_id.clone(), result.attempt);
        let mut state = self.lock();
        if !state.entries.contains_key(&key) && state.entries.len() >= self.inner.max_entries {
            return Err(BufferError::Full {
                max: self.inner.max_entries,
            });
        }
        self.append(&mut state, &Event::Put(Box::new(result.clone())))?;
        let seq = state.current.seq;
        if let Some((_, old)) = state.entries.insert(key, (result.clone(), seq)) {
            self.release(&mut state, old)?;
        }
        *state.live.entry(seq).or_default() += 1;
        Ok(())
    }

    /// Every stored result, oldest finish first.
    pub fn pending(&self) -> Vec<BufferedResult> {
        let state = self.lock();
        let mut results: Vec<BufferedResult> =
            state.entries.values().map(|(r, _)| r.clone()).collect();
        results.sort_by(|a, b| {
            (a.finished_at_ms, &a.job_id, a.attempt).cmp(&(b.finished_at_ms, &b.job_id, b.attempt))
        });
        results
    }

    /// Which attempts have results awaiting acknowledgement, without copying
    /// the results (heartbeats list them every interval; their output tails
    /// are only sent again after a reconnect, from [`ResultBuffer::pending`]).
    pub fn pending_refs(&self) -> Vec<ResultRef> {
        let state = self.lock();
        state
            .entries
            .iter()
            .map(|((job_id, attempt), (result, _))| ResultRef {
                job_id: job_id.clone(),
                attempt: *attempt,
                epoch: result.epoch,
            })
            .collect()
    }

    /// Forgets an acknowledged result. Acknowledging an unknown result is not an
    /// error: acks may repeat after a reconnect.
    pub fn ack(&self, job_id: &str, attempt: u32) -> Result<(), BufferError> {
        if !is_safe_job_id(job_id) {
            return Err(BufferError::InvalidJobId(job_id.to_string()));
        }
        let mut state = self.lock();
        let Some((_, seq)) = state.entries.remove(&(job_id.to_string(), attempt)) else {
            return Ok(());
        };
        self.append(
            &mut state,
            &Event::Ack {
                job_id: job_id.to_string(),
                attempt,
            },
        )?;
        self.release(&mut state, seq)
    }

    /// Number of stored results.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no result is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one event as one write, rotating to a new segment when full.
    fn append(&self, state: &mut State, event: &Event) -> Result<(), BufferError> {
        if state.current.events >= SEGMENT_EVENTS {
            let next = open_segment(&self.inner.dir, state.current.seq + 1)?;
            let old = std::mem::replace(&mut state.current, next);
            if !state.live.contains_key(&old.seq) {
                let path = segment_path(&self.inner.dir, old.seq);
                drop(old);
                fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        let path = segment_path(&self.inner.dir, state.current.seq);
        state
            .current
            .file
            .write_all(&line)
            .map_err(io_error(&path))?;
        if self.inner.fsync {
            state.current.file.sync_data().map_err(io_error(&path))?;
        }
        state.current.events += 1;
        Ok(())
    }

    /// One result of segment `seq` is gone; delete the segment once it holds
    /// none (unless it is the one being written).
    fn release(&self, state: &mut State, seq: u64) -> Result<(), BufferError> {
        let Some(count) = state.live.get_mut(&seq) else {
            return Ok(());
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            state.live.remove(&seq);
            if seq != state.current.seq {
                let path = segment_path(&self.inner.dir, seq);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(&path)(e)),
                }
            }
        }
        Ok(())
    }
}

/// Applies one segment's events to `entries`.
fn replay(
    path: &Path,
    seq: u64,
    entries: &mut BTreeMap<Key, (BufferedResult, u64)>,
) -> Result<(), BufferError> {
    let file = fs::File::open(path).map_err(io_error(path))?;
    for (number, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(io_error(path))?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Event>(&line) {
            Ok(Event::Put(result))
                if result.v <= BUFFERED_RESULT_VERSION && is_safe_job_id(&result.job_id) =>
            {
                entries.insert((result.job_id.clone(), result.attempt), (*result, seq));
            }
            Ok(Event::Put(result)) => {
                warn!(path = %path.display(), line = number + 1, job_id = %result.job_id, "skipping a buffered result this version cannot use");
            }
            Ok(Event::Ack { job_id, attempt }) => {
                entries.remove(&(job_id, attempt));
            }
            Err(e) => {
                warn!(path = %path.display(), line = number + 1, error = %e, "skipping an unreadable buffer line");
            }
        }
    }
    Ok(())
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
                ..Default::default()
            },
            stdout_tail: b"out\xff".to_vec(),
            stderr_tail: b"err".to_vec(),
            message: "exited with code 1".into(),
            outputs: [("count".to_string(), "3\n".to_string())].into(),
        }
    }

    // Regression (issue 12): heartbeats cloned every buffered result, output
    // tails included; they only need which attempts are held.
    #[test]
    fn pending_refs_name_the_held_attempts_and_follow_acks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let buffer = ResultBuffer::open(dir.path(), 10).expect("opens");
        buffer.push(&result("B", 2, 20)).expect("push");
        buffer.push(&result("A", 1, 30)).expect("push");
        let refs = |b: &ResultBuffer| {
            let mut refs = b.pending_refs();
            refs.sort_by(|x, y| (&x.job_id, x.attempt).cmp(&(&y.job_id, y.attempt)));
            refs
        };
        let held = |job: &str, attempt| ResultRef {
            job_id: job.into(),
            attempt,
            epoch: 7,
        };
        assert_eq!(refs(&buffer), vec![held("A", 1), held("B", 2)]);
        buffer.ack("B", 2).expect("ack");
        assert_eq!(refs(&buffer), vec![held("A", 1)]);
        // The full results are still there for the replay after a reconnect.
        assert_eq!(buffer.pending(), vec![result("A", 1, 30)]);
    }

    #[test]
    fn push_pending_ack_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = ResultBuffer::open(dir.path(), 10).unwrap();
        assert!(buffer.is_empty());
        buffer.push(&result("JOBB", 1, 200)).unwrap();
        buffer.push(&result("JOBA", 2, 100)).unwrap();
        buffer.push(&result("JOBC", 1, 300)).unwrap();
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
    fn torn_and_garbage_lines_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = ResultBuffer::open(dir.path(), 10).unwrap();
        buffer.push(&result("GOOD", 1, 1)).unwrap();
        drop(buffer);
        let segment = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .unwrap();
        let mut file = fs::OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(b"{\"put\":{\"v\":1,\"job_id\":\"TORN\"\nnot json at all\n")
            .unwrap();
        drop(file);

        let reopened = ResultBuffer::open(dir.path(), 10).unwrap();
        assert_eq!(reopened.pending(), vec![result("GOOD", 1, 1)]);
        reopened.push(&result("NEXT", 1, 2)).unwrap();
        assert_eq!(reopened.len(), 2);
    }

    #[test]
    fn segments_are_deleted_once_fully_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = ResultBuffer::open_with(dir.path(), 100_000, false).unwrap();
        let total = SEGMENT_EVENTS as u32 * 3;
        for i in 0..total {
            buffer
                .push(&result(&format!("J{i}"), 1, i64::from(i)))
                .unwrap();
            buffer.ack(&format!("J{i}"), 1).unwrap();
        }
        buffer.push(&result("KEEP", 1, 1)).unwrap();
        let segments = fs::read_dir(dir.path()).unwrap().count();
        assert!(
            segments <= 2,
            "{segments} segments left after everything older was acked"
        );
        drop(buffer);
        let reopened = ResultBuffer::open(dir.path(), 10).unwrap();
        assert_eq!(reopened.pending(), vec![result("KEEP", 1, 1)]);
    }

    #[test]
    fn unsafe_ids_are_refused() {
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
            outputs: Default::default(),
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

    // Buffers written before cgroups carry no cgroup usage: they still read,
    // with zeros; an OOM-killed result keeps its outcome and cgroup figures.
    #[test]
    fn old_results_read_and_oom_killed_results_round_trip() {
        let old = r#"{"v":1,"job_id":"J","attempt":1,"epoch":2,"outcome":"exited","exit_code":0,"signal":null,"started_at_ms":1,"finished_at_ms":2,"usage":{"runtime_ms":1,"user_cpu_us":2,"system_cpu_us":3,"max_rss_kb":4},"stdout_tail":[],"stderr_tail":[],"message":""}"#;
        let read: BufferedResult = serde_json::from_str(old).expect("old result reads");
        assert_eq!(read.usage.peak_memory_bytes, 0);
        assert_eq!(read.usage.cgroup_cpu_us, 0);

        let dir = tempfile::tempdir().expect("temp dir");
        let buffer = ResultBuffer::open(dir.path(), 10).expect("opens");
        let mut oom = result("O", 1, 5);
        oom.outcome = ExecOutcome::OomKilled.as_str().into();
        oom.usage.peak_memory_bytes = 64 << 20;
        oom.usage.cgroup_cpu_us = 1234;
        buffer.push(&oom).expect("push");
        drop(buffer);
        let reopened = ResultBuffer::open(dir.path(), 10).expect("reopens");
        assert_eq!(reopened.pending(), vec![oom.clone()]);
        assert_eq!(oom.exec_outcome(), Some(ExecOutcome::OomKilled));
        let wire = crate::convert::finished_message(&oom);
        assert_eq!(wire.outcome, augur_proto::v1::Outcome::OomKilled as i32);
        assert_eq!(wire.peak_memory_bytes, 64 << 20);
        assert_eq!(wire.cgroup_cpu_us, 1234);
    }
}
