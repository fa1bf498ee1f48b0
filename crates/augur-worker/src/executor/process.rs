//! The process executor: spawn, supervise, kill and reap one job's process group.
//!
//! Reaping is done by one waiter thread per attempt, which is the only code that
//! waits for the child. It first waits *without* reaping (`waitid(WNOWAIT)`),
//! kills whatever is left of the group while the zombie leader still pins the
//! group id, and only then reaps with `wait4` to collect the resource usage.
//! Every other signal goes through [`ProcessGroup::signal`], which refuses once
//! the leader is reaped, so the worker can never signal a recycled pid.

use std::future::Future;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use augur_core::{now_ms, Usage};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{ExecOutcome, ExecRequest, ExecResult, ProcessConfig, TailBuffer};

/// How long the output readers may keep going once the process group is dead.
/// Only a process that left the group (e.g. with `setsid`) can still hold the
/// pipes open then; it must not keep the attempt from finishing.
const READER_DRAIN: Duration = Duration::from_millis(500);

/// Size of one read from a pipe.
const READ_CHUNK: usize = 16 * 1024;

/// Variables of the worker's own environment with this prefix are not passed
/// on: they are the worker's configuration and may hold its secrets.
const WORKER_ENV_PREFIX: &[u8] = b"AUGUR_";

pub(super) async fn run(
    config: &ProcessConfig,
    req: ExecRequest,
    cancel: CancellationToken,
    started: oneshot::Sender<(Option<u32>, i64)>,
) -> ExecResult {
    if cancel.is_cancelled() {
        // Starting a job only to kill it would run its side effects for nothing.
        return not_started(
            ExecOutcome::Cancelled,
            "cancelled before the process started".into(),
        );
    }
    let mut command = match build_command(&req) {
        Ok(command) => command,
        Err(message) => return not_started(ExecOutcome::StartFailed, message),
    };
    let clock = Instant::now();
    let started_at_ms = now_ms();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let message = format!("cannot start {:?}: {e}", req.spec.command);
            return not_started(ExecOutcome::StartFailed, message);
        }
    };
    let pid = child.id();
    let group = Arc::new(ProcessGroup { pid: pid as libc::pid_t, reaped: Mutex::new(false) });
    // Kills the group if this future is dropped before the attempt ends.
    let _kill_on_drop = KillOnDrop(Arc::clone(&group));
    let stdout = child.stdout.take().and_then(|s| async_pipe(tokio::process::ChildStdout::from_std(s), "stdout"));
    let stderr = child.stderr.take().and_then(|s| async_pipe(tokio::process::ChildStderr::from_std(s), "stderr"));
    // Dropping a std `Child` neither kills nor waits; the waiter thread owns reaping.
    drop(child);
    let exit = spawn_waiter(Arc::clone(&group));
    let _ = started.send((Some(pid), started_at_ms));
    info!(job_id = %req.job_id, attempt = req.attempt, pid, "process started");

    let mut stdout_tail = TailBuffer::new(config.tail_bytes);
    let mut stderr_tail = TailBuffer::new(config.tail_bytes);
    let supervised = {
        let readers = async {
            tokio::join!(pump(stdout, &mut stdout_tail), pump(stderr, &mut stderr_tail));
        };
        supervise(config, req.spec.timeout(), &group, exit, readers, &cancel).await
    };
    let runtime = supervised.exited_after.saturating_duration_since(clock);
    let finished_at_ms = started_at_ms + runtime.as_millis() as i64;

    let (outcome, mut message) = describe(&supervised, config.kill_grace, req.spec.timeout());
    let usage = match &supervised.status {
        Ok(reaped) => Usage {
            runtime_ms: runtime.as_millis() as u64,
            ..reaped.usage.clone()
        },
        Err(_) => Usage {
            runtime_ms: runtime.as_millis() as u64,
            ..Usage::default()
        },
    };
    if !supervised.output_complete {
        message.push_str("; output may be incomplete: a process outside the job's group kept it open");
    }
    info!(
        job_id = %req.job_id,
        attempt = req.attempt,
        pid,
        outcome = outcome.as_str(),
        runtime_ms = usage.runtime_ms,
        stdout_bytes = stdout_tail.total(),
        stderr_bytes = stderr_tail.total(),
        "process finished"
    );
    ExecResult {
        outcome,
        started_at_ms,
        finished_at_ms,
        usage,
        stdout_tail: stdout_tail.into_vec(),
        stderr_tail: stderr_tail.into_vec(),
        message,
        pid: Some(pid),
    }
}

/// The result of an attempt that never had a process.
fn not_started(outcome: ExecOutcome, message: String) -> ExecResult {
    let now = now_ms();
    ExecResult {
        outcome,
        started_at_ms: now,
        finished_at_ms: now,
        usage: Usage::default(),
        stdout_tail: Vec::new(),
        stderr_tail: Vec::new(),
        message,
        pid: None,
    }
}

