//! `augur coordinator` and `augur worker`: long-running server processes.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use augur_coordinator::CoordinatorConfig;
use augur_telemetry::otel::TracingGuard;
use augur_telemetry::Metrics;
use augur_worker::executor::{Executor, ProcessConfig};
use augur_worker::WorkerConfig;
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::defaults::{self, duration_default};

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. \"5s\""))
}

fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("KiB") {
        (n, 1024)
    } else if let Some(n) = t.strip_suffix("MiB") {
        (n, 1024 * 1024)
    } else {
        (t, 1)
    };
    num.trim()
        .parse::<usize>()
        .map(|n| n * mult)
        .map_err(|_| format!("{text:?} is not a size; write e.g. 4096, \"4KiB\" or \"1MiB\""))
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

#[derive(Args, Debug, Clone)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated.
    #[arg(
        long,
        env = "AUGUR_ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: String,
    /// Key prefix of this cluster in etcd.
    #[arg(long, env = "AUGUR_ETCD_PREFIX", default_value = defaults::coordinator().prefix.as_str())]
    pub etcd_prefix: String,
    /// etcd request timeout.
    #[arg(long, default_value = duration_default!(defaults::coordinator().etcd_timeout), value_parser = parse_duration)]
    pub etcd_timeout: Duration,
    #[command(flatten)]
    pub security: crate::security::EtcdSecurityArgs,
}

impl EtcdArgs {
    /// `--etcd-endpoints`, each a URL (`host:port` gets https:// with
    /// `--etcd-ca`, else http://), refused at start if unusable.
    pub fn endpoints(&self) -> anyhow::Result<Vec<String>> {
        crate::urls::url_list(
            "--etcd-endpoints",
            &self.etcd_endpoints,
            self.security.etcd_ca.is_some(),
        )
    }
}

#[derive(Args, Debug, Clone)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// gRPC listen address.
    #[arg(long, env = "AUGUR_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: std::net::SocketAddr,
    /// URL others use to reach this coordinator (default: http://LISTEN).
    #[arg(long, env = "AUGUR_ADVERTISE")]
    pub advertise: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "AUGUR_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Export traces over OTLP/gRPC here (default: $OTEL_EXPORTER_OTLP_ENDPOINT; none: no export).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Unique node id.
    #[arg(long, env = "AUGUR_NODE_ID", default_value = "coordinator-1")]
    pub node_id: String,
    /// Leadership lease TTL.
    #[arg(long, default_value = duration_default!(defaults::coordinator().lease_ttl), value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// TTL of the lease the leader holds for each worker's registration: a
    /// worker whose heartbeats (every 2 s) stop is declared gone this long
    /// after the last one. At least 3 s.
    #[arg(long, default_value = duration_default!(defaults::coordinator().worker_lease_ttl), value_parser = parse_duration)]
    pub worker_lease_ttl: Duration,
    /// etcd's --max-txn-ops: leader batches are split to fit.
    #[arg(long, default_value_t = defaults::coordinator().max_txn_ops)]
    pub max_txn_ops: usize,
    /// Stdout/stderr tail kept with each job, in bytes or e.g. "4KiB".
    #[arg(long, default_value_t = defaults::coordinator().max_output_tail, value_parser = parse_size)]
    pub max_output_tail: usize,
    /// Finished jobs are removed after this age.
    #[arg(long, default_value = duration_default!(defaults::coordinator().retention_age), value_parser = parse_duration)]
    pub retention_age: Duration,
    /// At most this many finished jobs are kept.
    #[arg(long, default_value_t = defaults::coordinator().retention_count)]
    pub retention_count: usize,
    /// Run records (the placement model's training data) are kept this long.
    #[arg(long, default_value = duration_default!(defaults::coordinator().run_retention), value_parser = parse_duration)]
    pub run_retention: Duration,
    /// At most this many run records are kept.
    #[arg(long, default_value_t = defaults::coordinator().run_retention_count)]
    pub run_retention_count: usize,
    /// How often the leader retrains the runtime model on new runs.
    #[arg(long, default_value = duration_default!(defaults::coordinator().retrain_interval), value_parser = parse_duration)]
    pub retrain_interval: Duration,
    /// Fewest recorded runs to train a model on.
    #[arg(long, default_value_t = defaults::coordinator().min_training_runs)]
    pub min_training_runs: usize,
    /// Most connections open on the API port at once (workers and clients
    /// alike); more are closed at once. Default: the open-files limit less an
    /// eighth of it (at least 64) kept for etcd, peers and files.
    #[arg(long, env = "AUGUR_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// A connection must send its first request (TLS handshake included)
    /// within this long of being accepted, or it is closed.
    #[arg(long, default_value = duration_default!(defaults::coordinator().connections.handshake_timeout), value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// A connection with no call or stream open for this long is closed.
    #[arg(long, default_value = duration_default!(defaults::coordinator().connections.idle_timeout), value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Do not serve the web console on the API port (gRPC only).
    #[arg(long)]
    pub no_console: bool,
    /// Link from the console's job pages to a trace viewer, `{trace_id}`
    /// replaced, e.g. `http://jaeger:16686/trace/{trace_id}`.
    #[arg(long, env = "AUGUR_TRACE_URL_TEMPLATE")]
    pub trace_url_template: Option<String>,
    #[command(flatten)]
    pub security: crate::security::CoordinatorSecurityArgs,
}

