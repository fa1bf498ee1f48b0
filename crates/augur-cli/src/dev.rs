//! `augur dev`: a whole cluster on one machine. etcd runs as a child process on
//! free ports; one coordinator and N workers run inside this process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use augur_coordinator::CoordinatorConfig;
use augur_proto::v1 as pb;
use augur_worker::WorkerConfig;
use std::sync::Arc;

use augur_telemetry::Metrics;
use clap::Args;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::etcd::{find_etcd, EtcdChild};
use crate::serve::shutdown_on_signal;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Number of workers.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Keep etcd data and worker buffers here (default: a temporary directory removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Coordinator API address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// etcd binary (default: `etcd` on PATH).
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// Also submit a small mixed workload and show how it ends.
    #[arg(long)]
    demo: bool,
    /// Serve Prometheus metrics (coordinator and workers together) here.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_listen: SocketAddr,
    /// Turn on mTLS and tokens: a throwaway CA, certificates and an admin token
    /// are made in the data dir, and printed with how to use them.
    #[arg(long)]
    secure: bool,
}

/// Declared speeds of `augur dev`'s workers, in turn.
pub const DEV_SPEEDS: [u32; 3] = [1, 2, 4];

/// A cluster running in this process, on an etcd child.
pub struct LocalCluster {
    pub etcd: EtcdChild,
    pub endpoint: String,
    stop: CancellationToken,
    tasks: Vec<(String, JoinHandle<anyhow::Result<()>>)>,
    /// Set for a `--secure` cluster.
    pub credentials: Option<DevCredentials>,
    _temp: Option<tempfile::TempDir>,
}

/// What a local cluster looks like.
pub struct LocalSpec {
    pub data_dir: Option<PathBuf>,
    pub listen: SocketAddr,
    pub workers: u32,
    pub slots: u32,
    pub executor: augur_worker::executor::Executor,
    pub etcd_bin: Option<PathBuf>,
    pub max_txn_ops: usize,
    pub retention_count: usize,
    pub metrics: Arc<Metrics>,
    /// mTLS and tokens instead of an open loopback cluster.
    pub secure: bool,
}

/// The credentials of a `--secure` local cluster.
pub struct DevCredentials {
    pub pki: augur_tls::DevPki,
    pub admin_token_file: PathBuf,
}

/// Makes (or reuses) the CA, certificates and admin token of a secure local
/// cluster in `dir`; returns them with the join token (in memory only).
async fn dev_credentials(
    dir: &std::path::Path,
) -> anyhow::Result<(DevCredentials, String, String)> {
    let pki_dir = dir.join("pki");
    let pki = tokio::task::spawn_blocking(move || {
        augur_tls::generate_dev_pki(
            &pki_dir,
            &["localhost".to_string(), "127.0.0.1".to_string()],
            "augur-dev-client",
        )
    })
    .await
    .context("certificate generation task failed")?
    .context("cannot make the dev certificates")?;
    let admin_token_file = dir.join("admin.token");
    let admin = match std::fs::read_to_string(&admin_token_file) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let token = augur_coordinator::auth::generate_secret();
            write_private(&admin_token_file, &token)?;
            token
        }
    };
    let join = augur_coordinator::auth::generate_secret();
    Ok((
        DevCredentials {
            pki,
            admin_token_file,
        },
        admin,
        join,
    ))
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

