//! Connection hygiene of the API port (issue 13 §4): 500 idle TCP connections
//! used to stay open forever, and 372 of them starved a follower of file
//! descriptors so that it could not campaign. Connections that send nothing
//! are now closed after deadlines, a cap refuses the rest, and both are
//! counted.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_e2e::exposition::{scrape, Exposition};
use augur_e2e::process::run_bounded;
use augur_e2e::{poll_until, Cluster, ClusterConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Generous bound per `augur cluster` call: tests never assert on speed; the
/// figures are printed.
const CALL_BOUND: Duration = Duration::from_secs(5);

/// The start of a TLS ClientHello that promises 512 bytes and sends 11.
const PARTIAL_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];

/// Raises this test process's soft open-files limit to the hard one (the
/// flood needs thousands of sockets); returns it.
fn raise_own_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

fn api_addr(cluster: &Cluster, index: usize) -> SocketAddr {
    let url = cluster.api_url(index);
    let hostport = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    hostport.parse().expect("the API address")
}

fn metrics(cluster: &Cluster, index: usize) -> Exposition {
    let text = scrape(cluster.metrics_addr(index), false).expect("scrape");
    Exposition::parse(&text).expect("parse metrics")
}

fn closed(m: &Exposition, reason: &str) -> f64 {
    m.sum("augur_api_connections_closed_total", &[("reason", reason)])
}

fn refused(m: &Exposition, reason: &str) -> f64 {
    m.sum("augur_api_connections_refused_total", &[("reason", reason)])
}

/// Attackers that hold connections open and reconnect whenever the server
/// closes one, until dropped.
struct Flood {
    stop: watch::Sender<bool>,
    connected: Arc<AtomicU64>,
    closed_by_server: Arc<AtomicU64>,
    runtime: tokio::runtime::Runtime,
}

