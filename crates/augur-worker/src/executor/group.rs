//! The job's process group: signalling it without ever hitting a recycled pid,
//! and reaping its leader.
//!
//! Reaping is done by one waiter thread per attempt, which is the only code that
//! waits for the child. It first waits *without* reaping (`waitid(WNOWAIT)`),
//! kills whatever is left of the group while the zombie leader still pins the
//! group id, and only then reaps with `wait4` to collect the child's own
//! resource usage. Every other signal goes through [`ProcessGroup::signal`],
//! which refuses once the leader is reaped.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use augur_core::Usage;
use tokio::sync::oneshot;

use crate::cgroup::JobCgroup;
use tracing::{debug, warn};

/// Exit code or terminating signal of a wait status.
pub(super) fn decode_status(status: libc::c_int) -> (Option<i32>, Option<i32>) {
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}

/// Conventional name of a signal number, for messages.
pub(super) fn signal_name(signal: i32) -> &'static str {
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
pub(super) struct ProcessGroup {
    pid: libc::pid_t,
    /// Set by the waiter once the leader is reaped; guarded so a signal is never
    /// sent concurrently with (or after) reaping.
    reaped: Mutex<bool>,
    /// The attempt's cgroup, if it has one: every signal reaches it too, so
    /// a process that left the group (`setsid`, a double-forked daemon) is
    /// not missed.
    cgroup: Option<Arc<JobCgroup>>,
}

impl ProcessGroup {
    /// The group of a just-spawned leader (spawned with `process_group(0)`),
    /// and the cgroup it runs in.
    pub(super) fn new(pid: u32, cgroup: Option<Arc<JobCgroup>>) -> Self {
        ProcessGroup {
            pid: pid as libc::pid_t,
            reaped: Mutex::new(false),
            cgroup,
        }
    }

    /// Sends `signal` to the whole group (and cgroup) unless its leader was
    /// reaped already; what is left then is the end of the attempt's business
    /// ([`JobCgroup::finish`]).
    pub(super) fn signal(&self, signal: libc::c_int) {
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
        if let Some(cgroup) = &self.cgroup {
            cgroup.signal(signal);
        }
    }
}

/// Kills the group when dropped; a no-op once the leader is reaped.
pub(super) struct KillOnDrop(pub(super) Arc<ProcessGroup>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.signal(libc::SIGKILL);
    }
}

/// What the waiter learned from `wait4`.
pub(super) struct Reaped {
    pub(super) status: libc::c_int,
    /// CPU time and peak RSS; `runtime_ms` is filled in by the caller.
    pub(super) usage: Usage,
}

/// Starts the thread that reaps the group's leader and reports its status.
pub(super) fn spawn_waiter(group: Arc<ProcessGroup>) -> oneshot::Receiver<Result<Reaped, String>> {
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
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
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
    if let Some(cgroup) = &group.cgroup {
        // Daemons that left the group hold the pipes open just the same.
        cgroup.signal(libc::SIGKILL);
    }
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
            ..Usage::default()
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
