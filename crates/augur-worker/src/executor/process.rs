//! The process executor: spawn, supervise, kill and reap one job's process group.
//!
//! The attempt is supervised on the async runtime: output readers, the timeout
//! and the cancellation token race the exit report of the waiter thread
//! ([`super::group`]). A timeout or cancel sends SIGTERM to the group and, after
//! the grace period, SIGKILL.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_core::spec::{MAX_ARGS, MAX_ARGV_BYTES, MAX_ENV_BYTES};
use augur_core::{now_ms, Usage};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cgroup::{join_before_exec, JobCgroup, Limits, Stats};

use super::environment::{job_environment, worker_path, DEFAULT_PATH};
use super::group::{decode_status, signal_name, spawn_waiter, KillOnDrop, ProcessGroup, Reaped};
use super::{ExecOutcome, ExecRequest, ExecResult, ProcessConfig, TailBuffer, NOT_ALLOWED};

/// How long the output readers may keep going once the process group is dead.
/// Only a process that left the group (e.g. with `setsid`) can still hold the
/// pipes open then; it must not keep the attempt from finishing.
const READER_DRAIN: Duration = Duration::from_millis(500);

/// Size of one read from a pipe.
const READ_CHUNK: usize = 16 * 1024;

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
    // The cgroup exists, with its limits, before the process does: the child
    // joins it before exec, so nothing it starts runs outside the limits.
    let cgroup = match &config.cgroups {
        Some(cgroups) => match cgroups.create(
            &format!("{}-{}", req.job_id, req.attempt),
            Limits {
                memory_bytes: req.spec.resources.memory_bytes,
                cpu_millis: req.spec.resources.cpu_millis,
            },
        ) {
            Ok(cgroup) => Some(Arc::new(cgroup)),
            Err(e) => {
                return not_started(
                    ExecOutcome::StartFailed,
                    format!("cannot set up the attempt's cgroup: {e}"),
                )
            }
        },
        None => None,
    };
    if let Some(dir) = &req.outputs_dir {
        if let Err(e) = prepare_outputs(dir, config.run_as.as_ref()) {
            return not_started(
                ExecOutcome::StartFailed,
                format!("cannot prepare $AUGUR_OUTPUTS {dir:?}: {e}"),
            );
        }
    }
    let (mut command, procs_files) = match build_command(config, &req, cgroup.as_deref()) {
        Ok(built) => built,
        Err(message) => return not_started(ExecOutcome::StartFailed, message),
    };
    let clock = Instant::now();
    let started_at_ms = now_ms();
    let spawned = command.spawn();
    // The child has joined (or failed to join) the cgroup by now.
    drop(procs_files);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let message = match &config.run_as {
                Some(user) => format!(
                    "cannot start {:?} as user {}{}: {e}",
                    req.spec.command,
                    user.describe(),
                    match &req.spec.working_dir {
                        Some(dir) => format!(" in working dir {dir:?}"),
                        None => String::new(),
                    }
                ),
                None => format!("cannot start {:?}: {e}", req.spec.command),
            };
            return not_started(ExecOutcome::StartFailed, message);
        }
    };
    let pid = child.id();
    let group = Arc::new(ProcessGroup::new(pid, cgroup.clone()));
    // Kills the group if this future is dropped before the attempt ends.
    let _kill_on_drop = KillOnDrop(Arc::clone(&group));
    let stdout = child
        .stdout
        .take()
        .and_then(|s| async_pipe(tokio::process::ChildStdout::from_std(s), "stdout"));
    let stderr = child
        .stderr
        .take()
        .and_then(|s| async_pipe(tokio::process::ChildStderr::from_std(s), "stderr"));
    // Dropping a std `Child` neither kills nor waits; the waiter thread owns reaping.
    drop(child);
    let exit = spawn_waiter(Arc::clone(&group));
    let _ = started.send((Some(pid), started_at_ms));
    info!(job_id = %req.job_id, attempt = req.attempt, pid, "process started");

    let mut stdout_tail = TailBuffer::new(config.tail_bytes);
    let mut stderr_tail = TailBuffer::new(config.tail_bytes);
    let supervised = {
        let readers = async {
            tokio::join!(
                pump(stdout, &mut stdout_tail),
                pump(stderr, &mut stderr_tail)
            );
        };
        supervise(config, req.spec.timeout(), &group, exit, readers, &cancel).await
    };
    let runtime = supervised.exited_after.saturating_duration_since(clock);
    let finished_at_ms = started_at_ms + runtime.as_millis() as i64;

    // Whatever is left in the cgroup dies now; its accounting covers every
    // process the attempt started, daemonised ones included.
    let stats = match cgroup {
        Some(cgroup) => {
            let finishing = Arc::clone(&cgroup);
            tokio::task::spawn_blocking(move || finishing.finish())
                .await
                .ok()
                .map(|stats| (stats, cgroup.memory_limit()))
        }
        None => None,
    };
    let (mut outcome, mut message) = describe(&supervised, config.kill_grace, req.spec.timeout());
    let mut usage = match &supervised.status {
        Ok(reaped) => Usage {
            runtime_ms: runtime.as_millis() as u64,
            ..reaped.usage.clone()
        },
        Err(_) => Usage {
            runtime_ms: runtime.as_millis() as u64,
            ..Usage::default()
        },
    };
    if let Some((stats, limit)) = stats {
        usage.peak_memory_bytes = stats.peak_memory_bytes;
        usage.cgroup_cpu_us = stats.cpu_us;
        if supervised.ending == Ending::Natural && !outcome.is_success() {
            if let Some(kills) = oom_killed(&outcome, &stats) {
                outcome = ExecOutcome::OomKilled;
                message = format!(
                    "oom_killed: the job reached its memory limit of {} and the kernel's OOM \
                     killer ended {kills} of its processes; {message}",
                    human_bytes(limit)
                );
            }
        }
    }
    let outputs = match &req.outputs_dir {
        Some(dir) => {
            let collected = super::outputs::collect(dir);
            let _ = std::fs::remove_dir_all(dir);
            collected.unwrap_or_else(|why| {
                message.push_str(&format!("; outputs refused: {why}"));
                Default::default()
            })
        }
        None => Default::default(),
    };
    if !supervised.output_complete {
        message
            .push_str("; output may be incomplete: a process outside the job's group kept it open");
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
        outputs,
    }
}

