//! A real Augur cluster for one test: etcd, coordinators and workers as child
//! processes, each logging to its own file in the cluster's temp dir.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::process::{augur_bin, etcd_tool, free_ports, kill_group, spawn_logged, tail_lines};
use crate::wait::poll_until;

/// Serialises clusters within one test process (`cargo test` runs tests as threads).
static LOCK: Mutex<()> = Mutex::new(());

/// How long etcd may take to answer its health check.
const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long coordinators and workers may take to form a cluster.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// The shape of a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub coordinators: usize,
    pub workers: usize,
    pub worker_slots: u32,
    /// Lease TTL of coordinators and workers (a human duration).
    pub lease_ttl: &'static str,
    /// `--executor` of the workers; None leaves the default (`process`).
    pub executor: Option<&'static str>,
    /// Appended to every `augur coordinator` command line.
    pub extra_coordinator_args: Vec<String>,
    /// Appended to every `augur worker` command line.
    pub extra_worker_args: Vec<String>,
    /// Set in every `augur worker` process's environment (on top of the test's).
    pub extra_worker_env: Vec<(String, String)>,
    /// Coordinators serve TLS: the API URLs and advertised addresses are
    /// `https://` (the certificate flags go in `extra_coordinator_args`).
    pub tls: bool,
    /// Environment of every `augur` CLI call the harness makes (e.g.
    /// `AUGUR_TOKEN`, `AUGUR_CA_CERT` for a secured cluster).
    pub cli_env: Vec<(String, String)>,
    /// The address coordinators listen on and advertise (default
    /// 127.0.0.1), e.g. the host end of a veth pair whose other end is in a
    /// worker's network namespace.
    pub api_host: &'static str,
    /// A command that runs each `augur worker` (e.g. `ip netns exec NS`): the
    /// worker is its last argument vector. It must exec, so the pid is the
    /// worker's.
    pub worker_wrapper: Vec<String>,
    /// The same for each `augur coordinator` (e.g. `prlimit --nofile=256:256 --`).
    pub coordinator_wrapper: Vec<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            coordinators: 1,
            workers: 3,
            worker_slots: 4,
            lease_ttl: "2s",
            executor: None,
            extra_coordinator_args: Vec::new(),
            extra_worker_args: Vec::new(),
            extra_worker_env: Vec::new(),
            tls: false,
            cli_env: Vec::new(),
            api_host: "127.0.0.1",
            worker_wrapper: Vec::new(),
            coordinator_wrapper: Vec::new(),
        }
    }
}

/// The coordinators' `--worker-lease-ttl` for a cluster's lease TTL: the
/// same, but at least the 3 s the coordinator accepts (workers heartbeat
/// every 2 s).
fn worker_lease_ttl(lease_ttl: &str) -> String {
    match lease_ttl.strip_suffix('s').map(str::parse::<f64>) {
        Some(Ok(secs)) if secs >= 3.0 => lease_ttl.to_string(),
        _ => "3s".to_string(),
    }
}

