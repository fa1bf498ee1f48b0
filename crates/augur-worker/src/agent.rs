//! The worker agent: keeps one stream to whoever leads (found by asking the
//! coordinators it was given; it holds no etcd access), runs what it is
//! assigned and reports results, re-sending buffered results after every
//! reconnect until they are acknowledged. The leader registers it under a
//! lease the leader renews while this stream heartbeats.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::{JobId, WorkerId};
use augur_proto::v1 as pb;
use augur_proto::v1::coordinator_message::Kind as In;
use augur_proto::v1::worker_message::Kind as Out;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use augur_telemetry::context::{self, Carrier, PhaseSpan};
use augur_telemetry::metrics::OutcomeLabel;
use augur_telemetry::{exemplar, KeyValue, SpanKind, WorkerMetrics};

use crate::buffer::{BufferedResult, ResultBuffer};
use crate::convert::{finished_message, spec_from_pb};
use crate::executor::{ExecRequest, Executor};
use crate::output::OutputStore;
use crate::WorkerError;

mod coordinators;
mod registration;
mod session;

pub use coordinators::LeaderInfo;

/// Everything a worker needs to run.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub node_id: String,
    /// Coordinator API URLs; any of them says who leads.
    pub coordinators: Vec<String>,
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    pub data_dir: PathBuf,
    pub executor: Executor,
    /// Most finished results kept while unacknowledged.
    pub max_buffered: usize,
    /// How long full output tails stay on disk.
    pub output_retention: Duration,
    pub heartbeat: Duration,
    /// On SIGTERM, how long running jobs may take before they are handed back.
    pub drain_timeout: Duration,
    /// fsync every buffered result (survives a machine crash, costs an fsync per
    /// job); without it results survive a crash of the worker process.
    pub fsync_results: bool,
    /// Bytes of stdout and of stderr sent with each result (the coordinator keeps
    /// at most its own `--max-output-tail` of them).
    pub report_tail_bytes: usize,
    /// The cluster's join token, sent when attaching (coordinators that
    /// require one refuse the stream without it).
    pub join_token: Option<augur_core::auth::Secret>,
    /// TLS to the coordinators (for `https://` leader addresses): the cluster
    /// CA and, under mTLS, this worker's certificate.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl WorkerConfig {
    pub fn new(node_id: &str, coordinators: Vec<String>, data_dir: PathBuf) -> Self {
        WorkerConfig {
            node_id: node_id.to_string(),
            coordinators,
            slots: 4,
            labels: BTreeMap::new(),
            data_dir,
            executor: Executor::Process(Default::default()),
            max_buffered: 10_000,
            output_retention: Duration::from_secs(24 * 3600),
            heartbeat: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(30),
            fsync_results: false,
            report_tail_bytes: 16 * 1024,
            join_token: None,
            tls: None,
        }
    }
}

type Outbound = mpsc::UnboundedSender<pb::WorkerMessage>;

pub(crate) struct Attempt {
    epoch: i64,
    pub(crate) cancel: CancellationToken,
}

/// State shared by the stream loop and the job tasks.
pub(crate) struct Agent {
    pub(crate) id: WorkerId,
    pub(crate) config: WorkerConfig,
    pub(crate) buffer: ResultBuffer,
    output: OutputStore,
    pub(crate) running: Mutex<HashMap<(JobId, u32), Attempt>>,
    /// The current stream's sender, if connected.
    outbound: Mutex<Option<Outbound>>,
    highest_epoch: Mutex<i64>,
    /// The lease the leader registered this worker under (0 until
    /// registered; kept in the data directory across restarts): the hello
    /// names it, so the leader knows this stream is the registered worker and
    /// not a second process started with the same id.
    lease_id: std::sync::atomic::AtomicI64,
    metrics: Arc<WorkerMetrics>,
    /// Set on SIGTERM: take no new work.
    pub(crate) draining: AtomicBool,
    /// Set when the drain deadline passed: what still runs is handed back.
    pub(crate) handing_back: AtomicBool,
}

