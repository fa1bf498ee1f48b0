//! Job execution hardening on real workers: jobs run as `nobody`, see none of
//! the worker's secrets, and a command outside the worker's allowlist fails
//! with a stable `not_allowed` reason after a bounded number of attempts.

use std::process::Command;
use std::time::Duration;

use augur_e2e::{json_str, json_u64, run_with_timeout, Cluster, ClusterConfig};

const JOB_DEADLINE: Duration = Duration::from_secs(60);
/// Secrets planted in every worker's environment; no job may see them.
const SECRETS: &[(&str, &str)] = &[
    ("AUGUR_JOIN_TOKEN", "s3cr3t-join-7f3a9c"),
    ("AUGUR_TOKEN", "s3cr3t-api-b81d22"),
    ("ETCDCTL_PASSWORD", "s3cr3t-etcd-5e0c41"),
    ("AWS_SECRET_ACCESS_KEY", "s3cr3t-cloud-9a7b63"),
];

fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn hardened_cluster() -> Cluster {
    let mut extra_worker_args = vec!["--run-as".to_string(), "nobody".to_string()];
    for command in ["sh", "id", "env"] {
        extra_worker_args.extend(["--allow-command".to_string(), command.to_string()]);
    }
    Cluster::start(ClusterConfig {
        workers: 2,
        extra_worker_args,
        extra_worker_env: SECRETS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ClusterConfig::default()
    })
}

#[test]
fn hardening_jobs_run_as_nobody_without_worker_secrets_and_within_the_allowlist() {
    if !is_root() {
        // Switching to another user needs root; CI runs as root.
        eprintln!("skipped: --run-as nobody needs the test to run as root");
        return;
    }
    let cluster = hardened_cluster();

    // A non-zero uid: the job runs as nobody, not as the worker (root).
    let id = cluster.submit(&["--", "id", "-u"]);
    let job = cluster.wait_terminal(&id, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    let uid: u32 = json_str(&job, "stdout_tail")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("`id -u` printed no number ({e}): {job}"));
    assert_ne!(uid, 0, "job ran as root: {job}");

    // The job's environment: its own variables, no secret of the worker.
    let id = cluster.submit(&["--env", "GREETING=hi", "--", "env"]);
    let job = cluster.wait_terminal(&id, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    let env = json_str(&job, "stdout_tail");
    let lines: Vec<&str> = env.lines().collect();
    for line in &lines {
        let key = line.split('=').next().unwrap_or_default();
        assert!(
            !key.starts_with("AUGUR_")
                || ["AUGUR_JOB_ID", "AUGUR_ATTEMPT", "AUGUR_OUTPUTS"].contains(&key),
            "worker variable {key} reached the job:\n{env}"
        );
        assert!(!key.starts_with("ETCD"), "{key} reached the job:\n{env}");
    }
    for (name, secret) in SECRETS {
        assert!(
            !env.contains(secret),
            "{name}'s value reached the job:\n{env}"
        );
    }
    assert!(lines.contains(&"GREETING=hi"), "{env}");
    assert!(lines.contains(&"USER=nobody"), "{env}");
    assert!(
        lines.contains(&format!("AUGUR_JOB_ID={id}").as_str()),
        "{env}"
    );
    assert!(lines.iter().any(|l| l.starts_with("PATH=")), "{env}");

    // Default working dir: nobody's home does not exist, so `/`; and a dir the
    // test made readable works as --workdir, with output captured as usual.
    let id = cluster.submit(&["--", "sh", "-c", "pwd; echo to-stderr >&2"]);
    let job = cluster.wait_terminal(&id, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    assert_eq!(json_str(&job, "stdout_tail").trim(), "/", "{job}");
    assert_eq!(json_str(&job, "stderr_tail").trim(), "to-stderr", "{job}");
    let workdir = cluster.path("job-workdir");
    std::fs::create_dir_all(&workdir).expect("create a working dir");
    let workdir_text = workdir.to_string_lossy().into_owned();
    let id = cluster.submit(&[
        "--workdir",
        &workdir_text,
        "--",
        "sh",
        "-c",
        "pwd; ls >/dev/null",
    ]);
    let job = cluster.wait_terminal(&id, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    assert_eq!(json_str(&job, "stdout_tail").trim(), workdir_text, "{job}");

    // Outside the allowlist: failed with the reason, after exactly its 2 attempts.
    let id = cluster.submit(&["--retries", "1", "--backoff", "100ms", "--", "echo", "hi"]);
    let job = cluster.wait_terminal(&id, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "failed", "{job}");
    let message = json_str(&job, "message");
    assert!(
        message.contains("not_allowed: echo is not in this worker's allowlist"),
        "{job}"
    );
    assert!(message.contains("no attempts left (2 of 2)"), "{job}");
    assert_eq!(json_u64(&job, "attempts"), 2, "{job}");
    assert_eq!(
        json_str(&job, "stdout_tail"),
        "",
        "echo must not have run: {job}"
    );
    // And it stays failed: not requeued behind our back.
    std::thread::sleep(Duration::from_secs(2));
    let again = cluster.get_job(&id);
    assert_eq!(json_str(&again, "state"), "failed", "{again}");
    assert_eq!(json_u64(&again, "attempts"), 2, "{again}");

    // A normal job still succeeds.
    let id = cluster.submit(&["--", "sh", "-c", "echo ok"]);
    let job = cluster.wait_terminal(&id, JOB_DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    assert_eq!(json_str(&job, "stdout_tail").trim(), "ok", "{job}");

    // No secret in any log of the cluster either.
    for entry in std::fs::read_dir(cluster.dir())
        .expect("read the cluster dir")
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for (name, secret) in SECRETS {
                assert!(
                    !text.contains(secret),
                    "{name}'s value in {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn hardening_bad_settings_stop_the_worker_at_start_up() {
    let cluster = Cluster::start(ClusterConfig {
        workers: 0,
        ..ClusterConfig::default()
    });
    let data_dir = cluster.path("refused-worker");
    let data_dir = data_dir.to_string_lossy().into_owned();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--run-as", "no-such-user-augur"],
            "--run-as: no user \"no-such-user-augur\" on this machine",
        ),
        (&["--allow-command", "bin/sh"], "--allow-command \"bin/sh\""),
    ];
    for (args, expected) in cases {
        let out = run_with_timeout(
            Command::new(cluster.augur_bin())
                .args(["worker", "--coordinators", &cluster.coordinator_urls()])
                .args(["--node-id", "refused", "--data-dir", &data_dir])
                .args(*args),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // Nothing registered.
    assert!(cluster.workers().is_empty(), "{:?}", cluster.workers());
}