impl CoordinatorArgs {
    pub fn config(&self) -> anyhow::Result<CoordinatorConfig> {
        let mut c = CoordinatorConfig::new(&self.node_id, self.etcd.endpoints()?, self.listen);
        c.prefix = self.etcd.etcd_prefix.clone();
        c.etcd_timeout = self.etcd.etcd_timeout;

        c.lease_ttl = self.lease_ttl;
        if self.worker_lease_ttl < Duration::from_secs(3) {
            anyhow::bail!(
                "--worker-lease-ttl {:?}: must be at least 3s (workers heartbeat every 2s)",
                self.worker_lease_ttl
            );
        }
        c.worker_lease_ttl = self.worker_lease_ttl;
        c.max_txn_ops = self.max_txn_ops;
        c.max_output_tail = self.max_output_tail;
        c.retention_age = self.retention_age;
        c.retention_count = self.retention_count;
        c.run_retention = self.run_retention;
        c.run_retention_count = self.run_retention_count;
        c.retrain_interval = self.retrain_interval;
        c.min_training_runs = self.min_training_runs;
        if self.handshake_timeout.is_zero() || self.idle_timeout.is_zero() {
            anyhow::bail!("--handshake-timeout and --idle-timeout must be more than 0");
        }
        c.connections = augur_coordinator::listener::ConnectionSettings {
            max_connections: self.max_connections.map(|n| n as usize),
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
        };
        c.auth = self.security.auth()?;
        c.tls = self.security.server_tls();
        c.peer_tls = self.security.peer_tls();
        c.etcd_security = self.etcd.security.security()?;
        c.advertise = advertise_url(self.advertise.as_deref(), self.listen, c.tls.is_some())?;
        if !self.no_console {
            c.http = Some(console(self.trace_url_template.clone())?);
        }
        Ok(c)
    }
}