impl LocalCluster {
    pub async fn start(spec: LocalSpec) -> anyhow::Result<Self> {
        let bin = find_etcd(spec.etcd_bin.as_deref())?;
        let (temp, dir) = match spec.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("augur-dev-")
                    .tempdir()
                    .context("cannot make a temporary directory")?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let etcd = EtcdChild::start(&bin, &dir, spec.max_txn_ops).await?;
        let listener = tokio::net::TcpListener::bind(spec.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (is another augur running? use --listen)",
                    spec.listen
                )
            })?;
        let addr = listener.local_addr()?;
        let secure = if spec.secure {
            Some(dev_credentials(&dir).await?)
        } else {
            None
        };
        let scheme = if secure.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://{addr}");
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();

        crate::serve::raise_open_files_limit();
        let mut config =
            CoordinatorConfig::new("dev-coordinator", vec![etcd.endpoint.clone()], addr);
        config.lease_ttl = Duration::from_secs(2);
        config.worker_lease_ttl = Duration::from_secs(2);
        config.max_txn_ops = spec.max_txn_ops;
        // Learn quickly on a laptop.
        config.retrain_interval = Duration::from_secs(5);
        config.min_training_runs = 20;
        config.retention_count = spec.retention_count;
        config.advertise = endpoint.clone();
        config.http = Some(crate::serve::console(None)?);
        let mut worker_tls = None;
        let mut join_token = None;
        match &secure {
            None => {
                // Loopback only, no authentication: `augur dev` is for one machine.
                config.auth.insecure = true;
            }
            Some((creds, admin, join)) => {
                config.auth.admin_token = Some(admin.clone());
                config.auth.join_token = Some(join.clone());
                config.auth.worker_certificates = true;
                config.tls = Some(creds.pki.server_files(true));
                config.peer_tls = Some(creds.pki.client_files());
                worker_tls = Some(augur_tls::client_tls_config(
                    &creds.pki.client_files(),
                    None,
                )?);
                join_token = Some(join.clone());
                crate::connection::configure(crate::connection::ConnectionArgs {
                    token: Some(admin.clone()),
                    ca_cert: Some(creds.pki.ca_cert.clone()),
                    client_cert: Some(creds.pki.client_cert.clone()),
                    client_key: Some(creds.pki.client_key.clone()),
                });
            }
        }
        let token = stop.clone();
        let coordinator_metrics = spec.metrics.coordinator();
        tasks.push((
            "coordinator".to_string(),
            tokio::spawn(async move {
                augur_coordinator::run_on(config, listener, coordinator_metrics, token)
                    .await
                    .map_err(anyhow::Error::from)
            }),
        ));
        for i in 1..=spec.workers {
            let name = format!("dev-worker-{i}");
            // Workers reach the coordinator only, never etcd.
            let mut config = WorkerConfig::new(&name, vec![endpoint.clone()], dir.join(&name));
            config.slots = spec.slots;
            config.heartbeat = Duration::from_millis(500);
            config.executor = spec.executor.clone();
            config.tls = worker_tls.clone();
            config.join_token = join_token.clone().map(augur_core::auth::Secret::new);
            config.labels.insert("dev".into(), "true".into());
            // Workers of different speeds, simulated on one machine: the demo's
            // jobs divide their duration by AUGUR_WORKER_SPEED.
            config.labels.insert(
                "speed".into(),
                DEV_SPEEDS[(i as usize - 1) % DEV_SPEEDS.len()].to_string(),
            );
            let token = stop.clone();
            // In one process all workers share one set of worker metrics.
            let worker_metrics = spec.metrics.worker();
            tasks.push((
                name,
                tokio::spawn(async move {
                    augur_worker::run(config, worker_metrics, token)
                        .await
                        .map_err(anyhow::Error::from)
                }),
            ));
        }
        let cluster = LocalCluster {
            etcd,
            endpoint,
            stop,
            tasks,
            credentials: secure.map(|(creds, _, _)| creds),
            _temp: temp,
        };
        cluster.wait_ready(spec.workers as usize).await?;
        Ok(cluster)
    }

    /// Waits until a leader is elected and every worker is attached.
    async fn wait_ready(&self, workers: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut client) = crate::client::connect(&self.endpoint).await {
                if let Ok(status) = client.cluster_status(pb::ClusterStatusRequest {}).await {
                    let s = status.into_inner();
                    let ready = s
                        .workers
                        .iter()
                        .filter(|w| w.state == pb::WorkerState::Ready as i32)
                        .count();
                    if !s.leader.is_empty() && ready >= workers {
                        return Ok(());
                    }
                }
            }
            if let Some((name, _)) = self.tasks.iter().find(|(_, t)| t.is_finished()) {
                anyhow::bail!("{name} stopped during start-up; see the log above");
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the cluster did not become ready in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops workers, coordinator and etcd, in that order of shutdown signals.
    pub async fn stop(self) {
        self.stop.cancel();
        for (name, task) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("{name}: {e:#}"),
                Ok(Err(e)) => eprintln!("{name}: task failed: {e}"),
                Err(_) => eprintln!("{name}: did not stop within 15 s"),
            }
        }
        self.etcd.stop().await;
    }
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let (metrics, tracing) = crate::serve::telemetry(
        true,
        true,
        "augur-dev",
        Some(args.metrics_listen),
        None,
        &shutdown,
    )
    .await?;
    let cluster = LocalCluster::start(LocalSpec {
        metrics,
        data_dir: args.data_dir,
        listen: args.listen,
        workers: args.workers,
        slots: args.slots,
        executor: augur_worker::executor::Executor::Process(Default::default()),
        etcd_bin: args.etcd_bin,
        max_txn_ops: 1024,
        retention_count: 10_000,
        secure: args.secure,
    })
    .await?;
    println!();
    match &cluster.credentials {
        None => {
            println!("augur dev is running (INSECURE: no TLS, no authentication; it listens on loopback only — --secure turns on mTLS and tokens)");
            println!(
                "  API        {}   (export AUGUR_ENDPOINT={})",
                cluster.endpoint, cluster.endpoint
            );
        }
        Some(creds) => {
            println!("augur dev is running with mTLS and API tokens (throwaway CA and admin token below)");
            println!("  API        {}", cluster.endpoint);
            println!("  use it:    export AUGUR_ENDPOINT={}", cluster.endpoint);
            println!(
                "             export AUGUR_CA_CERT={}",
                creds.pki.ca_cert.display()
            );
            println!(
                "             export AUGUR_CLIENT_CERT={}",
                creds.pki.client_cert.display()
            );
            println!(
                "             export AUGUR_CLIENT_KEY={}",
                creds.pki.client_key.display()
            );
            println!(
                "             export AUGUR_TOKEN=$(cat {})",
                creds.admin_token_file.display()
            );
        }
    }
    println!("  console    {}/", cluster.endpoint);
    println!("  etcd       {}", cluster.etcd.endpoint);
    println!("  workers    {} x {} slots", args.workers, args.slots);
    println!("  metrics    http://{}/metrics", args.metrics_listen);
    if std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty()) {
        println!("  traces     exported over OTLP to $OTEL_EXPORTER_OTLP_ENDPOINT");
    }
    println!("try:  augur submit --wait -- echo hello   |   augur list   |   augur cluster");
    println!("Ctrl-C stops everything.");
    println!();
    if args.demo {
        if let Err(e) = demo(&cluster.endpoint).await {
            eprintln!("demo workload failed: {e:#}");
        }
    }
    shutdown.cancelled().await;
    cluster.stop().await;
    tracing.shutdown(Duration::from_secs(3)).await;
    Ok(())
}