impl Agent {
    /// Cancels every running attempt (their processes get TERM, grace, KILL).
    pub(crate) fn cancel_all(&self) {
        let tokens: Vec<CancellationToken> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|a| a.cancel.clone())
            .collect();
        for token in tokens {
            token.cancel();
        }
    }

    pub(crate) fn send(&self, kind: Out) {
        let guard = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = guard.as_ref() {
            let _ = tx.send(pb::WorkerMessage { kind: Some(kind) });
        }
    }

    /// The first message of a stream: who this is, what it holds, and the
    /// registration the leader writes for it.
    pub(crate) fn hello(&self) -> pb::Hello {
        pb::Hello {
            worker_id: self.id.to_string(),
            running: self.held_attempts(),
            highest_epoch: *self.highest_epoch.lock().unwrap_or_else(|p| p.into_inner()),
            lease_id: self.lease_id.load(Ordering::Acquire),
            slots: self.config.slots,
            labels: self.config.labels.clone().into_iter().collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            executor: self.config.executor.kind().to_string(),
            capacity: Some({
                let c = crate::capacity::detect();
                pb::Capacity {
                    cpu_millis: c.cpu_millis,
                    memory_bytes: c.memory_bytes,
                }
            }),
            draining: self.draining.load(Ordering::SeqCst),
        }
    }

    /// The leader registered this worker under `lease`: named in the next
    /// hello, and kept on disk so a restarted worker reattaches as itself.
    fn registered(&self, lease: i64) {
        if lease == 0 {
            return;
        }
        let previous = self.lease_id.swap(lease, Ordering::AcqRel);
        // Counted once per process at least, so a worker restarted onto the
        // registration it kept is seen as registered too.
        if previous != lease || self.metrics.registrations.get() == 0 {
            info!(lease_id = lease, "registered by the leader");
            self.metrics.registrations.inc();
        }
        if previous != lease {
            if let Err(e) = registration::save(&self.config.data_dir, lease) {
                warn!(error = %e, "could not keep the registration's lease id on disk");
            }
        }
    }

    /// Attempts running now plus those whose results await acknowledgement.
    fn held_attempts(&self) -> Vec<pb::AttemptRef> {
        let mut held: Vec<pb::AttemptRef> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((job, attempt), a)| pb::AttemptRef {
                job_id: job.to_string(),
                attempt: *attempt,
                epoch: a.epoch,
            })
            .collect();
        for r in self.buffer.pending_refs() {
            held.push(pb::AttemptRef {
                job_id: r.job_id,
                attempt: r.attempt,
                epoch: r.epoch,
            });
        }
        held
    }
}

