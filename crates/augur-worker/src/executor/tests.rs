//! Executor tests with real processes. Deadlines are generous and wait on
//! conditions; nothing asserts on speed.

use std::path::Path;
use std::time::{Duration, Instant};

use augur_core::{JobId, JobSpec, JobSpecInput};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::*;

/// Upper bound for any single attempt in these tests.
const TEST_DEADLINE: Duration = Duration::from_secs(30);

fn spec(command: &str, args: &[&str], timeout: &str) -> JobSpec {
    JobSpecInput {
        command: command.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        timeout: timeout.into(),
        ..Default::default()
    }
    .validate()
    .unwrap()
}

fn sh(script: &str) -> JobSpec {
    spec("sh", &["-c", script], "")
}

fn request(spec: JobSpec) -> ExecRequest {
    ExecRequest {
        job_id: JobId::generate(),
        attempt: 1,
        spec,
        extra_env: Vec::new(),
        outputs_dir: None,
    }
}

fn process(kill_grace: Duration) -> Executor {
    Executor::Process(ProcessConfig {
        kill_grace,
        ..ProcessConfig::default()
    })
}

/// Runs an attempt to its end (bounded by [`TEST_DEADLINE`]) and returns the
/// result with what was sent on `started`.
async fn run(executor: &Executor, req: ExecRequest) -> (ExecResult, Option<(Option<u32>, i64)>) {
    let (tx, rx) = oneshot::channel();
    let result = tokio::time::timeout(
        TEST_DEADLINE,
        executor.run(req, CancellationToken::new(), tx),
    )
    .await
    .expect("attempt must end within the test deadline");
    (result, rx.await.ok())
}