/// A small workflow, and a small mixed workload: quick successes, a retried
/// failure, a timeout, and a cancelled long job, then a table of how each
/// ended and how the workflow run did.
async fn demo(endpoint: &str) -> anyhow::Result<()> {
    let run = match crate::demo::workflow(endpoint).await {
        Ok(run) => Some(run),
        Err(e) => {
            println!(
                "demo: workflow not submitted: {}",
                crate::client::describe(&e)
            );
            None
        }
    };
    let mut client = crate::client::connect(endpoint).await?;
    let mut ids = Vec::new();
    let submit = |name: &str, cmd: &[&str], timeout: &str, attempts: u32| {
        let spec = augur_core::JobSpecInput {
            name: name.to_string(),
            command: cmd[0].to_string(),
            args: cmd[1..].iter().map(|s| s.to_string()).collect(),
            timeout: timeout.to_string(),
            retry: augur_core::spec::RetryInput {
                max_attempts: attempts,
                initial_backoff: "500ms".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        pb::SubmitJobRequest {
            spec: Some(spec.into()),
        }
    };
    let mut requests = Vec::new();
    for i in 0..12 {
        requests.push(submit(
            "hello",
            &[
                "sh",
                "-c",
                &format!("echo hello from job {i} attempt $AUGUR_ATTEMPT; sleep 0.{i}"),
            ],
            "",
            1,
        ));
    }
    requests.push(submit(
        "compute",
        &["sh", "-c", "seq 1 200000 | sort -n | tail -1"],
        "30s",
        1,
    ));
    requests.push(submit(
        "flaky",
        &["sh", "-c", "echo trying; [ \"$AUGUR_ATTEMPT\" -ge 3 ]"],
        "",
        3,
    ));
    requests.push(submit(
        "always-fails",
        &["sh", "-c", "echo boom >&2; exit 3"],
        "",
        2,
    ));
    requests.push(submit("too-slow", &["sleep", "60"], "1s", 1));
    requests.push(submit("long", &["sleep", "300"], "", 1));
    for r in requests {
        ids.push(client.submit_job(r).await?.into_inner().job_id);
    }
    println!("demo: submitted {} jobs", ids.len());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let long = ids.last().cloned().unwrap_or_default();
    client
        .cancel_job(pb::CancelJobRequest { job_id: long })
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut jobs = Vec::new();
        for id in &ids {
            jobs.push(
                client
                    .get_job(pb::GetJobRequest { job_id: id.clone() })
                    .await?
                    .into_inner(),
            );
        }
        if jobs.iter().all(|j| crate::render::is_terminal(j.state))
            || tokio::time::Instant::now() > deadline
        {
            print!("{}", crate::render::job_table(&jobs));
            println!("demo: done. `augur get ID` shows a job's output and history.");
            if let Some(run) = &run {
                if let Err(e) = crate::demo::workflow_outcome(endpoint, run).await {
                    println!("demo: workflow run {run}: {}", crate::client::describe(&e));
                }
            }
            return crate::demo::learning(endpoint).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