impl Flood {
    /// `idle` connections that send nothing and `half_open` that send the start
    /// of a ClientHello, against `addr`.
    fn start(addr: SocketAddr, idle: usize, half_open: usize) -> Flood {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (stop, stopped) = watch::channel(false);
        let connected = Arc::new(AtomicU64::new(0));
        let closed_by_server = Arc::new(AtomicU64::new(0));
        for i in 0..idle + half_open {
            let hello = i >= idle;
            let mut stopped = stopped.clone();
            let connected = connected.clone();
            let closed_by_server = closed_by_server.clone();
            runtime.spawn(async move {
                while !*stopped.borrow() {
                    let Ok(mut tcp) = TcpStream::connect(addr).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    if hello && tcp.write_all(PARTIAL_CLIENT_HELLO).await.is_err() {
                        continue;
                    }
                    connected.fetch_add(1, Ordering::Relaxed);
                    let mut buf = [0u8; 512];
                    tokio::select! {
                        _ = stopped.changed() => return,
                        _ = async { while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {} } => {
                            closed_by_server.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        Flood {
            stop,
            connected,
            closed_by_server,
            runtime,
        }
    }

    fn connected(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    fn closed_by_server(&self) -> u64 {
        self.closed_by_server.load(Ordering::Relaxed)
    }

    fn stop(self) {
        let _ = self.stop.send(true);
        self.runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// `augur --output json cluster` against coordinator `index`: its JSON and
/// how long the call took, or why it failed.
fn cluster_status(cluster: &Cluster, index: usize) -> Result<(Value, Duration), String> {
    let started = Instant::now();
    let out = run_bounded(
        Command::new(cluster.augur_bin())
            .env_remove("AUGUR_ENDPOINT")
            .env_remove("AUGUR_TOKEN")
            .envs(cluster.cli_env().iter().map(|(k, v)| (k, v)))
            .args(["--endpoint", &cluster.api_url(index)])
            .args(["--output", "json", "cluster"]),
        CALL_BOUND,
    )?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let status = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok((status, took))
}

// Issue 13 §4: 2,000 idle connections plus 2,000 half-open TLS handshakes
// against a coordinator, reconnecting whenever closed, while it keeps
// answering `augur cluster` and keeps leading.
#[test]
fn connections_flood_of_idle_and_half_open_tls_leaves_the_leader_answering() {
    let limit = raise_own_file_limit();
    assert!(
        limit >= 6_000,
        "the flood needs 6000 files, the hard limit is {limit}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = augur_tls::generate_dev_pki(dir.path(), &["127.0.0.1".into()], "operator")
        .expect("dev pki");
    let p = |path: &std::path::Path| path.to_string_lossy().into_owned();
    let cluster = Cluster::start(ClusterConfig {
        workers: 1,
        tls: true,
        extra_coordinator_args: vec![
            "--tls-cert".into(),
            p(&pki.server_cert),
            "--tls-key".into(),
            p(&pki.server_key),
        ],
        extra_worker_args: vec!["--tls-ca".into(), p(&pki.ca_cert)],
        cli_env: vec![("AUGUR_CA_CERT".into(), p(&pki.ca_cert))],
        ..Default::default()
    });
    let (before, _) = cluster_status(&cluster, 0).expect("cluster status before the flood");
    let leader = before["leader"].as_str().expect("a leader").to_string();
    let transitions = metrics(&cluster, 0).sum("augur_leader_transitions_total", &[]);

    let flood = Flood::start(api_addr(&cluster, 0), 2_000, 2_000);
    poll_until(
        Duration::from_secs(60),
        "4000 attacking connections",
        || match flood.connected() {
            n if n >= 4_000 => Ok(()),
            n => Err(format!("{n} connected")),
        },
    );
    let open = metrics(&cluster, 0).sum("augur_api_connections_open", &[]);
    eprintln!("connections: {open} open on the coordinator with the flood connected");

    // Longer than the 10 s handshake timeout, so every attacker is closed and
    // reconnects at least once while the calls go on.
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(25) {
        let (status, took) = cluster_status(&cluster, 0)
            .unwrap_or_else(|e| panic!("`augur cluster` failed under the flood: {e}"));
        assert_eq!(status["leader"].as_str(), Some(leader.as_str()), "{status}");
        latencies.push(took);
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed_by_server = flood.closed_by_server();
    let during = metrics(&cluster, 0);
    flood.stop();

    latencies.sort();
    eprintln!(
        "connections: `augur cluster` under 4000 attacking connections: {} calls, p50 {:?}, p90 {:?}, max {:?} (target 100 ms)",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        latencies[latencies.len() - 1],
    );
    let timeouts = closed(&during, "handshake_timeout");
    eprintln!(
        "connections: server closed {closed_by_server} attacking connections; closed_total{{handshake_timeout}} {timeouts}, refused_total{{limit}} {}",
        refused(&during, "limit")
    );
    assert!(
        timeouts >= 4_000.0,
        "every attacker outlived the handshake timeout, yet only {timeouts} were closed for it"
    );
    assert!(closed_by_server >= 4_000, "{closed_by_server}");
    assert_eq!(during.sum("augur_leader", &[]), 1.0, "c1 stopped leading");
    assert_eq!(
        during.sum("augur_leader_transitions_total", &[]),
        transitions,
        "leadership changed during the flood"
    );
}

// Connections that send nothing are closed after --handshake-timeout; an
// HTTP/2 client with no call open after --idle-timeout; a worker's stream is
// never idle; past --max-connections connections are refused at once.
#[test]
fn connections_that_send_nothing_are_closed_and_the_cap_refuses_the_rest() {
    raise_own_file_limit();
    let cluster = Cluster::start(ClusterConfig {
        workers: 1,
        extra_coordinator_args: vec![
            "--handshake-timeout".into(),
            "2s".into(),
            "--idle-timeout".into(),
            "3s".into(),
            "--max-connections".into(),
            "40".into(),
        ],
        ..Default::default()
    });
    let addr = api_addr(&cluster, 0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let attaches = metrics(&cluster, 0).sum("augur_worker_attaches_total", &[]);

    // Ten connections that send nothing: closed by the server within the
    // handshake timeout (plus slack), where they used to stay open forever.
    let started = Instant::now();
    let lifetimes: Vec<Duration> = runtime.block_on(async {
        let mut waits = Vec::new();
        for _ in 0..10 {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            waits.push(async move {
                let mut buf = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(15), async {
                    while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                })
                .await;
                started.elapsed()
            });
        }
        futures_join(waits).await
    });
    eprintln!("connections: idle connections closed after {lifetimes:?}");
    for lifetime in &lifetimes {
        assert!(
            *lifetime < Duration::from_secs(10),
            "an idle connection stayed open {lifetime:?}"
        );
    }
    assert!(closed(&metrics(&cluster, 0), "no_request") >= 10.0);

    // An HTTP/2 client that made a call and then idles is closed after the
    // idle timeout; its next call reconnects.
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(cluster.api_url(0))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = augur_proto::v1::job_service_client::JobServiceClient::new(channel);
        client
            .cluster_status(augur_proto::v1::ClusterStatusRequest {})
            .await
            .expect("first call");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut second = None;
        for _ in 0..3 {
            match client
                .cluster_status(augur_proto::v1::ClusterStatusRequest {})
                .await
            {
                Ok(answer) => {
                    second = Some(answer);
                    break;
                }
                Err(e) => eprintln!("connections: call after the idle close: {e}"),
            }
        }
        assert!(second.is_some(), "the client did not reconnect");
    });
    let after_idle = metrics(&cluster, 0);
    assert!(closed(&after_idle, "idle") >= 1.0, "no idle close counted");
    // The worker's stream was quiet for longer than the idle timeout and
    // was kept: no second attach.
    assert_eq!(
        after_idle.sum("augur_worker_attaches_total", &[]),
        attaches,
        "the worker's stream was closed as idle"
    );

    // 60 connections against a cap of 40 (one is the worker's): at least 21
    // are refused at once; once the others time out, calls are answered.
    let refused_before = refused(&after_idle, "limit");
    let held = runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..60 {
            held.push(TcpStream::connect(addr).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        held
    });
    let at_cap = metrics(&cluster, 0);
    let refusals = refused(&at_cap, "limit") - refused_before;
    eprintln!(
        "connections: 60 connections against a cap of 40: {refusals} refused, {} open",
        at_cap.sum("augur_api_connections_open", &[])
    );
    assert!(refusals >= 21.0, "{refusals} refused");
    assert_eq!(at_cap.sum("augur_api_connections_limit", &[]), 40.0);
    drop(held);
    poll_until(
        Duration::from_secs(15),
        "`augur cluster` answers again",
        || cluster_status(&cluster, 0).map(|_| ()),
    );
}

/// Awaits every future in order (they run concurrently: each was already
/// connected, and the server closes them on its own clock).
async fn futures_join<F: std::future::Future<Output = Duration>>(futures: Vec<F>) -> Vec<Duration> {
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await);
    }
    out
}

/// The defect as found: with a 256 open-files limit, a few hundred idle
/// connections left a follower without descriptors, its etcd client failed
/// with "Too many open files", and it could not campaign when the leader
/// died. Now its cap (the limit minus headroom) refuses the excess and the
/// follower takes over.
#[test]
fn connections_a_follower_at_256_files_flooded_with_idle_connections_still_takes_over() {
    raise_own_file_limit();
    let mut cluster = Cluster::start(ClusterConfig {
        coordinators: 2,
        workers: 1,
        // The deadline longer than the test: the flood stays open throughout.
        extra_coordinator_args: vec!["--handshake-timeout".into(), "120s".into()],
        coordinator_wrapper: vec!["prlimit".into(), "--nofile=256:256".into(), "--".into()],
        ..Default::default()
    });
    let leader = cluster.wait_leader(Duration::from_secs(60), "elected", |_| true);
    let follower = if leader == "c1" { 1 } else { 0 };
    let limit = metrics(&cluster, follower).sum("augur_api_connections_limit", &[]);
    eprintln!(
        "connections: follower c{} caps connections at {limit}",
        follower + 1
    );
    assert!(limit > 0.0 && limit < 256.0, "cap {limit}");

    let flood = Flood::start(api_addr(&cluster, follower), 400, 0);
    poll_until(
        Duration::from_secs(30),
        "the follower to refuse the excess",
        || {
            let refused = refused(&metrics(&cluster, follower), "limit");
            if refused > 0.0 && flood.connected() >= limit as u64 {
                Ok(())
            } else {
                Err(format!(
                    "refused {refused}, connected {}",
                    flood.connected()
                ))
            }
        },
    );
    cluster.kill_node(&leader);
    // The flood holds every slot of its cap, so the API refuses newcomers
    // (the CLI included) until it ends; the election is read from etcd.
    let flooded = format!("c{}", follower + 1);
    poll_until(
        Duration::from_secs(60),
        "the flooded follower to lead",
        || match cluster.election_leader() {
            Some(now) if now == flooded => Ok(()),
            other => Err(format!("election names {other:?}")),
        },
    );
    eprintln!(
        "connections: {flooded} leads under a flood of 400 idle sockets ({} connects, cap {limit})",
        flood.connected()
    );
    flood.stop();
    // Once the flood ends it answers and dispatches: a job runs through it.
    let id = cluster.submit_via(follower, &["--", "sh", "-c", "echo after the flood"]);
    poll_until(Duration::from_secs(60), "the job to succeed", || {
        let job = cluster.json_any(&["get", &id])?;
        if job["state"] == "succeeded" {
            Ok(())
        } else {
            Err(job.to_string())
        }
    });
    let logs = std::fs::read_to_string(cluster.path(&format!("coordinator-c{}.log", follower + 1)))
        .unwrap_or_default();
    assert!(
        !logs.contains("Too many open files"),
        "the follower ran out of descriptors"
    );
}