/// Whether `pid` no longer names a running process. A zombie counts as gone:
/// killed grandchildren are reparented to PID 1, which may never reap them.
fn process_is_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence; no memory is involved.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn wait_until_gone(pid: i32) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if process_is_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Reads a pid written by a job, waiting for the file to be complete.
async fn read_pid(path: &Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(
            start.elapsed() < TEST_DEADLINE,
            "no pid in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILLs a stray process at the end of a test, even a failing one.
struct KillGuard(i32);

impl Drop for KillGuard {
    fn drop(&mut self) {
        // SAFETY: plain integers; the pid was written by this test's own job.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

#[tokio::test]
async fn captures_output_pid_and_usage() {
    let (result, started) = run(
        &process(DEFAULT_KILL_GRACE),
        request(sh("echo hello; echo oops >&2")),
    )
    .await;
    assert_eq!(
        result.outcome,
        ExecOutcome::Exited {
            exit_code: Some(0),
            signal: None
        }
    );
    assert!(result.outcome.is_success());
    assert_eq!(result.stdout_tail, b"hello\n");
    assert_eq!(result.stderr_tail, b"oops\n");
    assert_eq!(result.message, "exited with code 0");
    let (pid, started_at_ms) = started.expect("started is sent");
    assert_eq!(pid, result.pid);
    assert!(pid.is_some());
    assert_eq!(started_at_ms, result.started_at_ms);
    assert!(result.finished_at_ms >= result.started_at_ms);
    assert!(result.usage.max_rss_kb > 0, "{:?}", result.usage);
}

#[tokio::test]
async fn keeps_only_the_last_64_kib_of_big_output() {
    let (result, _) = run(
        &process(DEFAULT_KILL_GRACE),
        request(sh("yes | head -c 200000")),
    )
    .await;
    assert!(result.outcome.is_success(), "{}", result.message);
    assert_eq!(result.stdout_tail.len(), DEFAULT_TAIL_BYTES);
    assert_eq!(result.stdout_tail, b"y\n".repeat(DEFAULT_TAIL_BYTES / 2));

    let (result, _) = run(
        &process(DEFAULT_KILL_GRACE),
        request(spec("seq", &["1", "100000"], "")),
    )
    .await;
    let all: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(
        result.stdout_tail,
        all.as_bytes()[all.len() - DEFAULT_TAIL_BYTES..]
    );
}

#[tokio::test]
async fn reports_exit_code_and_terminating_signal() {
    let (result, _) = run(&process(DEFAULT_KILL_GRACE), request(sh("exit 3"))).await;
    assert_eq!(
        result.outcome,
        ExecOutcome::Exited {
            exit_code: Some(3),
            signal: None
        }
    );
    assert_eq!(result.message, "exited with code 3");

    let (result, _) = run(&process(DEFAULT_KILL_GRACE), request(sh("kill -9 $$"))).await;
    assert_eq!(
        result.outcome,
        ExecOutcome::Exited {
            exit_code: None,
            signal: Some(libc::SIGKILL)
        }
    );
    assert_eq!(result.message, "killed by signal 9 (SIGKILL)");
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut job = spec(
        "sh",
        &[
            "-c",
            "sleep 1000 & echo $! > \"$0\"; wait",
            pidfile.to_str().unwrap(),
        ],
        "1s",
    );
    job.working_dir = None;
    let (result, _) = run(&process(Duration::from_secs(1)), request(job)).await;
    assert_eq!(result.outcome, ExecOutcome::TimedOut, "{}", result.message);
    assert!(
        result.message.starts_with("timed out after 1s"),
        "{}",
        result.message
    );
    let grandchild = read_pid(&pidfile).await;
    let _guard = KillGuard(grandchild);
    assert!(
        wait_until_gone(grandchild).await,
        "grandchild {grandchild} survived the timeout"
    );
    let leader = result.pid.expect("a pid") as i32;
    assert!(process_is_gone(leader));
}

#[tokio::test]
async fn sigkill_follows_when_sigterm_is_ignored() {
    let job = spec(
        "sh",
        &["-c", "trap '' TERM; sleep 1000; echo survived"],
        "300ms",
    );
    let (result, _) = run(&process(Duration::from_millis(300)), request(job)).await;
    assert_eq!(result.outcome, ExecOutcome::TimedOut);
    assert!(result.message.contains("SIGKILL"), "{}", result.message);
    assert!(result.stdout_tail.is_empty());
}

#[tokio::test]
async fn cancellation_ends_the_attempt_and_its_process() {
    let executor = process(DEFAULT_KILL_GRACE);
    let cancel = CancellationToken::new();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            executor
                .run(request(spec("sleep", &["1000"], "")), cancel, tx)
                .await
        }
    });
    let (pid, _) = rx.await.expect("started");
    cancel.cancel();
    let result = tokio::time::timeout(TEST_DEADLINE, task)
        .await
        .expect("ends")
        .expect("no panic");
    assert_eq!(result.outcome, ExecOutcome::Cancelled);
    assert_eq!(result.message, "cancelled; terminated with SIGTERM");
    let pid = pid.expect("a pid") as i32;
    assert!(wait_until_gone(pid).await);
}

#[tokio::test]
async fn an_already_cancelled_attempt_never_starts() {
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (tx, rx) = oneshot::channel();
    let result = process(DEFAULT_KILL_GRACE)
        .run(request(sh("echo started")), cancel, tx)
        .await;
    assert_eq!(result.outcome, ExecOutcome::Cancelled);
    assert_eq!(result.pid, None);
    assert!(rx.await.is_err(), "nothing was started");
}

#[tokio::test]
async fn dropping_the_attempt_kills_its_group() {
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        process(DEFAULT_KILL_GRACE)
            .run(
                request(spec("sleep", &["1000"], "")),
                CancellationToken::new(),
                tx,
            )
            .await
    });
    let (pid, _) = rx.await.expect("started");
    task.abort();
    let _ = task.await;
    assert!(wait_until_gone(pid.expect("a pid") as i32).await);
}

#[tokio::test]
async fn start_failures_say_why() {
    let (result, started) = run(
        &process(DEFAULT_KILL_GRACE),
        request(spec("nosuchcmd-augur", &[], "")),
    )
    .await;
    assert_eq!(result.outcome, ExecOutcome::StartFailed);
    assert!(
        result
            .message
            .starts_with("cannot start \"nosuchcmd-augur\": not found on PATH ("),
        "{}",
        result.message
    );
    assert_eq!(result.started_at_ms, result.finished_at_ms);
    assert_eq!(result.pid, None);
    assert!(started.is_none());

    let mut job = sh("true");
    job.working_dir = Some("/nonexistent/augur-dir".into());
    let (result, _) = run(&process(DEFAULT_KILL_GRACE), request(job)).await;
    assert_eq!(result.outcome, ExecOutcome::StartFailed);
    assert!(
        result
            .message
            .contains("working dir \"/nonexistent/augur-dir\""),
        "{}",
        result.message
    );
}