/// The web console, linking job pages to traces through `trace_url_template`
/// (which must name `{trace_id}` and be an http(s) URL).
pub fn console(
    trace_url_template: Option<String>,
) -> anyhow::Result<augur_coordinator::HttpExtension> {
    if let Some(t) = &trace_url_template {
        if !t.contains("{trace_id}") || !(t.starts_with("http://") || t.starts_with("https://")) {
            anyhow::bail!(
                "--trace-url-template {t:?}: must be an http:// or https:// URL containing {{trace_id}}"
            );
        }
    }
    Ok(augur_console::extension(augur_console::ConsoleOptions {
        trace_url_template,
    }))
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    /// Run each job as a process group.
    Process,
    /// Complete jobs at once without running anything (benchmarks only).
    Null,
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Coordinator API URLs, comma-separated (any of them; the worker finds
    /// the leader through them). `host:port` gets https:// with --tls-ca,
    /// else http://. Workers need no etcd access.
    #[arg(
        long,
        env = "AUGUR_COORDINATORS",
        default_value = "http://127.0.0.1:7070"
    )]
    pub coordinators: String,
    /// Unique node id.
    #[arg(long, env = "AUGUR_NODE_ID", default_value = "worker-1")]
    pub node_id: String,
    /// Concurrent job slots.
    #[arg(long, default_value_t = defaults::worker().slots)]
    pub slots: u32,
    /// Label k=v (repeatable), matched by job constraints.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Where results and job outputs are kept.
    #[arg(long, env = "AUGUR_DATA_DIR", default_value = "./augur-worker-data")]
    pub data_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = ExecutorKind::Process)]
    pub executor: ExecutorKind,
    /// On SIGTERM: how long running jobs may finish before they are handed back.
    #[arg(long, default_value = duration_default!(defaults::worker().drain_timeout), value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Grace between SIGTERM and SIGKILL when a job is stopped.
    #[arg(long, default_value = duration_default!(defaults::process().kill_grace), value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// How long full job outputs stay on this worker's disk.
    #[arg(long, default_value = duration_default!(defaults::worker().output_retention), value_parser = parse_duration)]
    pub output_retention: Duration,
    /// fsync each finished result before reporting it, so it survives a machine
    /// crash too (costs one fsync per job).
    #[arg(long)]
    pub fsync_results: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "AUGUR_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Export traces over OTLP/gRPC here (default: $OTEL_EXPORTER_OTLP_ENDPOINT; none: no export).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Run every job as this user (a name or a numeric uid; the worker must be
    /// root unless it is that user already). Default: the worker's own user.
    #[arg(long, env = "AUGUR_RUN_AS", value_name = "USER")]
    pub run_as: Option<String>,
    /// Start only jobs whose command matches one of these globs (`*`, `?`;
    /// repeatable). A bare name (`sh`) matches a command given as that bare
    /// name; a pattern with a `/` (`/usr/bin/*`) matches the resolved path.
    /// Default: any command.
    #[arg(long = "allow-command", value_name = "GLOB")]
    pub allow_commands: Vec<String>,
    #[command(flatten)]
    pub security: crate::security::WorkerSecurityArgs,
    #[command(flatten)]
    pub limits: crate::limits::LimitArgs,
}

impl WorkerArgs {
    pub fn config(&self) -> anyhow::Result<WorkerConfig> {
        if self.slots == 0 || self.slots > 4096 {
            anyhow::bail!("--slots must be 1..=4096, got {}", self.slots);
        }
        let tls = self.security.tls_ca.is_some();
        let coordinators = crate::urls::url_list("--coordinators", &self.coordinators, tls)?;
        if let Some(url) = coordinators.iter().find(|u| u.starts_with("https://")) {
            if !tls {
                anyhow::bail!(
                    "--coordinators {url:?}: https:// needs --tls-ca (the CA the coordinators' certificates chain to)"
                );
            }
        }
        let mut c = WorkerConfig::new(&self.node_id, coordinators, self.data_dir.clone());
        c.slots = self.slots;
        c.labels = self.labels.iter().cloned().collect();
        c.output_retention = self.output_retention;
        c.fsync_results = self.fsync_results;
        c.drain_timeout = self.drain_timeout;
        c.join_token = self
            .security
            .join_token()?
            .map(augur_core::auth::Secret::new);
        c.tls = self.security.tls()?;
        c.executor = match self.executor {
            ExecutorKind::Process => Executor::Process(ProcessConfig {
                kill_grace: self.kill_grace,
                run_as: match &self.run_as {
                    Some(user) => Some(augur_worker::executor::RunAs::resolve(user)?),
                    None => None,
                },
                allowlist: augur_worker::executor::CommandAllowlist::new(
                    self.allow_commands.clone(),
                )?,
                ..Default::default()
            }),
            ExecutorKind::Null => {
                if self.run_as.is_some() || !self.allow_commands.is_empty() {
                    anyhow::bail!("--run-as and --allow-command apply to --executor process only");
                }
                Executor::Null
            }
        };
        Ok(c)
    }
}

/// A token fired by the first SIGINT/SIGTERM; a second signal exits at once.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                info!("shutting down (signal again to exit now)");
                fire.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
    token
}

