//! Augur talks to an etcd that requires TLS and client certificates: a real
//! etcd started with `--client-cert-auth`, a coordinator and a worker given
//! `--etcd-ca/--etcd-cert/--etcd-key`, and one without them that cannot start.

use std::process::{Child, Command};
use std::time::Duration;

use augur_e2e::{
    augur_bin, etcd_tool, free_ports, kill_group, poll_until, run_with_timeout, spawn_logged,
    ClusterLock,
};

const DEADLINE: Duration = Duration::from_secs(90);

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            kill_group(child.id());
            let _ = child.wait();
        }
    }
}

#[test]
fn security_etcd_over_mutual_tls() {
    let _lock = ClusterLock::acquire();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let pki = augur_tls::generate_dev_pki(
        &root.join("pki"),
        &["localhost".into(), "127.0.0.1".into()],
        "augur",
    )
    .expect("pki");
    let p = |path: &std::path::Path| path.to_string_lossy().into_owned();
    let ports = free_ports(4);
    let etcd_url = format!("https://127.0.0.1:{}", ports[0]);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    let api = format!("127.0.0.1:{}", ports[2]);
    let mut children = Killed(Vec::new());
    children.0.push(spawn_logged(
        Command::new(etcd_tool("etcd"))
            .args(["--name", "e", "--data-dir"])
            .arg(root.join("etcd-data"))
            .args(["--listen-client-urls", &etcd_url])
            .args(["--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e={peer_url}")])
            .args(["--cert-file", &p(&pki.server_cert)])
            .args(["--key-file", &p(&pki.server_key)])
            .args(["--trusted-ca-file", &p(&pki.ca_cert)])
            .arg("--client-cert-auth"),
        &root.join("etcd.log"),
    ));
    let etcd_tls = [
        "--etcd-ca".to_string(),
        p(&pki.ca_cert),
        "--etcd-cert".into(),
        p(&pki.client_cert),
        "--etcd-key".into(),
        p(&pki.client_key),
    ];

    // Without the client certificate a coordinator cannot use etcd at all.
    let no_cert = root.join("coordinator-no-cert.log");
    children.0.push(spawn_logged(
        Command::new(augur_bin())
            .args(["coordinator", "--insecure", "--node-id", "nocert"])
            .args(["--etcd-endpoints", &etcd_url, "--etcd-ca", &p(&pki.ca_cert)])
            .args(["--listen", &format!("127.0.0.1:{}", ports[3])]),
        &no_cert,
    ));

    children.0.push(spawn_logged(
        Command::new(augur_bin())
            .args([
                "coordinator",
                "--insecure",
                "--node-id",
                "c1",
                "--lease-ttl",
                "2s",
            ])
            .args(["--etcd-endpoints", &etcd_url])
            .args(&etcd_tls)
            .args(["--listen", &api]),
        &root.join("coordinator.log"),
    ));
    children.0.push(spawn_logged(
        Command::new(augur_bin())
            .args(["worker", "--node-id", "w1"])
            .args(["--coordinators", &format!("http://{api}")])
            .arg("--data-dir")
            .arg(root.join("w1")),
        &root.join("worker.log"),
    ));
    let endpoint = format!("http://{api}");
    let out = poll_until(DEADLINE, "a job to succeed through etcd over mTLS", || {
        let out = run_with_timeout(
            Command::new(augur_bin())
                .env_remove("AUGUR_TOKEN")
                .args(["--endpoint", &endpoint, "submit", "--wait", "--"])
                .args(["sh", "-c", "echo etcd-tls"]),
            Duration::from_secs(30),
        );
        if out.status.success() {
            Ok(out)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    assert!(out.status.success());
    let cluster = run_with_timeout(
        Command::new(augur_bin()).env_remove("AUGUR_TOKEN").args([
            "--endpoint",
            &endpoint,
            "--output",
            "json",
            "cluster",
        ]),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&cluster.stdout);
    assert!(text.contains("\"c1\""), "c1 leads: {text}");
    let log = std::fs::read_to_string(&no_cert).unwrap_or_default();
    assert!(
        !log.contains("elected leader"),
        "a coordinator without an etcd client certificate led: {log}"
    );
}