#[tokio::test]
async fn environment_has_job_variables_but_not_worker_secrets() {
    // Edition 2021: set_var is safe; no other test reads this variable.
    std::env::set_var("AUGUR_SECRET", "hunter2");
    let mut job = spec("env", &[], "");
    job.env.insert("GREETING".into(), "hi".into());
    let dir = tempfile::tempdir().unwrap();
    job.working_dir = Some(dir.path().to_str().unwrap().into());
    let mut req = request(job);
    req.attempt = 3;
    req.extra_env
        .push(("TRACEPARENT".into(), "00-abc-def-01".into()));
    let job_id = req.job_id;
    let (result, _) = run(&process(DEFAULT_KILL_GRACE), req).await;
    let env = String::from_utf8_lossy(&result.stdout_tail);
    let lines: Vec<&str> = env.lines().collect();
    assert!(
        lines.contains(&format!("AUGUR_JOB_ID={job_id}").as_str()),
        "{env}"
    );
    assert!(lines.contains(&"AUGUR_ATTEMPT=3"), "{env}");
    assert!(lines.contains(&"GREETING=hi"), "{env}");
    assert!(lines.contains(&"TRACEPARENT=00-abc-def-01"), "{env}");
    assert!(
        lines.iter().any(|l| l.starts_with("PATH=")),
        "worker env is inherited: {env}"
    );
    assert!(!env.contains("AUGUR_SECRET"), "{env}");
}

#[tokio::test]
async fn a_background_child_holding_stdout_does_not_hang_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let job = spec(
        "sh",
        &[
            "-c",
            "sleep 1000 & echo $! > \"$0\"; echo hi",
            pidfile.to_str().unwrap(),
        ],
        "",
    );
    let (result, _) = run(&process(DEFAULT_KILL_GRACE), request(job)).await;
    assert!(result.outcome.is_success(), "{}", result.message);
    assert_eq!(result.stdout_tail, b"hi\n");
    let straggler = read_pid(&pidfile).await;
    let _guard = KillGuard(straggler);
    assert!(
        wait_until_gone(straggler).await,
        "straggler {straggler} survived its job"
    );
}

#[tokio::test]
async fn a_process_that_left_the_group_cannot_hold_the_attempt_open() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // The escaped process keeps stdout open; the job waits until it has escaped.
    let script = "setsid sh -c 'echo $$ > \"$0\"; exec sleep 1000' \"$0\" & \
                  while [ ! -s \"$0\" ]; do sleep 0.05; done; echo hi";
    let job = spec("sh", &["-c", script, pidfile.to_str().unwrap()], "");
    let (result, _) = run(&process(DEFAULT_KILL_GRACE), request(job)).await;
    let escaped = read_pid(&pidfile).await;
    let _guard = KillGuard(escaped);
    assert!(result.outcome.is_success(), "{}", result.message);
    assert_eq!(result.stdout_tail, b"hi\n");
    assert!(
        result.message.contains("output may be incomplete"),
        "{}",
        result.message
    );
}

#[tokio::test]
async fn null_executor_succeeds_at_once() {
    let (result, started) = run(&Executor::Null, request(sh("exit 1"))).await;
    assert!(result.outcome.is_success());
    assert_eq!(result.pid, None);
    assert_eq!(result.usage, augur_core::Usage::default());
    assert_eq!(started.map(|s| s.0), Some(None));
    assert_eq!(Executor::Null.kind(), "null");
}

fn hardened(run_as: Option<RunAs>, allow: &[&str]) -> Executor {
    Executor::Process(ProcessConfig {
        run_as,
        allowlist: CommandAllowlist::new(allow.iter().map(|p| p.to_string()).collect()).unwrap(),
        ..ProcessConfig::default()
    })
}

