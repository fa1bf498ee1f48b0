//! Rough edges a new user hits at the command line (issue 13, §3): output
//! into a closed pipe, an advertise address workers could not use, a
//! negative duration, and resource quantities.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use augur_e2e::{augur_bin, run_with_timeout, Cluster, ClusterConfig};

/// `augur list | head -1` used to panic with "failed printing to stdout:
/// Broken pipe" and a stack trace; it ends quietly, as `ls | head` does.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let cluster = Cluster::start(ClusterConfig::default());
    for i in 0..3 {
        cluster.submit(&["--", "sh", "-c", &format!("echo {i}")]);
    }
    let mut child = Command::new(cluster.augur_bin())
        .env_remove("AUGUR_ENDPOINT")
        .env_remove("AUGUR_TOKEN")
        .args(["--endpoint", &cluster.api_url(0), "list"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn augur list");
    // The reader goes away before anything is written.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("wait");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "{status}: {stderr}"
    );
}

/// `--advertise 127.0.0.1:7070` (no scheme) was accepted, and every worker
/// then failed with "invalid URL, scheme is missing" in its own log. A
/// host:port gets the API's scheme; an unusable value stops the coordinator
/// at start, naming the flag.
#[test]
fn an_unusable_advertise_address_stops_the_coordinator_at_start() {
    let out = run_with_timeout(
        Command::new(augur_bin())
            .args([
                "coordinator",
                "--insecure",
                "--etcd-endpoints",
                "http://127.0.0.1:1",
            ])
            .args(["--advertise", "https://127.0.0.1:7070"]),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--advertise") && stderr.contains("http://"),
        "{stderr}"
    );
}

/// `augur submit --timeout -1s` got clap's tip to write `-- -1s`, which would
/// have made it the command; it says durations cannot be negative.
#[test]
fn a_negative_duration_is_refused_as_such() {
    for flag in ["--timeout", "--backoff", "--max-backoff"] {
        let out = run_with_timeout(
            Command::new(augur_bin()).args(["submit", flag, "-1s", "--", "true"]),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains("durations cannot be negative"),
            "{flag}: {stderr}"
        );
        assert!(!stderr.contains("-- -1"), "{flag}: {stderr}");
    }
}

/// `--cpu` and `--memory` take Kubernetes quantities; a malformed one is
/// refused naming the flag, and nothing is submitted.
#[test]
fn cpu_and_memory_take_quantities() {
    let cluster = Cluster::start(ClusterConfig::default());
    let id = cluster.submit(&["--cpu", "250m", "--memory", "64Mi", "--", "true"]);
    let job = cluster.get_job(&id);
    assert_eq!(job["resources"]["cpu_millis"], 250, "{job}");
    assert_eq!(job["resources"]["memory_bytes"], 64 * 1024 * 1024, "{job}");
    for (flag, value) in [("--cpu", "1Gi"), ("--memory", "2GB"), ("--memory", "-1Mi")] {
        let out = cluster.cli(&["submit", flag, value, "--", "true"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}