/// Runs a worker until `shutdown` fires.
pub async fn run(
    config: WorkerConfig,
    metrics: Arc<WorkerMetrics>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let id = WorkerId::new(config.node_id.clone())
        .map_err(|e| WorkerError::Config(format!("--node-id: {e}")))?;
    let buffer = ResultBuffer::open_with(
        &config.data_dir.join("results"),
        config.max_buffered,
        config.fsync_results,
    )?;
    let output = OutputStore::open(&config.data_dir.join("output"))?;
    let coordinators = Arc::new(coordinators::Coordinators::new(
        config.coordinators.clone(),
        config.tls.clone(),
        config.join_token.as_ref(),
    )?);
    let lease_id = registration::load(&config.data_dir);
    let agent = Arc::new(Agent {
        id,
        config: config.clone(),
        buffer,
        output,
        running: Mutex::new(HashMap::new()),
        outbound: Mutex::new(None),
        highest_epoch: Mutex::new(0),
        lease_id: std::sync::atomic::AtomicI64::new(lease_id),
        metrics,
        draining: AtomicBool::new(false),
        handing_back: AtomicBool::new(false),
    });
    agent.metrics.slots.set(i64::from(config.slots));
    agent
        .metrics
        .result_buffer_depth
        .set(agent.buffer.len() as i64);
    info!(worker_id = %agent.id, slots = config.slots, executor = config.executor.kind(), buffered = agent.buffer.len(), "worker starting");
    if let crate::executor::Executor::Process(process) = &config.executor {
        info!(
            run_as = process.run_as.as_ref().map(|u| u.describe()).unwrap_or_else(|| "worker's own user".into()),
            allowed_commands = ?process.allowlist.patterns(),
            "job execution policy"
        );
    }

    // `stopped` fires once a shutdown's drain is over; until then the worker
    // keeps its registration and its stream so running jobs can report.
    let stopped = CancellationToken::new();
    let drain = tokio::spawn(
        crate::drain::on_shutdown(agent.clone(), shutdown.clone(), stopped.clone())
            .instrument(tracing::info_span!("drain")),
    );
    let purge = tokio::spawn(purge_outputs(agent.clone(), stopped.clone()));
    // Re-resolves the leader every heartbeat interval, off the stream's loop.
    let (leader_tx, mut leader_changes) = watch::channel(None);
    let follower = tokio::spawn(
        session::follow_leader(
            {
                let coordinators = coordinators.clone();
                move || {
                    let coordinators = coordinators.clone();
                    async move { coordinators.who_leads().await }
                }
            },
            config.heartbeat,
            leader_tx,
            stopped.clone(),
        )
        .instrument(tracing::info_span!("leader_follower")),
    );
    let shutdown = stopped;

    let mut backoff = Duration::from_millis(100);
    let mut sessions = 0u64;
    // Lasting trouble is said at warning level, but not in a tight loop.
    let mut refusal_warnings = Throttle::every(Duration::from_secs(30));
    let mut failure_warnings = Throttle::every(Duration::from_secs(30));
    // Since when no stream could be had (reset once one is attached).
    let mut failing_since: Option<tokio::time::Instant> = None;
    while !shutdown.is_cancelled() {
        let attached_before = sessions;
        let result = session::session(
            &agent,
            &coordinators,
            &mut leader_changes,
            &shutdown,
            &mut sessions,
        )
        .await;
        if sessions != attached_before {
            failing_since = None;
        }
        match result {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(WorkerError::Stream(status)) if status.code() == tonic::Code::AlreadyExists => {
                // Another process holds this worker id (or its registration):
                // the leader gives this one no work until that changes.
                if refusal_warnings.allow() {
                    warn!(code = ?status.code(), reason = status.message(),
                          "the leader refused this worker's stream: the worker id is taken");
                }
                backoff = Duration::from_secs(2);
            }
            Err(WorkerError::Stream(status))
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                // A refusal will not cure itself: say so loudly, but not in a
                // tight loop, and keep trying (the credentials may be fixed).
                if refusal_warnings.allow() {
                    warn!(code = ?status.code(), reason = status.message(),
                          "the coordinator refused this worker; check --join-token-file / TLS certificates");
                }
                backoff = Duration::from_secs(2);
            }
            Err(e) => {
                debug!(error = %e, "no stream to the leader");
                // Brief gaps are normal (a leader change); a lasting one — a
                // TLS handshake the coordinator rejects, a wrong address — is
                // said at warning level, with the whole error chain, every 30 s.
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= PERSISTENT_FAILURE && failure_warnings.allow() {
                    warn!(error = %error_chain(&e), failing_for_s = since.elapsed().as_secs(),
                          "cannot get a stream to the leader; check its address, the TLS settings and the network");
                }
                // Capped low: a new leader waits for its workers before dispatching.
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
        *agent.outbound.lock().unwrap_or_else(|p| p.into_inner()) = None;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(backoff) => {}
        }
    }

    // Stop what runs; its results stay in the buffer for the next start.
    agent.cancel_all();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !agent
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for task in [drain, purge, follower] {
        let _ = task.await;
    }
    info!("worker stopped");
    Ok(())
}

