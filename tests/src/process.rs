//! Processes: finding the binaries under test, spawning long-lived children with
//! their output in a log file, running short commands under a deadline, and
//! checking whether a pid is still alive.

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `<workspace>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives one level below the workspace root")
        .to_path_buf()
}

/// The `augur` binary under test: `$AUGUR_BIN` if set, else the one Cargo built
/// next to this test binary (`target/<profile>/augur`), else
/// `<workspace>/target/debug/augur`.
pub fn augur_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("AUGUR_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "AUGUR_BIN={} does not exist; unset it or build the binary with `cargo build -p augur-cli`",
            path.display()
        );
        return path;
    }
    let mut candidates = Vec::new();
    // The test binary is target/<profile>/deps/e2e-<hash>; the CLI is target/<profile>/augur.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("augur"));
        }
    }
    candidates.push(workspace_root().join("target/debug/augur"));
    for candidate in &candidates {
        if candidate.is_file() {
            return candidate.clone();
        }
    }
    panic!(
        "the augur binary is missing (looked at {candidates:?}): build it with \
         `cargo build -p augur-cli`, or point AUGUR_BIN at it"
    );
}

/// Finds an executable on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `etcd` or `etcdctl` from `PATH`, with a message saying how to get it.
pub fn etcd_tool(name: &str) -> PathBuf {
    find_on_path(name).unwrap_or_else(|| {
        panic!("`{name}` is not on PATH: install Debian's etcd-server (apt-get install etcd-server etcd-client)")
    })
}

/// `count` distinct free loopback ports, chosen below the kernel's ephemeral
/// range (32768-60999 by default): a port the kernel handed out for bind(0)
/// and we released could be given next to an outgoing connection, and then a
/// node that binds it fails with "address in use" (seen in full runs). All
/// listeners are held until every port is chosen, so the ports differ from
/// each other; another process could still take one before we use it.
pub fn free_ports(count: usize) -> Vec<u16> {
    const LOW: u32 = 20_000;
    const HIGH: u32 = 32_000;
    // Start somewhere that depends on the process and the time, so parallel
    // test binaries do not all probe the same ports first.
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let mut listeners = Vec::with_capacity(count);
    let span = HIGH - LOW;
    for step in 0..span {
        if listeners.len() == count {
            break;
        }
        let port = (LOW + (seed.wrapping_add(step.wrapping_mul(7919))) % span) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    assert_eq!(
        listeners.len(),
        count,
        "no {count} free loopback ports in {LOW}..{HIGH}"
    );
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .expect("local address of a bound listener")
                .port()
        })
        .collect()
}

/// Spawns a long-lived child with stdout and stderr appended to `log`, in its own
/// process group (so killing the group kills anything it forked) and with
/// `PR_SET_PDEATHSIG = SIGKILL`, so it dies even if the test process is killed
/// before the harness's `Drop` runs.
pub fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    let file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open log {}: {e}", log.display()));
    let stderr = file.try_clone().expect("clone a log file handle");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(stderr))
        .env("RUST_BACKTRACE", "1")
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"))
}

/// Sends SIGKILL to the process group led by `pid`, falling back to the pid alone.
pub fn kill_group(pid: u32) {
    let pid = pid as libc::pid_t;
    // SAFETY: plain syscalls on a pid we spawned.
    unsafe {
        if libc::kill(-pid, libc::SIGKILL) != 0 {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Runs a short command to completion, capturing its output. Panics (naming the
/// command) if it has not exited within `timeout`, so a hung CLI call fails the
/// test instead of hanging it.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Output {
    run_bounded(command, timeout).unwrap_or_else(|hung| panic!("{hung}"))
}

/// Runs a short command, capturing its output; Err (after killing it) if it has
/// not exited within `bound`. Unlike [`run_with_timeout`] a hang is an outcome
/// the caller can assert on, not a panic.
pub fn run_bounded(command: &mut Command, bound: Duration) -> Result<Output, String> {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {description}: {e}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_with_deadline(&mut child, bound);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{description} did not return within {bound:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buffer = Vec::new();
        // A read error just truncates what we show; the exit status still counts.
        let _ = pipe.read_to_end(&mut buffer);
        buffer
    })
}

/// Waits for `child` up to `timeout`; on expiry kills it, reaps it and returns None.
fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Whether `pid` names a live process. A zombie counts as dead: it has exited and
/// only waits for whichever process adopted it to reap it.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Quotes `text` for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The last `count` lines of a file (empty if it cannot be read).
pub fn tail_lines(path: &Path, count: usize) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_single_quotes() {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote("it's a $HOME")))
            .output()
            .expect("run sh");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's a $HOME");
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(8);
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 8);
    }

    #[test]
    fn own_pid_is_alive_and_reaped_child_is_not() {
        assert!(pid_alive(std::process::id()));
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait for true");
        assert!(!pid_alive(pid));
    }

    #[test]
    fn run_with_timeout_captures_output() {
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 4"]),
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(4));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }
}
