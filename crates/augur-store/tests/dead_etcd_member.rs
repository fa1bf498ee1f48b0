//! An etcd member that is down takes no requests while the others answer.
//!
//! Regression: with one of three members stopped, etcd-client's balanced
//! channel kept handing requests to it (its connect error, "dns error" in the
//! compose stack where a stopped container's name stops resolving, counts as
//! ready there), so the compose smoke test's "one etcd member stopped" phase
//! failed about one run in five. A real three-member etcd cluster (Debian's
//! `etcd-server`) on loopback; the clients are made by `augur_store::connect`.
//!
//! Holds the end-to-end tests' machine lock (`$TMPDIR/augur-e2e.lock`), so it
//! never races a cluster test for the two cores.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use augur_e2e::{etcd_tool, free_ports, spawn_logged, ClusterLock};
use augur_store::{EtcdClient, EtcdSecurity};
use etcd_client::GetOptions;

/// Per-request timeout of the clients under test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Generous bound on every wait for a condition (a loaded machine is slow).
const DEADLINE: Duration = Duration::from_secs(90);
/// Requests in a row that must all succeed.
const STREAK: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_avoid_a_dead_member() {
    let _lock = ClusterLock::acquire();
    let mut cluster = EtcdCluster::start(3, Tls::Off).await;
    cluster.wait_until_serving().await;

    // Made while every member is up.
    let early = augur_store::connect(&cluster.urls(), REQUEST_TIMEOUT)
        .await
        .expect("connect while every member is up");
    assert_streak(&early, "every member up", 20).await;

    cluster.kill(2);
    // The two left elect a leader (if the dead one led) before the streak.
    cluster.wait_member_serving(0).await;
    cluster.wait_member_serving(1).await;
    // Made with one member down, a port nobody listens on and a name that
    // does not resolve (a label over 63 characters: the resolver refuses it
    // without sending a query). Every request succeeds from the first on.
    let endpoints = vec![
        cluster.url(0),
        cluster.url(1),
        cluster.url(2),
        format!("http://127.0.0.1:{}", free_ports(1)[0]),
        format!("http://{}.invalid:2379", "a".repeat(70)),
    ];
    let late = augur_store::connect(&endpoints, REQUEST_TIMEOUT)
        .await
        .expect("connect with members down");
    assert_streak(&late, "a member, a port and a name down", STREAK).await;

    // The early client notices the death and stops sending requests there.
    wait_for_streak(&early, "after a member died", STREAK, Reads::Linearizable).await;

    // The member comes back and takes requests again: once the other two are
    // gone, serializable reads (served by a member alone) succeed through it.
    cluster.spawn(2);
    cluster.wait_member_serving(2).await;
    // Let the cluster settle with all three before taking two away again.
    wait_for_streak(
        &early,
        "after the member came back",
        20,
        Reads::Linearizable,
    )
    .await;
    cluster.kill(0);
    cluster.kill(1);
    wait_for_streak(
        &early,
        "with only the returned member",
        STREAK,
        Reads::Serializable,
    )
    .await;

    // No member answers: requests fail (with etcd's own error) rather than hang.
    let dead = vec![
        cluster.url(0),
        cluster.url(1),
        format!("http://{}.invalid:2379", "a".repeat(70)),
    ];
    let none = augur_store::connect(&dead, REQUEST_TIMEOUT)
        .await
        .expect("connect is lazy");
    let outcome = tokio::time::timeout(DEADLINE, none.kv_client().get("/k", None)).await;
    match outcome {
        Ok(Err(_)) => {}
        Ok(Ok(_)) => panic!("a read succeeded with no member up"),
        Err(_) => panic!("a read did not end within {DEADLINE:?} with no member up"),
    }
}

/// The probes use the client's TLS settings: against an etcd that requires
/// client certificates, the live member is told from a dead endpoint (were
/// its probe refused, both would count as down and take requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_requests_avoid_a_dead_endpoint() {
    let _lock = ClusterLock::acquire();
    let cluster = EtcdCluster::start(1, Tls::MutualTls).await;
    cluster.wait_until_serving().await;
    let endpoints = vec![
        cluster.url(0),
        format!("https://127.0.0.1:{}", free_ports(1)[0]),
    ];
    let client = augur_store::connect_secure(&endpoints, REQUEST_TIMEOUT, &cluster.security)
        .await
        .expect("connect over TLS");
    assert_streak(&client, "over mutual TLS, an endpoint down", STREAK).await;
}

#[derive(Clone, Copy)]
enum Reads {
    Linearizable,
    Serializable,
}