/// `program` run through `wrapper` (which must exec it), or directly.
fn wrapped(wrapper: &[String], program: &Path) -> Command {
    match wrapper.split_first() {
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// One child process of the cluster.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
    /// Set once the test killed it on purpose (or it exited on a signal the test sent).
    pub(crate) killed: bool,
    /// Set while the test holds it stopped (SIGSTOP); it answers nothing then.
    pub(crate) stopped: bool,
}

/// A running cluster. Dropping it kills every process; if the test is failing it
/// keeps the temp dir and prints the tail of every log.
pub struct Cluster {
    pub(crate) config: ClusterConfig,
    augur: PathBuf,
    etcdctl: PathBuf,
    root: PathBuf,
    /// None once kept (see `Drop`).
    dir: Option<TempDir>,
    etcd_url: String,
    /// etcd's peer URL, kept so that etcd can be restarted on the same ports.
    etcd_peer_url: String,
    /// API URL of each coordinator, in the order c1, c2, ...
    coordinator_apis: Vec<String>,
    /// Metrics address of each coordinator.
    coordinator_metrics: Vec<String>,
    /// Metrics address of each worker by name, kept across restarts.
    worker_metrics: BTreeMap<String, String>,
    pub(crate) nodes: Vec<Node>,
    /// Released last (fields drop in declaration order, after `Drop::drop`).
    _lock: ClusterLock,
}

impl Cluster {
    /// Starts etcd, then the coordinators, then the workers, and returns once a
    /// leader is elected and every worker is connected and ready.
    pub fn start(config: ClusterConfig) -> Cluster {
        let lock = ClusterLock::acquire();
        let augur = augur_bin();
        let etcdctl = etcd_tool("etcdctl");
        let dir = tempfile::Builder::new()
            .prefix("augur-e2e-")
            .tempdir()
            .expect("create the cluster's temp dir");
        let root = dir.path().to_path_buf();
        eprintln!("augur-e2e: cluster dir {}", root.display());

        let ports = free_ports(2 + 2 * config.coordinators);
        let etcd_url = format!("http://127.0.0.1:{}", ports[0]);
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        let coordinator_ports = &ports[2..];
        let coordinator_apis = (0..config.coordinators)
            .map(|i| format!("{}:{}", config.api_host, coordinator_ports[2 * i]))
            .collect();
        let coordinator_metrics = (0..config.coordinators)
            .map(|i| format!("127.0.0.1:{}", coordinator_ports[2 * i + 1]))
            .collect();

        let mut cluster = Cluster {
            config,
            augur,
            etcdctl,
            root,
            dir: Some(dir),
            etcd_url,
            etcd_peer_url: peer_url,
            coordinator_apis,
            coordinator_metrics,
            worker_metrics: BTreeMap::new(),
            nodes: Vec::new(),
            _lock: lock,
        };

        // From here on a panic drops `cluster`, which kills what was started.
        cluster.spawn_etcd();
        cluster.wait_etcd_healthy();

        for index in 0..cluster.config.coordinators {
            cluster.start_coordinator(index);
        }
        for index in 1..=cluster.config.workers {
            cluster.start_worker(&format!("w{index}"));
        }
        cluster.wait_ready(CLUSTER_READY_TIMEOUT);
        cluster
    }

    /// The cluster's temp dir (kept if the test fails).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// A path inside the cluster's temp dir, for ledgers, pid files and job files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// etcd's client URL.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The API URL of coordinator `index` (0 is c1).
    /// The configuration, to change before (re)starting a node, e.g. to start
    /// one worker with other credentials.
    pub fn config_mut(&mut self) -> &mut ClusterConfig {
        &mut self.config
    }

    /// The environment of the harness's CLI calls.
    pub fn cli_env(&self) -> &[(String, String)] {
        &self.config.cli_env
    }

    pub fn api_url(&self, index: usize) -> String {
        let scheme = if self.config.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.coordinator_apis[index])
    }

    /// Every coordinator's API URL, comma-separated: a worker's
    /// `--coordinators`.
    pub fn coordinator_urls(&self) -> String {
        (0..self.coordinator_apis.len())
            .map(|i| self.api_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The metrics address (`host:port`) of coordinator `index` (0 is c1).
    pub fn metrics_addr(&self, index: usize) -> &str {
        &self.coordinator_metrics[index]
    }

    /// The metrics address (`host:port`) of worker `name` (started at least once).
    pub fn worker_metrics_addr(&self, name: &str) -> &str {
        self.worker_metrics
            .get(name)
            .unwrap_or_else(|| panic!("no worker named {name} was started"))
    }

    /// Every metrics endpoint as `(node name, host:port)`: coordinators c1, c2, ...
    /// then workers by name (including workers the test killed).
    pub fn metrics_targets(&self) -> Vec<(String, String)> {
        let coordinators = self
            .coordinator_metrics
            .iter()
            .enumerate()
            .map(|(i, addr)| (format!("c{}", i + 1), addr.clone()));
        let workers = self
            .worker_metrics
            .iter()
            .map(|(name, addr)| (name.clone(), addr.clone()));
        coordinators.chain(workers).collect()
    }

    /// The `augur` binary under test.
    pub fn augur_bin(&self) -> &Path {
        &self.augur
    }

    pub(crate) fn etcdctl_bin(&self) -> &Path {
        &self.etcdctl
    }

    /// Node ids of the workers this harness started and has not killed.
    pub fn live_workers(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.name.starts_with('w') && !n.killed)
            .map(|n| n.name.clone())
            .collect()
    }

    /// Starts etcd on the cluster's data dir and ports (again, after a kill: it
    /// recovers from its data dir). Does not wait for it to be healthy.
    pub(crate) fn spawn_etcd(&mut self) {
        let data_dir = self.root.join("etcd-data");
        let peer_url = self.etcd_peer_url.clone();
        let mut command = Command::new(etcd_tool("etcd"));
        command
            .args(["--name", "e", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen-client-urls", &self.etcd_url])
            .args(["--advertise-client-urls", &self.etcd_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e={peer_url}")])
            .args(["--max-txn-ops", "1024"]);
        self.nodes.retain(|n| n.name != "etcd");
        self.spawn_node("etcd", command);
    }

    pub(crate) fn start_coordinator(&mut self, index: usize) {
        let name = format!("c{}", index + 1);
        let api = self.coordinator_apis[index].clone();
        let mut command = wrapped(&self.config.coordinator_wrapper, &self.augur);
        command
            .arg("coordinator")
            .args(["--etcd-endpoints", &self.etcd_url])
            .args(["--listen", &api])
            .args(["--advertise", &self.api_url(index)])
            .args(["--metrics-listen", &self.coordinator_metrics[index]])
            .args(["--node-id", &name])
            .args(["--lease-ttl", self.config.lease_ttl])
            .args([
                "--worker-lease-ttl",
                &worker_lease_ttl(self.config.lease_ttl),
            ])
            // Authentication is whatever the test configures (tokens in
            // extra_coordinator_args); without it the cluster runs open.
            .arg("--insecure")
            .args(&self.config.extra_coordinator_args);
        self.nodes.retain(|n| n.name != name);
        self.spawn_node(&name, command);
    }

    /// Starts (or restarts, after [`Cluster::kill_worker`]) worker `name` with data
    /// dir `<cluster dir>/<name>` and metrics on a port of its own (the same one
    /// after a restart). Does not wait for it to be ready.
    pub fn start_worker(&mut self, name: &str) {
        let data_dir = self.root.join(name);
        std::fs::create_dir_all(&data_dir).expect("create the worker's data dir");
        let metrics = self
            .worker_metrics
            .entry(name.to_string())
            .or_insert_with(|| format!("127.0.0.1:{}", free_ports(1)[0]))
            .clone();
        // Workers are told the coordinators' API only, never etcd.
        let coordinators = self.coordinator_urls();
        let mut command = wrapped(&self.config.worker_wrapper, &self.augur);
        command
            .arg("worker")
            .args(["--coordinators", &coordinators])
            .args(["--node-id", name])
            .args(["--slots", &self.config.worker_slots.to_string()])
            .args(["--label", "zone=a", "--data-dir"])
            .arg(&data_dir)
            .args(["--metrics-listen", &metrics]);
        if let Some(executor) = self.config.executor {
            command.args(["--executor", executor]);
        }
        // `{node}` in an extra argument is this worker's name (per-worker
        // certificates, for instance).
        command.args(
            self.config
                .extra_worker_args
                .iter()
                .map(|a| a.replace("{node}", name)),
        );
        command.envs(self.config.extra_worker_env.iter().map(|(k, v)| (k, v)));
        self.nodes.retain(|n| n.name != name);
        self.spawn_node(name, command);
    }

    fn spawn_node(&mut self, name: &str, mut command: Command) {
        let log = self.root.join(match name {
            "etcd" => "etcd.log".to_string(),
            _ if name.starts_with('c') => format!("coordinator-{name}.log"),
            _ => format!("worker-{name}.log"),
        });
        let child = spawn_logged(&mut command, &log);
        self.nodes.push(Node {
            name: name.to_string(),
            child,
            log,
            killed: false,
            stopped: false,
        });
    }

    /// Panics if a process the test did not kill has exited: no point waiting on a
    /// cluster that lost a member, and its log says why.
    pub fn assert_processes_alive(&mut self) {
        for node in &mut self.nodes {
            if node.killed {
                continue;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!(
                    "{} exited unexpectedly ({status}); see {}",
                    node.name,
                    node.log.display()
                );
            }
        }
    }

    pub(crate) fn wait_etcd_healthy(&mut self) {
        let url = self.etcd_url.clone();
        poll_until(
            ETCD_READY_TIMEOUT,
            format!("etcd at {url} to be healthy"),
            || {
                self.assert_processes_alive();
                let out = self.etcdctl(&["endpoint", "health"]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            },
        );
    }

    /// Waits until `augur cluster` reports a leader and every live worker ready.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let expected = self.live_workers();
        poll_until(
            timeout,
            format!("a leader and workers {expected:?} ready"),
            || {
                self.assert_processes_alive();
                let out = self.cli(&["--output", "json", "cluster"]);
                if !out.status.success() {
                    return Err(format!(
                        "`augur cluster` exited {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let status: Value = serde_json::from_str(&text)
                    .map_err(|e| format!("`augur cluster` printed non-JSON ({e}): {text}"))?;
                let has_leader = status["leader"].as_str().is_some_and(|l| !l.is_empty());
                let ready = |id: &String| {
                    status["workers"].as_array().is_some_and(|workers| {
                        workers
                            .iter()
                            .any(|w| w["id"] == id.as_str() && w["state"] == "ready")
                    })
                };
                if has_leader && expected.iter().all(ready) {
                    Ok(())
                } else {
                    Err(text)
                }
            },
        );
    }

    /// The pid of worker `name`.
    pub fn worker_pid(&self, name: &str) -> u32 {
        self.node(name).child.id()
    }

    /// SIGKILLs worker `name` (its process group; job processes live in groups of
    /// their own and survive, as they would on a real crash) and reaps it.
    pub fn kill_worker(&mut self, name: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no process named {name}"));
        kill_group(node.child.id());
        let _ = node.child.wait();
        node.killed = true;
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no process named {name}"))
    }

    fn print_logs(&self) {
        for node in &self.nodes {
            eprintln!(
                "----- last {LOG_TAIL_LINES} lines of {} -----",
                node.log.display()
            );
            for line in tail_lines(&node.log, LOG_TAIL_LINES) {
                eprintln!("{line}");
            }
        }
        eprintln!("----- end of logs -----");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if !node.killed {
                kill_group(node.child.id());
            }
            let _ = node.child.wait();
        }
        let keep = std::env::var_os("AUGUR_E2E_KEEP").is_some();
        if std::thread::panicking() {
            self.print_logs();
        }
        if std::thread::panicking() || keep {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("augur-e2e: kept the cluster dir {}", kept.display());
            }
        }
    }
}

/// Exclusive use of the machine for one cluster: a process-wide mutex (threads of
/// `cargo test`) plus an `flock` on a shared lock file (processes of `cargo nextest`).
/// Held by a test that runs a cluster of its own (e.g. `augur dev`), so it
/// does not race the harness's clusters for the two cores.
pub struct ClusterLock {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

impl ClusterLock {
    pub fn acquire() -> ClusterLock {
        // A test that panicked while holding the lock poisons it; the lock guards
        // no data, so the next test may go ahead.
        let guard = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let path = std::env::temp_dir().join("augur-e2e.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open the cluster lock file {}: {e}", path.display()));
        let fd = file.as_raw_fd();
        // SAFETY: flock on a descriptor we own; released when `file` is closed.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!(
                "augur-e2e: waiting for another test's cluster ({})",
                path.display()
            );
            loop {
                // SAFETY: as above.
                if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
                    break;
                }
                let err = std::io::Error::last_os_error();
                assert_eq!(
                    err.kind(),
                    std::io::ErrorKind::Interrupted,
                    "flock {}: {err}",
                    path.display()
                );
            }
        }
        ClusterLock {
            _file: file,
            _guard: guard,
        }
    }
}