/// The command for an attempt, or why it cannot be started.
fn build_command(req: &ExecRequest) -> Result<Command, String> {
    let spec = &req.spec;
    let mut command = Command::new(&spec.command);
    command.args(&spec.args);
    command.env_clear();
    for (key, value) in std::env::vars_os() {
        if !key.as_bytes().starts_with(WORKER_ENV_PREFIX) {
            command.env(key, value);
        }
    }
    command.envs(&spec.env);
    command.env("AUGUR_JOB_ID", req.job_id.to_string());
    command.env("AUGUR_ATTEMPT", req.attempt.to_string());
    command.envs(req.extra_env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &spec.working_dir {
        // spawn() reports a bad working dir as the same ENOENT as a missing
        // command; checking first lets the message name the real culprit.
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "cannot start {:?}: working dir {dir:?} is not a directory",
                    spec.command
                ))
            }
            Err(e) => return Err(format!("cannot start {:?}: working dir {dir:?}: {e}", spec.command)),
        }
        command.current_dir(dir);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so one kill(-pgid) reaches everything the job started.
        .process_group(0);
    Ok(command)
}

fn async_pipe<T>(converted: io::Result<T>, stream: &'static str) -> Option<T> {
    match converted {
        Ok(pipe) => Some(pipe),
        Err(e) => {
            // Dropping the pipe means a write by the job may fail with EPIPE;
            // there is no better fallback without a reactor.
            warn!(stream, error = %e, "cannot read job output");
            None
        }
    }
}

/// Reads `pipe` to its end into `tail`.
async fn pump<R: AsyncRead + Unpin>(pipe: Option<R>, tail: &mut TailBuffer) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => tail.push(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!(error = %e, "reading job output failed");
                return;
            }
        }
    }
}

/// Why the supervisor stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Natural,
    TimedOut,
    Cancelled,
}

/// What supervising an attempt found out.
struct Supervised {
    ending: Ending,
    status: Result<Reaped, String>,
    /// When the waiter reported the exit.
    exited_after: Instant,
    /// SIGKILL was needed because SIGTERM did not end the leader in time.
    escalated: bool,
    /// Both pipes reached end of file.
    output_complete: bool,
}

/// Waits for the exit, enforcing the timeout and the cancellation, while the
/// output readers run.
async fn supervise(
    config: &ProcessConfig,
    timeout: Option<Duration>,
    group: &ProcessGroup,
    mut exit: oneshot::Receiver<Result<Reaped, String>>,
    readers: impl Future<Output = ()>,
    cancel: &CancellationToken,
) -> Supervised {
    tokio::pin!(readers);
    let mut readers_done = false;
    let deadline = async {
        match timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(deadline);

    let mut ending = Ending::Natural;
    let mut status = None;
    while status.is_none() && ending == Ending::Natural {
        tokio::select! {
            // An exit that is already known wins over a cancel or timeout arriving with it.
            biased;
            received = &mut exit => status = Some(received),
            () = cancel.cancelled() => ending = Ending::Cancelled,
            () = &mut deadline => ending = Ending::TimedOut,
            // The readers may end first (the job closed its output); keep waiting.
            () = wait_readers(&mut readers, &mut readers_done) => {}
        }
    }

    let mut escalated = false;
    if status.is_none() {
        group.signal(libc::SIGTERM);
        let grace = tokio::time::sleep(config.kill_grace);
        tokio::pin!(grace);
        while status.is_none() {
            tokio::select! {
                biased;
                received = &mut exit => status = Some(received),
                () = &mut grace, if !escalated => {
                    escalated = true;
                    group.signal(libc::SIGKILL);
                }
                () = wait_readers(&mut readers, &mut readers_done) => {}
            }
        }
    }
    let exited_after = Instant::now();
    // The waiter killed the group before reaping, so the pipes close now unless
    // a process escaped the group; read what remains, boundedly.
    if !readers_done && tokio::time::timeout(READER_DRAIN, &mut readers).await.is_ok() {
        readers_done = true;
    }
    let status = match status {
        Some(Ok(status)) => status,
        Some(Err(_)) | None => Err("the waiter thread ended without a status".to_string()),
    };
    Supervised {
        ending,
        status,
        exited_after,
        escalated,
        output_complete: readers_done,
    }
}

/// Completes when the readers complete, at most once; pending forever after.
async fn wait_readers<F: Future<Output = ()>>(readers: &mut std::pin::Pin<&mut F>, done: &mut bool) {
    if *done {
        std::future::pending::<()>().await;
    }
    readers.as_mut().await;
    *done = true;
}

/// Outcome and message of a supervised attempt.
fn describe(s: &Supervised, grace: Duration, timeout: Option<Duration>) -> (ExecOutcome, String) {
    let how_killed = if s.escalated {
        format!("killed with SIGKILL after SIGTERM and a {grace:?} grace period")
    } else {
        "terminated with SIGTERM".to_string()
    };
    match s.ending {
        Ending::TimedOut => {
            let limit = timeout.unwrap_or_default();
            (ExecOutcome::TimedOut, format!("timed out after {limit:?}; {how_killed}"))
        }
        Ending::Cancelled => (ExecOutcome::Cancelled, format!("cancelled; {how_killed}")),
        Ending::Natural => match &s.status {
            Ok(reaped) => {
                let (exit_code, signal) = decode_status(reaped.status);
                let message = match (exit_code, signal) {
                    (Some(code), _) => format!("exited with code {code}"),
                    (None, Some(sig)) => format!("killed by signal {sig} ({})", signal_name(sig)),
                    (None, None) => format!("ended with unrecognised wait status {}", reaped.status),
                };
                (ExecOutcome::Exited { exit_code, signal }, message)
            }
            Err(e) => (
                ExecOutcome::Exited { exit_code: None, signal: None },
                format!("exit status lost: {e}"),
            ),
        },
    }
}

/// Exit code or terminating signal of a wait status.
fn decode_status(status: libc::c_int) -> (Option<i32>, Option<i32>) {
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "other signal",
    }
}