/// A fresh, empty outputs directory that only the job's user can use.
fn prepare_outputs(dir: &Path, run_as: Option<&super::RunAs>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some(user) = run_as {
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))?;
    }
    Ok(())
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
        outputs: Default::default(),
    }
}

/// Whether an attempt that did not succeed was the OOM killer's doing, and how
/// many processes it killed: the cgroup's `oom_kill` count, or on kernels
/// without one (v1 before 4.13) a hit memory limit and a SIGKILLed leader.
fn oom_killed(outcome: &ExecOutcome, stats: &Stats) -> Option<u64> {
    match stats.oom_kills {
        Some(0) => None,
        Some(kills) => Some(kills),
        None => {
            let sigkilled = matches!(
                outcome,
                ExecOutcome::Exited {
                    signal: Some(libc::SIGKILL),
                    ..
                }
            );
            (sigkilled && stats.memory_failcnt > 0).then_some(1)
        }
    }
}

/// `64 MiB`, for messages.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The command for an attempt, or why it cannot be started; with a cgroup,
/// also the open `cgroup.procs` files the child joins (keep them open until
/// the spawn returned).
fn build_command(
    config: &ProcessConfig,
    req: &ExecRequest,
    cgroup: Option<&JobCgroup>,
) -> Result<(Command, Vec<OwnedFd>), String> {
    let spec = &req.spec;
    check_limits(spec)?;
    let worker_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let env = job_environment(worker_env.iter().cloned(), config.run_as.as_ref(), req);
    // With an allowlist, a bare name is looked up on the worker's PATH: a job
    // must not point an allowed name at a program of its own via its PATH.
    let lookup_path = if config.allowlist.is_empty() {
        env.get(OsStr::new("PATH"))
            .cloned()
            .unwrap_or_else(|| DEFAULT_PATH.into())
    } else {
        worker_path(worker_env)
    };
    let program = resolve_program(&spec.command, &lookup_path);
    if !config
        .allowlist
        .allows(&spec.command, program.as_ref().ok().map(PathBuf::as_path))
    {
        return Err(format!(
            "{NOT_ALLOWED}: {} is not in this worker's allowlist",
            spec.command
        ));
    }
    let mut command = Command::new(program?);
    command.args(&spec.args);
    command.env_clear();
    command.envs(&env);
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
            Err(e) => {
                return Err(format!(
                    "cannot start {:?}: working dir {dir:?}: {e}",
                    spec.command
                ))
            }
        }
    }
    // Joining the cgroup comes first: after a privilege drop the child could
    // no longer move itself (v2 checks the writer at write time).
    let procs_files = match cgroup {
        Some(cgroup) => {
            let files = cgroup
                .procs_files()
                .map_err(|e| format!("cannot set up the attempt's cgroup: {e}"))?;
            join_before_exec(&mut command, &files);
            files
        }
        None => Vec::new(),
    };
    match &config.run_as {
        // Enters the working dir after dropping privileges, with the job's rights.
        Some(user) => user.apply(&mut command, spec.working_dir.as_deref().map(Path::new))?,
        None => {
            if let Some(dir) = &spec.working_dir {
                command.current_dir(dir);
            }
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so one kill(-pgid) reaches everything the job started.
        .process_group(0);
    Ok((command, procs_files))
}

/// Defence in depth: the caps of augur-core's spec validation, checked again
/// right before exec (the leader validated the spec, and so did the worker when
/// it decoded the assignment, but this is the last point before the kernel).
fn check_limits(spec: &augur_core::JobSpec) -> Result<(), String> {
    let refuse = |field: &str, what: String| Err(format!("refused: {field}: {what}"));
    if spec.args.len() > MAX_ARGS {
        return refuse(
            "spec.args",
            format!("has {} arguments, the limit is {MAX_ARGS}", spec.args.len()),
        );
    }
    let argv_bytes: usize = spec.command.len() + spec.args.iter().map(String::len).sum::<usize>();
    if argv_bytes > MAX_ARGV_BYTES {
        return refuse(
            "spec.args",
            format!("command and arguments are {argv_bytes} bytes, the limit is {MAX_ARGV_BYTES}"),
        );
    }
    let env_bytes: usize = spec.env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if env_bytes > MAX_ENV_BYTES {
        return refuse(
            "spec.env",
            format!("is {env_bytes} bytes, the limit is {MAX_ENV_BYTES}"),
        );
    }
    Ok(())
}

/// The program to execute. A bare name is looked up on `path` here, rather
/// than by the C library after fork: with an explicit path, std can spawn with
/// `posix_spawn` (vfork-like) instead of forking this whole process, which
/// costs several times more per job.
fn resolve_program(command: &str, path: &OsStr) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if command.contains('/') {
        return Ok(command.into());
    }
    for dir in std::env::split_paths(path) {
        let candidate = dir.join(command);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "cannot start {command:?}: not found on PATH ({})",
        path.to_string_lossy()
    ))
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
    if !readers_done
        && tokio::time::timeout(READER_DRAIN, &mut readers)
            .await
            .is_ok()
    {
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
async fn wait_readers<F: Future<Output = ()>>(
    readers: &mut std::pin::Pin<&mut F>,
    done: &mut bool,
) {
    if *done {
        std::future::pending::<()>().await;
    }
    readers.as_mut().await;
    *done = true;
}

/// Outcome and message of a supervised attempt.
fn describe(s: &Supervised, grace: Duration, timeout: Option<Duration>) -> (ExecOutcome, String) {
    let how_killed = if s.escalated {
        format!(
            "killed with SIGKILL after SIGTERM and a {} grace period",
            humantime::format_duration(grace)
        )
    } else {
        "terminated with SIGTERM".to_string()
    };
    match s.ending {
        Ending::TimedOut => {
            let limit = timeout.unwrap_or_default();
            (
                ExecOutcome::TimedOut,
                format!(
                    "timed out after {}; {how_killed}",
                    humantime::format_duration(limit)
                ),
            )
        }
        Ending::Cancelled => (ExecOutcome::Cancelled, format!("cancelled; {how_killed}")),
        Ending::Natural => match &s.status {
            Ok(reaped) => {
                let (exit_code, signal) = decode_status(reaped.status);
                let message = match (exit_code, signal) {
                    (Some(code), _) => format!("exited with code {code}"),
                    (None, Some(sig)) => format!("killed by signal {sig} ({})", signal_name(sig)),
                    (None, None) => {
                        format!("ended with unrecognised wait status {}", reaped.status)
                    }
                };
                (ExecOutcome::Exited { exit_code, signal }, message)
            }
            Err(e) => (
                ExecOutcome::Exited {
                    exit_code: None,
                    signal: None,
                },
                format!("exit status lost: {e}"),
            ),
        },
    }
}
