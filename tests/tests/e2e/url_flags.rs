//! Every URL-valued flag is checked at start, naming the flag (issue 13 §3):
//! `--advertise 127.0.0.1:7070` used to be accepted and then fail in every
//! worker's log; the other URL flags had the same gap. A bare `host:port` is
//! accepted wherever a URL is.

use std::process::{Command, Output};
use std::time::Duration;

use augur_e2e::{augur_bin, run_with_timeout, Cluster, ClusterConfig};

fn augur(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(augur_bin());
    command
        .env_remove("AUGUR_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .envs(env.iter().copied())
        .args(args);
    run_with_timeout(&mut command, Duration::from_secs(30))
}

fn refused_naming(out: &Output, name: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: accepted; stderr {stderr}");
    assert!(
        stderr.contains(&format!("error: {name}")),
        "{what}: the error does not name {name}: {stderr}"
    );
}

#[test]
fn url_flags_unusable_values_stop_the_command_at_start_naming_the_flag() {
    // Nothing listens on port 1: a command that got past its flags would
    // fail later with a connection error that names no flag.
    let etcd = "http://127.0.0.1:1";
    for (args, env, name) in [
        (
            vec!["coordinator", "--etcd-endpoints", "etcd-1"],
            vec![],
            "--etcd-endpoints",
        ),
        (
            vec![
                "coordinator",
                "--etcd-endpoints",
                "http://127.0.0.1:1,ftp://e2:2379",
            ],
            vec![],
            "--etcd-endpoints",
        ),
        (
            vec!["worker", "--coordinators", "http://c1:7070/v1"],
            vec![],
            "--coordinators",
        ),
        (
            vec!["worker", "--coordinators", "http://c1:7070,c2"],
            vec![],
            "--coordinators",
        ),
        (
            vec!["worker", "--coordinators", "https://c1:7070"],
            vec![],
            "--coordinators",
        ),
        (
            vec![
                "coordinator",
                "--etcd-endpoints",
                etcd,
                "--otlp-endpoint",
                "jaeger",
            ],
            vec![],
            "--otlp-endpoint",
        ),
        (
            vec!["worker", "--coordinators", "http://127.0.0.1:1"],
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://jaeger:4317")],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            vec!["--endpoint", "coordinator-1", "list"],
            vec![],
            "--endpoint",
        ),
        (
            vec!["list"],
            vec![("AUGUR_ENDPOINT", "ftp://c1:7070")],
            "--endpoint",
        ),
        (
            vec!["coordinator", "--etcd-endpoints", etcd, "--advertise", "c1"],
            vec![],
            "--advertise",
        ),
    ] {
        let what = format!("{args:?} {env:?}");
        let out = augur(&args, &env);
        refused_naming(&out, name, &what);
    }
}

#[test]
fn url_flags_accept_host_and_port() {
    let cluster = Cluster::start(ClusterConfig {
        workers: 0,
        ..Default::default()
    });
    let url = cluster.api_url(0);
    let hostport = url.trim_start_matches("http://");
    let out = augur(
        &["--endpoint", hostport, "--output", "json", "cluster"],
        &[],
    );
    assert!(
        out.status.success(),
        "`augur --endpoint {hostport} cluster`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