#[tokio::test]
async fn a_command_outside_the_allowlist_is_refused_with_a_stable_reason() {
    let executor = hardened(None, &["sh", "/usr/bin/i?"]);
    let (result, started) = run(&executor, request(spec("env", &[], ""))).await;
    assert_eq!(result.outcome, ExecOutcome::StartFailed);
    assert_eq!(
        result.message,
        "not_allowed: env is not in this worker's allowlist"
    );
    assert!(started.is_none());

    // A job's own PATH cannot point an allowed name elsewhere: the name is
    // looked up on the worker's PATH, where `sh` is the system's.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("sh");
    std::fs::write(&fake, "#!/bin/sh\necho fake\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut job = sh("echo real");
    job.env
        .insert("PATH".into(), dir.path().to_str().unwrap().into());
    let (result, _) = run(&executor, request(job)).await;
    assert!(result.outcome.is_success(), "{}", result.message);
    assert_eq!(result.stdout_tail, b"real\n");

    // The same fake named by its path matches no name pattern.
    let (result, _) = run(&executor, request(spec(fake.to_str().unwrap(), &[], ""))).await;
    assert!(
        result.message.starts_with("not_allowed: "),
        "{}",
        result.message
    );
    // A path pattern admits the resolved program (`id` found as /usr/bin/id).
    if Path::new("/usr/bin/id").exists() {
        let (result, _) = run(&executor, request(spec("id", &["-u"], ""))).await;
        assert!(result.outcome.is_success(), "{}", result.message);
    }
}

#[tokio::test]
async fn run_as_nobody_changes_uid_groups_and_home() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        // Switching users needs root; `RunAs::resolve` refusal is tested in run_as.rs.
        eprintln!("skipped: not root");
        return;
    }
    let nobody = RunAs::resolve("nobody").expect("nobody exists on Debian");
    let executor = hardened(Some(nobody.clone()), &[]);
    let (result, _) = run(
        &executor,
        request(sh("id -u; id -G; echo \"$HOME $USER\"; pwd")),
    )
    .await;
    assert!(result.outcome.is_success(), "{}", result.message);
    let out = String::from_utf8_lossy(&result.stdout_tail);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], nobody.uid.to_string(), "{out}");
    assert!(
        !lines[1].split(' ').any(|g| g == "0"),
        "root group kept: {out}"
    );
    assert_eq!(
        lines[2],
        format!("{} {}", nobody.home.display(), nobody.name),
        "{out}"
    );
    // nobody's home (/nonexistent) cannot be entered: the job starts in `/`.
    if !nobody.home.is_dir() {
        assert_eq!(lines[3], "/", "{out}");
    }

    // A working dir the user cannot enter fails the start, naming user and dir.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut job = sh("true");
    job.working_dir = Some(private.path().to_str().unwrap().into());
    let (result, _) = run(&executor, request(job)).await;
    assert_eq!(result.outcome, ExecOutcome::StartFailed);
    assert!(
        result.message.contains("as user nobody") && result.message.contains("working dir"),
        "{}",
        result.message
    );

    // A working dir the user may enter works, and output capture still does.
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut job = sh("pwd; echo err >&2");
    job.working_dir = Some(private.path().to_str().unwrap().into());
    let (result, _) = run(&executor, request(job)).await;
    assert!(result.outcome.is_success(), "{}", result.message);
    assert_eq!(
        String::from_utf8_lossy(&result.stdout_tail).trim(),
        private.path().to_str().unwrap()
    );
    assert_eq!(result.stderr_tail, b"err\n");
}

#[tokio::test]
async fn caps_are_checked_again_before_exec() {
    // A spec that bypassed validation (built directly) is still refused.
    let mut job = sh("true");
    job.args = vec!["x".to_string(); augur_core::spec::MAX_ARGS + 1];
    let (result, _) = run(&process(DEFAULT_KILL_GRACE), request(job)).await;
    assert_eq!(result.outcome, ExecOutcome::StartFailed);
    assert!(
        result.message.starts_with("refused: spec.args: has"),
        "{}",
        result.message
    );

    let mut job = sh("true");
    job.args = vec!["a".repeat(augur_core::spec::MAX_ARGV_BYTES)];
    let (result, _) = run(&process(DEFAULT_KILL_GRACE), request(job)).await;
    assert!(
        result.message.contains("the limit is 262144"),
        "{}",
        result.message
    );

    let mut job = sh("true");
    job.env
        .insert("BIG".into(), "v".repeat(augur_core::spec::MAX_ENV_BYTES));
    let (result, _) = run(&process(DEFAULT_KILL_GRACE), request(job)).await;
    assert!(
        result.message.starts_with("refused: spec.env: is"),
        "{}",
        result.message
    );
}

#[tokio::test]
async fn files_left_in_augur_outputs_come_back_with_the_result_and_the_directory_goes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outputs_dir = dir.path().join("outputs-work").join("job-1");
    let mut req = request(sh(
        r#"printf 3 > "$AUGUR_OUTPUTS/count"; printf 'a\nb\n' > "$AUGUR_OUTPUTS/files.lines""#,
    ));
    req.outputs_dir = Some(outputs_dir.clone());
    let (result, _) = run(&process(Duration::from_secs(1)), req).await;
    assert!(result.outcome.is_success(), "{result:?}");
    assert_eq!(result.outputs.get("count").map(String::as_str), Some("3"));
    assert_eq!(
        result.outputs.get("files.lines").map(String::as_str),
        Some("a\nb\n")
    );
    assert!(
        !outputs_dir.exists(),
        "the outputs directory was left behind"
    );

    // Too big: the attempt's outcome stands, its outputs are refused.
    let mut req = request(sh(
        r#"head -c 5000 /dev/zero | tr '\0' x > "$AUGUR_OUTPUTS/big""#,
    ));
    req.outputs_dir = Some(outputs_dir.clone());
    let (result, _) = run(&process(Duration::from_secs(1)), req).await;
    assert!(result.outcome.is_success(), "{result:?}");
    assert!(result.outputs.is_empty());
    assert!(
        result.message.contains("outputs refused") && result.message.contains("5000 bytes"),
        "{}",
        result.message
    );
}