/// One request: a write then a read of what it wrote (linearizable), or a
/// serializable read alone.
async fn request(client: &EtcdClient, i: usize, reads: Reads) -> Result<(), etcd_client::Error> {
    let mut kv = client.kv_client();
    match reads {
        Reads::Linearizable => {
            let value = i.to_string();
            kv.put("/augur-test/k", value.clone(), None).await?;
            let got = kv.get("/augur-test/k", None).await?;
            let read = got.kvs().first().map(|kv| kv.value().to_vec());
            assert_eq!(read, Some(value.into_bytes()), "read back the write");
        }
        Reads::Serializable => {
            kv.get("/augur-test/k", Some(GetOptions::new().with_serializable()))
                .await?;
        }
    }
    Ok(())
}

/// `count` requests in a row, every one of which must succeed.
async fn assert_streak(client: &EtcdClient, what: &str, count: usize) {
    for i in 0..count {
        if let Err(e) = request(client, i, Reads::Linearizable).await {
            panic!("{what}: request {i} of {count} failed: {e}");
        }
    }
}

/// Waits (up to [`DEADLINE`]) until `count` requests in a row succeed.
async fn wait_for_streak(client: &EtcdClient, what: &str, count: usize, reads: Reads) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut streak = 0;
    let mut failures = 0;
    let mut last_error = String::new();
    let mut i = 0;
    while streak < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: no {count} requests in a row within {DEADLINE:?} \
             ({failures} failed, the last with: {last_error})"
        );
        i += 1;
        match request(client, i, reads).await {
            Ok(()) => streak += 1,
            Err(e) => {
                streak = 0;
                failures += 1;
                last_error = e.to_string();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    child: Option<Child>,
}

/// A real etcd cluster, one process per member; every process is killed on drop.
/// The temp dir (data and logs) is kept when the test fails.
struct EtcdCluster {
    dir: Option<tempfile::TempDir>,
    members: Vec<Member>,
    initial_cluster: String,
    /// etcd's flags for TLS on the client port, if any.
    tls_flags: Vec<String>,
    /// What a client needs to connect.
    security: EtcdSecurity,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tls {
    Off,
    /// TLS on the client port, client certificates required.
    MutualTls,
}

impl EtcdCluster {
    async fn start(size: usize, tls: Tls) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let (tls_flags, security) = match tls {
            Tls::Off => (Vec::new(), EtcdSecurity::default()),
            Tls::MutualTls => {
                let pki_dir = dir.path().join("pki");
                // Key generation and file writes: off the runtime's threads.
                let pki = tokio::task::spawn_blocking(move || {
                    augur_tls::generate_dev_pki(
                        &pki_dir,
                        &["localhost".into(), "127.0.0.1".into()],
                        "augur",
                    )
                })
                .await
                .expect("pki task")
                .expect("dev pki");
                let path = |p: &Path| p.to_string_lossy().into_owned();
                let flags = vec![
                    "--cert-file".into(),
                    path(&pki.server_cert),
                    "--key-file".into(),
                    path(&pki.server_key),
                    "--trusted-ca-file".into(),
                    path(&pki.ca_cert),
                    "--client-cert-auth".into(),
                ];
                let security = EtcdSecurity {
                    ca: Some(pki.ca_cert),
                    cert: Some(pki.client_cert),
                    key: Some(pki.client_key),
                    ..EtcdSecurity::default()
                };
                (flags, security)
            }
        };
        let scheme = if tls == Tls::Off { "http" } else { "https" };
        let ports = free_ports(size * 2);
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("{scheme}://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            dir: Some(dir),
            members,
            initial_cluster,
            tls_flags,
            security,
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster
    }

    fn root(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// Starts member `i` (again, after a kill: it recovers from its data dir).
    fn spawn(&mut self, i: usize) {
        let root = self.root().to_path_buf();
        let member = &self.members[i];
        let mut command = Command::new(etcd_tool("etcd"));
        command
            .args(["--name", &member.name, "--data-dir"])
            .arg(root.join(&member.name))
            .args(["--listen-client-urls", &member.client_url])
            .args(["--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_url])
            .args(["--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "augur-dead-member-test"])
            .args(&self.tls_flags);
        // Logged to <member>.log; etcd dies with this test process.
        let child = spawn_logged(&mut command, &root.join(format!("{}.log", member.name)));
        self.members[i].child = Some(child);
    }

    /// SIGKILLs member `i`.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self, i: usize) -> String {
        self.members[i].client_url.clone()
    }

    fn urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    async fn wait_until_serving(&self) {
        for i in 0..self.members.len() {
            self.wait_member_serving(i).await;
        }
    }

    /// Waits until member `i` answers a linearizable read (it is in a cluster
    /// with a leader), through a client of that member alone.
    async fn wait_member_serving(&self, i: usize) {
        let url = self.url(i);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let connected = augur_store::connect_secure(
                std::slice::from_ref(&url),
                REQUEST_TIMEOUT,
                &self.security,
            )
            .await;
            if let Ok(client) = connected {
                if client.kv_client().get("/", None).await.is_ok() {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd member {i} at {url} not serving within {DEADLINE:?} (logs in {})",
                self.root().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("etcd data and logs kept in {}", dir.keep().display());
            }
        }
    }
}