/// Metrics registry, its endpoint (if asked for) and tracing, for a server process.
pub async fn telemetry(
    coordinator: bool,
    worker: bool,
    service: &str,
    metrics_listen: Option<std::net::SocketAddr>,
    otlp_endpoint: Option<&str>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Arc<Metrics>, TracingGuard)> {
    let metrics = Metrics::new(coordinator, worker);
    let tracing = augur_telemetry::otel::init(service, otlp_endpoint, metrics.traces.clone())?;
    if let Some(addr) = metrics_listen {
        augur_telemetry::http::serve(addr, metrics.clone(), shutdown.clone()).await?;
    }
    Ok((metrics, tracing))
}

pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let otlp = crate::urls::otlp_endpoint(args.otlp_endpoint.as_deref())?;
    raise_open_files_limit();
    let shutdown = shutdown_on_signal();
    let (metrics, tracing) = telemetry(
        true,
        false,
        "augur-coordinator",
        args.metrics_listen,
        otlp.as_deref(),
        &shutdown,
    )
    .await?;
    let result = augur_coordinator::run(config, metrics.coordinator(), shutdown).await;
    tracing.shutdown(Duration::from_secs(3)).await;
    result.context("coordinator failed")
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let mut config = args.config()?;
    args.limits.apply(&mut config)?;
    let otlp = crate::urls::otlp_endpoint(args.otlp_endpoint.as_deref())?;
    raise_open_files_limit();
    let shutdown = shutdown_on_signal();
    let (metrics, tracing) = telemetry(
        false,
        true,
        "augur-worker",
        args.metrics_listen,
        otlp.as_deref(),
        &shutdown,
    )
    .await?;
    let result = augur_worker::run(config, metrics.worker(), shutdown).await;
    tracing.shutdown(Duration::from_secs(3)).await;
    result.context("worker failed")
}

/// Raises the soft open-files limit to the hard one and logs both, so a
/// flood of connections meets the connection cap, not EMFILE in etcd's client.
pub fn raise_open_files_limit() {
    if let Err(e) = augur_coordinator::listener::raise_open_files_limit() {
        warn!(error = %e, "cannot read the open-files limit");
    }
}

/// The URL workers and peers reach this coordinator at: `--advertise` as given
/// (`http://` or `https://`, matching whether the API serves TLS), or
/// `host:port` with the scheme added, or by default the listen address. A value
/// workers could not use is refused at start, naming the flag, rather than
/// accepted and then failing in every worker's log.
fn advertise_url(
    given: Option<&str>,
    listen: std::net::SocketAddr,
    tls: bool,
) -> anyhow::Result<String> {
    match given.map(str::trim) {
        None | Some("") => Ok(format!("{}://{listen}", if tls { "https" } else { "http" })),
        Some(given) => crate::urls::endpoint_url("--advertise", given, tls),
    }
}

#[cfg(test)]
mod advertise_tests {
    use super::advertise_url;

    fn listen() -> std::net::SocketAddr {
        "0.0.0.0:7070".parse().expect("address")
    }

    // Regression (issue 13): `--advertise 127.0.0.1:7070` was accepted and then
    // every worker failed with "invalid URL, scheme is missing".
    #[test]
    fn host_and_port_get_the_scheme_of_the_api() {
        assert_eq!(
            advertise_url(Some("127.0.0.1:7070"), listen(), false).expect("ok"),
            "http://127.0.0.1:7070"
        );
        assert_eq!(
            advertise_url(Some("coordinator-1:7070"), listen(), true).expect("ok"),
            "https://coordinator-1:7070"
        );
        assert_eq!(
            advertise_url(None, listen(), true).expect("ok"),
            "https://0.0.0.0:7070"
        );
        assert_eq!(
            advertise_url(Some("http://c1:7070"), listen(), false).expect("ok"),
            "http://c1:7070"
        );
    }

    #[test]
    fn unusable_urls_are_refused_naming_the_flag() {
        for (given, tls) in [
            ("https://c1:7070", false),
            ("http://c1:7070", true),
            ("c1", false),
            ("http://c1:7070/api", false),
            ("http://:7070", false),
            ("ftp://c1:7070", false),
        ] {
            let err = advertise_url(Some(given), listen(), tls).expect_err(given);
            assert!(err.to_string().starts_with("--advertise"), "{given}: {err}");
        }
    }
}