async fn purge_outputs(agent: Arc<Agent>, shutdown: CancellationToken) {
    loop {
        let output = agent.output.clone();
        let age = agent.config.output_retention;
        match tokio::task::spawn_blocking(move || output.purge_older_than(age)).await {
            Ok(Ok(n)) if n > 0 => info!(removed = n, "old job outputs removed"),
            Ok(Err(e)) => warn!(error = %e, "output purge failed"),
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    }
}

/// Lets a repeated message through at most once per period.
struct Throttle {
    period: Duration,
    last: Option<tokio::time::Instant>,
}

impl Throttle {
    fn every(period: Duration) -> Self {
        Throttle { period, last: None }
    }

    /// True (and the period restarts) if the last message is a period old.
    fn allow(&mut self) -> bool {
        let due = self.last.is_none_or(|t| t.elapsed() > self.period);
        if due {
            self.last = Some(tokio::time::Instant::now());
        }
        due
    }
}

/// How long without a stream to the leader before it is a warning.
const PERSISTENT_FAILURE: Duration = Duration::from_secs(5);

/// An error and its sources, `: `-separated (tonic's transport errors keep
/// the useful part — a TLS alert, a refused connection — in their sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

fn handle(agent: &Arc<Agent>, msg: In) {
    match msg {
        In::Welcome(w) => {
            let mut highest = agent
                .highest_epoch
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *highest = (*highest).max(w.epoch);
            drop(highest);
            agent.registered(w.lease_id);
        }
        In::Registered(r) => agent.registered(r.lease_id),
        In::Assign(assign) => {
            let (Some(attempt), Some(spec)) = (assign.attempt, assign.spec) else {
                return;
            };
            if agent.draining.load(Ordering::SeqCst) {
                // The leader sees the drain in the registry and requeues this
                // attempt when the worker's lease ends.
                warn!(job_id = %attempt.job_id, "assignment refused: draining");
                return;
            }
            let highest = *agent
                .highest_epoch
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if attempt.epoch < highest {
                agent.metrics.stale_assignments_rejected.inc();
                warn!(job_id = %attempt.job_id, epoch = attempt.epoch, highest, "assignment from a stale leader refused");
                return;
            }
            let (Ok(job_id), Ok(spec)) = (attempt.job_id.parse::<JobId>(), spec_from_pb(spec))
            else {
                warn!(job_id = %attempt.job_id, "malformed assignment ignored");
                return;
            };
            let cancel = CancellationToken::new();
            {
                let mut running = agent.running.lock().unwrap_or_else(|p| p.into_inner());
                if running.contains_key(&(job_id, attempt.attempt)) {
                    return;
                }
                running.insert(
                    (job_id, attempt.attempt),
                    Attempt {
                        epoch: attempt.epoch,
                        cancel: cancel.clone(),
                    },
                );
            }
            let parent: Carrier = assign.trace_context.into_iter().collect();
            let argv: Vec<&String> = std::iter::once(&spec.command).chain(&spec.args).collect();
            let execute = PhaseSpan::start_under(
                "job.execute",
                &parent,
                SpanKind::Consumer,
                None,
                vec![
                    KeyValue::new("augur.job.id", job_id.to_string()),
                    KeyValue::new("augur.job.attempt", i64::from(attempt.attempt)),
                    KeyValue::new("augur.worker.id", agent.id.to_string()),
                    KeyValue::new("cicd.pipeline.task.name", spec.name.clone()),
                    KeyValue::new(
                        "cicd.pipeline.task.run.id",
                        format!("{job_id}/{}", attempt.attempt),
                    ),
                    KeyValue::new("process.executable.name", spec.command.clone()),
                    KeyValue::new("process.command_args", format!("{argv:?}")),
                ],
            );
            // The job continues this trace: its own spans are children of job.execute.
            let carrier = execute.carrier();
            let extra_env = crate::executor::environment::worker_variables(
                &carrier,
                &agent.config.labels,
                &spec,
            );
            let (trace_id, span_id) = context::ids(&carrier);
            let request = ExecRequest {
                job_id,
                attempt: attempt.attempt,
                spec,
                extra_env,
                outputs_dir: Some(
                    agent
                        .config
                        .data_dir
                        .join("outputs-work")
                        .join(format!("{job_id}-{}", attempt.attempt)),
                ),
            };
            let span = tracing::info_span!("job", job_id = %job_id, attempt = attempt.attempt,
                                           trace_id = %trace_id, span_id = %span_id);
            agent.metrics.running_attempts.inc();
            tokio::spawn(
                run_attempt(agent.clone(), request, attempt.epoch, cancel, execute)
                    .instrument(span),
            );
        }
        In::Cancel(cancel) => {
            let Some(attempt) = cancel.attempt else {
                return;
            };
            let Ok(job_id) = attempt.job_id.parse::<JobId>() else {
                return;
            };
            let running = agent.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(a) = running.get(&(job_id, attempt.attempt)) {
                info!(job_id = %job_id, attempt = attempt.attempt, "cancelling attempt");
                a.cancel.cancel();
            }
        }
        In::Ack(ack) => {
            let Some(attempt) = ack.attempt else { return };
            let buffer = agent.buffer.clone();
            let depth = agent.metrics.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = buffer.ack(&attempt.job_id, attempt.attempt) {
                    warn!(error = %e, "could not drop acknowledged result");
                }
                depth.result_buffer_depth.set(buffer.len() as i64);
            });
        }
        In::Drain(_) => info!("drain requested by the leader"),
    }
}

