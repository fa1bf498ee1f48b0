//! Security end to end, with real processes and real TLS: the coordinator
//! refuses to start open, API tokens and roles, revocation and expiry, job
//! ownership, worker join tokens, mTLS (wrong CA, untrusted worker
//! certificate), rate limits, and no secret in any log or job record.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use augur_e2e::exposition::{scrape, Exposition};
use augur_e2e::{augur_bin, json_str, poll_until, run_with_timeout, Cluster, ClusterConfig};

const DEADLINE: Duration = Duration::from_secs(60);
const ADMIN: &str = "admin-secret-0123456789abcdef";
const JOIN: &str = "join-secret-fedcba9876543210";

struct Secrets {
    _dir: tempfile::TempDir,
    root: PathBuf,
    admin_file: String,
    join_file: String,
}

fn secrets() -> Secrets {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let admin_file = root.join("admin.token");
    let join_file = root.join("join.token");
    std::fs::write(&admin_file, format!("{ADMIN}\n")).expect("write admin token");
    std::fs::write(&join_file, JOIN).expect("write join token");
    Secrets {
        _dir: dir,
        admin_file: admin_file.to_string_lossy().into_owned(),
        join_file: join_file.to_string_lossy().into_owned(),
        root,
    }
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|x| x.to_string()).collect()
}

