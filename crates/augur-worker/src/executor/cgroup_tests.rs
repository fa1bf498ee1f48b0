//! The process executor with real cgroups (root on a host with a writable v1
//! or v2 hierarchy; skipped elsewhere, as the e2e `cgroups` tests are).

use std::time::Duration;

use augur_core::{JobId, JobSpecInput};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::cgroup::{CgroupOptions, Cgroups};

const DEADLINE: Duration = Duration::from_secs(60);

/// An executor whose attempts run in cgroups, or None (with a note) where
/// this process cannot make them.
fn limited() -> Option<(Executor, Cgroups)> {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: cgroups need root");
        return None;
    }
    let options = CgroupOptions {
        max_job_pids: 64,
        ..CgroupOptions::default()
    };
    let cgroups = match Cgroups::prepare(&crate::cgroup::Host::current().ok()?, &options) {
        Ok(cgroups) => cgroups,
        Err(e) => {
            eprintln!("skipped: no usable cgroup hierarchy: {e}");
            return None;
        }
    };
    let executor = Executor::Process(ProcessConfig {
        kill_grace: Duration::from_millis(200),
        cgroups: Some(cgroups.clone()),
        ..ProcessConfig::default()
    });
    Some((executor, cgroups))
}

fn request(script: &str, memory: &str, timeout: &str) -> ExecRequest {
    let mut input = JobSpecInput {
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        timeout: timeout.into(),
        ..Default::default()
    };
    input.resources.memory_bytes =
        augur_core::quantity::parse_memory_bytes(memory).expect("quantity");
    ExecRequest {
        job_id: JobId::generate(),
        attempt: 1,
        spec: input.validate().expect("valid spec"),
        extra_env: Vec::new(),
        outputs_dir: None,
    }
}

async fn run(executor: &Executor, req: ExecRequest, cancel: CancellationToken) -> ExecResult {
    let (tx, _rx) = oneshot::channel();
    tokio::time::timeout(DEADLINE, executor.run(req, cancel, tx))
        .await
        .expect("the attempt ends within the deadline")
}

fn assert_removed(cgroups: &Cgroups, req_name: &str) {
    for parent in cgroups.parent_dirs() {
        let dir = parent.join(req_name);
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }
}

#[tokio::test]
async fn allocating_past_the_memory_limit_ends_oom_killed() {
    let Some((executor, cgroups)) = limited() else {
        return;
    };
    let req = request("head -c 200000000 /dev/zero | tail", "32Mi", "");
    let name = format!("{}-1", req.job_id);
    let result = run(&executor, req, CancellationToken::new()).await;
    // `tail` is killed; the shell reports it with a non-zero status.
    assert_eq!(result.outcome, ExecOutcome::OomKilled, "{}", result.message);
    assert!(
        result.message.starts_with("oom_killed: "),
        "{}",
        result.message
    );
    assert!(result.message.contains("32 MiB"), "{}", result.message);
    assert!(
        result.usage.peak_memory_bytes > 16 << 20,
        "{:?}",
        result.usage
    );
    assert!(
        result.usage.peak_memory_bytes <= 33 << 20,
        "peak above the limit: {:?}",
        result.usage
    );
    assert_removed(&cgroups, &name);
}

#[tokio::test]
async fn cancel_kills_a_daemon_that_left_the_group_and_removes_the_cgroup() {
    let Some((executor, cgroups)) = limited() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    let script = format!(
        "setsid sh -c 'echo $$ > {0}; exec sleep 1000' </dev/null >/dev/null 2>&1 & \
         while [ ! -s {0} ]; do sleep 0.05; done; exec sleep 1000",
        pidfile.display()
    );
    let req = request(&script, "0", "");
    let name = format!("{}-1", req.job_id);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let path = pidfile.clone();
    tokio::spawn(async move {
        while std::fs::read_to_string(&path).map_or(true, |t| t.trim().is_empty()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        trigger.cancel();
    });
    let result = run(&executor, req, cancel).await;
    assert_eq!(result.outcome, ExecOutcome::Cancelled, "{}", result.message);
    let daemon: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    // The daemon is gone (or a zombie waiting for PID 1) once the attempt ended.
    // SAFETY: signal 0 only checks for existence.
    let alive = unsafe { libc::kill(daemon, 0) } == 0
        && !std::fs::read_to_string(format!("/proc/{daemon}/stat"))
            .unwrap_or_default()
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    if alive {
        // SAFETY: the pid was written by this test's own job.
        unsafe { libc::kill(daemon, libc::SIGKILL) };
    }
    assert!(!alive, "daemon {daemon} escaped the cancel");
    assert_removed(&cgroups, &name);
}

#[tokio::test]
async fn a_job_that_fails_on_its_own_is_not_called_oom_killed() {
    let Some((executor, cgroups)) = limited() else {
        return;
    };
    let req = request("exit 3", "64Mi", "");
    let name = format!("{}-1", req.job_id);
    let result = run(&executor, req, CancellationToken::new()).await;
    assert_eq!(
        result.outcome,
        ExecOutcome::Exited {
            exit_code: Some(3),
            signal: None
        }
    );
    assert!(result.usage.cgroup_cpu_us > 0, "{:?}", result.usage);
    assert_removed(&cgroups, &name);
}
