//! `augur dev --secure`: a throwaway CA, mTLS and an admin token, used the way
//! its banner says (the four `export` lines), from a real `augur dev` process.

use std::process::{Command, Output};
use std::time::Duration;

use augur_e2e::{
    augur_bin, free_ports, kill_group, poll_until, run_with_timeout, spawn_logged, ClusterLock,
};

const DEADLINE: Duration = Duration::from_secs(90);

fn text(out: &Output) -> String {
    format!(
        "exit {} stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn security_dev_secure_serves_mtls_and_tokens_as_its_banner_says() {
    let _lock = ClusterLock::acquire();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    let ports = free_ports(2);
    let api = format!("127.0.0.1:{}", ports[0]);
    let log = dir.path().join("dev.log");
    let mut dev = spawn_logged(
        Command::new(augur_bin())
            .env_remove("AUGUR_TOKEN")
            .args(["dev", "--secure", "--workers", "1", "--slots", "2"])
            .args(["--listen", &api])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", ports[1])])
            .arg("--data-dir")
            .arg(&data),
        &log,
    );
    let banner = || std::fs::read_to_string(&log).unwrap_or_default();
    let endpoint = format!("https://{api}");
    let export = |name: &str| -> Option<String> {
        banner().lines().find_map(|l| {
            l.split_once(&format!("export {name}="))
                .map(|(_, v)| v.trim().to_string())
        })
    };
    poll_until(DEADLINE, "the secure banner", || {
        if let Ok(Some(status)) = dev.try_wait() {
            return Err(format!("augur dev exited {status}: {}", banner()));
        }
        match export("AUGUR_CLIENT_KEY") {
            Some(_) => Ok(()),
            None => Err(banner()),
        }
    });
    assert!(banner().contains("mTLS"), "{}", banner());
    assert_eq!(export("AUGUR_ENDPOINT").as_deref(), Some(endpoint.as_str()));
    let ca = export("AUGUR_CA_CERT").expect("CA line");
    let cert = export("AUGUR_CLIENT_CERT").expect("cert line");
    let key = export("AUGUR_CLIENT_KEY").expect("key line");
    let token_file = data.join("admin.token");
    let token = std::fs::read_to_string(&token_file).expect("admin token file");
    let token = token.trim().to_string();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).expect("stat").permissions(),
    );
    assert_eq!(
        mode & 0o077,
        0,
        "the admin token file is readable by others"
    );

    let cli = |env: &[(&str, &str)], args: &[&str]| {
        let mut command = Command::new(augur_bin());
        command
            .env_remove("AUGUR_TOKEN")
            .env("AUGUR_ENDPOINT", &endpoint);
        for (k, v) in env {
            command.env(k, v);
        }
        run_with_timeout(command.args(args), Duration::from_secs(60))
    };
    let full = [
        ("AUGUR_CA_CERT", ca.as_str()),
        ("AUGUR_CLIENT_CERT", cert.as_str()),
        ("AUGUR_CLIENT_KEY", key.as_str()),
        ("AUGUR_TOKEN", token.as_str()),
    ];
    let out = cli(
        &full,
        &["submit", "--wait", "--", "sh", "-c", "echo secure-dev"],
    );
    assert!(out.status.success(), "submit over mTLS: {}", text(&out));

    // Each credential is needed: the token, the client certificate, the CA.
    let no_token = cli(&full[..3], &["list"]);
    assert!(
        !no_token.status.success() && text(&no_token).contains("Unauthenticated"),
        "{}",
        text(&no_token)
    );
    let no_cert = cli(&[full[0], full[3]], &["list"]);
    assert!(
        !no_cert.status.success(),
        "no client certificate: {}",
        text(&no_cert)
    );
    let no_ca = cli(&full[1..], &["list"]);
    assert!(!no_ca.status.success(), "no CA: {}", text(&no_ca));

    kill_group(dev.id());
    let _ = dev.wait();
    assert!(
        !banner().contains(&token),
        "the admin token is in augur dev's log"
    );
}