/// `augur <args>` against coordinator 0 with exactly these credentials.
fn cli_as(cluster: &Cluster, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(cluster.augur_bin());
    command
        .env_remove("AUGUR_TOKEN")
        .env_remove("AUGUR_ENDPOINT")
        .args(["--endpoint", &cluster.api_url(0)]);
    for (k, v) in cluster_config_env(cluster) {
        command.env(k, v);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    run_with_timeout(command.args(args), Duration::from_secs(30))
}

/// The TLS variables the cluster's CLI calls use, without the token.
fn cluster_config_env(cluster: &Cluster) -> Vec<(String, String)> {
    cluster
        .cli_env()
        .iter()
        .filter(|(k, _)| k != "AUGUR_TOKEN")
        .cloned()
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn refused(out: &Output, code: &str, what: &str) {
    assert!(
        !out.status.success() && stderr(out).contains(code),
        "{what}: expected {code}, got exit {} stdout {:?} stderr {:?}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

fn create_token(cluster: &Cluster, name: &str, role: &str, extra: &[&str]) -> String {
    let mut args = vec!["token", "create", "--name", name, "--role", role];
    args.extend_from_slice(extra);
    let out = cli_as(cluster, &[("AUGUR_TOKEN", ADMIN)], &args);
    assert!(
        out.status.success(),
        "token create {name}: {}",
        stderr(&out)
    );
    let secret = stdout(&out);
    assert!(secret.starts_with("augur_"), "secret {secret:?}");
    secret
}

/// Every log file under `dir`, concatenated.
fn all_logs(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    text
}

/// Two workers, coordinators requiring the admin and join tokens (plus
/// `extra` flags), and the harness's own CLI calls made as the admin.
fn token_cluster(secrets: &Secrets, extra: &[&str]) -> Cluster {
    let mut coordinator = s(&[
        "--admin-token-file",
        &secrets.admin_file,
        "--join-token-file",
        &secrets.join_file,
    ]);
    coordinator.extend(s(extra));
    Cluster::start(ClusterConfig {
        workers: 2,
        extra_coordinator_args: coordinator,
        extra_worker_args: s(&["--join-token-file", &secrets.join_file]),
        cli_env: vec![("AUGUR_TOKEN".into(), ADMIN.into())],
        ..Default::default()
    })
}

/// Jobs submitted with `token` all succeed elsewhere while worker `refused`
/// (started with bad credentials) never becomes ready.
fn jobs_avoid_refused_worker(cluster: &Cluster, token: &str, refused: &str) {
    let ids: Vec<String> = (0..6)
        .map(|i| {
            stdout(&cli_as(
                cluster,
                &[("AUGUR_TOKEN", token)],
                &["submit", "--", "sh", "-c", &format!("echo {i}")],
            ))
        })
        .collect();
    for id in &ids {
        let job = cluster.wait_terminal(id, DEADLINE);
        assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
        assert_ne!(json_str(&job, "worker_id"), refused, "{refused} ran {id}");
    }
    // Never registered: not listed anywhere, not counted in augur_workers.
    let status = cluster.cluster_status();
    let listed = status["workers"]
        .as_array()
        .is_some_and(|ws| ws.iter().any(|w| w["id"] == refused));
    assert!(!listed, "{refused}, refused, is listed: {status}");
    let workers = cluster.workers();
    assert!(
        workers.iter().all(|w| w["id"] != refused),
        "{refused}, refused, is in `augur workers`: {workers:?}"
    );
    // The leader's gauge (coordinator `cN` is index N-1).
    let leader = json_str(&status, "leader")
        .trim_start_matches('c')
        .parse::<usize>()
        .expect("a leader named cN");
    let text = scrape(cluster.metrics_addr(leader - 1), false).expect("leader metrics");
    let counted = Exposition::parse(&text)
        .expect("parses")
        .sum("augur_workers", &[]);
    assert_eq!(
        counted,
        workers.len() as f64,
        "augur_workers counts {counted}, `augur workers` lists {}",
        workers.len()
    );
}

#[test]
fn security_coordinator_refuses_to_start_open() {
    let out = run_with_timeout(
        Command::new(augur_bin())
            .env_remove("AUGUR_INSECURE")
            .env_remove("AUGUR_ADMIN_TOKEN")
            .env_remove("AUGUR_JOIN_TOKEN")
            .args(["coordinator", "--etcd-endpoints", "http://127.0.0.1:9"])
            .args(["--listen", "127.0.0.1:0"]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "an open coordinator started");
    let err = stderr(&out);
    assert!(
        err.contains("refusing to start") && err.contains("--insecure"),
        "unclear refusal: {err}"
    );
}

#[test]
fn security_tokens_roles_ownership_revocation_and_expiry() {
    let secrets = secrets();
    let mut cluster = token_cluster(&secrets, &[]);

    // No token, a wrong token.
    refused(
        &cli_as(&cluster, &[], &["list"]),
        "Unauthenticated",
        "no token",
    );
    refused(
        &cli_as(&cluster, &[("AUGUR_TOKEN", "augur_nope")], &["list"]),
        "Unauthenticated",
        "unknown token",
    );

    let viewer = create_token(&cluster, "viewer1", "viewer", &[]);
    let alice = create_token(&cluster, "alice", "submitter", &[]);
    let bob = create_token(&cluster, "bob", "submitter", &[]);
    let brief = create_token(&cluster, "brief", "viewer", &["--expires", "2s"]);

    // A viewer reads but cannot submit.
    assert!(cli_as(&cluster, &[("AUGUR_TOKEN", &viewer)], &["list"])
        .status
        .success());
    let denied = cli_as(
        &cluster,
        &[("AUGUR_TOKEN", &viewer)],
        &["submit", "--", "true"],
    );
    refused(&denied, "PermissionDenied", "viewer submits");
    assert!(stderr(&denied).contains("viewer1"), "{}", stderr(&denied));
    // Only admins manage tokens.
    refused(
        &cli_as(&cluster, &[("AUGUR_TOKEN", &alice)], &["token", "list"]),
        "PermissionDenied",
        "submitter lists tokens",
    );

    // Alice submits; her job runs and records her as owner.
    let out = cli_as(
        &cluster,
        &[("AUGUR_TOKEN", &alice)],
        &["submit", "--wait", "--", "sh", "-c", "echo ok"],
    );
    assert!(out.status.success(), "alice submit: {}", stderr(&out));
    let done = stdout(&out).lines().next().unwrap_or_default().to_string();
    let job = cluster.get_job(&done);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    assert_eq!(json_str(&job, "owner"), "alice", "{job}");

    // Bob cannot cancel Alice's job; Alice can.
    let long = stdout(&cli_as(
        &cluster,
        &[("AUGUR_TOKEN", &alice)],
        &["submit", "--", "sleep", "60"],
    ));
    let bob_cancel = cli_as(&cluster, &[("AUGUR_TOKEN", &bob)], &["cancel", &long]);
    refused(&bob_cancel, "PermissionDenied", "bob cancels alice's job");
    assert!(
        stderr(&bob_cancel).contains("alice"),
        "{}",
        stderr(&bob_cancel)
    );
    let alice_cancel = cli_as(&cluster, &[("AUGUR_TOKEN", &alice)], &["cancel", &long]);
    assert!(alice_cancel.status.success(), "{}", stderr(&alice_cancel));
    let cancelled = cluster.wait_terminal(&long, DEADLINE);
    assert_eq!(json_str(&cancelled, "state"), "cancelled");

    // Schedules belong to their creator too: alice's schedule fires jobs
    // owned by alice; bob (and a viewer) may neither pause nor delete it.
    let created = cli_as(
        &cluster,
        &[("AUGUR_TOKEN", &alice)],
        &[
            "--output",
            "json",
            "schedule",
            "create",
            "nightly",
            "--cron",
            "* * * * * *",
            "--name",
            "nightly-job",
            "--",
            "true",
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        stdout(&created).contains("\"owner\":\"alice\""),
        "{}",
        stdout(&created)
    );
    for (who, token, code) in [
        ("bob", &bob, "PermissionDenied"),
        ("viewer", &viewer, "PermissionDenied"),
    ] {
        for verb in ["pause", "delete"] {
            let out = cli_as(
                &cluster,
                &[("AUGUR_TOKEN", token)],
                &["schedule", verb, "nightly"],
            );
            refused(&out, code, &format!("{who} {verb}s alice's schedule"));
        }
    }
    let fired = poll_until(DEADLINE, "a job fired by alice's schedule", || {
        cluster
            .list_jobs(None)
            .into_iter()
            .find(|j| json_str(j, "name") == "nightly-job")
            .ok_or_else(|| "none yet".to_string())
    });
    assert_eq!(json_str(&fired, "owner"), "alice", "{fired}");
    for verb in ["pause", "delete"] {
        let out = cli_as(
            &cluster,
            &[("AUGUR_TOKEN", &alice)],
            &["schedule", verb, "nightly"],
        );
        assert!(out.status.success(), "alice {verb}s: {}", stderr(&out));
    }

    // Revocation and expiry.
    let revoke = cli_as(
        &cluster,
        &[("AUGUR_TOKEN", ADMIN)],
        &["token", "revoke", "viewer1"],
    );
    assert!(revoke.status.success(), "{}", stderr(&revoke));
    refused(
        &cli_as(&cluster, &[("AUGUR_TOKEN", &viewer)], &["list"]),
        "Unauthenticated",
        "revoked token",
    );
    poll_until(Duration::from_secs(10), "the brief token to expire", || {
        let out = cli_as(&cluster, &[("AUGUR_TOKEN", &brief)], &["list"]);
        if !out.status.success() && stderr(&out).contains("expired") {
            Ok(())
        } else {
            Err(format!("{} {}", out.status, stderr(&out)))
        }
    });

    // Listing shows names and roles, never secrets.
    let listed = cluster.cli_ok(&["--output", "json", "token", "list"]);
    assert!(listed.contains("alice") && listed.contains("submitter"));
    for secret in [ADMIN, JOIN, alice.as_str(), bob.as_str(), viewer.as_str()] {
        assert!(!listed.contains(secret), "token list shows a secret");
    }

    // A worker with a wrong join token is refused and gets no work.
    let wrong = secrets.root.join("wrong.token");
    std::fs::write(&wrong, "not-the-join-token").expect("write");
    cluster.config_mut().extra_worker_args = s(&["--join-token-file", &wrong.to_string_lossy()]);
    cluster.start_worker("w3");
    let w3_log = cluster.dir().join("worker-w3.log");
    poll_until(DEADLINE, "w3 to be refused", || {
        let log = std::fs::read_to_string(&w3_log).unwrap_or_default();
        if log.contains("wrong join token") {
            Ok(())
        } else {
            Err(log.lines().last().unwrap_or_default().to_string())
        }
    });
    jobs_avoid_refused_worker(&cluster, &alice, "w3");

    // No secret in any log line or job record.
    let logs = all_logs(cluster.dir());
    let records = cluster.cli_ok(&["--output", "json", "list"]);
    for secret in [
        ADMIN,
        JOIN,
        alice.as_str(),
        bob.as_str(),
        viewer.as_str(),
        brief.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret is in the logs");
        assert!(!records.contains(secret), "a secret is in a job record");
    }
    assert!(logs.contains("api call refused"), "denials are audited");

    // ... and counted: augur_api_refusals_total{action, code}, summed over
    // the coordinators (each counts the calls it refused).
    let refusals = |code: &str, action: Option<&str>| {
        let mut total = 0.0;
        for i in 0..cluster.coordinator_count() {
            let text = scrape(cluster.metrics_addr(i), false).expect("scrape");
            let exposition = Exposition::parse(&text).expect("parses");
            let mut labels = vec![("code", code)];
            if let Some(action) = action {
                labels.push(("action", action));
            }
            total += exposition.sum("augur_api_refusals_total", &labels);
        }
        total
    };
    // No token, an unknown one, a revoked one (more while polling for expiry).
    let unauthenticated = refusals("unauthenticated", None);
    assert!(unauthenticated >= 3.0, "{unauthenticated}");
    // The viewer submitting, alice listing tokens, bob cancelling.
    let denied = refusals("permission_denied", None);
    assert!(denied >= 3.0, "{denied}");
    assert_eq!(refusals("permission_denied", Some("cancel")), 1.0);
    // bob's pause and delete of alice's schedule (the viewer's are role checks).
    assert_eq!(refusals("permission_denied", Some("schedule_pause")), 1.0);
    assert_eq!(refusals("permission_denied", Some("schedule_delete")), 1.0);
    let workers = refusals("unauthenticated", Some("worker_attach"));
    assert!(workers >= 1.0, "{workers}");
}

#[test]
fn security_rate_limit_refuses_bursts_and_keeps_accepted_jobs() {
    let secrets = secrets();
    let cluster = token_cluster(&secrets, &["--rate-limit", "2", "--rate-burst", "5"]);
    let sub = create_token(&cluster, "burst", "submitter", &[]);
    let mut accepted = Vec::new();
    let mut exhausted = 0;
    for i in 0..15 {
        let out = cli_as(
            &cluster,
            &[("AUGUR_TOKEN", &sub)],
            &["submit", "--", "sh", "-c", &format!("echo {i}")],
        );
        if out.status.success() {
            accepted.push(stdout(&out));
        } else {
            assert!(
                stderr(&out).contains("ResourceExhausted") && stderr(&out).contains("retry after"),
                "unexpected refusal: {}",
                stderr(&out)
            );
            exhausted += 1;
        }
    }
    assert!(exhausted > 0, "no request was limited");
    assert!(!accepted.is_empty(), "nothing was accepted");
    for id in &accepted {
        let job = cluster.wait_terminal(id, DEADLINE);
        assert_eq!(json_str(&job, "state"), "succeeded", "{job}");
    }
}

#[test]
fn security_mtls_end_to_end_with_untrusted_certificates_refused() {
    let secrets = secrets();
    let pki = augur_tls::generate_dev_pki(
        &secrets.root.join("pki"),
        &["localhost".into(), "127.0.0.1".into()],
        "operator",
    )
    .expect("dev pki");
    // Each worker's certificate names it: a worker may only attach as the
    // worker its certificate names.
    for name in ["w0", "w1", "w2", "impostor"] {
        augur_tls::generate_client_cert(&secrets.root.join("pki"), name).expect("worker cert");
    }
    let worker_cert = augur_tls::CertKeyFiles {
        cert: secrets.root.join("pki").join("client-{node}.pem"),
        key: secrets.root.join("pki").join("client-{node}-key.pem"),
    };
    let rogue = augur_tls::generate_dev_pki(
        &secrets.root.join("rogue"),
        &["localhost".into(), "127.0.0.1".into()],
        "rogue",
    )
    .expect("rogue pki");
    let p = |path: &Path| path.to_string_lossy().into_owned();
    let mut cluster = Cluster::start(ClusterConfig {
        workers: 2,
        tls: true,
        extra_coordinator_args: s(&[
            "--admin-token-file",
            &secrets.admin_file,
            "--tls-cert",
            &p(&pki.server_cert),
            "--tls-key",
            &p(&pki.server_key),
            "--tls-client-ca",
            &p(&pki.ca_cert),
        ]),
        extra_worker_args: s(&[
            "--tls-ca",
            &p(&pki.ca_cert),
            "--tls-cert",
            &p(&worker_cert.cert),
            "--tls-key",
            &p(&worker_cert.key),
        ]),
        cli_env: vec![
            ("AUGUR_TOKEN".into(), ADMIN.into()),
            ("AUGUR_CA_CERT".into(), p(&pki.ca_cert)),
            ("AUGUR_CLIENT_CERT".into(), p(&pki.client_cert)),
            ("AUGUR_CLIENT_KEY".into(), p(&pki.client_key)),
        ],
        ..Default::default()
    });
    // A job over mTLS, placed on a worker that attached by certificate.
    let id = cluster.submit(&["--", "sh", "-c", "echo over-mtls"]);
    let job = cluster.wait_terminal(&id, DEADLINE);
    assert_eq!(json_str(&job, "state"), "succeeded", "{job}");

    // A client trusting the wrong CA fails the handshake.
    let wrong_ca = cli_as(
        &cluster,
        &[
            ("AUGUR_TOKEN", ADMIN),
            ("AUGUR_CA_CERT", &p(&rogue.ca_cert)),
        ],
        &["list"],
    );
    assert!(!wrong_ca.status.success(), "wrong CA accepted");
    // A client with a certificate of another CA is refused by the server.
    let rogue_client = cli_as(
        &cluster,
        &[
            ("AUGUR_TOKEN", ADMIN),
            ("AUGUR_CLIENT_CERT", &p(&rogue.client_cert)),
            ("AUGUR_CLIENT_KEY", &p(&rogue.client_key)),
        ],
        &["list"],
    );
    assert!(
        !rogue_client.status.success(),
        "untrusted client certificate accepted"
    );
    // Plain HTTP to a TLS port fails too.
    let plain = run_with_timeout(
        Command::new(cluster.augur_bin())
            .env_remove("AUGUR_CA_CERT")
            .args([
                "--endpoint",
                &cluster.api_url(0).replace("https://", "http://"),
            ])
            .args(["--token", ADMIN, "list"]),
        Duration::from_secs(30),
    );
    assert!(!plain.status.success(), "plaintext accepted on a TLS port");

    // A worker with an untrusted certificate never attaches and runs nothing.
    cluster.config_mut().extra_worker_args = s(&[
        "--tls-ca",
        &p(&pki.ca_cert),
        "--tls-cert",
        &p(&rogue.client_cert),
        "--tls-key",
        &p(&rogue.client_key),
    ]);
    cluster.start_worker("w3");
    jobs_avoid_refused_worker(&cluster, ADMIN, "w3");
    // ... and says so at warning level (the rejected handshake).
    let w3_log = cluster.dir().join("worker-w3.log");
    poll_until(DEADLINE, "w3 to warn that it gets no stream", || {
        let log = std::fs::read_to_string(&w3_log).unwrap_or_default();
        match log
            .lines()
            .find(|l| l.contains("cannot get a stream to the leader"))
        {
            Some(line) if line.contains("WARN") => Ok(()),
            Some(line) => Err(format!("not a warning: {line}")),
            None => Err(log.lines().last().unwrap_or_default().to_string()),
        }
    });
    // A worker whose certificate (of the cluster CA) names another worker
    // cannot attach under its own id: the certificate is the identity.
    let pki_dir = secrets.root.join("pki");
    cluster.config_mut().extra_worker_args = s(&[
        "--tls-ca",
        &p(&pki.ca_cert),
        "--tls-cert",
        &p(&pki_dir.join("client-impostor.pem")),
        "--tls-key",
        &p(&pki_dir.join("client-impostor-key.pem")),
    ]);
    cluster.start_worker("w4");
    jobs_avoid_refused_worker(&cluster, ADMIN, "w4");
    poll_until(
        DEADLINE,
        "the leader to audit the mismatched certificate",
        || {
            let logs = all_logs(cluster.dir());
            if logs
                .lines()
                .any(|l| l.contains("worker certificate is for") && l.contains("impostor"))
            {
                Ok(())
            } else {
                Err("no refusal naming the certificate".into())
            }
        },
    );
    let logs = all_logs(cluster.dir());
    assert!(!logs.contains(ADMIN), "the admin token is in the logs");
}

/// Workflows go through the same authentication and authorisation as jobs,
/// through the CLI: a viewer cannot submit, a submitter owns its runs (and
/// their jobs), another submitter can neither cancel nor retry them, and
/// `--wait` exits 0 / 10 / 11 / 12 as `submit --wait` does.
#[test]
fn security_workflow_runs_belong_to_their_submitter() {
    let secrets = secrets();
    let cluster = token_cluster(&secrets, &[]);
    let viewer = create_token(&cluster, "viewer1", "viewer", &[]);
    let alice = create_token(&cluster, "alice", "submitter", &[]);
    let bob = create_token(&cluster, "bob", "submitter", &[]);
    let file = |name: &str, text: &str| {
        let path = secrets.root.join(name);
        std::fs::write(&path, text).expect("workflow file");
        path.to_string_lossy().into_owned()
    };
    let ok = file(
        "ok.yaml",
        "name: ok\ntasks:\n- {name: a, command: [sh, -c, 'echo 1 > \"$AUGUR_OUTPUTS/one\"']}\n- {name: b, depends_on: [a], command: [\"true\"]}\n",
    );
    let bad = file(
        "bad.yaml",
        "name: bad\ntasks:\n- {name: a, command: [\"false\"]}\n",
    );
    let slow = file(
        "slow.yaml",
        "name: slow\ntimeout: 1s\ntasks:\n- {name: a, command: [sleep, \"60\"]}\n",
    );
    let long = file(
        "long.yaml",
        "name: long\ntasks:\n- {name: a, command: [sleep, \"60\"]}\n",
    );

    refused(
        &cli_as(
            &cluster,
            &[("AUGUR_TOKEN", &viewer)],
            &["workflow", "submit", &ok],
        ),
        "PermissionDenied",
        "viewer submits a workflow",
    );
    let out = cli_as(
        &cluster,
        &[("AUGUR_TOKEN", &alice)],
        &["workflow", "submit", "--wait", &ok],
    );
    assert!(out.status.success(), "alice: {}", stderr(&out));
    let run_id = stdout(&out).lines().next().unwrap_or_default().to_string();
    let shown = cli_as(
        &cluster,
        &[("AUGUR_TOKEN", &viewer)],
        &["--output", "json", "workflow", "get", &run_id],
    );
    assert!(shown.status.success(), "viewer reads: {}", stderr(&shown));
    let run: serde_json::Value = serde_json::from_str(&stdout(&shown)).expect("json");
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["owner"], "alice", "{run}");
    assert_eq!(run["tasks"][0]["outputs"]["one"], "1", "{run}");
    assert!(run["tasks"][0]["item"].is_null(), "{run}");
    let job = cluster.get_job(run["tasks"][0]["job_id"].as_str().unwrap_or_default());
    assert_eq!(json_str(&job, "owner"), "alice", "the run's jobs are hers");

    let code = |file: &str| {
        cli_as(
            &cluster,
            &[("AUGUR_TOKEN", &alice)],
            &["workflow", "submit", "--wait", file],
        )
        .status
        .code()
    };
    assert_eq!(code(&bad), Some(10), "failed");
    assert_eq!(code(&slow), Some(11), "timed out");

    let out = cli_as(
        &cluster,
        &[("AUGUR_TOKEN", &alice)],
        &["workflow", "submit", &long],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let long_id = stdout(&out);
    for action in [
        vec!["workflow", "cancel", &long_id],
        vec!["workflow", "retry", &run_id],
    ] {
        let denied = cli_as(&cluster, &[("AUGUR_TOKEN", &bob)], &action);
        refused(&denied, "PermissionDenied", "bob acts on alice's run");
        assert!(stderr(&denied).contains("alice"), "{}", stderr(&denied));
    }
    let cancelled = cli_as(
        &cluster,
        &[("AUGUR_TOKEN", &alice)],
        &["workflow", "cancel", &long_id],
    );
    assert!(cancelled.status.success(), "{}", stderr(&cancelled));
    let shown = cli_as(
        &cluster,
        &[("AUGUR_TOKEN", &alice)],
        &["--output", "json", "workflow", "get", &long_id],
    );
    let run: serde_json::Value = serde_json::from_str(&stdout(&shown)).expect("json");
    assert_eq!(run["state"], "cancelled", "{run}");
}