/// The job's process group, identified by its leader's pid.
struct ProcessGroup {
    pid: libc::pid_t,
    /// Set by the waiter once the leader is reaped; guarded so a signal is never
    /// sent concurrently with (or after) reaping.
    reaped: Mutex<bool>,
}

impl ProcessGroup {
    /// Sends `signal` to the whole group unless its leader was reaped already.
    fn signal(&self, signal: libc::c_int) {
        let reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        if *reaped {
            return;
        }
        // SAFETY: kill() takes plain integers and touches no memory of ours. The
        // leader is not reaped (checked under the lock the waiter holds while
        // reaping), so the group id is still pinned by it and cannot name a
        // recycled, unrelated group.
        let rc = unsafe { libc::kill(-self.pid, signal) };
        if rc != 0 {
            // ESRCH: the whole group is gone already, which is what we wanted.
            debug!(pgid = self.pid, signal, error = %io::Error::last_os_error(), "kill failed");
        }
    }
}

/// Kills the group when dropped; a no-op once the leader is reaped.
struct KillOnDrop(Arc<ProcessGroup>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.signal(libc::SIGKILL);
    }
}

/// What the waiter learned from `wait4`.
struct Reaped {
    status: libc::c_int,
    /// CPU time and peak RSS; `runtime_ms` is filled in by the caller.
    usage: Usage,
}

/// Starts the thread that reaps the group's leader and reports its status.
fn spawn_waiter(group: Arc<ProcessGroup>) -> oneshot::Receiver<Result<Reaped, String>> {
    let (tx, rx) = oneshot::channel();
    let for_thread = Arc::clone(&group);
    // A dedicated thread rather than spawn_blocking: jobs may run for hours and
    // must not occupy the runtime's pool meant for short blocking calls. The
    // thread ends when the child is reaped; its result travels over `tx`, so
    // the JoinHandle is not needed.
    let spawned = std::thread::Builder::new()
        .name("augur-wait4".into())
        .spawn(move || {
            let _ = tx.send(reap(&for_thread).map_err(|e| e.to_string()));
        });
    match spawned {
        Ok(_detached) => rx,
        Err(e) => {
            warn!(error = %e, "cannot start a waiter thread; using the blocking pool");
            let (tx, rx) = oneshot::channel();
            drop(tokio::task::spawn_blocking(move || {
                let _ = tx.send(reap(&group).map_err(|e| e.to_string()));
            }));
            rx
        }
    }
}

/// Blocks until the leader exits, kills the rest of its group, and reaps it.
fn reap(group: &ProcessGroup) -> io::Result<Reaped> {
    let pid = group.pid;
    loop {
        // SAFETY: siginfo_t is a plain C struct for which all-zero bytes are valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, exclusively borrowed out-pointer for the call.
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            // Fall through to wait4, which blocks as well; only the straggler
            // kill below happens after the exit rather than before it.
            debug!(pid, error = %err, "waitid failed");
            break;
        }
    }
    let mut reaped = group.reaped.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: plain integers; the leader is an unreaped zombie (or alive), so its
    // pid still pins the group id. Stragglers would otherwise hold the pipes open.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is a plain C struct for which all-zero bytes are valid.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `rusage` are valid, exclusively borrowed out-pointers.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if rc == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            // ECHILD: someone else reaped it; the pid may be recycled, so stop signalling.
            *reaped = true;
            return Err(err);
        }
    }
    *reaped = true;
    Ok(Reaped {
        status,
        usage: Usage {
            runtime_ms: 0,
            user_cpu_us: micros(rusage.ru_utime),
            system_cpu_us: micros(rusage.ru_stime),
            max_rss_kb: max_rss_kb(rusage.ru_maxrss),
        },
    })
}

fn micros(t: libc::timeval) -> u64 {
    (t.tv_sec.max(0) as u64) * 1_000_000 + t.tv_usec.max(0) as u64
}

/// `ru_maxrss` is in KiB on Linux and in bytes on macOS.
fn max_rss_kb(raw: libc::c_long) -> u64 {
    let raw = raw.max(0) as u64;
    if cfg!(target_os = "macos") {
        raw / 1024
    } else {
        raw
    }
}