/// Runs one attempt, keeps its result durable, then reports it.
async fn run_attempt(
    agent: Arc<Agent>,
    request: ExecRequest,
    epoch: i64,
    cancel: CancellationToken,
    mut execute: PhaseSpan,
) {
    let job_id = request.job_id;
    let attempt = request.attempt;
    let (started_tx, started_rx) = oneshot::channel::<(Option<u32>, i64)>();
    let reporter = {
        let agent = agent.clone();
        tokio::spawn(async move {
            if let Ok((pid, started_at_ms)) = started_rx.await {
                agent.send(Out::Started(pb::Started {
                    attempt: Some(pb::AttemptRef {
                        job_id: job_id.to_string(),
                        attempt,
                        epoch,
                    }),
                    started_at_ms,
                    pid: pid.unwrap_or(0),
                }));
            }
        })
    };
    let result = agent.config.executor.run(request, cancel, started_tx).await;
    let _ = reporter.await;
    agent.metrics.running_attempts.dec();
    record_execution(&agent, &mut execute, &result);
    execute.end();
    if agent.handing_back.load(Ordering::SeqCst) {
        // Stopped by the end of a drain: not the job's outcome. The leader
        // requeues the attempt when this worker's lease is revoked.
        info!("attempt handed back at the end of the drain");
        agent
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(job_id, attempt));
        return;
    }
    let mut buffered = BufferedResult::from_exec(&job_id.to_string(), attempt, epoch, &result);
    // The full tails stay in the output store; the report carries what the
    // coordinator may keep.
    for tail in [&mut buffered.stdout_tail, &mut buffered.stderr_tail] {
        let excess = tail.len().saturating_sub(agent.config.report_tail_bytes);
        tail.drain(..excess);
    }
    let store = agent.clone();
    let durable = tokio::task::spawn_blocking(move || {
        if !result.stdout_tail.is_empty() || !result.stderr_tail.is_empty() {
            if let Err(e) = store.output.save(
                &job_id.to_string(),
                attempt,
                &result.stdout_tail,
                &result.stderr_tail,
            ) {
                warn!(error = %e, "could not keep job output on disk");
            }
        }
        store.buffer.push(&buffered).map(|_| buffered)
    })
    .await;
    agent
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&(job_id, attempt));
    agent
        .metrics
        .result_buffer_depth
        .set(agent.buffer.len() as i64);
    match durable {
        Ok(Ok(buffered)) => agent.send(Out::Finished(finished_message(&buffered))),
        Ok(Err(e)) => {
            warn!(error = %e, "result could not be buffered; the attempt will be treated as lost")
        }
        Err(e) => warn!(error = %e, "result buffering task failed"),
    }
}

/// Attributes, status and metrics of a finished attempt.
fn record_execution(agent: &Agent, span: &mut PhaseSpan, result: &crate::executor::ExecResult) {
    let outcome = result.outcome.as_str();
    // Metric label: how the attempt ended (an exit is split by its code).
    let attempt_result = match &result.outcome {
        crate::executor::ExecOutcome::Exited { .. } if result.outcome.is_success() => "succeeded",
        crate::executor::ExecOutcome::Exited { .. } => "failed",
        other => other.as_str(),
    };
    let mut attrs = vec![
        KeyValue::new("augur.attempt.outcome", outcome),
        KeyValue::new("augur.attempt.runtime_ms", result.usage.runtime_ms as i64),
        KeyValue::new("process.cpu.time.user_us", result.usage.user_cpu_us as i64),
        KeyValue::new(
            "process.cpu.time.system_us",
            result.usage.system_cpu_us as i64,
        ),
        KeyValue::new("process.memory.max_rss_kb", result.usage.max_rss_kb as i64),
        // From the attempt's cgroup (0: it had none): daemonised children included.
        KeyValue::new(
            "augur.cgroup.memory.peak_bytes",
            result.usage.peak_memory_bytes as i64,
        ),
        KeyValue::new("augur.cgroup.cpu_us", result.usage.cgroup_cpu_us as i64),
    ];
    if let Some(pid) = result.pid {
        attrs.push(KeyValue::new("process.pid", i64::from(pid)));
    }
    if let crate::executor::ExecOutcome::Exited { exit_code, signal } = &result.outcome {
        if let Some(code) = exit_code {
            attrs.push(KeyValue::new("process.exit.code", i64::from(*code)));
        }
        if let Some(sig) = signal {
            attrs.push(KeyValue::new("process.exit.signal", i64::from(*sig)));
        }
    }
    span.set(attrs);
    if !result.outcome.is_success() {
        span.fail(attempt_result, result.message.clone());
    }
    let label = OutcomeLabel {
        outcome: attempt_result.to_string(),
    };
    agent.metrics.attempts_finished.get_or_create(&label).inc();
    agent.metrics.attempt_runtime.get_or_create(&label).observe(
        result.usage.runtime_ms as f64 / 1000.0,
        exemplar(Some(span.trace_id())),
        None,
    );
}
